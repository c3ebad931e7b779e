"""A steady client: a writer that inserts numbered rows and keeps its own log of what the server
answered, and a reader that watches what one node shows.  Chapters 05 and 06 build on both.

>>> with lab.workload.Writer(cluster.primary, rate=200, duration=3) as w:     # doctest: +SKIP
...     pass                                                                  # (3 s of writes)
>>> w.log().outcome.value_counts()                                            # doctest: +SKIP
>>> lab.workload.lost_writes(w, cluster.node("replica1"))                     # doctest: +SKIP

The writer's log lives OUTSIDE the database (memory, and a JSON-lines file if you name one),
so it survives the node it describes: after a crash, ``audit`` compares it with any node.

Each write is one row ``(run, seq)`` of the table ``lab_writes``; its outcome is
  - ``acknowledged``: COMMIT returned success to the client;
  - ``failed``: the server said no (an ERROR, the transaction rolled back) or the writer could
    not connect, so nothing was sent;
  - ``unknown``: the connection broke while the COMMIT was in flight: it may or may not have
    committed (the case every careful client must handle).
An acknowledged commit whose synchronous-replication wait was cancelled keeps its server's
warning in ``note`` ("committed locally, but might not have been replicated").

Why ``pg_current_wal_insert_lsn()`` *after* the COMMIT: it is at or past the end of our commit
record, so a replica that has replayed it shows our row.  ``pg_current_wal_lsn()`` inside the
transaction is *before* the commit record (a replica at that LSN may not show the row yet), and
``pg_current_wal_lsn()`` after the COMMIT can still be before it with ``synchronous_commit = off``
(the record is inserted but not yet written).  The LSN may be a little past our commit (other
sessions' WAL): waiting for it is safe, only a hair longer.
"""
from __future__ import annotations

import dataclasses
import json
import secrets
import threading
import time
from pathlib import Path

import pandas as pd
import psycopg2

from . import conninfo
from .cluster import Cluster
from .errors import BadArgument, LabError, NotRunning, need_bool, need_choice, need_int, need_number, need_str
from .i18n import _
from .lsn import parse_lsn, record_end
from .node import Node

TABLE = "lab_writes"
MAX_SECONDS = 600           # a writer or reader never runs longer than this
# A write's outcome is a name, the same in every language (as a column name): the log file keeps it,
# summary() names its columns after it, and the failover chapters' code filters on it.
OUTCOMES = ("acknowledged", "failed", "unknown")
# a loop's kind (Writer.kind, Reader.kind) in a sentence, looked up when shown
_KIND_SHOWN = {"writer": lambda: _("writer"), "reader": lambda: _("reader"), "loop": lambda: _("loop")}
SYNCHRONOUS_COMMIT = ("off", "local", "remote_write", "on", "remote_apply")
TARGET_SESSION_ATTRS = ("any", "read-write", "read-only", "primary", "standby", "prefer-standby")


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _need_node(node, what: str = "node") -> Node:
    if not isinstance(node, Node):
        raise BadArgument(_("{what} is a node, e.g. cluster.node('replica1') or cluster.primary, not {value}").format(
            what=what, value=_shown(node)))
    return node


def _need_run(run, what: str = "run") -> "str | None":
    return None if run is None else need_str(run, what, example=_("the Writer's run_id"))

CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    run        text        NOT NULL,
    seq        bigint      NOT NULL,
    payload    text        NOT NULL DEFAULT '',
    written_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (run, seq)
)"""

# One write, one round trip: the explicit COMMIT ends the transaction (and its synchronous wait)
# before the SELECT runs, in the same simple-query message; the row is (run, seq, payload) and the
# answer the LSN the commit is at or before (lab.consistency writes the same way).
WRITE = (f"BEGIN; INSERT INTO {TABLE} (run, seq, payload) VALUES (%s, %s, %s); COMMIT; "
         "SELECT pg_current_wal_insert_lsn()::text")

# SQLSTATE classes after which a COMMIT in flight may or may not have happened
_UNKNOWN_CLASSES = ("08", "57", "58", "XX")


@dataclasses.dataclass
class Write:
    """One write as the client saw it."""
    seq: int
    outcome: str                 # acknowledged / failed / unknown
    lsn: "str | None"            # pg_current_wal_insert_lsn() right after the COMMIT (acknowledged only)
    node: "str | None"           # the node (or host:port) the connection was on
    sent_at: float               # wall clock (time.time()) when the write was sent
    done_at: float               # wall clock when the answer (or the error) came
    latency_s: float             # done_at - sent_at, on a monotonic clock
    error: "str | None" = None
    note: "str | None" = None    # a server warning that matters (a cancelled synchronous wait)


def _first_line(e: BaseException) -> str:
    text = (getattr(e, "pgerror", None) or str(e) or type(e).__name__).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    for prefix in ("ERROR:", "FATAL:", "PANIC:"):
        if line.startswith(prefix):
            line = line[len(prefix):].strip()
    return line


def classify(e: BaseException, sent: bool = True) -> str:
    """``failed`` or ``unknown`` for an error met by a write (``sent``: the COMMIT had gone out).

    >>> classify(psycopg2.OperationalError("server closed the connection unexpectedly"))
    'unknown'
    >>> classify(psycopg2.OperationalError("could not connect"), sent=False)
    'failed'
    """
    if not sent:
        return "failed"
    code = getattr(e, "pgcode", None)
    if code is None:  # no SQLSTATE: the connection itself broke (or never answered)
        return "unknown" if isinstance(e, (psycopg2.OperationalError, psycopg2.InterfaceError)) else "failed"
    return "unknown" if code[:2] in _UNKNOWN_CLASSES else "failed"


def node_dsn(node, **extra) -> str:
    """A node's libpq connection string plus ``extra`` keywords (``connect_timeout=2``...), built
    by libpq (``lab.conninfo``).

    >>> lab.workload.node_dsn(cluster.primary, connect_timeout=2)   # doctest: +SKIP
    'host=127.0.0.1 port=5432 user=admin password=... dbname=crypto_db connect_timeout=2'
    """
    return conninfo.make(_need_node(node).dsn, **extra)


def multi_host_dsn(cluster, target_session_attrs: str = "read-write", nodes=None, connect_timeout: int = 2,
                   **extra) -> str:
    """One libpq connection string naming every node: libpq tries them in order and keeps the first
    that matches ``target_session_attrs`` (``read-write``: the primary, whichever node it is now).

    >>> dsn = lab.workload.multi_host_dsn(cluster)          # doctest: +SKIP
    >>> lab.workload.Writer(dsn, rate=100, duration=5)      # doctest: +SKIP
    """
    if not isinstance(cluster, Cluster):
        raise BadArgument(_("cluster is what lab.up() returns, not {value}").format(value=_shown(cluster)))
    need_choice(target_session_attrs, "target_session_attrs", TARGET_SESSION_ATTRS)
    need_int(connect_timeout, _("connect_timeout (seconds)"), lo=1, hi=3600)
    if nodes is not None and (isinstance(nodes, (str, bytes)) or not hasattr(nodes, "__iter__")):
        raise BadArgument(_("nodes is a list of nodes, e.g. cluster.nodes, not {value}").format(value=_shown(nodes)))
    nodes = [_need_node(n, _("each of nodes")) for n in nodes] if nodes is not None else cluster.nodes
    if not nodes:
        raise LabError(_("multi_host_dsn needs at least one node"))
    p = conninfo.parse(nodes[0].dsn)
    return conninfo.multi_host([(n.host, n.port) for n in nodes], user=p["user"], password=p["password"],
                               dbname=p["dbname"], target_session_attrs=target_session_attrs,
                               connect_timeout=connect_timeout, **extra)


def _resolve(target, cluster) -> "tuple[str, object, str]":
    """(dsn, cluster or None, label) for a Node, a Cluster or a libpq string."""
    if isinstance(target, Cluster):
        return node_dsn(target.primary, connect_timeout=2), target, target.primary.name
    if isinstance(target, Node):
        return node_dsn(target, connect_timeout=2), cluster or target._cluster, target.name
    if isinstance(target, str) and "=" in target:
        conninfo.parse(target)  # a malformed string: a LabError now, not a failed write per row
        return target, cluster, "dsn"
    raise BadArgument(_("write to a node (cluster.primary), a cluster, or a libpq connection string, "
                        "not {value}").format(value=_shown(target)))


def _node_names(cluster) -> dict:
    if cluster is None:
        return {}
    return {(n.host, str(n.port)): n.name for n in cluster.nodes}


def _kind(kind: str) -> str:
    """A loop's kind ("writer") in the lab's language, for a sentence."""
    shown = _KIND_SHOWN.get(kind)
    return shown() if shown else kind


def _bound(duration, max_rows, what: str) -> tuple:
    if duration is None and max_rows is None:
        raise LabError(_("a {what} bounds its own time: give duration= (seconds) or max_rows=").format(what=_kind(what)))
    if duration is not None and (need_number(duration, "duration", lo=0, hi=MAX_SECONDS, unit="seconds") == 0):
        raise BadArgument(_("duration is in seconds, more than 0 and at most {max}, not {value!r}").format(
            max=MAX_SECONDS, value=duration))
    if max_rows is not None:
        need_int(max_rows, "max_rows", lo=1, hi=10_000_000)
    return (float(duration) if duration is not None else float(MAX_SECONDS)), max_rows


def _check_rate(rate):
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 100_000):
        raise BadArgument(_("rate is rows per second (more than 0, at most 100000) or None for as fast as "
                            "it can, not {value!r}").format(value=rate))
    return rate


def ensure_table(node) -> None:
    """Create ``lab_writes`` on ``node`` (the primary) if it is not there."""
    _need_node(node).execute(CREATE_TABLE)


class _Loop:
    """A bounded background loop: start / stop / context manager; ``error`` keeps what killed it."""

    kind = "loop"

    def __init__(self, duration, max_rows, rate):
        self.duration, self.max_rows = _bound(duration, max_rows, self.kind)
        self.rate = _check_rate(rate)
        self._stop = threading.Event()
        self._thread: "threading.Thread | None" = None
        self.started_at: "float | None" = None     # wall clock
        self.stopped_at: "float | None" = None
        self.error: "str | None" = None

    def start(self):
        if self._thread is not None:
            raise LabError(_("this {what} has run already: make a new one").format(what=_kind(self.kind)))
        self._setup()
        self._thread = threading.Thread(target=self._main, name=f"lab-{self.kind}", daemon=True)
        self.started_at = time.time()
        self._thread.start()
        return self

    def _setup(self):
        pass

    def _main(self):
        try:
            self._run()
        except Exception as e:  # the thread must not die silently
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.stopped_at = time.time()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 15):
        """Ask the loop to stop and wait for it (its connection is closed on the way out)."""
        need_number(timeout, "timeout", lo=0, hi=3600, unit="seconds")
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        return self

    def wait(self, timeout: "float | None" = None):
        """Wait until the loop ends by itself (its duration or row count)."""
        if timeout is not None:
            need_number(timeout, "timeout", lo=0, hi=3600, unit="seconds")
        if self._thread is not None:
            self._thread.join(timeout)
        return self

    def run(self):
        """Start and wait until the loop ends by itself: a blocking run."""
        self.start()
        return self.wait()

    def __enter__(self):
        return self.start() if self._thread is None else self

    def __exit__(self, *exc):
        self.stop()
        return False

    def _pace(self, i: int, t0: float, deadline: float) -> bool:
        """Sleep until the ``i``-th tick of the rate (no burst to catch up); False when it is time to stop."""
        if self.rate:
            wake = t0 + i / self.rate
            now = time.monotonic()
            if wake > now:
                self._stop.wait(min(wake, deadline) - now)
        return not self._stop.is_set() and time.monotonic() < deadline


class Writer(_Loop):
    """Insert numbered rows ``(run, seq)`` into ``lab_writes`` through its own connection, at ``rate``
    rows per second (None: as fast as it can), for ``duration`` seconds or ``max_rows`` writes.

    ``target``: a Node, a Cluster (its primary) or a libpq string (``multi_host_dsn(cluster)``
    follows the primary across a failover).  The writer reconnects by itself after an error
    (``retry_interval`` s between attempts); every attempt is in its log.  ``synchronous_commit``
    sets that setting for its session.  ``log_path``: also append each write as a JSON line.

    >>> w = lab.workload.Writer(cluster.primary, rate=100, duration=2).run()   # doctest: +SKIP
    >>> w.summary()                                                            # doctest: +SKIP
    """

    kind = "writer"

    def __init__(self, target, rate: "float | None" = None, duration: "float | None" = 10,
                 max_rows: "int | None" = None, *, cluster=None, run: "str | None" = None,
                 synchronous_commit: "str | None" = None, payload_bytes: int = 16,
                 retry_interval: float = 0.05, log_path=None, create_table: bool = True):
        super().__init__(duration, max_rows, rate)
        if cluster is not None and not isinstance(cluster, Cluster):
            raise BadArgument(_("cluster is what lab.up() returns (or None), not {value}").format(value=_shown(cluster)))
        _need_run(run)
        if synchronous_commit is not None:
            need_choice(synchronous_commit, "synchronous_commit", SYNCHRONOUS_COMMIT)
        need_int(payload_bytes, "payload_bytes", lo=0, hi=1_000_000)
        need_number(retry_interval, "retry_interval", lo=0, hi=60, unit="seconds")
        if log_path is not None and not isinstance(log_path, (str, Path)):
            raise BadArgument(_("log_path is a file's path (or None), not {value}").format(value=_shown(log_path)))
        need_bool(create_table, "create_table")
        self.dsn, self.cluster, self.target = _resolve(target, cluster)
        self.run_id = run or f"w{secrets.token_hex(3)}"
        self.synchronous_commit = synchronous_commit
        self.payload = "x" * payload_bytes
        self.retry_interval = float(retry_interval)
        self.log_path = Path(log_path) if log_path else None
        self._create_table = create_table
        self._names = _node_names(self.cluster)
        self._log: list[Write] = []
        self._lock = threading.Lock()
        self.reconnects = 0
        self._conn = None

    def __repr__(self):
        state = "running" if self.running else ("done" if self._thread else "not started")
        return f"<Writer {self.run_id} -> {self.target}: {len(self._log)} writes, {state}>"

    # --- connection --------------------------------------------------------------------
    def _connect(self):
        conn = psycopg2.connect(self.dsn, application_name=f"lab-writer-{self.run_id}")
        conn.autocommit = True
        if self.synchronous_commit:
            with conn.cursor() as cur:
                cur.execute("SELECT set_config('synchronous_commit', %s, false)", (self.synchronous_commit,))
        return conn

    def _where(self, conn) -> str:
        try:
            key = (conn.info.host, str(conn.info.port))
        except Exception:
            return "?"
        name = self._names.get(key)
        if name is None and self._names:  # through a router (HAProxy): ask the server its own port, once
            cached = getattr(self, "_routed", None)
            if cached is not None and cached[0] is conn:
                return cached[1]
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT inet_server_port()")
                    port = cur.fetchone()[0]
                name = self._names.get((key[0], str(port)))
            except psycopg2.Error:
                name = None
            name = name or f"{key[0]}:{key[1]}"
            self._routed = (conn, name)
            return name
        return name or f"{key[0]}:{key[1]}"

    def _setup(self):
        try:
            conn = self._connect()
        except psycopg2.Error as e:
            raise NotRunning(_("the writer cannot connect to {target}: {error}; "
                               "is the primary running? see cluster.status()").format(
                target=self.target, error=_first_line(e))) from None
        try:
            if self._create_table:
                with conn.cursor() as cur:
                    try:
                        cur.execute(CREATE_TABLE)
                    except psycopg2.Error as e:
                        raise LabError(_("the writer cannot create {table} on {node}: {error} (write to the primary)").format(
                            table=TABLE, node=self._where(conn), error=_first_line(e))) from None
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.log_path, "a")

    # --- the loop --------------------------------------------------------------------------
    def _record(self, w: Write) -> None:
        with self._lock:
            self._log.append(w)
        if self.log_path:
            self._file.write(json.dumps(dataclasses.asdict(w)) + "\n")
            self._file.flush()

    def _one(self, seq: int) -> None:
        if self._conn is None or self._conn.closed:
            t_wall, t0 = time.time(), time.perf_counter()
            try:
                self._conn = self._connect()
                self.reconnects += 1
            except psycopg2.Error as e:
                self._conn = None
                self._record(Write(seq, "failed", None, None, t_wall, time.time(), time.perf_counter() - t0,
                                   error=_("could not connect: {error}").format(error=_first_line(e))))
                self._stop.wait(self.retry_interval)
                return
        conn = self._conn
        where = self._where(conn)
        del conn.notices[:]
        t_wall, t0 = time.time(), time.perf_counter()
        try:
            with conn.cursor() as cur:
                cur.execute(WRITE, (self.run_id, seq, self.payload))
                lsn = cur.fetchone()[0]
        except psycopg2.Error as e:
            outcome = classify(e, sent=True)
            if conn.closed or outcome == "unknown":
                try:
                    conn.close()
                finally:
                    self._conn = None
            else:
                try:  # an ERROR inside BEGIN ... leaves the session in a failed transaction block
                    with conn.cursor() as cur:
                        cur.execute("ROLLBACK")
                except psycopg2.Error:
                    conn.close()
                    self._conn = None
            self._record(Write(seq, outcome, None, where, t_wall, time.time(), time.perf_counter() - t0,
                               error=_first_line(e)))
            self._stop.wait(self.retry_interval)
            return
        note = None
        for n in conn.notices:
            if "committed locally" in n or "synchronous replication" in n:
                note = " ".join(n.split())
        self._record(Write(seq, "acknowledged", lsn, where, t_wall, time.time(), time.perf_counter() - t0,
                           note=note))

    def _run(self):
        t0 = time.monotonic()
        deadline = t0 + self.duration
        seq = 0
        try:
            while self.max_rows is None or seq < self.max_rows:
                if not self._pace(seq, t0, deadline):
                    break
                seq += 1
                self._one(seq)
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self.log_path:
                self._file.close()

    # --- what happened ---------------------------------------------------------------------
    @property
    def writes(self) -> list:
        with self._lock:
            return list(self._log)

    def log(self) -> pd.DataFrame:
        """One row per write: seq, outcome, lsn, node, sent_at, done_at, latency_s, error, note."""
        return log_frame(self.writes, self.run_id)

    def acknowledged(self) -> pd.DataFrame:
        df = self.log()
        return df[df["outcome"] == "acknowledged"].reset_index(drop=True)

    def summary(self) -> pd.DataFrame:
        """One row: writes by outcome, rows/s, latency median and p99 (ms), reconnects."""
        return summarize(self.log(), self.reconnects)


def log_frame(writes, run_id: "str | None" = None) -> pd.DataFrame:
    cols = [f.name for f in dataclasses.fields(Write)]
    df = pd.DataFrame([dataclasses.asdict(w) for w in writes], columns=cols)
    df["seq"] = df["seq"].astype("int64")
    for c in ("sent_at", "done_at", "latency_s"):
        df[c] = df[c].astype("float")
    df.attrs["run"] = run_id
    return df


def read_log(path) -> pd.DataFrame:
    """A writer's JSON-lines log, as ``Writer.log()`` shows it (the run id is not in the lines:
    pass it to ``audit(..., run=)``)."""
    if not isinstance(path, (str, Path)):
        raise BadArgument(_("path is a writer's log file (its log_path), not {value}").format(value=_shown(path)))
    path = Path(path)
    if not path.is_file():
        raise LabError(_("no writer log at {path}: pass the log_path the Writer was given").format(path=path))
    try:
        with open(path) as f:
            writes = [Write(**json.loads(line)) for line in f if line.strip()]
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as e:
        raise LabError(_("{path} is not a writer's log (JSON lines of lab.workload.Writer): {error}").format(
            path=path, error=str(e).splitlines()[0] if str(e) else type(e).__name__)) from None
    return log_frame(writes)


def _need_log(log, what: str = "log") -> pd.DataFrame:
    if not isinstance(log, pd.DataFrame) or not {"outcome", "seq", "sent_at", "done_at", "latency_s"} <= set(log):
        raise BadArgument(_("{what} is what a Writer's log() returns, not {type}").format(what=what, type=type(log).__name__))
    return log


def summarize(log: pd.DataFrame, reconnects: int = 0) -> pd.DataFrame:
    """One row: writes by outcome, rows/s, latency median and p99 (ms), reconnects."""
    _need_log(log)
    need_int(reconnects, "reconnects", lo=0)
    counts = log["outcome"].value_counts()
    ack = log[log["outcome"] == "acknowledged"]
    span = (log["done_at"].max() - log["sent_at"].min()) if len(log) else 0.0
    row = {o: int(counts.get(o, 0)) for o in OUTCOMES}
    row.update(writes=len(log), seconds=round(float(span), 2),
               ack_per_s=round(len(ack) / span, 1) if span else None,
               latency_ms_p50=round(float(ack["latency_s"].median()) * 1000, 2) if len(ack) else None,
               latency_ms_p99=round(float(ack["latency_s"].quantile(0.99)) * 1000, 2) if len(ack) else None,
               reconnects=reconnects)
    return pd.DataFrame([row])


def _log_of(source, run: "str | None" = None) -> "tuple[pd.DataFrame, str]":
    """(the log, its run id) of a Writer, its log() DataFrame or its log file."""
    if isinstance(source, Writer):
        log, log_run = source.log(), source.run_id
    elif isinstance(source, pd.DataFrame):
        log, log_run = _need_log(source, "source"), source.attrs.get("run")
    elif isinstance(source, (str, Path)):
        log, log_run = read_log(source), None
    else:
        raise BadArgument(_("audit a Writer, its log() DataFrame or its log file, not {type}").format(
            type=type(source).__name__))
    run = _need_run(run) or log_run
    if not run:
        raise LabError(_("the log does not say its run id: pass run= (the Writer's run_id)"))
    return log, run


def rows_on(node, run: str) -> set:
    """The seq numbers of run ``run`` that ``node`` shows."""
    _need_node(node)
    need_str(run, "run", example=_("the Writer's run_id"))
    try:
        df = node.sql(f"SELECT seq FROM {TABLE} WHERE run = %s", (run,))
    except LabError as e:
        if "does not exist" in str(e):
            return set()
        raise
    return set(int(s) for s in df["seq"]) if len(df) else set()


def audit(source, node, run: "str | None" = None) -> pd.DataFrame:
    """Reconcile a writer's log with what ``node`` shows: one row per outcome, how many of those
    writes the node has and how many it lacks.  Acknowledged-but-missing are lost writes.

    >>> lab.workload.audit(writer, cluster.primary)    # doctest: +SKIP
    """
    _need_node(node)
    log, run = _log_of(source, run)
    present = rows_on(node, run)
    rows = []
    for outcome in OUTCOMES:
        seqs = set(log.loc[log["outcome"] == outcome, "seq"].astype(int))
        rows.append(dict(outcome=outcome, writes=len(seqs), on_node=len(seqs & present),
                         missing=len(seqs - present)))
    df = pd.DataFrame(rows)
    logged = set(log["seq"].astype(int))
    df.attrs.update(node=node.name, run=run, never_logged=len(present - logged))
    return df


def lost_writes(source, node, run: "str | None" = None) -> pd.DataFrame:
    """The acknowledged writes ``node`` does not have (the writer's log rows): lost, if ``node`` is
    the primary now."""
    _need_node(node)
    log, run = _log_of(source, run)
    present = rows_on(node, run)
    ack = log[log["outcome"] == "acknowledged"]
    return ack[~ack["seq"].astype(int).isin(present)].reset_index(drop=True)


def outage(log: pd.DataFrame, after: "float | None" = None) -> "float | None":
    """The longest gap between two acknowledged writes (seconds, wall clock), optionally only gaps
    that end after the wall-clock time ``after`` (a crash): how long writes were impossible."""
    _need_log(log)
    if after is not None:
        need_number(after, _("after (a wall-clock time, time.time())"))
    ack = log[log["outcome"] == "acknowledged"].sort_values("done_at")
    if len(ack) < 2:
        return None
    ends = ack["done_at"].to_numpy()
    gaps = ends[1:] - ends[:-1]
    if after is not None:
        gaps = gaps[ends[1:] > after]
    return float(gaps.max()) if len(gaps) else None


@dataclasses.dataclass
class Read:
    t: float                     # wall clock when the read was sent
    node: str
    max_seq: "int | None"        # the highest seq of the run the node showed
    rows: "int | None"
    replayed_lsn: "str | None"   # pg_last_wal_replay_lsn() (None on a primary)
    latency_s: float
    error: "str | None" = None


class Reader(_Loop):
    """Read from one node (a replica, usually) at ``rate`` reads per second, for ``duration`` s or
    ``max_rows`` reads: what of a writer's run it shows, and its replay LSN.  Reconnects itself.

    >>> with lab.workload.Writer(cluster.primary, rate=100, duration=3) as w, \\
    ...      lab.workload.Reader(cluster.node("replica1"), run=w.run_id, rate=20, duration=3) as r:
    ...     pass                                                  # doctest: +SKIP
    >>> r.log()                                                   # doctest: +SKIP
    """

    kind = "reader"

    def __init__(self, node, run: "str | None" = None, rate: "float | None" = 20, duration: "float | None" = 10,
                 max_rows: "int | None" = None, retry_interval: float = 0.1):
        super().__init__(duration, max_rows, rate)
        _need_node(node)
        _need_run(run)
        need_number(retry_interval, "retry_interval", lo=0, hi=60, unit="seconds")
        self.node = node
        self.run_id = run
        self.retry_interval = float(retry_interval)
        self._log: list[Read] = []
        self._lock = threading.Lock()
        self._conn = None

    def _setup(self):
        self._conn = self.node.connect(connect_timeout=2)

    def _read(self):
        with self._conn.cursor() as cur:
            cur.execute("SELECT pg_last_wal_replay_lsn()::text")
            replayed = cur.fetchone()[0]
            if self.run_id:
                cur.execute(f"SELECT max(seq), count(*) FROM {TABLE} WHERE run = %s", (self.run_id,))
                mx, n = cur.fetchone()
            else:
                mx, n = None, None
        return mx, n, replayed

    def _run(self):
        t0 = time.monotonic()
        deadline = t0 + self.duration
        i = 0
        try:
            while self.max_rows is None or i < self.max_rows:
                if not self._pace(i, t0, deadline):
                    break
                i += 1
                t_wall, p0 = time.time(), time.perf_counter()
                try:
                    if self._conn is None or self._conn.closed:
                        self._conn = self.node.connect(connect_timeout=2)
                    mx, n, replayed = self._read()
                except (psycopg2.Error, LabError) as e:
                    if self._conn is not None and not self._conn.closed:
                        self._conn.close()
                    self._conn = None
                    with self._lock:
                        self._log.append(Read(t_wall, self.node.name, None, None, None,
                                              time.perf_counter() - p0, _first_line(e)))
                    self._stop.wait(self.retry_interval)
                    continue
                with self._lock:
                    self._log.append(Read(t_wall, self.node.name, None if mx is None else int(mx),
                                          None if n is None else int(n), replayed, time.perf_counter() - p0))
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def log(self) -> pd.DataFrame:
        with self._lock:
            reads = list(self._log)
        cols = [f.name for f in dataclasses.fields(Read)]
        df = pd.DataFrame([dataclasses.asdict(r) for r in reads], columns=cols)
        for c in ("max_seq", "rows"):
            df[c] = df[c].astype("Int64")
        return df


def replayed_at_least(node, lsn) -> bool:
    """Has ``node`` (a replica) replayed ``lsn``?  (A primary has everything it wrote.)"""
    _need_node(node)
    if parse_lsn(lsn) is None:
        raise BadArgument(_("lsn is an LSN like '0/3000060', not None"))
    got = node.scalar("SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text END",
                      dbname="postgres")
    return got is None or parse_lsn(got) >= record_end(lsn)  # a commit's insert LSN may sit past a page header
