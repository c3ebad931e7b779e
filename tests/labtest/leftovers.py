"""The leftovers check, when the session ends (after every fixture's teardown): no PostgreSQL
server, pgAdmin, app or other lab service process started by these tests, and no port claim of
theirs, is left.  If one is, the session fails (exit status 1 where it would have been 0) and says
what and where; it runs for every session, one test file or the whole suite."""
from __future__ import annotations

import sys
import time

import pytest

from labtest import helpers
from labtest.session import CLAIMS

GRACE_S = 10.0  # a server told to stop may take a moment to go
SERVICE_MARK = "LAB_SERVICE"  # lab/services/supervisor.py: MARK, on every process of a lab service
APP_MARK = "APP_TEST_SESSION"  # what tests/app_fixtures.py puts in the environment of the app's processes


def leftovers() -> "dict[str, dict]":
    """What of this session is still there, by kind; empty kinds left out."""
    pgadmin = helpers.session_processes(cmdline=b"pgadmin4.pgAdmin4")
    services = {pid: cmd for pid, cmd in helpers.session_processes(APP_MARK, SERVICE_MARK).items()
                if pid not in pgadmin}
    found = {
        "PostgreSQL servers (pid: data directory)": helpers.session_postmasters(),
        "pgAdmin processes": pgadmin,
        "app and other lab service processes": services,
        f"port claims in {CLAIMS}": {p.name: "" for p in sorted(CLAIMS.glob("*.json"))},
    }
    return {kind: items for kind, items in found.items() if items}


def _wait_for_leftovers() -> "dict[str, dict]":
    deadline = time.monotonic() + GRACE_S
    while True:
        left = leftovers()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


@pytest.hookimpl(trylast=True)  # after the runner's own sessionfinish has torn down what was left set up
def pytest_sessionfinish(session, exitstatus):
    left = _wait_for_leftovers()
    if not left:
        try:
            CLAIMS.rmdir()
        except OSError:
            pass
        return
    lines = []
    for kind, items in left.items():
        lines.append(f"{kind}:")
        lines += [f"    {k}{': ' + v if v else ''}" for k, v in items.items()]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_sep("=", "left behind by the tests", red=True, bold=True)
        for line in lines:
            reporter.write_line(line)
        reporter.write_line("Every test must stop what it starts (a fixture with a teardown); "
                            "the session fails.  Stop these by hand before the next run.")
    else:
        print("left behind by the tests:\n" + "\n".join(lines), file=sys.stderr)
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
