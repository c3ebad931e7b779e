"""The compose backend's place for the lab's apps: pgAdmin as the ``pgadmin`` service of the
compose project, next to the nodes on the compose network.  The crypto app runs on the host
(``start_app`` answers None: lab.services supervises it) and reaches the containers through
their 127.0.0.1 ports; its container, the ``web-app`` service, is ``start_webapp()``.

What an app is given comes in as plain data (pgAdmin's servers.json, rendered by
lab.services); what comes back is an ``AppEndpoints``.
"""
from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

from ..i18n import _
from ..errors import LabError, ServerStartError, Timeout
from ..system import jupyterenv, ports
from .apps import HOST, AppEndpoints, AppNode

PGADMIN_EMAIL = "student@lab.example.com"
DEFAULT_PGADMIN_IMAGE = "dpage/pgadmin4:8"  # without a registry: compose/pgadmin.Dockerfile, LAB_PGADMIN_IMAGE
DEFAULT_APP_IMAGE = "pglab/crypto-app:latest"
APP_START_TIMEOUT = 180
PGADMIN_START_TIMEOUT = 120


def pgadmin_image() -> str:
    """The pgAdmin image the ``pgadmin`` service runs: ``LAB_PGADMIN_IMAGE`` (read when it starts), else
    the official one."""
    return os.environ.get("LAB_PGADMIN_IMAGE") or DEFAULT_PGADMIN_IMAGE


class ComposeApps:
    """Mixed into ComposeBackend (it provides client, cfg, state, home, owner, compose(), write_env())."""

    # --- the AppHost contract (lab/backends/apps.py) -------------------------------------
    def app_node(self, spec: dict) -> AppNode:
        """Inside the compose network a node is its service, on PostgreSQL's own port."""
        return AppNode(name=spec["service"], host=spec["service"], port=5432)

    def start_app(self, name: str, config: "dict | None" = None, quiet: bool = False) -> "AppEndpoints | None":
        if name == "pgadmin":
            return self.start_pgadmin((config or {})["servers"], quiet=quiet)
        return None  # the crypto app runs on the host, on the containers' published ports

    def stop_app(self, name: str) -> bool:
        if name == "pgadmin":
            return self._stop_service("pgadmin", "pgadmin", [self.cfg.get("pgadmin_port")])
        return False  # the crypto app is not the backend's (``down()`` removes a web-app container)

    # --- pgAdmin (the compose service) -----------------------------------------------
    @property
    def pgadmin_servers_file(self) -> Path:
        return Path(self.cfg["env_file"]).parent / "pgadmin-servers.json"

    def start_pgadmin(self, servers: dict, quiet: bool = False,
                      timeout: float = PGADMIN_START_TIMEOUT) -> AppEndpoints:
        """The ``pgadmin`` service on 127.0.0.1 with ``servers`` (servers.json) preloaded."""
        import docker.errors  # lazy: the docker SDK takes 0.3-2 s to import; only compose runs need it
        image = pgadmin_image()
        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound:
            try:
                self.client.images.pull(image)
            except docker.errors.APIError:
                raise LabError(_("the pgAdmin image {image} is not here and cannot be pulled: "
                                 "pull it where a registry answers (or set LAB_PGADMIN_IMAGE)").format(
                    image=image)) from None
        port = ports.claim_one(self.cfg.get("pgadmin_port") or 0, self.owner) if self.cfg.get("pgadmin_port") \
            else ports.claim_free_ports(1, self.owner)[0]
        self.cfg["pgadmin_port"] = port
        self.home.save(self.state)
        servers = json.loads(json.dumps(servers))
        for srv in servers["Servers"].values():  # no password file in the container: pgAdmin asks
            srv["ConnectionParameters"].pop("passfile", None)
        self.pgadmin_servers_file.write_text(json.dumps(servers, indent=2))
        os.chmod(self.pgadmin_servers_file, 0o644)  # read by the container's pgadmin user; no secret in it
        self.write_env()
        self.compose("--profile", "pgadmin", "up", "-d", "--no-deps", "pgadmin")
        url = f"http://{HOST}:{port}"
        deadline = time.monotonic() + timeout
        while not _answers(url + "/misc/ping"):
            if time.monotonic() > deadline:
                raise Timeout(_("pgAdmin did not answer on {url} within {timeout:.0f} s: "
                                "docker logs {prefix}pgadmin").format(
                    url=url, timeout=timeout, prefix=self.cfg['prefix']))
            time.sleep(0.5)
        names = ", ".join(s["Name"] for s in servers["Servers"].values())
        return AppEndpoints(urls={"pgadmin": url}, login={"email": PGADMIN_EMAIL, "password": self.cfg["pgadmin_password"]},
                            ports=(port,), where=_("servers: {names} (user {user}, "
                                                   "password: cluster.credentials['password'])").format(
                                names=names, user=self.state['superuser']))

    # --- the crypto app (the web-app service) ---------------------------------------------
    def start_webapp(self, quiet: bool = False, timeout: float = APP_START_TIMEOUT) -> AppEndpoints:
        """The ``web-app`` service: the crypto app's API, dashboard and price feed in one container,
        reaching the nodes by service name; API and dashboard published on 127.0.0.1.  Starting it
        again re-creates it only if its settings changed (e.g. the primary after a failover).
        Returns its URLs (``api``, ``dashboard``) and its API token."""
        import docker.errors  # lazy: the docker SDK takes 0.3-2 s to import; only compose runs need it
        image = self.cfg.get("app_image") or os.environ.get("LAB_APP_IMAGE", DEFAULT_APP_IMAGE)
        self.cfg["app_image"] = image
        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound:
            self.write_env()
            r = self.compose("--profile", "app", "build", "web-app", check=False, timeout=1800)
            if r.returncode != 0:
                tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-8:])
                raise ServerStartError(_("building the app image {image} failed; last lines:\n{log_lines}").format(
                    image=image, log_lines=tail))
        # the old ports first, unless a node or pgAdmin of this lab has one now (claim() would say "ours")
        taken = {n["port"] for n in self.state["nodes"].values()} | {self.cfg.get("pgadmin_port")}
        old = [p for p in self.cfg.get("app_ports") or [] if p not in taken]
        api_port, dash_port = ports.claim_free_ports(2, self.owner, preferred=old)
        self.cfg["app_ports"] = [api_port, dash_port]
        self.home.save(self.state)
        self.write_env()
        self.compose("--profile", "app", "up", "-d", "--no-deps", "--no-build", "web-app")
        api, dash = f"http://{HOST}:{api_port}", f"http://{HOST}:{dash_port}"
        self._wait_webapp([api + "/health", dash + "/_stcore/health"], timeout)
        name = self.cfg["prefix"] + "web-app"
        # what a browser opens: behind a hub, the Jupyter server's proxy of these host ports; the
        # container is not told a prefix, so the proxy strips it (/proxy/<port>/)
        public_api = jupyterenv.browser_url(api_port, "/", absolute=False).rstrip("/")
        public_dash = jupyterenv.browser_url(dash_port, "/", absolute=False)
        info = AppEndpoints(urls={"api": api, "dashboard": dash, "public_api": public_api,
                                  "public_dashboard": public_dash},
                            login={"token": self.cfg["app_token"]},
                            ports=(api_port, dash_port), where=_("container: {name} (docker logs {name})").format(
                                name=name))
        if not quiet:
            print(_("crypto app running\n  dashboard: {dashboard}\n  API:       {api}\n  {where}").format(
                dashboard=public_dash, api=public_api, where=info.where))
        return info

    def _wait_webapp(self, urls, timeout: float) -> None:
        import docker.errors  # lazy: the docker SDK takes 0.3-2 s to import; only compose runs need it
        name = self.cfg["prefix"] + "web-app"
        deadline = time.monotonic() + timeout
        todo = list(urls)
        while todo:
            if _answers(todo[0]):
                todo.pop(0)
                continue
            try:
                c = self.client.containers.get(name)
                stopped = c.status in ("exited", "dead")
            except docker.errors.NotFound:
                c, stopped = None, True
            if stopped or time.monotonic() > deadline:
                tail = c.logs(tail=8).decode("utf-8", "replace").strip() if c else ""
                if stopped:
                    what = _("stopped while starting")
                else:
                    what = _("did not answer on {url} within {timeout:.0f} s").format(url=todo[0], timeout=timeout)
                raise ServerStartError(_("the crypto app ({name}) {what}; last log lines:\n{log_lines}").format(
                    name=name, what=what, log_lines=tail))
            time.sleep(0.25)

    def stop_webapp(self) -> bool:
        """Stop and remove the ``web-app`` container and release its ports (the token is kept);
        True if it ran."""
        return self._stop_service("app", "web-app", self.cfg.get("app_ports") or [])

    def _stop_service(self, profile: str, service: str, held) -> bool:
        import docker.errors  # lazy: the docker SDK takes 0.3-2 s to import; only compose runs need it
        try:
            was = self.client.containers.get(self.cfg["prefix"] + service).status == "running"
        except docker.errors.NotFound:
            was = False
        if Path(self.cfg["env_file"]).exists():
            self.compose("--profile", profile, "rm", "-f", "-s", service, check=False, timeout=120)
        ports.release([p for p in held if p], self.owner)
        return was


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False
