"""The instructor's view (lab/classroom.py, ``python -m lab class``, hub/class_service.py,
hub/instructor.ipynb) on a class root with two real student labs.

The class root is made for this module in /var/tmp (students must reach their homes; pytest's temp
dir is root's alone).  As root, each student is a Unix user of their own, made here with a unique
prefix and removed at the end, and runs ``lab.up`` in their lab home as that user, as a student on
a hub with the process spawner does: one student's cluster runs, with a passed and a failed
self-check; the other's is stopped.  The service is tested through a real JupyterHub (dummy
authenticator, the service managed by the hub) where configurable-http-proxy is installed.
Everything is stopped, wiped and removed at the end.
"""
from __future__ import annotations

import io
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import httpx
import pandas as pd
import psutil
import pytest

import lab
from lab import classroom
from lab.classroom import Classroom, HubClassroom, student_python
from lab.errors import BadArgument, LabError
from lab.exercises import progress
from lab.ha import HACluster
from lab.system import ports
from lab.system.home import LabHome
from hub_fixtures import chp_path
from labtest.helpers import postmasters

pytest_plugins = ["hub_fixtures"]  # hub: the class's own hub/jupyterhub_config.py, run for real
pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
SERVICE = REPO / "hub" / "class_service.py"
NOTEBOOK = REPO / "hub" / "instructor.ipynb"

# What a student types, run as that student in their own lab home: chapter 00's check answered
# right (the primary's major version) and chapter 01's "how many replicas stream" answered wrong.
STUDENT = r"""
import sys
import lab, lab.checks
home, keep_running = sys.argv[1], sys.argv[2] == "running"
c = lab.up(home=home, replicas=1, quiet=True)
major = int(c.primary.scalar("SHOW server_version_num", dbname="postgres")) // 10000
print(lab.checks.check("00.1", c, answer=major))
if keep_running:
    print(lab.checks.check("01.2", c, answer=len(c.replicas) + 7))
else:
    c.down()
"""

# The same student checking again, with a cluster they only re-attach to.
AGAIN = r"""
import sys
import lab, lab.checks
c = lab.attach(sys.argv[1])
major = int(c.primary.scalar("SHOW server_version_num", dbname="postgres")) // 10000
print(lab.checks.check(sys.argv[2], c, answer=major if sys.argv[2] == "00.1" else 99))
"""


def _as(student: dict, code: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run Python ``code`` as ``student`` (their uid, their lab home), as their notebook's kernel would."""
    exe, extra = student_python(student["uid"], student["gid"])
    env = {**os.environ, **extra, "HOME": str(student["home"]), "LAB_HOME": str(student["home"]),
           "LAB_CACHE": str(student["home"] / ".cache")}
    kwargs = {}
    if student["uid"] != os.geteuid():
        kwargs = {"user": student["uid"], "group": student["gid"], "extra_groups": []}
    r = subprocess.run([exe, "-c", code, *args], env=env, cwd=student["home"], capture_output=True, text=True,
                       timeout=300, **kwargs)
    if check:
        assert r.returncode == 0, r.stderr[-2000:]
    return r


def _make_user(name: str) -> None:
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True)


def _postmasters_of(home: Path) -> "list[int]":
    return [pid for pid, d in postmasters().items() if d.startswith(str(home) + os.sep)]


@pytest.fixture(scope="module")
def room():
    """A class root with two real student labs: [0] running, with a passed and a failed check; [1] stopped."""
    root = Path(tempfile.mkdtemp(prefix="pglab-class-", dir="/var/tmp"))
    os.chmod(root, 0o755)
    (root / "homes").mkdir(mode=0o755)
    ports.claims_dir()  # shared by every user, as on the hub (made 1777 by us, root)
    tag = secrets.token_hex(3)
    students, made = [], []
    try:
        for suffix, running in (("a", True), ("b", False)):
            if os.geteuid() == 0:
                name = f"pglc{tag}{suffix}"
                _make_user(name)
                made.append(name)
                pw = pwd.getpwnam(name)
                uid, gid = pw.pw_uid, pw.pw_gid
            else:  # not root: both students are you (no users to make, nobody else's files to read)
                name, uid, gid = f"student{suffix}", os.geteuid(), os.getegid()
            home = root / "homes" / name
            home.mkdir(mode=0o700)
            os.chown(home, uid, gid)
            students.append(dict(name=name, uid=uid, gid=gid, home=home, running=running))
        for s in students:
            _as(s, STUDENT, str(s["home"]), "running" if s["running"] else "stopped")
        yield Classroom(root, spawner="process", hub_api_url="", hub_token=""), students
    finally:
        failures = []
        for s in students:
            if (s["home"] / "state.json").exists():
                r = _as(s, "import sys, lab; lab.down(wipe=True, home=sys.argv[1])", str(s["home"]), check=False)
                if r.returncode:
                    failures.append(r.stderr[-500:])
        for name in made:
            subprocess.run(["userdel", name], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
        assert not failures, failures


def _rows(df: pd.DataFrame) -> dict:
    return {r["student"]: r for r in df.to_dict("records")}


# --- what a check records -------------------------------------------------------------------------
def test_checks_record_passed_and_failed_results_in_the_students_home(room):
    _, (a, b) = room
    f = a["home"] / progress.FILE
    st = f.stat()
    assert oct(st.st_mode & 0o777) == "0o600"
    assert (st.st_uid, st.st_gid) == (a["uid"], a["gid"])  # the student's own file
    got = progress.results(a["home"])
    assert got["00.1"]["ok"] is True and got["00.1"]["passed"] and got["00.1"]["attempts"] == 1
    assert got["01.2"]["ok"] is False and got["01.2"]["passed"] is None and got["01.2"]["message"]
    assert set(progress.results(b["home"])) == {"00.1"}
    _as(a, AGAIN, str(a["home"]), "01.2")  # checked again, wrong again: one more attempt
    again = progress.results(a["home"])["01.2"]
    assert again["attempts"] == 2 and again["time"] > got["01.2"]["time"]


def test_a_check_still_answers_when_the_home_cannot_be_written(room):
    _, (a, _b) = room
    f = a["home"] / progress.FILE
    before = f.read_bytes()
    os.chmod(a["home"], 0o500)
    try:
        if a["uid"] == 0:  # root writes through any mode: a directory where the file should be stops it
            pytest.skip("the home's owner is root, whom a read-only mode does not stop")
        r = _as(a, AGAIN, str(a["home"]), "00.1")
    finally:
        os.chmod(a["home"], 0o700)
    assert r.stdout.startswith("✅ 00.1"), r.stdout + r.stderr
    assert f.read_bytes() == before  # nothing recorded, nothing broken


def test_chapter_08s_results_go_to_the_lab_home_above_its_cluster(tmp_path):
    ha = HACluster.__new__(HACluster)  # only where it lives matters here: <lab home>/ha
    ha.home = LabHome(tmp_path / "ha")
    assert progress.lab_home_of(ha) == tmp_path
    progress.record(ha, "08.3", True, "one writable node, the leader")
    assert progress.results(tmp_path)["08.3"]["ok"] is True
    progress.record(object(), "08.3", False, "not a cluster")  # nothing to record in, and no error


# --- the instructor's view ------------------------------------------------------------------------
def test_status_shows_each_students_server_cluster_nodes_and_checks(room):
    rc, (a, b) = room
    rows = _rows(rc.status())
    assert rc.students() == sorted([a["name"], b["name"]])
    total = sum(len(ids) for ids in classroom.chapters().values())
    for s in (a, b):
        row = rows[s["name"]]
        live = _postmasters_of(s["home"])
        assert len(live) == (2 if s["running"] else 0)
        state = "running" if live else "stopped"
        assert row["cluster"] == state
        assert row["nodes"] == f"primary:{state}, replica1:{state}"
        passed = sum(1 for v in progress.results(s["home"]).values() if v["passed"])
        assert row["checks"] == f"{passed}/{total}"
        assert row["server"] == "stopped"  # no hub here, and no Jupyter server of theirs runs
        assert "pids on this host" in row["seen"]
        assert pd.Timestamp.now(tz="UTC") - row["last_activity"] < pd.Timedelta(minutes=30)


def test_status_with_containers_reads_the_state_file_and_says_so(room):
    rc, (a, b) = room
    rows = _rows(Classroom(rc.root, spawner="docker", hub_api_url="", hub_token="").status())
    assert rows[a["name"]]["cluster"] == "running" and rows[b["name"]]["cluster"] == "stopped"
    assert rows[a["name"]]["server"] == "unknown" and "state file" in rows[a["name"]]["seen"]


def test_progress_per_chapter_and_its_plot(room):
    rc, (a, b) = room
    chs = classroom.chapters()
    df = rc.progress()
    assert list(df.columns) == [*chs, "total"]
    assert df.at[a["name"], "00"] == f"1/{len(chs['00'])}"
    assert df.at[a["name"], "01"] == f"0/{len(chs['01'])}"  # 01.2 was answered wrong
    assert df.at[b["name"], "00"] == f"1/{len(chs['00'])}"
    assert df.at[b["name"], "total"] == f"1/{sum(map(len, chs.values()))}"
    fig = rc.plot()
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == rc.students()
    labels = {t.get_text() for t in ax.texts}
    assert f"1/{len(chs['00'])}" in labels and f"0/{len(chs['01'])}" in labels
    png = io.BytesIO()
    fig.savefig(png, format="png")
    assert png.getvalue()[:4] == b"\x89PNG"


def test_errors_say_who_exists_and_where_the_class_root_is(room, tmp_path, monkeypatch):
    rc, (a, b) = room
    with pytest.raises(LabError) as e:
        rc.reset("nobody")
    assert "nobody" in str(e.value) and a["name"] in str(e.value) and b["name"] in str(e.value)
    assert "\n" not in str(e.value)
    with pytest.raises(BadArgument):
        rc.home(None)
    monkeypatch.setenv("LAB_CLASS_ROOT", str(tmp_path / "no-class"))
    with pytest.raises(LabError, match="LAB_CLASS_ROOT") as e:
        Classroom()
    assert str(tmp_path / "no-class") in str(e.value) and "\n" not in str(e.value)
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)
    with pytest.raises(LabError, match="JUPYTERHUB_API_TOKEN"):
        Classroom.from_hub()


def test_docker_reset_refuses_when_docker_cannot_say_whether_the_container_runs(room, monkeypatch):
    rc, (_a, b) = room
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(LabError, match="Docker"):
        Classroom(rc.root, spawner="docker").reset(b["name"])
    assert (b["home"] / "state.json").exists()  # nothing wiped on a guess


# --- the command line -------------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lab", "class", *args], capture_output=True, text=True,
                          timeout=120, env={k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")})


def test_the_command_line(room, tmp_path):
    rc, (a, b) = room
    r = _cli("status", "--root", str(rc.root))
    assert r.returncode == 0, r.stderr
    line_a = next(line for line in r.stdout.splitlines() if a["name"] in line)
    assert "primary:running, replica1:running" in line_a
    assert "primary:stopped" in next(line for line in r.stdout.splitlines() if b["name"] in line)
    r = _cli("--root", str(rc.root), "progress")
    assert r.returncode == 0 and a["name"] in r.stdout and "total" in r.stdout
    r = _cli("reset", "nobody", "--root", str(rc.root))
    assert r.returncode == 1 and r.stderr.startswith("error: no student 'nobody'") and len(r.stderr.splitlines()) == 1
    r = _cli("status", "--root", str(tmp_path / "none"))
    assert r.returncode == 1 and "LAB_CLASS_ROOT" in r.stderr and len(r.stderr.splitlines()) == 1


# --- the admin notebook -----------------------------------------------------------------------------
def test_the_instructors_notebook_runs_under_nbval_on_the_class_root(room):
    rc, (a, _b) = room
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    env["LAB_CLASS_ROOT"] = str(rc.root)
    r = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider",
                        "-q", str(NOTEBOOK)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:]
    assert " passed" in r.stdout
    assert len(_postmasters_of(a["home"])) == 2  # the notebook resets nobody unless told


# --- the hub service --------------------------------------------------------------------------------
def _free_ports(n: int, owner: str) -> "list[int]":
    return ports.claim_free_ports(n, owner)


def _get(url: str, token: "str | None" = None, method: str = "GET") -> "tuple[int, object]":
    req = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None)
    if token:
        req.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, json.loads(body or b"null")
        except ValueError:
            return e.code, body


@pytest.fixture(scope="module")
def own_hub(room, tmp_path_factory):
    """A real JupyterHub (dummy authenticator) running the pglab-class service on the module's class
    root; tokens for an admin (the instructor) and a student.  Stopped at the end with its children."""
    chp = chp_path()
    if chp is None:
        pytest.skip("configurable-http-proxy is not installed (npm install -g configurable-http-proxy, "
                    "scripts/ensure-hub.sh): no hub to run the service under")
    rc, _ = room
    d = tmp_path_factory.mktemp("hub")
    owner = f"class-service-test {d}"
    p_proxy, p_api, p_hub, p_svc = _free_ports(4, owner)
    tester = secrets.token_hex(24)
    cfg = d / "jupyterhub_config.py"
    cfg.write_text(f"""
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {p_proxy}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {p_hub}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{p_api}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.admin_users = {{"teacher"}}
c.Authenticator.allowed_users = {{"teacher", "someone"}}
c.JupyterHub.db_url = "sqlite:///{d}/hub.sqlite"
c.JupyterHub.cookie_secret_file = "{d}/cookie_secret"
c.JupyterHub.pid_file = "{d}/hub.pid"
c.JupyterHub.services = [
    {{"name": "pglab-class", "url": "http://127.0.0.1:{p_svc}", "command": [{sys.executable!r}, {str(SERVICE)!r}],
      "environment": {{"LAB_CLASS_ROOT": {str(rc.root)!r}, "LAB_HUB_SPAWNER": "process",
                       "PGLAB_TEST_SESSION": {os.environ.get("PGLAB_TEST_SESSION", "")!r},
                       "LAB_PORT_CLAIMS": {os.environ.get("LAB_PORT_CLAIMS", "")!r}}}}},
    {{"name": "tester", "api_token": {tester!r}}},
]
c.JupyterHub.load_roles = [
    {{"name": "pglab-class", "services": ["pglab-class"],
      "scopes": ["list:users", "read:users", "read:servers", "admin:servers"]}},
    {{"name": "admin", "services": ["tester"]}},
]
""")
    log = open(d / "hub.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(cfg)], cwd=d, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    api = f"http://127.0.0.1:{p_hub}/hub/api"
    service = f"http://127.0.0.1:{p_svc}/services/pglab-class/"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the hub ended: {(d / 'hub.log').read_text()[-2000:]}")
            try:
                if _get(service + "api/status")[0] == 401:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (d / "hub.log").read_text()[-2000:]
            time.sleep(0.3)
        code, teacher = _get_token(api, tester, "teacher", ["access:services!service=pglab-class",
                                                             "read:services!service=pglab-class"])
        assert code == 201, teacher
        code, someone = _get_token(api, tester, "someone", [])
        assert code == 201, someone
        yield dict(api=api, service=service, teacher=teacher["token"], someone=someone["token"])
    finally:
        children = []
        try:
            children = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            pass
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        _gone, alive = psutil.wait_procs(children, timeout=15)
        for p in alive:
            p.kill()
        log.close()
        ports.release_all(owner)
        assert not alive, f"left by the hub: {alive}"


def _get_token(api: str, tester: str, user: str, scopes: list) -> "tuple[int, dict]":
    req = urllib.request.Request(f"{api}/users/{user}/tokens", method="POST",
                                 data=json.dumps({"scopes": scopes} if scopes else {}).encode(),
                                 headers={"Authorization": f"token {tester}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {"error": e.read().decode()}


@pytest.mark.hub
def test_the_service_answers_admins_only_with_the_same_tables(room, own_hub, monkeypatch):
    rc, (a, b) = room
    hub = own_hub
    assert _get(hub["service"] + "api/status")[0] == 401
    assert _get(hub["service"] + "api/status", hub["someone"])[0] == 403
    assert _get(hub["service"] + f"api/reset/{b['name']}", hub["someone"], "POST")[0] == 403
    code, body = _get(hub["service"] + "api/status", hub["teacher"])
    assert code == 200
    rows = {r["student"]: r for r in body["status"]}
    assert rows[a["name"]]["cluster"] == "running" and rows[b["name"]]["cluster"] == "stopped"
    assert rows[a["name"]]["server"] == "stopped" and "the hub" in rows[a["name"]]["seen"]  # the hub's answer
    code, body = _get(hub["service"] + "api/progress", hub["teacher"])
    assert code == 200 and body["passed"][a["name"]]["00"] == 1 and body["passed"][a["name"]]["01"] == 0
    code, body = _get(hub["service"] + "api/reset/nobody", hub["teacher"], "POST")
    assert code == 400 and "no student 'nobody'" in body["error"]

    # the page for a browser: a login through the hub first, then the tables and the plot
    r = httpx.get(hub["service"], follow_redirects=False, timeout=120)
    assert r.status_code == 302 and "oauth2/authorize" in r.headers["location"], (r.status_code, r.headers)
    r = httpx.get(hub["service"], headers={"Authorization": f"token {hub['teacher']}"}, timeout=120)
    assert r.status_code == 200 and a["name"] in r.text and b["name"] in r.text and "data:image/png;base64," in r.text
    assert httpx.get(hub["service"], headers={"Authorization": f"token {hub['someone']}"}, timeout=120).status_code == 403

    # the notebook's client, with the instructor's token: the service's address asked of the hub
    monkeypatch.setenv("JUPYTERHUB_API_URL", hub["api"])
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", hub["teacher"])
    monkeypatch.delenv("LAB_CLASS_SERVICE_URL", raising=False)
    remote = Classroom.from_hub()
    assert isinstance(remote, HubClassroom)
    cols = ["student", "cluster", "nodes", "checks"]
    pd.testing.assert_frame_equal(remote.status()[cols], rc.status()[cols])
    pd.testing.assert_frame_equal(remote.progress(), rc.progress())
    assert [t.get_text() for t in remote.plot().axes[0].get_yticklabels()] == rc.students()
    with pytest.raises(LabError, match="admins only"):
        HubClassroom(url=remote.url, token=hub["someone"]).status()
    if a["uid"] != b["uid"]:  # a user who cannot read every lab home (the notebook in a server) asks the hub
        r = _as(a, "import sys; from lab.classroom import Classroom; room = Classroom.here(sys.argv[1]); "
                   "print(type(room).__name__, len(room.status()))", str(rc.root))
        assert r.stdout.split() == ["HubClassroom", "2"], r.stdout + r.stderr
    assert isinstance(Classroom.here(rc.root), Classroom)  # root reads the class root itself

    # a reset through the service: the stopped student's cluster wiped as their uid, progress kept
    msg = remote.reset(b["name"])
    assert b["name"] in msg and "wiped" in msg
    assert not (b["home"] / "state.json").exists() and not (b["home"] / "data").exists()
    assert (b["home"] / progress.FILE).exists()
    assert _rows(rc.status())[b["name"]]["cluster"] == "none"


# --- the class's own hub: the instructor's notebook in the instructor's own server ----------------------
INSTRUCTOR = "teacher"  # hub_fixtures' admin (LAB_HUB_ADMINS)
SERVICE_SCOPE = "access:services!service=pglab-class"

KERNEL_UP = """
import lab, lab.checks
c = lab.up(replicas=1, quiet=True)
major = int(c.primary.scalar("SHOW server_version_num", dbname="postgres")) // 10000
out = {"ok": lab.checks.check("00.1", c, answer=major).ok}
"""

KERNEL_SCOPES = """
import json, os, urllib.request
req = urllib.request.Request(os.environ["JUPYTERHUB_API_URL"] + "/user",
                             headers={"Authorization": "token " + os.environ["JUPYTERHUB_API_TOKEN"]})
out = json.load(urllib.request.urlopen(req, timeout=30)).get("scopes", [])
"""

KERNEL_VIEW = """
from lab.classroom import Classroom
room = Classroom.here()
st = room.status()
out = {"kind": type(room).__name__, "status": st.astype(str).to_dict("records"),
       "progress": room.progress().to_dict("index")}
"""


@pytest.mark.hub
def test_the_instructor_sees_the_class_of_a_real_hub_from_their_own_server(hub):
    """hub/jupyterhub_config.py (process spawner): two students' kernels bring a cluster up and pass
    a check; one server is stopped through the hub (its stop hook stops the cluster); the instructor's
    notebook code, run in the instructor's own server, sees both through the pglab-class service."""
    for name in ("cara", "dan"):
        hub.start(name)
        assert hub.run_json(name, KERNEL_UP)["ok"] is True
    hub.stop("dan")
    r = httpx.get(f"{hub.url}/services/pglab-class/api/status", headers={"Authorization": f"token {hub.token}"},
                  timeout=120)  # through the hub's proxy, with the instructor's token
    assert r.status_code == 200, r.text
    rows = {row["student"]: row for row in r.json()["status"]}
    total = sum(len(ids) for ids in classroom.chapters().values())
    assert rows["cara"]["server"] == "running" and rows["cara"]["cluster"] == "running", rows["cara"]
    assert rows["dan"]["server"] == "stopped" and rows["dan"]["cluster"] == "stopped", rows["dan"]
    assert rows["cara"]["checks"] == rows["dan"]["checks"] == f"1/{total}"
    assert "the hub" in rows["cara"]["seen"]

    hub.start(INSTRUCTOR)
    scopes = hub.run_json(INSTRUCTOR, KERNEL_SCOPES)
    assert SERVICE_SCOPE in scopes, (
        f"the instructor's server token has {scopes}: hub/jupyterhub_config.py must give it the class service, "
        "c.Spawner.server_token_scopes = ['users:activity!user', 'access:servers!server', "
        "'read:services!service=pglab-class', 'access:services!service=pglab-class'] (a user gets only those they hold)")
    seen = hub.run_json(INSTRUCTOR, KERNEL_VIEW)
    assert seen["kind"] == "HubClassroom"  # the instructor's user cannot read the homes: the service can
    mine = {row["student"]: row for row in seen["status"]}
    for name in ("cara", "dan"):
        assert {k: mine[name][k] for k in ("server", "cluster", "nodes", "checks")} == \
               {k: rows[name][k] for k in ("server", "cluster", "nodes", "checks")}
        assert seen["progress"][name]["00"] == f"1/{len(classroom.chapters()['00'])}"


# --- resetting ------------------------------------------------------------------------------------------
def test_reset_stops_and_wipes_as_the_students_uid_and_keeps_their_progress(room):
    rc, students = room
    for s in students:
        if (s["home"] / "state.json").exists():  # the service's test may have reset one already
            before = progress.results(s["home"])
            msg = rc.reset(s["name"])
            assert f"uid {s['uid']}" in msg
            assert progress.results(s["home"]) == before
        assert _postmasters_of(s["home"]) == []
        assert not (s["home"] / "state.json").exists() and not (s["home"] / "data").exists()
        row = _rows(rc.status())[s["name"]]
        assert row["cluster"] == "none" and row["nodes"] == ""
        strays = [str(p) for p in [s["home"], *s["home"].rglob("*")] if p.lstat().st_uid != s["uid"]]
        assert not strays, f"files not owned by {s['name']}: {strays[:5]}"
