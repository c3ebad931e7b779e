"""The cluster's other kinds of node (chapters 09-10) on real servers: a standalone node outside the
physical cluster (fresh, or restored from a base backup to a point in time), the cluster's WAL
archive directory, and a cascading replica that streams from another replica."""
from __future__ import annotations

import os
import stat
import time

import pandas as pd
import pytest

import lab
from lab import backups
from lab.errors import BadArgument, LabError
from lab.lsn import parse_lsn

from docker_fixtures import compose_env
from labtest.helpers import insert, rows_with

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A primary + one replica for the module's non-destructive tests; wiped afterwards."""
    h = tmp_path_factory.mktemp("lab")
    lab.up(replicas=1, home=h, quiet=True, backend="local")
    yield h
    lab.down(wipe=True, home=h)


@pytest.fixture
def cluster(home):
    return lab.up(replicas=1, home=home, quiet=True)


def archiving(cluster) -> str:
    """Turn on WAL archiving into the cluster's archive directory on the primary; the directory."""
    d = cluster.archive_dir()
    cluster.primary.set(archive_mode="on", archive_command=f"test ! -f {d}/%f && cp %p {d}/%f")
    cluster.primary.restart()
    cluster.wait_streaming()
    return d


def archived_up_to(cluster, timeout: float = 30) -> None:
    """Switch WAL files and wait until the archiver has archived the one just closed."""
    segment = cluster.primary.scalar("SELECT pg_walfile_name(pg_switch_wal())", dbname="postgres")
    deadline = time.monotonic() + timeout
    while cluster.primary.scalar("SELECT last_archived_wal FROM pg_stat_archiver", dbname="postgres") != segment:
        assert time.monotonic() < deadline, f"{segment} not archived within {timeout} s"
        time.sleep(0.05)


# --- standalone nodes ----------------------------------------------------------------------
def test_a_fresh_standalone_is_writable_and_outside_the_physical_cluster(cluster, capsys):
    a = cluster.add_standalone("analytics")
    assert a.role == "standalone" and a.scalar("SELECT pg_is_in_recovery()") is False
    a.execute("CREATE TABLE IF NOT EXISTS here_only (x int)")
    assert a.execute("INSERT INTO here_only VALUES (1)") == 1
    assert rows_with(a, "Mensaje inicial desde el master") == 1  # initialised like the primary
    assert [n.name for n in cluster.standalones] == ["analytics"]
    assert [n.name for n in cluster.replicas] == ["replica1"] and cluster.primary.name == "primary"
    row = cluster.status().set_index("node").loc["analytics"]
    assert (row["role"], row["state"]) == ("standalone", "running")
    assert pd.isna(row["lag_bytes"]) and pd.isna(row["lag_s"]) and pd.isna(row["upstream"])
    assert cluster.node("replica1").scalar("SELECT count(*) FROM pg_stat_wal_receiver") == 1
    assert a.scalar("SELECT count(*) FROM pg_stat_replication") == 0
    capsys.readouterr()
    again = cluster.add_standalone("analytics")
    assert again.port == a.port and "exists already" in capsys.readouterr().out


def test_a_standalone_survives_up_start_and_down(cluster, home):
    a = cluster.add_standalone("analytics")
    c = lab.up(replicas=1, home=home, quiet=True)
    assert sorted(n.name for n in c.nodes) == ["analytics", "primary", "replica1"]
    assert c.node("analytics").role == "standalone" and c.node("analytics").is_running
    c.down()
    assert not c.node("analytics").is_running and not c.primary.is_running
    c.start()
    assert c.node("analytics").is_running and c.node("analytics").role == "standalone"
    a.stop()
    c = lab.up(replicas=1, home=home, quiet=True)  # started again, never made a replica
    assert c.node("analytics").is_running and c.node("analytics").role == "standalone"
    assert len(c.replicas) == 1


def test_standalone_names_and_recovery_settings_are_checked(cluster):
    with pytest.raises(LabError, match="replica1 is this cluster's replica"):
        cluster.add_standalone("replica1")
    with pytest.raises(BadArgument, match="not a recovery setting; allowed: restore_command") as e:
        cluster.add_standalone("pitr", from_backup="/nonexistent", recovery={"recovery_target_lns": "0/1"})
    assert len(str(e.value).splitlines()) == 1
    with pytest.raises(BadArgument, match="from_backup too"):
        cluster.add_standalone("pitr", recovery={"recovery_target_lsn": "0/1"})
    with pytest.raises(BadArgument, match="'promote'"):
        cluster.add_standalone("pitr", from_backup="/x", recovery={"recovery_target_action": "shutdown"})
    assert "pitr" not in cluster._state["nodes"]


def test_archive_dir_is_shared_by_the_nodes(cluster):
    d = cluster.archive_dir()
    assert d == str(cluster.data_root / "archive") and cluster.archive_dir() == d
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    for n in (cluster.primary, cluster.node("replica1")):
        n.tool("sh", "-c", f"touch {d}/from_{n.name}")
    listed = set(cluster.primary.sql("SELECT pg_ls_dir(%s) AS f", (d,))["f"])
    assert {"from_primary", "from_replica1"} <= listed


def test_point_in_time_recovery_stops_at_the_lsn_and_leaves_recovery(cluster):
    d = archiving(cluster)
    backup = backups.take_base_backup(cluster, name="pitr-test", quiet=True)
    insert(cluster.primary, "before the target")
    target = cluster.primary.scalar("SELECT pg_current_wal_insert_lsn()", dbname="postgres")
    insert(cluster.primary, "after the target")
    archived_up_to(cluster)
    p = cluster.add_standalone("pitr", from_backup=backup, recovery={
        "restore_command": f"cp {d}/%f %p", "recovery_target_lsn": target,
        "recovery_target_action": "promote"})
    try:
        assert not backup.exists()  # moved
        assert p.role == "standalone" and p.scalar("SELECT pg_is_in_recovery()") is False
        assert rows_with(p, "before the target") == 1 and rows_with(p, "after the target") == 0
        assert p.execute("INSERT INTO test_replication (mensaje) VALUES ('restored copy')") == 1
        assert "primary_conninfo" not in p.tool("cat", f"{p.pgdata}/postgresql.auto.conf").stdout
        assert cluster.status().set_index("node").loc["pitr", "role"] == "standalone"
    finally:
        cluster.remove_node("pitr")
    assert "pitr" not in cluster._state["nodes"]


def test_recovery_paused_at_its_target_until_promoted(cluster):
    d = archiving(cluster)
    backup = backups.take_base_backup(cluster, name="pause-test", quiet=True)
    target = cluster.primary.scalar("SELECT pg_current_wal_insert_lsn()", dbname="postgres")
    insert(cluster.primary, "after the pause")
    archived_up_to(cluster)
    p = cluster.add_standalone("pitr", from_backup=backup, recovery={
        "restore_command": f"cp {d}/%f %p", "recovery_target_lsn": target, "recovery_target_action": "pause"})
    try:
        assert p.scalar("SELECT pg_is_in_recovery()") is True
        assert p.scalar("SELECT pg_get_wal_replay_pause_state()") == "paused"
        p.promote()
        assert p.scalar("SELECT pg_is_in_recovery()") is False and p.role == "standalone"
        assert cluster.primary.name == "primary" and rows_with(p, "after the pause") == 0
    finally:
        cluster.remove_node("pitr")


def test_a_failing_recovery_quotes_fatal_and_leaves_the_node_stopped(cluster):
    d = archiving(cluster)
    early = cluster.primary.scalar("SELECT pg_current_wal_insert_lsn()", dbname="postgres")
    insert(cluster.primary, "between")
    backup = backups.take_base_backup(cluster, name="fail-test", quiet=True)
    with pytest.raises(LabError, match=r"recovery failed: FATAL: requested recovery stop point is before") as e:
        cluster.add_standalone("broken", from_backup=backup, recovery={
            "restore_command": f"cp {d}/%f %p", "recovery_target_lsn": early})
    assert "cluster.remove_node('broken')" in str(e.value)
    node = cluster.node("broken")
    assert node.role == "standalone" and not node.is_running
    assert "FATAL" in node.logs(200)
    cluster.remove_node("broken")
    assert "broken" not in cluster._state["nodes"]


# --- cascading replicas ------------------------------------------------------------------------
def test_a_cascading_replica_follows_its_upstream_through_a_failover(fresh_cluster):
    c = fresh_cluster
    r2 = c.add_replica("replica2", upstream="replica1")
    assert r2.spec["upstream"] == "replica1"
    slots = c.node("replica1").sql("SELECT slot_name, active FROM pg_replication_slots")
    assert slots.to_dict("records") == [{"slot_name": "replica2", "active": True}]
    assert "replica2" not in set(c.primary.sql("SELECT slot_name FROM pg_replication_slots")["slot_name"])
    assert c.node("replica1").scalar("SELECT count(*) FROM pg_stat_replication "
                                     "WHERE application_name = 'replica2'") == 1
    insert(c.primary, "through the cascade")
    c.wait_replayed()
    assert rows_with(r2, "through the cascade") == 1
    assert c.status().set_index("node").loc["replica2", "upstream"] == "replica1"
    c.node("replica1").promote()  # the lab's own failover: replica1 is the primary now
    assert c.primary.name == "replica1"
    c.wait_streaming(names=["replica2"])
    insert(c.primary, "after the failover")
    lsn = c.primary.scalar("SELECT pg_current_wal_lsn()")
    deadline = time.monotonic() + 30
    while parse_lsn(r2.scalar("SELECT pg_last_wal_replay_lsn()") or "0/0") < parse_lsn(lsn):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert rows_with(r2, "after the failover") == 1
    # lab.up(): "primary" the primary again (a switchover from replica1, which becomes a former
    # primary for a moment): the cascade streams from the primary from then on
    c = lab.up(replicas=1, home=c.home.path, quiet=True)
    assert c.primary.name == "primary" and "upstream" not in c.node("replica2").spec
    insert(c.primary, "after the switchover back")
    c.wait_replayed()
    assert rows_with(c.node("replica2"), "after the switchover back") == 1
    assert c.primary.scalar("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'replica2'") == 1


def test_removing_an_upstream_points_its_cascade_at_the_primary(fresh_cluster, capsys):
    c = fresh_cluster
    c.add_replica("replica2", upstream="replica1")
    capsys.readouterr()
    c.remove_replica("replica1")
    assert "replica2: cascaded from replica1" in capsys.readouterr().out
    assert "upstream" not in c.node("replica2").spec
    c.wait_streaming(names=["replica2"])
    assert c.primary.scalar("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'replica2'") == 1
    c2 = lab.up(replicas=1, home=c.home.path, quiet=True)  # the layout is kept: no replica added back
    assert [n.name for n in c2.replicas] == ["replica2"]


def test_up_keeps_a_cascade_a_cascade(fresh_cluster):
    c = fresh_cluster
    c.add_replica("replica2", upstream="replica1")
    c.down()
    c2 = lab.up(replicas=1, home=c.home.path, quiet=True)
    c2.wait_streaming()
    assert c2.node("replica2").spec["upstream"] == "replica1"
    assert c2.node("replica1").scalar("SELECT count(*) FROM pg_stat_replication "
                                      "WHERE application_name = 'replica2'") == 1


# --- compose: the three in one cluster ----------------------------------------------------------
@pytest.mark.compose
def test_compose_standalone_archive_and_cascade(docker_engine, tmp_path):
    home = tmp_path / "lab"
    with compose_env(docker_engine):
        c = lab.up(replicas=1, home=home, quiet=True, backend="compose")
        try:
            a = c.add_standalone("analytics")
            assert a.scalar("SELECT pg_is_in_recovery()") is False and a.role == "standalone"
            assert a.scalar("SHOW cluster_name") == "analytics"
            assert rows_with(a, "Mensaje inicial desde el master") == 1
            # the standalone reaches the primary by the string chapter 09 uses
            a.execute("CREATE EXTENSION IF NOT EXISTS dblink")
            info = c.conninfo_from("analytics")
            assert a.scalar("SELECT x FROM dblink(%s, 'SELECT current_database()') AS t(x text)",
                            (info,)) == "crypto_db"
            d = archiving(c)
            assert d == "/var/lib/postgresql/archive"
            a.tool("sh", "-c", f"touch {d}/from_analytics")
            assert "from_analytics" in set(c.primary.sql("SELECT pg_ls_dir(%s) AS f", (d,))["f"])
            backup = backups.take_base_backup(c, name="pitr", quiet=True)
            insert(c.primary, "before the target")
            target = c.primary.scalar("SELECT pg_current_wal_insert_lsn()", dbname="postgres")
            insert(c.primary, "after the target")
            archived_up_to(c)
            p = c.add_standalone("pitr", from_backup=backup, recovery={
                "restore_command": f"cp {d}/%f %p", "recovery_target_lsn": target,
                "recovery_target_action": "promote"})
            assert p.scalar("SELECT pg_is_in_recovery()") is False
            assert rows_with(p, "before the target") == 1 and rows_with(p, "after the target") == 0
            c.remove_node("pitr")
            r2 = c.add_replica("replica2", upstream="replica1")
            assert c.node("replica1").scalar("SELECT slot_name FROM pg_replication_slots") == "replica2"
            insert(c.primary, "through the cascade")
            c.wait_replayed()
            assert rows_with(r2, "through the cascade") == 1
            c.node("replica1").promote()
            c.wait_streaming(names=["replica2"])
            c.down()
            c = lab.up(replicas=1, home=home, quiet=True)  # "primary" rejoined, then the primary again
            assert c.primary.name == "primary" and c.node("analytics").role == "standalone"
            assert c.node("analytics").is_running and len(c.replicas) == 2
            insert(c.primary, "after up")
            c.wait_replayed()
            assert rows_with(c.node("replica2"), "after up") == 1
        finally:
            lab.down(wipe=True, home=home)
