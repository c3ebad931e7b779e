"""lab.logical on real servers: wal_level set for logical decoding, a publication on the primary and a
subscription on the analytics server (initial copy, streaming, writable), what publications carry,
REPLICA IDENTITY, a conflict repaired both ways, the change stream (test_decoding, pgoutput,
pg_recvlogical), a forgotten logical slot, lag and bytes measured, a failover and its repair, the
09.x self-checks, tidy, and bad arguments."""
from __future__ import annotations

import pandas as pd
import pytest

import lab
from lab import logical
from lab.checks import check
from lab.errors import BadArgument, LabError
from lab.node import Role

from labtest.pgoutput import DELETE_ETH, INSERT_BTC, RELATION

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A primary, one replica and the analytics server; the chapter's tidy, then wiped."""
    home = tmp_path_factory.mktemp("lab")
    c = lab.up(replicas=1, home=home, quiet=True)
    yield c
    try:
        logical.tidy(c)
    finally:
        lab.down(wipe=True, home=home)


def _subscribed(c):
    logical.setup(c, rows=3000, quiet=True)
    logical.subscribe(c, quiet=True)
    return c


# --- pure functions ---------------------------------------------------------------------------------
def test_parse_pgoutput_reads_relation_insert_and_delete_messages():
    rel, ins, dele = RELATION, INSERT_BTC, DELETE_ETH
    df = logical.parse_pgoutput(pd.DataFrame({"lsn": ["0/1", "0/2", "0/3"], "data": [rel, ins, dele]}))
    assert df["message"].tolist() == ["RELATION", "INSERT", "DELETE"]
    assert df["table"].tolist() == ["public.precios"] * 3
    assert df["columns"].iloc[0] == "moneda, precio"
    assert df["values"].iloc[1] == "new: moneda=BTC" and df["values"].iloc[2] == "key: moneda=ETH"
    assert df["bytes"].tolist() == [len(rel), len(ins), len(dele)]


# --- wal_level, the analytics server, the subscription -----------------------------------------------
def test_ensure_logical_sets_wal_level_on_a_cluster_made_with_replica(cluster):
    cluster.primary.set(wal_level="replica")
    cluster.primary.restart()
    cluster.wait_streaming(timeout=60)
    done = logical.ensure_logical(cluster, quiet=True)
    assert "wal_level was replica" in done[0] and "restart" in done[0]
    assert cluster.primary.scalar("SHOW wal_level") == "logical"
    assert cluster.node("replica1").scalar("SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'") == 1
    assert "nothing to do" in logical.ensure_logical(cluster, quiet=True)[0]


def test_setup_and_subscribe_copy_then_stream(cluster):
    s = logical.setup(cluster, rows=3000, quiet=True)
    assert s["rows_in_precios"] == 3000 and set(s["tables"].split(", ")) == {"precios", "lab_writes"}
    node = cluster.node(logical.ANALYTICS)
    assert node.role == Role.STANDALONE and node.scalar("SELECT count(*) FROM precios") == 0
    copy = logical.subscribe(cluster, quiet=True)
    assert copy["rows_copied"] == copy["rows_on_primary"] == 3000 and copy["copy_s"] > 0
    again = logical.subscribe(cluster, quiet=True)
    assert again["copy_s"] is None and again["rows_copied"] == 3000
    seen = logical.stream_one(cluster, rows=3)
    assert len(seen) == 3 and (seen["visible_after_ms"] > 0).all()
    st = logical.subscription_status(cluster).iloc[0]
    assert st["enabled"] and st["slot_active"] and pd.notna(st["apply_pid"])
    assert check("09.1", cluster).ok


def test_the_subscriber_takes_writes_a_replica_refuses(cluster):
    _subscribed(cluster)
    df = logical.writable_side_by_side(cluster).set_index("kind")
    assert df.loc["logical subscriber", "insert"] == "accepted"
    assert df.loc["physical replica", "insert"] == "refused"
    assert "read-only" in df.loc["physical replica", "message"]
    assert cluster.node(logical.ANALYTICS).scalar("SELECT count(*) FROM precios WHERE moneda = 'LOCAL'") == 0


# --- what a publication carries ---------------------------------------------------------------------
def test_row_filter_column_list_and_publish_insert(cluster):
    _subscribed(cluster)
    pubs = logical.demo_publications(cluster).set_index("pubname")
    assert pubs.loc[logical.FILTERED, "rowfilter"] == "(moneda = 'BTC'::text)"
    assert not pubs.loc[logical.INSERTS_ONLY, "pubupdate"]
    df = logical.compare_carried(cluster).set_index("publication")
    assert df.loc[logical.PUBLICATION, ["INSERT", "UPDATE", "DELETE"]].tolist() == [2, 1, 2]
    assert df.loc[logical.FILTERED, ["INSERT", "UPDATE", "DELETE"]].tolist() == [1, 1, 1]
    assert "volumen" not in df.loc[logical.FILTERED, "columns"] and "volumen" in df.loc[logical.PUBLICATION, "columns"]
    assert df.loc[logical.INSERTS_ONLY, ["INSERT", "UPDATE", "DELETE"]].tolist() == [2, 0, 0]
    assert df.loc[logical.FILTERED, "bytes"] < df.loc[logical.PUBLICATION, "bytes"]
    assert cluster.primary.scalar("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'carry_demo'") == 0


def test_update_without_replica_identity_fails_and_is_repaired_both_ways(cluster):
    _subscribed(cluster)
    refused = logical.update_without_key(cluster)
    assert refused["update"] == "refused"
    assert 'cannot update table "eventos" because it does not have a replica identity and publishes updates' \
        in refused["error"]
    full = logical.repair_identity(cluster, "full")
    assert full["update"] == "accepted" and full["replica_identity"].startswith("full") and full["rows_updated"] >= 1
    key = logical.repair_identity(cluster, "key")
    assert key["replica_identity"].startswith("default") and key["rows_updated"] >= 1
    assert logical.update_without_key(cluster)["update"] == "refused"  # made afresh: no key again


# --- a conflict -----------------------------------------------------------------------------------
def test_conflict_skipped_loses_the_transaction_then_deleted_row_repairs(cluster):
    _subscribed(cluster)
    k = logical.make_conflict(cluster, quiet=True)
    assert "duplicate key value" in k.error and "finished at" in k.context and k.apply_error_count >= 1
    assert logical.parse_lsn(k.finish_lsn) is not None
    down = logical.subscription_status(cluster).iloc[0]
    assert down["apply_error_count"] >= 1
    skipped = logical.repair_conflict(cluster, k, how="skip")
    assert skipped["on_subscriber"].tolist()[0] == 1.0 and skipped["on_subscriber"].iloc[1:].isna().all()
    assert skipped["on_primary"].notna().all()
    assert not check("09.3", cluster).ok  # the skipped rows are missing
    k2 = logical.make_conflict(cluster, quiet=True)
    fixed = logical.repair_conflict(cluster, k2, how="delete")
    assert (fixed["on_subscriber"] == fixed["on_primary"]).all()
    assert check("09.1", cluster).ok


# --- the change stream --------------------------------------------------------------------------
def test_decode_shows_each_change_and_the_transaction(cluster):
    _subscribed(cluster)
    td = logical.decode(cluster)
    changes = td[~td["data"].str.match(r"^(BEGIN|COMMIT)")]
    kinds = changes["data"].str.extract(r": (INSERT|UPDATE|DELETE):")[0].tolist()
    assert kinds == ["INSERT", "UPDATE", "DELETE", "INSERT", "INSERT", "DELETE", "DELETE"]
    assert changes["xid"].nunique() == 4 and changes.groupby("xid").size().max() == 4
    po = logical.decode(cluster, plugin="pgoutput")
    assert po["message"].value_counts().to_dict() == {"BEGIN": 4, "COMMIT": 4, "INSERT": 3, "DELETE": 3, "UPDATE": 1}
    text = logical.recvlogical(cluster)
    assert text.count("COMMIT") == 4 and "table public.precios: UPDATE:" in text
    assert cluster.primary.scalar("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s",
                                  (logical.CDC_SLOT,)) == 0


def test_a_forgotten_logical_slot_retains_wal_until_dropped(cluster):
    _subscribed(cluster)
    df = logical.forgotten_slot(cluster, segments=3, quiet=True)
    kept = df["retained_bytes"].tolist()
    assert kept == sorted(kept) and kept[-1] - kept[0] >= 2 * (16 << 20) and not df["active"].any()
    assert not check("09.4", cluster).ok
    assert "dropped slot 'cdc_forgotten'" in logical.drop_forgotten(cluster)
    assert check("09.4", cluster).ok


# --- measured --------------------------------------------------------------------------------------
def test_apply_lag_and_visibility_under_the_writer(cluster):
    _subscribed(cluster)
    samples = logical.apply_lag(cluster, rate=100, seconds=1.5)
    assert len(samples) >= 3 and {"physical_lag_bytes", "logical_lag_bytes"} <= set(samples)
    vis = logical.visibility(samples).set_index("kind")
    writes = vis.loc["logical subscriber", "writes"]
    assert writes > 0 and (vis["seen"] == writes).all() and (vis["visible_ms_median"] >= 0).all()


def test_bytes_shipped_and_what_each_kind_can_do(cluster):
    _subscribed(cluster)
    b = logical.bytes_compared(cluster, rows=500).set_index("table")
    assert b.loc["precios", "logical_bytes"] > 0 and b.loc[logical.LOCAL_TABLE, "logical_bytes"] == 0
    assert (b["physical_bytes"] > 0).all()
    cap = logical.capabilities(cluster).set_index("kind")
    assert cap.loc["physical replica"].tolist()[1:] == [False, True, True, True, False]
    assert cap.loc["logical subscriber"].tolist()[1:] == [True, False, False, False, True]


# --- across a failover, then tidy ------------------------------------------------------------------
def test_failover_breaks_the_subscription_and_a_fresh_copy_repairs_it(cluster):
    _subscribed(cluster)
    logical.tidy(cluster, remove=False)  # a fresh subscription: nothing missing before the failover
    _subscribed(cluster)
    after = logical.break_by_failover(cluster, rows=200, quiet=True)
    assert after["new_primary"] == cluster.primary.name != after["old_primary"]
    assert after["publication_on_new_primary"] and after["slot_on_new_primary"] is None
    assert not after["apply_worker_streaming"] and after["missed_by_failover"] == 200
    assert not check("09.1", cluster).ok
    fixed = logical.repair_after_failover(cluster, quiet=True)
    assert fixed["missing_on_subscriber"] == 0 and fixed["slot_on_primary"] == logical.SUBSCRIPTION
    assert check("09.1", cluster).ok and check("09.3", cluster).ok
    done = logical.rejoin_old_primary(cluster, quiet=True)
    assert any(after["old_primary"] in line for line in done)
    assert cluster.node(after["old_primary"]).role == Role.REPLICA


def test_tidy_drops_subscription_slots_publications_and_the_server(cluster):
    _subscribed(cluster)
    logical.demo_publications(cluster)
    done = logical.tidy(cluster)
    assert any("dropped subscription" in d for d in done) and any("removed the analytics" in d for d in done)
    assert logical.tidy(cluster) == ["nothing to tidy"]
    for n in cluster.nodes:
        assert n.scalar("SELECT count(*) FROM pg_replication_slots WHERE slot_type = 'logical'") == 0
    assert not cluster.standalones
    assert not check("09.1", cluster).ok


# --- bad arguments: one line each ------------------------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda c: logical.carried(c, "Bad Name"),
    lambda c: logical.carried(c, "no_such_pub"),
    lambda c: logical.decode(c, plugin="wal2json"),
    lambda c: logical.setup(c, rows=0),
    lambda c: logical.apply_lag(c, rate=-1),
    lambda c: logical.visibility(pd.DataFrame()),
    lambda c: logical.parse_pgoutput(None),
    lambda c: logical.repair_conflict(c, None),
    lambda c: logical.repair_identity(c, how="index"),
    lambda c: logical.forgotten_slot(c, segments=0),
    lambda c: logical.compare_carried(c, "analytics_pub"),
    lambda c: logical.subscribe(c, timeout="soon"),
    lambda c: logical.ensure_logical("not a cluster"),
])
def test_bad_arguments_are_one_line_errors(cluster, call):
    with pytest.raises(LabError) as e:
        call(cluster)
    assert "\n" not in str(e.value)


def test_bad_argument_type(cluster):
    with pytest.raises(BadArgument):
        logical.analytics(cluster, name="1x")
