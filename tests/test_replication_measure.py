"""lab.replication: the views and measurements, against a real primary and replica."""
from __future__ import annotations

import pandas as pd
import pytest

import lab
from lab import replication
from lab.lsn import parse_lsn

pytestmark = pytest.mark.integration


def test_stat_replication_shows_the_streaming_replica(cluster):
    cluster.primary.execute("INSERT INTO test_replication (mensaje) VALUES ('stat')")
    lsn = cluster.wait_replayed()
    df = replication.stat_replication(cluster)
    assert list(df.columns) == ["application_name", "client_addr", "state", "sent_lsn", "write_lsn", "flush_lsn",
                                "replay_lsn", "replay_lag_bytes", "write_lag_s", "flush_lag_s", "replay_lag_s",
                                "sync_state"]
    row = df.set_index("application_name").loc["replica1"]
    assert row["state"] == "streaming" and row["sync_state"] == "async"
    assert row["client_addr"].startswith("127.0.0.1")
    assert parse_lsn(row["replay_lsn"]) >= parse_lsn(lsn)
    assert parse_lsn(row["sent_lsn"]) >= parse_lsn(row["replay_lsn"])
    assert row["replay_lag_bytes"] >= 0


def test_stat_wal_receiver_on_each_replica(cluster):
    lsn = cluster.wait_replayed()
    df = replication.stat_wal_receiver(cluster)
    row = df.set_index("node").loc["replica1"]
    assert row["state"] == "running" and row["status"] == "streaming"
    assert row["sender_host"] == "127.0.0.1" and row["sender_port"] == cluster.primary.port
    assert row["slot_name"] == "replica1"
    assert parse_lsn(row["replayed_lsn"]) >= parse_lsn(lsn)
    assert parse_lsn(row["flushed_lsn"]) >= parse_lsn(row["receive_start_lsn"])

    cluster.node("replica1").stop()
    stopped = replication.stat_wal_receiver(cluster).set_index("node").loc["replica1"]
    assert stopped["state"] == "stopped" and stopped["status"] is None
    assert replication.stat_replication(cluster).empty  # nobody streams from the primary now


def test_time_to_replica_times_each_row(cluster):
    d = replication.time_to_replica(cluster, n=6)
    assert d["trial"].tolist() == [1, 2, 3, 4, 5, 6]
    assert (d["replica"] == "replica1").all()
    assert d["row_id"].is_monotonic_increasing and d["row_id"].is_unique
    assert ((d["seconds"] > 0) & (d["seconds"] < 5)).all()
    assert (d["polls"] >= 1).all()
    lsns = [parse_lsn(x) for x in d["lsn"]]
    assert lsns == sorted(lsns)
    ids = [int(i) for i in d["row_id"]]
    on_replica = cluster.node("replica1").scalar("SELECT count(*) FROM test_replication WHERE id = ANY(%s)", (ids,))
    assert on_replica == 6
    # the one-line summary quotes these trials' own numbers, nothing else
    line = replication.delay_summary(d)
    ms = d["seconds"] * 1000
    assert line.startswith("6 trials on replica1: median ")
    assert f"median {replication._ms(ms.median())} ms" in line and f"slowest {replication._ms(ms.max())} ms" in line
    assert f"75th percentile {replication._ms(ms.quantile(0.75))} ms" in line
    assert line.endswith(f"{int((ms > 2 * ms.median()).sum())} of 6 over twice the median")


def test_delay_summary_reads_only_time_to_replica_trials():
    for bad in (None, pd.DataFrame(), pd.DataFrame(dict(x=[1]))):
        with pytest.raises(lab.errors.BadArgument, match="time_to_replica"):
            replication.delay_summary(bad)


def test_time_to_replica_refuses_clearly(cluster):
    with pytest.raises(lab.LabError, match="not a replica"):
        replication.time_to_replica(cluster, replica="primary", n=1)
    with pytest.raises(lab.LabError, match="whole number"):
        replication.time_to_replica(cluster, n=0)
    cluster.node("replica1").stop()
    with pytest.raises(lab.NotRunning, match="no replica is running"):
        replication.time_to_replica(cluster, n=1)
    with pytest.raises(lab.NotRunning, match="replica1 is stopped"):
        replication.time_to_replica(cluster, replica="replica1", n=1)


def test_catch_up_after_a_stop(cluster):
    before = cluster.primary.scalar("SELECT count(*) FROM test_replication")
    d = replication.catch_up(cluster, "replica1", rows=2000)
    assert d["replica_state"].tolist() == ["running", "stopped", "running", "running"]
    stopped, caught = d.iloc[1], d.iloc[3]
    assert stopped["rows_on_primary"] == before + 2000
    assert stopped["behind_bytes"] > 2000 * 20  # every row costs WAL
    assert parse_lsn(caught["replayed_lsn"]) >= parse_lsn(stopped["primary_lsn"])
    assert caught["rows_on_replica"] == caught["rows_on_primary"] == before + 2000
    assert 0 < d.iloc[2]["seconds"] <= caught["seconds"]
    assert cluster.node("replica1").is_running


def test_catch_up_from_an_already_stopped_replica(cluster):
    cluster.node("replica1").stop()
    d = replication.catch_up(cluster, "replica1", rows=10)
    assert d["phase"].tolist()[0].startswith("stopped")
    assert len(d) == 3 and d.iloc[-1]["phase"] == "caught up"
