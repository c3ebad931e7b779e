"""Faults on real servers: pause and resume, the watchdog, kill, and a replica cut off and healed."""
from __future__ import annotations

import os
import time

import psutil
import pytest

from lab import faults, proxy, workload
from lab.backends import local
from lab.errors import LabError, NotRunning
from lab.lsn import parse_lsn
from lab.system.process import process_tree, state

pytestmark = pytest.mark.integration

GONE = (None, psutil.STATUS_ZOMBIE)


def _states(node):
    return {state(p) for p in process_tree(node.pid)}


def _alive_in_group(pgid):
    alive = []
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(p.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return alive


def _wait(predicate, timeout=15):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_pause_freezes_every_process_and_resume_thaws_them(cluster):
    replica = cluster.node("replica1")
    try:
        msg = replica.pause(max_seconds=30)
        assert "paused" in msg
        assert faults.is_paused(replica)
        assert _states(replica) <= {psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP}
        dog = local._watchdogs[replica.spec["pgdata"]].pid
        with pytest.raises(NotRunning):
            replica.connect(connect_timeout=2)
    finally:
        assert "resumed" in replica.resume()
    assert not faults.is_paused(replica)
    assert psutil.STATUS_STOPPED not in _states(replica)
    assert replica.scalar("SELECT 1") == 1
    assert local._watchdogs == {}
    assert _wait(lambda: not _alive_in_group(dog))  # the watchdog's shell and its sleep are gone


def test_paused_context_resumes_on_an_exception(cluster):
    replica = cluster.node("replica1")
    with pytest.raises(RuntimeError):
        with faults.paused(replica):
            assert faults.is_paused(replica)
            raise RuntimeError("boom")
    assert not faults.is_paused(replica)


def test_the_watchdog_resumes_a_node_left_paused(cluster):
    replica = cluster.node("replica1")
    try:
        faults.pause(replica, max_seconds=1)
        assert faults.is_paused(replica)
        assert _wait(lambda: not faults.is_paused(replica))
    finally:
        faults.resume(replica)  # also reaps the watchdog
    assert local._watchdogs == {}


def test_primary_paused_blocks_writes_then_they_resume(cluster):
    primary = cluster.primary
    with workload.Writer(primary, rate=100, duration=20) as w:
        assert _wait(lambda: len(w.writes) >= 5)
        with faults.paused(primary):
            n = len(w.writes)
            time.sleep(0.5)
            stalled = len(w.writes) - n
        assert _wait(lambda: sum(x.outcome == "acknowledged" for x in w.writes[n:]) >= 5)
    assert stalled <= 1   # the write in flight at the pause, at most
    assert workload.lost_writes(w, primary).empty


def test_kill_and_killed_restart(cluster):
    replica = cluster.node("replica1")
    with faults.killed(replica):
        assert not replica.is_running
    assert replica.is_running
    cluster.wait_streaming()
    msg = faults.kill(replica)
    assert "killed" in msg and not replica.is_running
    with pytest.raises(NotRunning):
        faults.kill(replica)
    replica.start()
    cluster.wait_streaming()


def test_kill_of_a_paused_node_leaves_no_frozen_child(cluster):
    replica = cluster.node("replica1")
    faults.pause(replica)
    pids = process_tree(replica.pid)
    faults.kill(replica)
    assert _wait(lambda: all(state(p) in GONE for p in pids))
    replica.start()
    cluster.wait_streaming()


def test_node_kill_and_cluster_down_thaw_a_paused_node_first(cluster):
    """Node.kill() and cluster.down() (not only faults.kill) on a paused node: no frozen child stays."""
    replica = cluster.node("replica1")
    for stop in (lambda: replica.kill(), lambda: cluster.down()):
        faults.pause(replica)
        pids = process_tree(replica.pid)
        stop()
        assert _wait(lambda: all(state(p) in GONE for p in pids))
        cluster.start()
        cluster.wait_streaming()


def test_cut_stops_replication_and_heal_catches_up(cluster):
    replica = cluster.node("replica1")
    try:
        with faults.partitioned(cluster, "replica1"):
            assert faults.is_cut(cluster, "replica1")
            cluster.primary.execute("INSERT INTO test_replication (mensaje) VALUES ('during the cut')")
            target = cluster.primary.scalar("SELECT pg_current_wal_insert_lsn()::text")
            time.sleep(0.5)
            replayed = replica.scalar("SELECT pg_last_wal_replay_lsn()::text", dbname="postgres")
            assert parse_lsn(replayed) < parse_lsn(target)
        assert not faults.is_cut(cluster, "replica1")
        cluster.wait_replayed(target)
        assert replica.scalar("SELECT count(*) FROM test_replication WHERE mensaje = 'during the cut'") >= 1
    finally:
        proxy.unroute_all(cluster)


def test_heal_without_a_link_says_so(cluster):
    assert "nothing to heal" in faults.heal(cluster, "replica1")


def test_pause_argument_checks_and_a_paused_node_is_paused_once(cluster):
    replica = cluster.node("replica1")
    with pytest.raises(LabError, match="max_seconds"):
        faults.pause(replica, max_seconds=0)
    with faults.paused(replica, max_seconds=20):
        assert faults.pause(replica) == "replica1: paused already"
        assert faults.resume_all(cluster) == ["replica1"]
        assert faults.resume(replica) == "replica1: was not paused"
    assert replica.scalar("SELECT 1") == 1
