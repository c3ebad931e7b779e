"""Hot standby: what a replica answers, what it refuses, and what its queries cost the primary.

>>> replica = cluster.node("replica1")                                           # doctest: +SKIP
>>> lab.standby.try_write(replica, "INSERT INTO test_replication (mensaje) VALUES ('x')")  # doctest: +SKIP
'refused (SQLSTATE 25006): replica1: cannot execute INSERT in a read-only transaction ...'
>>> run = lab.standby.query_conflict(cluster, "replica1", seconds=3)             # doctest: +SKIP
>>> lab.standby.pause_replay(cluster, "replica1")                                # doctest: +SKIP
>>> lab.standby.replay_control(cluster)                                          # doctest: +SKIP

Five parts, in the chapter's order: reads and refused writes; query conflicts and their two
remedies (``query_conflict``); a delayed replica and a table recovered from it
(``time_until_visible``, ``recover_table``); pausing replay and what it does to lag
(``pause_timeline``, ``lag_figure``); a replay control panel whose buttons call plain functions
(``pause_replay``, ``resume_replay``, ``lag_table``).  ``tidy`` puts back what the chapter changed.
"""
from __future__ import annotations

import contextlib
import html
import io
import re
import threading
import time
from dataclasses import dataclass, field

import ipywidgets as w
import pandas as pd
import psycopg2
from IPython.display import display
from matplotlib.figure import Figure
from psycopg2 import sql as pgsql

from . import plots  # noqa: F401 (shows Figures as pictures in notebooks)
from .errors import (BadArgument, LabError, NotRunning, SQLError, Text, Timeout, need_bool, need_int, need_number,
                     need_str)
from .faults import need_a_node, need_cluster, need_node
from .i18n import _
from .lsn import lsn_diff, parse_lsn
from .node import Node, Role
from .system.operations import changes_cluster

# The settings this chapter turns; all reloadable (context sighup), reset with node.set(name=None).
STANDBY_SETTINGS = ("hot_standby_feedback", "max_standby_streaming_delay", "recovery_min_apply_delay")
CONFLICT_TABLE = "standby_conflict"   # what the long query reads and the primary vacuums
WRITES_TABLE = "standby_writes"       # the primary's steady writes while replay is paused
RECOVERY_TABLE = "wallets"            # the table "dropped by mistake"
SCRATCH_TABLES = (CONFLICT_TABLE, WRITES_TABLE, RECOVERY_TABLE)


def _say(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, flush=True)


def _replica(cluster, name) -> Node:
    node = need_node(need_cluster(cluster), name, "replica")
    if node.role != Role.REPLICA:
        names = ", ".join(r.name for r in cluster.replicas) or _("none: cluster.add_replica() adds one")
        raise LabError(_("{node} is the {role}, not a replica: pick one of {names}").format(
            node=node.name, role=node.role, names=names))
    if not node.is_running:
        raise NotRunning(_("{node} is stopped: start it with cluster.node({node!r}).start()").format(node=node.name))
    return node


def _first_line(e: psycopg2.Error) -> str:
    text = (e.pgerror or str(e)).strip()
    return re.sub(r"^(ERROR|FATAL):\s+", "", text.splitlines()[0]) if text else type(e).__name__


# --- 1. reads, refused writes ------------------------------------------------------------------
def try_write(node: Node, sql: str, params=None) -> str:
    """Run a write on ``node``; what happened, as one line: the rows written, or the error.

    >>> lab.standby.try_write(cluster.primary, "INSERT INTO test_replication (mensaje) VALUES ('x')")  # doctest: +SKIP
    'primary: done, 1 row(s) written'
    """
    need_a_node(node)
    if not isinstance(sql, (str, pgsql.Composable)):
        raise BadArgument(_("sql is the statement to run, as a string, not {type}").format(type=type(sql).__name__))
    try:
        rows = node.execute(sql, params)
    except SQLError as e:  # a stopped node (NotRunning) is not an answer to the question: it raises
        return _("refused (SQLSTATE {sqlstate}): {error}").format(sqlstate=e.sqlstate, error=e)
    if rows >= 0:
        return _("{node}: done, {rows} row(s) written").format(node=node.name, rows=rows)
    return _("{node}: done").format(node=node.name)


def in_recovery(cluster) -> pd.DataFrame:
    """Each running node: is it in recovery (a replica), and are its transactions read-only?"""
    need_cluster(cluster)
    rows = []
    for n in cluster.nodes:
        if not n.is_running:
            rows.append(dict(node=n.name, in_recovery=None, transaction_read_only=None))
            continue
        r = n.sql("SELECT pg_is_in_recovery() AS in_recovery, current_setting('transaction_read_only') "
                  "AS transaction_read_only", dbname="postgres").iloc[0]
        rows.append(dict(node=n.name, in_recovery=bool(r["in_recovery"]),
                         transaction_read_only=r["transaction_read_only"]))
    return pd.DataFrame(rows, columns=["node", "in_recovery", "transaction_read_only"])


def standby_settings(cluster) -> pd.DataFrame:
    """The settings of this chapter on each running replica, and which of them were changed
    (``ALTER SYSTEM``, i.e. ``node.set``) rather than coming from postgresql.conf."""
    need_cluster(cluster)
    rows = []
    for r in cluster.replicas:
        if not r.is_running:
            continue
        df = r.settings(*STANDBY_SETTINGS)
        values = dict(zip(df["name"], df["value"]))
        changed = sorted(df.loc[df["set_by_alter_system"], "name"])
        rows.append(dict(node=r.name, **{s: values.get(s) for s in STANDBY_SETTINGS},
                         changed=", ".join(changed) or "-"))
    return pd.DataFrame(rows, columns=["node", *STANDBY_SETTINGS, "changed"])


def conflicts(node: Node) -> pd.DataFrame:
    """``pg_stat_database_conflicts`` on a replica, for the lab's database: queries it cancelled,
    by cause (snapshot: rows removed by VACUUM; lock: e.g. a DROP; tablespace; bufferpin; deadlock)."""
    return need_a_node(node).sql("SELECT datname, confl_snapshot, confl_lock, confl_tablespace, confl_bufferpin, "
                    "confl_deadlock FROM pg_stat_database_conflicts WHERE datname = current_database()")


def _confl_snapshot(node: Node) -> int:
    return int(node.scalar("SELECT confl_snapshot FROM pg_stat_database_conflicts "
                           "WHERE datname = current_database()"))


# --- 2. query conflicts ------------------------------------------------------------------------
class LongQuery:
    """A query on a replica that holds one snapshot for ``seconds``, in a background thread.

    ``BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM <table>; SELECT pg_sleep(seconds)``:
    the snapshot taken by the count stays until COMMIT.  Use it as a context manager; leaving the
    block cancels a query still running.
    >>> with LongQuery(cluster.node("replica1"), "standby_conflict", 3) as q:   # doctest: +SKIP
    ...     q.wait()
    """

    def __init__(self, node: Node, table: str, seconds: float):
        need_a_node(node)
        need_str(table, "table")
        need_number(seconds, "seconds", lo=0, hi=600)
        self.node, self.table, self.seconds = node, table, float(seconds)
        self.rows_seen = None
        self.ok = None
        self.error = None      # PostgreSQL's message and DETAIL, when it failed
        self.sqlstate = None
        self.ran_s = None
        self.ended_at = None   # time.monotonic() when it ended
        self._snapshot = threading.Event()
        self._done = threading.Event()
        self._conn = None
        self._thread = None

    def __enter__(self) -> "LongQuery":
        self._conn = self.node.connect()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"long query on {self.node.name}")
        self._thread.start()
        if not self._snapshot.wait(30):
            self.__exit__(None, None, None)
            raise Timeout(_("{node}: the long query did not start within 30 s").format(node=self.node.name))
        if self.ok is False:
            self.__exit__(None, None, None)
            raise LabError(_("{node}: the long query failed at once: {error}").format(node=self.node.name, error=self.error))
        return self

    def _run(self) -> None:
        t0 = time.monotonic()
        try:
            with self._conn.cursor() as cur:
                cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                cur.execute(pgsql.SQL("SELECT count(*) FROM {}").format(pgsql.Identifier(self.table)))
                self.rows_seen = cur.fetchone()[0]
                self._snapshot.set()
                cur.execute("SELECT pg_sleep(%s)", (self.seconds,))
                cur.execute("COMMIT")
            self.ok = True
        except psycopg2.Error as e:
            self.ok = False
            self.sqlstate = e.pgcode
            detail = e.diag.message_detail if e.diag else None
            self.error = _first_line(e) + (f"\nDETAIL:  {detail}" if detail else "")
        finally:
            self.ended_at = time.monotonic()
            self.ran_s = self.ended_at - t0
            self._snapshot.set()
            self._done.set()
            self._conn.close()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float = 60) -> bool:
        """Wait for the query to end; True if it finished, False if PostgreSQL cancelled it."""
        if not self._done.wait(timeout):
            raise Timeout(_("{node}: the long query still runs after {timeout:g} s").format(node=self.node.name, timeout=timeout))
        return bool(self.ok)

    def __exit__(self, *exc):
        # a cancel that lands between two statements (before pg_sleep began) cancels nothing:
        # send it again until the query has ended
        deadline = time.monotonic() + 10
        while self._thread is not None and not self._done.is_set() and time.monotonic() < deadline:
            try:
                self._conn.cancel()
            except psycopg2.Error:
                pass
            self._done.wait(0.2)
        if self._thread is not None:
            self._thread.join(10)


_VACUUM_15 = re.compile(r"tuples: (\d+) removed, (\d+) remain, (\d+) are dead but not yet removable")
_VACUUM_13 = re.compile(r"found (\d+) removable, (\d+) nonremovable row versions")
_VACUUM_13_DEAD = re.compile(r"(\d+) dead row versions cannot be removed yet")


def parse_vacuum_verbose(text: str) -> dict:
    """The first table's counts in VACUUM VERBOSE output: rows ``removed``, rows that ``remain``
    and rows ``dead_not_removable`` (dead, but some snapshot may still need them).

    >>> parse_vacuum_verbose("tuples: 0 removed, 10 remain, 5 are dead but not yet removable")
    {'removed': 0, 'remain': 10, 'dead_not_removable': 5}
    """
    need_str(text, _("text (VACUUM VERBOSE's output)"), empty=True)
    m = _VACUUM_15.search(text)  # PostgreSQL 15 and later
    if m:
        return dict(removed=int(m.group(1)), remain=int(m.group(2)), dead_not_removable=int(m.group(3)))
    m, d = _VACUUM_13.search(text), _VACUUM_13_DEAD.search(text)  # 13 and 14
    if m and d:
        return dict(removed=int(m.group(1)), remain=int(m.group(2)), dead_not_removable=int(d.group(1)))
    raise LabError(_("could not read VACUUM VERBOSE's output (has its format changed?): {output}").format(
        output=text[:200]))


def vacuum_verbose(node: Node, table: str) -> tuple:
    """``VACUUM (VERBOSE)`` a table; (its counts as ``parse_vacuum_verbose`` reads them, the text)."""
    need_a_node(node)
    need_str(table, "table")
    conn = node.connect()
    try:
        with conn.cursor() as cur:
            try:
                cur.execute(pgsql.SQL("VACUUM (VERBOSE) {}").format(pgsql.Identifier(table)))
            except psycopg2.Error as e:
                raise LabError(f"{node.name}: {_first_line(e)}") from None
        text = "".join(conn.notices)
    finally:
        conn.close()
    return parse_vacuum_verbose(text), text


def slot_xmin(cluster, replica: Node) -> "str | None":
    """The xmin the primary keeps for a replica (from its slot, or its WAL sender without one):
    set only while the replica sends hot_standby_feedback; None otherwise.

    >>> lab.standby.slot_xmin(cluster, cluster.node("replica1"))     # doctest: +SKIP
    '748'
    """
    need_cluster(cluster)
    replica = need_node(cluster, replica, "replica")
    app = replica.spec.get("app_name", replica.name)
    return cluster.primary.scalar(
        "SELECT coalesce(s.xmin, r.backend_xmin)::text FROM pg_stat_replication r "
        "LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE r.application_name = %s",
        (app,), dbname="postgres")


def _wait_feedback(cluster, replica: Node, on: bool, timeout: float = 5) -> "str | None":
    """Wait until the primary has (on) or has dropped (off) the replica's xmin: the replica sends
    feedback on reload and every wal_receiver_status_interval."""
    deadline = time.monotonic() + timeout
    while True:
        xmin = slot_xmin(cluster, replica)
        if (xmin is not None) == on or time.monotonic() > deadline:
            return xmin
        time.sleep(0.05)


def wait_replayed(primary: Node, replica: Node, timeout: float = 30, lsn=None) -> str:
    """Wait until one replica has replayed ``lsn`` (default: the primary's current LSN); returns that LSN.
    A ``Timeout`` (a LabError) if it has not after ``timeout`` seconds: its replay is paused or delayed.

    >>> lab.standby.wait_replayed(cluster.primary, cluster.node("replica1"), timeout=5)   # doctest: +SKIP
    '0/3000148'
    """
    need_a_node(primary, "primary")
    need_a_node(replica, "replica")
    need_number(timeout, "timeout", lo=0, hi=600, unit="seconds")
    if lsn is not None:
        parse_lsn(lsn)
    target = lsn or primary.scalar("SELECT pg_current_wal_lsn()::text", dbname="postgres")
    deadline = time.monotonic() + timeout
    while True:
        replayed = replica.scalar("SELECT pg_last_wal_replay_lsn()::text", dbname="postgres")
        if replayed is not None and parse_lsn(replayed) >= parse_lsn(target):
            return target
        if time.monotonic() > deadline:
            raise Timeout(_("{replica} has not replayed {target} after {timeout:g} s (it is at {replayed}): "
                            "is its replay paused or delayed? see lab.standby.lag_table(cluster)").format(
                replica=replica.name, target=target, timeout=timeout, replayed=replayed))
        time.sleep(0.01)


def pause_state_sql(node: Node) -> str:
    """The SQL expression for a replica's replay state, 'not paused', 'pause requested' or 'paused', on
    the node's PostgreSQL version (13 has no pg_get_wal_replay_pause_state)."""
    need_a_node(node)
    if int(node.scalar("SHOW server_version_num", dbname="postgres")) >= 140000:
        return "pg_get_wal_replay_pause_state()"
    return "CASE WHEN pg_is_wal_replay_paused() THEN 'paused' ELSE 'not paused' END"  # PostgreSQL 13


def replay_pause_state(node: Node) -> str:
    """A replica's replay state: 'not paused', 'pause requested' (until it reaches a record) or 'paused'.

    >>> lab.standby.replay_pause_state(cluster.node("replica1"))     # doctest: +SKIP
    'not paused'
    """
    need_a_node(node)
    return node.scalar(f"SELECT {pause_state_sql(node)}", dbname="postgres")


class _Sampler:
    """Where the primary's WAL is and where one replica has received and replayed it, on kept-open
    connections (a new connection per sample would cost more than the sample)."""

    def __init__(self, primary: Node, replica: Node, t0: float):
        self.t0 = t0
        self._pause = pause_state_sql(replica)
        self.p = primary.connect(dbname="postgres")
        try:
            self.r = replica.connect()
        except LabError:
            self.p.close()
            raise

    def sample(self, **extra) -> dict:
        with self.p.cursor() as cur:
            cur.execute("SELECT pg_current_wal_lsn()::text")
            current = cur.fetchone()[0]
        with self.r.cursor() as cur:
            cur.execute("SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, "
                        "EXTRACT(epoch FROM now() - pg_last_xact_replay_timestamp())::float8, " + self._pause)
            received, replayed, age, pause = cur.fetchone()
        return dict(t=time.monotonic() - self.t0, primary_lsn=current, received_lsn=received, replayed_lsn=replayed,
                    lag_bytes=max(0, lsn_diff(current, replayed)), not_received_bytes=max(0, lsn_diff(current, received)),
                    replay_age_s=age, replay=pause, **extra)

    def close(self) -> None:
        self.p.close()
        self.r.close()


@dataclass
class ConflictRun:
    """What ``query_conflict`` measured; ``summary()`` shows it, ``error`` is PostgreSQL's text."""
    replica: str
    settings: dict
    rows_seen: int
    query_finished: bool
    query_ran_s: float
    error: "str | None"
    sqlstate: "str | None"
    deleted: int
    vacuum: dict
    vacuum_text: str
    primary_xmin_for_replica: "str | None"
    n_dead_tup_after_vacuum: int
    confl_snapshot_before: int
    confl_snapshot_after: int
    replayed_vacuum_after_s: float
    query_ended_s: float          # when the replica's query ended, in seconds after the VACUUM
    vacuum_lsn: str               # the primary's WAL position just after its VACUUM
    samples: pd.DataFrame = field(repr=False)

    @property
    def label(self) -> str:
        s = self.settings
        return _("feedback {feedback}, max delay {delay}").format(feedback=s['hot_standby_feedback'],
                                                                 delay=s['max_standby_streaming_delay'])

    def row(self) -> dict:
        """Every number of this run, by name: settings, SQL names and PostgreSQL's words as they are, the
        lab's own labels and words in the lab's language."""
        return {"hot_standby_feedback": self.settings["hot_standby_feedback"],
                "max_standby_streaming_delay": self.settings["max_standby_streaming_delay"],
                _("replica query"): _("finished") if self.query_finished else _("CANCELED"),
                _("query ran (s)"): round(self.query_ran_s, 2),
                "sqlstate": self.sqlstate or "-",
                "confl_snapshot (+)": self.confl_snapshot_after - self.confl_snapshot_before,
                _("rows deleted on primary"): self.deleted,
                _("VACUUM removed"): self.vacuum["removed"],
                _("dead but not yet removable"): self.vacuum["dead_not_removable"],
                _("n_dead_tup after VACUUM"): self.n_dead_tup_after_vacuum,
                _("primary keeps xmin for replica"): self.primary_xmin_for_replica or "-",
                _("VACUUM replayed after (s)"): round(self.replayed_vacuum_after_s, 2),
                _("max replay lag (bytes)"): int(self.samples["lag_bytes"].max()) if len(self.samples) else 0}

    def summary(self) -> pd.DataFrame:
        """One column: every number of this run."""
        return compare([self])


def _runs(runs, what: str) -> list:
    if isinstance(runs, ConflictRun):
        runs = [runs]
    if not isinstance(runs, (list, tuple)) or not runs or not all(isinstance(r, ConflictRun) for r in runs):
        raise BadArgument(_("{what} takes runs of lab.standby.query_conflict(cluster): pass a list of them").format(
            what=what))
    return list(runs)


def compare(runs) -> pd.DataFrame:
    """Runs of ``query_conflict`` side by side: one column each, one row per measurement."""
    runs = _runs(runs, "compare")
    columns = {}
    for r in runs:
        name, i = r.label, 1
        while name in columns:  # two runs with the same settings
            i += 1
            name = f"{r.label} ({i})"
        columns[name] = pd.Series(r.row(), dtype=object)
    return pd.DataFrame(columns)


def _make_conflict_table(primary: Node, rows: int) -> None:
    t = pgsql.Identifier(CONFLICT_TABLE)
    primary.execute(pgsql.SQL("DROP TABLE IF EXISTS {}").format(t))
    # autovacuum off: only our VACUUM removes rows, at the moment we choose
    primary.execute(pgsql.SQL("CREATE TABLE {} WITH (autovacuum_enabled = off) AS "
                              "SELECT g AS id, md5(g::text) AS payload FROM generate_series(1, %s) g").format(t),
                    (int(rows),))


@changes_cluster("query_conflict", tidy=lambda c: tidy(c))
def query_conflict(cluster, replica="replica1", seconds: float = 3.0, rows: int = 10_000,
                   every: float = 0.05, quiet: bool = False) -> ConflictRun:
    """A long query on a replica against the primary's VACUUM, under the replica's current settings.

    On the replica, a REPEATABLE READ transaction counts ``rows`` rows of a fresh table, then sleeps
    ``seconds`` holding its snapshot.  Meanwhile the primary deletes half of those rows, VACUUMs the
    table (VERBOSE: how many rows it removed and how many it could not) and keeps inserting a few
    rows every ``every`` s, while the replica's replay lag is sampled.  The table is dropped at the end.

    What happens depends on the replica's ``hot_standby_feedback`` and ``max_standby_streaming_delay``
    (set them with ``replica.set(...)`` first): the query is cancelled by a conflict with recovery,
    or the primary keeps the dead rows, or replay waits for the query.
    """
    node = _replica(cluster, replica)
    primary = cluster.primary
    seconds = need_number(seconds, _("seconds (how long the replica's query holds its snapshot)"), lo=0.5, hi=30)
    need_int(rows, _("rows (how many rows the replica's query reads: 10 to 1000000)"), lo=10, hi=1_000_000)
    every = need_number(every, _("every (seconds between samples)"), lo=0.01, hi=1)
    need_bool(quiet, "quiet")
    settings = {s: node.scalar("SELECT current_setting(%s)", (s,)) for s in STANDBY_SETTINGS}
    if settings["recovery_min_apply_delay"] not in ("0", "0ms"):
        raise LabError(_("{node} delays replay (recovery_min_apply_delay = {delay}): "
                         "reset it first with cluster.node({node!r}).set(recovery_min_apply_delay=None)").format(
            node=node.name, delay=settings['recovery_min_apply_delay']))
    _make_conflict_table(primary, rows)
    try:
        wait_replayed(primary, node)
        xmin = _wait_feedback(cluster, node, on=settings["hot_standby_feedback"] == "on")
        before = _confl_snapshot(node)
        with LongQuery(node, CONFLICT_TABLE, seconds) as q:
            _say(quiet, _("{node}: a REPEATABLE READ query has read {rows} rows and holds its "
                          "snapshot for {seconds:g} s").format(node=node.name, rows=q.rows_seen, seconds=seconds))
            deleted = primary.execute(pgsql.SQL("DELETE FROM {} WHERE id % 2 = 0").format(
                pgsql.Identifier(CONFLICT_TABLE)))
            vac, text = vacuum_verbose(primary, CONFLICT_TABLE)
            retry_until = time.monotonic() + min(1.0, seconds / 3)
            while settings["hot_standby_feedback"] == "off" and vac["removed"] == 0 \
                    and time.monotonic() < retry_until:  # a passing snapshot on the primary (autoanalyze)
                time.sleep(0.1)
                vac, text = vacuum_verbose(primary, CONFLICT_TABLE)
            vacuum_lsn = primary.scalar("SELECT pg_current_wal_lsn()::text", dbname="postgres")
            t0 = time.monotonic()
            _say(quiet, _("primary: deleted {deleted} of them; VACUUM removed {removed}, "
                          "left {dead} dead but not yet removable").format(
                deleted=deleted, removed=vac['removed'], dead=vac['dead_not_removable']))
            dead_after = primary.scalar("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = %s",
                                        (CONFLICT_TABLE,))
            samples, replayed_at = _watch_conflict(primary, node, q, t0, vacuum_lsn, every, seconds)
        ended = q.ended_at - t0
        if q.ok:
            _say(quiet, _("{node}: the query finished after {ran:.1f} s; the VACUUM was replayed {replayed:.2f} s "
                          "after it ran").format(node=node.name, ran=q.ran_s, replayed=replayed_at))
        else:
            _say(quiet, _("{node}: the query was CANCELED after {ran:.1f} s: {error}; the VACUUM was replayed "
                          "{replayed:.2f} s after it ran").format(node=node.name, ran=q.ran_s,
                                                                  error=q.error.splitlines()[0], replayed=replayed_at))
        after = before
        deadline = time.monotonic() + 3  # the cancelled session reports its conflict as it exits
        while not q.ok and after == before and time.monotonic() < deadline:
            time.sleep(0.05)
            after = _confl_snapshot(node)
    finally:
        primary.execute(pgsql.SQL("DROP TABLE IF EXISTS {}").format(pgsql.Identifier(CONFLICT_TABLE)))
    return ConflictRun(replica=node.name, settings=settings, rows_seen=q.rows_seen, query_finished=bool(q.ok),
                       query_ran_s=q.ran_s, error=q.error, sqlstate=q.sqlstate, deleted=deleted, vacuum=vac,
                       vacuum_text=text, primary_xmin_for_replica=xmin,
                       n_dead_tup_after_vacuum=int(dead_after or 0), confl_snapshot_before=before,
                       confl_snapshot_after=after, replayed_vacuum_after_s=replayed_at, query_ended_s=ended,
                       vacuum_lsn=vacuum_lsn, samples=samples)


def _watch_conflict(primary, node, q: LongQuery, t0: float, vacuum_lsn: str, every: float, seconds: float):
    """Keep writing on the primary and sample the replica until the query has ended and the
    replica has replayed the VACUUM and what came after it."""
    sampler = _Sampler(primary, node, t0)
    writer = primary.connect()
    insert = pgsql.SQL("INSERT INTO {} SELECT -g, md5(g::text) FROM generate_series(1, 20) g").format(
        pgsql.Identifier(CONFLICT_TABLE))
    samples, replayed_at, ended_lsn = [], None, None
    deadline = time.monotonic() + seconds + 30
    try:
        while time.monotonic() < deadline:
            with writer.cursor() as cur:
                cur.execute(insert)
            s = sampler.sample(query=_("running") if not q.done else (_("finished") if q.ok else _("canceled")))
            samples.append(s)
            if replayed_at is None and parse_lsn(s["replayed_lsn"]) >= parse_lsn(vacuum_lsn):
                replayed_at = s["t"]
            if q.done and ended_lsn is None:
                ended_lsn = s["primary_lsn"]
            if ended_lsn and parse_lsn(s["replayed_lsn"]) >= parse_lsn(ended_lsn):
                break
            time.sleep(every)
        else:
            raise Timeout(_("{node} did not replay the VACUUM within {seconds:g} s: "
                            "see lab.standby.lag_table(cluster)").format(node=node.name, seconds=seconds + 30))
    finally:
        writer.close()
        sampler.close()
    return pd.DataFrame(samples), replayed_at


# --- 3. a delayed replica ----------------------------------------------------------------------
def time_until_visible(cluster, replicas=None, timeout: float = 15, quiet: bool = False) -> pd.DataFrame:
    """Insert one row into test_replication on the primary; how long until each replica shows it.

    One row per replica: its ``recovery_min_apply_delay``, ``visible`` and ``seconds`` (NaN if the
    row had not appeared after ``timeout`` seconds).
    """
    need_cluster(cluster)
    if isinstance(replicas, (str, Node)):
        replicas = [replicas]
    if replicas is not None and not isinstance(replicas, (list, tuple)):
        raise BadArgument(_("replicas is a list of replicas' names, e.g. ['replica1'], or None for all, "
                            "not {type}").format(type=type(replicas).__name__))
    timeout = need_number(timeout, "timeout", lo=0, hi=600, unit="seconds")
    need_bool(quiet, "quiet")
    names = [r.name for r in cluster.replicas if r.is_running] if replicas is None else list(replicas)
    nodes = [_replica(cluster, n) for n in names]
    conns = {}
    try:
        for n in nodes:
            conns[n.name] = n.connect()
        row_id = cluster.primary.scalar("INSERT INTO test_replication (mensaje) VALUES ('¿ya llegó?') RETURNING id")
        t0 = time.monotonic()
        seen, delays = {}, {}
        for n in nodes:
            with conns[n.name].cursor() as cur:
                cur.execute("SELECT current_setting('recovery_min_apply_delay')")
                delays[n.name] = cur.fetchone()[0]
        while len(seen) < len(nodes) and time.monotonic() - t0 < timeout:
            for n in nodes:
                if n.name in seen:
                    continue
                with conns[n.name].cursor() as cur:
                    cur.execute("SELECT 1 FROM test_replication WHERE id = %s", (row_id,))
                    if cur.fetchone():
                        seen[n.name] = time.monotonic() - t0
                        _say(quiet, _("{node}: row {id} visible after {seconds:.3f} s").format(
                            node=n.name, id=row_id, seconds=seen[n.name]))
            time.sleep(0.002)
    finally:
        for c in conns.values():
            c.close()
    for n in nodes:
        if n.name not in seen:
            _say(quiet, _("{node}: row {id} still not visible after {timeout:g} s").format(
                node=n.name, id=row_id, timeout=timeout))
    return pd.DataFrame([dict(replica=n.name, recovery_min_apply_delay=delays[n.name], visible=n.name in seen,
                              seconds=seen.get(n.name, float("nan"))) for n in nodes])


def make_wallets(cluster) -> pd.DataFrame:
    """The table we will "drop by mistake": a few wallets, made on the primary."""
    p = need_cluster(cluster).primary
    p.execute(pgsql.SQL("DROP TABLE IF EXISTS {}").format(pgsql.Identifier(RECOVERY_TABLE)))
    p.execute(pgsql.SQL("CREATE TABLE {} (owner text PRIMARY KEY, coin text NOT NULL, "
                        "amount numeric(20, 8) NOT NULL CHECK (amount >= 0), "
                        "updated_at timestamptz NOT NULL DEFAULT now())").format(pgsql.Identifier(RECOVERY_TABLE)))
    p.execute(pgsql.SQL("INSERT INTO {} (owner, coin, amount) VALUES ('ada', 'BTC', 0.5), ('grace', 'ETH', 12), "
                        "('alan', 'SOL', 140), ('barbara', 'BTC', 1.25), ('edsger', 'ADA', 3000)").format(
        pgsql.Identifier(RECOVERY_TABLE)))
    return p.sql(pgsql.SQL("SELECT * FROM {} ORDER BY owner").format(pgsql.Identifier(RECOVERY_TABLE)))


_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid) AS default_expr
  FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum
"""
_CONSTRAINTS = """
SELECT pg_get_constraintdef(oid) FROM pg_constraint
 WHERE conrelid = %s::regclass AND contype IN ('p', 'u', 'c') ORDER BY contype DESC, conname
"""


def create_table_sql(table: str, columns, constraints=()) -> str:
    """``CREATE TABLE`` from catalog rows: (name, type, not null, default) and constraint
    definitions.  Defaults that call ``nextval`` are left out (their sequence went with the table).

    >>> create_table_sql("t", [("id", "integer", True, None), ("v", "text", False, "'x'::text")], ["PRIMARY KEY (id)"])
    'CREATE TABLE "t" ("id" integer NOT NULL, "v" text DEFAULT \\'x\\'::text, PRIMARY KEY (id))'
    """
    def ident(name):
        return '"' + name.replace('"', '""') + '"'
    parts = []
    for name, type_, notnull, default in columns:
        col = f"{ident(name)} {type_}"
        if notnull:
            col += " NOT NULL"
        if default and "nextval(" not in default:
            col += f" DEFAULT {default}"
        parts.append(col)
    parts.extend(constraints)
    if not columns:
        raise LabError(_("no columns for {table!r}").format(table=table))
    return f"CREATE TABLE {ident(table)} ({', '.join(parts)})"


def _source(cluster, name) -> Node:
    """A running node a table can be copied back from: a replica (a delayed one, chapter 04) or a
    standalone copy restored to a point in time (chapter 10)."""
    node = need_node(need_cluster(cluster), name, "source")
    if node.role not in (Role.REPLICA, Role.STANDALONE):
        names = ", ".join(n.name for n in cluster.nodes if n.role in (Role.REPLICA, Role.STANDALONE))
        raise LabError(_("{node} is the {role}: copy from a replica or a restored copy ({names})").format(
            node=node.name, role=node.role, names=names or _("none: cluster.add_replica() adds one")))
    if not node.is_running:
        raise NotRunning(_("{node} is stopped: start it with cluster.node({node!r}).start()").format(node=node.name))
    return node


def recover_table(cluster, source: str, table: str = RECOVERY_TABLE, lock_timeout: float = 2.0) -> pd.DataFrame:
    """Copy a table that is gone from the primary back from a node that still has it: a (delayed)
    replica, or a standalone copy restored to a point in time (``lab.archive.restore``).

    Reads the table's columns, NOT NULL, defaults and primary key / unique / check constraints
    and its rows on ``source`` (in one snapshot), then creates it on the primary and copies the rows
    in (in one transaction).  Indexes other than those of constraints, grants and triggers are not
    copied.  One row: the table, the rows copied, the rows now on the primary, the seconds it took.
    """
    src = _source(cluster, source)
    need_str(table, "table", example="'wallets'")
    lock_timeout = need_number(lock_timeout, "lock_timeout", lo=0.01, hi=60, unit="seconds")
    if not cluster.primary.is_running:
        raise NotRunning(_("the primary ({name}) is stopped: lab.up() starts it").format(name=cluster.primary.name))
    if cluster.primary.scalar("SELECT to_regclass(%s) IS NOT NULL", (table,)):
        raise LabError(_("{table} exists on the primary: nothing to recover (drop it or pick another table)").format(
            table=table))
    t0 = time.monotonic()
    conn = src.connect(autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(lock_timeout * 1000)}ms",))
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
            if not cur.fetchone()[0]:
                if src.role == Role.STANDALONE:
                    raise LabError(_("{node} has no table {table} either: restore to a point before the mistake").format(
                        node=src.name, table=table))
                raise LabError(_("{node} has no table {table} either: it has replayed the DROP already "
                                 "(recover sooner, or give the replica a longer recovery_min_apply_delay)").format(
                    node=src.name, table=table))
            try:
                cur.execute(_COLUMNS, (table,))
                columns = cur.fetchall()
                cur.execute(_CONSTRAINTS, (table,))
                constraints = [r[0] for r in cur.fetchall()]
                data = io.StringIO()
                cur.copy_expert(pgsql.SQL("COPY {} TO STDOUT").format(pgsql.Identifier(table)).as_string(conn), data)
            except psycopg2.errors.LockNotAvailable:
                raise LabError(_(
                    "{node} has already applied the DROP's lock on {table} (recovery_min_apply_delay holds back "
                    "COMMITs only), so reads of {table} there wait for the DROP itself: nothing to copy from "
                    "{node}. Resume its replay, and restore {table} from a backup instead").format(
                    node=src.name, table=table)) from None
            except psycopg2.Error as e:
                raise LabError(f"{src.name}: {_first_line(e)}") from None
    finally:
        conn.close()
    rows = data.getvalue().count("\n")
    data.seek(0)
    create = create_table_sql(table, columns, constraints)
    target = cluster.primary.connect(autocommit=False)
    try:
        with target.cursor() as cur:
            try:
                cur.execute(create)
                cur.copy_expert(pgsql.SQL("COPY {} FROM STDIN").format(pgsql.Identifier(table)).as_string(target), data)
                target.commit()
            except psycopg2.Error as e:
                target.rollback()
                raise LabError(f"{cluster.primary.name}: {_first_line(e)}") from None
    finally:
        target.close()
    on_primary = cluster.primary.scalar(pgsql.SQL("SELECT count(*) FROM {}").format(pgsql.Identifier(table)))
    return pd.DataFrame([dict(table=table, source=src.name, columns=len(columns), constraints=len(constraints),
                              rows_copied=rows, rows_on_primary=on_primary, seconds=round(time.monotonic() - t0, 3))])


def replay_locks(node: Node, relation: "str | None" = None, timeout: float = 2) -> pd.DataFrame:
    """Relation locks held by a replica's replay (its startup process).  A DROP's AccessExclusiveLock
    shows here as soon as the DROP's first WAL record is replayed, before its COMMIT is.
    With ``relation``, wait up to ``timeout`` s for a lock on it to show up (WAL takes a moment to arrive).
    """
    need_a_node(node)
    if relation is not None:
        need_str(relation, "relation", example="'wallets'")
    need_number(timeout, "timeout", lo=0, hi=60, unit="seconds")
    query = ("SELECT l.relation::regclass::text AS relation, l.mode, l.granted FROM pg_locks l "
             "JOIN pg_stat_activity a ON a.pid = l.pid WHERE a.backend_type = 'startup' "
             "AND l.locktype = 'relation' AND l.database = (SELECT oid FROM pg_database "
             "WHERE datname = current_database()) ORDER BY 1")
    deadline = time.monotonic() + timeout
    while True:
        df = node.sql(query)
        if relation is None or relation in set(df["relation"]) or time.monotonic() > deadline:
            return df
        time.sleep(0.01)


# --- 4. pausing replay, and lag over time --------------------------------------------------------
def _execute(conn, query) -> None:
    with conn.cursor() as cur:
        cur.execute(query)


def _resume_quietly(node: Node) -> None:
    """Never leave a replica paused behind an interrupted experiment (a no-op if it is not paused)."""
    try:
        node.execute("SELECT pg_wal_replay_resume()", dbname="postgres")
    except LabError:
        pass


def pause_timeline(cluster, replica="replica1", before: float = 1.0, paused: float = 2.5, after: float = 1.5,
                   every: float = 0.05, quiet: bool = False) -> pd.DataFrame:
    """Write on the primary at a steady rate and sample a replica's lag every ``every`` s: replay
    runs for ``before`` s, is paused for ``paused`` s (``pg_wal_replay_pause()``), then resumed.

    One row per sample: ``t`` (s), ``phase`` (before, paused, after: in the lab's language), LSNs,
    ``lag_bytes`` (primary − replayed), ``not_received_bytes`` (primary − received), ``replay_age_s``
    (now − last replayed commit).
    ``lag_figure`` draws it.  Replay is resumed and the table dropped whatever happens.
    """
    before = need_number(before, "before", lo=0, hi=60, unit="seconds")
    paused = need_number(paused, "paused", lo=0, hi=60, unit="seconds")
    after = need_number(after, "after", lo=0, hi=60, unit="seconds")
    every = need_number(every, "every", lo=0, hi=1, unit="seconds")
    need_bool(quiet, "quiet")
    if paused <= 0 or every <= 0 or before + paused + after > 60:
        raise BadArgument(_("before, paused and after are seconds (paused > 0, 60 s in all) and every is the "
                            "sampling interval (0 to 1 s), not {before!r}, {paused!r}, {after!r}, {every!r}").format(
            before=before, paused=paused, after=after, every=every))
    node = _replica(cluster, replica)
    primary = cluster.primary
    t = pgsql.Identifier(WRITES_TABLE)
    insert = pgsql.SQL("INSERT INTO {} (payload) SELECT repeat('x', 200) FROM generate_series(1, 10)").format(t)
    samples, pause_at, resume_at = [], None, None
    with contextlib.ExitStack() as cleanup:  # whatever happens: resume, close, drop the table
        primary.execute(pgsql.SQL("DROP TABLE IF EXISTS {}").format(t))
        primary.execute(pgsql.SQL("CREATE TABLE {} (id bigserial PRIMARY KEY, payload text)").format(t))
        cleanup.callback(primary.execute, pgsql.SQL("DROP TABLE IF EXISTS {}").format(t))
        wait_replayed(primary, node)
        t0 = time.monotonic()
        sampler = _Sampler(primary, node, t0)
        cleanup.callback(sampler.close)
        writer = primary.connect()
        cleanup.callback(writer.close)
        cleanup.callback(_resume_quietly, node)
        _say(quiet, _("primary: writing 10 rows every {every:g} s; sampling {node}'s lag").format(every=every, node=node.name))
        while True:
            now = time.monotonic() - t0
            if pause_at is None and now >= before:
                _execute(sampler.r, "SELECT pg_wal_replay_pause()")
                pause_at = time.monotonic() - t0
                _say(quiet, _("{node}: replay paused at {t:.1f} s").format(node=node.name, t=pause_at))
            elif resume_at is None and pause_at is not None and now >= before + paused:
                _execute(sampler.r, "SELECT pg_wal_replay_resume()")
                resume_at = time.monotonic() - t0
                _say(quiet, _("{node}: replay resumed at {t:.1f} s").format(node=node.name, t=resume_at))
            elif now >= before + paused + after:
                break
            with writer.cursor() as cur:
                cur.execute(insert)
            phase = _("before") if pause_at is None else (_("paused") if resume_at is None else _("after"))
            samples.append(sampler.sample(phase=phase))
            time.sleep(every)
    _say(quiet, _("done: {n} samples in {seconds:.1f} s").format(n=len(samples), seconds=time.monotonic() - t0))
    df = pd.DataFrame(samples)
    df.attrs.update(replica=node.name, paused_at=pause_at, resumed_at=resume_at)
    return df


def _span(ax, start, end, label):
    if start is not None and end is not None:
        ax.axvspan(start, end, color="#f3e6cc", alpha=0.8, lw=0, label=label)


def lag_figure(samples: pd.DataFrame) -> Figure:
    """Replay lag over time, from ``pause_timeline``: bytes on top, seconds below, the pause shaded."""
    if not isinstance(samples, pd.DataFrame) or "lag_bytes" not in samples or samples.empty:
        raise LabError(_("lag_figure draws what lab.standby.pause_timeline(cluster) returns: pass its DataFrame"))
    fig = Figure(figsize=(8.5, 4.6))
    top, bottom = fig.subplots(2, 1, sharex=True)
    pause, resume = samples.attrs.get("paused_at"), samples.attrs.get("resumed_at")
    for ax in (top, bottom):
        _span(ax, pause, resume, _("replay paused"))
    top.plot(samples["t"], samples["lag_bytes"] / 1024, color="#b3261e", lw=1.6, label=_("primary − replayed (lag)"))
    top.plot(samples["t"], samples["not_received_bytes"] / 1024, color="#2f5d8a", lw=1.2, ls="--",
             label=_("primary − received"))
    top.set_ylabel(_("kB of WAL"))
    top.legend(loc="upper left", fontsize=8)
    bottom.plot(samples["t"], samples["replay_age_s"], color="#3b7d3b", lw=1.6,
                label=_("now − last replayed commit"))
    bottom.set_ylabel(_("seconds"))
    bottom.set_xlabel(_("time (s)"))
    bottom.legend(loc="upper left", fontsize=8)
    replica = samples.attrs["replica"] if "replica" in samples.attrs else _("the replica")
    fig.suptitle(_("{replica}: replay lag while the primary writes steadily").format(replica=replica), fontsize=10)
    fig.tight_layout()
    return fig


def conflict_figure(runs) -> Figure:
    """Replay lag after the primary's VACUUM, one line per ``query_conflict`` run; a dot where the
    replica's query ended."""
    runs = _runs(runs, "conflict_figure")
    fig = Figure(figsize=(8.5, 3.4))
    ax = fig.subplots()
    colours = ["#b3261e", "#3b7d3b", "#2f5d8a", "#9a6a16"]
    for run, colour in zip(runs, colours * 3):
        s = run.samples
        ax.plot(s["t"], s["lag_bytes"] / 1024, color=colour, lw=1.6, label=run.label)
        ended = s[s["t"] >= run.query_ended_s]  # not the query column: its words are in the language of the run
        if len(ended):
            ax.plot(ended["t"].iloc[0], ended["lag_bytes"].iloc[0] / 1024, "o", color=colour, ms=6)
    top = max(float(r.samples["lag_bytes"].max()) for r in runs) / 1024
    ax.set_ylim(bottom=-0.03 * max(top, 1), top=1.5 * max(top, 1))  # room for the legend above the lines
    ax.set_xlabel(_("seconds after the primary's VACUUM (dot: the replica's query ended)"))
    ax.set_ylabel(_("replay lag (kB of WAL)"))
    ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(_("how far replay falls behind while the replica's query holds its snapshot"), fontsize=10)
    fig.tight_layout()
    return fig


# --- 5. replay control: plain functions, and a panel that wires them --------------------------------
def lag_table(cluster) -> pd.DataFrame:
    """One row per replica: replay state (not paused / pause requested / paused), WAL received and
    replayed, lag behind the primary in bytes, and the age of the last replayed commit."""
    need_cluster(cluster)
    current = cluster.primary.scalar("SELECT pg_current_wal_lsn()::text", dbname="postgres") \
        if cluster.primary.is_running else None
    rows = []
    for r in cluster.replicas:
        row = dict(node=r.name, state=r.state.value, replay=None, received_lsn=None, replayed_lsn=None,
                   lag_bytes=None, unreplayed_bytes=None, last_replayed_commit_age_s=None)
        if r.is_running:
            try:
                got = r.sql("SELECT pg_last_wal_receive_lsn()::text AS rcv, pg_last_wal_replay_lsn()::text AS rpl, "
                            "EXTRACT(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 AS age, "
                            f"{pause_state_sql(r)} AS pause", dbname="postgres").iloc[0]
            except NotRunning:
                row["state"] = "stopped"
            else:
                row.update(replay=got["pause"], received_lsn=got["rcv"], replayed_lsn=got["rpl"],
                           lag_bytes=lsn_diff(current, got["rpl"]), unreplayed_bytes=lsn_diff(got["rcv"], got["rpl"]),
                           last_replayed_commit_age_s=got["age"])
        rows.append(row)
    df = pd.DataFrame(rows, columns=["node", "state", "replay", "received_lsn", "replayed_lsn", "lag_bytes",
                                     "unreplayed_bytes", "last_replayed_commit_age_s"])
    for col in ("lag_bytes", "unreplayed_bytes"):
        df[col] = df[col].astype("Int64").clip(lower=0)
    df["last_replayed_commit_age_s"] = df["last_replayed_commit_age_s"].astype("float").round(2)
    return df


def _replay_call(cluster, name: str, function: str) -> "tuple[bool, str]":
    """Call pg_wal_replay_pause/resume on a replica: (True, its replay state) or (False, the error)."""
    try:
        node = _replica(cluster, name)
        node.execute(f"SELECT {function}()", dbname="postgres")
        return True, replay_pause_state(node)
    except LabError as e:
        return False, str(e)


def pause_replay(cluster, name: str) -> str:
    """``pg_wal_replay_pause()`` on a replica; a one-line message (never raises a LabError).

    >>> lab.standby.pause_replay(cluster, "replica1")   # doctest: +SKIP
    'replica1: replay paused: WAL still arrives, none is applied until resume_replay'
    """
    ok, state = _replay_call(cluster, name, "pg_wal_replay_pause")
    if not ok:
        return _("{name}: could not pause replay: {error}").format(name=name, error=state)
    if state == "pause requested":
        return _("{name}: replay pause requested: it stops before the next WAL record it applies "
                 "(on a delayed replica: when the current delay ends)").format(name=name)
    return _("{name}: replay {state}: WAL still arrives, none is applied until resume_replay").format(name=name, state=state)


def resume_replay(cluster, name: str) -> str:
    """``pg_wal_replay_resume()`` on a replica; a one-line message (never raises a LabError)."""
    ok, state = _replay_call(cluster, name, "pg_wal_replay_resume")
    if not ok:
        return _("{name}: could not resume replay: {error}").format(name=name, error=state)
    name = name.name if isinstance(name, Node) else name
    behind = lag_table(cluster).set_index("node").loc[name, "lag_bytes"]
    return _("{name}: replay resumed ({state}); it is {behind} bytes behind the primary").format(
        name=name, state=state, behind=behind)


def replay_control(cluster):
    """A panel: pick a replica, pause or resume its replay, and watch the lag table.

    >>> lab.standby.replay_control(cluster)   # doctest: +SKIP
    """
    need_cluster(cluster)
    names = [r.name for r in cluster.replicas]
    picker = w.Dropdown(options=names, value=names[0] if names else None, description=_("replica"),
                        layout=w.Layout(width="240px"))
    pause_b = w.Button(description=_("pause replay"), button_style="warning", layout=w.Layout(width="120px"))
    resume_b = w.Button(description=_("resume replay"), button_style="success", layout=w.Layout(width="120px"))
    refresh_b = w.Button(description=_("refresh"), icon="refresh", layout=w.Layout(width="100px"))
    message = w.HTML("<i>" + _("pick a replica, pause its replay, write on the primary, refresh, resume") + "</i>")
    out = w.Output()

    def show(_event=None):
        with out:
            out.clear_output(wait=True)
            display(lag_table(cluster))

    def act(fn):
        def handler(_button):
            message.value = html.escape(fn(cluster, picker.value))
            show()
        return handler

    pause_b.on_click(act(pause_replay))
    resume_b.on_click(act(resume_replay))
    refresh_b.on_click(show)
    show()
    return w.VBox([w.HTML("<b>" + _("Replay control") + "</b>"), w.HBox([picker, pause_b, resume_b, refresh_b]), message, out])


# --- break and repair ------------------------------------------------------------------------------
def break_replica(cluster, name: str = "replica1") -> str:
    """Quietly make a replica stop applying WAL (it keeps receiving it and keeps answering queries).
    Finding out why, and repairing it, is the exercise."""
    node = _replica(cluster, name)
    node.set(recovery_min_apply_delay="1h")
    return _("{node} has been changed: it still answers queries and still receives WAL. "
             "Find out what is wrong, and repair it.").format(node=node.name)


# --- leaving the cluster as the chapter found it -----------------------------------------------------
def delayed_replicas(cluster) -> list:
    """The replicas this chapter adds: any running replica but replica1 whose recovery_min_apply_delay
    was set with ``node.set``.  (replica1 is the chapter's own: a delay there is reset, not removed.)"""
    need_cluster(cluster)
    found = []
    for r in cluster.replicas:
        if r.name == "replica1" or not r.is_running:
            continue
        if "recovery_min_apply_delay" in standby_settings(cluster).set_index("node").loc[r.name, "changed"]:
            found.append(r)
    return found


def tidy(cluster) -> Text:
    """Undo what this chapter changes: remove the delayed replica (``delayed_replicas``), resume paused
    replay and reset the chapter's settings on every other replica, drop the chapter's tables.
    Says what it did."""
    need_cluster(cluster)
    done = []
    for r in delayed_replicas(cluster):
        cluster.remove_replica(r.name)
        done.append(_("removed {node} (a delayed replica)").format(node=r.name))
    for r in cluster.replicas:
        if not r.is_running:
            continue
        if replay_pause_state(r) != "not paused":
            r.execute("SELECT pg_wal_replay_resume()", dbname="postgres")
            done.append(_("{node}: replay resumed").format(node=r.name))
        changed = standby_settings(cluster).set_index("node").loc[r.name, "changed"]
        if changed != "-":
            names = changed.split(", ")
            r.set(**{n: None for n in names})
            done.append(_("{node}: reset {settings}").format(node=r.name, settings=changed))
    for t in SCRATCH_TABLES:
        if cluster.primary.scalar("SELECT to_regclass(%s) IS NOT NULL", (t,)):
            cluster.primary.execute(pgsql.SQL("DROP TABLE {}").format(pgsql.Identifier(t)))
            done.append(_("dropped table {table}").format(table=t))
    for r in cluster.replicas:
        if r.is_running:
            wait_replayed(cluster.primary, r)
    return Text("\n".join(done) if done else _("nothing to tidy: the cluster is as the chapter found it"))
