"""lab.slots on real servers: a slot keeps WAL for a stopped replica; without one, or past
max_slot_wal_keep_size, the WAL is gone and the replica must be rebuilt; forgotten slots; the
dashboard's callbacks; exercises 03.3–03.5 both ways."""
from __future__ import annotations

import ipywidgets as w
import pandas as pd
import pytest
from matplotlib.figure import Figure

import lab
from lab import backups, slots
from lab.checks import check
from lab.errors import Timeout
from lab.lsn import parse_lsn

pytestmark = pytest.mark.integration

SEG = 16 << 20


# --- pure functions ------------------------------------------------------------------------------
def test_segment_numbers_and_the_split_of_pg_wal():
    assert slots.segment_number("000000010000000000000003") == 3
    assert slots.segment_number("000000020000000100000002") == 258  # the timeline does not count
    names = ["000000010000000000000002", "000000010000000000000003", "000000010000000000000004",
             "000000010000000000000006"]
    assert slots.split_wal_files(names, "0/3000060") == (1, 2)
    assert slots.split_wal_files(names, "0/4000000") == (2, 1)  # a segment boundary is in the next one
    assert slots.split_wal_files([], "0/4000000") == (0, 0)


def test_log_messages_and_progress_steps():
    line = "2026-11-29 00:54:04.183 UTC [31718] FATAL:  could not receive data from WAL stream: ERROR:  x"
    assert slots._message(line).startswith("FATAL:  could not receive")
    assert slots._every(6) == {1, 2, 4, 6}
    assert slots._every(1) == {1}


# --- looking at slots ---------------------------------------------------------------------------
def test_slot_table_shows_replica1_streaming_through_its_slot(cluster):
    df = slots.slot_table(cluster)
    row = df.set_index("slot_name").loc["replica1"]
    assert row["active"] and row["consumer"] == "replica1" and row["slot_type"] == "physical"
    assert row["wal_status"] == "reserved" and row["retained_bytes"] >= 0 and row["retained"].endswith("B")
    assert slots.inactive_slots(cluster).empty


def test_wal_dir_on_primary_and_replica(cluster):
    for node in (cluster.primary, cluster.node("replica1")):
        d = slots.wal_dir(node)
        assert d["files"] >= 1 and d["bytes"] == d["files"] * SEG
        assert d["behind"] + d["ahead"] <= d["files"] and len(d["current"]) == 24


def test_wal_settings_show_alter_system(cluster):
    before = slots.wal_settings(cluster)
    assert set(before["node"]) == {"primary", "replica1"} and not before["set_by_alter_system"].any()
    assert before.set_index(["node", "setting"]).loc[("primary", "wal_keep_size"), "value"] == "128MB"
    cluster.node("replica1").set(max_slot_wal_keep_size="64MB")
    try:
        df = slots.wal_settings(cluster).set_index(["node", "setting"])
        assert df.loc[("replica1", "max_slot_wal_keep_size"), "set_by_alter_system"]
        assert df.loc[("replica1", "max_slot_wal_keep_size"), "value"] == "64MB"
        hint = check("03.4", cluster)
        assert not hint.ok and "on replica1" in hint.message and "max_slot_wal_keep_size=None" in hint.message
    finally:
        cluster.node("replica1").set(max_slot_wal_keep_size=None)
    # settings back, but 03.4 asks for a slot of the student's seen and then dropped
    r = check("03.4", cluster)
    assert not r.ok and r.message.startswith("no slot of yours yet")


# --- forgotten slots -----------------------------------------------------------------------------
def test_a_forgotten_slot_keeps_every_segment_until_dropped(cluster, capsys):
    cluster.primary.set(wal_keep_size=0)
    try:
        assert "created slot 'forgotten'" in slots.create_slot(cluster, "forgotten")
        assert slots.create_slot(cluster, "forgotten") == "slot 'forgotten' exists already"
        growth = slots.watch_slot(cluster, "forgotten", segments=4)
        assert "writing WAL: 4/4 segments" in capsys.readouterr().out
        assert len(growth) == 5 and not growth["active"].any()
        assert growth["restart_lsn"].nunique() == 1  # nobody advances it
        assert growth["retained_bytes"].diff().dropna().between(SEG // 2, SEG + SEG // 2).all()
        assert growth["pg_wal_behind"].diff().dropna().eq(1).all()  # one more file kept per segment

        inactive = slots.inactive_slots(cluster)
        assert inactive["slot_name"].tolist() == ["forgotten"] and inactive["owner"].isna().all()
        behind = slots.wal_dir(cluster.primary)["behind"]
        assert behind >= 4

        msg = slots.drop_slot(cluster, "forgotten")
        assert msg.startswith("dropped slot 'forgotten' (it held ") and "MB of WAL" in msg
        slots.checkpoint(cluster)
        assert slots.wal_dir(cluster.primary)["behind"] < behind
        assert "forgotten" not in set(slots.slot_table(cluster)["slot_name"])
    finally:
        slots.drop_slot(cluster, "forgotten")
        cluster.primary.set(wal_keep_size=None)


def test_drop_slot_messages(cluster):
    assert "is active: replica1 streams through it" in slots.drop_slot(cluster, "replica1")
    assert "no slot 'nope' on primary (slots: replica1)" == slots.drop_slot(cluster, "nope")
    assert slots.drop_slot(cluster, None) == "pick a slot to drop"
    assert "replica1" in set(slots.slot_table(cluster)["slot_name"])
    cluster.primary.stop()
    try:
        assert "could not drop slot 'x'" in slots.drop_slot(cluster, "x")
    finally:
        cluster.primary.start()


def test_exercises_03_3_and_03_4(cluster):
    assert "replace ... with your answer" in check("03.3", cluster).message
    assert check("03.3", cluster, answer=[]).ok
    slots.create_slot(cluster, "mine")
    try:
        r = check("03.3", cluster, answer=["mine"])
        assert r.ok and "mine" in r.message
        assert check("03.3", cluster, answer="mine").ok
        assert not check("03.3", cluster, answer=[]).ok
        assert "no slot nope" in check("03.3", cluster, answer=["mine", "nope"]).message
        assert "answer with a slot name" in check("03.3", cluster, answer=3).message
        hint = check("03.4", cluster)
        assert not hint.ok and "drop_slot(cluster, 'mine')" in hint.message
    finally:
        slots.drop_slot(cluster, "mine")
    assert check("03.4", cluster).ok
    # a stopped replica's slot is inactive but not forgotten
    cluster.node("replica1").stop()
    try:
        assert check("03.3", cluster, answer=["replica1"]).ok
        assert slots.inactive_slots(cluster)["owner"].tolist() == ["replica1 (stopped)"]
        assert check("03.4", cluster).ok
    finally:
        cluster.node("replica1").start()
    cluster.primary.set(wal_keep_size=0)
    try:
        hint = check("03.4", cluster)
        assert not hint.ok and "wal_keep_size is still 0MB on primary" in hint.message
    finally:
        cluster.primary.set(wal_keep_size=None)
    assert check("03.4", cluster).ok


# --- a stopped replica with its slot --------------------------------------------------------------
def test_a_slot_keeps_the_wal_of_a_stopped_replica(cluster, capsys):
    df = slots.retention_while_stopped(cluster, "replica1", segments=3)
    out = capsys.readouterr().out
    assert "replica1 stopped" in out and "caught up" in out
    assert cluster.node("replica1").is_running
    stopped = df[df["phase"] == "replica stopped"]
    assert not stopped["active"].any() and stopped["restart_lsn"].nunique() == 1
    assert stopped["retained_bytes"].diff().dropna().between(SEG // 2, SEG + SEG // 2).sum() >= 3
    assert stopped["retained_bytes"].iloc[-1] > 2.5 * SEG
    last = df.iloc[-1]
    assert last["phase"].startswith("caught up") and last["active"] and last["retained_bytes"] < SEG
    assert parse_lsn(last["restart_lsn"]) >= parse_lsn(stopped["current_lsn"].iloc[-1])
    assert df["t_s"].is_monotonic_increasing

    fig = slots.plot_retention(df)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and ax.get_xlabel() == "seconds" and "replica1" in fig._suptitle.get_text()
    with pytest.raises(lab.LabError, match="plot_retention"):
        slots.plot_retention(df.iloc[0:0])


def test_plot_retention_says_when_nobody_reads_the_slot():
    samples = pd.DataFrame(dict(t_s=[0.0, 0.5, 1.0], slot="forgotten", active=False,
                                retained_bytes=[0, SEG, 2 * SEG], pg_wal_bytes=[4 * SEG, 5 * SEG, 6 * SEG]))
    title = slots.plot_retention(samples)._suptitle.get_text()
    assert title == "WAL the primary keeps for slot 'forgotten', which nobody reads"
    lab.set_language("es")
    assert slots.plot_retention(samples)._suptitle.get_text() == "WAL que el primario guarda para el slot 'forgotten', que nadie lee"
    assert slots.plot_retention(samples, title="mine")._suptitle.get_text() == "mine"


def test_start_and_read_error_times_out_when_the_replica_streams(cluster):
    cluster.node("replica1").stop()
    with pytest.raises(Timeout, match="probably streams normally"):
        slots.start_and_read_error(cluster, "replica1", timeout=2)
    assert cluster.node("replica1").is_running


def test_experiments_refuse_what_cannot_work(cluster):
    with pytest.raises(lab.LabError, match="streams through slot 'replica1'"):
        slots.lose_wal(cluster, "replica1")
    with pytest.raises(lab.LabError, match="max_slot_wal_keep_size is -1"):
        slots.lose_slot(cluster, "replica1")
    with pytest.raises(lab.LabError, match="not a replica"):
        slots.retention_while_stopped(cluster, "primary")
    with pytest.raises(lab.LabError, match=r"segments \(how many 16 MB WAL segments to write\) is a whole number"):
        slots.write_wal(cluster, 0)
    with pytest.raises(lab.LabError, match=r"segments \(how many 16 MB WAL segments to write\) is a whole number"):
        slots.watch_slot(cluster, "replica1", segments=True)
    assert cluster.node("replica1").is_running


# --- the dashboard: its buttons only wire slot_table and drop_slot ---------------------------------
def test_slot_dashboard_buttons(cluster):
    slots.create_slot(cluster, "forgotten")
    try:
        panel = slots.slot_dashboard(cluster)
        assert isinstance(panel, w.VBox)
        row = panel.children[1].children
        picker = next(c for c in row if isinstance(c, w.Dropdown))
        buttons = {c.description: c for c in row if isinstance(c, w.Button)}
        message = panel.children[2]
        assert set(buttons) == {"refresh", "drop slot"}
        assert list(picker.options) == ["forgotten", "replica1"]

        picker.value = "replica1"
        buttons["drop slot"].click()
        assert "is active" in message.value
        picker.value = "forgotten"
        buttons["drop slot"].click()
        assert "dropped slot" in message.value
        assert list(picker.options) == ["replica1"] and picker.value == "replica1"

        slots.create_slot(cluster, "later")
        buttons["refresh"].click()
        assert list(picker.options) == ["later", "replica1"]
    finally:
        slots.drop_slot(cluster, "forgotten")
        slots.drop_slot(cluster, "later")


# --- breaking and repairing (one cluster each) ---------------------------------------------------
def test_without_a_slot_the_wal_is_removed_and_a_new_backup_repairs(fresh_cluster, capsys):
    cluster = fresh_cluster
    path = backups.take_base_backup(cluster, quiet=True)
    cluster.add_replica("replica_manual", from_backup=path)
    fresh = check("03.5", cluster)
    assert not fresh.ok and "nothing broken yet" in fresh.message  # it asks for a break and a repair
    with pytest.raises(lab.LabError, match="wal_keep_size = 128.0 MB"):
        slots.lose_wal(cluster, "replica_manual", segments=4)
    cluster.primary.set(wal_keep_size=0)

    lost = slots.lose_wal(cluster, "replica_manual", segments=4)
    assert "writing WAL: 4/4 segments" in capsys.readouterr().out
    assert "has already been removed" in lost["error"] and lost["needs_segment"] in lost["error"]
    assert lost["needs_segment"] < lost["oldest_segment_on_primary"]
    assert "replica_manual" not in set(lab.replication.stat_replication(cluster)["application_name"])
    hint = check("03.5", cluster)
    assert not hint.ok and "no longer has the WAL replica_manual needs" in hint.message
    assert "take_base_backup" in hint.message

    cluster.remove_replica("replica_manual")
    path = backups.take_base_backup(cluster, quiet=True)
    # the backup copied the primary's ALTER SYSTEM setting
    conf = backups.recovery_settings(path).set_index("setting")["value"]
    assert conf["wal_keep_size"] == "0"
    cluster.add_replica("replica_manual", from_backup=path)
    done = check("03.5", cluster)
    assert done.ok and "replica_manual" in done.message
    cluster.remove_replica("replica_manual")
    cluster.primary.set(wal_keep_size=None)
    assert check("03.5", cluster).ok  # remembered: broken, then streamed again once rebuilt


def test_max_slot_wal_keep_size_loses_the_slot_and_a_rebuild_repairs(fresh_cluster):
    cluster = fresh_cluster
    cluster.primary.set(wal_keep_size=0, max_slot_wal_keep_size="32MB")
    capped = slots.lose_slot(cluster, "replica1", quiet=True)
    statuses = capped["wal_status"].tolist()
    assert statuses[0] == "reserved" and statuses[-2] == "unreserved" and statuses[-1] == "lost"
    assert capped["safe_wal_size"].iloc[-2] <= 0 and pd.isna(capped["restart_lsn"].iloc[-1])
    assert not cluster.node("replica1").is_running
    assert 'invalidating slot "replica1"' in slots.log_lines(cluster.primary, "invalidating slot")

    error = slots.start_and_read_error(cluster, "replica1")
    assert "has already been removed" in error
    hint = check("03.5", cluster)
    assert not hint.ok and "cluster.add_replica('replica1')" in hint.message
    lost = slots.slot_table(cluster).set_index("slot_name").loc["replica1"]
    assert lost["wal_status"] == "lost"

    cluster.primary.set(wal_keep_size=None, max_slot_wal_keep_size=None)
    cluster.remove_replica("replica1")
    cluster.add_replica("replica1")
    row = slots.slot_table(cluster).set_index("slot_name").loc["replica1"]
    assert row["active"] and row["wal_status"] == "reserved"
    assert check("03.5", cluster).ok


def test_03_5_hints_for_a_stopped_replica_and_a_lost_slot(fresh_cluster):
    cluster = fresh_cluster
    cluster.node("replica1").stop()
    hint = check("03.5", cluster)
    assert not hint.ok and "replica1 is stopped" in hint.message
    cluster.node("replica1").start()
    # a lost slot that no replica streams through
    cluster.primary.set(wal_keep_size=0, max_slot_wal_keep_size="16MB")
    try:
        slots.create_slot(cluster, "old")
        slots.write_wal(cluster, 3)
        slots.checkpoint(cluster)
        hint = check("03.5", cluster)
        assert not hint.ok and "slot 'old' is lost" in hint.message
    finally:
        slots.drop_slot(cluster, "old")
        cluster.primary.set(wal_keep_size=None, max_slot_wal_keep_size=None)
    back = check("03.5", cluster)  # nothing lost any more, but no replica was broken and repaired either
    assert not back.ok and back.message.startswith("nothing broken yet")
