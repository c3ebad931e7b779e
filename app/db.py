"""Where each query goes: writes to the primary, reads to replicas, with fallback.

    router = Router(settings)
    rows, served = router.read(lambda cur: (cur.execute(q), cur.fetchall())[1])
    served.node, served.role, served.lag_ms          # which node answered, its replay lag
    lsn = router.write(lambda cur: cur.execute(...))  # the LSN that covers the commit

Writes go through one libpq multi-host string of every configured node with
``target_session_attrs=read-write``: libpq itself finds the node that accepts writes, so
after a replica is promoted the writes follow it with no change here.  Reads go round-robin
to one small pool per replica; a replica that does not answer is skipped for
``node_retry_s`` seconds and the read goes to the next one, then to the primary.  A read may
carry ``min_lsn`` (read-your-writes): a replica that has not replayed it passes the read on.
"""
from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

import psycopg2
import psycopg2.extensions

from . import schema
from .settings import Settings

log = logging.getLogger("app.db")
T = TypeVar("T")

BUSY_WAIT_S = 5.0  # how long a request waits for a free connection before a 503


class Unavailable(Exception):
    """No node could serve this; the API answers 503 with Retry-After."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class NodeDown(Exception):
    """One node did not answer (refused, closed, timed out)."""


@dataclass(frozen=True)
class Served:
    node: str          # the node's cluster_name (else host:port)
    role: str          # "primary" or "replica", as the node says right now
    lag_ms: float      # its replay lag (0 on a primary)
    fallback: str = ""  # why a replica did not serve it, when one did not

    def headers(self) -> dict:
        h = {"X-Served-By": self.node, "X-Served-Role": self.role, "X-Replica-Lag-Ms": f"{self.lag_ms:.0f}"}
        if self.fallback:
            h["X-Read-Fallback"] = self.fallback
        return h


def _dsn_hosts(params: dict) -> list[tuple[str, str]]:
    hosts = (params.get("host") or params.get("hostaddr") or "localhost").split(",")
    ports = (params.get("port") or "5432").split(",")
    if len(ports) == 1:
        ports = ports * len(hosts)
    return list(zip(hosts, ports))


def write_dsn(primary_dsn: str, replica_dsns=()) -> str:
    """One multi-host DSN over the primary and the replicas, ``target_session_attrs=read-write``.

    Replicas with other credentials or another database are left out (libpq uses one login).
    >>> write_dsn("host=h1 port=1 dbname=d user=u", ["host=h2 port=2 dbname=d user=u"])
    'host=h1,h2 port=1,2 user=u dbname=d target_session_attrs=read-write'
    """
    base = psycopg2.extensions.parse_dsn(primary_dsn)
    hosts = _dsn_hosts(base)
    same = ("user", "password", "dbname")
    for dsn in replica_dsns:
        p = psycopg2.extensions.parse_dsn(dsn)
        if all(p.get(k) == base.get(k) for k in same):
            hosts += [h for h in _dsn_hosts(p) if h not in hosts]
    params = {k: v for k, v in base.items() if k not in ("host", "hostaddr", "port")}
    params = {"host": ",".join(h for h, _ in hosts), "port": ",".join(p for _, p in hosts), **params}
    params["target_session_attrs"] = "read-write"
    return psycopg2.extensions.make_dsn(**params)


class Pool:
    """At most ``size`` reused connections to one DSN.  A connection failure closes the pool's
    idle connections and marks it down for ``retry_s`` seconds (callers then skip it)."""

    def __init__(self, label: str, dsn: str, size: int, connect_timeout: int, retry_s: float):
        self.label = label
        self.dsn = dsn
        self.size = size
        self.connect_timeout = connect_timeout
        self.retry_s = retry_s
        self.name = label          # replaced by the node's own name once it answers
        self._idle: collections.deque = collections.deque()
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self.down_until = 0.0
        self.last_error = ""

    @property
    def is_down(self) -> bool:
        return time.monotonic() < self.down_until

    def mark_down(self, error: str) -> None:
        with self._lock:
            self.down_until = time.monotonic() + self.retry_s
            self.last_error = error
            idle, self._idle = list(self._idle), collections.deque()
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.close()
        log.warning("%s (%s) is down for %.1fs: %s", self.label, self.name, self.retry_s, error)

    def _connect(self):
        try:
            conn = psycopg2.connect(self.dsn, connect_timeout=self.connect_timeout, application_name="crypto-app",
                                    # JSON times in UTC whatever the server's zone; no JIT: these queries
                                    # take a millisecond, JIT compiling them took 10-30 (measured)
                                    options="-c TimeZone=UTC -c jit=off")
        except psycopg2.Error as e:
            raise NodeDown(_first_line(e)) from None
        conn.autocommit = True
        return conn

    @contextlib.contextmanager
    def connection(self):
        if self.is_down:
            raise NodeDown(self.last_error or "down")
        if not self._slots.acquire(timeout=BUSY_WAIT_S):
            raise Unavailable(f"{self.label}: all {self.size} connections busy for {BUSY_WAIT_S:.0f}s", 1)
        conn = None
        try:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = self._connect()
            try:
                yield conn
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as e:
                if conn.closed:  # the server went away under us, not a query-level error
                    conn = None
                    raise NodeDown(_first_line(e)) from None
                raise
            except BaseException:
                if not conn.closed and conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                    with contextlib.suppress(Exception):
                        conn.rollback()
                raise
        except NodeDown as e:
            self.mark_down(str(e))
            raise
        finally:
            if conn is not None:
                if conn.closed or conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                    with contextlib.suppress(Exception):
                        conn.close()
                else:
                    with self._lock:
                        self._idle.append(conn)
            self._slots.release()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = list(self._idle), collections.deque()
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.close()


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def probe(cur, min_lsn: "str | None" = None) -> tuple[str, bool, float, bool]:
    """(name, is standby, replay lag ms, has replayed min_lsn) of the node behind ``cur``."""
    cur.execute(schema.PROBE_SQL, {"min_lsn": min_lsn})
    name, standby, lag_ms, has_lsn = cur.fetchone()
    return name, standby, float(lag_ms or 0.0), bool(has_lsn)


class Router:
    """The app's database access: one primary (write) pool and one read pool per replica."""

    def __init__(self, settings: Settings):
        self.settings = settings
        kw = dict(size=settings.pool_size, connect_timeout=settings.connect_timeout, retry_s=settings.node_retry_s)
        self.primary = Pool("primary", write_dsn(settings.primary_dsn, settings.replica_dsns), **kw)
        self.replicas = [Pool(f"replica #{i + 1}", dsn, **kw) for i, dsn in enumerate(settings.replica_dsns)]
        self._rr = itertools.count()
        self.served = collections.Counter()  # node name -> reads served by this process

    def close(self) -> None:
        for p in (self.primary, *self.replicas):
            p.close()

    # --- reads ---------------------------------------------------------------------------
    def _candidates(self) -> list[Pool]:
        n = len(self.replicas)
        start = next(self._rr) % n if n else 0
        replicas = [self.replicas[(start + i) % n] for i in range(n)]
        if self.settings.read_from == "primary":
            return [self.primary, *replicas]
        return [*replicas, self.primary]

    def read(self, fn: Callable[[object], T], min_lsn: "str | None" = None) -> tuple[T, Served]:
        """Run ``fn(cursor)`` on the first node that answers and (with ``min_lsn``) has replayed it."""
        return self._read(fn, min_lsn, probed=False)

    def _read(self, fn, min_lsn, probed: bool):
        # probed: fn's query starts with the probe's four columns and then its own one value
        reasons = []
        for pool in self._candidates():
            if pool.is_down:
                reasons.append(f"{pool.name} down")
                continue
            try:
                with pool.connection() as conn, conn.cursor() as cur:
                    if probed:
                        fn(cur)
                        name, standby, lag_ms, has_lsn, result = cur.fetchone()
                        lag_ms = float(lag_ms or 0.0)
                    else:
                        name, standby, lag_ms, has_lsn = probe(cur, min_lsn)
                    pool.name = name
                    if not has_lsn:
                        reasons.append(f"{name} has not replayed {min_lsn}")
                        continue
                    if not probed:
                        result = fn(cur)
            except NodeDown as e:
                reasons.append(f"{pool.name} down ({e})")
                continue
            except psycopg2.Error as e:
                if pool is self.primary:
                    raise
                # e.g. a query cancelled by a conflict with recovery: the next node may answer
                reasons.append(f"{pool.name}: {_first_line(e)}")
                continue
            self.served[name] += 1
            return result, Served(name, "replica" if standby else "primary", lag_ms, "; ".join(reasons))
        raise Unavailable("no node answered the read: " + "; ".join(reasons), 1)

    def read_json(self, sql: str, params: "dict | None" = None,
                  min_lsn: "str | None" = None) -> tuple[str, Served]:
        """The one JSON text ``sql`` answers, with the probe in the same round trip."""
        q = f"SELECT p.*, CASE WHEN p.has_lsn THEN ({sql}) END FROM ({schema.PROBE_SQL}) p"
        args = {**(params or {}), "min_lsn": min_lsn}
        return self._read(lambda cur: cur.execute(q, args), min_lsn, probed=True)

    # --- writes --------------------------------------------------------------------------
    def write(self, fn: Callable[[object], T]) -> tuple[T, str, str]:
        """Run ``fn(cursor)`` in one transaction on the primary; (result, commit LSN, node name)."""
        try:
            with self.primary.connection() as conn:
                conn.autocommit = False
                try:
                    with conn.cursor() as cur:
                        result = fn(cur)
                    conn.commit()
                finally:
                    if not conn.closed:
                        conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute(schema.COMMIT_LSN_SQL + ", coalesce(nullif(current_setting('cluster_name'), ''), "
                                "current_setting('port'))")
                    lsn, name = cur.fetchone()
                self.primary.name = name
                return result, lsn, name
        except NodeDown as e:
            raise Unavailable(f"the primary does not accept writes ({e}): retry when it is back or a replica "
                              "has been promoted", retry_after=max(1, round(self.settings.node_retry_s) or 1)) from None

    # --- what the app sees of the cluster ------------------------------------------------
    def nodes(self) -> list[dict]:
        """Every configured node as it answers now (one short connection each, not pooled)."""
        out = []
        targets = [("primary (configured)", self.settings.primary_dsn)]
        targets += [(f"replica #{i + 1}", d) for i, d in enumerate(self.settings.replica_dsns)]
        for label, dsn in targets:
            params = psycopg2.extensions.parse_dsn(dsn)
            row = {"configured_as": label, "host": params.get("host", ""), "port": params.get("port", ""),
                   "node": None, "role": None, "reachable": False, "lag_ms": None, "lsn": None,
                   "reads_served": 0, "error": None}
            try:
                conn = psycopg2.connect(dsn, connect_timeout=self.settings.connect_timeout,
                                        application_name="crypto-app")
            except psycopg2.Error as e:
                row["error"] = _first_line(e)
                out.append(row)
                continue
            try:
                conn.autocommit = True
                with conn.cursor() as cur:
                    name, standby, lag_ms, _ = probe(cur)
                    cur.execute("SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
                                "ELSE pg_current_wal_lsn() END::text")
                    lsn = cur.fetchone()[0]
                row.update(node=name, role="replica" if standby else "primary", reachable=True,
                           lag_ms=round(lag_ms, 1), lsn=lsn, reads_served=self.served.get(name, 0))
            except psycopg2.Error as e:
                row["error"] = _first_line(e)
            finally:
                conn.close()
            out.append(row)
        return out
