"""Chapter 08 as containers: compose/docker-compose.ha.yml (profile ha) on the private Docker
engine, driven by the lab (``lab.ha.up(backend="compose")``) — three etcd members with auth on,
three PostgreSQL nodes run by Patroni in the HA image (compose/ha.Dockerfile), HAProxy in front,
everything published on 127.0.0.1 only.

One cluster for the module, in the order a student would see it: Patroni elects one leader with
two streaming replicas; HAProxy's read-write port reaches the leader, its read-only port a
replica; etcd refuses a read without credentials; every port is bound to 127.0.0.1 and etcd is on
a network of its own; patronictl runs in a node's container; PostgreSQL-only and Patroni-only
crashes, a cut from etcd and ``up()`` putting it all back; a machine crash (``docker kill``) under
synchronous mode fails over by lease expiry without losing an acknowledged write; ``down(wipe=True)``
leaves no container, network or volume.

The first tests need no engine: the secrets are required (`${VAR:?}`), the base compose file does
not need the HA variables, and master/patroni-config.py says what the local backend's
``patroni_config`` says.
"""
from __future__ import annotations

import base64
import json
import os
import re
import secrets
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psycopg2
import pytest

import lab
import lab.autofailover
import lab.ha
from lab.backends.compose import compose_cli
from lab.errors import LabError
from lab.system import ports

REPO = Path(__file__).resolve().parent.parent
HA_FILE = REPO / "compose" / "docker-compose.ha.yml"
BASE_FILE = REPO / "compose" / "docker-compose.yml"
NODES = ("pg-ha1", "pg-ha2", "pg-ha3")
SERVICES = ("etcd1", "etcd2", "etcd3", "etcd-auth", *NODES, "haproxy")
SECRETS = ("POSTGRES_PASSWORD", "REPLICATION_PASSWORD", "PATRONI_REST_PASSWORD", "ETCD_ROOT_PASSWORD")
PORT_VARS = ("ETCD1_PORT", "ETCD2_PORT", "ETCD3_PORT", "PG_HA1_PORT", "PG_HA1_REST_PORT", "PG_HA2_PORT",
             "PG_HA2_REST_PORT", "PG_HA3_PORT", "PG_HA3_REST_PORT", "HAPROXY_RW_PORT", "HAPROXY_RO_PORT",
             "HAPROXY_STATS_PORT")


def write_env(path: Path, values: dict) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# test_ha_compose: generated secrets, never commit\n")
        f.writelines(f"{k}={v}\n" for k, v in values.items())
    return path


def compose_config(env_file: Path, *files: Path) -> subprocess.CompletedProcess:
    cli = compose_cli()
    if not cli:
        pytest.skip("no Docker Compose CLI (docker compose v2 or docker-compose)")
    args = [a for f in files for a in ("-f", str(f))]
    env = {k: v for k, v in os.environ.items() if k not in SECRETS + PORT_VARS}
    return subprocess.run([*cli, "--env-file", str(env_file), *args, "--profile", "ha", "config"],
                          capture_output=True, text=True, timeout=60, env=env, cwd=REPO / "compose")


# ----------------------------------------------------------------------------------------------
# No engine: the file's contract, and one configuration for both backends

@pytest.mark.compose
def test_every_secret_and_port_is_required(tmp_path):
    full = {**{k: secrets.token_urlsafe(12) for k in SECRETS}, **{k: str(20000 + i) for i, k in enumerate(PORT_VARS)}}
    r = compose_config(write_env(tmp_path / "ok.env", full), HA_FILE)
    assert r.returncode == 0, r.stderr
    published = re.findall(r"^\s*- (\S+):(\d+):\d+/tcp$", r.stdout, re.M)
    assert sorted(int(p) for _, p in published) == sorted(range(20000, 20000 + len(PORT_VARS))), r.stdout
    assert {ip for ip, _ in published} == {"127.0.0.1"}
    for var in (*SECRETS, "PG_HA2_REST_PORT", "HAPROXY_RW_PORT"):
        r = compose_config(write_env(tmp_path / f"no-{var}.env", {k: v for k, v in full.items() if k != var}), HA_FILE)
        assert r.returncode != 0 and "missing - the lab writes" in (r.stderr + r.stdout), (var, r.stderr)


@pytest.mark.compose
def test_the_base_file_does_not_need_the_ha_variables(tmp_path):
    """What the compose backend writes for chapters 00-07 (no HA variable) still loads the base file."""
    base = {"POSTGRES_PASSWORD": "x" * 12, "REPLICATION_PASSWORD": "y" * 12, "PGADMIN_PASSWORD": "z" * 12,
            "APP_API_TOKEN": "t" * 24, "PG_MASTER_PORT": "20001", "PG_REPLICA_PORT": "0"}
    r = compose_config(write_env(tmp_path / "base.env", base), BASE_FILE)
    assert r.returncode == 0, r.stderr
    assert "etcd" not in r.stdout and "patroni" not in r.stdout.lower()


def test_container_patroni_config_matches_the_local_backend(tmp_path):
    from lab.backends.patroni import DEFAULT_DCS, master_parameters

    env = {"PATH": os.environ["PATH"], "NODE_NAME": "pg-ha2", "PGDATA": "/var/lib/postgresql/data/pgdata",
           **{k: "s3cret'\"x" for k in ("POSTGRES_PASSWORD", "REPLICATION_PASSWORD", "REST_PASSWORD",
                                         "ETCD_ROOT_PASSWORD")}}
    out = subprocess.run([sys.executable, str(REPO / "master" / "patroni-config.py")], env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    cfg = json.loads(out.stdout)
    dcs = cfg["bootstrap"]["dcs"]
    assert {k: dcs[k] for k in DEFAULT_DCS} == DEFAULT_DCS
    assert dcs["postgresql"] == {"use_pg_rewind": True, "use_slots": True, "parameters": master_parameters()}
    assert cfg["postgresql"]["basebackup"] == [{"checkpoint": "fast"}]
    assert cfg["watchdog"] == {"mode": "off"}
    assert all(line.endswith("scram-sha-256") for line in cfg["postgresql"]["pg_hba"])
    assert cfg["postgresql"]["connect_address"] == "pg-ha2:5432" and cfg["name"] == "pg-ha2"
    assert cfg["postgresql"]["authentication"]["superuser"]["password"] == "s3cret'\"x"
    # the local backend builds its nodes' configuration with the same generator: only where things
    # are differs (addresses, ports, paths, pg_hba's network, etcd through the relays, log files)
    from types import SimpleNamespace

    from lab.backends.patroni import PatroniBackend
    fake = SimpleNamespace(state={"superuser": "admin", "password": "s3cret'\"x", "replication_user": "replicator",
                                  "replication_password": "s3cret'\"x"},
                           ha={"rest_user": "patroni", "rest_password": "s3cret'\"x", "etcd_user": "root",
                               "etcd_password": "s3cret'\"x", "dcs": {}},
                           bins=SimpleNamespace(bindir=cfg["postgresql"]["bin_dir"]))
    local = PatroniBackend.patroni_config(fake, {"name": "pg-ha2", "dir": "/d/pg-ha2", "port": 21000, "rest": 21001,
                                                 "pgdata": env["PGDATA"], "relay_ports": [1, 2, 3]})
    placed = {("restapi", "listen"), ("restapi", "connect_address"), ("etcd3", "hosts"), ("etcd3", "use_proxies"),
              ("postgresql", "listen"), ("postgresql", "connect_address"), ("postgresql", "pgpass"),
              ("postgresql", "parameters"), ("postgresql", "pg_hba")}

    def flat(d):
        return {(k, k2): v2 for k, v in d.items() for k2, v2 in (v.items() if isinstance(v, dict) else [("", v)])
                if (k, k2) not in placed}
    assert flat(local) == flat(cfg)
    assert [line.rsplit(" ", 2)[0] for line in local["postgresql"]["pg_hba"]] == \
        [line.rsplit(" ", 2)[0] for line in cfg["postgresql"]["pg_hba"]]
    missing = subprocess.run([sys.executable, str(REPO / "master" / "patroni-config.py")],
                             env={k: v for k, v in env.items() if k != "ETCD_ROOT_PASSWORD"},
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode != 0 and "ETCD_ROOT_PASSWORD" in missing.stderr


# ----------------------------------------------------------------------------------------------
# The cluster on the private engine, through the lab

def http(method: str, url: str, body=None, token=None, timeout=3.0):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            code, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        code, raw = e.code, e.read()
    except OSError as e:
        return 0, str(e)
    try:
        return code, json.loads(raw)
    except ValueError:
        return code, raw.decode(errors="replace")


def cluster_test(f):  # the cluster tests run PostgreSQL in containers of the private engine
    return pytest.mark.integration(pytest.mark.compose(f))


@pytest.fixture(scope="module")
def hac(docker_engine, tmp_path_factory):
    from docker_fixtures import compose_env
    from engine import ensure_ha_image

    t0 = time.monotonic()
    ensure_ha_image(docker_engine, REPO)
    image_s = time.monotonic() - t0
    home = tmp_path_factory.mktemp("ha-compose")
    with compose_env(docker_engine, LAB_HA_IMAGE=docker_engine.images["ha"]):
        t = time.monotonic()
        c = lab.ha.up(replicas=2, home=home, quiet=True, backend="compose")
        print(f"\nHA image ready in {image_s:.1f} s; lab.ha.up on containers in {time.monotonic() - t:.1f} s")
        try:
            yield c
        finally:
            lab.ha.down(wipe=True, home=home)


def _healthy(c, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        view = {r.member: (r.role, r.state) for r in c.members().itertuples()}
        roles = [r for r, _ in view.values()]
        if roles.count("leader") == 1 and all(s in ("running", "streaming") for _, s in view.values()) and all(
                s == "streaming" for r, s in view.values() if r != "leader"):
            return view
        assert time.monotonic() < deadline, f"not healthy after {timeout:g} s: {view}"
        time.sleep(0.3)


def _project_things(c, engine) -> dict:
    label = f"label=com.docker.compose.project={c.backend.cfg['project']}"
    return {kind: engine.docker(*cmd, "--filter", label, timeout=60).stdout.split()
            for kind, cmd in (("containers", ["ps", "-aq"]), ("networks", ["network", "ls", "-q"]),
                              ("volumes", ["volume", "ls", "-q"]))}


@cluster_test
def test_the_lab_runs_one_leader_and_two_streaming_replicas_in_containers(hac, docker_engine):
    c = hac
    assert c._state["backend"] == "patroni-compose"
    view = _healthy(c)
    assert sorted(view) == ["pg1", "pg2", "pg3"]
    leader = c.leader
    for name in view:  # each node's published port reaches that node, in the role Patroni says
        assert c.node(name).scalar("SELECT pg_is_in_recovery()", dbname="postgres") == (name != leader)
    env_file = Path(c.backend.cfg["env_file"])
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    state = docker_engine.docker("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}",
                                 c.backend.cfg["prefix"] + "etcd-auth").stdout.split()
    assert state == ["exited", "0"]
    image_env = docker_engine.docker("image", "inspect", "--format", "{{json .Config.Env}}",
                                     docker_engine.images["ha"]).stdout
    secrets_ = [c._state["password"], c._state["replication_password"], c.backend.ha["rest_password"],
                c.backend.ha["etcd_password"]]
    assert not [s for s in secrets_ if s in image_env]
    assert all(s in env_file.read_text() for s in secrets_)


@cluster_test
def test_published_ports_are_on_127_0_0_1_and_etcd_has_a_network_of_its_own(hac, docker_engine):
    c = hac
    project = c.backend.cfg["project"]
    bound, networks = {}, {}
    for cid in _project_things(c, docker_engine)["containers"]:
        info = json.loads(docker_engine.docker("inspect", cid).stdout)[0]
        name = info["Name"].lstrip("/")[len(c.backend.cfg["prefix"]):]
        networks[name] = sorted(n[len(project) + 1:] for n in info["NetworkSettings"]["Networks"])
        for binds in (info["HostConfig"]["PortBindings"] or {}).values():
            for b in binds or []:
                bound[int(b["HostPort"])] = (name, b["HostIp"])
    assert set(bound) == set(c.backend.all_ports()), bound
    assert {ip for _, ip in bound.values()} == {"127.0.0.1"}, bound
    assert all(networks[m] == ["etcd-net"] for m in ("etcd1", "etcd2", "etcd3")), networks
    assert all(networks[n] == ["distribuidos-net", "etcd-net"] for n in ("pg-ha1", "pg-ha2", "pg-ha3")), networks
    assert networks["haproxy"] == ["distribuidos-net"], networks


@cluster_test
def test_haproxy_routes_writes_to_the_leader_and_reads_to_a_replica(hac):
    c = hac
    _healthy(c)
    c.wait_router()
    msg = f"ha-compose {uuid.uuid4().hex}"
    conn = psycopg2.connect(c.rw_dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("INSERT INTO test_replication (mensaje) VALUES (%s)", (msg,))
            cur.execute("SELECT pg_is_in_recovery()")
            assert cur.fetchone()[0] is False
    finally:
        conn.close()
    deadline = time.monotonic() + 15
    while True:
        conn = psycopg2.connect(c.ro_dsn)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_is_in_recovery(), count(*) FROM test_replication WHERE mensaje = %s", (msg,))
                recovery, n = cur.fetchone()
        finally:
            conn.close()
        assert recovery is True
        if n == 1:
            break
        assert time.monotonic() < deadline, "the write did not reach the read-only port"
        time.sleep(0.2)
    rows = c.haproxy()
    assert rows[(rows["port"] == "primary") & (rows["status"] == "UP")]["node"].tolist() == [c.leader]


@cluster_test
def test_etcd_refuses_a_read_without_credentials(hac):
    c = hac
    key = base64.b64encode(b"/service/lab/leader").decode()
    for m, spec in c.backend.ha["etcd"].items():
        url = f"http://127.0.0.1:{spec['client']}"
        code, body = http("POST", url + "/v3/kv/range", {"key": key})
        assert code != 200 or "kvs" not in body, (m, code, body)
        code, auth = http("POST", url + "/v3/auth/authenticate",
                          {"name": "root", "password": "not-" + c.backend.ha["etcd_password"]})
        assert code != 200, auth
    assert c.leader_key()["holder"] == c.leader
    assert c.etcd()["answers"].all() and c.etcd()["is_leader"].sum() == 1


@cluster_test
def test_patronictl_runs_in_a_node_container(hac):
    c = hac
    t = lab.transcript_mark()
    out = str(c.patronictl("list"))
    assert all(n in out for n in ("pg1", "pg2", "pg3")) and "Leader" in out, out
    assert "docker exec -u postgres" in str(lab.transcript(since=t))
    with pytest.raises(LabError) as e:
        c.patronictl("no-such-command")
    assert "\n" not in str(e.value)


@cluster_test
def test_postgres_and_patroni_crashes_a_cut_and_up_putting_it_back(hac):
    c = hac
    _healthy(c)
    replica = next(n for n in c._state["nodes"] if n != c.leader)  # a replica: no failover
    spec = c.node(replica).spec
    old_pg = c.backend.pid(spec)
    c.kill_postgres(replica)
    c.backend.wait_member(spec)  # Patroni starts it again in place
    assert c.backend.pid(spec) not in (None, old_pg)
    pg = c.backend.pid(spec)
    c.kill_patroni(replica)
    assert c.backend.patroni_pid(spec) is None and c.backend.pid(spec) == pg  # PostgreSQL runs on, unmanaged
    other = next(n for n in c._state["nodes"] if n not in (replica, c.leader))
    assert "disconnected from etcd-net" in c.cut_from_etcd(other)
    assert c.links().set_index("node").loc[other, "cut"]
    # PostgreSQL is not cut: the leader still streams to it
    streaming = c.primary.sql("SELECT application_name FROM pg_stat_replication")["application_name"].tolist()
    assert other in streaming
    time.sleep(6)  # Patroni's container noticed its Patroni is gone a while ago
    c2 = lab.ha.up(home=c.home.path.parent, quiet=True)
    assert not c2.links()["cut"].any()
    assert c2.backend.patroni_pid(c2.node(replica).spec)
    _healthy(c2)


@cluster_test
def test_slowing_the_link_to_etcd_works_or_says_why_not(hac):
    c = hac
    why = c.link_shaping()
    name = next(n for n in c._state["nodes"] if n != c.leader)
    if why:
        assert "\n" not in why and "backend='local'" in why
        with pytest.raises(LabError, match="netem|tc"):
            c.etcd_latency(name, 100)
        tuned = lab.autofailover.tuning(c, latencies=(500,), retry_timeouts=(5,), seconds=2)
        assert tuned.empty and tuned.attrs["not_measured"] == why
        lab.autofailover.tuning_figure(tuned)
    else:
        c.etcd_latency(name, 100)
        assert c.links().set_index("node").loc[name, "latency_ms"] == 100
        c.heal_etcd(name)
    assert not c.links()["latency_ms"].any()


@cluster_test
def test_a_machine_crash_under_synchronous_mode_fails_over_and_loses_nothing(hac):
    c = hac
    _healthy(c)
    r = lab.autofailover.crash(c, "machine", synchronous="strict", rate=20, before=1)
    s = r.summary().iloc[0]
    print(f"\nmachine crash on containers (docker kill), synchronous strict: {s['old_leader']} -> "
          f"{s['new_leader']}, RTO {s['rto_s']} s")
    assert s["new_leader"] != s["old_leader"]
    assert s["lost_acknowledged"] == 0 and s["acked_by_old_after_expiry"] == 0 and s["two_primaries_s"] == 0
    _healthy(c)


@cluster_test
def test_down_wipe_leaves_no_container_network_volume_or_port(hac, docker_engine):
    c = hac
    owned = c.backend.all_ports()
    lab.ha.down(wipe=True, home=c.home.path.parent)
    assert _project_things(c, docker_engine) == {"containers": [], "networks": [], "volumes": []}
    assert not [p for p in owned if (ports.read_claim(p) or {}).get("lab_home") == c.home.owner]
    assert not Path(c.backend.cfg["env_file"]).exists()
