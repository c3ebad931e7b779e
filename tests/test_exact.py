"""Self-checks check what their statement asks: on a real cluster, each one FAILS in the starting state
(the chapter's cells run, nothing of the exercise done) and PASSES after the action its notebook asks for.

02.1 and 02.4 are in tests/test_wal.py (test_02_1_your_commit_in_the_wal, test_break_it_and_repair_it).
"""
from __future__ import annotations

import json
import stat

import pytest

import lab
from lab import backups, slots, sync
from lab.checks import check
from lab.exercises.memory import FILE

pytestmark = pytest.mark.integration


def test_03_4_fails_until_your_own_slot_was_made_and_dropped(cluster):
    start = check("03.4", cluster)
    assert not start.ok and "no slot of yours yet" in start.message
    # the statement: create 'mine' (exercise 03.3), then drop it, settings back to their defaults
    slots.create_slot(cluster, "mine")
    try:
        assert check("03.3", cluster, answer=["mine"]).ok
        hint = check("03.4", cluster)
        assert not hint.ok and "drop_slot(cluster, 'mine')" in hint.message
    finally:
        slots.drop_slot(cluster, "mine")
    cluster.primary.set(wal_keep_size=0)
    try:
        hint = check("03.4", cluster)
        assert not hint.ok and "wal_keep_size is still 0MB on primary" in hint.message
    finally:
        cluster.primary.set(wal_keep_size=None)
    done = check("03.4", cluster)
    assert done.ok and "'mine' gone" in done.message
    # what the check saw is kept in the lab home, readable by its owner only
    path = cluster.home.path / FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [seen["03.4"] for seen in json.loads(path.read_text()).values()] == [{"forgotten": ["mine"]}]


def test_03_5_fails_until_a_replica_was_broken_and_repaired(cluster):
    start = check("03.5", cluster)
    assert not start.ok and "nothing broken yet" in start.message
    # the statement: a replica without a slot, wal_keep_size = 0; stop it, write WAL, checkpoint, start it
    cluster.add_replica("mine", from_backup=backups.take_base_backup(cluster, quiet=True))
    assert not check("03.5", cluster).ok  # streaming, but nothing broken yet
    cluster.primary.set(wal_keep_size=0)
    try:
        mine = cluster.node("mine")
        mine.stop()
        slots.write_wal(cluster, 4)
        slots.checkpoint(cluster)
        mine.start()
        broken = check("03.5", cluster)
        for _ in range(20):  # its WAL receiver asks, and fails, within a moment of its start
            if "broken" in broken.message:
                break
            broken = check("03.5", cluster)
        assert not broken.ok and "broken: the primary no longer has the WAL mine needs" in broken.message
        assert "take_base_backup" in broken.message
        # removed before it was repaired: not done
        cluster.remove_replica("mine")
        gone = check("03.5", cluster)
        assert not gone.ok and "removed before it streamed again" in gone.message
        # the repair: a fresh base backup under the same name
        cluster.add_replica("mine", from_backup=backups.take_base_backup(cluster, quiet=True))
        done = check("03.5", cluster)
        assert done.ok and "mine lost its WAL and streamed again" in done.message
    finally:
        if "mine" in [r.name for r in cluster.replicas]:
            cluster.remove_replica("mine")
        cluster.primary.set(wal_keep_size=None)
        backups.clean(cluster)
    assert check("03.5", cluster).ok  # then removed, as the statement says: still done


@pytest.mark.parametrize("level,ok,says", [
    ("local", False, "COMMIT returns before any standby has the WAL"),
    ("remote_write", True, "an OS crash of the standby at the same moment would lose it"),
    ("on", True, "survives even an OS crash of the standby"),
    ("remote_apply", True, "a read on the standby sees it as soon as the COMMIT returned"),
])
def test_06_4_each_level_that_waits_for_a_standby_passes_and_says_what_it_keeps(cluster, level, ok, says):
    start = check("06.4", cluster)
    assert not start.ok and "synchronous_standby_names is empty" in start.message
    sync.set_synchronous(cluster, "replica1")
    try:
        cluster.primary.set(synchronous_commit=level)
        result = check("06.4", cluster)
        assert result.ok is ok and says in result.message
        if ok:
            assert "a crash of the primary alone loses none" in result.message
    finally:
        cluster.primary.set(synchronous_commit=None)
        sync.set_synchronous(cluster, "")
    assert not check("06.4", cluster).ok


def test_a_new_cluster_in_the_same_lab_home_has_nothing_seen(fresh_cluster):
    home = fresh_cluster.home.path
    slots.create_slot(fresh_cluster, "theirs")
    try:
        assert check("03.3", fresh_cluster, answer=["theirs"]).ok
    finally:
        slots.drop_slot(fresh_cluster, "theirs")
    assert check("03.4", fresh_cluster).ok
    fresh_cluster.down(wipe=True)
    again = lab.up(replicas=1, home=home, quiet=True)
    assert not check("03.4", again).ok  # the memory is kept per cluster (its system_identifier)
