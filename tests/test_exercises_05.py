"""Chapter 05's self-checks and the link panel's callback, on a real cluster: ❌ before, ✅ after."""
from __future__ import annotations

import threading
import time

import pytest

from lab import checks, lag, proxy, standby, sync
from lab.errors import BadArgument

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


def _writer_threads() -> list:
    return [t for t in threading.enumerate() if t.name == "lab-writer" and t.is_alive()]


def test_link_action_is_what_the_panel_does(two):
    try:
        said = lag.link_action(two, "replica1", "latency", 30)
        assert "+30 ms" in said and f"a writer adds {lag.PANEL_RATE} rows/s" in said
        assert proxy.link(two, "replica1").proxy.latency_ms == {"up": 30, "down": 30}
        writer = lag.link_writer(two, "replica1")
        assert writer is not None and writer.running
        assert "cut" in lag.link_action(two, "replica1", "cut")
        assert proxy.link(two, "replica1").proxy.is_cut
        assert lag.link_writer(two, "replica1") is writer  # one writer, not one per action
        assert "healed" in lag.link_action(two, "replica1", "heal")
        # with the writer running, the replica's lag has something to show behind the 30 ms link
        lags = []
        for _ in range(20):
            lags.append(standby.lag_table(two).set_index("node").loc["replica1", "lag_bytes"])
            time.sleep(0.05)
        assert max(x for x in lags if x is not None) > 0
        direct = lag.link_action(two, "replica1", "direct")
        assert "directly" in direct and "the writer stopped after" in direct
        assert proxy.link(two, "replica1") is None and lag.link_writer(two, "replica1") is None
        assert not writer.running and len(writer.writes) > 0
        assert "unknown action" in lag.link_action(two, "replica1", "explode")
        assert "could not" in lag.link_action(two, "primary", "latency", 10)
        assert lag.link_writer(two, "primary") is None
    finally:
        sync.tidy(two)
        lag.stop_link_writer(two, "replica1")
    assert not _writer_threads()


def test_link_panel_callbacks_writer_and_slider(two):
    panel = lag.link_panel(two, "replica1")
    try:
        first = lag.link_writer(two, "replica1")
        assert first is not None and first.running and "a writer adds" in panel.message.value
        assert proxy.link(two, "replica1") is None  # nothing changes until a control is touched
        panel.slider.value = 50  # what moving the slider does (the observer runs in Python)
        assert proxy.link(two, "replica1").proxy.latency_ms == {"up": 50, "down": 50}
        assert "+50 ms" in panel.message.value
        panel.buttons["cut"].click()
        assert proxy.link(two, "replica1").proxy.is_cut
        panel.buttons["heal"].click()
        assert "healed" in panel.message.value
        panel.buttons["direct"].click()
        assert panel.slider.value == 0, "the slider says what the link is: no latency"
        assert proxy.link(two, "replica1") is None, "putting the slider back added no proxy"
        assert lag.link_writer(two, "replica1") is None and not first.running
        assert lag.panel_slider_moved(panel, {"new": 20}).startswith("replica1: +20 ms")
        second = lag.link_writer(two, "replica1")
        assert second is not None
        # a new panel (the cell run again) stops the writer of the old one, and starts its own
        again = lag.link_panel(two, "replica1")
        assert not second.running and lag.link_writer(two, "replica1") is not None
        again.close()  # closing the panel stops its writer
        assert lag.link_writer(two, "replica1") is None
    finally:
        panel.close()
        sync.tidy(two)
        lag.stop_link_writer(two, "replica1")
    assert not _writer_threads()


def test_link_action_refuses_bad_arguments(two):
    with pytest.raises(BadArgument):
        lag.link_action(two, "replica1", "latency", -5)
    with pytest.raises(BadArgument):
        lag.link_action(two, 3, "cut")
    assert lag.link_writer(two, "replica1") is None
