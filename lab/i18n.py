"""The language the lab speaks: English, or Spanish when the student chooses it.

Every sentence the lab shows a student (errors, self-check results and hints, progress lines,
column explanations, widget labels, plot titles) is written in English in the code, wrapped in
``_()``, and looked up at the moment it is shown in a gettext catalog: ``lab/locale/<lang>/
LC_MESSAGES/lab.po``, compiled to ``lab.mo`` beside it (``make translations`` extracts the
messages with Babel, updates the catalogs and compiles them; tests/test_i18n.py fails when a
message has no translation or a compiled catalog is stale).

The language, first that applies:

1. ``lab.set_language("es")`` in this kernel;
2. ``LAB_LANG=es`` in the environment (``make lab LAB_LANG=es`` sets it for every kernel);
3. the notebook's language: a notebook in a folder named after a language (``notebooks/es/``)
   speaks it; the kernel knows its notebook from ``JPY_SESSION_NAME`` (JupyterLab) or its working
   directory (JupyterLab and nbval start a kernel in its notebook's folder);
4. English.

>>> from lab.i18n import _
>>> _("the primary")                     # doctest: +SKIP
'el primario'
"""
from __future__ import annotations

import gettext as _gettext
import os
from pathlib import Path

LANGUAGES = {"en": "English", "es": "español"}
DEFAULT = "en"
DOMAIN = "lab"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
ENV_VAR = "LAB_LANG"

_chosen: "str | None" = None
_catalogs: "dict[str, _gettext.NullTranslations]" = {}


def _normal(value: "str | None") -> "str | None":
    """'es', 'ES', 'es_ES.UTF-8', 'es-MX' -> 'es'; None for anything else."""
    if not value:
        return None
    code = str(value).strip().replace("-", "_").split(".")[0].split("_")[0].lower()
    return code if code in LANGUAGES else None


def set_language(language: "str | None") -> str:
    """Speak ``language`` ("es" or "en") from now on in this kernel; None goes back to the default
    (``LAB_LANG``, else the notebook's language, else English).  Returns the language in use.

    >>> lab.set_language("es")             # doctest: +SKIP
    """
    global _chosen
    if language is None:
        _chosen = None
        return current()
    code = _normal(language) if isinstance(language, str) else None
    if code is None:  # lab.set_language says it as a BadArgument (errors.py is a layer above)
        raise LookupError(_("language is one of {choices}, not {value!r:.40}").format(
            choices=", ".join(repr(k) for k in LANGUAGES), value=language))
    _chosen = code
    return code


def notebook_language() -> "str | None":
    """The language of the folder the kernel's notebook is in (``notebooks/es/`` -> "es"), or None."""
    session = os.environ.get("JPY_SESSION_NAME")
    folders = []
    if session:
        folders.append(Path(session).parent.name)
    try:
        folders.append(Path.cwd().name)
    except OSError:  # the working directory was removed
        pass
    for name in folders:
        code = name.lower() if name.lower() in LANGUAGES else None
        if code:
            return code
    return None


def current() -> str:
    """The language the lab speaks now (see the module's docstring for how it is chosen)."""
    return _chosen or _normal(os.environ.get(ENV_VAR)) or notebook_language() or DEFAULT


def catalog(language: "str | None" = None) -> _gettext.NullTranslations:
    """The compiled catalog of ``language`` (the current one by default); English has none."""
    code = _normal(language) or current()
    if code not in _catalogs:
        if code == DEFAULT:
            _catalogs[code] = _gettext.NullTranslations()
        else:
            _catalogs[code] = _gettext.translation(DOMAIN, LOCALE_DIR, languages=[code], fallback=True)
    return _catalogs[code]


def _(message: str) -> str:
    """``message`` in the current language (the English text itself where there is no translation)."""
    return catalog().gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """The singular or plural form for ``n``, in the current language."""
    return catalog().ngettext(singular, plural, n)


def N_(message: str) -> str:
    """Mark a message for the catalog where it is defined (a table of labels, a module constant);
    it is translated with ``_()`` where it is shown."""
    return message
