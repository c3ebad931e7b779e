"""The crypto app (``app/``) on the lab's cluster: its API, dashboard and price feed as processes.

>>> app = lab.webapp.start(cluster)        # doctest: +SKIP
>>> app                                    # the URLs as links, and the dashboard embedded
>>> lab.webapp.spread(cluster, n=30)       # which node served 30 reads
>>> lab.webapp.stop(cluster)               # doctest: +SKIP

The app gets the cluster's DSNs (writes to the primary, reads from the replicas) through its
APP_* variables and knows nothing of the lab.  Everything it keeps lives in
``<lab home>/webapp/`` (mode 0700): ``webapp.json`` (ports, pids, URLs and the generated API
token; mode 0600) and one log per process.  ``start()`` again re-attaches to a running app;
a restarted kernel finds it the same way.  Ports are claimed like the nodes' (lab/ports.py)
and released by ``stop()``.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import html
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .system import ports
from .errors import LabError
from .system.home import LabHome
from .system.process import pid_alive

HOST = "127.0.0.1"
START_TIMEOUT = 90.0
REPO = Path(__file__).resolve().parent.parent
PROCESSES = ("api", "feed", "dashboard")
_MARK = "LAB_WEBAPP_HOME"  # in every process's environment: how a pid is known to be ours


@dataclass
class WebApp:
    """Where the app answers; shows as links (and the dashboard embedded) in a notebook."""

    api_url: "str | None"
    dashboard_url: "str | None"
    token: str = field(repr=False)
    pids: dict
    running: bool
    home: str = ""

    @property
    def docs_url(self) -> "str | None":
        return f"{self.api_url}/docs" if self.api_url else None

    def __repr__(self):
        if not self.running:
            return "crypto app: stopped (lab.webapp.start(cluster) starts it)"
        return (f"crypto app running\n  dashboard: {self.dashboard_url}\n  API:       {self.api_url} "
                f"(docs {self.docs_url})\n  POST /ticks needs: Authorization: Bearer <token> "
                "(lab.webapp.client(cluster) has it)")

    def _repr_html_(self):
        e = html.escape
        if not self.running:
            return "<p>crypto app: <b>stopped</b> (<code>lab.webapp.start(cluster)</code> starts it)</p>"
        return ("<table>"
                f"<tr><th style='text-align:left'>dashboard</th><td><a href='{e(self.dashboard_url)}' "
                f"target='_blank'>{e(self.dashboard_url)}</a></td></tr>"
                f"<tr><th style='text-align:left'>API</th><td><a href='{e(self.docs_url)}' target='_blank'>"
                f"{e(self.docs_url)}</a></td></tr></table>"
                f"<iframe src='{e(self.dashboard_url)}' width='100%' height='640' style='border:1px solid #ddd'>"
                "</iframe>")


class _Files:
    def __init__(self, home: LabHome):
        self.home = home
        self.dir = home.path / "webapp"
        self.state = self.dir / "webapp.json"
        self.lock = self.dir / "lock"

    def ensure(self) -> None:
        self.home.ensure()
        self.dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.dir, 0o700)

    def log(self, what: str) -> Path:
        return self.dir / f"{what}.log"

    def read(self) -> dict:
        try:
            return json.loads(self.state.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def write(self, state: dict) -> None:
        tmp = self.state.with_name(f".webapp.json.tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(state, f, indent=2, sort_keys=True)
        os.replace(tmp, self.state)


def _home_of(where) -> LabHome:
    if isinstance(where, LabHome):
        return where
    home = getattr(where, "home", None)  # a Cluster
    return home if isinstance(home, LabHome) else LabHome(where)


def _ours(pid, files: _Files) -> bool:
    """Is ``pid`` alive and one of this lab home's app processes (not a recycled pid)?"""
    if not pid or not pid_alive(pid):
        return False
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except FileNotFoundError:
        return True  # no /proc (macOS): alive is the best we know
    except OSError:
        return False
    return f"{_MARK}={files.home.path}".encode() in env


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _info(files: _Files, state: dict, running: bool) -> WebApp:
    return WebApp(api_url=state.get("api_url") if running else None,
                  dashboard_url=state.get("dashboard_url") if running else None,
                  token=state.get("token", ""), pids=state.get("pids", {}) if running else {},
                  running=running, home=str(files.home.path))


def app_env(cluster, token: str, api_port: int, dashboard_port: int, read_from: str = "replicas",
            tick_rate: float = 1.0) -> dict:
    """The app's APP_* variables for this cluster: writes to its primary, reads from its replicas."""
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
    }


def _topology(cluster) -> dict:
    """Who the app writes to and reads from, as its settings name them (ports included)."""
    return {"primary": [cluster.primary.name, cluster.primary.port],
            "replicas": [[n.name, n.port] for n in cluster.nodes if n.name != cluster.primary.name]}


def _spawn(files: _Files, what: str, args: list, env: dict) -> subprocess.Popen:
    fd = os.open(files.log(what), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    child_env = {**os.environ, **env, _MARK: str(files.home.path), "PYTHONUNBUFFERED": "1",
                 "HOME": os.environ.get("HOME") or str(files.dir)}
    with os.fdopen(fd, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "app", *args], cwd=REPO, env=child_env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)


def _tail(path: Path, n: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").strip().splitlines()[-n:])
    except OSError:
        return ""


def _wait(files: _Files, what: str, proc: subprocess.Popen, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _answers(url):
        if proc.poll() is not None:
            raise LabError(f"the app's {what} exited (code {proc.returncode}) before answering on {url}; "
                           f"its last lines:\n{_tail(files.log(what))}")
        if time.monotonic() > deadline:
            raise LabError(f"the app's {what} did not answer on {url} within {timeout:.0f} s; "
                           f"its last lines:\n{_tail(files.log(what))}")
        time.sleep(0.1)


def _claim_ports(files: _Files, cluster, old: list) -> list:
    node_ports = {n.port for n in cluster.nodes}
    preferred = [p for p in old if p and p not in node_ports]
    for _ in range(20):
        got = ports.claim_free_ports(2, files.home.owner, preferred=preferred)
        if not set(got) & node_ports and all(ports.port_is_free(p) for p in got):
            return got
        ports.release(got, files.home.owner)
        preferred = []
    raise LabError("found no two free ports for the app on 127.0.0.1: stop other servers, then retry")


def start(cluster, quiet: bool = False, feed: bool = True, read_from: str = "replicas",
          tick_rate: float = 1.0, timeout: float = START_TIMEOUT) -> WebApp:
    """Start the app for this cluster (or re-attach to the running one): schema and 7 days of
    history on the primary, then the API, the live price feed and the dashboard."""
    if read_from not in ("replicas", "primary"):
        raise LabError(f"read_from={read_from!r}: 'replicas' (the default) or 'primary'")
    files = _Files(cluster.home)
    files.ensure()
    from .pgadmin import _flock
    with _flock(files.lock):
        state = files.read()
        pids = state.get("pids", {})
        cluster._reload()
        topology = _topology(cluster)
        alive = state and all(_ours(pids.get(w), files) for w in PROCESSES if w != "feed" or state.get("feed"))
        if alive and state.get("topology") != topology:
            # a failover since the start: the app's DSNs name the old roles; start it again with the new
            _say(quiet, f"the cluster changed since the app started (primary now {cluster.primary.name}): "
                        "restarting the app with the new connection strings")
            alive = False
        if alive and _answers(state["api_url"] + "/health"):
            with contextlib.suppress(LabError):
                ports.claim(state["api_port"], files.home.owner)
                ports.claim(state["dashboard_port"], files.home.owner)
            _say(quiet, "the crypto app is running: re-attached")
            info = _info(files, state, True)
            _say(quiet, repr(info))
            return info
        _stop_locked(files)
        if not cluster.primary.is_running:
            raise LabError(f"the primary ({cluster.primary.name}) is stopped: cluster.start() first, "
                           "the app creates its tables there")
        t0 = time.monotonic()
        token = state.get("token") or secrets.token_urlsafe(24)
        api_port, dash_port = _claim_ports(files, cluster, [state.get("api_port"), state.get("dashboard_port")])
        env = app_env(cluster, token, api_port, dash_port, read_from, tick_rate)
        state = {"token": token, "api_port": api_port, "dashboard_port": dash_port, "feed": feed,
                 "api_url": f"http://{HOST}:{api_port}", "dashboard_url": f"http://{HOST}:{dash_port}",
                 "read_from": read_from, "topology": topology, "pids": {}, "started": dt.datetime.now(dt.timezone.utc).isoformat()}
        started = []
        try:
            fill = subprocess.run([sys.executable, "-m", "app", "simulate", "--backfill-only"], cwd=REPO,
                                  env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout)
            if fill.returncode != 0:
                raise LabError(f"the app could not prepare its tables: {_last(fill.stderr or fill.stdout)}")
            procs = [("api", ["api"], state["api_url"] + "/health"),
                     ("dashboard", ["dashboard"], state["dashboard_url"] + "/_stcore/health")]
            if feed:
                procs.insert(1, ("feed", ["simulate"], None))
            for what, args, url in procs:
                proc = _spawn(files, what, args, env)
                started.append(proc.pid)
                state["pids"][what] = proc.pid
                files.write(state)
                if url:
                    _wait(files, what, proc, url, timeout)
        except BaseException:
            for pid in started:
                _terminate(pid)
            ports.release([api_port, dash_port], files.home.owner)
            files.write({"token": token})
            raise
        info = _info(files, state, True)
        _say(quiet, f"crypto app started in {time.monotonic() - t0:.1f} s ({fill.stdout.strip().splitlines()[0]})")
        _say(quiet, repr(info))
        return info


def stop(where=None, quiet: bool = False, wipe: bool = False) -> bool:
    """Stop this lab home's app (a Cluster, a lab home path, or the default home); True if it ran.
    Its token is kept; ``wipe=True`` removes its directory too."""
    files = _Files(_home_of(where))
    if not files.dir.is_dir():
        return False
    from .pgadmin import _flock
    with _flock(files.lock):
        was = _stop_locked(files)
    if wipe:
        import shutil
        shutil.rmtree(files.dir, ignore_errors=True)
    _say(quiet, "crypto app stopped" if was else "crypto app was not running")
    return was


def _stop_locked(files: _Files) -> bool:
    state = files.read()
    was = False
    for what, pid in state.get("pids", {}).items():
        if _ours(pid, files):
            _terminate(pid)
            was = True
    for key in ("api_port", "dashboard_port"):
        if state.get(key):
            ports.release([state[key]], files.home.owner)
    if state:
        files.write({"token": state.get("token")} if state.get("token") else {})
    return was


def _terminate(pid: int) -> None:
    from .pgadmin import _terminate as terminate_group  # SIGTERM to the group, SIGKILL after a while
    terminate_group(pid, 10)


def status(where=None) -> WebApp:
    files = _Files(_home_of(where))
    state = files.read()
    running = bool(state.get("pids")) and _ours(state["pids"].get("api"), files)
    return _info(files, state, running)


def _say(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, flush=True)


def _last(text: str) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


# --- from a notebook: call the API -----------------------------------------------------------
def client(where=None):
    """An ``app.client.ApiClient`` of the running app (with its token, for POST /ticks)."""
    info = status(where)
    if not info.running:
        raise LabError("the crypto app is not running: lab.webapp.start(cluster)")
    from app.client import ApiClient
    return ApiClient(info.api_url, token=info.token)


def reads(where=None, path: str = "/prices/BTC", n: int = 20, min_lsn: "str | None" = None) -> pd.DataFrame:
    """``n`` reads of ``path``: which node served each, its role, its lag, and why a replica did not."""
    rows = []
    with client(where) as api:
        for i in range(n):
            r = api._http.get(path, params={"min_lsn": min_lsn} if min_lsn else None)
            rows.append({"read": i + 1, "status": r.status_code, "served_by": r.headers.get("X-Served-By"),
                         "role": r.headers.get("X-Served-Role"), "lag_ms": r.headers.get("X-Replica-Lag-Ms"),
                         "fallback": r.headers.get("X-Read-Fallback", "")})
    return pd.DataFrame(rows)


def spread(where=None, path: str = "/prices/BTC", n: int = 20, wait: float = 0) -> pd.DataFrame:
    """How ``n`` reads of ``path`` spread over the nodes: one row per node that served some.
    ``wait``: first give the app up to this many seconds to find its replicas again (it skips a
    replica that failed for APP_NODE_RETRY_S, 1 s here)."""
    deadline = time.monotonic() + wait
    while wait and time.monotonic() < deadline:
        if set(reads(where, path, 4)["role"]) == {"replica"}:
            break
        time.sleep(0.25)
    df = reads(where, path, n)
    out = df.groupby(["served_by", "role"], dropna=False).size().rename("reads").reset_index()
    return out.sort_values("served_by").reset_index(drop=True)


def write(where=None, symbol: str = "BTC", price: "float | None" = None, wait: float = 0) -> dict:
    """POST one tick; the answer as a dict: status, the commit LSN and the primary (or why not).
    ``wait``: retry a 503 (no primary) for up to this many seconds, as a client honouring Retry-After."""
    deadline = time.monotonic() + wait
    with client(where) as api:
        body = {"ticks": [{"symbol": symbol, "price": price or 60_000.0 + secrets.randbelow(10_000)}]}
        while True:
            r = api._http.post("/ticks", json=body, headers={"Authorization": f"Bearer {api.token}"})
            if r.status_code != 503 or time.monotonic() >= deadline:
                break
            time.sleep(0.25)
    out = {"status": r.status_code, **(r.json() if r.headers.get("content-type", "").startswith("application/json")
                                       else {"detail": r.text[:200]})}
    if "Retry-After" in r.headers:
        out["retry_after_s"] = int(r.headers["Retry-After"])
    return out


def read_your_writes(where=None, rounds: int = 10, use_min_lsn: bool = True, symbol: str = "ETH") -> pd.DataFrame:
    """Write a tick, then read it back at once, ``rounds`` times; with ``use_min_lsn`` the read carries
    the write's commit LSN.  One row a round: who served the read and whether it saw the write."""
    rows = []
    with client(where) as api:
        auth = {"Authorization": f"Bearer {api.token}"}
        for i in range(rounds):
            # in 2001, where no chart or summary looks (the newest tick is the last price)
            t = dt.datetime(2001, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=secrets.randbelow(10**7))
            price = 1000.0 + i + secrets.randbelow(1000) / 1000
            w = api._http.post("/ticks", json={"ticks": [{"symbol": symbol, "price": price, "time": t.isoformat()}]},
                               headers=auth)
            if w.status_code != 201:
                raise LabError(f"the write failed: {w.status_code} {w.text[:200]}")
            params = {"start": t.isoformat(), "end": t.isoformat()}
            if use_min_lsn:
                params["min_lsn"] = w.json()["lsn"]
            t0 = time.perf_counter()
            r = api._http.get(f"/prices/{symbol}", params=params)
            read_ms = (time.perf_counter() - t0) * 1000
            seen = [p["price"] for p in r.json().get("prices", [])] if r.status_code == 200 else []
            rows.append({"round": i + 1, "lsn": w.json()["lsn"], "served_by": r.headers.get("X-Served-By"),
                         "saw_own_write": price in seen, "read_ms": round(read_ms, 2),
                         "fallback": r.headers.get("X-Read-Fallback", "")})
    return pd.DataFrame(rows)


def compare_read_your_writes(where=None, rounds: int = 30) -> pd.DataFrame:
    """Read-your-writes off and on, measured: for each, how many reads right after their write saw
    it, how many the primary had to serve, and the median read time."""
    out = []
    for use in (False, True):
        df = read_your_writes(where, rounds=rounds, use_min_lsn=use)
        out.append({"min_lsn": "on" if use else "off", "reads": len(df),
                    "saw_own_write": int(df["saw_own_write"].sum()),
                    "served_by_primary": int((df["served_by"] == _primary_name(where)).sum()),
                    "served_by_replicas": int((df["served_by"] != _primary_name(where)).sum()),
                    "median_read_ms": round(float(df["read_ms"].median()), 2)})
    return pd.DataFrame(out)


def _primary_name(where) -> str:
    primary = getattr(where, "primary", None)
    if primary is not None:
        return primary.name
    from .cluster import attach
    return attach(_home_of(where).path).primary.name


def pause_replay(cluster) -> list:
    """Pause WAL replay on every running replica (chapter 04): they receive WAL but apply none."""
    from . import standby
    return [standby.pause_replay(cluster, r.name) for r in cluster.replicas if r.is_running]


def resume_replay(cluster) -> list:
    from . import standby
    return [standby.resume_replay(cluster, r.name) for r in cluster.replicas if r.is_running]


def tidy(cluster) -> list:
    """Put back what chapter 07 changes, after an interrupted run: every node started and a
    streaming replica of the current primary (a former primary rewound), replay resumed."""
    from . import failover
    done = []
    if not cluster.primary.is_running:
        cluster.primary.start()
        done.append(f"started the primary {cluster.primary.name}")
    done += failover.restore(cluster)
    from . import standby
    for r in cluster.replicas:
        if r.is_running and r.scalar("SELECT pg_is_wal_replay_paused()", dbname="postgres"):
            standby.resume_replay(cluster, r.name)
            done.append(f"replay resumed on {r.name}")
    return done or ["nothing to tidy"]
