"""A class on one server (hub/README.md), proved with a real JupyterHub: hub/jupyterhub_config.py with
the process spawner (hub/spawners.py), two students who are real Unix users, their lab run in their
own kernels through the hub, and the stop hook (lab/serverhook.py).

Order matters in the hub's part (one hub, one class, per module): both students bring a cluster up
and pass a self-check; they cannot see each other's; a page of a student's is proxied through the
hub to them alone; a server stopped through the hub leaves no PostgreSQL of that student, and the
next ``lab.up()`` brings the same cluster (and its rows) back; a server the idle culler stops leaves
none either.  The stop hook is also checked without a hub: SIGTERM to a Jupyter server stops the
cluster when asked to, and leaves it running on a laptop; the same extension opens JupyterLab in
Spanish with LAB_LANG=es (about 3 minutes in all here)."""
from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

import lab
from lab.system.process import pid_alive
from labtest.browser import NO_CHROMIUM, artifacts, browser, chromium, load_dashboard, wait_for_text

pytest_plugins = ["hub_fixtures"]
pytestmark = [pytest.mark.hub, pytest.mark.integration]

STUDENTS = ("ana", "ben")
DASHBOARD = ["Crypto app", "Market overview", "Replication", "served by:"]

UP = """
import os, pwd, lab
c = lab.up(replicas=1, quiet=True)
c.primary.execute("INSERT INTO test_replication (mensaje) VALUES (%s)", ("hola de {name}",))
r = lab.checks.check("01.1", c)
out = {{"home": str(c.home.path), "user": pwd.getpwuid(os.geteuid()).pw_name, "ok": r.ok, "message": r.message,
       "ports": sorted(n.port for n in c.nodes), "primary_port": c.primary.port,
       "password": c.credentials["password"], "user_db": c.credentials["user"], "db": c.credentials["database"],
       "shared_buffers": c.primary.scalar("SHOW shared_buffers"),
       "max_connections": int(c.primary.scalar("SHOW max_connections")),
       "claims": os.environ["LAB_PORT_CLAIMS"], "profile": os.environ.get("LAB_PG_PROFILE")}}
"""


@pytest.fixture(scope="module")
def classroom(hub):
    """Both students' servers started through the hub, each with a cluster up and 01.1 passed."""
    info = {}
    for name in STUDENTS:
        info[name] = {"start_s": hub.start(name)}
        t0 = time.monotonic()
        info[name].update(hub.run_json(name, UP.format(name=name)))
        info[name]["up_s"] = time.monotonic() - t0
    return info


def jupyterlab_locale(url: str, prefix: str, token: str) -> "tuple[list[str], str | None]":
    """(the language packs, the user's locale setting) of the JupyterLab at ``url`` + ``prefix``,
    through its HTTP API."""
    auth = {"Authorization": f"token {token}"}
    packs = httpx.get(f"{url}{prefix}/lab/api/translations/", headers=auth, timeout=60)
    assert packs.status_code == 200, (packs.status_code, packs.text[:500])
    setting = httpx.get(f"{url}{prefix}/lab/api/settings/@jupyterlab/translation-extension:plugin",
                        headers=auth, timeout=60)
    assert setting.status_code == 200, (setting.status_code, setting.text[:500])
    return sorted(packs.json()["data"]), setting.json()["settings"].get("locale")


def student_postgres(hub, name) -> "list[psutil.Process]":
    return hub.processes(name, only="postgres")


# --- the hub's part ------------------------------------------------------------------------------
def test_each_student_runs_their_lab_as_their_own_unix_user(hub, classroom):
    for name in STUDENTS:
        got = classroom[name]
        home = hub.lab_home(name)
        assert got["home"] == str(home)
        assert got["user"] == hub.unix(name) and got["user"].startswith(hub.prefix)
        assert got["ok"], got["message"]
        st = home.stat()
        assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == hub.uid(name)
        # the self-check's progress is in the lab home, where the instructor's view reads it
        assert any(p.is_file() and p.stat().st_uid == hub.uid(name) for p in home.rglob("*progress*")), \
            sorted(p.name for p in home.iterdir())
        # their servers run as them, with the shared machine's profile, in their cgroup
        servers = student_postgres(hub, name)
        assert len(servers) >= 2 * 2, servers  # two servers, each a postmaster and its workers
        assert (got["profile"], got["shared_buffers"], got["max_connections"]) == ("shared", "8MB", 30)
        memory_cgroups = {line.split(":", 2)[2] for p in servers
                          for line in Path(f"/proc/{p.pid}/cgroup").read_text().splitlines()
                          if line.split(":", 2)[1] == "memory"}
        if Path("/sys/fs/cgroup/memory/cgroup.procs").exists():
            assert memory_cgroups and all(g.endswith(f"/pglab-{hub.unix(name)}") for g in memory_cgroups)
            group = Path("/sys/fs/cgroup/memory") / next(iter(memory_cgroups)).lstrip("/")
            assert int((group / "memory.limit_in_bytes").read_text()) == 1 << 30
            print(f"{name}: server, kernel and a primary + replica use {int((group / 'memory.usage_in_bytes').read_text()) >> 20} MiB "
                  f"(peak {int((group / 'memory.max_usage_in_bytes').read_text()) >> 20} MiB); started in "
                  f"{got['start_s']:.1f} s, lab.up() + 01.1 in {got['up_s']:.1f} s")
        # their copy of the notebooks, theirs
        nb = hub.root / "students" / name / "notebooks" / "01_primary_and_replica.ipynb"
        assert nb.exists() and nb.stat().st_uid == hub.uid(name)
        # JupyterLab's language: the hub's environment has the Spanish pack (the [hub] extra), and
        # without the class's LAB_LANG (the tests run without it, labtest/session.py) no locale is
        # written for the student (with it: the stop hook's test below, tests/test_hub_docker.py)
        assert jupyterlab_locale(hub.url, f"/user/{name}", hub.token) == (["en", "es_ES"], None)
    # one claims directory for the class, every student's ports in it
    assert classroom["ana"]["claims"] == classroom["ben"]["claims"]


def test_students_cannot_reach_each_others_lab(hub, classroom):
    ana, ben = classroom["ana"], classroom["ben"]
    assert not set(ana["ports"]) & set(ben["ports"])
    probe = f"""
import os, psycopg2
out = {{}}
for what, path in [("home", {str(hub.lab_home('ana'))!r}), ("state", {str(hub.lab_home('ana') / 'state.json')!r})]:
    try:
        os.listdir(path) if what == "home" else open(path).read()
        out[what] = "read"
    except PermissionError:
        out[what] = "denied"
for what, password in [("own password", {ben['password']!r}), ("no password", "")]:
    try:
        psycopg2.connect(host="127.0.0.1", port={ana['primary_port']}, user={ana['user_db']!r},
                         dbname={ana['db']!r}, password=password, connect_timeout=10).close()
        out[what] = "connected"
    except psycopg2.OperationalError as e:
        out[what] = str(e).strip().splitlines()[-1]
"""
    got = hub.run_json("ben", probe)
    assert got["home"] == "denied" and got["state"] == "denied", got
    for what in ("own password", "no password"):
        assert "password authentication failed" in got[what] or "no password supplied" in got[what], got


def test_a_students_web_page_is_proxied_through_the_hub_to_them_alone(hub, classroom):
    """What the lab's web apps use behind a hub: /user/<name>/proxy/<port>/ through the hub's proxy
    and its login (jupyter-server-proxy in the student's server)."""
    started = hub.run_json("ana", """
import pathlib, socket, subprocess, sys, tempfile, time
d = pathlib.Path(tempfile.mkdtemp()); (d / "hello.txt").write_text("served by ana's server")
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
web = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(d)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for _ in range(100):
    if socket.socket().connect_ex(("127.0.0.1", port)) == 0:
        break
    time.sleep(0.1)
out = {"port": port}
""")
    path = f"/user/ana/proxy/{started['port']}/hello.txt"
    try:
        with contextlib.closing(hub.login("ana")) as browser:
            r = browser.get(path)
            assert r.status_code == 200 and r.text == "served by ana's server", (r.status_code, r.text[:300])
        with contextlib.closing(hub.login("ben")) as other:
            r = other.get(path)
            assert r.status_code == 403 and "served by" not in r.text, (r.status_code, r.text[:300])
        anonymous = httpx.get(f"{hub.url}{path}", follow_redirects=False, timeout=30)
        assert anonymous.status_code == 302 and "/hub/" in anonymous.headers["location"], anonymous.headers
    finally:
        hub.run("ana", "web.terminate(); web.wait(10)")


@pytest.mark.app
@pytest.mark.browser
@pytest.mark.skipif(chromium() is None, reason=NO_CHROMIUM)
def test_the_crypto_dashboard_loads_through_the_hub_in_chromium(hub, classroom, tmp_path):
    """A student's browser: log in to the hub, open the dashboard link the lab printed (through the
    hub and jupyter-server-proxy), see it drawn.  The app is left running: the culler's test below
    checks that it stops with ana's server."""
    app = hub.run_json("ana", """
import lab
app = lab.webapp.start(lab.attach(), quiet=True)
out = {"dashboard": app.public_dashboard_url, "local": app.dashboard_url}
""", timeout=240)
    assert "/user/ana/proxy/" in app["dashboard"] and "127.0.0.1" in app["local"], app
    url = app["dashboard"] if app["dashboard"].startswith("http") else hub.url + app["dashboard"]
    with browser(tmp_path) as tools:
        tools.call("Page.enable")
        tools.call("Page.navigate", url=f"{hub.url}/hub/login")
        wait_for_text(tools, ["Sign in"], timeout=30)
        tools.evaluate("document.querySelector('#username_input').value = 'ana';"
                       "document.querySelector('#password_input').value = 'any';"
                       "document.querySelector('form').submit()")
        deadline = time.monotonic() + 60
        while "/hub/login" in (tools.evaluate("location.href") or "/hub/login") and time.monotonic() < deadline:
            time.sleep(0.3)
        text = load_dashboard(tools, url, DASHBOARD, timeout=90)
        assert "Traceback" not in text, text[:1500]
        assert tools.evaluate("location.href").startswith(f"{hub.url}/user/ana/proxy/")
        shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        (artifacts() / "hub-dashboard.png").write_bytes(base64.b64decode(shot["data"]))


def test_a_server_stopped_through_the_hub_stops_its_clusters_and_up_brings_them_back(hub, classroom):
    name = "ben"
    assert student_postgres(hub, name)
    stop_s = hub.stop(name)
    left = student_postgres(hub, name)
    assert left == [], [p.cmdline() for p in left]
    assert not hub.processes(name), "nothing of ben's runs once his server stopped"
    # data kept: the same cluster comes back with the row written before
    hub.start(name)
    back = hub.run_json(name, """
import lab
c = lab.up(replicas=1, quiet=True)
out = {"rows": c.primary.sql("SELECT mensaje FROM test_replication")["mensaje"].tolist(),
       "replica": c.node("replica1").sql("SELECT count(*) AS n FROM test_replication")["n"][0],
       "home": str(c.home.path)}
""")
    assert "hola de ben" in back["rows"] and back["home"] == str(hub.lab_home(name))
    assert int(back["replica"]) == len(back["rows"])
    print(f"ben's server stopped through the hub in {stop_s:.1f} s, clusters included")
    hub.stop(name)
    assert student_postgres(hub, name) == []


def test_a_server_the_idle_culler_stops_leaves_no_postgres(hub, classroom):
    name = "ana"
    assert hub.server("ben") is None  # the culler stops every idle server: only ana's runs now
    assert student_postgres(hub, name)
    env = dict(os.environ, JUPYTERHUB_API_TOKEN=hub.token)
    culler = subprocess.Popen([sys.executable, "-m", "jupyterhub_idle_culler", f"--url={hub.url}/hub/api",
                               "--timeout=5", "--cull-every=2"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        t0 = time.monotonic()
        hub.wait_stopped(name, timeout=120)
        culled_s = time.monotonic() - t0
    finally:
        culler.send_signal(signal.SIGTERM)
        log = culler.communicate(timeout=30)[0].decode(errors="replace")
    assert f"Culling server {name}" in log, log[-2000:]
    assert student_postgres(hub, name) == []
    left = hub.processes(name)  # the crypto app started above (uvicorn, Streamlit) went with the clusters
    assert left == [], [p.cmdline() for p in left]
    print(f"ana's server culled {culled_s:.1f} s after the culler started")


def test_the_hub_runs_the_culler_and_the_class_service_with_their_roles(hub):
    services = hub.api("GET", "/services").json()
    assert "idle-culler" in services and "idle-culler" in services["idle-culler"]["roles"], services
    if (Path(__file__).resolve().parents[1] / "hub" / "class_service.py").exists():
        assert "pglab-class" in services and "pglab-class" in services["pglab-class"]["roles"], services


# --- the stop hook without a hub -----------------------------------------------------------------
def _jupyter_server(env: dict, tmp: Path) -> "tuple[subprocess.Popen, int]":
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "jupyter_server", "--allow-root", "--no-browser",
                             f"--port={port}", "--ip=127.0.0.1", "--IdentityProvider.token=hook-test",
                             f"--ServerApp.root_dir={tmp}"], env=env, stdout=open(tmp / "server.log", "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/status?token=hook-test", timeout=2).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError((tmp / "server.log").read_text()[-3000:])
        time.sleep(0.3)


@pytest.mark.parametrize("asked", [True, False], ids=["LAB_STOP_WITH_SERVER=1", "a laptop"])
def test_sigterm_to_the_jupyter_server_stops_the_cluster_only_when_asked(tmp_path, asked):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    env.update(LAB_HOME=str(home), JUPYTER_CONFIG_PATH=str(Path(__file__).resolve().parents[1] / "hub" / "singleuser"))
    env.pop("LAB_STOP_WITH_SERVER", None)
    # JupyterLab's settings of this server's user; a class in Spanish where the stop is asked for
    env["JUPYTERLAB_SETTINGS_DIR"] = str(tmp_path / "user-settings")
    if asked:
        env.update(LAB_STOP_WITH_SERVER="1", LAB_LANG="es")
    c = lab.up(replicas=1, home=home, quiet=True)
    try:
        c.primary.execute("INSERT INTO test_replication (mensaje) VALUES ('before the stop')")
        pids = [n.pid for n in c.nodes]
        assert all(pid_alive(p) for p in pids)
        proc, port = _jupyter_server(env, tmp_path)
        # the same extension opens JupyterLab in the class's language (LAB_LANG=es), seeded as the
        # user's own setting; without LAB_LANG nothing is written
        try:
            assert jupyterlab_locale(f"http://127.0.0.1:{port}", "", "hook-test") == \
                (["en", "es_ES"], "es_ES" if asked else None)
        except BaseException:
            proc.kill()
            proc.wait(timeout=30)
            raise
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        took = time.monotonic() - t0
        log = (tmp_path / "server.log").read_text()
        if asked:
            assert not any(pid_alive(p) for p in pids) and "pglab: cluster: stopped" in log, log[-2000:]
            assert took < 10, f"stopping took {took:.1f} s: docker stop would have killed it at 10 s"
            back = lab.up(replicas=1, home=home, quiet=True)
            assert "before the stop" in back.primary.sql("SELECT mensaje FROM test_replication")["mensaje"].tolist()
        else:
            assert all(pid_alive(p) for p in pids) and "pglab:" not in log, log[-2000:]
    finally:
        c.down(wipe=True)
