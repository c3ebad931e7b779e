"""Packaging and repository hygiene: fast, no servers.

- environment.yml (conda/Binder) installs exactly what pyproject.toml declares;
- notebooks are committed without outputs;
- .gitignore keeps environments and lab state out of git;
- `make test` is what CI runs;
- none of the original project's fixed passwords survive;
- scripts/ensure-postgres.sh finds the same server binaries as lab.system.binaries.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
LOCAL_INSTALLS = {"-e .", "--editable .", "-e ./", "."}


# --------------------------------------------------------------------------
# environment.yml
# --------------------------------------------------------------------------

def _scalar(text: str) -> str:
    """A YAML plain or quoted scalar, without a trailing comment."""
    text = text.strip()
    if text and text[0] in "\"'":
        return text[1 : text.index(text[0], 1)]
    return re.sub(r"\s+#.*$", "", text).strip()


def parse_environment_yml(text: str) -> dict:
    """The subset of YAML a conda environment file uses.

    Top-level ``key: value`` and ``key:`` followed by a ``- item`` list; a list
    item ``- pip:`` opens a nested list, returned as ``{"pip": [...]}``.
    """
    data: dict = {}
    key = None  # current top-level key holding a list
    nested = None  # the nested list under "- pip:"
    nested_indent = -1
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        body = line.strip()
        if indent == 0:
            nested = None
            k, _, v = body.partition(":")
            key = k.strip()
            data[key] = _scalar(v) if _scalar(v) else []
            continue
        if not body.startswith("- ") and body != "-":
            raise ValueError(f"unsupported environment.yml line: {raw!r}")
        item = _scalar(body[1:])
        if nested is not None and indent > nested_indent:
            nested.append(item)
            continue
        nested = None
        m = re.fullmatch(r"([A-Za-z_][\w-]*):", item)
        if m:
            nested, nested_indent = [], indent
            data[key].append({m.group(1): nested})
        else:
            data[key].append(item)
    return data


@pytest.fixture(scope="module")
def environment() -> dict:
    return parse_environment_yml((ROOT / "environment.yml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _pip_list(env: dict) -> list[str]:
    lists = [d["pip"] for d in env.get("dependencies", []) if isinstance(d, dict) and "pip" in d]
    assert len(lists) == 1, "environment.yml needs exactly one `- pip:` list"
    return lists[0]


def _normalized(reqs) -> dict:
    out = {}
    for text in reqs:
        r = Requirement(text)
        name = canonicalize_name(r.name)
        assert name not in out, f"{r.name} listed twice"
        out[name] = (r.specifier, sorted(r.extras), str(r.marker or ""))
    return out


def test_environment_pip_requirements_equal_pyproject(environment, pyproject):
    project = pyproject["project"]
    wanted = list(project["dependencies"]) + list(project["optional-dependencies"]["test"])
    pip = [p for p in _pip_list(environment) if p not in LOCAL_INSTALLS]
    got, want = _normalized(pip), _normalized(wanted)
    assert sorted(got) == sorted(want), (
        f"environment.yml pip packages differ from pyproject.toml dependencies + [test]: "
        f"missing {sorted(set(want) - set(got))}, extra {sorted(set(got) - set(want))}"
    )
    for name in want:
        assert got[name] == want[name], f"{name}: environment.yml has {got[name]}, pyproject.toml {want[name]}"


def test_environment_installs_the_project_and_postgres(environment):
    assert environment["name"] == "pg-replication-lab"
    assert "conda-forge" in environment["channels"]
    assert any(p in LOCAL_INSTALLS for p in _pip_list(environment)), "environment.yml must pip-install the project (`-e .`)"
    conda = {re.split(r"[<>=!~ ]", d, maxsplit=1)[0]: d for d in environment["dependencies"] if isinstance(d, str)}
    assert conda.keys() >= {"python", "pip", "postgresql"}
    assert conda["python"].replace(" ", "") == "python>=3.10"
    assert conda["postgresql"].replace(" ", "") == "postgresql>=13"


def test_tiny_parser_agrees_with_yaml():
    yaml = pytest.importorskip("yaml")
    text = (ROOT / "environment.yml").read_text(encoding="utf-8")
    assert parse_environment_yml(text) == yaml.safe_load(text)


# --------------------------------------------------------------------------
# notebooks
# --------------------------------------------------------------------------

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize(
    "notebook",
    NOTEBOOKS or [pytest.param(None, marks=pytest.mark.skip(reason="no notebooks/*.ipynb yet"))],
    ids=lambda p: p.name if p else "none",
)
def test_notebook_committed_without_outputs(notebook: Path):
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    dirty = [
        i
        for i, cell in enumerate(nb["cells"])
        if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, (
        f"{notebook.name}: code cells {dirty} have outputs or an execution count; "
        f"clear them: jupyter nbconvert --clear-output --inplace notebooks/{notebook.name}"
    )
    assert "widgets" not in nb.get("metadata", {}), (
        f"{notebook.name}: saved widget state in the notebook metadata; delete metadata.widgets "
        "(JupyterLab: Settings > untick 'Save Widget State Automatically')"
    )


# --------------------------------------------------------------------------
# .gitignore, Makefile, CI
# --------------------------------------------------------------------------

def _gitignore_patterns() -> set[str]:
    out = set()
    for line in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")):
            out.add(line.removeprefix("**/").strip("/"))
    return out


@pytest.mark.parametrize("entry", [".venv", ".lab", ".ipynb_checkpoints"])
def test_gitignore_covers(entry):
    assert entry in _gitignore_patterns(), f".gitignore must ignore {entry}/"


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set()
    for m in re.finditer(r"^([A-Za-z0-9_.\- ]+?)\s*::?(?!=)", text, re.M):
        targets.update(m.group(1).split())
    return targets


def test_makefile_has_lab_and_test_targets():
    assert _make_targets() >= {"setup", "lab", "test"}


def test_makefile_scripts_exist():
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    for script in re.findall(r"scripts/[\w.-]+", text):
        assert (ROOT / script).is_file(), f"Makefile runs {script}, which does not exist"


def test_ci_runs_make_test():
    ci = ROOT / ".ci" / "run"
    assert ci.stat().st_mode & stat.S_IXUSR, ".ci/run must be executable"
    code = [line.split("#", 1)[0].strip() for line in ci.read_text(encoding="utf-8").splitlines()]
    assert any(re.fullmatch(r"(exec\s+)?make\s+test", line) for line in code), ".ci/run must run `make test`"


# --------------------------------------------------------------------------
# no fixed passwords from the original project
# --------------------------------------------------------------------------

# spelled in pieces so that this file is not itself a hit for the repository-wide scan
ORIGINAL_PASSWORDS = ("root_" + "password", "Bean" + "2023", "repl_password_" + "2024")
SCANNED_DIRS = ("master", "replica", "compose", "lab", "app", "notebooks")
SKIPPED_DIRS = {"__pycache__", ".ipynb_checkpoints", ".pytest_cache"}


def _scanned_files():
    for top in SCANNED_DIRS:
        for dirpath, dirnames, filenames in os.walk(ROOT / top):
            dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIRS and not d.endswith(".egg-info")]
            for name in filenames:
                path = Path(dirpath) / name
                if path.suffix.lower() == ".md" or path.stat().st_size > 5_000_000:
                    continue
                data = path.read_bytes()
                if b"\0" in data[:8192]:
                    continue  # binary
                yield path, data.decode("utf-8", errors="replace")


def test_no_fixed_passwords_from_the_original_project():
    pattern = re.compile(r"(?<![\w])(" + "|".join(map(re.escape, ORIGINAL_PASSWORDS)) + r")(?![\w])")
    hits = [
        f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(1)}"
        for path, text in _scanned_files()
        for m in pattern.finditer(text)
    ]
    assert not hits, "fixed passwords of the original project (generate them per cluster):\n" + "\n".join(hits)


def test_password_scan_sees_the_scripts():
    scanned = {p.relative_to(ROOT).as_posix() for p, _ in _scanned_files()}
    for script in ("master/init-master.sh", "replica/entrypoint.sh"):
        if (ROOT / script).exists():
            assert script in scanned


# --------------------------------------------------------------------------
# scripts/ensure-postgres.sh and lab.system.binaries look in the same places
# --------------------------------------------------------------------------

def _fake_bindir(path: Path, version: str) -> Path:
    path.mkdir(parents=True)
    (path / "postgres").write_text(f'#!/bin/sh\necho "postgres (PostgreSQL) {version}"\n')
    for tool in ("initdb", "pg_ctl", "pg_basebackup", "psql", "pg_isready"):
        (path / tool).write_text("#!/bin/sh\nexit 0\n")
    for tool in path.iterdir():
        tool.chmod(0o755)
    return path


def _script_finds(env: dict) -> "str | None":
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "ensure-postgres.sh")],
        env={**env, "LAB_NO_INSTALL": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0:
        assert "install the PostgreSQL server" in out.stderr, out.stderr
        return None
    m = re.fullmatch(r"PostgreSQL (\S+) server binaries: (.+)", out.stdout.strip())
    assert m, out.stdout
    return m.group(2)


def _package_finds(env: dict) -> "str | None":
    from lab.system import binaries
    from lab.errors import BinariesNotFound, PostgresTooOld

    try:
        return str(binaries.find(env).bindir)
    except (BinariesNotFound, PostgresTooOld):
        return None


@pytest.mark.skipif(shutil.which("bash") is None or sys.platform == "win32", reason="needs bash")
@pytest.mark.parametrize("case", ["as-is", "PG_BIN", "PG_BIN-too-old", "PG_BIN-incomplete", "conda"])
def test_ensure_postgres_agrees_with_lab_binaries(case, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PG_BIN", "PG_CONFIG", "CONDA_PREFIX")}
    if case == "PG_BIN":
        env["PG_BIN"] = str(_fake_bindir(tmp_path / "bin", "14.2"))
    elif case == "PG_BIN-too-old":
        env["PG_BIN"] = str(_fake_bindir(tmp_path / "bin", "12.9"))
    elif case == "PG_BIN-incomplete":
        env["PG_BIN"] = str(_fake_bindir(tmp_path / "bin", "16.1"))
        (tmp_path / "bin" / "pg_basebackup").unlink()
    elif case == "conda":
        _fake_bindir(tmp_path / "bin", "16.1")
        env["CONDA_PREFIX"] = str(tmp_path)
    found = _package_finds(env)
    assert _script_finds(env) == found
    if case == "PG_BIN":
        assert found == env["PG_BIN"]
