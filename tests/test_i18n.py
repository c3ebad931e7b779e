"""The lab in Spanish as well as English (lab/i18n.py): every message has a translation with the same
placeholders, the compiled catalogs are the .po files' current content, no message escapes
extraction, the language is chosen as documented, and the Spanish chapters are the English ones
with translated prose (same code cells, cell for cell).  Unit tests: no server."""
from __future__ import annotations

import ast
import gettext
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

import lab
from lab import i18n

REPO = Path(__file__).resolve().parent.parent


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


translations = _script("translations")
notebook_translations = _script("notebook_translations")

_FIELD = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)[^{}]*\}")


CATALOGS = [(lang, domain) for lang in translations.LANGUAGES for domain in translations.DOMAINS]
PACKAGES = [REPO / domain for domain in translations.DOMAINS]


@pytest.mark.parametrize("lang,domain", CATALOGS)
def test_every_message_of_the_code_has_a_translation(lang, domain):
    code = {m.id if isinstance(m.id, str) else m.id[0] for m in translations.extract(domain) if m.id}
    catalog = translations.read(lang, domain)
    have = {(m.id if isinstance(m.id, str) else m.id[0]) for m in catalog if m.id}
    absent = sorted(code - have)
    assert not absent, (f"{len(absent)} message(s) not in {translations.po_path(lang, domain).relative_to(REPO)} "
                        f"(make translations, then translate them): {absent[:5]}")
    todo = [i for i in translations.missing(catalog) if i in code]
    assert not todo, (f"{len(todo)} message(s) without a {lang} translation (python scripts/translations.py "
                      f"missing {lang}): {todo[:5]}")


def test_every_literal_message_reaches_the_catalog():
    """Babel's extraction misses a _("...") written inside an f-string's braces: its text is then
    in no catalog, and shown in English whatever the language."""
    for domain in translations.DOMAINS:
        extracted = {m.id if isinstance(m.id, str) else m.id[0] for m in translations.extract(domain) if m.id}
        missed = []
        for path in sorted((REPO / domain).rglob("*.py")):
            for call in _calls(ast.parse(path.read_text(encoding="utf-8"))):
                first = call.args[0] if call.args else None
                if isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value not in extracted:
                    missed.append(f"{path.relative_to(REPO)}:{call.lineno} {first.value[:50]!r}")
        assert not missed, ("messages extraction does not see (a _() inside an f-string's braces? move it out): "
                            + "; ".join(missed))


@pytest.mark.parametrize("lang,domain", CATALOGS)
def test_a_translation_has_the_placeholders_of_its_message(lang, domain):
    wrong = []
    for m in translations.read(lang, domain):
        if not m.id or m.fuzzy:  # a fuzzy entry is a guess, not a translation (the completeness test)
            continue
        ids = [m.id] if isinstance(m.id, str) else list(m.id)
        strings = [m.string] if isinstance(m.string, str) else list(m.string)
        want = set().union(*(set(_FIELD.findall(i)) for i in ids))
        specs = _specs(ids[0])
        for s in strings:
            if s and set(_FIELD.findall(s)) != want:
                wrong.append((ids[0][:70], sorted(want), sorted(set(_FIELD.findall(s)))))
            elif s and specs is not None and _specs(s) != specs:
                wrong.append((ids[0][:70], "conversion or format spec", sorted(specs), _specs(s)))
    assert not wrong, f"translations whose placeholders differ from their message's: {wrong[:5]}"


def _specs(text: str):
    """Each field's (name, conversion, format spec) in a str.format message; None if it is none
    (malformed braces: the message is not formatted); 'malformed' for a translation."""
    import string
    try:
        return {(f, c, spec) for _lit, f, spec, c in string.Formatter().parse(text) if f is not None}
    except ValueError:
        return None


@pytest.mark.parametrize("lang,domain", CATALOGS)
def test_the_compiled_catalog_is_the_po_files_content(lang, domain):
    mo = translations.po_path(lang, domain).with_suffix(".mo")
    assert mo.exists(), f"{mo.relative_to(REPO)} is missing: make translations"
    assert mo.read_bytes() == translations.compiled(translations.read(lang, domain)), (
        f"{mo.relative_to(REPO)} is older than its .po: make translations (or python scripts/translations.py update)")


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("_", "N_", "ngettext"):
            yield node


def test_every_message_is_a_plain_string_that_extraction_sees():
    """_(f"..."), _("a" + b) or _("...".format()) would be looked up under a text no catalog holds.
    N_() and ngettext() take literals; _() takes a literal, or a name holding an N_()-marked text."""
    bad = []
    for path in sorted(p for package in PACKAGES for p in package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for call in _calls(tree):
            n = 2 if call.func.id == "ngettext" else 1
            args = call.args[:n]
            if len(args) < n:
                bad.append(f"{path.relative_to(REPO)}:{call.lineno}")
            elif call.func.id == "_":
                if isinstance(args[0], (ast.JoinedStr, ast.BinOp, ast.Call)):
                    bad.append(f"{path.relative_to(REPO)}:{call.lineno}")
            elif not all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in args):
                bad.append(f"{path.relative_to(REPO)}:{call.lineno}")
    assert not bad, f"messages that are not a plain string literal (write _('... {{name}}').format(name=...)): {bad}"


def test_lab_speaks_english_by_default_and_spanish_when_chosen():
    message = "language is one of {choices}, not {value!r:.40}"
    assert lab.language() == "en"
    assert i18n._(message) == message
    assert lab.set_language("es") == "es"
    assert lab.language() == "es"
    assert i18n._(message) != message
    with pytest.raises(lab.LabError, match="idioma"):
        lab.set_language("klingon")
    assert lab.set_language("en") == "en"
    with pytest.raises(lab.LabError, match="language is one of 'en', 'es'"):
        lab.set_language(3)


def test_the_language_comes_from_lab_lang_then_the_notebooks_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("LAB_LANG", "es_ES.UTF-8")
    assert lab.language() == "es"
    monkeypatch.setenv("LAB_LANG", "fr")  # not one of ours: the next rule decides
    assert lab.language() == "en"
    monkeypatch.delenv("LAB_LANG")
    folder = tmp_path / "notebooks" / "es"
    folder.mkdir(parents=True)
    monkeypatch.chdir(folder)  # nbval and JupyterLab start a kernel in its notebook's folder
    assert lab.language() == "es"
    monkeypatch.chdir(tmp_path)
    assert lab.language() == "en"
    monkeypatch.setenv("JPY_SESSION_NAME", str(folder / "01_primary_and_replica.ipynb"))
    assert lab.language() == "es"
    lab.set_language("en")  # the student's choice wins over the folder
    assert lab.language() == "en"


def test_a_kernel_in_notebooks_es_uses_the_same_lab_home_as_one_in_notebooks():
    """One cluster for a student who opens chapters in both languages (and for `make down`)."""
    code = "from lab.system.home import default_home; print(default_home())"
    env = {k: v for k, v in __import__("os").environ.items() if k != "LAB_HOME"}
    homes = {subprocess.run([sys.executable, "-c", code], cwd=d, env=env, capture_output=True, text=True,
                            check=True).stdout.strip() for d in (REPO, REPO / "notebooks", REPO / "notebooks" / "es")}
    assert homes == {str(REPO / ".lab")}


def test_the_compiled_catalogs_ship_with_the_packages():
    text = (REPO / "pyproject.toml").read_text()
    assert 'lab = ["py.typed", "locale/*/LC_MESSAGES/*.mo"]' in text
    assert 'app = ["locale/*/LC_MESSAGES/*.mo"]' in text
    t = gettext.translation(i18n.DOMAIN, i18n.LOCALE_DIR, languages=["es"])
    assert isinstance(t, gettext.GNUTranslations)


def test_the_dashboard_speaks_spanish_with_app_lang_or_lab_lang(monkeypatch):
    from app import i18n as app_i18n
    monkeypatch.delenv("APP_LANG", raising=False)
    assert app_i18n._("Market overview") == "Market overview"
    monkeypatch.setenv("LAB_LANG", "es")  # the lab passes the student's language on
    assert app_i18n._("Market overview") == "Resumen del mercado"
    monkeypatch.setenv("APP_LANG", "en")
    assert app_i18n._("Market overview") == "Market overview"


@pytest.mark.parametrize("english", notebook_translations.chapters(), ids=lambda p: p.stem)
@pytest.mark.parametrize("lang", notebook_translations.LANGUAGES)
def test_each_chapter_has_its_translation_with_the_same_code_cells(english, lang):
    problems = notebook_translations.problems(english, lang)
    assert not problems, "\n".join(problems)


def test_every_formatted_message_is_given_each_of_its_placeholders():
    """_("... {name} ...").format(...) without name= raises KeyError when the message is shown: in an
    error path a test may never take, so it is checked here, for every message of lab/."""
    bad = []
    for path in sorted(p for package in PACKAGES for p in package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format"):
                continue
            inner = node.func.value
            if not (isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name) and inner.func.id in ("_", "ngettext")
                    and inner.args and all(isinstance(a, ast.Constant) for a in inner.args[:2 if inner.func.id == "ngettext" else 1])):
                continue
            if any(k.arg is None for k in node.keywords):  # **mapping: not checkable here
                continue
            texts = [a.value for a in inner.args[:2 if inner.func.id == "ngettext" else 1]]
            want = set().union(*(set(_FIELD.findall(t)) for t in texts))
            given = {k.arg for k in node.keywords}
            if node.args or want - given or given - want:
                bad.append(f"{path.relative_to(REPO)}:{node.lineno} wants {sorted(want)}, given {sorted(given)}"
                           + (" and positional arguments" if node.args else ""))
    assert not bad, "messages formatted with other placeholders than theirs:\n" + "\n".join(bad)


def _binds_underscore(tree) -> "list[int]":
    """Lines where a name ``_`` is bound (a loop variable, an assignment, ``as _``, an argument)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "_" and isinstance(node.ctx, (ast.Store, ast.Del)):
            lines.append(node.lineno)
        elif isinstance(node, ast.arg) and node.arg == "_":
            lines.append(node.lineno)
        elif isinstance(node, ast.ExceptHandler) and node.name == "_":
            lines.append(node.lineno)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and getattr(node, "name", None) == "_":
            lines.append(node.lineno)
    return lines


def test_no_module_that_translates_uses_underscore_as_a_throwaway_name():
    """``for _ in range(3)`` in a function that also calls ``_()`` makes ``_`` a local there: every
    message of that function then fails (UnboundLocalError, or 'int' object is not callable)."""
    bad = []
    for path in sorted(p for package in PACKAGES for p in package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if not any(True for _call in _calls(tree)):
            continue
        bad += [f"{path.relative_to(REPO)}:{line}" for line in _binds_underscore(tree)]
    assert not bad, "'_' bound in a module that translates (name it _i, _row, ...): " + ", ".join(bad)
