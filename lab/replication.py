"""Watching replication work: what the primary and the replicas report, and how fast rows travel.

>>> cluster = lab.up(replicas=1)                        # doctest: +SKIP
>>> lab.replication.stat_replication(cluster)           # doctest: +SKIP
>>> lab.replication.time_to_replica(cluster, n=20)      # doctest: +SKIP
"""
from __future__ import annotations

import time

import pandas as pd
import psycopg2

from .errors import BadArgument, LabError, NotRunning, Text, Timeout, need_int, need_number
from .faults import need_cluster
from .i18n import _, ngettext
from .lsn import lsn_diff, parse_lsn
from .node import Node, Role

# The columns of pg_stat_replication a student needs; lags as seconds (floats print better than intervals).
_STAT_REPLICATION = """
SELECT application_name,
       client_addr::text AS client_addr,
       state,
       sent_lsn::text    AS sent_lsn,
       write_lsn::text   AS write_lsn,
       flush_lsn::text   AS flush_lsn,
       replay_lsn::text  AS replay_lsn,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS replay_lag_bytes,
       EXTRACT(epoch FROM write_lag)::float8  AS write_lag_s,
       EXTRACT(epoch FROM flush_lag)::float8  AS flush_lag_s,
       EXTRACT(epoch FROM replay_lag)::float8 AS replay_lag_s,
       sync_state
  FROM pg_stat_replication
 ORDER BY application_name
"""

_WAL_RECEIVER_COLUMNS = ["status", "receive_start_lsn", "written_lsn", "flushed_lsn", "latest_end_lsn",
                         "sender_host", "sender_port", "slot_name"]
_STAT_WAL_RECEIVER = """
SELECT status,
       receive_start_lsn::text AS receive_start_lsn,
       written_lsn::text       AS written_lsn,
       flushed_lsn::text       AS flushed_lsn,
       latest_end_lsn::text    AS latest_end_lsn,
       sender_host, sender_port, slot_name
  FROM pg_stat_wal_receiver
"""


def stat_replication(cluster) -> pd.DataFrame:
    """pg_stat_replication on the primary: one row per connected replica (WAL sender).

    >>> lab.replication.stat_replication(cluster)[["application_name", "state", "replay_lsn"]]  # doctest: +SKIP
    """
    df = need_cluster(cluster).primary.sql(_STAT_REPLICATION, dbname="postgres")
    df["replay_lag_bytes"] = df["replay_lag_bytes"].astype("Int64")
    for col in ("write_lag_s", "flush_lag_s", "replay_lag_s"):
        df[col] = df[col].astype("float")
    return df


def stat_wal_receiver(cluster) -> pd.DataFrame:
    """pg_stat_wal_receiver on each replica, plus what it has replayed (``pg_last_wal_replay_lsn()``).

    A stopped replica gets a row too, with ``state`` 'stopped' and nothing else.
    >>> lab.replication.stat_wal_receiver(cluster)[["node", "status", "flushed_lsn"]]  # doctest: +SKIP
    """
    rows = []
    for r in need_cluster(cluster).replicas:
        row = dict(node=r.name, state=r.state.value, **{c: None for c in _WAL_RECEIVER_COLUMNS}, replayed_lsn=None)
        if r.is_running:
            try:
                wr = r.sql(_STAT_WAL_RECEIVER, dbname="postgres")
                row["replayed_lsn"] = r.scalar("SELECT pg_last_wal_replay_lsn()::text", dbname="postgres")
            except NotRunning:  # stopped between the two questions
                row["state"] = "stopped"
            else:
                if len(wr):  # empty while the receiver (re)connects
                    row.update(wr.iloc[0].to_dict())
        rows.append(row)
    df = pd.DataFrame(rows, columns=["node", "state", *_WAL_RECEIVER_COLUMNS, "replayed_lsn"])
    df["sender_port"] = df["sender_port"].astype("Int64")
    return df


def _pick_replica(cluster, replica) -> Node:
    need_cluster(cluster)
    if isinstance(replica, Node):
        return replica
    if replica is not None:
        node = cluster.node(replica)
        if node.role != Role.REPLICA:
            raise LabError(_("{node} is the {role}, not a replica: pick one of {replicas}").format(
                node=node.name, role=node.role,
                replicas=", ".join(r.name for r in cluster.replicas) or _("(none: cluster.add_replica())")))
        return node
    running = [r for r in cluster.replicas if r.is_running]
    if not running:
        raise NotRunning(_("no replica is running: start one with cluster.node('replica1').start() "
                           "or add one with cluster.add_replica()"))
    return running[0]


def _db_error(node: Node, e: psycopg2.Error) -> LabError:
    text = (getattr(e, "pgerror", None) or str(e)).strip()
    return LabError(f"{node.name}: {text.splitlines()[0] if text else type(e).__name__}")


def time_to_replica(cluster, replica=None, n: int = 20, timeout: float = 5.0) -> pd.DataFrame:
    """Insert ``n`` rows into test_replication on the primary, one at a time, and time how long each
    takes to become visible on a replica (from the primary's COMMIT to the first read that sees it).

    One row per trial: ``trial, replica, row_id, lsn, seconds, polls``.  The replica is read in a
    tight loop, so ``seconds`` is as fine as one round trip to it (``polls`` says how many it took).
    >>> d = lab.replication.time_to_replica(cluster, n=20)   # doctest: +SKIP
    >>> lab.replication.delay_summary(d)                     # doctest: +SKIP
    """
    need_int(n, _("n (the number of rows to time)"), 1, 10_000)
    timeout = need_number(timeout, "timeout", 0.1, 300, unit="seconds")
    node = _pick_replica(cluster, replica)
    if not node.is_running:
        raise NotRunning(_("{node} is stopped: start it with cluster.node({node!r}).start()").format(node=node.name))
    # Persistent connections: a new connection per poll would cost more than the replication itself.
    primary, reader = cluster.primary.connect(), node.connect()
    trials = []
    try:
        for i in range(1, int(n) + 1):
            try:
                with primary.cursor() as cur:
                    cur.execute("INSERT INTO test_replication (mensaje) VALUES (%s) "
                                "RETURNING id, pg_current_wal_insert_lsn()::text", (f"medición {i}/{n}",))
                    row_id, lsn = cur.fetchone()
            except psycopg2.Error as e:
                raise _db_error(cluster.primary, e) from None
            committed = time.perf_counter()
            deadline = committed + timeout
            polls = 0
            with reader.cursor() as cur:
                while True:
                    polls += 1
                    try:
                        cur.execute("SELECT 1 FROM test_replication WHERE id = %s", (row_id,))
                        seen = cur.fetchone() is not None
                    except psycopg2.Error as e:
                        raise _db_error(node, e) from None
                    now = time.perf_counter()
                    if seen:
                        break
                    if now > deadline:
                        raise Timeout(_("row {row_id} did not appear on {node} within {timeout:g} s: is it "
                                        "streaming? see lab.replication.stat_replication(cluster)").format(
                            row_id=row_id, node=node.name, timeout=timeout))
            trials.append(dict(trial=i, replica=node.name, row_id=row_id, lsn=lsn, seconds=now - committed,
                               polls=polls))
    finally:
        primary.close()
        reader.close()
    return pd.DataFrame(trials)


def delay_summary(trials: pd.DataFrame) -> Text:
    """One line about ``time_to_replica``'s trials, from their own numbers: how many, the median, the
    75th percentile and the slowest, in milliseconds, and how many took over twice the median.

    >>> import pandas as pd
    >>> delay_summary(pd.DataFrame(dict(replica="replica1", seconds=[0.0008, 0.0009, 0.001, 0.0031])))
    4 trials on replica1: median 0.95 ms, 75th percentile 1.52 ms, slowest 3.1 ms; 1 of 4 over twice the median
    """
    if not isinstance(trials, pd.DataFrame) or "seconds" not in trials or trials.empty:
        raise BadArgument(_("delay_summary reads what lab.replication.time_to_replica returns: "
                            "trials = lab.replication.time_to_replica(cluster), then delay_summary(trials)"))
    ms = trials["seconds"].astype(float) * 1000
    median, p75, top = ms.median(), ms.quantile(0.75), ms.max()
    slow = int((ms > 2 * median).sum())
    where = ", ".join(sorted(set(trials["replica"]))) if "replica" in trials else _("the replica")
    return Text(ngettext("{n} trials on {where}: median {median} ms, 75th percentile {p75} ms, "
                         "slowest {slowest} ms; {slow} of {n} over twice the median",
                         "{n} trials on {where}: median {median} ms, 75th percentile {p75} ms, "
                         "slowest {slowest} ms; {slow} of {n} over twice the median", len(ms)).format(
        n=len(ms), where=where, median=_ms(median), p75=_ms(p75), slowest=_ms(top), slow=slow))


def _ms(value: float) -> str:
    """Milliseconds with three significant digits: 0.123, 1.52, 12.3, 123."""
    return f"{value:.3g}" if value < 1000 else f"{value:.0f}"


def _replay_lsn(conn) -> "str | None":
    with conn.cursor() as cur:
        cur.execute("SELECT pg_last_wal_replay_lsn()::text")
        return cur.fetchone()[0]


def catch_up(cluster, replica: str = "replica1", rows: int = 10_000, timeout: float = 60) -> pd.DataFrame:
    """Stop a replica, write ``rows`` rows on the primary, start the replica and time its catch-up.

    One row per moment of the experiment: before the stop; stopped, after the writes (how far
    behind it is); just started; caught up.  ``seconds`` counts from the call to ``start()``.
    >>> lab.replication.catch_up(cluster, "replica1", rows=10_000)   # doctest: +SKIP
    """
    need_int(rows, _("rows (how many rows to write while the replica is stopped)"), 1, 1_000_000)
    timeout = need_number(timeout, "timeout", 1, 3600, unit="seconds")
    node = _pick_replica(cluster, replica)
    primary = cluster.primary
    if not primary.is_running:
        raise NotRunning(_("the primary ({name}) is stopped: start it with cluster.start()").format(name=primary.name))

    def count(n: Node):
        return n.scalar("SELECT count(*) FROM test_replication")

    def moment(phase, replayed, seconds=None, on_replica=None):
        cur = primary.scalar("SELECT pg_current_wal_lsn()::text", dbname="postgres")
        return dict(phase=phase, replica_state=node.state.value, primary_lsn=cur, replayed_lsn=replayed,
                    behind_bytes=lsn_diff(cur, replayed), rows_on_primary=count(primary),
                    rows_on_replica=on_replica, seconds=seconds)

    moments = []
    replayed = None
    if node.is_running:  # a re-run after an interrupted one may find it stopped already
        replayed = node.scalar("SELECT pg_last_wal_replay_lsn()::text", dbname="postgres")
        moments.append(moment(_("before the stop"), replayed, on_replica=count(node)))
        node.stop()
    primary.execute("INSERT INTO test_replication (mensaje) SELECT 'lote ' || g FROM generate_series(1, %s) g",
                    (int(rows),))
    moments.append(moment(ngettext("stopped, {rows} rows written on the primary",
                                   "stopped, {rows} rows written on the primary", rows).format(rows=rows), replayed))
    target = parse_lsn(moments[-1]["primary_lsn"])

    t0 = time.monotonic()
    node.start()
    conn = node.connect(dbname="postgres")
    try:
        started = time.monotonic() - t0
        first = _replay_lsn(conn)
        moments.append(moment(_("started (accepting connections)"), first, started, count(node)))
        deadline = t0 + timeout
        lsn = first
        while lsn is None or parse_lsn(lsn) < target:
            if time.monotonic() > deadline:
                raise Timeout(_("{node} has not caught up after {timeout:g} s (it is at {lsn}): "
                                "see cluster.node({node!r}).logs()").format(node=node.name, timeout=timeout, lsn=lsn))
            time.sleep(0.002)
            lsn = _replay_lsn(conn)
        caught = time.monotonic() - t0
    finally:
        conn.close()
    moments.append(moment(_("caught up"), lsn, caught, count(node)))
    df = pd.DataFrame(moments)
    for col in ("behind_bytes", "rows_on_primary", "rows_on_replica"):
        df[col] = df[col].astype("Int64")
    df["seconds"] = df["seconds"].astype("float")
    return df
