"""One behavioural suite, run against every backend: the local one (processes) and the
compose one (containers on a private Docker engine, where this machine can run one)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import lab
import lab.backends.compose
import lab.backends.pgconf
import lab.system.paths
import lab.pgadmin
from lab.system import ports

from conftest import insert, rows_with
from docker_fixtures import compose_env

pytestmark = pytest.mark.integration


@pytest.fixture(params=["local", pytest.param("compose", marks=pytest.mark.compose)])
def backend(request):
    """The backend's name, with the environment it needs set."""
    if request.param == "local":
        yield "local"
        return
    with compose_env(request.getfixturevalue("docker_engine")):
        yield "compose"


@pytest.fixture
def cluster(backend, tmp_path):
    home = tmp_path / "lab"
    c = lab.up(replicas=1, home=home, quiet=True, backend=backend)
    yield c
    lab.down(wipe=True, home=home)


def leftovers(c) -> list:
    """Server processes / containers of this cluster that still run."""
    if c.backend_name == "compose":
        client = c.backend.client
        return [x.name for x in client.containers.list(all=True, filters={"label": "com.docker.compose.project="
                                                                            + c._state["compose"]["project"]})]
    from conftest import postmasters
    return [d for d in postmasters().values() if str(c.data_root) in d]


def test_up_replicates(cluster, backend):
    assert cluster.backend_name == backend
    assert [n.name for n in cluster.nodes] == ["primary", "replica1"]
    insert(cluster.primary, "Test desde Master")
    cluster.wait_replayed(timeout=20)
    assert rows_with(cluster.node("replica1"), "Test desde Master") == 1
    df = cluster.status().set_index("node")
    assert df.loc["primary", "role"] == "primary" and df.loc["replica1", "role"] == "replica"
    assert (df["state"] == "running").all() and (df["host"] == "127.0.0.1").all()
    app_names = cluster.primary.sql("SELECT application_name, state FROM pg_stat_replication")
    assert app_names["state"].tolist() == ["streaming"]


def test_stop_start_keeps_data_and_replica_catches_up(cluster):
    replica = cluster.node("replica1")
    replica.stop()
    assert replica.state == "stopped"
    insert(cluster.primary, "while the replica was stopped")
    replica.start()
    cluster.wait_replayed(timeout=30)
    assert rows_with(replica, "while the replica was stopped") == 1
    assert "continuing replication" in replica.logs(200)


def test_kill_and_restart_keeps_committed_rows(cluster):
    insert(cluster.primary, "committed before the kill")
    cluster.primary.kill()
    assert cluster.primary.state == "stopped"
    cluster.primary.start()
    assert rows_with(cluster.primary, "committed before the kill") == 1
    cluster.wait_streaming(timeout=30)


def test_promote(cluster):
    insert(cluster.primary, "before the promotion")
    cluster.wait_replayed(timeout=20)
    cluster.primary.stop()
    cluster.node("replica1").promote()
    assert cluster.primary.name == "replica1"
    assert insert(cluster.primary, "written on the promoted replica") == 1
    assert rows_with(cluster.primary, "before the promotion") == 1


def test_reattach_from_a_fresh_process(cluster):
    code = ("import lab; c = lab.attach(); "
            "print(c.node('replica1').scalar('SELECT count(*) FROM test_replication'), "
            "[n.port for n in c.nodes])")
    env = dict(os.environ, LAB_HOME=str(cluster.home.path))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    count = cluster.node("replica1").scalar("SELECT count(*) FROM test_replication")
    assert r.stdout.strip() == f"{count} {[n.port for n in cluster.nodes]}"


def test_down_keeps_data_and_leaves_nothing_running(cluster, backend):
    insert(cluster.primary, "survives down")
    cluster.down()
    assert leftovers(cluster) == []
    assert ports.claims_of(cluster.home.owner) == []
    again = lab.up(home=cluster.home.path, quiet=True)
    assert again.backend_name == backend
    assert rows_with(again.primary, "survives down") == 1
    again.wait_replayed(timeout=30)
    assert rows_with(again.node("replica1"), "survives down") == 1


def test_wipe_removes_everything(cluster):
    cluster.down(wipe=True)
    assert leftovers(cluster) == []
    assert not cluster.home.state_file.exists()
    assert ports.claims_of(cluster.home.owner) == []
    if cluster.backend_name == "compose":
        project = cluster._state["compose"]["project"]
        vols = cluster.backend.client.volumes.list(filters={"label": f"com.docker.compose.project={project}"})
        assert vols == []
        assert not os.path.exists(cluster._state["compose"]["env_file"])
    else:
        assert not cluster.data_root.exists()


def test_a_port_taken_while_down_moves_the_node(cluster):
    import socket
    insert(cluster.primary, "before the move")
    old = cluster.primary.port
    cluster.down()
    with socket.socket() as squatter:  # another program takes the primary's port meanwhile
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", old))
        squatter.listen()
        again = lab.up(home=cluster.home.path, quiet=True)
        assert again.primary.port != old
        insert(again.primary, "after the move")
        again.wait_replayed(timeout=30)
        assert rows_with(again.node("replica1"), "after the move") == 1
        if again.backend_name == "local":  # the replica's primary_conninfo followed the move
            auto = (Path(again.node("replica1").pgdata) / "postgresql.auto.conf").read_text()
            assert lab.backends.pgconf.primary_conninfo(auto)["port"] == str(again.primary.port)


@pytest.mark.compose
def test_compose_image_build_failure_is_clear_and_leaves_nothing(docker_engine, tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", docker_engine.host)
    monkeypatch.setenv("LAB_NODE_IMAGE", "pglab/postgres-node:missing")
    monkeypatch.setenv("LAB_BASE_IMAGE", "pglab/no-such-base:1")  # no registry: cannot be pulled
    home = tmp_path / "lab"
    with pytest.raises(lab.LabError, match="building the node image pglab/postgres-node:missing failed"):
        lab.up(replicas=1, home=home, quiet=True, backend="compose")
    assert not (home / "state.json").exists() and not (home / "compose.env").exists()
    assert ports.claims_of(str(home)) == []
    client = docker_engine.client()
    assert [c.name for c in client.containers.list(all=True) if "pg-master" in c.name] == []


@pytest.mark.compose
def test_compose_without_a_daemon_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    with pytest.raises(lab.LabError, match="no Docker daemon answers.*backend='local'"):
        lab.up(replicas=1, home=tmp_path / "lab", quiet=True, backend="compose")
    assert not (tmp_path / "lab" / "state.json").exists()


@pytest.mark.compose
def test_compose_pgadmin_gets_every_node_and_no_password(docker_engine, tmp_path):
    with compose_env(docker_engine):
        cluster = lab.up(replicas=1, home=tmp_path / "lab", quiet=True, backend="compose")
        try:
            _check_compose_pgadmin(cluster)
        finally:
            cluster.down(wipe=True)


def _check_compose_pgadmin(cluster):
    servers = cluster.backend.pgadmin_servers()["Servers"]
    assert [(s["Name"], s["Host"], s["Port"]) for s in servers.values()] == [
        ("pg-master", "pg-master", 5432), ("pg-replica", "pg-replica", 5432)]
    assert cluster.credentials["password"] not in str(servers)
    import docker.errors
    try:
        cluster.backend.client.images.get(lab.backends.compose.PGADMIN_IMAGE)
    except docker.errors.ImageNotFound:
        with pytest.raises(lab.LabError, match="pgAdmin image .* cannot be pulled"):
            lab.pgadmin.start(cluster, quiet=True)
        pytest.skip(f"{lab.backends.compose.PGADMIN_IMAGE} is not in the private engine and no registry answers here")
    info = lab.pgadmin.start(cluster, quiet=True)
    assert info.url.startswith("http://127.0.0.1:")


@pytest.mark.compose
def test_compose_pause_and_network_cut_of_one_node(docker_engine, tmp_path):
    """docker pause / unpause and network disconnect / connect, the partition experiments' tools."""
    import psycopg2
    with compose_env(docker_engine):
        c = lab.up(replicas=1, home=tmp_path / "lab", quiet=True, backend="compose")
        try:
            replica = c.node("replica1")
            c.backend.pause(replica.spec)
            assert c.backend.container(replica.spec).status == "paused"
            with pytest.raises(psycopg2.OperationalError):  # frozen: the login times out
                psycopg2.connect(replica.dsn, connect_timeout=2).close()
            c.backend.unpause(replica.spec)
            assert replica.scalar("SELECT 1") == 1

            c.backend.disconnect(replica.spec)
            insert(c.primary, "written during the partition")
            behind = c.primary.scalar("SELECT pg_current_wal_lsn() > replay_lsn FROM pg_stat_replication")
            assert behind in (True, None)  # not replayed: the replica cannot receive it
            c.backend.connect(replica.spec)
            c.wait_replayed(timeout=60)
            assert rows_with(replica, "written during the partition") == 1
        finally:
            c.down(wipe=True)


def test_storage_shows_where_the_data_is_and_wipe_removes_it(cluster):
    df = cluster.storage()
    assert df["node"].tolist() == ["primary", "replica1"] and df["exists"].all()
    cluster.down(wipe=True)
    assert not cluster.storage()["exists"].any()


@pytest.mark.compose
def test_compose_base_backup_by_hand_becomes_a_replica_in_a_free_service(docker_engine, tmp_path):
    """Chapter 03 on containers: the backup is taken in the primary's container, copied out to the
    lab home (what the student reads and verifies), and copied into a free replica service's volume."""
    from lab import backups
    from lab.checks import check
    with compose_env(docker_engine):
        c = lab.up(replicas=1, home=tmp_path / "lab", quiet=True, backend="compose")
        try:
            path = backups.take_base_backup(c, name="t1", quiet=True)
            assert path == c.home.path / "base-backups" / "t1" and (path / "PG_VERSION").is_file()
            info = backups.passfile_info(c)
            assert info["mode"] == "-rw-------" and info["owner"] == "postgres"
            assert info["path"].endswith("pg-master:/var/lib/postgresql/replication.pgpass")
            assert c.credentials["replication_password"] not in info.to_string()
            settings = backups.recovery_settings(path).set_index("setting")["value"]
            # -R wrote how a replica container reaches the primary: its service name, inside the network
            assert settings["primary_conninfo: host"] == "pg-master"
            assert settings["primary_conninfo: port"] == "5432"
            assert c.credentials["replication_password"] not in (path / "postgresql.auto.conf").read_text()
            assert backups.verify(c, path).ok
            with open(path / "PG_VERSION", "a") as f:  # the host copy is the one verified
                f.write("damage\n")
            bad = backups.verify(c, path)
            assert not bad.ok and "PG_VERSION" in bad.output and ".verify-" not in bad.output
            path = backups.take_base_backup(c, name="t1", quiet=True)

            node = c.add_replica("replica_manual", from_backup=path)
            assert node.spec["service"] == "pg-replica2" and not path.exists()
            assert node.scalar("SHOW primary_slot_name") == ""
            insert(c.primary, "a mano")
            c.wait_replayed()
            assert rows_with(node, "a mano") == 1
            assert backups.backup_label(node)["LABEL"] == "taken by hand"
            assert check("03.2", c).ok
            # replica3 keeps its own service; a further name gets none left, with a clear error
            extra = c.add_replica("replica3")
            assert extra.spec["service"] == "pg-replica3"
            slots = set(c.primary.sql("SELECT slot_name FROM pg_replication_slots")["slot_name"])
            assert slots == {"replica1", "replica3"}  # the node's name is its slot's, in any service
            with pytest.raises(lab.LabError, match="at most 3 replicas .*remove one first"):
                c.add_replica("one_more")
            c.remove_replica("replica_manual")
            assert c.add_replica("one_more").spec["service"] == "pg-replica2"
            assert backups.clean(c) == "no backups to remove; removed replication.pgpass (in " \
                                       f"{c.primary.spec['container']})"
        finally:
            c.down(wipe=True)


@pytest.mark.compose
def test_compose_replica_streams_through_a_proxy_with_latency(docker_engine, tmp_path):
    """lab.proxy on containers: the proxy listens on the compose network's gateway (the container
    cannot reach the host's 127.0.0.1), the replica streams through it, and goes back to pg-master."""
    from lab import proxy
    with compose_env(docker_engine):
        c = lab.up(replicas=1, home=tmp_path / "lab", quiet=True, backend="compose")
        try:
            replica = c.node("replica1")
            link = proxy.route(c, "replica1", latency_ms=25)
            gateway = c.backend.network().attrs["IPAM"]["Config"][0]["Gateway"]
            assert link.proxy.listen == gateway != "127.0.0.1"
            receiver = replica.sql("SELECT status, sender_host, sender_port FROM pg_stat_wal_receiver").iloc[0]
            assert (receiver["status"], receiver["sender_host"], receiver["sender_port"]) == (
                "streaming", gateway, link.proxy.port)
            insert(c.primary, "via proxy")
            c.wait_replayed()
            assert rows_with(replica, "via proxy") == 1 and link.proxy.stats()["bytes_up"] > 0
            link.cut()
            insert(c.primary, "while cut")
            assert rows_with(replica, "while cut") == 0
            link.heal()
            c.wait_replayed(timeout=60)
            assert rows_with(replica, "while cut") == 1
            proxy.unroute(c, "replica1")
            receiver = replica.sql("SELECT sender_host, sender_port FROM pg_stat_wal_receiver").iloc[0]
            assert (receiver["sender_host"], receiver["sender_port"]) == ("pg-master", 5432)
        finally:
            proxy.unroute_all(c, wait=False)
            c.down(wipe=True)


def test_switchover_and_back_keeps_every_row(cluster):
    """A planned switchover to the replica and back, on either backend: on compose the old primary's
    container (pg-master) restarts as a replica (its role file), then becomes the primary again."""
    insert(cluster.primary, "before the switchover")
    cluster.switchover("replica1")
    assert cluster.primary.name == "replica1" and cluster.node("primary").role == "replica"
    insert(cluster.primary, "on replica1 as the primary")
    cluster.wait_replayed()
    assert rows_with(cluster.node("primary"), "on replica1 as the primary") == 1
    cluster.switchover("primary")
    assert cluster.primary.name == "primary" and cluster.node("replica1").role == "replica"
    insert(cluster.primary, "back on primary")
    cluster.wait_replayed()
    r = cluster.node("replica1")
    assert [rows_with(r, t) for t in ("before the switchover", "on replica1 as the primary", "back on primary")] == [1, 1, 1]
