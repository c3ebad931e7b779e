"""The crypto app (``app/``) as a service of a lab home: its API, live price feed and dashboard
as three supervised processes, given the cluster's DSNs through their APP_* variables.

The app knows nothing of the lab.  Everything it keeps lives in ``<lab home>/webapp/``
(mode 0700): ``webapp.json`` (ports, pids, URLs and the generated API token; mode 0600) and
one log per process.  ``start()`` again re-attaches to a running app; a restarted kernel finds
it the same way.  Its ports are claimed like the nodes' and released by ``stop()``.

Two sets of URLs: the lab's own requests (health checks, the API client) go to 127.0.0.1, while
what a student's browser opens (the printed links, the embedded dashboard) goes through their
Jupyter server's proxy where the lab runs behind JupyterHub or Binder (lab.system.jupyterenv).
The app is then told the paths it is reached under: the API's root path, which the proxy strips
(``/proxy/<port>``; /docs then finds its OpenAPI document), and the dashboard's base URL path,
which the proxy keeps (``/proxy/absolute/<port>``).
"""
from __future__ import annotations

import datetime as dt
import html
import json
import secrets
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..i18n import N_, _
from .. import i18n
from ..errors import LabError
from ..system import jupyterenv
from ..system.paths import REPO
from .supervisor import HOST, Service, answers

if TYPE_CHECKING:
    from ..cluster import Cluster

NAME = "webapp"
START_TIMEOUT = 90.0
PROCESSES = ("api", "feed", "dashboard")


@dataclass
class WebApp:
    """Where the app answers; shows as links (and the dashboard embedded) in a notebook.

    ``api_url`` and ``dashboard_url`` are where this machine reaches it (127.0.0.1: what the lab's
    client and health checks use); ``public_api_url`` and ``public_dashboard_url`` are what a
    student's browser opens: the same where the browser runs on this machine, the Jupyter server's
    proxy behind a hub or Binder.  The repr, the links and the embedded dashboard show the public ones."""

    api_url: "str | None"
    dashboard_url: "str | None"
    token: str = field(repr=False)
    pids: dict
    running: bool
    home: str = ""
    public_api_url: "str | None" = None
    public_dashboard_url: "str | None" = None

    def __post_init__(self):
        self.public_api_url = self.public_api_url or self.api_url
        self.public_dashboard_url = self.public_dashboard_url or self.dashboard_url

    @property
    def docs_url(self) -> "str | None":
        return f"{self.api_url}/docs" if self.api_url else None

    @property
    def public_docs_url(self) -> "str | None":
        return f"{self.public_api_url}/docs" if self.public_api_url else None

    def __repr__(self):
        if not self.running:
            return _("crypto app: stopped (lab.webapp.start(cluster) starts it)")
        return (_("crypto app running\n  dashboard: {dashboard}\n  API:       {api} "
                  "(docs {docs})\n  POST /ticks needs: Authorization: Bearer <token> "
                  "(lab.webapp.client(cluster) has it)").format(
            dashboard=self.public_dashboard_url, api=self.public_api_url, docs=self.public_docs_url))

    def _repr_html_(self):
        e = html.escape
        if not self.running:
            return _("<p>crypto app: <b>stopped</b> (<code>lab.webapp.start(cluster)</code> starts it)</p>")
        dash, docs = self.public_dashboard_url, self.public_docs_url
        dashboard = e(_("dashboard"))
        return ("<table>"
                f"<tr><th style='text-align:left'>{dashboard}</th><td><a href='{e(dash)}' "
                f"target='_blank'>{e(dash)}</a></td></tr>"
                f"<tr><th style='text-align:left'>API</th><td><a href='{e(docs)}' target='_blank'>"
                f"{e(docs)}</a></td></tr></table>"
                f"<iframe src='{e(dash)}' width='100%' height='640' style='border:1px solid #ddd'>"
                "</iframe>")


def service(where=None) -> Service:
    """The crypto app's service of a lab home (a Cluster, a LabHome, a path, or the default home)."""
    return Service(where, NAME, title=N_("the app"))


def app_env(cluster: "Cluster", token: str, api_port: int, dashboard_port: int, read_from: str = "replicas",
            tick_rate: float = 1.0, api_root_path: str = "", dashboard_base_path: str = "",
            api_public_url: str = "") -> dict:
    """The app's APP_* variables for this cluster: writes to its primary, reads from its replicas;
    behind a proxy, the paths its API and dashboard are reached under (``base_paths()``) and the
    API's URL for the dashboard's link."""
    return {
        "APP_PRIMARY_DSN": cluster.primary.dsn,
        "APP_REPLICA_DSNS": json.dumps([n.dsn for n in cluster.nodes if n.name != cluster.primary.name]),
        "APP_READ_FROM": read_from,
        "APP_API_HOST": HOST,
        "APP_API_PORT": str(api_port),
        "APP_DASHBOARD_PORT": str(dashboard_port),
        "APP_API_URL": f"http://{HOST}:{api_port}",
        "APP_API_TOKEN": token,
        "APP_POOL_SIZE": "3",          # the nodes allow 40 connections: leave room for the notebooks
        "APP_NODE_RETRY_S": "1",
        "APP_TICK_RATE": str(tick_rate),
        "APP_HISTORY_DAYS": "7",
        "APP_HISTORY_STEP_S": "60",
        "APP_API_ROOT_PATH": api_root_path,
        "APP_API_PUBLIC_URL": api_public_url,
        "APP_DASHBOARD_BASE_PATH": dashboard_base_path,
        "APP_LANG": i18n.current(),  # the dashboard's labels in the student's language (app/i18n.py)
    }


def base_paths(api_port: int, dashboard_port: int) -> "list[str]":
    """The paths the API and the dashboard are reached under: "" for both unless behind a proxy.
    uvicorn takes its root path as one the proxy strips; Streamlit answers under its base path."""
    return [jupyterenv.base_path(api_port, absolute=False), jupyterenv.base_path(dashboard_port)]


def _urls(api_port: int, dashboard_port: int, paths: "list[str]") -> dict:
    """The app's URLs in its state: internal (127.0.0.1; the dashboard under its base path) and public."""
    return {"api_url": f"http://{HOST}:{api_port}", "dashboard_url": f"http://{HOST}:{dashboard_port}{paths[1]}",
            "public_api_url": jupyterenv.browser_url(api_port, "/", absolute=False).rstrip("/"),
            "public_dashboard_url": jupyterenv.browser_url(dashboard_port, "/"),  # the page: no redirect
            "base_paths": paths}


def _topology(cluster: "Cluster") -> dict:
    """Who the app writes to and reads from, as its settings name them (ports included)."""
    return {"primary": [cluster.primary.name, cluster.primary.port],
            "replicas": [[n.name, n.port] for n in cluster.nodes if n.name != cluster.primary.name]}


def _info(svc: Service, state: dict, running: bool) -> WebApp:
    return WebApp(api_url=state.get("api_url") if running else None,
                  dashboard_url=state.get("dashboard_url") if running else None,
                  token=state.get("token", ""), pids=state.get("pids", {}) if running else {},
                  running=running, home=str(svc.home.path),
                  public_api_url=state.get("public_api_url") if running else None,
                  public_dashboard_url=state.get("public_dashboard_url") if running else None)


def start(cluster: "Cluster", quiet: bool = False, feed: bool = True, read_from: str = "replicas",
          tick_rate: float = 1.0, timeout: float = START_TIMEOUT) -> WebApp:
    """Start the app for this cluster (or re-attach to the running one): schema and 7 days of
    history on the primary, then the API, the live price feed and the dashboard."""
    if read_from not in ("replicas", "primary"):
        raise LabError(_("read_from={read_from!r}: 'replicas' (the default) or 'primary'").format(read_from=read_from))
    jupyterenv.links()  # a bad LAB_LINKS or proxy prefix: say so before anything starts
    note = jupyterenv.notice()
    if note:
        _say(quiet, note)
    hosted = cluster.backend.start_app(NAME, {"feed": feed, "read_from": read_from, "tick_rate": tick_rate},
                                       quiet=quiet)
    if hosted is not None:  # the backend runs it
        return WebApp(api_url=hosted.urls["api"], dashboard_url=hosted.urls["dashboard"],
                      token=hosted.login.get("token", ""), pids={}, running=True, home=str(cluster.home.path),
                      public_api_url=hosted.urls.get("public_api"),
                      public_dashboard_url=hosted.urls.get("public_dashboard"))
    svc = service(cluster)
    with svc.locked():
        state = svc.read_state()
        pids = state.get("pids", {})
        cluster._reload()
        topology = _topology(cluster)
        alive = bool(state) and svc.running(pids, [w for w in PROCESSES if w != "feed" or state.get("feed")])
        if alive and state.get("topology") != topology:
            # a failover since the start: the app's DSNs name the old roles; start it again with the new
            _say(quiet, _("the cluster changed since the app started (primary now {primary}): "
                          "restarting the app with the new connection strings").format(primary=cluster.primary.name))
            alive = False
        if alive and state.get("base_paths", ["", ""]) != base_paths(state["api_port"], state["dashboard_port"]):
            # started behind another proxy prefix, or without one: its pages would point elsewhere
            _say(quiet, _("the app's links changed since it started (a hub, Binder or LAB_LINKS): restarting it"))
            alive = False
        if alive and answers(state["api_url"] + "/health"):
            svc.claim_again([state.get("api_port"), state.get("dashboard_port")])
            _say(quiet, _("the crypto app is running: re-attached"))
            info = _info(svc, state, True)
            _say(quiet, repr(info))
            return info
        _stop_locked(svc)
        if not cluster.primary.is_running:
            raise LabError(_("the primary ({primary}) is stopped: cluster.start() first, "
                             "the app creates its tables there").format(primary=cluster.primary.name))
        t0 = time.monotonic()
        token = state.get("token") or secrets.token_urlsafe(24)
        with svc.starting(keep=("token",)) as run:
            api_port, dash_port = run.claim_ports(2, avoid={n.port for n in cluster.nodes},
                                                  preferred=[state.get("api_port"), state.get("dashboard_port")])
            paths = base_paths(api_port, dash_port)
            urls = _urls(api_port, dash_port, paths)
            env = app_env(cluster, token, api_port, dash_port, read_from, tick_rate, *paths,
                          api_public_url=urls["public_api_url"] if paths[0] else "")
            state = {"token": token, "api_port": api_port, "dashboard_port": dash_port, "feed": feed,
                     "ports": [api_port, dash_port], "pids": run.pids, **urls,
                     "read_from": read_from, "topology": topology,
                     "started": dt.datetime.now(dt.timezone.utc).isoformat()}
            svc.write_state(state)
            fill = subprocess.run([sys.executable, "-m", "app", "simulate", "--backfill-only"], cwd=REPO,
                                  env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout)
            if fill.returncode != 0:
                raise LabError(_("the app could not prepare its tables: {reason}").format(
                    reason=_last(fill.stderr or fill.stdout)))
            procs = [("api", ["api"], state["api_url"] + "/health"),
                     ("dashboard", ["dashboard"], state["dashboard_url"] + "/_stcore/health")]
            if feed:
                procs.insert(1, ("feed", ["simulate"], None))
            for what, args, url in procs:
                proc = run.spawn(what, [sys.executable, "-m", "app", *args], env=env, cwd=REPO)
                svc.write_state(state)  # a kernel that dies meanwhile leaves pids a next start can stop
                if url:
                    run.wait_ready(what, proc, url, timeout)
        info = _info(svc, state, True)
        _say(quiet, _("crypto app started in {seconds:.1f} s ({backfill})").format(
            seconds=time.monotonic() - t0, backfill=fill.stdout.strip().splitlines()[0]))
        _say(quiet, repr(info))
        return info


def stop(where=None, quiet: bool = False, wipe: bool = False) -> bool:
    """Stop this lab home's app (a Cluster, a lab home path, or the default home); True if it ran.
    Its token is kept; ``wipe=True`` removes its directory too."""
    backend = getattr(where, "backend", None)  # a Cluster: its backend may run the app itself
    was = bool(backend is not None and backend.stop_app(NAME))
    svc = service(where)
    if not svc.exists():
        return was
    with svc.locked():
        was = _stop_locked(svc) or was
    if wipe:
        svc.wipe()
    _say(quiet, _("crypto app stopped") if was else _("crypto app was not running"))
    return was


def _stop_locked(svc: Service) -> bool:
    state = svc.read_state()
    was = svc.stop(keep=("token",))
    svc.release_ports([state.get("api_port"), state.get("dashboard_port")])
    return was


def status(where=None) -> WebApp:
    """Is the app running for this lab home, and where?"""
    svc = service(where)
    state = svc.read_state()
    running = bool(state.get("pids")) and svc.ours(state["pids"].get("api"))
    return _info(svc, state, running)


def _say(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, flush=True)


def _last(text: str) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else _("no output")
