"""Consistency anomalies counted on real replicas, and their fixes."""
from __future__ import annotations

import pytest

from lab import consistency as cs
from lab import proxy
from lab.errors import LabError

pytestmark = pytest.mark.integration


def test_read_your_writes_violated_without_a_fix_and_never_with_either(two):
    d = cs.read_your_writes_compare(two, "replica1", n=15, latency_ms=5, quiet=True)
    s = cs.summarize(d).set_index("fix")
    # 5 ms each way: a read sent right after the commit finds the replica behind it.  Not every
    # time: a client descheduled for longer than the WAL's trip (a busy machine) reads late, so
    # count misses, not their number; with either fix a miss cannot happen, whatever the timing
    assert s.loc["none", "violations"] > 0
    assert s.loc["wait_lsn", "violations"] == 0
    assert s.loc["remote_apply", "violations"] == 0
    assert two.primary.scalar("SHOW synchronous_standby_names") == ""
    assert proxy.link(two, "replica1") is None


def test_remote_apply_needs_a_sync_standby(two):
    with pytest.raises(LabError, match="synchronous standby"):
        cs.read_your_writes(two, "replica1", n=1, fix="remote_apply")


def test_monotonic_reads_go_back_only_when_alternating(two):
    d = cs.monotonic_reads_compare(two, n=30, delay_ms=30, quiet=True)
    s = cs.summarize(d, "went_back").set_index("mode")
    assert s.loc["alternate", "violations"] > 0
    assert s.loc["sticky", "violations"] == 0
    assert s.loc["wait_lsn", "violations"] == 0
    assert set(d[d["mode"] == "sticky"]["replica"]) == {"replica1"}


def test_bad_arguments(two):
    with pytest.raises(LabError):
        cs.read_your_writes(two, fix="hope")
    with pytest.raises(LabError):
        cs.monotonic_reads(two, mode="random")
    with pytest.raises(LabError):
        cs.summarize(None)
