"""The house keeps its shape: the layers of lab/ and no import cycles (import-linter, contracts in
pyproject.toml), imports at the top of their files, the machinery's packages where the README says."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAB = ROOT / "lab"


def lint_imports() -> "list[str] | None":
    exe = Path(sys.executable).with_name("lint-imports")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("lint-imports")
    return [found] if found else None


def test_import_contracts_are_kept():
    cmd = lint_imports()
    if cmd is None:
        pytest.skip("import-linter is not installed: pip install -e '.[test]'")
    r = subprocess.run([*cmd, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "broken" not in r.stdout.lower() or "0 broken" in r.stdout.lower(), r.stdout


def imports_inside_functions() -> "list[tuple[str, int, str]]":
    """(file, line, source line) of every import placed inside a function of lab/."""
    found = []
    for path in sorted(LAB.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for fn in ast.walk(ast.parse(text)):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    found.append((str(path.relative_to(ROOT)), node.lineno, lines[node.lineno - 1]))
    return sorted(set(found))


def test_an_import_inside_a_function_says_why():
    """Imports go at the top of their files; one stays inside a function only to keep start-up
    quick (``import lab``, ``python -m lab down``), with a ``# lazy:`` comment that says so."""
    src = {}
    unexplained = []
    for file, line, text in imports_inside_functions():
        lines = src.setdefault(file, (ROOT / file).read_text(encoding="utf-8").splitlines())
        above = lines[line - 2] if line >= 2 else ""
        if "# lazy:" not in text and "# lazy:" not in above:
            unexplained.append(f"{file}:{line}: {text.strip()}")
    assert not unexplained, "imports inside functions without a '# lazy: <why>' comment:\n" + "\n".join(unexplained)


def test_the_machinery_lives_in_its_packages():
    for pkg in ("backends", "system", "services", "exercises"):
        assert (LAB / pkg / "__init__.py").exists(), f"lab/{pkg}/ is missing"
    assert not (LAB / "dockerd.py").exists(), "the private Docker engine is test infrastructure: tests/engine/"
    assert (LAB / "py.typed").exists()
