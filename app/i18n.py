"""The dashboard's language: English, or Spanish with ``APP_LANG=es`` (else ``LAB_LANG=es``, which
the lab passes on when it starts the app for a student who chose Spanish).  Its labels are looked
up in a gettext catalog of their own, ``app/locale/<lang>/LC_MESSAGES/app.po`` compiled to
``app.mo`` (``make translations``), as the lab's are (lab/i18n.py); the app does not import the lab.
"""
from __future__ import annotations

import gettext as _gettext
import os
from pathlib import Path

LANGUAGES = ("en", "es")
DOMAIN = "app"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
_catalogs: "dict[str, _gettext.NullTranslations]" = {}


def current() -> str:
    for var in ("APP_LANG", "LAB_LANG"):
        raw = os.environ.get(var, "").strip().replace("-", "_").split(".")[0].split("_")[0].lower()
        if raw in LANGUAGES:
            return raw
    return "en"


def _(message: str) -> str:
    code = current()
    if code not in _catalogs:
        _catalogs[code] = (_gettext.NullTranslations() if code == "en" else
                           _gettext.translation(DOMAIN, LOCALE_DIR, languages=[code], fallback=True))
    return _catalogs[code].gettext(message)


def N_(message: str) -> str:
    """Mark a label for the catalog where it is defined; ``_()`` translates it where it is shown."""
    return message
