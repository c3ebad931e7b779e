"""A class on the container spawner: a real JupyterHub on this host, each student's server in a
container of the single-user image (hub/Dockerfile) on the private Docker engine, the lab's local
backend inside (PostgreSQL as the container's unprivileged user).

Two students, alice and bob, driven through the hub's REST API and their own kernels (kernel
REST + websocket execute, as a notebook runs): each brings up a one-replica cluster and writes a
row; each container has its memory and CPU limit; bob cannot reach alice's PostgreSQL; stopping
alice's server through the hub runs the stop hook (every node shut down cleanly, not killed) and
removes her container; starting it again finds her row and her own edit of a notebook.  The
class runs with ``LAB_LANG=es``: each student's JupyterLab says es_ES through its own API (the
image's language pack, the locale lab/serverhook.py gives a student who has not chosen one).  The
hub, the containers and the class network are removed at the end; the engine's own teardown
checks that nothing of it is left.

Needs the compose tier (root, docker.io, debootstrap: tests/docker_fixtures.py) and the hub
tier (configurable-http-proxy: scripts/ensure-hub.sh); skipped with the reason where either
cannot run.  The image is built once (minutes) and cached as ``hub-<key>.tar``
(tests/engine/hub_image.py).
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from engine.host import docker_cli
from engine.hub_image import ensure_hub_image
from hub_docker_fixtures import HUB_CONFIG, DockerHub, remove_tree
from lab.serverhook import TRANSLATION_SETTINGS

pytestmark = [pytest.mark.hub, pytest.mark.compose, pytest.mark.integration]

REPO = Path(__file__).resolve().parent.parent
STUDENTS = ("alice", "bob")
MEM_LIMIT, CPU_LIMIT = "768M", "0.5"
UP = ("import lab\n"
      "c = lab.up(replicas=1)\n"
      "c.primary.execute('INSERT INTO test_replication (mensaje) VALUES (%s)', ({row!r},))\n"
      "print('primary port', c.primary.port)\n")
COUNT = "print('rows', c.primary.scalar('SELECT count(*) FROM test_replication WHERE mensaje = %s', ({row!r},)))"


def _chp_missing() -> "str | None":
    """Why the hub cannot run here (no configurable-http-proxy), or None."""
    if not HUB_CONFIG.is_file():
        return f"{HUB_CONFIG.relative_to(REPO)} is missing"
    cache = Path(os.environ.get("LAB_CACHE") or Path.home() / ".cache" / "pglab")
    found = [p for p in (os.environ.get("PATH", "").split(os.pathsep) + [str(cache / "hub" / "node_modules" / ".bin")])
             if p and (Path(p) / "configurable-http-proxy").exists()]
    return None if found else "configurable-http-proxy is not installed: run scripts/ensure-hub.sh"


@pytest.fixture(scope="module")
def hub_image(docker_engine):
    return ensure_hub_image(docker_engine, REPO)


@pytest.fixture(scope="module")
def hub(docker_engine, hub_image, tmp_path_factory):
    why = _chp_missing()
    if why:
        pytest.skip(f"hub tier: {why}")
    work = tmp_path_factory.mktemp("hub-docker")
    # a class in Spanish (hub/README.md's LAB_LANG): the kernels' lab and JupyterLab's own menus
    with DockerHub(docker_engine, hub_image, work, mem_limit=MEM_LIMIT, cpu_limit=CPU_LIMIT,
                   extra_env={"LAB_LANG": "es"}) as h:
        h.timings = {}
        h.kernels = {}
        yield h
        for k in h.kernels.values():
            k.close()
    try:
        assert not h.containers(), f"containers left after the hub stopped: {h.containers()}"
        r = docker_engine.docker("network", "inspect", h.network, check=False)
        assert r.returncode != 0, f"the class network {h.network} is left"
    finally:
        remove_tree(work)


def _host_pids(hub, name: str) -> "dict[int, str]":
    """The host's pids of the processes in ``name``'s container, with their command lines."""
    r = hub.engine.docker("top", f"jupyter-{name}", "-eo", "pid,args", timeout=60)
    out = {}
    for line in r.stdout.splitlines()[1:]:
        pid, _, args = line.strip().partition(" ")
        out[int(pid)] = args.strip()
    return out


def _postmasters(pids: "dict[int, str]") -> "dict[int, str]":
    return {p: a for p, a in pids.items() if "postgres" in a.split()[0] and " -D " in f" {a} "}


@pytest.fixture(scope="module")
def clusters(hub):
    """Both students' servers started through the hub, and a one-replica cluster with a row in each."""
    for name in STUDENTS:
        hub.timings[f"spawn {name}"] = hub.start_server(name)
    for name in STUDENTS:
        k = hub.kernels[name] = hub.kernel(name)
        t = time.monotonic()
        out = k.run(UP.format(row=f"row of {name}"))
        hub.timings[f"lab.up {name}"] = time.monotonic() - t
        assert "primary port" in out, out
    return hub


def test_each_student_runs_a_cluster_in_their_own_container(clusters):
    hub = clusters
    for name in STUDENTS:
        out = hub.kernels[name].run("import os, getpass\n" + COUNT.format(row=f"row of {name}") +
                                    "\nprint('user', os.getuid(), getpass.getuser(), os.environ['LAB_HOME'])\n"
                                    "print(c.status()[['role', 'state']].to_string())")
        assert "rows 1" in out, out
        assert "user 1000 jovyan /home/jovyan/.lab" in out, out
        assert out.count("running") >= 2, out  # the primary and its replica
        # the lab home is the class root's directory on the host, the student's own (uid 1000, 0700)
        home = hub.class_root / "homes" / name
        st = home.stat()
        assert (st.st_uid, st.st_mode & 0o777) == (1000, 0o700), (st.st_uid, oct(st.st_mode))
        assert (home / "state.json").is_file()
        assert (hub.class_root / "students" / name / "notebooks" / "00_start_here.ipynb").is_file()
        # JupyterLab in Spanish (LAB_LANG=es): the image's language pack, and es_ES as the locale of
        # a student who never chose one, written in their own settings (their choice wins later)
        packs = hub.http.get(f"/user/{name}/lab/api/translations/")
        assert packs.status_code == 200 and "es_ES" in packs.json()["data"], (packs.status_code, packs.text[:500])
        setting = hub.http.get(f"/user/{name}/lab/api/settings/@jupyterlab/translation-extension:plugin")
        assert setting.status_code == 200, setting.text[:500]
        assert setting.json()["settings"].get("locale") == "es_ES", setting.json()["raw"]
        seeded = hub.class_root / "students" / name / ".jupyter" / "lab" / "user-settings" / TRANSLATION_SETTINGS
        assert seeded.stat().st_uid == 1000, seeded
    print("\n" + "\n".join(f"{k}: {v:.1f} s" for k, v in hub.timings.items()))


def test_each_container_has_its_memory_and_cpu_limit(clusters):
    for name in STUDENTS:
        info = clusters.container_of(name)
        hc = info["HostConfig"]
        assert hc["Memory"] == 768 * 2**20, hc["Memory"]
        cpus = hc["NanoCpus"] / 1e9 if hc.get("NanoCpus") else hc["CpuQuota"] / hc["CpuPeriod"]
        assert cpus == pytest.approx(0.5), (hc.get("NanoCpus"), hc.get("CpuQuota"), hc.get("CpuPeriod"))
        assert hc["CapDrop"] == ["ALL"] and hc["PidsLimit"] > 0
        assert info["Config"]["User"] in ("1000:100", "1000"), info["Config"]["User"]
        # ... and the engine applied them: the container's cgroup says so
        cid = info["Id"]
        mem = subprocess.run([docker_cli() or "docker", "exec", cid, "sh", "-c",
                              "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes"],
                             env=clusters.engine.env(), capture_output=True, text=True, timeout=60)
        assert mem.stdout.strip() == str(768 * 2**20), mem


def test_a_student_cannot_reach_another_students_postgresql(clusters):
    hub = clusters
    alice = json.loads((hub.class_root / "homes" / "alice" / "state.json").read_text())
    ports = sorted(n["port"] for n in alice["nodes"].values())
    alice_ip = hub.container_of("alice")["NetworkSettings"]["Networks"][hub.network]["IPAddress"]
    code = ("import socket\n"
            "def try_(host, port):\n"
            "    try:\n"
            "        socket.create_connection((host, port), timeout=3).close(); return 'open'\n"
            "    except OSError as e:\n"
            "        return type(e).__name__\n"
            f"for port in {ports!r}:\n"
            f"    print(port, try_('127.0.0.1', port), try_({alice_ip!r}, port))\n"
            "import os; print('homes', sorted(os.listdir('/home')), os.path.exists('/home/jovyan/.lab/state.json'))\n")
    out = hub.kernels["bob"].run(code)
    for port in ports:
        line = next(x for x in out.splitlines() if x.startswith(f"{port} "))
        assert "open" not in line, f"bob reaches alice's PostgreSQL: {out}"
    # alice's servers do answer, in her own container
    assert "rows 1" in hub.kernels["alice"].run(COUNT.format(row="row of alice"))
    # bob's container holds his lab home alone
    assert "homes ['jovyan'] True" in out, out


def _idle_pss(hub, name: str) -> float:
    total = 0
    for pid in _host_pids(hub, name):
        try:
            total += psutil.Process(pid).memory_full_info().pss
        except psutil.Error:
            pass
    return total / 2**20


def test_memory_of_an_idle_student_with_a_cluster(clusters):
    """Measured for the class's sizing (printed with -s): PSS of bob's whole container (tini, the
    server, the kernel, PostgreSQL's two nodes) idle, and what the engine's cgroup counts."""
    time.sleep(5)
    pss = _idle_pss(clusters, "bob")
    stats = clusters.engine.docker("stats", "--no-stream", "--format", "{{.MemUsage}}", "jupyter-bob").stdout.strip()
    procs = _host_pids(clusters, "bob")
    print(f"\nbob idle with a 1-replica cluster: PSS {pss:.0f} MiB over {len(procs)} processes; docker stats {stats}")
    assert len(_postmasters(procs)) == 2, procs
    assert pss > 0


def test_stopping_a_server_stops_its_cluster_cleanly_and_its_container(clusters):
    hub = clusters
    hub.kernels.pop("alice").close()
    before = _host_pids(hub, "alice")
    masters = _postmasters(before)
    assert len(masters) == 2, before
    cid = hub.container_of("alice")["Id"]
    follow = subprocess.Popen([docker_cli() or "docker", "logs", "-f", cid], env=hub.engine.env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        hub.timings["stop alice"] = hub.stop_server("alice")
        server_log, _ = follow.communicate(timeout=60)  # the container's whole log, until it is gone
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    r = hub.engine.docker("inspect", cid, check=False)
    assert r.returncode != 0, "alice's container is still there after her server stopped"
    alive = [p for p in before if psutil.pid_exists(p) and _same(p, before[p])]
    assert not alive, f"processes of alice's container still running: {alive}"
    # the stop hook ran: each node was shut down (not killed with its container), and the
    # single-user server says it stopped the cluster before it exited
    home = hub.class_root / "homes" / "alice"
    logs = [p for p in home.rglob("*.log") if "database system is ready" in p.read_text(errors="replace")]
    assert len(logs) >= 2, sorted(map(str, home.rglob("*.log")))
    for log in logs:  # each node's last word: shut down after it was last ready
        text = log.read_text(errors="replace")
        assert text.rfind("database system is shut down") > text.rfind("database system is ready"), \
            f"{log} does not end with a clean shutdown:\n{text[-1500:]}\n{server_log[-2000:]}"
    # a killed postmaster leaves its postmaster.pid behind; a clean shutdown removes it
    assert not list(home.rglob("postmaster.pid")), list(home.rglob("postmaster.pid"))
    assert "Traceback" not in server_log, server_log[-3000:]
    assert "pglab: clusters stopped with the server" in server_log, server_log[-3000:]
    assert "pglab: JupyterLab opens in es_ES" in server_log, server_log[-3000:]


def _same(pid: int, args: str) -> bool:
    try:
        return " ".join(psutil.Process(pid).cmdline()) == args
    except psutil.Error:
        return False


def test_starting_again_keeps_the_data_and_the_notebooks(clusters):
    hub = clusters
    nb = hub.class_root / "students" / "alice" / "notebooks" / "00_start_here.ipynb"
    mine = nb.read_text().replace('"import lab"', '"import lab  # alice was here"', 1)
    assert mine != nb.read_text()
    nb.write_text(mine)
    hub.timings["spawn alice again"] = hub.start_server("alice")
    k = hub.kernels["alice"] = hub.kernel("alice")
    out = k.run("import lab\nc = lab.up()\n" + COUNT.format(row="row of alice"))
    assert "rows 1" in out, out
    assert nb.read_text() == mine, "alice's own notebook was overwritten on start"
    print("\n" + "\n".join(f"{k}: {v:.1f} s" for k, v in hub.timings.items()))
