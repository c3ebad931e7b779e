"""The hub tier's fixtures (tests/test_hub.py): a real JupyterHub from hub/jupyterhub_config.py on
127.0.0.1, with the process spawner, the dummy authenticator and students who are real Unix users.

``hub`` (module scope) starts it on free ports with a class root, database and cookie secret of its
own under /var/tmp, an instructor ``teacher`` (admin) and a Unix user prefix unique to this run;
its admin API token comes from the hub itself (POST /hub/api/users/teacher/tokens, logged in by the
request's body).  Through ``Hub``: start and stop a student's server through the REST API, run code
in their kernel (kernel REST + websocket, as JupyterLab does), log in as them like a browser.

At the end everything is stopped and removed: servers through the hub, the hub (which stops its
services and servers), its proxy (by its pid file), each student's clusters (``lab down --wipe``
as the student), any process left of theirs, their Unix users and the class root.

Skipped with the reason where it cannot run: not root (Unix users), no configurable-http-proxy
(scripts/ensure-hub.sh), no JupyterHub (pip install -e '.[hub]').
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest
from websockets.sync.client import connect

from lab.system.home import cache_dir
from labtest.helpers import free_tcp_ports
from labtest.hub import run_in_kernel, stop_services_of

ROOT = Path(__file__).resolve().parents[1]
HUB_DIR = ROOT / "hub"
sys.path.insert(0, str(HUB_DIR))
import spawners  # noqa: E402  (hub/spawners.py: the name policy, the students' Python, user removal)

INSTRUCTOR = "teacher"
START_TIMEOUT = 180


def chp_path() -> "str | None":
    """configurable-http-proxy: on PATH, else where scripts/ensure-hub.sh installs it (as
    hub/jupyterhub_config.py's find_proxy looks); None when neither has it."""
    found = shutil.which("configurable-http-proxy")
    if found:
        return found
    local = cache_dir() / "hub" / "node_modules" / ".bin" / "configurable-http-proxy"
    return str(local) if local.exists() else None


def hub_unavailable() -> "str | None":
    """Why a hub with the process spawner cannot run here, or None."""
    if os.geteuid() != 0:
        return "the process spawner makes a Unix user per student: run the hub tests as root"
    if not (shutil.which("useradd") or os.path.exists("/usr/sbin/useradd")):
        return "no useradd to make the students' Unix users"
    for module in ("jupyterhub", "jupyterhub_idle_culler", "nativeauthenticator"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed: pip install -e '.[hub]'"
    if chp_path() is None:
        return "no configurable-http-proxy: run scripts/ensure-hub.sh (npm install configurable-http-proxy)"
    try:
        spawners.singleuser_python()
    except RuntimeError as e:
        return str(e)
    return None


# A hub on a loaded machine (the notebooks run beside the tests) takes a minute or more to route
# its own API: wait well beyond that before calling it broken.
HUB_START_TIMEOUT = 240


def free_ports(n: int) -> "list[int]":
    return free_tcp_ports(n)


class Hub:
    """A running hub: its URL, the instructor's API token, and what a test does with students."""

    def __init__(self, url: str, root: Path, prefix: str, proc: subprocess.Popen, log: Path):
        self.url, self.root, self.prefix, self.proc, self.log = url, root, prefix, proc, log
        self.token = ""
        self.students: "set[str]" = set()
        self._kernels: "dict[str, str]" = {}

    # --- the REST API -------------------------------------------------------------------
    def api(self, method: str, path: str, token: "str | None" = None, **kw) -> httpx.Response:
        headers = {"Authorization": f"token {token or self.token}"}
        return httpx.request(method, f"{self.url}/hub/api{path}", headers=headers, timeout=60, **kw)

    def server(self, name: str) -> "dict | None":
        r = self.api("GET", f"/users/{name}")
        r.raise_for_status()
        return r.json()["servers"].get("")

    def start(self, name: str, timeout: float = START_TIMEOUT) -> float:
        """Start ``name``'s server (the user made first if new); seconds until it is ready."""
        self.students.add(name)
        t0 = time.monotonic()
        if self.api("GET", f"/users/{name}").status_code == 404:
            self.api("POST", f"/users/{name}").raise_for_status()
        r = self.api("POST", f"/users/{name}/server")
        assert r.status_code in (201, 202, 400), r.text  # 400: already running
        while True:
            s = self.server(name)
            if s and s.get("ready"):
                self._kernels.pop(name, None)
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"{name}'s server not ready after {timeout} s: {s}\n{self.tail()}")
            time.sleep(0.5)

    def stop(self, name: str, timeout: float = 90) -> float:
        """Stop ``name``'s server through the hub; seconds until the hub says it is gone."""
        t0 = time.monotonic()
        r = self.api("DELETE", f"/users/{name}/server")
        assert r.status_code in (202, 204, 400), r.text
        self.wait_stopped(name, timeout)
        self._kernels.pop(name, None)
        return time.monotonic() - t0

    def wait_stopped(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.server(name) is not None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}'s server still there after {timeout} s\n{self.tail()}")
            time.sleep(0.5)

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    # --- a student's kernel --------------------------------------------------------------
    def run(self, name: str, code: str, timeout: float = 300) -> str:
        """Run ``code`` in ``name``'s kernel (one per server, made on first use); its output.
        An exception in the kernel fails the test with the kernel's traceback."""
        base = f"{self.url}/user/{name}/api/kernels"
        kid = self._kernels.get(name)
        if kid is None:
            r = httpx.post(base, headers={"Authorization": f"token {self.token}"}, json={"name": "python3"},
                           timeout=60)
            assert r.status_code == 201, r.text
            kid = self._kernels[name] = r.json()["id"]
        ws_url = base.replace("http://", "ws://") + f"/{kid}/channels"
        with connect(ws_url, additional_headers={"Authorization": f"token {self.token}"},
                     open_timeout=60, max_size=None) as ws:
            return run_in_kernel(ws.send, lambda left: ws.recv(timeout=left), code, name, INSTRUCTOR,
                                 uuid.uuid4().hex, timeout)

    def run_json(self, name: str, code: str, timeout: float = 300):
        """Run ``code``, which sets ``out``, in ``name``'s kernel; ``out`` as JSON gives it back."""
        text = self.run(name, code + "\nimport json as _j; print('@@OUT@@' + _j.dumps(out, default=str))",
                        timeout=timeout)
        return json.loads(text.rsplit("@@OUT@@", 1)[1])

    # --- a student's browser ---------------------------------------------------------------
    def login(self, name: str) -> httpx.Client:
        """A client logged in to the hub as ``name`` (the dummy authenticator's login form), which
        follows the hub's OAuth redirects to a server as a browser would."""
        client = httpx.Client(base_url=self.url, follow_redirects=True, timeout=60)
        client.get("/hub/login")
        xsrf = client.cookies.get("_xsrf", "")
        r = client.post("/hub/login", data={"username": name, "password": "any", "_xsrf": xsrf},
                        follow_redirects=False)
        assert r.status_code == 302 and "jupyterhub-hub-login" in client.cookies, (r.status_code, r.text[:500])
        return client

    # --- the machine ---------------------------------------------------------------------
    def unix(self, name: str) -> str:
        return spawners.unix_name(name, self.prefix)

    def uid(self, name: str) -> int:
        return pwd.getpwnam(self.unix(name)).pw_uid

    def lab_home(self, name: str) -> Path:
        return self.root / "homes" / name

    def processes(self, name: str, only: "str | None" = None) -> "list[psutil.Process]":
        """The processes running as ``name``'s Unix user (``only``: with that program name).  A zombie
        is not one: it has exited, and only waits for its parent (here, often init) to reap it."""
        try:
            uid = self.uid(name)
        except KeyError:
            return []
        found = []
        for p in psutil.process_iter(["uids", "name", "status"]):
            try:
                if p.info["status"] == psutil.STATUS_ZOMBIE:
                    continue
                if p.info["uids"] and p.info["uids"].real == uid and (only is None or p.info["name"] == only):
                    found.append(p)
            except psutil.Error:
                continue
        return found

    def as_student(self, name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """``python -m lab ARGS`` as the student, on their lab home (the tests' clean-up)."""
        p = pwd.getpwnam(self.unix(name))
        exe, extra = spawners.singleuser_python()
        env = {"PATH": "/usr/bin:/bin", "HOME": p.pw_dir, "LANG": "C.UTF-8", "LAB_HOME": str(self.lab_home(name)),
               "LAB_PORT_CLAIMS": os.environ.get("LAB_PORT_CLAIMS", str(self.root / "port-claims")),
               "PGLAB_TEST_SESSION": os.environ.get("PGLAB_TEST_SESSION", ""), **extra}
        return subprocess.run([exe, "-m", "lab", *args], env=env, cwd="/", capture_output=True, text=True,
                              timeout=timeout, user=p.pw_uid, group=p.pw_gid, extra_groups=[])


def _default_sigint() -> None:
    """The hub stops its services with SIGINT first: a pytest run in a script's background has it
    ignored, which the hub and its services would inherit (and stop 10 s slower each)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_hub(root: Path, prefix: str) -> Hub:
    port, api_port, proxy_api, service = free_ports(4)
    env = dict(os.environ, LAB_CLASS_ROOT=str(root), LAB_HUB_SPAWNER="process", LAB_HUB_TEST_AUTH="dummy",
               LAB_HUB_ADMINS=INSTRUCTOR, LAB_HUB_IP="127.0.0.1", LAB_HUB_PORT=str(port),
               LAB_HUB_API_PORT=str(api_port), LAB_HUB_PROXY_API_PORT=str(proxy_api),
               LAB_HUB_CLASS_SERVICE_PORT=str(service), LAB_HUB_USER_PREFIX=prefix,
               LAB_HUB_MEM_LIMIT="1G", LAB_HUB_CPU_LIMIT="1")
    log = root / "hub.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(HUB_DIR / "jupyterhub_config.py")],
                                cwd=root / "hub-cwd", env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_default_sigint)
    hub = Hub(f"http://127.0.0.1:{port}", root, prefix, proc, log)
    hub.api_port = api_port
    try:
        deadline = time.monotonic() + HUB_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the hub exited with status {proc.returncode}:\n{hub.tail(40)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{hub.url}/hub/api/", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"the hub did not answer in {HUB_START_TIMEOUT} s:\n{hub.tail(40)}")
            time.sleep(0.5)
        r = httpx.post(f"{hub.url}/hub/api/users/{INSTRUCTOR}/tokens", timeout=60,
                       json={"auth": {"username": INSTRUCTOR, "password": "any"}, "note": "hub tests",
                             "expires_in": 7200})
        assert r.status_code == 201, r.text
        hub.token = r.json()["token"]
    except BaseException:
        _stop_hub(hub)
        raise
    return hub


def _stop_hub(hub: Hub) -> None:
    """Everything the hub and its students started, stopped; their users and files removed."""
    for name in sorted(hub.students):
        with contextlib.suppress(Exception):
            if hub.server(name) is not None:
                hub.stop(name)
    if hub.proc.poll() is None:
        hub.proc.send_signal(signal.SIGTERM)  # the hub stops its services, any server left and its proxy
        try:
            hub.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(hub.proc.pid, signal.SIGKILL)
            hub.proc.wait(timeout=10)
    stop_services_of(getattr(hub, "api_port", 0))  # those of a hub stopped while it was starting
    pid_file = hub.root / "hub" / "jupyterhub-proxy.pid"
    with contextlib.suppress(OSError, ValueError, psutil.Error):
        chp = psutil.Process(int(pid_file.read_text()))
        if "configurable-http-proxy" in " ".join(chp.cmdline()):
            chp.kill()
    for name in sorted(hub.students):
        if not hub.lab_home(name).exists():
            continue
        with contextlib.suppress(Exception):
            hub.as_student(name, "down", "--wipe")
        for p in hub.processes(name):
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(hub.processes(name), timeout=10)
        with contextlib.suppress(Exception):
            spawners.remove_student(hub.unix(name))
    shutil.rmtree(hub.root, ignore_errors=True)


@pytest.fixture(scope="module")
def hub():
    """A real hub for this module, stopped and cleaned away at its end (see the module's docstring)."""
    why = hub_unavailable()
    if why:
        pytest.skip(why)
    root = Path(tempfile.mkdtemp(prefix="pglab-hub-", dir="/var/tmp"))
    (root / "hub-cwd").mkdir()
    prefix = f"pgt{uuid.uuid4().hex[:4]}-"
    try:
        h = _start_hub(root, prefix)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        yield h
    finally:
        _stop_hub(h)
