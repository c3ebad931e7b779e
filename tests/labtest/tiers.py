"""The tier guard: ``integration`` means "starts real PostgreSQL servers", and a test that does so
without the marker fails, with what it started.

What counts, in the setup and call phases of a test that is not marked ``integration``:

- a port claimed for a lab home (an existing directory) by this process, e.g. by ``lab.up``,
  a proxy or a service, even if it is released before the phase ends (``ports.claim`` is
  wrapped for the session; the unit tests of the claims use homes that do not exist);
- a postmaster of this session (see labtest/session.py) that was not running before the phase,
  e.g. one started by a ``python -m lab`` subprocess.

Servers in containers (the compose tier) are seen only through their port claims.  Tests that
are marked are not watched (no cost for them)."""
from __future__ import annotations

import os

import pytest

from lab.system import ports
from labtest import helpers

MARKER = "integration"

_claimed: "list[tuple[int, str]]" = []
_original_claim = ports.claim


def _recording_claim(port, owner, **kw):
    got = _original_claim(port, owner, **kw)
    if got and os.path.isdir(owner):
        _claimed.append((port, owner))
    return got


def pytest_configure(config):
    ports.claim = _recording_claim


def pytest_unconfigure(config):
    ports.claim = _original_claim


def _started(before: "set[int]") -> "list[str]":
    found = [f"port {port} claimed for the lab home {owner}" for port, owner in _claimed]
    found += [f"postmaster {pid} of {d}" for pid, d in sorted(helpers.session_postmasters().items())
              if pid not in before]
    return found


def _guard(item, phase):
    if item.get_closest_marker(MARKER) is not None:
        return (yield)
    _claimed.clear()
    before = set(helpers.session_postmasters())
    try:
        result = yield
    except BaseException:
        found = _started(before)
        if found:
            item.add_report_section(phase, "tier guard", _message(item, phase, found))
        raise
    found = _started(before)
    if found:
        pytest.fail(_message(item, phase, found), pytrace=False)
    return result


def _message(item, phase, found) -> str:
    return (f"{item.nodeid} started PostgreSQL servers or claimed ports for a lab home in its {phase} "
            f"without the '{MARKER}' marker (tests/README.md: tiers): " + "; ".join(found) +
            f".  Mark it: pytestmark = pytest.mark.{MARKER} (or @pytest.mark.{MARKER}).")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    return (yield from _guard(item, "setup"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    return (yield from _guard(item, "call"))
