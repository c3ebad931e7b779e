"""Chapter 08 as containers: compose/docker-compose.ha.yml (profile ha) on the private Docker
engine — three etcd members with auth on, three PostgreSQL nodes run by Patroni in the HA image
(compose/ha.Dockerfile), HAProxy in front, everything published on 127.0.0.1 only.

One cluster for the module, in the order a student would see it: Patroni elects one leader with
two streaming replicas; a write through HAProxy's read-write port lands on the leader and shows on
the read-only port; etcd refuses a read without credentials; every port is bound to 127.0.0.1;
`docker kill` of the leader's container gets a new leader once its lease (ttl 20 s) runs out, and
writes go on through the same port; `down -v` leaves no container, network or volume.

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

from lab.backends.compose import compose_cli
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
# The cluster on the private engine

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


class HACompose:
    def __init__(self, engine, workdir: Path, owner: str):
        self.engine, self.owner = engine, owner
        self.project = f"pglab-ha-{uuid.uuid4().hex[:6]}"
        self.secrets = {k: secrets.token_urlsafe(18) for k in SECRETS}
        self.ports = dict(zip(PORT_VARS, ports.claim_free_ports(len(PORT_VARS), owner)))
        self.env_file = write_env(workdir / "ha.env", {
            **self.secrets, **{k: str(v) for k, v in self.ports.items()},
            "LAB_HA_IMAGE": engine.images["ha"], "LAB_NODE_IMAGE": engine.images["node"],
            "LAB_CONTAINER_PREFIX": f"{self.project}-"})

    def compose(self, *args, timeout=300, check=True) -> subprocess.CompletedProcess:
        cmd = [*compose_cli(), "--env-file", str(self.env_file), "-f", str(HA_FILE), "-p", self.project,
               "--profile", "ha", *args]
        r = subprocess.run(cmd, env=self.engine.env(), cwd=REPO / "compose", capture_output=True, text=True,
                           timeout=timeout)
        assert not check or r.returncode == 0, f"{' '.join(args)}: {r.stderr[-3000:]}"
        return r

    def rest(self, node: str) -> str:
        return f"http://127.0.0.1:{self.ports[f'PG_HA{node[-1]}_REST_PORT']}"

    def cluster(self, via=NODES) -> "list[dict] | None":
        for node in via:
            code, body = http("GET", self.rest(node) + "/cluster", timeout=2)
            if code == 200 and isinstance(body, dict):
                return body.get("members", [])
        return None

    def wait_roles(self, timeout: float, via=NODES, not_leader=None, replicas=2) -> dict:
        """Until one leader (not ``not_leader``) runs and ``replicas`` replicas stream."""
        deadline, members = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            members = self.cluster(via) or []
            leaders = [m["name"] for m in members if m.get("role") == "leader" and m.get("state") == "running"]
            streaming = [m["name"] for m in members if m.get("role") == "replica" and m.get("state") == "streaming"]
            if len(leaders) == 1 and leaders[0] != not_leader and len(streaming) >= replicas:
                return {"leader": leaders[0], "replicas": sorted(streaming)}
            time.sleep(0.5)
        raise AssertionError(f"no leader with {replicas} streaming replicas within {timeout:.0f} s: {members}\n"
                             + self.logs())

    def logs(self, tail=25) -> str:
        return self.compose("logs", "--no-color", "--tail", str(tail), check=False).stdout[-6000:]

    def connect(self, port_var: str, dbname="crypto_db"):
        return psycopg2.connect(host="127.0.0.1", port=self.ports[port_var], user="admin", dbname=dbname,
                                password=self.secrets["POSTGRES_PASSWORD"], connect_timeout=5)

    def node_of(self, address: str) -> str:
        """The node whose container has ``address`` on the project's network."""
        if not getattr(self, "_ips", None):
            self._ips = {}
            for node in NODES:
                nets = json.loads(self.engine.docker("inspect", "--format", "{{json .NetworkSettings.Networks}}",
                                                     f"{self.project}-{node}").stdout)
                self._ips.update({n["IPAddress"]: node for n in nets.values() if n.get("IPAddress")})
        return self._ips[address]

    def who(self, port_var: str) -> tuple:
        """(node, in recovery) of the server behind a published port."""
        conn = self.connect(port_var)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT host(inet_server_addr()), pg_is_in_recovery()")
                addr, recovery = cur.fetchone()
                return self.node_of(addr), recovery
        finally:
            conn.close()

    def write(self, message: str) -> str:
        conn = self.connect("HAPROXY_RW_PORT")
        try:
            with conn, conn.cursor() as cur:
                cur.execute("INSERT INTO test_replication (mensaje) VALUES (%s)", (message,))
                cur.execute("SELECT host(inet_server_addr()), pg_is_in_recovery()")
                addr, recovery = cur.fetchone()
                assert not recovery
                return self.node_of(addr)
        finally:
            conn.close()

    def seen_on(self, port_var: str, message: str, timeout=15.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = self.connect(port_var)
                try:
                    with conn.cursor() as cur:
                        cur.execute("SELECT host(inet_server_addr()), pg_is_in_recovery(), "
                                    "count(*) FROM test_replication WHERE mensaje = %s", (message,))
                        addr, recovery, n = cur.fetchone()
                        name = self.node_of(addr)
                finally:
                    conn.close()
                if n == 1:
                    assert recovery, f"{port_var} answered from {name}, not a replica"
                    return name
            except psycopg2.OperationalError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{message!r} not on {port_var} within {timeout:.0f} s")
            time.sleep(0.2)

    def project_things(self) -> dict:
        label = f"label=com.docker.compose.project={self.project}"
        out = {}
        for kind, cmd in (("containers", ["ps", "-aq"]), ("networks", ["network", "ls", "-q"]),
                          ("volumes", ["volume", "ls", "-q"])):
            r = self.engine.docker(*cmd, "--filter", label, timeout=60)
            out[kind] = r.stdout.split()
        return out


def cluster_test(f):  # the cluster tests run PostgreSQL in containers of the private engine
    return pytest.mark.integration(pytest.mark.compose(f))


@pytest.fixture(scope="module")
def ha(docker_engine, tmp_path_factory):
    from engine import ensure_ha_image

    t0 = time.monotonic()
    ensure_ha_image(docker_engine, REPO)
    owner = f"test-ha-compose-{os.getpid()}"
    c = HACompose(docker_engine, tmp_path_factory.mktemp("ha-compose"), owner)
    c.image_seconds = time.monotonic() - t0
    try:
        t = time.monotonic()
        c.compose("up", "-d", timeout=600)
        c.roles = c.wait_roles(timeout=150)
        c.up_seconds = time.monotonic() - t
        yield c
    finally:
        try:
            c.compose("down", "-v", "--timeout", "10", check=False, timeout=300)
        finally:
            ports.release(list(c.ports.values()), owner)


@cluster_test
def test_one_leader_two_streaming_replicas(ha):
    assert ha.roles["leader"] in NODES and len(ha.roles["replicas"]) == 2
    assert stat.S_IMODE(os.stat(ha.env_file).st_mode) == 0o600
    # each node's own port reaches that node, in the role Patroni says
    for node in NODES:
        name, recovery = ha.who(f"PG_HA{node[-1]}_PORT")
        assert name == node and recovery == (node != ha.roles["leader"])
    # the one-shot etcd-auth finished, and the job left no secret in the image
    state = ha.engine.docker("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}",
                             f"{ha.project}-etcd-auth").stdout.split()
    assert state == ["exited", "0"]
    image_env = ha.engine.docker("image", "inspect", "--format", "{{json .Config.Env}}", ha.engine.images["ha"]).stdout
    assert not [s for s in ha.secrets.values() if s in image_env]
    print(f"\nHA image ready in {ha.image_seconds:.1f} s; cluster up in {ha.up_seconds:.1f} s: {ha.roles}")


@cluster_test
def test_a_write_through_haproxy_reaches_the_leader_and_a_replica(ha):
    msg = f"ha-compose {uuid.uuid4().hex}"
    assert ha.write(msg) == ha.roles["leader"]
    assert ha.seen_on("HAPROXY_RO_PORT", msg) in ha.roles["replicas"]
    for node in ha.roles["replicas"]:
        assert ha.seen_on(f"PG_HA{node[-1]}_PORT", msg) == node
    assert ha.who("HAPROXY_RW_PORT") == (ha.roles["leader"], False)
    code, stats = http("GET", f"http://127.0.0.1:{ha.ports['HAPROXY_STATS_PORT']}/;csv")
    assert code == 200
    up = {(r.split(",")[0], r.split(",")[1]) for r in stats.splitlines() if ",UP," in r}
    assert ("primary", ha.roles["leader"]) in up and {("replicas", n) for n in ha.roles["replicas"]} <= up, stats


@cluster_test
def test_etcd_refuses_a_read_without_credentials(ha):
    key = base64.b64encode(b"/service/lab/leader").decode()
    for var in ("ETCD1_PORT", "ETCD2_PORT", "ETCD3_PORT"):
        url = f"http://127.0.0.1:{ha.ports[var]}"
        code, body = http("POST", url + "/v3/kv/range", {"key": key})
        assert code != 200 or "kvs" not in body, (var, code, body)
        assert "user name is empty" in str(body) or "permission denied" in str(body) or code in (401, 403), body
        code, auth = http("POST", url + "/v3/auth/authenticate",
                          {"name": "root", "password": "not-" + ha.secrets["ETCD_ROOT_PASSWORD"]})
        assert code != 200, auth
        code, auth = http("POST", url + "/v3/auth/authenticate",
                          {"name": "root", "password": ha.secrets["ETCD_ROOT_PASSWORD"]})
        assert code == 200 and auth.get("token"), auth
        code, body = http("POST", url + "/v3/kv/range", {"key": key}, token=auth["token"])
        assert code == 200, body
        assert base64.b64decode(body["kvs"][0]["value"]).decode() == ha.roles["leader"]


@cluster_test
def test_every_published_port_is_on_127_0_0_1(ha):
    ids = ha.project_things()["containers"]
    bound = {}
    for cid in ids:
        info = json.loads(ha.engine.docker("inspect", cid).stdout)[0]
        for inner, binds in (info["NetworkSettings"]["Ports"] or {}).items():
            for b in binds or []:
                bound[int(b["HostPort"])] = (info["Name"].lstrip("/"), inner, b["HostIp"])
        assert list(info["NetworkSettings"]["Networks"]) == [f"{ha.project}_distribuidos-net"]
    assert set(bound) == set(ha.ports.values()), bound
    assert {ip for _, _, ip in bound.values()} == {"127.0.0.1"}, bound


@cluster_test
def test_killing_the_leaders_container_elects_another(ha):
    old = ha.roles["leader"]
    survivors = [n for n in NODES if n != old]
    t0 = time.monotonic()
    ha.engine.docker("kill", f"{ha.project}-{old}")
    roles = ha.wait_roles(timeout=75, via=survivors, not_leader=old, replicas=1)
    took = time.monotonic() - t0
    assert roles["leader"] in survivors
    print(f"\n{old} killed: {roles['leader']} leads after {took:.1f} s (ttl 20 s)")
    assert took < 60
    # HAProxy follows: the same read-write port writes on the new leader, the replica sees it
    msg = f"after-failover {uuid.uuid4().hex}"
    deadline = time.monotonic() + 15
    while True:
        try:
            assert ha.write(msg) == roles["leader"]
            break
        except psycopg2.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    assert ha.seen_on("HAPROXY_RO_PORT", msg) == roles["replicas"][0]


@cluster_test
def test_down_v_leaves_nothing(ha):
    ha.compose("down", "-v", "--timeout", "10", timeout=300)
    assert ha.project_things() == {"containers": [], "networks": [], "volumes": []}
