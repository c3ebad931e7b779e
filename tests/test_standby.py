"""lab.standby and chapter 04's self-checks, on a real primary and replica.

Every test leaves the module's cluster as chapter 04 must: replay resumed, settings reset,
no delayed replica, no scratch table (the autouse fixture runs ``tidy`` and checks it).
"""
from __future__ import annotations

import doctest
import time

import ipywidgets as w
import pandas as pd
import pytest
from matplotlib.figure import Figure

import lab
from lab import standby
from lab.checks import check
from lab.lsn import parse_lsn

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _as_found(request):
    if "cluster" not in request.fixturenames:
        yield
        return
    cluster = request.getfixturevalue("cluster")
    yield
    cluster.start()  # a test may have stopped replica1
    cluster.wait_streaming()
    standby.tidy(cluster)
    assert [n.name for n in cluster.nodes] == ["primary", "replica1"]
    assert standby.standby_settings(cluster)["changed"].tolist() == ["-"]
    assert standby.lag_table(cluster)["replay"].tolist() == ["not paused"]


# --- pure functions ------------------------------------------------------------------------------
VACUUM_15 = ('INFO:  finished vacuuming "crypto_db.public.t": index scans: 0\npages: 0 removed, 84 remain\n'
             "tuples: 0 removed, 10000 remain, 5000 are dead but not yet removable\nremovable cutoff: 756\n"
             'INFO:  finished vacuuming "crypto_db.pg_toast.pg_toast_1": index scans: 0\n'
             "tuples: 7 removed, 0 remain, 0 are dead but not yet removable\n")
VACUUM_14 = ('INFO:  vacuuming "public.t"\nINFO:  table "t": found 5000 removable, 5000 nonremovable row versions '
             "in 84 out of 84 pages\nDETAIL:  0 dead row versions cannot be removed yet, oldest xmin: 754\n")


def test_parse_vacuum_verbose_reads_the_first_table():
    assert standby.parse_vacuum_verbose(VACUUM_15) == dict(removed=0, remain=10000, dead_not_removable=5000)
    assert standby.parse_vacuum_verbose(VACUUM_14) == dict(removed=5000, remain=5000, dead_not_removable=0)
    with pytest.raises(lab.LabError, match="VACUUM VERBOSE"):
        standby.parse_vacuum_verbose("INFO: something else")


def test_create_table_sql():
    sql = standby.create_table_sql('we"ird', [("id", "bigint", True, "nextval('s'::regclass)"),
                                             ("amount", "numeric(20,8)", True, "0"),
                                             ("note", "text", False, None)],
                                   ["PRIMARY KEY (id)", "CHECK ((amount >= (0)::numeric))"])
    assert sql == ('CREATE TABLE "we""ird" ("id" bigint NOT NULL, "amount" numeric(20,8) NOT NULL DEFAULT 0, '
                   '"note" text, PRIMARY KEY (id), CHECK ((amount >= (0)::numeric)))')
    with pytest.raises(lab.LabError, match="no columns"):
        standby.create_table_sql("t", [])


def test_docstring_examples():
    assert doctest.testmod(standby, raise_on_error=False).failed == 0


# --- reads and refused writes ------------------------------------------------------------------------
def test_try_write_returns_the_refusal_or_the_rows(cluster):
    replica = cluster.node("replica1")
    msg = standby.try_write(replica, "INSERT INTO test_replication (mensaje) VALUES ('desde la réplica')")
    assert msg.startswith("refused (SQLSTATE 25006)") and "read-only transaction" in msg
    assert "read-only" in standby.try_write(replica, "CREATE TABLE nope (id int)")
    assert standby.try_write(cluster.primary, "INSERT INTO test_replication (mensaje) VALUES (%s)",
                             ("desde el primario",)) == "primary: done, 1 row(s) written"
    cluster.wait_replayed()
    assert replica.scalar("SELECT count(*) FROM test_replication WHERE mensaje = 'desde la réplica'") == 0
    assert replica.scalar("SELECT count(*) FROM test_replication WHERE mensaje = 'desde el primario'") == 1


def test_in_recovery(cluster):
    df = standby.in_recovery(cluster).set_index("node")
    assert df.loc["primary"].tolist() == [False, "off"]
    assert df.loc["replica1"].tolist() == [True, "on"]


# --- query conflicts -------------------------------------------------------------------------------
def test_short_delay_cancels_the_replica_query(cluster):
    replica = cluster.node("replica1")
    before = int(standby.conflicts(replica)["confl_snapshot"].iloc[0])
    replica.set(max_standby_streaming_delay="1s")
    run = standby.query_conflict(cluster, "replica1", seconds=3, quiet=True)
    assert not run.query_finished
    assert run.sqlstate == "40001"
    assert run.error.startswith("canceling statement due to conflict with recovery")
    assert "row versions that must be removed" in run.error
    assert run.rows_seen == 10_000 and run.deleted == 5_000
    assert run.vacuum == dict(removed=5000, remain=5000, dead_not_removable=0)
    assert run.n_dead_tup_after_vacuum == 0 and run.primary_xmin_for_replica is None
    assert run.confl_snapshot_after == before + 1
    assert int(standby.conflicts(replica)["confl_snapshot"].iloc[0]) == before + 1
    row = run.summary()[run.label]
    assert row["replica query"] == "CANCELED" and row["confl_snapshot (+)"] == 1
    assert cluster.primary.scalar("SELECT to_regclass('standby_conflict')") is None  # dropped after the run


def test_feedback_keeps_the_dead_rows_on_the_primary(cluster):
    replica = cluster.node("replica1")
    replica.set(max_standby_streaming_delay="1s", hot_standby_feedback=True)
    run = standby.query_conflict(cluster, "replica1", seconds=2, quiet=True)
    assert run.query_finished and run.error is None
    assert run.confl_snapshot_after == run.confl_snapshot_before
    assert run.vacuum == dict(removed=0, remain=10000, dead_not_removable=5000)
    assert run.n_dead_tup_after_vacuum == 5000
    assert run.primary_xmin_for_replica is not None
    # turned off, the replica says so and the primary lets go of its xmin
    replica.set(hot_standby_feedback=None)
    assert standby._wait_feedback(cluster, replica, on=False) is None


def test_longer_delay_makes_replay_wait_for_the_query(cluster):
    replica = cluster.node("replica1")
    replica.set(max_standby_streaming_delay="20s")
    run = standby.query_conflict(cluster, "replica1", seconds=2, quiet=True)
    assert run.query_finished and run.confl_snapshot_after == run.confl_snapshot_before
    assert run.vacuum["removed"] == 5000
    # replay could not apply the VACUUM while the query ran: the replica stayed behind it
    running = run.samples[run.samples["query"] == "running"]
    assert len(running) > 3
    assert all(parse_lsn(x) < parse_lsn(run.vacuum_lsn) for x in running["replayed_lsn"].iloc[:-1])
    assert running["lag_bytes"].iloc[-1] > running["lag_bytes"].iloc[0]  # the primary kept writing
    assert run.replayed_vacuum_after_s >= running["t"].iloc[-2]
    last = run.samples.iloc[-1]
    assert parse_lsn(last["replayed_lsn"]) >= parse_lsn(run.vacuum_lsn)


def test_compare_and_figure_of_runs(cluster):
    replica = cluster.node("replica1")
    replica.set(max_standby_streaming_delay="1s")
    a = standby.query_conflict(cluster, "replica1", seconds=3, rows=2000, quiet=True)
    replica.set(max_standby_streaming_delay="20s")
    b = standby.query_conflict(cluster, "replica1", seconds=1, rows=2000, quiet=True)
    table = standby.compare([a, b])
    assert table.columns.tolist() == ["feedback off, max delay 1s", "feedback off, max delay 20s"]
    assert table.loc["replica query"].tolist() == ["CANCELED", "finished"]
    assert table.loc["max_standby_streaming_delay"].tolist() == ["1s", "20s"]
    import io
    buf = io.BytesIO()
    standby.conflict_figure([a]).savefig(buf, format="png")
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = standby.conflict_figure([a, b])
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) >= 2
    with pytest.raises(lab.LabError, match="query_conflict"):
        standby.conflict_figure([])


def test_query_conflict_refuses_clearly(cluster):
    with pytest.raises(lab.LabError, match="not a replica"):
        standby.query_conflict(cluster, "primary")
    with pytest.raises(lab.LabError, match="0.5 to 30"):
        standby.query_conflict(cluster, "replica1", seconds=100)
    with pytest.raises(lab.LabError, match="10 to 1000000"):
        standby.query_conflict(cluster, "replica1", rows=5)
    cluster.node("replica1").set(recovery_min_apply_delay="2s")
    with pytest.raises(lab.LabError, match="recovery_min_apply_delay"):
        standby.query_conflict(cluster, "replica1")


def test_leaving_a_long_query_early_cancels_it(cluster):
    cluster.primary.execute("CREATE TABLE standby_conflict AS SELECT 1 AS id")
    cluster.wait_replayed()
    with standby.LongQuery(cluster.node("replica1"), "standby_conflict", 20) as q:
        assert q.rows_seen == 1 and not q.done
    assert q.done and q.ok is False and q.sqlstate == "57014"  # query_canceled
    assert q.ran_s < 20


# --- a delayed replica ---------------------------------------------------------------------------
def test_delayed_replica_and_a_table_recovered_from_it(cluster):
    standby.make_wallets(cluster)
    delayed = cluster.add_replica()
    delayed.set(recovery_min_apply_delay="3s")
    seen = standby.time_until_visible(cluster, ["replica1", delayed.name], quiet=True).set_index("replica")
    assert seen["visible"].all()
    assert seen.loc[delayed.name, "recovery_min_apply_delay"] == "3s"
    assert seen.loc[delayed.name, "seconds"] > seen.loc["replica1", "seconds"]

    # a commit still waits out its delay when the mistake comes: everything behind it waits too
    cluster.primary.execute("UPDATE wallets SET amount = amount + 0.25 WHERE owner = 'ada'")
    cluster.primary.execute("DROP TABLE wallets")
    assert "pause requested" in standby.pause_replay(cluster, delayed.name)
    assert standby.replay_locks(delayed).empty
    row = standby.lag_table(cluster).set_index("node").loc[delayed.name]
    assert row["unreplayed_bytes"] > 0
    got = standby.recover_table(cluster, delayed.name, "wallets")
    assert got[["rows_copied", "rows_on_primary", "columns", "constraints"]].iloc[0].tolist() == [5, 5, 4, 2]
    wallets = cluster.primary.sql("SELECT owner, amount FROM wallets ORDER BY owner").set_index("owner")["amount"]
    assert float(wallets["ada"]) == 0.5  # the copy is from before the last UPDATE
    with pytest.raises(lab.SQLError, match="check constraint"):  # the constraints came back too
        cluster.primary.execute("INSERT INTO wallets (owner, coin, amount) VALUES ('eve', 'BTC', -1)")
    with pytest.raises(lab.LabError, match="exists on the primary"):
        standby.recover_table(cluster, delayed.name, "wallets")
    assert "resumed" in standby.resume_replay(cluster, delayed.name)
    cluster.wait_replayed()
    assert delayed.scalar("SELECT count(*) FROM wallets") == 5  # the re-created table reached it too


def test_recover_table_after_the_drop_lock_was_replayed_says_so(cluster):
    standby.make_wallets(cluster)
    delayed = cluster.add_replica()
    delayed.set(recovery_min_apply_delay="3s")
    cluster.wait_replayed()  # nothing waits to commit: the DROP's lock is replayed at once
    cluster.primary.execute("DROP TABLE wallets")
    locks = standby.replay_locks(delayed, "wallets")
    assert ("wallets", "AccessExclusiveLock", True) in set(map(tuple, locks.to_numpy()))
    standby.pause_replay(cluster, delayed.name)
    with pytest.raises(lab.LabError, match="already applied the DROP's lock on wallets"):
        standby.recover_table(cluster, delayed.name, "wallets", lock_timeout=0.5)
    assert cluster.primary.scalar("SELECT to_regclass('wallets')") is None  # nothing half-made
    standby.resume_replay(cluster, delayed.name)
    cluster.wait_replayed()
    with pytest.raises(lab.LabError, match="has replayed the DROP already"):
        standby.recover_table(cluster, delayed.name, "wallets")


# --- pausing replay --------------------------------------------------------------------------------
def test_pause_timeline_and_its_figure(cluster):
    df = standby.pause_timeline(cluster, "replica1", before=0.5, paused=1.5, after=1.0, quiet=True)
    assert df["phase"].unique().tolist() == ["before", "paused", "after"]
    assert df.attrs["paused_at"] < df.attrs["resumed_at"]
    paused, after = df[df["phase"] == "paused"], df[df["phase"] == "after"]
    assert (paused["replay"].iloc[1:] == "paused").all()
    # while paused, WAL keeps arriving but is not applied
    assert paused["replayed_lsn"].nunique() == 1
    assert paused["received_lsn"].map(parse_lsn).is_monotonic_increasing
    assert paused["received_lsn"].nunique() > 1
    assert paused["lag_bytes"].iloc[-1] > paused["lag_bytes"].iloc[0]
    assert after["lag_bytes"].iloc[-1] < paused["lag_bytes"].max()
    assert cluster.primary.scalar("SELECT to_regclass('standby_writes')") is None
    fig = standby.lag_figure(df)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    with pytest.raises(lab.LabError, match="paused > 0"):
        standby.pause_timeline(cluster, "replica1", paused=0)
    with pytest.raises(lab.LabError, match="60 s in all"):
        standby.pause_timeline(cluster, "replica1", before=30, paused=31)
    with pytest.raises(lab.LabError, match="pause_timeline"):
        standby.lag_figure(pd.DataFrame())


# --- replay control: the widget's callbacks, called directly ------------------------------------------
def test_pause_and_resume_replay(cluster):
    msg = standby.pause_replay(cluster, "replica1")
    assert msg.startswith("replica1: replay paused") or "pause requested" in msg
    cluster.primary.execute("INSERT INTO test_replication (mensaje) VALUES ('durante la pausa')")
    deadline = time.monotonic() + 10
    while standby.lag_table(cluster).set_index("node").loc["replica1", "unreplayed_bytes"] == 0:
        assert time.monotonic() < deadline, "the row's WAL never reached replica1"
        time.sleep(0.02)
    row = standby.lag_table(cluster).set_index("node").loc["replica1"]
    assert row["replay"] == "paused" and row["lag_bytes"] > 0
    assert cluster.node("replica1").scalar(
        "SELECT count(*) FROM test_replication WHERE mensaje = 'durante la pausa'") == 0
    msg = standby.resume_replay(cluster, "replica1")
    assert msg.startswith("replica1: replay resumed (not paused)")
    cluster.wait_replayed()
    assert cluster.node("replica1").scalar(
        "SELECT count(*) FROM test_replication WHERE mensaje = 'durante la pausa'") == 1


def test_replay_callbacks_turn_errors_into_messages(cluster):
    assert "not a replica" in standby.pause_replay(cluster, "primary")
    assert "no node 'replica9'" in standby.resume_replay(cluster, "replica9")
    cluster.node("replica1").stop()
    assert "replica1 is stopped" in standby.pause_replay(cluster, "replica1")
    assert standby.lag_table(cluster).set_index("node").loc["replica1", "state"] == "stopped"


def test_replay_control_buttons_wire_the_callbacks(cluster):
    panel = standby.replay_control(cluster)
    assert isinstance(panel, w.VBox)
    row = panel.children[1].children
    picker = next(c for c in row if isinstance(c, w.Dropdown))
    buttons = {c.description: c for c in row if isinstance(c, w.Button)}
    message = panel.children[2]
    assert list(picker.options) == ["replica1"]
    assert set(buttons) == {"pause replay", "resume replay", "refresh"}
    buttons["pause replay"].click()
    assert "replica1: replay" in message.value
    assert standby.lag_table(cluster)["replay"].iloc[0] in ("paused", "pause requested")
    buttons["resume replay"].click()
    assert "replay resumed" in message.value
    assert standby.lag_table(cluster)["replay"].iloc[0] == "not paused"
    buttons["refresh"].click()


# --- break and repair, exercises, tidy ------------------------------------------------------------------
def test_04_4_break_and_repair(cluster):
    assert check("04.4", cluster).ok
    msg = standby.break_replica(cluster, "replica1")
    assert "Find out" in msg
    seen = standby.time_until_visible(cluster, ["replica1"], timeout=1, quiet=True)
    assert not seen["visible"].iloc[0]
    broken = check("04.4", cluster)
    assert not broken.ok and "standby_settings" in broken.message
    assert standby.standby_settings(cluster).set_index("node").loc["replica1", "changed"] == "recovery_min_apply_delay"
    cluster.node("replica1").set(recovery_min_apply_delay=None)
    repaired = check("04.4", cluster)
    assert repaired.ok, repaired.message
    standby.pause_replay(cluster, "replica1")
    paused = check("04.4", cluster)
    assert not paused.ok and "resume_replay" in paused.message


def test_04_1_snapshot_conflicts_counted_on_the_replica(cluster):
    n = int(standby.conflicts(cluster.node("replica1"))["confl_snapshot"].iloc[0])
    assert check("04.1", cluster, answer=n).ok
    assert check("04.1", cluster, answer=str(n)).ok
    wrong = check("04.1", cluster, answer=n + 1)
    assert not wrong.ok and "pg_stat_database_conflicts" in wrong.message
    assert "whole number" in check("04.1", cluster, answer="many").message
    assert "replace ... with your answer" in check("04.1", cluster).message


def test_04_2_feedback_holds_the_primary_back(cluster):
    off = check("04.2", cluster)
    assert not off.ok and "hot_standby_feedback=True" in off.message
    cluster.node("replica1").set(hot_standby_feedback=True)
    on = check("04.2", cluster)
    assert on.ok, on.message
    assert "hot_standby_feedback=None" in on.message


def test_04_3_a_paused_replica_still_receives(cluster):
    assert "not paused" in check("04.3", cluster).message
    standby.pause_replay(cluster, "replica1")
    time.sleep(0.2)  # let the pause land before the write, so the write's WAL is not applied
    if standby.lag_table(cluster)["unreplayed_bytes"].iloc[0] == 0:
        assert "INSERT a row" in check("04.3", cluster).message
    cluster.primary.execute("INSERT INTO test_replication (mensaje) VALUES ('pausada')")
    deadline = time.monotonic() + 10
    result = check("04.3", cluster)
    while not result.ok and time.monotonic() < deadline:
        time.sleep(0.05)
        result = check("04.3", cluster)
    assert result.ok, result.message
    assert "resume_replay" in result.message


def test_exercises_of_chapter_04_are_listed():
    df = lab.checks.exercises("04")
    assert df["exercise"].tolist() == ["04.1", "04.2", "04.3", "04.4"]
    assert df["answer"].tolist() == [True, False, False, False]


def test_tidy_undoes_the_chapter(cluster):
    standby.make_wallets(cluster)
    cluster.add_replica().set(recovery_min_apply_delay="2s")
    other = cluster.add_replica()  # not delayed: not the chapter's, so tidy keeps it
    replica = cluster.node("replica1")
    replica.set(hot_standby_feedback=True, max_standby_streaming_delay="1s")
    standby.pause_replay(cluster, "replica1")
    said = standby.tidy(cluster)
    assert "removed replica2 (a delayed replica)" in said and "replica1: replay resumed" in said
    assert "replica1: reset hot_standby_feedback, max_standby_streaming_delay" in said
    assert "dropped table wallets" in said
    assert [n.name for n in cluster.nodes] == ["primary", "replica1", other.name]
    cluster.remove_replica(other.name)
    assert standby.tidy(cluster) == "nothing to tidy: the cluster is as the chapter found it"
    assert replica.scalar("SELECT current_setting('max_standby_streaming_delay')") == "30s"
    assert standby.slot_xmin(cluster, replica) is None or standby._wait_feedback(cluster, replica, on=False) is None
    slots = cluster.primary.sql("SELECT slot_name FROM pg_replication_slots")["slot_name"].tolist()
    assert slots == ["replica1"]
