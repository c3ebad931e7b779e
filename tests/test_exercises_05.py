"""Chapter 05's self-checks and the link panel's callback, on a real cluster: ❌ before, ✅ after."""
from __future__ import annotations

import pytest

from lab import checks, lag, proxy, sync

pytestmark = pytest.mark.integration


def test_chapter_05_registers_its_exercises():
    assert list(checks.exercises("05")["exercise"]) == ["05.1", "05.2", "05.3", "05.4"]


def test_05_1_sync_standby(two):
    assert not checks.check("05.1", two)
    sync.set_synchronous(two, "replica1")
    try:
        assert checks.check("05.1", two)
    finally:
        sync.set_synchronous(two, "")


def test_05_2_quorum(two):
    sync.set_synchronous(two, "replica1")
    assert not checks.check("05.2", two)
    sync.set_synchronous(two, "ANY 1 (replica1, replica2)")
    try:
        assert checks.check("05.2", two)
    finally:
        sync.set_synchronous(two, "")


def test_05_3_read_your_writes_needs_remote_apply_on_a_sync_standby(two):
    try:
        proxy.route(two, "replica1", latency_ms=5)   # so that replica1 surely lags
        assert not checks.check("05.3", two)
        two.primary.set(synchronous_commit="remote_apply")
        r = checks.check("05.3", two)          # remote_apply, but no synchronous standby
        assert not r and "what must replica1 be" in r.message
        sync.set_synchronous(two, "replica1")
        assert checks.check("05.3", two)
        proxy.unroute(two, "replica1")
        two.primary.set(synchronous_commit="on")
        r = checks.check("05.3", two)          # all seen, but on does not wait for replay
        assert not r
    finally:
        two.primary.set(synchronous_commit=None)
        sync.tidy(two)


def test_05_4_repaired_only_when_direct_and_async(two):
    assert checks.check("05.4", two)
    proxy.route(two, "replica1")
    r = checks.check("05.4", two)
    assert not r and "proxy" in r.message
    sync.tidy(two)
    assert checks.check("05.4", two)


def test_link_action_is_what_the_panel_does(two):
    try:
        assert "+30 ms" in lag.link_action(two, "replica1", "latency", 30)
        assert proxy.link(two, "replica1").proxy.latency_ms == {"up": 30, "down": 30}
        assert "cut" in lag.link_action(two, "replica1", "cut")
        assert proxy.link(two, "replica1").proxy.is_cut
        assert "healed" in lag.link_action(two, "replica1", "heal")
        assert "directly" in lag.link_action(two, "replica1", "direct")
        assert proxy.link(two, "replica1") is None
        assert "unknown action" in lag.link_action(two, "replica1", "explode")
        assert "could not" in lag.link_action(two, "primary", "latency", 10)
    finally:
        sync.tidy(two)
    panel = lag.link_panel(two, "replica1")
    assert panel.children
