"""Runs last (files run in name order): no server process or port claim of the tests remains."""
from __future__ import annotations

import os

import pytest

from conftest import postmasters


def test_no_server_process_of_the_tests_remains(postmasters_before):
    left = {pid: d for pid, d in postmasters().items()
            if pid not in postmasters_before and ("pytest-of-" in d or "pglab-data-" in d or "/pglab-test" in d)}
    assert not left, f"servers left running by the tests: {left}"


def test_no_pgadmin_of_the_tests_remains():
    from lab.pgadmin import pgadmin_pids

    left = {}
    for pid in pgadmin_pids():
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if "pytest-of-" in cwd:
            left[pid] = cwd
    assert not left, f"pgAdmin processes left running by the tests: {left}"


def test_no_port_claim_of_the_tests_remains(claims_dir):
    left = sorted(p.name for p in claims_dir.glob("*.json"))
    assert not left, f"port claims left by the tests: {left}"


@pytest.fixture(scope="session", autouse=True)
def _remove_claims_dir(claims_dir):
    yield
    try:
        claims_dir.rmdir()
    except OSError:
        pass
