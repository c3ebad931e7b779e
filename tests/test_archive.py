"""lab.archive and chapter 10's self-checks, on real servers: archiving and its failure, point-in-time
recovery from a base backup and the archive, a standby fed from the archive, a replica that lost its
WAL catching up from the archive, and a cascade.

The module's cluster (primary + replica1) archives from the first test on; each test leaves it with
archiving on and no extra node, and the last one (``tidy``) puts everything back.
"""
from __future__ import annotations

import pandas as pd
import pytest

import lab
from lab import archive
from lab.checks import check
from lab.errors import BadArgument, LabError
from lab.lsn import parse_lsn
from lab.standby import make_wallets

pytestmark = pytest.mark.integration


# --- pure functions --------------------------------------------------------------------------
def test_commands_quote_the_directory_and_double_percent_signs():
    assert archive.archive_command("/a b/%x") == ("test ! -f '/a b/%%x'/%f && cp %p '/a b/%%x'/%f"
                                                  " || cmp -s %p '/a b/%%x'/%f")
    assert archive.restore_command("/arch") == "cp /arch/%f %p"
    assert archive.file_kind("00000003.history") == "timeline history"
    assert archive.file_kind("000000010000000000000001") == "segment"
    with pytest.raises(BadArgument):
        archive.archive_command(None)


# --- on a cluster ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def arch(lab_home):
    """The module's cluster, archiving (turned on once, with a restart)."""
    c = lab.up(replicas=1, home=lab_home, quiet=True)
    before = archive.enable(c, restart=False)
    assert before.set_index("node").loc["primary", "pending_restart"] == "archive_mode"
    archive.restart_pending(c, quiet=True)
    return c


@pytest.fixture
def cluster(arch, lab_home):
    c = lab.up(replicas=1, home=lab_home, quiet=True)
    yield c
    for name in [n.name for n in c.nodes if n.name not in ("primary", "replica1")]:
        c.remove_node(name)  # the restored copies, the replica without a slot, the cascade


def test_enable_archives_a_switched_segment(cluster):
    s = archive.settings(cluster).set_index("node")
    assert s.loc["primary", "archive_mode"] == "on" and s.loc["primary", "pending_restart"] == "-"
    assert archive.is_archiving(cluster)
    again = archive.enable(cluster)  # a second run changes nothing and needs no restart
    assert again["pending_restart"].tolist() == ["-", "-"]
    before = archive.sample(cluster)
    arrived = archive.switch_wal(cluster)
    assert arrived["in_archive"] and arrived["bytes"] == 16 << 20
    after = archive.stats(cluster)
    assert after["archived_count"] > before["archived_count"] and after["failed_count"] == before["failed_count"]
    assert arrived["segment"] in archive.contents(cluster, kind="segment")["name"].tolist()
    assert archive.basic_archive_available(cluster)["basic_archive_so"].all()
    assert check("10.1", cluster).ok


def test_a_broken_archive_command_piles_up_wal_then_drains(cluster):
    cluster.primary.set(wal_keep_size=0)
    try:
        before = archive.sample(cluster)
        archive.break_archiving(cluster)
        assert not archive.is_archiving(cluster)
        assert not check("10.1", cluster).ok
        grew = archive.watch_backlog(cluster, 3, quiet=True)
        assert grew["failed_count"].iloc[0] > before["failed_count"]
        assert grew["archived_count"].iloc[-1] == grew["archived_count"].iloc[0]
        assert grew["ready_files"].iloc[-1] >= grew["ready_files"].iloc[0] + 3, grew.to_string()
        assert grew["pg_wal_behind"].iloc[-1] >= grew["pg_wal_behind"].iloc[0] + 3
        assert "archive command failed" in archive.failures(cluster)
        drained = archive.repair(cluster, quiet=True)
        assert drained["ready_files"].iloc[-1] == 0
        assert drained["archived_count"].iloc[-1] >= drained["archived_count"].iloc[0] + 3, drained.to_string()
        assert drained["pg_wal_behind"].iloc[-1] < drained["pg_wal_behind"].iloc[0]
        assert archive.is_archiving(cluster) and check("10.1", cluster).ok
    finally:
        cluster.primary.set(wal_keep_size=None)
        archive.enable(cluster)


def test_point_in_time_recovery_brings_the_dropped_table_back(cluster):
    make_wallets(cluster)
    backup = archive.take_backup(cluster, quiet=True)
    # committed after the backup: only the archive has it
    cluster.primary.execute("UPDATE wallets SET amount = amount + 1 WHERE owner = 'ada'")
    mistake = archive.make_mistake(cluster)
    assert not cluster.primary.scalar("SELECT to_regclass('wallets') IS NOT NULL")
    assert parse_lsn(mistake["target_lsn"]) < parse_lsn(mistake["mistake_lsn"])
    primary_tli = int(cluster.primary.scalar("SELECT timeline_id FROM pg_control_checkpoint()"))
    by_lsn = archive.restore(cluster, "pitr_lsn", backup, mistake, by="lsn", quiet=True)
    by_time = archive.restore(cluster, "pitr_time", backup, mistake, by="time", quiet=True)
    for r in (by_lsn, by_time):
        assert r["rows"] == 5 and not r["in_recovery"] and r["timeline"] > primary_tli
        node = cluster.node(r["node"])
        assert float(node.scalar("SELECT amount FROM wallets WHERE owner = 'ada'")) == 1.5
    tl = archive.timeline(cluster.node("pitr_lsn"))
    assert tl["timeline_id"] == by_lsn["timeline"] and f"after LSN {mistake['target_lsn']}" in tl["history"]
    # the restored copies archive nothing: the cluster's archive holds no history file of theirs
    assert archive.contents(cluster, kind="timeline history").empty or primary_tli > 1
    copied = archive.copy_back(cluster, "pitr_lsn")
    assert copied["rows_on_primary"].iloc[0] == 5
    table = archive.compare_with_delayed(cluster, backup, [by_lsn, by_time], copied)
    assert len(table) == 2 and (table["bytes"] > 0).all()
    # the exercise: by the restore point's name (two restored copies at most: one goes first)
    assert not check("10.2", cluster).ok
    cluster.remove_node("pitr_time")
    # a standalone node restore did not make (chapter 09's subscriber, say) is refused, never removed
    mine = cluster.add_standalone("mine")
    mine.execute("CREATE TABLE kept (x int)")
    with pytest.raises(LabError, match="did not make"):
        archive.restore(cluster, "mine", backup, mistake, by="name", quiet=True)
    assert mine.scalar("SELECT to_regclass('kept') IS NOT NULL")
    cluster.remove_node("mine")
    by_name = archive.restore(cluster, "pitr_name", backup, mistake, by="name", quiet=True)
    assert by_name["rows"] == 5
    assert check("10.2", cluster).ok
    again = archive.restore(cluster, "pitr_name", backup, mistake, by="name", quiet=True)  # a cell run again
    assert again["rows"] == 5
    with pytest.raises(LabError, match="exists on the primary"):
        archive.copy_back(cluster, "pitr_lsn")
    cluster.primary.execute("DROP TABLE wallets")


def test_a_standby_fed_only_from_the_archive_waits_for_whole_segments(cluster):
    lag = archive.archive_lag(cluster, timeout=4, quiet=True).set_index("how")
    assert lag["visible"].tolist() == [False, True, True]
    assert lag["segments_restored"].iloc[-1] > lag["segments_restored"].iloc[0]
    assert "from_archive" not in [n.name for n in cluster.nodes]
    assert cluster.primary.scalar("SHOW archive_timeout") == "0"


def test_a_replica_without_a_slot_catches_up_from_the_archive(cluster):
    cluster.primary.set(wal_keep_size=0)
    try:
        node = archive.replica_without_slot(cluster, quiet=True)
        out = archive.outrun(cluster, "no_slot", segments=3, quiet=True)
        assert out["oldest_segment_on_primary"] > out["needs_segment"]
        assert out["segments_from_archive"] >= 1 and out["walreceiver"] == "streaming"
        assert check("10.4", cluster, answer=0).ok is False
        count = sum("restored log file" in ln for ln in node.logs(5000).splitlines())
        assert check("10.4", cluster, answer=count).ok
        with pytest.raises(LabError, match="slot"):
            archive.outrun(cluster, "replica1")
    finally:
        cluster.primary.set(wal_keep_size=None)


def test_a_cascade_its_lag_per_hop_and_its_middle_node_stopping(cluster):
    assert not check("10.3", cluster).ok
    archive.add_cascade(cluster, "replica2", upstream="replica1", quiet=True)
    c = archive.cascade(cluster).set_index("node")
    assert c.loc["replica2", "streams_from"] == "replica1" and c.loc["replica1", "streams_from"] == "primary"
    assert check("10.3", cluster).ok
    hops = archive.hop_lag(cluster, samples=5)
    summary = archive.hop_summary(hops)
    assert summary["hop"].tolist() == ["primary → replica1", "replica1 → replica2"]
    assert (summary["samples"] == 5).all()
    cluster.node("replica1").stop()
    try:
        stopped = archive.visible_on(cluster, ["replica2"], timeout=1)
        assert not stopped["visible"].iloc[0]
        repaired = archive.stream_from_primary(cluster, "replica2").set_index("node")
        assert repaired.loc["replica2", "streams_from"] == "primary"
        assert archive.visible_on(cluster, ["replica2"])["visible"].iloc[0]
    finally:
        cluster.node("replica1").start()


def test_the_cascade_follows_its_promoted_middle_node(fresh_cluster):
    c = fresh_cluster
    archive.enable(c, restart=True, quiet=True)
    archive.add_cascade(c, "replica2", upstream="replica1", quiet=True)
    c.node("replica1").promote()
    assert c.primary.name == "replica1"
    seen = archive.visible_on(c, ["replica2"], timeout=10)
    assert seen["visible"].iloc[0]
    tl = archive.timeline(c.node("replica2"))
    assert tl["timeline_id"] == 2 and tl["history_file"] == "00000002.history"
    archive.switch_wal(c)  # the new primary archives: its history file is there
    assert "00000002.history" in archive.contents(c, kind="timeline history")["name"].tolist()
    # back to the standard layout: the old primary rewound and switched back; it archives again, the
    # segments replica1 archived already included (identical: not a failure for ever)
    c.remove_replica("replica2")
    c = lab.up(replicas=1, home=c.home.path, quiet=True)
    assert c.primary.name == "primary"
    assert check("10.1", c).ok


def test_bad_arguments_get_one_line_errors(cluster):
    cases = [
        (lambda: archive.contents(cluster, kind="wal"), BadArgument),
        (lambda: archive.watch_backlog(cluster, 0), BadArgument),
        (lambda: archive.restore(cluster, "x", "/nowhere", "not a mistake"), BadArgument),
        (lambda: archive.restore(cluster, "x", "/nowhere", pd.Series(dict(target_lsn="0/0", target_time="",
                                                                       restore_point="", table="t")), by="xid"),
         BadArgument),
        (lambda: archive.restore(cluster, "x", "/nowhere", pd.Series(dict(target_lsn="0/0", target_time="",
                                                                       restore_point="", table="t"))), LabError),
        (lambda: archive.hop_lag(cluster, samples=0), BadArgument),
        (lambda: archive.hop_lag(cluster, hops="replica1"), BadArgument),
        (lambda: archive.visible_on(cluster, ["nobody"]), LabError),
        (lambda: archive.make_mistake(cluster, table="no_such_table"), LabError),
        (lambda: archive.hop_summary("x"), BadArgument),
        (lambda: archive.tidy(cluster, archiving="yes"), BadArgument),
        (lambda: archive.enable("cluster"), LabError),
    ]
    for call, kind in cases:
        with pytest.raises(kind) as e:
            call()
        assert len(str(e.value).splitlines()) <= 2, str(e.value)


def test_tidy_turns_archiving_off_and_is_idempotent(cluster):
    make_wallets(cluster)
    said = archive.tidy(cluster)
    assert "dropped table wallets" in said and "archive_mode is off" in said
    assert archive.settings(cluster)["archive_mode"].tolist() == ["off", "off"]
    assert archive.tidy(cluster) == "nothing to tidy: the cluster is as the chapter found it"
    with pytest.raises(LabError, match="archiving is off"):
        archive.switch_wal(cluster)
    with pytest.raises(LabError, match="archiving is off"):
        archive.break_archiving(cluster)
