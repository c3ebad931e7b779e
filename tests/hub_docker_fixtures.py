"""A real JupyterHub on this host spawning students' servers as containers of the private engine.

Used by tests/test_hub_docker.py (imported, not a plugin: only that module needs it).

``DockerHub`` runs ``jupyterhub`` with hub/jupyterhub_config.py and ``LAB_HUB_SPAWNER=docker``
(hub/docker_spawner.py) in a temporary directory: its own class root, database, cookie secret,
ports on 127.0.0.1, class network, the dummy authenticator (``LAB_HUB_TEST_AUTH=dummy``), and an
API token of a test service given by a small config file that loads the hub's config first.
``Kernel`` runs code in a student's kernel through the single-user server's API, behind the hub's
proxy, as a notebook does: kernel REST plus the websocket's execute_request.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import websocket

from labtest.helpers import free_tcp_ports
from labtest.hub import KernelError, run_in_kernel, stop_services_of

REPO = Path(__file__).resolve().parent.parent
HUB_CONFIG = REPO / "hub" / "jupyterhub_config.py"
TEST_SERVICE = "pglab-test"

# The hub's config, then a service whose token the test holds: the hub's own config stays as an
# instructor runs it.
_WRAPPER = """\
import os
load_subconfig({config!r})
c.JupyterHub.services = list(c.JupyterHub.services) + [
    {{"name": {service!r}, "api_token": os.environ["PGLAB_TEST_HUB_TOKEN"]}}]
c.JupyterHub.load_roles = list(c.JupyterHub.load_roles) + [
    {{"name": {service!r}, "services": [{service!r}],
      "scopes": ["admin:users", "admin:servers", "access:servers", "list:users", "read:users"]}}]
"""


def free_port() -> int:
    return free_tcp_ports(1)[0]


class HubError(KernelError):
    """The hub, a server or a kernel did not do what the test asked (fails the test)."""


class DockerHub:
    """A JupyterHub process with the container spawner; a context manager that stops it, the
    servers it spawned and its class network."""

    def __init__(self, engine, image: str, workdir: Path, *, mem_limit="1G", cpu_limit="1", extra_env=None):
        self.engine, self.image, self.dir = engine, image, Path(workdir)
        self.port = free_port()
        ports = {k: str(free_port()) for k in ("LAB_HUB_API_PORT", "LAB_HUB_PROXY_API_PORT", "LAB_HUB_CLASS_SERVICE_PORT")}
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(32)
        self.network = f"pglab-class-test-{uuid.uuid4().hex[:8]}"
        self.class_root = self.dir / "class"
        self.log_file = self.dir / "hub.log"
        self.env = {**engine.env(),
                    "LAB_HUB_SPAWNER": "docker", "LAB_HUB_TEST_AUTH": "dummy",
                    "LAB_HUB_IMAGE": image, "LAB_HUB_NETWORK": self.network,
                    "LAB_HUB_MEM_LIMIT": str(mem_limit), "LAB_HUB_CPU_LIMIT": str(cpu_limit),
                    "LAB_CLASS_ROOT": str(self.class_root),
                    "LAB_HUB_IP": "127.0.0.1", "LAB_HUB_PORT": str(self.port), **ports,
                    "LAB_HUB_CULL_TIMEOUT": "0",
                    "PGLAB_TEST_HUB_TOKEN": self.token,
                    "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
                    **(extra_env or {})}
        self.proc: subprocess.Popen | None = None
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"token {self.token}"},
                                 timeout=60, trust_env=False)

    # ---- lifecycle
    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self, timeout: float = 90) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "test_config.py"
        config.write_text(_WRAPPER.format(config=str(HUB_CONFIG), service=TEST_SERVICE))
        log = open(self.log_file, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(config)], cwd=self.dir,
                                     env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HubError(f"the hub exited ({self.proc.returncode}):\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if self.http.get("/hub/api/users").status_code == 200:
                    return
            time.sleep(0.3)
        raise HubError(f"the hub did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """The hub stops every server it spawned (cleanup_servers) when it gets SIGTERM; what is
        left (a container of a hub that died) is removed, then the class network."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.http.close()
        for cid in self.containers():
            self.engine.docker("rm", "-f", cid, check=False, timeout=60)
        self.engine.docker("network", "rm", self.network, check=False, timeout=60)
        stop_services_of(int(self.env["LAB_HUB_API_PORT"]))  # those of a hub stopped while it was starting

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # ---- the hub's API
    def api(self, method: str, path: str, **kw) -> httpx.Response:
        return self.http.request(method, f"/hub/api{path}", **kw)

    def user(self, name: str) -> dict:
        r = self.api("GET", f"/users/{name}")
        if r.status_code == 404:
            r = self.api("POST", f"/users/{name}")
            assert r.status_code == 201, r.text
        return r.json()

    def start_server(self, name: str, timeout: float = 240) -> float:
        """Start ``name``'s server through the hub; returns the seconds until it is ready."""
        self.user(name)
        t0 = time.monotonic()
        r = self.api("POST", f"/users/{name}/server")
        assert r.status_code in (201, 202), f"{r.status_code} {r.text}\n{self.log_tail()}"
        while time.monotonic() - t0 < timeout:
            server = self.api("GET", f"/users/{name}").json().get("servers", {}).get("")
            if server and server.get("ready"):
                return time.monotonic() - t0
            if not server or server.get("stopped"):
                raise HubError(f"{name}'s server did not start:\n{self.log_tail()}")
            time.sleep(0.5)
        raise HubError(f"{name}'s server not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def stop_server(self, name: str, timeout: float = 120) -> float:
        t0 = time.monotonic()
        r = self.api("DELETE", f"/users/{name}/server")
        assert r.status_code in (202, 204), f"{r.status_code} {r.text}"
        while time.monotonic() - t0 < timeout:
            if "" not in self.api("GET", f"/users/{name}").json().get("servers", {}):
                return time.monotonic() - t0
            time.sleep(0.3)
        raise HubError(f"{name}'s server still there after {timeout:.0f} s:\n{self.log_tail()}")

    # ---- the engine's side
    def containers(self, all_states: bool = True) -> list[str]:
        """Ids of the containers on this hub's class network (ours alone)."""
        r = self.engine.docker("ps", "-q", *(["-a"] if all_states else []), "--filter",
                               f"network={self.network}", check=False, timeout=60)
        return r.stdout.split()

    def container_of(self, name: str) -> dict:
        """``docker inspect`` of ``name``'s container (named by DockerSpawner's default, jupyter-<name>)."""
        r = self.engine.docker("inspect", f"jupyter-{name}", timeout=60)
        return json.loads(r.stdout)[0]

    def kernel(self, name: str) -> "Kernel":
        return Kernel(self, name)


class Kernel:
    """A kernel in ``name``'s server, reached through the hub's proxy with the test's token."""

    def __init__(self, hub: DockerHub, name: str):
        self.hub, self.name = hub, name
        self.base = f"/user/{name}/api"
        r = hub.http.post(f"{self.base}/kernels", json={"name": "python3"})
        assert r.status_code == 201, f"{r.status_code} {r.text[:500]}"
        self.id = r.json()["id"]
        ws_url = f"ws://127.0.0.1:{hub.port}{self.base}/kernels/{self.id}/channels"
        self.ws = websocket.create_connection(ws_url, header=[f"Authorization: token {hub.token}"], timeout=300)
        self.session = uuid.uuid4().hex

    def run(self, code: str, timeout: float = 300) -> str:
        """Execute ``code``; returns its stdout (and the repr of its last expression).  An error in
        the kernel is raised with its traceback."""
        return run_in_kernel(self.ws.send, self._recv, code, self.name, self.name, self.session, timeout)

    def _recv(self, left: float) -> str:
        self.ws.settimeout(left)
        try:
            return self.ws.recv()
        except websocket.WebSocketTimeoutException:
            raise HubError(f"no reply from {self.name}'s kernel within {left:.0f} s") from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        with contextlib.suppress(Exception):
            self.hub.http.delete(f"{self.base}/kernels/{self.id}")


def remove_tree(path: Path) -> None:
    """The class root's files belong to the containers' uid: root removes them."""
    shutil.rmtree(path, ignore_errors=True)
