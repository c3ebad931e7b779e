"""The chapters in other languages: notebooks/<lang>/NN_*.ipynb, one per English chapter, whose code
cells are the English chapter's, cell for cell.  Only the markdown is translated; the code has one
source, the English notebook, and `sync` copies it over (a test fails when they differ).

    python scripts/notebook_translations.py new es notebooks/03_base_backups_and_slots.ipynb
        a copy to translate: notebooks/es/03_base_backups_and_slots.ipynb (markdown still English)
    python scripts/notebook_translations.py sync [es]
        after changing an English chapter: its code cells into every translation.  A chapter whose
        markdown cells were added, removed or moved cannot be synced: the translation's markdown
        is then changed by hand to match (the error names the first cell that differs)
    python scripts/notebook_translations.py check [es]
        exit 1 and say what differs: a chapter without a translation, a code cell that differs,
        cells in another order, a markdown cell left in English

The file keeps the English name (the numbers and names are what tests, the README and the
students' progress use); the title inside is translated.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
LANGUAGES = ("es",)


def chapters() -> list[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def save(path: Path, nb: dict) -> None:
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def source(cell: dict) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def kinds(nb: dict) -> list[str]:
    return [c["cell_type"] for c in nb["cells"]]


def translation_of(english: Path, lang: str) -> Path:
    return NOTEBOOKS / lang / english.name


def problems(english: Path, lang: str) -> list[str]:
    """What keeps the translation of ``english`` from being the same chapter; [] when none."""
    target = translation_of(english, lang)
    rel = target.relative_to(REPO)
    if not target.exists():
        return [f"{rel}: missing (python scripts/notebook_translations.py new {lang} {english.relative_to(REPO)})"]
    en, tr = load(english), load(target)
    if kinds(en) != kinds(tr):
        first = next((i for i, (a, b) in enumerate(zip(kinds(en), kinds(tr))) if a != b), min(len(en["cells"]),
                                                                                             len(tr["cells"])))
        return [f"{rel}: its cells are not the English chapter's ({len(tr['cells'])} cells, English "
                f"{len(en['cells'])}); the first that differs is cell {first}"]
    out = []
    for i, (a, b) in enumerate(zip(en["cells"], tr["cells"])):
        if a["cell_type"] == "code" and source(a) != source(b):
            out.append(f"{rel}: code cell {i} differs from the English one (scripts/notebook_translations.py sync)")
        if a["cell_type"] == "markdown" and source(a).strip() == source(b).strip() and untranslatable(source(a)) is False:
            out.append(f"{rel}: markdown cell {i} is still the English text: {source(a)[:60]!r}")
    return out


def untranslatable(text: str) -> bool:
    """A markdown cell with no prose in it (only code, a table of names, a rule): the same in
    every language."""
    words = [w for w in text.replace("`", " ` ").split() if w.isalpha() and len(w) > 3]
    return len(words) == 0


def new(lang: str, english: Path) -> Path:
    target = translation_of(english, lang)
    if target.exists():
        raise SystemExit(f"{target.relative_to(REPO)} exists already: edit it, or remove it first")
    nb = load(english)
    nb["metadata"]["lab"] = {"language": lang, "translation_of": f"../{english.name}"}
    target.parent.mkdir(exist_ok=True)
    save(target, nb)
    return target


def sync(lang: str) -> list[str]:
    """Copy each English chapter's code cells into its translation; returns what could not be."""
    failed = []
    for english in chapters():
        target = translation_of(english, lang)
        if not target.exists():
            continue
        en, tr = load(english), load(target)
        if kinds(en) != kinds(tr):
            failed += problems(english, lang)
            continue
        changed = False
        for a, b in zip(en["cells"], tr["cells"]):
            if a["cell_type"] == "code" and source(a) != source(b):
                b["source"] = a["source"]
                b["outputs"], b["execution_count"] = [], None
                changed = True
        if changed:
            save(target, tr)
            print(f"synced {target.relative_to(REPO)}")
    return failed


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("new", "sync", "check"):
        print(__doc__)
        return 2
    cmd, rest = argv[0], argv[1:]
    langs = [rest[0]] if rest and rest[0] in LANGUAGES else list(LANGUAGES)
    if cmd == "new":
        if len(rest) < 2:
            print("usage: notebook_translations.py new LANG notebooks/NN_name.ipynb ...", file=sys.stderr)
            return 2
        for p in rest[1:]:
            print(f"created {new(rest[0], Path(p).resolve()).relative_to(REPO)}: translate its markdown cells")
        return 0
    if cmd == "sync":
        failed = [f for lang in langs for f in sync(lang)]
    else:
        failed = [f for lang in langs for english in chapters() for f in problems(english, lang)]
    for f in failed:
        print(f, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
