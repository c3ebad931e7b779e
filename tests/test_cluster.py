"""The cluster on real PostgreSQL servers: up, replicate, stop/start, re-attach, kill,
promote, down, wipe, two labs side by side, and the errors a student can meet."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

import lab
import lab.backends.pgconf
import lab.system.binaries
import lab.system.home
import lab.system.paths
from lab.errors import LabError, NotRunning, ReadOnlyError, SQLError
from lab.lsn import parse_lsn
from lab.system import ports
from lab.system.osuser import server_user
from lab.system.process import pid_alive, working_in

from labtest.helpers import insert, postmasters, rows_with

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent


def python(code: str, home) -> subprocess.CompletedProcess:
    """Run code in a fresh Python process (a restarted kernel, a second notebook)."""
    env = dict(os.environ, LAB_HOME=str(home))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


# --- the shared cluster (non-destructive tests) ------------------------------------------
def test_primary_writes_reach_the_replica(cluster):
    assert insert(cluster.primary, "Test desde Master") == 1
    cluster.wait_replayed(timeout=10)
    replica = cluster.node("replica1")
    assert rows_with(replica, "Test desde Master") >= 1
    assert replica.scalar("SELECT pg_is_in_recovery()") is True
    assert cluster.primary.scalar("SELECT pg_is_in_recovery()") is False


def test_original_project_objects_exist(cluster):
    roles = cluster.primary.sql("SELECT rolname, rolreplication FROM pg_roles WHERE rolname = 'replicator'")
    assert roles["rolreplication"].tolist() == [True]
    assert cluster.primary.scalar("SELECT current_database()") == "crypto_db"
    initial = cluster.node("replica1").sql("SELECT mensaje FROM test_replication ORDER BY id LIMIT 1")
    assert initial["mensaje"][0] == "Mensaje inicial desde el master"


def test_every_replica_has_its_own_slot(cluster):
    slots = cluster.primary.sql("SELECT slot_name, slot_type, active FROM pg_replication_slots")
    assert slots.to_dict("records") == [{"slot_name": "replica1", "slot_type": "physical", "active": True}]


def test_status_reports_roles_lsns_and_lag(cluster):
    insert(cluster.primary, "status")
    lsn = cluster.wait_replayed()
    df = cluster.status()
    assert list(df.columns) == ["node", "role", "state", "host", "port", "pid", "current_lsn",
                                "received_lsn", "replayed_lsn", "lag_bytes", "lag_s", "upstream"]
    p, r = df.set_index("node").loc["primary"], df.set_index("node").loc["replica1"]
    assert r["upstream"] == "primary" and pd.isna(p["upstream"])
    assert (p["role"], p["state"], r["role"], r["state"]) == ("primary", "running", "replica", "running")
    assert p["host"] == r["host"] == "127.0.0.1" and p["port"] != r["port"]
    assert parse_lsn(r["replayed_lsn"]) >= parse_lsn(lsn)
    assert parse_lsn(p["current_lsn"]) >= parse_lsn(lsn)
    assert r["lag_bytes"] >= 0 and p["pid"] == cluster.primary.pid


def test_servers_listen_on_loopback_with_scram(cluster):
    df = cluster.primary.sql("SELECT name, setting FROM pg_settings WHERE name IN "
                             "('listen_addresses', 'password_encryption', 'unix_socket_directories')")
    settings = dict(zip(df["name"], df["setting"]))
    assert settings == {"listen_addresses": "127.0.0.1", "password_encryption": "scram-sha-256",
                        "unix_socket_directories": ""}
    hba = cluster.primary.sql("SELECT DISTINCT auth_method FROM pg_hba_file_rules")
    assert hba["auth_method"].tolist() == ["scram-sha-256"]
    assert cluster.primary.scalar("SELECT rolpassword LIKE 'SCRAM-SHA-256$%%' FROM pg_authid "
                                  "WHERE rolname = 'replicator'") is True
    state = cluster.home.state_file
    assert oct(state.stat().st_mode & 0o777) == "0o600"


def test_wrong_password_is_refused(cluster):
    import psycopg2
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(host="127.0.0.1", port=cluster.primary.port, user="admin", password="admin",
                         dbname="crypto_db", connect_timeout=5)


def test_write_to_replica_gives_postgres_read_only_error(cluster):
    before = cluster.node("replica1").scalar("SELECT count(*) FROM test_replication")
    with pytest.raises(ReadOnlyError) as e:
        insert(cluster.node("replica1"), "nope")
    msg = str(e.value)
    assert "cannot execute INSERT in a read-only transaction" in msg
    assert "send writes to cluster.primary" in msg and "\n" not in msg
    assert cluster.node("replica1").scalar("SELECT count(*) FROM test_replication") == before


def test_sql_error_is_one_line_and_cluster_untouched(cluster):
    with pytest.raises(SQLError) as e:
        cluster.primary.sql("SELECT * FROM no_such_table")
    assert str(e.value) == 'primary: relation "no_such_table" does not exist'
    assert e.value.sqlstate == "42P01"
    assert cluster.primary.scalar("SELECT 1") == 1
    with pytest.raises(LabError, match="empty query"):
        cluster.primary.sql("  ")


def test_sql_returns_dataframes_and_takes_params(cluster):
    df = cluster.primary.sql("SELECT %s::int AS a, %s::text AS b", (7, "x"))
    assert isinstance(df, pd.DataFrame) and df.to_dict("records") == [{"a": 7, "b": "x"}]
    assert cluster.primary.sql("CREATE TABLE IF NOT EXISTS t_empty (i int)").empty
    assert cluster.primary.execute("INSERT INTO t_empty SELECT generate_series(1, 5)") == 5


def test_sqlalchemy_url_works(cluster):
    import sqlalchemy
    engine = sqlalchemy.create_engine(cluster.node("replica1").url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT pg_is_in_recovery()")).scalar() is True
    finally:
        engine.dispose()


def test_set_reloads_and_says_when_a_restart_is_needed(cluster, capsys):
    df = cluster.primary.set(work_mem="8MB", max_connections=45)
    got = df.set_index("name")
    assert got.loc["work_mem", "setting"] == "8192" and not got.loc["work_mem", "pending_restart"]
    assert got.loc["max_connections", "pending_restart"]
    assert "max_connections take(s) effect after a restart" in capsys.readouterr().out
    cluster.primary.set(work_mem=None, max_connections=None)
    assert cluster.primary.scalar("SHOW work_mem") == "4MB"
    with pytest.raises(LabError, match="unknown setting"):
        cluster.primary.set(no_such_setting=1)


def test_stopped_replica_catches_up_after_restart(cluster):
    replica = cluster.node("replica1")
    replica.stop()
    assert replica.state == "stopped" and replica.pid is None
    with pytest.raises(NotRunning, match="replica1 is stopped: start it"):
        replica.sql("SELECT 1")
    for i in range(50):
        insert(cluster.primary, f"while replica1 was down {i}")
    # the slot keeps the WAL the replica still needs; its walsender notices the stop a moment later
    deadline = time.monotonic() + 10
    while cluster.primary.scalar("SELECT active FROM pg_replication_slots WHERE slot_name = 'replica1'"):
        assert time.monotonic() < deadline, "the slot stayed active after replica1 stopped"
        time.sleep(0.01)
    replica.start()
    cluster.wait_replayed(timeout=20)
    assert replica.scalar("SELECT count(*) FROM test_replication WHERE mensaje LIKE 'while replica1 was down%%'") == 50
    assert "continuing replication" in replica.logs(100)


def test_add_and_remove_a_replica(cluster):
    r2 = cluster.add_replica()
    assert r2.name == "replica2" and r2.role == "replica" and r2.is_running
    insert(cluster.primary, "for replica2")
    cluster.wait_replayed()
    assert rows_with(r2, "for replica2") == 1
    assert "replica2" in cluster.primary.sql("SELECT slot_name FROM pg_replication_slots")["slot_name"].tolist()
    data = Path(r2.spec["pgdata"])
    port = r2.port
    cluster.remove_replica("replica2")
    assert not data.exists()
    assert "replica2" not in cluster.primary.sql("SELECT slot_name FROM pg_replication_slots")["slot_name"].tolist()
    assert port not in ports.claims_of(cluster.home.owner)
    with pytest.raises(LabError, match="no node 'replica2'"):
        cluster.node("replica2")
    with pytest.raises(LabError, match="replica2 is no longer in this cluster"):  # the Node kept in a variable
        r2.logs()
    with pytest.raises(LabError, match="bad replica name"):
        cluster.add_replica("Bad Name")


def test_reattach_from_a_fresh_process(cluster):
    ports_before = {n.name: (n.port, n.pid) for n in cluster.nodes}
    code = ("import lab; c = lab.up(quiet=True); "
            "print({n.name: (n.port, n.pid) for n in c.nodes}); "
            "print(lab.attach().node('replica1').scalar('SELECT count(*) FROM test_replication'))")
    r = python(code, cluster.home.path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert eval(lines[0]) == ports_before  # same servers: nothing restarted
    assert int(lines[1]) == cluster.node("replica1").scalar("SELECT count(*) FROM test_replication")


# --- destructive tests: a cluster each ----------------------------------------------------
def test_kill_then_start_recovers_committed_rows(fresh_cluster):
    c = fresh_cluster
    insert(c.primary, "committed before the crash")
    pid = c.primary.pid
    c.primary.kill()
    assert c.primary.state == "stopped"
    assert not pid_alive(pid)
    c.primary.start()
    assert rows_with(c.primary, "committed before the crash") == 1
    assert "database system was interrupted" in c.primary.logs(200) or "not properly shut down" in c.primary.logs(200)
    c.wait_streaming(timeout=20)
    insert(c.primary, "after the crash")
    c.wait_replayed(timeout=20)
    assert rows_with(c.node("replica1"), "after the crash") == 1


def test_down_keeps_data_and_up_restarts_on_the_same_ports(fresh_cluster):
    c = fresh_cluster
    insert(c.primary, "survives down")
    before = {n.name: n.port for n in c.nodes}
    c.down()
    assert all(n.state == "stopped" for n in c.nodes)
    assert ports.claims_of(c.home.owner) == []
    c2 = lab.up(home=c.home.path, quiet=True)
    assert {n.name: n.port for n in c2.nodes} == before
    assert rows_with(c2.primary, "survives down") == 1
    c2.wait_replayed()
    assert rows_with(c2.node("replica1"), "survives down") == 1


def test_wipe_removes_everything(tmp_path, claims_dir):
    home = tmp_path / "lab"
    c = lab.up(replicas=1, home=home, quiet=True)
    pids = [n.pid for n in c.nodes]
    data_root = c.data_root
    assert data_root.exists() and ports.claims_of(c.home.owner)
    c.down(wipe=True)
    assert not data_root.exists()
    assert not (home / "state.json").exists()
    assert ports.claims_of(str(home)) == []
    assert not any(pid_alive(pid) for pid in pids)
    with pytest.raises(LabError, match="no cluster in"):
        lab.attach(home)
    lab.down(wipe=True, home=home)  # idempotent


def test_up_after_a_crash_of_every_server(fresh_cluster):
    """A killed kernel and crashed servers: stale pids in postmaster.pid, claims left over."""
    c = fresh_cluster
    insert(c.primary, "before everything died")
    for n in c.nodes:
        n.kill()
    c2 = lab.up(home=c.home.path, quiet=True)
    assert all(n.is_running for n in c2.nodes)
    c2.wait_replayed(timeout=20)
    assert rows_with(c2.node("replica1"), "before everything died") == 1


def test_kernel_killed_during_up_leaves_a_cluster_up_can_finish(tmp_path):
    home = tmp_path / "lab"
    p = subprocess.Popen([sys.executable, "-c", "import lab; lab.up(replicas=2, quiet=True)"],
                         env=dict(os.environ, LAB_HOME=str(home)))
    # kill it part-way (while the replicas are being made)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (home / "state.json").exists():
        time.sleep(0.01)
    time.sleep(0.6)
    p.send_signal(signal.SIGKILL)
    p.wait()
    try:
        _up_again_replicates(home)
    finally:
        lab.down(wipe=True, home=home)


def _up_again_replicates(home) -> None:
    """After a kernel died in lab.up(): up() again finishes (or starts over) and replicates."""
    c = lab.up(replicas=2, home=home, quiet=True)
    assert len(c.replicas) == 2 and all(n.is_running for n in c.nodes)
    insert(c.primary, "after the kernel died")
    c.wait_replayed(timeout=20)
    assert all(rows_with(r, "after the kernel died") == 1 for r in c.replicas)


def test_kernel_killed_while_a_replica_is_made_leaves_nothing_working_in_the_data(tmp_path):
    """The same, killed at a chosen moment: while replica1's base backup runs (replica/entrypoint.sh
    and pg_basebackup run in their own session, so they outlive the kernel and write on)."""
    home = tmp_path / "lab"
    p = subprocess.Popen([sys.executable, "-c", "import lab; lab.up(replicas=2, quiet=True)"],
                         env=dict(os.environ, LAB_HOME=str(home)))
    uids = {os.geteuid(), server_user().uid}
    data_root, making_replica = None, []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and not making_replica and p.poll() is None:
            if data_root is None and (home / "state.json").exists():
                try:
                    data_root = Path(json.loads((home / "state.json").read_text())["data_root"])
                except (ValueError, KeyError):
                    pass
            if data_root is not None:
                making_replica = [pid for pid in working_in(data_root / "replica1", uids)]
            time.sleep(0.005)
        assert making_replica, "lab.up never got to making replica1"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    try:
        _up_again_replicates(home)
        assert not [pid for pid in making_replica if pid_alive(pid)]  # the dead kernel's workers were ended
    finally:
        lab.down(wipe=True, home=home)
    assert working_in(data_root, uids) == [] and not data_root.exists()


def test_wipe_ends_what_still_works_in_the_data_root(fresh_cluster):
    """A process still writing in the data root (as a killed kernel's base backup would) is ended
    before the root is removed, so nothing comes back and the next lab.up() finds it empty."""
    from lab.backends.local import working_in
    c = fresh_cluster
    root = c.data_root
    loop = 'while :; do mkdir -p "$0/replica9/pgdata"; sleep 0.01; done'
    # not our child (a kernel that died left it): a shell that starts it in the background and exits
    subprocess.run(["sh", "-c", 'setsid sh -c "$1" "$0" >/dev/null 2>&1 &', str(root), loop], check=True)
    deadline = time.monotonic() + 10
    while not (root / "replica9").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert working_in(root, {os.geteuid()})
    c.down(wipe=True)
    assert not root.exists() and working_in(root, {os.geteuid()}) == []
    time.sleep(0.1)
    assert not root.exists()


def test_promote_makes_the_replica_the_primary(fresh_cluster):
    c = fresh_cluster
    insert(c.primary, "before promotion")
    c.wait_replayed()
    c.primary.stop()
    c.node("replica1").promote()
    assert c.primary.name == "replica1"
    assert c.node("primary").role == "former primary"
    assert insert(c.primary, "on the new primary") == 1
    assert rows_with(c.primary, "before promotion") == 1
    timeline = c.primary.scalar("SELECT timeline_id FROM pg_control_checkpoint()")
    assert timeline >= 1
    with pytest.raises(LabError, match="only a replica can be promoted"):
        c.node("replica1").promote()
    # no standby settings left on the new primary: a base backup of it would copy them
    assert c.primary.scalar("SHOW primary_slot_name") == ""
    assert c.primary.scalar("SHOW primary_conninfo") == ""
    auto = c.primary.tool("cat", f"{c.primary.pgdata}/postgresql.auto.conf").stdout
    assert "primary_slot_name" not in auto and "primary_conninfo" not in auto


def test_two_labs_side_by_side(tmp_path):
    a = lab.up(replicas=1, home=tmp_path / "a", quiet=True)
    try:
        b = lab.up(replicas=0, home=tmp_path / "b", quiet=True)
        try:
            ports_a = {n.port for n in a.nodes}
            ports_b = {n.port for n in b.nodes}
            assert not ports_a & ports_b
            assert a._state["password"] != b._state["password"]
            insert(a.primary, "only in a")
            assert rows_with(b.primary, "only in a") == 0
            assert set(ports.claims_of(str(tmp_path / "a"))) == ports_a
        finally:
            b.down(wipe=True)
        assert a.primary.scalar("SELECT 1") == 1
    finally:
        a.down(wipe=True)


def test_failed_start_tears_down_what_it_started(tmp_path):
    """A replica that cannot be made: the primary that did start is stopped and removed."""
    real = lab.system.binaries.find().bindir
    broken = Path(tempfile.mkdtemp(prefix="pglab-test-bin-"))  # the server user must reach it
    os.chmod(broken, 0o755)
    for tool in real.iterdir():
        (broken / tool.name).symlink_to(tool)
    (broken / "pg_basebackup").unlink()
    (broken / "pg_basebackup").write_text("#!/bin/sh\necho 'pg_basebackup: error: disk on fire' >&2\nexit 1\n")
    (broken / "pg_basebackup").chmod(0o755)
    home = tmp_path / "lab"
    env = dict(os.environ, LAB_HOME=str(home), PG_BIN=str(broken))
    code = ("import lab\ntry:\n    lab.up(replicas=1, quiet=True)\nexcept lab.LabError as e:\n    print('ERR', e)\n")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "ERR replica1: could not prepare the replica" in r.stdout, r.stdout + r.stderr
    assert not (home / "state.json").exists()
    assert ports.claims_of(str(home)) == []
    assert not (home / "data").exists() or not any((home / "data").iterdir())
    data_root = lab.system.home.LabHome(home).default_data_root(lambda p: False)
    assert not data_root.exists()
    assert not [d for d in postmasters().values() if str(data_root) in d]
    shutil.rmtree(broken)


def test_bad_arguments_are_clear_errors(tmp_path):
    for bad in (-1, 6, 1.5, "2", True):
        with pytest.raises(LabError, match="replicas must be a whole number from 0 to 5"):
            lab.up(replicas=bad, home=tmp_path / "lab")
    assert not (tmp_path / "lab" / "state.json").exists()


def test_command_line_up_status_down(tmp_path):
    home = str(tmp_path / "lab")
    run = lambda *a: subprocess.run([sys.executable, "-m", "lab", "--home", home, *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=120, cwd=REPO)
    r = run("up", "--replicas", "1")
    try:
        assert r.returncode == 0, r.stderr
        assert "primary" in r.stdout and "replica1" in r.stdout
        r = run("status")
        assert r.returncode == 0 and "streaming" not in r.stderr and "running" in r.stdout
        r = run("down")
        assert r.returncode == 0 and "data kept" in r.stdout
        r = run("status")
        assert "stopped" in r.stdout
    finally:
        r = run("down", "--wipe")
    assert r.returncode == 0 and "wiped" in r.stdout
    r = run("status")
    assert r.returncode == 1 and "no cluster in" in r.stderr and "lab.up()" in r.stderr


def test_doctor_reports_binaries_and_lab_home(tmp_path):
    d = lab.doctor(home=tmp_path / "lab")
    text = repr(d)
    assert "PostgreSQL server" in text and lab.system.binaries.find().version in text
    assert str(tmp_path / "lab") in text and "Docker" in text
    assert d.ok


def test_replica_with_lost_data_is_rebuilt_from_the_primary(fresh_cluster):
    c = fresh_cluster
    replica = c.node("replica1")
    replica.stop()
    shutil.rmtree(replica.spec["pgdata"])  # a broken or deleted data directory
    insert(c.primary, "written while replica1 had no data")
    replica.start()
    c.wait_replayed(timeout=20)
    assert rows_with(replica, "written while replica1 had no data") == 1
    assert "empty data directory: taking a base backup" in replica.logs(200)


def test_primary_with_lost_data_is_a_clear_error_and_nothing_else_changes(fresh_cluster):
    c = fresh_cluster
    c.primary.stop()
    (Path(c.primary.spec["pgdata"]) / "PG_VERSION").rename(Path(c.primary.spec["pgdata"]) / "PG_VERSION.bak")
    with pytest.raises(LabError, match="holds no database: reset the cluster"):
        c.primary.start()
    assert c.node("replica1").is_running  # untouched
    (Path(c.primary.spec["pgdata"]) / "PG_VERSION.bak").rename(Path(c.primary.spec["pgdata"]) / "PG_VERSION")
    c.primary.start()
    assert c.primary.scalar("SELECT count(*) > 0 FROM test_replication") is True


# --- replica/entrypoint.sh: which path it takes, on real data -----------------------------
def test_broken_replica_data_is_rebuilt(fresh_cluster):
    c = fresh_cluster
    replica = c.node("replica1")
    replica.stop()
    (Path(replica.spec["pgdata"]) / "global" / "pg_control").unlink()
    insert(c.primary, "after the breakage")
    replica.start()
    c.wait_replayed(timeout=20)
    assert rows_with(replica, "after the breakage") == 1
    assert "the data directory is broken" in replica.logs(300)


def test_replica_of_another_cluster_is_rebuilt(fresh_cluster, tmp_path):
    """A different system identifier: the data is another cluster's; re-sync from this primary."""
    c = fresh_cluster
    os.environ["LAB_CACHE"] = str(tmp_path / "cache")  # a fresh initdb: its own system identifier
    try:
        other = lab.up(replicas=0, home=tmp_path / "other", quiet=True)
    finally:
        os.environ.pop("LAB_CACHE")
    try:
        replica = c.node("replica1")
        replica.stop()
        insert(other.primary, "only in the other cluster")
        # replica1's data is a copy of c; make it replicate from `other` instead
        c.backend.prepare_replica(replica.spec, other._state, other.primary.spec)
        log = replica.logs(300)
        assert "belongs to another cluster" in log and "base backup done" in log
        control = replica.tool("pg_controldata", replica.pgdata).stdout
        sysid = other.primary.scalar("SELECT system_identifier FROM pg_control_system()")
        assert f"Database system identifier:           {sysid}" in control
        assert sysid != c.primary.scalar("SELECT system_identifier FROM pg_control_system()")
    finally:
        c.node("replica1").stop()
        other.down(wipe=True)


def test_replica_follows_a_promoted_primary_through_pg_rewind(tmp_path):
    c = lab.up(replicas=2, home=tmp_path / "lab", quiet=True)
    try:
        insert(c.primary, "timeline 1")
        c.wait_replayed()
        c.primary.stop()
        r2 = c.node("replica2")
        r2.stop()  # before the promotion: a running replica2 could follow onto timeline 2 by itself
        c.node("replica1").promote()  # timeline 2 starts on replica1
        insert(c.primary, "timeline 2")
        r2.start()  # entrypoint: timeline 1 here, 2 on the primary -> pg_rewind -R
        assert "timeline 1 here, 2 on the primary" in r2.logs(300)
        assert "pg_rewind done" in r2.logs(300)
        c.wait_replayed(timeout=30)
        assert rows_with(r2, "timeline 2") == 1
        slots = c.primary.sql("SELECT slot_name, active FROM pg_replication_slots WHERE slot_name = 'replica2'")
        assert slots["active"].tolist() == [True]
    finally:
        c.down(wipe=True)


def test_former_primary_is_not_overwritten_unless_asked(tmp_path):
    c = lab.up(replicas=1, home=tmp_path / "lab", quiet=True)
    try:
        c.primary.stop()
        c.node("replica1").promote()
        insert(c.primary, "on the new primary")
        old = c.node("primary")
        with pytest.raises(LabError, match="could not prepare the replica"):
            c.backend.prepare_replica(old.spec, c._state, c.primary.spec)
        assert "refusing to overwrite it" in old.logs(50)
        assert (Path(old.spec["pgdata"]) / "PG_VERSION").exists()  # untouched
        c.backend.prepare_replica(old.spec, c._state, c.primary.spec, rejoin=True)
        assert "pg_rewind done" in old.logs(100)
        assert (Path(old.spec["pgdata"]) / "standby.signal").exists()
    finally:
        c.down(wipe=True)


def test_node_tool_runs_postgres_tools_beside_the_data(cluster):
    out = cluster.primary.tool("pg_controldata", cluster.primary.pgdata).stdout
    assert "Database cluster state:               in production" in out
    assert "in archive recovery" in cluster.node("replica1").tool("pg_controldata",
                                                                  cluster.node("replica1").pgdata).stdout
    with pytest.raises(LabError, match="pg_controldata failed"):
        cluster.primary.tool("pg_controldata", "/nonexistent")


def test_a_base_backup_taken_by_hand_becomes_a_replica(fresh_cluster):
    c = fresh_cluster
    backup = c.data_root / "my-backup"
    env = c.backend.bins.env()
    c.primary.tool("pg_basebackup", "-D", backup, "-R", "-X", "stream", "-c", "fast",
                   "-d", f"host=127.0.0.1 port={c.primary.port} user=replicator",
                   env={"PGPASSWORD": c.credentials["replication_password"]})
    assert (backup / "standby.signal").exists() and env
    r = c.add_replica("replica_manual", from_backup=backup)
    assert not backup.exists() and r.is_running
    insert(c.primary, "to the hand-made replica")
    c.wait_replayed(timeout=20)
    assert rows_with(r, "to the hand-made replica") == 1
    with pytest.raises(LabError, match="is not a base backup taken with -R"):
        c.add_replica("replica_bad", from_backup=c.data_root / "nothing-here")
    assert "replica_bad" not in [n.name for n in c.nodes]


def test_attempt_returns_the_error_message_instead_of_raising(cluster):
    out = lab.attempt(cluster.node("replica1").execute, "INSERT INTO test_replication (mensaje) VALUES ('x')")
    assert out.startswith("ReadOnlyError: replica1: cannot execute INSERT in a read-only transaction")
    assert lab.attempt(cluster.primary.scalar, "SELECT 41 + 1") == 42
    with pytest.raises(ZeroDivisionError):  # only the lab's own errors are turned into messages
        lab.attempt(lambda: 1 / 0)


def test_a_port_taken_outside_the_claims_moves_the_node(fresh_cluster):
    """A program that is no lab (it holds no claim) listens on a stopped replica's port: start()
    moves the replica to another claimed port instead of failing, and it streams again."""
    c = fresh_cluster
    r = c.node("replica1")
    r.stop()
    taken = r.port
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", taken))
        s.listen()
        r.start()
        moved = c.node("replica1").port
        assert moved != taken and ports.read_claim(moved)["lab_home"] == ports.read_claim(c.primary.port)["lab_home"]
        assert ports.read_claim(taken) is None  # the old claim is given up
        c.wait_streaming(names=["replica1"])
        assert c.node("replica1").scalar("SELECT pg_is_in_recovery()") is True
