"""Runs after the other tests of the crypto app (files run in name order): no process they started
(uvicorn, streamlit, chromium, python -m app ...) is left.  Each carries APP_TEST_SESSION=<pid>."""
from __future__ import annotations

from pathlib import Path

from app_fixtures import MARKER, SESSION


def test_no_app_process_of_the_tests_remains():
    marker = f"{MARKER}={SESSION}".encode()
    left = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if marker in (d / "environ").read_bytes().split(b"\0"):
                left[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ")[:120].decode(errors="replace")
        except OSError:
            continue
    assert not left, f"processes left running by the app's tests: {left}"
