"""The compose tier's foundation: a private Docker engine on this machine (tests/engine/).

The tests marked ``compose`` need root, docker.io, docker-compose and debootstrap; they are
skipped with the reason otherwise (``engine.availability()``).  The rest are pure.
"""
from __future__ import annotations

import io
import os
import re
import secrets
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import psycopg2
import pytest

from docker_fixtures import host_net_state, net_state_changes, require_compose_tier
from engine import DockerdError, PrivateDockerd, availability, debian_mirror, docker_cli, reap_stale
from engine import app_key, host, node_key, sweep
from lab.system.process import pid_alive, process_tree

REPO = Path(__file__).resolve().parent.parent


# --- pure ---------------------------------------------------------------------------------
def test_mirror_from_deb822_and_one_line_sources(tmp_path, monkeypatch):
    monkeypatch.delenv("LAB_DEBIAN_MIRROR", raising=False)
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "google.list").write_text("deb [signed-by=/x.gpg] https://packages.example.com/apt cloud-sdk-bookworm main\n")
    (d / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.example.org/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "Types: deb\nURIs: http://mirror.example.org/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main contrib\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    assert debian_mirror(tmp_path) == "http://mirror.example.org/debian"
    (d / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text("# old style\ndeb-src http://src.example.org/debian bookworm main\n"
                                           "deb http://old.example.org/debian/ trixie main\n")
    assert debian_mirror(tmp_path) == "http://old.example.org/debian/"
    (tmp_path / "sources.list").write_text("deb http://archive.ubuntu.com/ubuntu noble main\n")
    assert debian_mirror(tmp_path) is None  # Ubuntu's archive has no bookworm
    monkeypatch.setenv("LAB_DEBIAN_MIRROR", "http://set.example.org/debian")
    assert debian_mirror(tmp_path) == "http://set.example.org/debian"


def test_availability_gives_a_reason():
    ok, why = availability()
    assert isinstance(ok, bool) and why


def test_availability_asks_the_labs_compose_finder(monkeypatch):
    """No Compose CLI for the lab's compose backend (lab.backends.compose.compose_cli): no tier."""
    monkeypatch.setattr(host, "compose_cli", lambda: None)
    ok, why = host.availability()
    assert not ok
    if why.startswith("missing"):  # on a host that passes the earlier checks (Linux, root, Debian)
        assert "docker-compose" in why


def test_node_key_follows_the_image_inputs(tmp_path):
    for rel, text in (("compose/Dockerfile", "FROM x\n"), (".dockerignore", "*\n"),
                      ("master/entrypoint.sh", "#!/bin/sh\n"), ("replica/entrypoint.sh", "#!/bin/sh\n")):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    k = node_key(tmp_path, "b1")
    assert node_key(tmp_path, "b1") == k
    assert node_key(tmp_path, "b2") != k
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "x.ipynb").write_text("{}")
    assert node_key(tmp_path, "b1") == k  # not an input of the image
    (tmp_path / "master" / "entrypoint.sh").chmod(0o755)
    assert node_key(tmp_path, "b1") != k
    k = node_key(tmp_path, "b1")
    (tmp_path / "replica" / "entrypoint.sh").write_text("#!/bin/sh\necho changed\n")
    assert node_key(tmp_path, "b1") != k


def test_app_key_follows_its_own_inputs_and_ignores_bytecode(tmp_path):
    for rel in ("compose/app.Dockerfile", "compose/app-requirements.txt", "app/main.py", "master/x.sh"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    k = app_key(tmp_path, "b1")
    assert k != node_key(tmp_path, "b1")
    (tmp_path / "app" / "__pycache__").mkdir()
    (tmp_path / "app" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"x")
    (tmp_path / "app" / "old.pyc").write_bytes(b"x")
    (tmp_path / "master" / "x.sh").write_text("changed")  # a node input, not an app input
    assert app_key(tmp_path, "b1") == k
    (tmp_path / "app" / "main.py").write_text("changed")
    assert app_key(tmp_path, "b1") != k


# --- a real engine ------------------------------------------------------------------------
def _ours(root: Path) -> dict[int, str]:
    """Every process whose command line names the engine's root (dockerd, containerd, shims)."""
    out = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(root) in cmd:
                out[int(p.name)] = cmd[:160]
    return out


def _tiny_image_tar() -> bytes:
    """A root file system holding only /usr/bin/sleep and the libraries it loads (for the
    engine tests that need a container, not PostgreSQL: no image load of seconds)."""
    sleep = "/usr/bin/sleep"
    libs = re.findall(r"(/\S+) \(0x", subprocess.run(["ldd", sleep], capture_output=True, text=True).stdout)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", dereference=True) as tar:
        for path in [sleep, *libs]:
            tar.add(path, arcname=path.lstrip("/"))
    return buf.getvalue()


@pytest.mark.compose
def test_failed_start_raises_with_the_log_and_leaves_nothing():
    require_compose_tier()
    engine = PrivateDockerd(extra_flags=["--no-such-flag"])
    with pytest.raises(DockerdError, match="(?s)end of its log.*no-such-flag"):
        engine.start()
    assert engine.leftovers() == []
    assert not engine.root.exists()
    engine.stop()  # again: nothing to do


@pytest.mark.compose
def test_stop_leaves_no_process_mount_cgroup_bridge_or_firewall_change():
    require_compose_tier()
    before = host_net_state()
    with PrivateDockerd() as engine:
        root = engine.root
        assert engine.host == f"unix://{root}/docker.sock" and engine.ping()
        imp = subprocess.run([docker_cli(), "import", "--change", 'CMD ["/usr/bin/sleep", "600"]',
                              "-", "pglab/tiny:test"], input=_tiny_image_tar(), env=engine.env(),
                             capture_output=True, timeout=60)
        assert imp.returncode == 0, imp.stderr
        engine.docker("network", "create", "leftover-net")
        bridge = "br-" + engine.docker("network", "inspect", "-f", "{{.Id}}", "leftover-net").stdout.strip()[:12]
        engine.docker("run", "-d", "--name", "sleeper", "--network", "leftover-net",
                      "-p", "127.0.0.1::5432", "pglab/tiny:test")
        port = engine.docker("port", "sleeper", "5432").stdout.split()[0]
        assert port.startswith("127.0.0.1:")
        # What stop() must clean is really there: shim, docker-proxy, overlay + netns mounts, a bridge.
        procs = " ".join(sweep.processes_of(root, engine.cgroup).values())
        assert "containerd-shim" in procs and "sleep 600" in procs
        assert any("docker-proxy" in " ".join(sweep.cmdline(p)) for p in process_tree(engine.pid)[1:])
        kinds = {fs for m, fs in sweep.mountinfo() if m.startswith(str(root) + "/")}
        assert {"overlay", "nsfs"} <= kinds
        veths = os.listdir(f"/sys/class/net/{bridge}/brif")  # the container's end on the host
        assert veths
        assert sweep.cgroup_dirs(engine.cgroup)
        dockerd_pid = engine.pid
    engine.stop()  # twice is fine
    assert not pid_alive(dockerd_pid)
    assert _ours(root) == {}
    assert sweep.mounts_under(root) == []
    assert str(root) not in subprocess.run(["mount"], capture_output=True, text=True).stdout
    assert sweep.cgroup_dirs(engine.cgroup) == []
    assert not {bridge, *veths} & set(os.listdir("/sys/class/net"))
    assert not root.exists()
    assert engine.leftovers() == []
    assert net_state_changes(before, host_net_state()) == []


_OWNER_THAT_DIES = r"""
import os, subprocess, sys
sys.path[:0] = [sys.argv[1], os.path.join(sys.argv[1], "tests")]  # lab, engine, test_dockerd
from engine import PrivateDockerd, docker_cli
from test_dockerd import _tiny_image_tar
e = PrivateDockerd().start()
subprocess.run([docker_cli(), "import", "--change", 'CMD ["/usr/bin/sleep", "600"]', "-", "tiny"],
               input=_tiny_image_tar(), env=e.env(), check=True, capture_output=True)
net = e.docker("network", "create", "n1").stdout.strip()
e.docker("run", "-d", "--stop-timeout", "1", "--network", "n1", "-p", "127.0.0.1::80", "tiny")
print(e.root, e.cgroup, "br-" + net[:12], flush=True)
os.kill(os.getpid(), 9)
"""


@pytest.mark.compose
def test_an_engine_whose_owner_was_killed_is_reaped():
    require_compose_tier()
    r = subprocess.run([sys.executable, "-c", _OWNER_THAT_DIES, str(REPO)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == -9, r.stderr
    root, cgroup, bridge = r.stdout.split()
    root = Path(root)
    assert root.is_dir() and bridge in os.listdir("/sys/class/net")
    assert root in reap_stale(root.parent)
    assert _ours(root) == {}
    assert sweep.processes_of(root, cgroup) == {}
    assert sweep.mounts_under(root) == []
    assert sweep.cgroup_dirs(cgroup) == []
    assert bridge not in os.listdir("/sys/class/net")
    assert not root.exists()


@pytest.mark.compose
def test_engine_answers_and_runs_the_node_image(docker_engine):
    assert docker_engine.host.startswith("unix://") and docker_engine.ping()
    assert docker_engine.env()["DOCKER_HOST"] == docker_engine.host
    version = docker_engine.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    assert re.match(r"\d+\.\d+", version)
    out = docker_engine.docker(
        "run", "--rm", "--network", "none", docker_engine.images["node"], "sh", "-c",
        "postgres --version; id -un; echo $PGDATA; test -x /lab/master/entrypoint.sh && "
        "test -x /lab/replica/entrypoint.sh && echo scripts-ok").stdout.split("\n")
    assert re.match(r"postgres \(PostgreSQL\) 15\.", out[0]), out
    assert out[1:4] == ["postgres", "/var/lib/postgresql/data/pgdata", "scripts-ok"], out
    # The SDK (what the compose backend uses for kill/pause/network faults) talks to it too.
    client = docker_engine.client()
    try:
        assert client.ping()
        assert docker_engine.images["node"] in [t for i in client.images.list() for t in i.tags]
    finally:
        client.close()


@pytest.fixture
def docker_scratch(docker_engine):
    """(label, prefix): put ``--label <label>`` on every container and network of the test and
    name them ``<prefix>-...``; they are all removed afterwards."""
    tag = secrets.token_hex(4)
    label = f"org.pglab.test={tag}"
    yield label, f"t{tag}"
    for kind in ("container", "network"):
        ids = docker_engine.docker(kind, "ls", "-aq" if kind == "container" else "-q",
                                   "--filter", f"label={label}", check=False).stdout.split()
        if ids:
            rm = ["rm", "-f", "-v"] if kind == "container" else ["rm"]
            docker_engine.docker(kind, *rm, *ids, check=False)


def _start_primary(engine, scratch, publish=True) -> tuple[str, str, str]:
    """A primary of the node image, ``<prefix>-master`` on a new network ``<prefix>-net`` (alias
    pg-master, as in the compose file); returns (container name, network, admin password)."""
    label, prefix = scratch
    name, network = f"{prefix}-master", f"{prefix}-net"
    engine.docker("network", "create", "--label", label, network)
    password, repl = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    args = ["run", "-d", "--name", name, "--label", label, "--network", network, "--network-alias", "pg-master",
            "-e", f"POSTGRES_PASSWORD={password}", "-e", f"REPLICATION_PASSWORD={repl}"]
    if publish:
        args += ["-p", "127.0.0.1::5432"]
    engine.docker(*args, engine.images["node"], "/lab/master/entrypoint.sh", "-c", f"cluster_name={name}")
    return name, network, password


@pytest.mark.compose
@pytest.mark.integration
def test_a_port_published_on_loopback_reaches_postgres(docker_engine, docker_scratch):
    master, _, password = _start_primary(docker_engine, docker_scratch)
    binding = docker_engine.docker("port", master, "5432").stdout.split()
    assert binding and all(b.startswith("127.0.0.1:") for b in binding), binding
    port = int(binding[0].rsplit(":", 1)[1])
    deadline, last = time.monotonic() + 60, None
    while True:
        try:
            conn = psycopg2.connect(host="127.0.0.1", port=port, user="admin", password=password,
                                    dbname="crypto_db", connect_timeout=3)
            break
        except psycopg2.OperationalError as e:  # initdb and init-master.sh still running
            last = e
            if time.monotonic() > deadline:
                logs = docker_engine.docker("logs", master, check=False)
                pytest.fail(f"no PostgreSQL on 127.0.0.1:{port}: {last}\n{logs.stdout}{logs.stderr}")
            time.sleep(0.2)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('public.test_replication') IS NOT NULL, "
                        "(SELECT count(*) FROM test_replication), current_setting('cluster_name')")
            assert cur.fetchone() == (True, 2, master)
    finally:
        conn.close()


@pytest.mark.compose
@pytest.mark.integration
def test_containers_on_a_user_network_reach_each_other_by_name(docker_engine, docker_scratch):
    label, _ = docker_scratch
    master, net, password = _start_primary(docker_engine, docker_scratch, publish=False)
    # From a second container: by container name, and by the alias the compose file uses.
    script = ("i=0; until pg_isready -q -h \"$1\" -t 2; do i=$((i+1)); [ $i -lt 150 ] || exit 9; sleep 0.2; done; "
              "psql -h \"$1\" -U admin -d crypto_db -Atc 'SELECT count(*) FROM test_replication' && "
              "psql -h pg-master -U admin -d postgres -Atc 'SELECT current_setting($$cluster_name$$)'")
    r = docker_engine.docker("run", "--rm", "--label", label, "--network", net, "-e", f"PGPASSWORD={password}",
                             docker_engine.images["node"], "sh", "-c", script, "sh", master,
                             check=False, timeout=120)
    logs = docker_engine.docker("logs", master, check=False)
    assert r.returncode == 0, f"{r.stdout}{r.stderr}\nserver log:\n{logs.stdout}{logs.stderr}"
    assert r.stdout.split() == ["2", master]
