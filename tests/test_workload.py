"""The writer, its log outside the database, the audit against a node, and the reader."""
from __future__ import annotations

import json

import pandas as pd
import psycopg2
import pytest

import lab
from lab import workload
from lab.errors import LabError, NotRunning
from lab.lsn import parse_lsn

pytestmark = pytest.mark.integration


def test_writer_logs_every_write_acknowledged_with_increasing_lsns(cluster):
    w = workload.Writer(cluster.primary, max_rows=50, duration=30).run()
    log = w.log()
    assert list(log["seq"]) == list(range(1, 51))
    assert set(log["outcome"]) == {"acknowledged"}
    assert set(log["node"]) == {cluster.primary.name}
    lsns = [parse_lsn(x) for x in log["lsn"]]
    assert lsns == sorted(lsns) and len(set(lsns)) == 50
    assert cluster.primary.scalar("SELECT count(*) FROM lab_writes WHERE run = %s", (w.run_id,)) == 50
    s = w.summary().iloc[0]
    assert s["acknowledged"] == 50 and s["failed"] == 0 and s["unknown"] == 0


def test_a_replica_that_replayed_the_logged_lsn_shows_the_row(cluster):
    replica = cluster.node("replica1")
    w = workload.Writer(cluster.primary, max_rows=20, duration=30).run()
    for _, row in w.log().iterrows():
        cluster.wait_replayed(row["lsn"])
        assert replica.scalar("SELECT count(*) FROM lab_writes WHERE run = %s AND seq = %s",
                              (w.run_id, int(row["seq"]))) == 1


def test_audit_counts_acknowledged_writes_missing_on_a_replica_whose_replay_is_paused(cluster):
    replica = cluster.node("replica1")
    before = workload.Writer(cluster.primary, max_rows=10, duration=30, run="audit1")
    before.run()
    cluster.wait_replayed()
    replica.execute("SELECT pg_wal_replay_pause()", dbname="postgres")
    try:
        more = workload.Writer(cluster.primary, max_rows=15, duration=30, run="audit2").run()
        lost = workload.lost_writes(more, replica)
        assert list(lost["seq"]) == list(range(1, 16))
        a = workload.audit(more, replica).set_index("outcome")
        assert a.loc["acknowledged", "writes"] == 15 and a.loc["acknowledged", "missing"] == 15
        assert workload.audit(before, replica).set_index("outcome").loc["acknowledged", "missing"] == 0
        assert workload.lost_writes(more, cluster.primary).empty
    finally:
        replica.execute("SELECT pg_wal_replay_resume()", dbname="postgres")
    cluster.wait_replayed()
    assert workload.lost_writes(more, replica).empty


def test_log_file_holds_the_same_writes(cluster, tmp_path):
    path = tmp_path / "writes.jsonl"
    w = workload.Writer(cluster.primary, max_rows=12, duration=30, log_path=path).run()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["seq"] for x in lines] == list(range(1, 13))
    from_file = workload.read_log(path)
    pd.testing.assert_frame_equal(from_file.drop(columns=[]), w.log(), check_like=True)
    assert workload.audit(path, cluster.primary, run=w.run_id).set_index("outcome").loc["acknowledged", "missing"] == 0


def test_writer_survives_a_primary_restart_and_logs_failures(cluster):
    with workload.Writer(cluster.primary, rate=200, duration=20) as w:
        while len(w.writes) < 20:
            w.wait(0.05)
        cluster.primary.stop()
        while not any(x.outcome != "acknowledged" for x in w.writes):
            w.wait(0.05)
        cluster.primary.start()
        n = len(w.writes)
        while sum(x.outcome == "acknowledged" for x in w.writes[n:]) < 10:
            w.wait(0.05)
    log = w.log()
    assert w.error is None
    assert w.reconnects >= 1
    assert (log["outcome"] != "acknowledged").any()
    bad = log[log["outcome"] != "acknowledged"]
    assert bad["error"].notna().all()
    # every acknowledged write is on the primary: a fast shutdown loses no committed row
    assert workload.lost_writes(w, cluster.primary).empty
    assert workload.outage(log) > 0


def test_writer_through_a_multi_host_dsn_lands_on_the_primary(cluster):
    dsn = workload.multi_host_dsn(cluster)
    assert "target_session_attrs=read-write" in dsn
    order = list(reversed(cluster.nodes))  # the replica first: libpq skips it
    w = workload.Writer(workload.multi_host_dsn(cluster, nodes=order), cluster=cluster, max_rows=5).run()
    assert set(w.log()["node"]) == {cluster.primary.name}
    assert set(w.log()["outcome"]) == {"acknowledged"}


def test_writes_sent_to_a_replica_fail_and_say_why(cluster):
    replica = cluster.node("replica1")
    w = workload.Writer(workload.node_dsn(replica), cluster=cluster, max_rows=3, create_table=False,
                        retry_interval=0).run()
    log = w.log()
    assert set(log["outcome"]) == {"failed"}
    assert log["error"].str.contains("read-only").all()


def test_synchronous_commit_is_set_for_the_writers_session(cluster):
    w = workload.Writer(cluster.primary, max_rows=3, synchronous_commit="off").run()
    assert set(w.log()["outcome"]) == {"acknowledged"}
    with pytest.raises(LabError):
        workload.Writer(cluster.primary, max_rows=1, synchronous_commit="sometimes").run()


def test_reader_sees_the_run_grow_on_a_replica(cluster):
    replica = cluster.node("replica1")
    with workload.Writer(cluster.primary, rate=100, duration=1.5) as w, \
            workload.Reader(replica, run=w.run_id, rate=20, duration=1.5) as r:
        w.wait()
        r.wait()
    reads = r.log()
    assert len(reads) >= 5 and reads["error"].isna().all()
    seen = reads["max_seq"].dropna().astype(int).tolist()
    assert seen == sorted(seen) and seen[-1] > seen[0]
    assert reads["replayed_lsn"].notna().all()


def test_bounds_and_targets_are_checked(cluster):
    with pytest.raises(LabError, match="duration"):
        workload.Writer(cluster.primary, duration=None, max_rows=None)
    with pytest.raises(LabError, match="rate"):
        workload.Writer(cluster.primary, rate=-1)
    with pytest.raises(LabError):
        workload.Writer(42)
    w = workload.Writer(cluster.primary, max_rows=1).run()
    with pytest.raises(LabError, match="has run"):
        w.start()


def test_writer_to_a_stopped_node_says_so(fresh_cluster):
    replica = fresh_cluster.node("replica1")
    replica.stop()
    with pytest.raises(NotRunning):
        workload.Writer(replica, max_rows=1).start()


def test_classify():
    assert workload.classify(psycopg2.OperationalError("server closed the connection unexpectedly")) == "unknown"
    assert workload.classify(psycopg2.OperationalError("x"), sent=False) == "failed"
    assert workload.classify(ValueError("x")) == "failed"


def test_doctests_of_the_chapter_05_modules():
    import doctest

    from lab import consistency, faults, lag, proxy, sync
    for mod in (workload, proxy, faults, lag, sync, consistency):
        assert doctest.testmod(mod, raise_on_error=False).failed == 0, mod.__name__
