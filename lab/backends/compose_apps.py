"""The compose backend's lab apps: pgAdmin and the crypto app as services of the compose project
(``pgadmin``, ``web-app``), next to the nodes on the compose network."""
from __future__ import annotations

import os
import time
from pathlib import Path

from ..errors import LabError, ServerStartError, Timeout
from ..system import ports

PGADMIN_EMAIL = "student@lab.example.com"
PGADMIN_IMAGE = os.environ.get("LAB_PGADMIN_IMAGE", "dpage/pgadmin4:8")
DEFAULT_APP_IMAGE = "pglab/crypto-app:latest"
APP_START_TIMEOUT = 180


class ComposeApps:
    """Mixed into ComposeBackend (it provides client, cfg, state, home, owner, compose(), write_env())."""

    # --- pgAdmin (the compose service) -----------------------------------------------
    @property
    def pgadmin_servers_file(self) -> Path:
        return Path(self.cfg["env_file"]).parent / "pgadmin-servers.json"

    def pgadmin_servers(self) -> dict:
        """servers.json for the pgadmin container: nodes by service name inside the network."""
        from ..pgadmin import render_servers
        nodes = sorted(self.state["nodes"].values(), key=lambda n: n["name"] != self.state["primary"])
        servers = render_servers([(n["service"], n["role"], n["service"], 5432) for n in nodes],
                                 username=self.state["superuser"], maintenance_db=self.state["app_db"])
        for srv in servers["Servers"].values():  # no password file in the container: pgAdmin asks
            srv["ConnectionParameters"].pop("passfile", None)
        return servers

    def start_pgadmin(self, quiet: bool = False, timeout: float = 120):
        """The ``pgadmin`` service on 127.0.0.1 with every node preloaded; returns URL and login."""
        import json
        import urllib.request
        import docker.errors
        from ..pgadmin import PgAdmin
        try:
            self.client.images.get(PGADMIN_IMAGE)
        except docker.errors.ImageNotFound:
            try:
                self.client.images.pull(PGADMIN_IMAGE)
            except docker.errors.APIError:
                raise LabError(f"the pgAdmin image {PGADMIN_IMAGE} is not here and cannot be pulled: "
                               "pull it where a registry answers (or set LAB_PGADMIN_IMAGE)") from None
        port = ports.claim_one(self.cfg.get("pgadmin_port") or 0, self.owner) if self.cfg.get("pgadmin_port") \
            else ports.claim_free_ports(1, self.owner)[0]
        self.cfg["pgadmin_port"] = port
        self.home.save(self.state)
        self.pgadmin_servers_file.write_text(json.dumps(self.pgadmin_servers(), indent=2))
        os.chmod(self.pgadmin_servers_file, 0o644)  # read by the container's pgadmin user; no secret in it
        self.write_env()
        self.compose("--profile", "pgadmin", "up", "-d", "--no-deps", "pgadmin")
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(url + "/misc/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise Timeout(f"pgAdmin did not answer on {url} within {timeout:.0f} s: "
                              f"docker logs {self.cfg['prefix']}pgadmin")
            time.sleep(0.5)
        info = PgAdmin(url=url, email=PGADMIN_EMAIL, password=self.cfg["pgadmin_password"], port=port,
                       pid=None, running=True, home=str(self.home.path))
        if not quiet:
            print(repr(info) + f"\n  servers: {', '.join(n['service'] for n in self.state['nodes'].values())} "
                  f"(user {self.state['superuser']}, password: cluster.credentials['password'])")
        return info

    # --- the crypto app (the web-app service) ---------------------------------------------
    def start_webapp(self, quiet: bool = False, timeout: float = APP_START_TIMEOUT):
        """The ``web-app`` service: the crypto app's API, dashboard and price feed in one container,
        reaching the nodes by service name; API and dashboard published on 127.0.0.1.  Starting it
        again re-creates it only if its settings changed (e.g. the primary after a failover).
        Returns a ``lab.webapp.WebApp`` (URLs and the API token)."""
        import docker.errors
        from ..webapp import WebApp
        image = self.cfg.get("app_image") or os.environ.get("LAB_APP_IMAGE", DEFAULT_APP_IMAGE)
        self.cfg["app_image"] = image
        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound:
            self.write_env()
            r = self.compose("--profile", "app", "build", "web-app", check=False, timeout=1800)
            if r.returncode != 0:
                tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-8:])
                raise ServerStartError(f"building the app image {image} failed; last lines:\n{tail}")
        # the old ports first, unless a node or pgAdmin of this lab has one now (claim() would say "ours")
        taken = {n["port"] for n in self.state["nodes"].values()} | {self.cfg.get("pgadmin_port")}
        old = [p for p in self.cfg.get("app_ports") or [] if p not in taken]
        api_port, dash_port = ports.claim_free_ports(2, self.owner, preferred=old)
        self.cfg["app_ports"] = [api_port, dash_port]
        self.home.save(self.state)
        self.write_env()
        self.compose("--profile", "app", "up", "-d", "--no-deps", "--no-build", "web-app")
        api, dash = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{dash_port}"
        self._wait_webapp([api + "/health", dash + "/_stcore/health"], timeout)
        info = WebApp(api_url=api, dashboard_url=dash, token=self.cfg["app_token"], pids={}, running=True,
                      home=str(self.home.path))
        if not quiet:
            print(repr(info) + f"\n  container: {self.cfg['prefix']}web-app (docker logs {self.cfg['prefix']}web-app)")
        return info

    def _wait_webapp(self, urls, timeout: float) -> None:
        import urllib.request
        import docker.errors
        name = self.cfg["prefix"] + "web-app"
        deadline = time.monotonic() + timeout
        todo = list(urls)
        while todo:
            try:
                with urllib.request.urlopen(todo[0], timeout=2) as r:
                    if r.status == 200:
                        todo.pop(0)
                        continue
            except OSError:
                pass
            try:
                c = self.client.containers.get(name)
                stopped = c.status in ("exited", "dead")
            except docker.errors.NotFound:
                c, stopped = None, True
            if stopped or time.monotonic() > deadline:
                tail = c.logs(tail=8).decode("utf-8", "replace").strip() if c else ""
                what = "stopped while starting" if stopped else f"did not answer on {todo[0]} within {timeout:.0f} s"
                raise ServerStartError(f"the crypto app ({name}) {what}; last log lines:\n{tail}")
            time.sleep(0.25)

    def stop_webapp(self) -> bool:
        """Stop and remove the ``web-app`` container and release its ports (the token is kept);
        True if it ran."""
        import docker.errors
        try:
            was = self.client.containers.get(self.cfg["prefix"] + "web-app").status == "running"
        except docker.errors.NotFound:
            was = False
        if Path(self.cfg["env_file"]).exists():
            self.compose("--profile", "app", "rm", "-f", "-s", "web-app", check=False, timeout=120)
        ports.release(self.cfg.get("app_ports") or [], self.owner)
        return was
