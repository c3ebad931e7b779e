"""lab.doctor's rows for chapter 08 (etcd, HAProxy, Patroni, the server user running Patroni): found with
version and path, or what to install in hatools' words; optional (not in Doctor.ok); quick after the
first time (a cache keyed by the files).  Unit tests: fake programs, no server."""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

from lab.system import hatools

doctor = importlib.import_module("lab.doctor")  # the module (lab.doctor is also a function)


def _fake(path: Path, text: str, calls: "Path | None" = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = f"echo x >> '{calls}'\n" if calls else ""
    path.write_text(f"#!/bin/sh\n{count}echo '{text}'\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    """Fake etcd, HAProxy and Patroni (each counting its runs), a cache of the test's own, and a
    server user check that succeeds without starting anything."""
    calls = tmp_path / "calls"
    paths = {
        "LAB_ETCD": _fake(tmp_path / "bin" / "etcd", "etcd Version: 3.5.9", calls),
        "LAB_HAPROXY": _fake(tmp_path / "bin" / "haproxy", "HAProxy version 2.8.3-1 2023/09/08", calls),
        "LAB_PATRONI": _fake(tmp_path / "bin" / "patroni", "patroni 4.1.5", calls),
        "LAB_PATRONICTL": _fake(tmp_path / "bin" / "patronictl", "patronictl, version 4.1.5"),
    }
    for var, path in paths.items():
        monkeypatch.setenv(var, str(path))
    monkeypatch.setenv("LAB_CACHE", str(tmp_path / "cache"))
    checks = []

    def server_python(run_kwargs, install=True):
        assert install is False, "the doctor only looks: it never makes Patroni's environment"
        checks.append(run_kwargs)
        return "/usr/bin/python3.11", {"PYTHONPATH": "/somewhere/site-packages"}

    monkeypatch.setattr(hatools, "server_python", server_python)

    def runs() -> int:
        return len(calls.read_text().splitlines()) if calls.exists() else 0

    return {"paths": paths, "runs": runs, "checks": checks, "cache": tmp_path / "cache"}


def _rows() -> dict:
    return {name: (ok, detail) for name, ok, detail in doctor.ha_rows()}


def test_found_programs_show_version_and_path(fakes):
    rows = _rows()
    assert list(rows) == list(doctor.HA_ROWS)
    p = fakes["paths"]
    assert rows["etcd (chapter 08)"] == (True, f"3.5.9 at {p['LAB_ETCD']}")
    assert rows["HAProxy (chapter 08)"] == (True, f"2.8.3 at {p['LAB_HAPROXY']}")
    assert rows["Patroni (chapter 08)"] == (True, f"4.1.5 at {p['LAB_PATRONI']}")
    ok, detail = rows["Patroni as the server user"]
    assert ok and "runs Patroni with /usr/bin/python3.11" in detail and "PYTHONPATH" in detail


@pytest.mark.parametrize("program, var, row", [
    ("etcd", "LAB_ETCD", "etcd (chapter 08)"),
    ("haproxy", "LAB_HAPROXY", "HAProxy (chapter 08)"),
    ("patroni", "LAB_PATRONI", "Patroni (chapter 08)"),
])
def test_missing_program_is_hatools_install_hint(fakes, monkeypatch, tmp_path, program, var, row):
    monkeypatch.setenv(var, str(tmp_path / "nonexistent"))
    ok, detail = _rows()[row]
    assert not ok
    assert detail in hatools.missing()
    assert detail.startswith(f"{program} (") and "install it with" in detail and var in detail
    assert hatools.PROGRAMS[program][2] in detail


def test_server_user_not_checked_without_patroni(fakes, monkeypatch, tmp_path):
    monkeypatch.setenv("LAB_PATRONI", str(tmp_path / "nonexistent"))
    ok, detail = _rows()["Patroni as the server user"]
    assert not ok and "Patroni is not installed" in detail
    assert fakes["checks"] == []


def test_server_user_that_cannot_run_patroni_says_why(fakes, monkeypatch):
    def cannot(run_kwargs, install=True):
        raise hatools.HAToolMissing("the server user cannot run Patroni from this Python environment (…): install python3.11")

    monkeypatch.setattr(hatools, "server_python", cannot)
    ok, detail = _rows()["Patroni as the server user"]
    assert not ok and detail.startswith("the server user cannot run Patroni")


def test_second_report_runs_nothing_until_a_program_changes(fakes):
    first = _rows()
    assert fakes["runs"]() == 3 and len(fakes["checks"]) == 1
    assert _rows() == first
    assert fakes["runs"]() == 3 and len(fakes["checks"]) == 1  # all from the cache
    etcd = fakes["paths"]["LAB_ETCD"]
    _fake(etcd, "etcd Version: 3.6.0 (upgraded)", etcd.parent.parent / "calls")
    os.utime(etcd, ns=(1, 1))  # a new file, whatever the clock's resolution
    rows = _rows()
    assert rows["etcd (chapter 08)"] == (True, f"3.6.0 at {etcd}")
    assert fakes["runs"]() == 4


def test_failed_server_check_is_asked_again(fakes, monkeypatch):
    attempts = []

    def flaky(run_kwargs, install=True):
        attempts.append(1)
        if len(attempts) == 1:
            raise hatools.HAToolMissing("the server user cannot run Patroni: not yet")
        return "/usr/bin/python3.11", {}

    monkeypatch.setattr(hatools, "server_python", flaky)
    assert not _rows()["Patroni as the server user"][0]
    ok, detail = _rows()["Patroni as the server user"]
    assert ok and "PYTHONPATH" not in detail
    _rows()
    assert len(attempts) == 2  # the success is cached, the failure was not


def test_unreadable_cache_is_ignored(fakes):
    fakes["cache"].mkdir(parents=True, exist_ok=True)
    (fakes["cache"] / "doctor-ha.json").write_text("{not json")
    assert _rows()["etcd (chapter 08)"][0]
    assert (fakes["cache"] / "doctor-ha.json").read_text().startswith("{\n")


def test_chapter_08_rows_are_optional():
    rows = [("PostgreSQL server", True, "16 in /x")] + [(name, False, "missing") for name in doctor.HA_ROWS]
    assert doctor.Doctor(rows).ok
    assert not doctor.Doctor(rows + [("lab home", False, "unwritable")]).ok
    text = repr(doctor.Doctor(rows))
    assert all(name in text for name in doctor.HA_ROWS)


def test_report_ends_with_chapter_08_rows(fakes, tmp_path):
    rows = doctor.report(tmp_path / "lab")
    assert [r[0] for r in rows[-len(doctor.HA_ROWS):]] == list(doctor.HA_ROWS)


def test_chapter_09_row_finds_pg_recvlogical_and_test_decoding_or_says_what_to_install(tmp_path):
    """On this machine's server both are there; in a copy of its bin/ and lib/ without them, the row
    says what is missing and how to install it, and is optional (chapters 00-08 need neither)."""
    from lab.system import binaries

    real = binaries.find()
    assert binaries.missing_for_logical(real) == []
    row = next(r for r in doctor.report(tmp_path / "lab") if r[0] == doctor.LOGICAL_ROW)
    assert row[1] and "test_decoding" in row[2]
    bindir, lib = tmp_path / "pg" / "bin", tmp_path / "pg" / "lib"
    bindir.mkdir(parents=True)
    lib.mkdir()
    (lib / "plpgsql.so").write_bytes(b"")
    bare = binaries.PgBinaries(bindir=bindir, source="test", version=real.version, major=real.major)
    lacking = binaries.missing_for_logical(bare)
    assert len(lacking) == 2 and "pg_recvlogical" in lacking[0] and "test_decoding" in lacking[1]
    assert binaries.pkglibdir(bare) == lib
    assert doctor.Doctor([("PostgreSQL server", True, "x"), (doctor.LOGICAL_ROW, False, "missing")]).ok
