"""The self-checks in Spanish (lab/exercises, lab/i18n.py): every exercise's title and hint is a message
of the catalog with a translation (a hint left in a docstring would stay English), and what a student
reads before checking (the list, a hint, a wrong call) speaks the chosen language.  Unit tests: no server."""
from __future__ import annotations

import pytest

import lab
from lab import checks, exercises, i18n


def test_every_title_and_hint_has_a_translation():
    catalog = i18n.catalog("es")
    untranslated = [(e.id, text) for e in exercises.registered().values() for text in (e.title, e.hint)
                    if catalog.gettext(text) == text]
    assert not untranslated, f"titles or hints without a Spanish translation (hint=N_(...)?): {untranslated[:3]}"


def test_the_list_a_hint_and_a_wrong_call_speak_spanish(spanish):
    ex = exercises.registered()["01.1"]
    assert checks.exercises("01").set_index("exercise").loc["01.1", "title"] == i18n._(ex.title) != ex.title
    said = checks.hint("01.1")
    assert said.startswith("01.1 (") and i18n._(ex.hint) in said and ex.hint not in said
    with pytest.raises(lab.LabError, match="no hay ningún ejercicio '99.9'"):
        checks.hint("99.9")
