"""The crypto app (``app/``) on the lab's cluster: its API, dashboard and price feed as processes.

>>> app = lab.webapp.start(cluster)        # doctest: +SKIP
>>> app                                    # the URLs as links, and the dashboard embedded
>>> lab.webapp.spread(cluster, n=30)       # which node served 30 reads
>>> lab.webapp.stop(cluster)               # doctest: +SKIP

The app gets the cluster's DSNs (writes to the primary, reads from the replicas) through its
APP_* variables and knows nothing of the lab.  Everything it keeps lives in
``<lab home>/webapp/`` (mode 0700): ``webapp.json`` (ports, pids, URLs and the generated API
token; mode 0600) and one log per process.  ``start()`` again re-attaches to a running app;
a restarted kernel finds it the same way.  Ports are claimed like the nodes' and released by
``stop()``.

Behind JupyterHub or Binder a student's browser cannot reach 127.0.0.1 of the server: what
``start()`` prints, links and embeds then goes through the student's Jupyter server
(``/user/<name>/proxy/absolute/<port>/``, lab.system.jupyterenv; ``LAB_LINKS=direct`` turns it off),
while the lab's own requests stay on 127.0.0.1 (``WebApp.api_url``, ``WebApp.public_api_url``).

How it is run lives in ``lab.services.webapp``; this module is chapter 07: the app started,
called and put through the chapter's experiments (replicas paused, a failover tidied up).
"""
from __future__ import annotations

import datetime as dt
import re
import secrets
import time

import pandas as pd

from . import failover, standby
from .cluster import attach
from .errors import LabError, need_bool, need_choice, need_int, need_number, need_str
from .i18n import N_, _, current
from .services import webapp as _service
from .services.supervisor import HOST, home_of, wait_answer
from .services.webapp import PROCESSES, START_TIMEOUT, WebApp, app_env, status, stop

__all__ = ["start", "wait_dashboard", "stop", "status", "client", "reads", "spread", "write", "read_your_writes",
           "compare_read_your_writes", "app_says", "pause_replay", "resume_replay", "tidy", "app_env", "WebApp",
           "HOST", "PROCESSES", "START_TIMEOUT"]


# --- what the app says, in the lab's language ----------------------------------------------------
# The app's HTTP API is a contract in English (its OpenAPI schema, its X-Read-Fallback header, its
# problem details), like PostgreSQL's messages.  What the lab shows of it in a table or a dict is put
# in the student's language here: each of the app's fixed sentences (app/db.py, app/api.py; a test
# checks that they are still the app's words) as a pattern and its message; anything else (a line of
# PostgreSQL's, quoted by the app) stays as it is.
_APP_SENTENCES = [
    (re.compile(r"(?P<name>[^;]+?) down \((?P<error>.*)\)", re.S), N_("{name} down ({error})")),
    (re.compile(r"(?P<name>[^;]+?) down"), N_("{name} down")),
    (re.compile(r"(?P<name>[^;]+?) has not replayed (?P<lsn>[0-9A-Fa-f]+/[0-9A-Fa-f]+|None)"),
     N_("{name} has not replayed {lsn}")),
    (re.compile(r"the primary does not accept writes \((?P<error>.*)\): retry when it is back or a replica has "
                r"been promoted", re.S),
     N_("the primary does not accept writes ({error}): retry when it is back or a replica has been promoted")),
    (re.compile(r"(?P<label>[^;]+?): all (?P<n>\d+) connections busy for (?P<s>\d+)s"),
     N_("{label}: all {n} connections busy for {s}s")),
    (re.compile(r"unknown symbol (?P<symbols>.+?): GET /coins lists the known ones"),
     N_("unknown symbol {symbols}: GET /coins lists the known ones")),
]


def app_says(text: "str | None") -> "str | None":
    """One of the app's messages (a read's fallback reasons, joined by "; ", or a problem's detail) in the
    lab's language; English as the app wrote it when the lab speaks English.

    >>> app_says("replica #2 down; primary has not replayed 0/3000060")   # in English: unchanged
    'replica #2 down; primary has not replayed 0/3000060'
    """
    if not text or not isinstance(text, str) or current() == "en":
        return text
    head = "no node answered the read: "
    if text.startswith(head):
        return _("no node answered the read: {reasons}").format(reasons=app_says(text[len(head):]))
    return "; ".join(_one_app_sentence(part) for part in text.split("; "))


def _one_app_sentence(part: str) -> str:
    for pattern, message in _APP_SENTENCES:
        m = pattern.fullmatch(part)
        if m:
            return _(message).format(**m.groupdict())
    return part


# --- start: the app, and a dashboard that answers before it is embedded -------------------------
def start(cluster, quiet: bool = False, feed: bool = True, read_from: str = "replicas", tick_rate: float = 1.0,
          timeout: float = START_TIMEOUT) -> WebApp:
    """Start the app for this cluster (or re-attach to the running one), and return only once its
    dashboard answers: the page and Streamlit's health check.  What it returns shows the dashboard
    embedded in the notebook, so an embed made earlier would show a dead "connection error" frame."""
    need_bool(quiet, "quiet")
    need_bool(feed, "feed")
    need_choice(read_from, "read_from", ("replicas", "primary"))
    need_number(tick_rate, "tick_rate", 0.01, 100, unit=_("ticks per second"))
    timeout = need_number(timeout, "timeout", 1, 600, unit=_("seconds"))
    info = _service.start(cluster, quiet=quiet, feed=feed, read_from=read_from, tick_rate=tick_rate, timeout=timeout)
    wait_dashboard(info, timeout)
    return info


def wait_dashboard(info: WebApp, timeout: float = 60) -> WebApp:
    """Wait until the dashboard of ``info`` answers (``/_stcore/health``, then its page); a LabError if it
    does not within ``timeout`` seconds."""
    timeout = need_number(timeout, "timeout", 0.1, 600, unit=_("seconds"))
    if not info.running or not info.dashboard_url:
        raise LabError(_("the crypto app is not running: lab.webapp.start(cluster)"))
    deadline = time.monotonic() + timeout
    for url in (info.dashboard_url + "/_stcore/health", info.dashboard_url + "/"):
        if not wait_answer(url, max(0.1, deadline - time.monotonic())):
            raise LabError(_("the dashboard at {url} did not answer within {timeout:g} s: "
                             "lab.webapp.stop(cluster), then lab.webapp.start(cluster) again").format(
                url=info.dashboard_url, timeout=timeout))
    return info


# --- from a notebook: call the API -----------------------------------------------------------
def client(where=None):
    """An ``app.client.ApiClient`` of the running app (with its token, for POST /ticks)."""
    info = status(where)
    if not info.running:
        raise LabError(_("the crypto app is not running: lab.webapp.start(cluster)"))
    from app.client import ApiClient  # lazy: httpx costs 0.45 s; lab.checks loads this module without calling the API
    return ApiClient(info.api_url, token=info.token)


def reads(where=None, path: str = "/prices/BTC", n: int = 20, min_lsn: "str | None" = None) -> pd.DataFrame:
    """``n`` reads of ``path``: which node served each (its name), its role now (primary or replica: after a
    failover a node's name no longer says it), its lag, and why a replica did not."""
    need_str(path, "path", example="'/prices/BTC'")
    need_int(n, "n", 1, 1000)
    rows = []
    with client(where) as api:
        for i in range(n):
            r = api._http.get(path, params={"min_lsn": min_lsn} if min_lsn else None)
            rows.append({"read": i + 1, "status": r.status_code, "served_by": r.headers.get("X-Served-By"),
                         "role": r.headers.get("X-Served-Role"), "lag_ms": r.headers.get("X-Replica-Lag-Ms"),
                         "fallback": app_says(r.headers.get("X-Read-Fallback", ""))})
    return pd.DataFrame(rows)


def spread(where=None, path: str = "/prices/BTC", n: int = 20, wait: float = 0) -> pd.DataFrame:
    """How ``n`` reads of ``path`` spread over the nodes: one row per node that served some.
    ``wait``: first give the app up to this many seconds to find its replicas again (it skips a
    replica that failed for APP_NODE_RETRY_S, 1 s here)."""
    need_int(n, "n", 1, 1000)
    wait = need_number(wait, "wait", 0, 120, unit=_("seconds"))
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
    need_str(symbol, "symbol", example="'BTC'")
    if price is not None:
        need_number(price, "price", 0.0001, 1e9)
    wait = need_number(wait, "wait", 0, 120, unit=_("seconds"))
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
    if isinstance(out.get("detail"), str):
        out["detail"] = app_says(out["detail"])
    if "Retry-After" in r.headers:
        out["retry_after_s"] = int(r.headers["Retry-After"])
    return out


def read_your_writes(where=None, rounds: int = 10, use_min_lsn: bool = True, symbol: str = "ETH") -> pd.DataFrame:
    """Write a tick, then read it back at once, ``rounds`` times; with ``use_min_lsn`` the read carries
    the write's commit LSN.  One row a round: who served the read (its name and its role now) and whether
    it saw the write."""
    need_int(rounds, "rounds", 1, 1000)
    need_bool(use_min_lsn, "use_min_lsn")
    need_str(symbol, "symbol", example="'ETH'")
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
                raise LabError(_("the write failed: {status} {answer}").format(status=w.status_code, answer=w.text[:200]))
            params = {"start": t.isoformat(), "end": t.isoformat()}
            if use_min_lsn:
                params["min_lsn"] = w.json()["lsn"]
            t0 = time.perf_counter()
            r = api._http.get(f"/prices/{symbol}", params=params)
            read_ms = (time.perf_counter() - t0) * 1000
            seen = [p["price"] for p in r.json().get("prices", [])] if r.status_code == 200 else []
            rows.append({"round": i + 1, "lsn": w.json()["lsn"], "served_by": r.headers.get("X-Served-By"),
                         "role": r.headers.get("X-Served-Role"), "saw_own_write": price in seen, "read_ms": round(read_ms, 2),
                         "fallback": app_says(r.headers.get("X-Read-Fallback", ""))})
    return pd.DataFrame(rows)


def compare_read_your_writes(where=None, rounds: int = 30) -> pd.DataFrame:
    """Read-your-writes off and on, measured: for each, how many reads right after their write saw
    it, how many the node in the primary role had to serve (and its name), how many nodes in the replica
    role served, and the median read time."""
    need_int(rounds, "rounds", 1, 1000)
    out = []
    for use in (False, True):
        df = read_your_writes(where, rounds=rounds, use_min_lsn=use)
        by_primary = df["role"] == "primary"
        out.append({"min_lsn": "on" if use else "off", "reads": len(df),
                    "saw_own_write": int(df["saw_own_write"].sum()),
                    "served_by_primary": int(by_primary.sum()),
                    "served_by_replicas": int((df["role"] == "replica").sum()),
                    "primary_is": _primary_name(where),
                    "median_read_ms": round(float(df["read_ms"].median()), 2)})
    return pd.DataFrame(out)


def _primary_name(where) -> str:
    primary = getattr(where, "primary", None)
    if primary is not None:
        return primary.name
    return attach(home_of(where).path).primary.name



def pause_replay(cluster) -> list:
    """Pause WAL replay on every running replica (chapter 04): they receive WAL but apply none."""
    return [standby.pause_replay(cluster, r.name) for r in cluster.replicas if r.is_running]


def resume_replay(cluster) -> list:
    return [standby.resume_replay(cluster, r.name) for r in cluster.replicas if r.is_running]


def tidy(cluster) -> list:
    """Put back what chapter 07 changes, after an interrupted run: every node started and a
    streaming replica of the current primary (a former primary rewound), replay resumed."""
    done = []
    if not cluster.primary.is_running:
        cluster.primary.start()
        done.append(_("started the primary {name}").format(name=cluster.primary.name))
    done += failover.restore(cluster)
    for r in cluster.replicas:
        if r.is_running and r.scalar("SELECT pg_is_wal_replay_paused()", dbname="postgres"):
            standby.resume_replay(cluster, r.name)
            done.append(_("replay resumed on {name}").format(name=r.name))
    return done or [_("nothing to tidy")]
