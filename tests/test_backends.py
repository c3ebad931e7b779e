"""The Backend contract (lab/backends/base.py): each backend class has every operation of the
protocol with its signature, and one behavioural suite runs against every backend: the local one
(processes) and the compose one (containers on a private Docker engine, where this machine can run
one).  A new kind of node (servers run by an HA manager) joins by adding its name to BACKENDS."""
from __future__ import annotations

import hashlib
import inspect
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest

import lab
import lab.backends.compose_apps
import lab.backends.pgconf
import lab.pgadmin
import lab.services.pgadmin
import lab.system.paths
from lab import faults, proxy
from lab.backends import CLASSES, Backend
from lab.lsn import parse_lsn
from lab.system import ports
from lab.system.home import LabHome

from docker_fixtures import compose_env
from labtest.helpers import insert, postmasters, rows_with

# each backend's name; the tests that take one start servers (integration)
BACKENDS = [pytest.param("local", marks=pytest.mark.integration),
            pytest.param("compose", marks=[pytest.mark.compose, pytest.mark.integration])]


# --- the contract itself (no server) ------------------------------------------------------
def _operations() -> list:
    return sorted(n for n, v in inspect.getmembers(Backend) if not n.startswith("_") and callable(v))


def _params(fn) -> list:
    """What a caller relies on: each parameter's name, kind and default (annotations are the
    protocol's documentation, not repeated in every implementation)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def test_the_protocol_names_the_operations_the_lab_uses():
    ops = _operations()
    for op in ("prepare_state", "node_spec", "describe", "storage_of", "pid", "logs", "ensure_port", "start",
               "wait_ready", "stop", "stop_many", "kill", "promote", "prepare_replica", "create_primary",
               "adopt", "retarget", "follow", "tool", "remove_data", "after_down", "wipe", "pause", "resume",
               "is_paused", "cut", "heal", "is_cut", "primary_address", "proxy_address", "host_dir",
               "server_file", "write_server_file", "remove_server_file", "directory_out", "directory_in",
               "app_node", "start_app", "stop_app"):
        assert op in ops
    for op in ops:  # each documented once, in the protocol
        assert inspect.getdoc(getattr(Backend, op)), op


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_each_backend_has_every_operation_with_the_protocols_signature(name):
    cls = CLASSES[name]
    assert cls.name == name and isinstance(cls.max_replicas, int) and cls.max_replicas >= 1
    for op in _operations():
        assert hasattr(cls, op), f"{cls.__name__} has no {op}"
        assert _params(getattr(cls, op)) == _params(getattr(Backend, op)), f"{cls.__name__}.{op}"
    assert isinstance(inspect.getattr_static(cls, "prepare_state"), staticmethod)


# --- the same behaviour on every backend ---------------------------------------------------
@pytest.fixture(params=BACKENDS)
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


@pytest.mark.integration
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
    # this test's own project only: under `make test` the engine also runs the compose notebooks' nodes
    prefix = f"pglab-{hashlib.sha1(str(LabHome(home).path).encode()).hexdigest()[:8]}-"
    client = docker_engine.client()
    assert [c.name for c in client.containers.list(all=True) if c.name.startswith(prefix)] == []


@pytest.mark.integration
@pytest.mark.compose
def test_compose_without_a_daemon_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    with pytest.raises(lab.LabError, match="no Docker daemon answers.*backend='local'"):
        lab.up(replicas=1, home=tmp_path / "lab", quiet=True, backend="compose")
    assert not (tmp_path / "lab" / "state.json").exists()


@pytest.mark.integration
@pytest.mark.compose
def test_compose_pgadmin_gets_every_node_and_no_password(docker_engine, tmp_path):
    """The ``pgadmin`` service, live: where dpage/pgadmin4 cannot be pulled, the image of
    compose/pgadmin.Dockerfile (same contract), chosen by LAB_PGADMIN_IMAGE.  It answers on
    127.0.0.1, the generated login works over HTTP, pg-master and pg-replica are listed (by service
    name, no password stored), and a query through pgAdmin's query tool runs on the replica."""
    from engine import DockerdError, ensure_pgadmin_image
    extra, why = {}, None
    try:
        extra["LAB_PGADMIN_IMAGE"] = ensure_pgadmin_image(docker_engine, lab.system.paths.REPO)
    except DockerdError as e:  # e.g. no PyPI for the wheels: then only the official image would do
        why = str(e).splitlines()[0]
    with compose_env(docker_engine, **extra):
        cluster = lab.up(replicas=1, home=tmp_path / "lab", quiet=True, backend="compose")
        try:
            _check_compose_pgadmin(cluster, why)
        finally:
            cluster.down(wipe=True)


def _check_compose_pgadmin(cluster, why=None):
    servers = lab.services.pgadmin.servers(cluster)["Servers"]  # as the backend's pgAdmin reaches them
    assert [(s["Name"], s["Host"], s["Port"]) for s in servers.values()] == [
        ("pg-master", "pg-master", 5432), ("pg-replica", "pg-replica", 5432)]
    assert cluster.credentials["password"] not in str(servers)
    import docker.errors
    try:
        cluster.backend.client.images.get(lab.backends.compose_apps.pgadmin_image())
    except docker.errors.ImageNotFound:
        with pytest.raises(lab.LabError, match="pgAdmin image .* cannot be pulled"):
            lab.pgadmin.start(cluster, quiet=True)
        pytest.skip(f"{lab.backends.compose_apps.pgadmin_image()} is not in the private engine and no registry "
                    f"answers here; the offline image could not be built either ({why})")
    info = lab.pgadmin.start(cluster, quiet=True)
    assert info.url == f"http://127.0.0.1:{info.port}" and info.running
    assert info.email == "student@lab.example.com" and len(info.password) >= 16
    container = cluster.backend.client.containers.get(cluster._state["compose"]["prefix"] + "pgadmin")
    assert container.image.tags == [lab.backends.compose_apps.pgadmin_image()]
    assert [b["HostIp"] for b in container.attrs["HostConfig"]["PortBindings"]["80/tcp"]] == ["127.0.0.1"]
    # no password in the servers.json the container reads, none in the image
    servers_json = cluster.backend.pgadmin_servers_file.read_text()
    assert cluster.credentials["password"] not in servers_json and info.password not in servers_json
    image_env = cluster.backend.client.images.get(lab.backends.compose_apps.pgadmin_image()).attrs["Config"]["Env"]
    assert not [e for e in image_env if "PASSWORD" in e]

    from test_pgadmin import Client  # the local pgAdmin's test client: what a browser does
    client = Client(info.url)
    assert client.login(info.email, info.password), "pgAdmin refused the generated login"
    assert not Client(info.url).login(info.email, info.password + "x")
    listed = client.servers()
    assert {"pg-master", "pg-replica"} <= set(listed), sorted(listed)
    for name in ("pg-master", "pg-replica"):
        s = listed[name]
        assert (s["host"], s["port"], s["username"], s["db"]) == (name, 5432, "admin", "crypto_db")
        assert s["group-name"] == lab.services.pgadmin.GROUP
    # pgAdmin asks for the password (no password file in the container); given it, it connects
    password = cluster.credentials["password"]
    for name, standby in (("pg-master", False), ("pg-replica", True)):
        s = listed[name]
        r = client.call(f"/browser/server/connect/{s['gid']}/{s['id']}",
                        body={"password": password, "save_password": False})
        assert r["success"] == 1, r
        assert r["data"]["in_recovery"] is standby, (name, r["data"])
    # a query through pgAdmin's query tool, on the replica's database
    s = listed["pg-replica"]
    dbs = {d["label"]: d["_id"] for d in client.call(f"/browser/database/nodes/{s['gid']}/{s['id']}/")["data"]}
    trans = 4_000_000 + os.getpid() % 1_000_000
    r = client.call(f"/sqleditor/initialize/sqleditor/{trans}/{s['gid']}/{s['id']}/{dbs['crypto_db']}",
                    body={"dbname": "crypto_db"})
    assert r["success"] == 1, r
    r = client.call(f"/sqleditor/query_tool/start/{trans}",
                    body={"sql": "SELECT pg_is_in_recovery(), current_setting('cluster_name'), "
                                 "inet_server_port()", "explain_plan": None})
    assert r["success"] == 1, r
    deadline = time.monotonic() + 30
    while True:
        polled = client.call(f"/sqleditor/poll/{trans}")["data"]
        if polled["status"] != "Busy" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert polled["status"] == "Success", polled
    replica = next(n for n in cluster.nodes if n.role == lab.Role.REPLICA)  # its cluster_name: the node's name
    assert [list(row) for row in polled["result"]] == [[True, replica.name, 5432]], polled["result"]
    assert lab.pgadmin.stop(cluster, quiet=True) is True
    with pytest.raises(docker.errors.NotFound):
        cluster.backend.client.containers.get(container.name)


def test_storage_shows_where_the_data_is_and_wipe_removes_it(cluster):
    df = cluster.storage()
    assert df["node"].tolist() == ["primary", "replica1"] and df["exists"].all()
    cluster.down(wipe=True)
    assert not cluster.storage()["exists"].any()


@pytest.mark.integration
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


def test_wait_ready_answers_for_a_running_node_and_raises_for_a_killed_one(cluster):
    replica = cluster.node("replica1")
    spec = replica.spec
    assert cluster.backend.wait_ready(spec) == replica.pid
    pid = cluster.backend.kill(spec)
    assert pid and not cluster.backend.pid(spec) and replica.state == "stopped"
    with pytest.raises(lab.LabError):
        cluster.backend.wait_ready(spec, timeout=5)
    assert cluster.backend.kill(spec) is None  # nothing left to kill
    replica.start()
    cluster.wait_streaming()


def test_pause_freezes_a_node_and_resume_thaws_it(cluster):
    replica = cluster.node("replica1")
    b = cluster.backend
    assert not b.is_paused(replica.spec) and b.resume(replica.spec) == "was not paused"
    try:
        assert replica.pause(max_seconds=30).startswith("replica1: paused (")
        assert b.is_paused(replica.spec) and faults.is_paused(replica)
        with pytest.raises(psycopg2.OperationalError):  # frozen: the login times out
            psycopg2.connect(replica.dsn, connect_timeout=2).close()
    finally:
        account = replica.resume()
    assert account.startswith("replica1: resumed") and not b.is_paused(replica.spec)
    assert replica.scalar("SELECT 1") == 1
    faults.pause(replica)
    cluster.down()  # a paused node is thawed to stop: nothing is left behind
    assert leftovers(cluster) == []
    with pytest.raises(lab.NotRunning):
        replica.pause()


def test_cut_and_heal_a_replica(cluster):
    replica = cluster.node("replica1")
    app = replica.spec.get("app_name", replica.name)
    try:
        assert not faults.is_cut(cluster, "replica1")
        assert faults.cut(cluster, "replica1").startswith("replica1: ")
        assert faults.is_cut(cluster, "replica1")
        insert(cluster.primary, "written during the cut")
        target = cluster.primary.scalar("SELECT pg_current_wal_lsn()::text")
        time.sleep(0.5)
        replayed = cluster.primary.scalar("SELECT replay_lsn::text FROM pg_stat_replication WHERE application_name = %s",
                                          (app,), dbname="postgres")
        assert replayed is None or parse_lsn(replayed) < parse_lsn(target)  # seen from the primary
        assert faults.heal(cluster, "replica1").startswith("replica1: ")
        assert not faults.is_cut(cluster, "replica1")
        cluster.wait_replayed(target, timeout=90)
        assert rows_with(replica, "written during the cut") == 1
    finally:
        proxy.unroute_all(cluster)
    with pytest.raises(lab.LabError, match="cut a replica"):
        faults.cut(cluster, "primary")


def test_a_replica_streams_through_a_proxy_and_back(cluster):
    """lab.proxy on any backend: the proxy listens where the replica reaches this host (127.0.0.1, or
    the compose network's gateway: a container cannot reach the host's 127.0.0.1)."""
    b = cluster.backend
    replica = cluster.node("replica1")
    try:
        link = proxy.route(cluster, "replica1", latency_ms=25)
        assert link.proxy.listen == b.proxy_address()
        receiver = replica.sql("SELECT status, sender_host, sender_port FROM pg_stat_wal_receiver").iloc[0]
        assert (receiver["status"], receiver["sender_host"], receiver["sender_port"]) == (
            "streaming", b.proxy_address(), link.proxy.port)
        insert(cluster.primary, "via proxy")
        cluster.wait_replayed()
        assert rows_with(replica, "via proxy") == 1 and link.proxy.stats()["bytes_up"] > 0
        link.cut()
        insert(cluster.primary, "while cut")
        assert rows_with(replica, "while cut") == 0
        link.heal()
        cluster.wait_replayed(timeout=60)
        assert rows_with(replica, "while cut") == 1
        proxy.unroute(cluster, "replica1")
        receiver = replica.sql("SELECT sender_host, sender_port FROM pg_stat_wal_receiver").iloc[0]
        assert (receiver["sender_host"], receiver["sender_port"]) == b.primary_address()
    finally:
        proxy.unroute_all(cluster, wait=False)


def test_files_beside_a_node_go_in_and_out(cluster):
    """Server files, and directories written or read by a node's tools (base backups use them)."""
    b = cluster.backend
    spec = cluster.primary.spec
    path = b.write_server_file(spec, "lab-test.txt", "secret line\n")
    assert path == b.server_file(spec, "lab-test.txt") and path in b.where(spec, path)
    r = cluster.primary.tool("stat", "-c", "%a", path)
    assert r.stdout.strip() == "600"
    assert cluster.primary.tool("cat", path).stdout == "secret line\n"
    assert b.remove_server_file(spec, "lab-test.txt", what="test file").startswith("removed lab-test.txt")
    assert b.remove_server_file(spec, "lab-test.txt", what="test file").startswith("no test file")

    root = b.host_dir() / "lab-test-dir"
    root.mkdir(mode=0o700)
    b.give_to_server(root)
    dest = root / "out"
    try:
        with b.directory_out(spec, dest) as target:
            cluster.primary.tool("mkdir", "-p", target)
            cluster.primary.tool("sh", "-c", 'echo written beside the node > "$0/f"', target)
        assert (dest / "f").read_text() == "written beside the node\n"
        (dest / "g").write_text("written on the host\n")
        with b.directory_in(spec, dest) as where:
            assert cluster.primary.tool("cat", f"{where}/g").stdout == "written on the host\n"
        with pytest.raises(RuntimeError):  # a failure inside leaves nothing at dest
            with b.directory_out(spec, root / "failed") as target:
                raise RuntimeError("the tool failed")
        assert not (root / "failed").exists() or not any((root / "failed").iterdir())
    finally:
        shutil.rmtree(root, ignore_errors=True)
