"""The lab's message catalogs (lab/i18n.py): extracted from the code with Babel, translated in
lab/locale/<lang>/LC_MESSAGES/lab.po, compiled to lab.mo beside it; the crypto app's dashboard
labels (app/i18n.py) the same way in app/locale/<lang>/LC_MESSAGES/app.po.

    python scripts/translations.py update        (make translations)
        extract every _("..."), N_("...") and ngettext(...) of lab/ (and app/), add new messages to each
        catalog (untranslated; a changed message comes back fuzzy with its old translation as a
        guess), drop the ones no longer in the code, compile.  Then translate what `missing` lists.
    python scripts/translations.py missing [es]
        the messages without a translation (new, or fuzzy after a change): exit 1 if any
    python scripts/translations.py fill es FILE.json
        set translations from a JSON object {"English message": "traducción", ...} (in whichever
        catalog, lab's or app's, holds the message), then compile
        (for translating many messages at once; editing lab.po by hand works as well)

A message is English text with named placeholders, "{name} is stopped: start it", filled with
.format() after the lookup; tests/test_i18n.py checks that every message has a translation with
the same placeholders and that the compiled catalogs are up to date.
"""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

REPO = Path(__file__).resolve().parent.parent
DOMAINS = ("lab", "app")  # each package's catalog in <package>/locale
DOMAIN = "lab"
LOCALE_DIR = REPO / DOMAIN / "locale"
LANGUAGES = ("es",)
# gettext's usual rule for Spanish (Babel's CLDR rule adds a third form for millions)
PLURALS = {"es": (2, "(n != 1)")}


def po_path(lang: str, domain: str = DOMAIN) -> Path:
    return REPO / domain / "locale" / lang / "LC_MESSAGES" / f"{domain}.po"


def extract(domain: str = DOMAIN) -> Catalog:
    """Every message of the package (lab/ or app/), with the files it is in (no line numbers: they churn)."""
    template = Catalog(project="PostgreSQL Replication Lab", fuzzy=False)
    for filename, _lineno, message, comments, context in extract_from_dir(
            REPO, method_map=[(f"{domain}/**.py", "python")], keywords=DEFAULT_KEYWORDS,
            comment_tags=("Translators:",), strip_comment_tags=True):
        template.add(message, None, [(filename, None)], auto_comments=comments, context=context)
    return template


def read(lang: str, domain: str = DOMAIN) -> Catalog:
    path = po_path(lang, domain)
    if path.exists():
        with path.open("rb") as f:
            return read_po(f, locale=lang, domain=domain)
    catalog = Catalog(locale=lang, domain=domain, project="PostgreSQL Replication Lab", fuzzy=False,
                      version="0.1", copyright_holder="the lab's authors", msgid_bugs_address="the lab's issues",
                      last_translator="the lab's authors", language_team=f"{lang} (notebooks/{lang}/GLOSARIO.md)")
    catalog.header_comment = (f"# The {domain} package's messages in {lang}: scripts/translations.py (make translations) keeps this file;\n"
                              f"# the words are those of notebooks/{lang}/GLOSARIO.md.")
    return catalog


def write(lang: str, catalog: Catalog, domain: str = DOMAIN) -> None:
    n, expr = PLURALS[lang]
    catalog._num_plurals, catalog._plural_expr = n, expr  # noqa: SLF001 (Babel has no setter)
    path = po_path(lang, domain)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    write_po(buf, catalog, width=0, sort_output=True, include_previous=False, omit_header=False)
    path.write_bytes(buf.getvalue())
    compile_mo(lang, catalog, domain)


def compiled(catalog: Catalog) -> bytes:
    buf = io.BytesIO()
    write_mo(buf, catalog, use_fuzzy=False)
    return buf.getvalue()


def compile_mo(lang: str, catalog: Catalog | None = None, domain: str = DOMAIN) -> None:
    catalog = catalog if catalog is not None else read(lang, domain)
    po_path(lang, domain).with_suffix(".mo").write_bytes(compiled(catalog))


def update(lang: str, domain: str = DOMAIN) -> Catalog:
    catalog = read(lang, domain)
    catalog.update(extract(domain), no_fuzzy_matching=False, update_header_comment=False, keep_user_comments=True,
                   update_creation_date=False)
    catalog.obsolete.clear()
    write(lang, catalog, domain)
    return catalog


def missing(catalog: Catalog) -> list[str]:
    out = []
    for m in catalog:
        if not m.id:
            continue
        strings = m.string if isinstance(m.string, (list, tuple)) else [m.string]
        if m.fuzzy or not all(strings):
            out.append(m.id if isinstance(m.id, str) else m.id[0])
    return out


def fill(lang: str, mapping: dict, domain: str = DOMAIN) -> int:
    catalog = read(lang, domain)
    done = 0
    for m in catalog:
        if not m.id:
            continue
        key = m.id if isinstance(m.id, str) else m.id[0]
        if key in mapping:
            value = mapping[key]
            m.string = tuple(value) if isinstance(m.id, (list, tuple)) else value
            m.flags.discard("fuzzy")
            done += 1
    write(lang, catalog, domain)
    return done


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else ""
    if cmd == "update":
        for lang in LANGUAGES:
            for domain in DOMAINS:
                cat = update(lang, domain)
                todo = missing(cat)
                print(f"{po_path(lang, domain).relative_to(REPO)}: {len([m for m in cat if m.id])} messages, "
                      f"{len(todo)} to translate" + (" (python scripts/translations.py missing)" if todo else ""))
        return 0
    if cmd == "missing":
        langs = [argv[1]] if len(argv) > 1 else list(LANGUAGES)
        todo = {(lang, d): missing(read(lang, d)) for lang in langs for d in DOMAINS}
        for (lang, domain), ids in todo.items():
            for i in ids:
                print(f"{lang}\t{i}" if domain == DOMAIN else f"{lang}\t[{domain}] {i}")
        return 1 if any(todo.values()) else 0
    if cmd == "fill" and len(argv) == 3 and argv[1] in LANGUAGES:
        mapping = json.loads(Path(argv[2]).read_text(encoding="utf-8"))
        for domain in DOMAINS:
            print(f"{fill(argv[1], mapping, domain)} translations set in {po_path(argv[1], domain).relative_to(REPO)}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
