"""Chapter 01's self-checks (a primary and a replica), checked against the real cluster.

>>> lab.checks.check("01.2", cluster, answer=1)                            # doctest: +SKIP
>>> lab.checks.exercises("01")                                             # doctest: +SKIP
"""
from __future__ import annotations

import pandas as pd

from ..errors import Timeout
from ..node import Node
from ..wal import log_time
from .answers import as_count
from .registry import MAIN_REPLICA, exercise, main_replica, stopped

# The original course's container names, which students may answer with.
_ORIGINAL_NAMES = {"pg-master": "primary", "pg-replica": "replica1"}


def stopped_intervals(log_text: str) -> list:
    """(stopped, started) times of each clean stop in a server log: from "database system is shut
    down" to the next "starting PostgreSQL" (``started`` is None while it is still stopped).
    A crash (kill) logs no stop time, so it is not counted.
    """
    intervals, down_at = [], None
    for line in log_text.splitlines():
        if "database system is shut down" in line:
            down_at = log_time(line)
        elif "starting PostgreSQL" in line and down_at is not None:
            intervals.append((down_at, log_time(line)))
            down_at = None
    if down_at is not None:
        intervals.append((down_at, None))
    return intervals


HOLA = "hola de "


@exercise("01.1", "a row of yours reaches the replica", needs=MAIN_REPLICA)
def _row_reaches_replica(cluster, replica):
    """INSERT a row into test_replication on the primary whose mensaje starts with 'hola de ', e.g.
    'hola de <your name>', then read it on the replica."""
    query = "SELECT id, mensaje FROM test_replication WHERE mensaje ILIKE %s ORDER BY id"
    mine = cluster.primary.sql(query, (HOLA + "_%",))
    if mine.empty:
        return False, (f"no row of test_replication starts with {HOLA!r} on the primary yet: INSERT one there "
                       f"with cluster.primary.execute(...), e.g. mensaje = '{HOLA}<your name>'")
    if not replica.is_running:
        return False, f"your row is on the primary, but {stopped(replica)}"
    if replica.sql(query, (HOLA + "_%",)).empty:
        try:  # asynchronous: give the replica a moment to replay it
            cluster.wait_replayed(timeout=3)
        except Timeout:
            pass
    seen = replica.sql(query, (HOLA + "_%",))
    if seen.empty:
        return False, (f"your row is on the primary but not on {replica.name}: is it streaming? "
                       "see lab.replication.stat_replication(cluster)")
    row = seen.iloc[-1]
    return True, f"{row['mensaje']!r} (id {row['id']}) was written on the primary and is on {replica.name}"


@exercise("01.2", "how many replicas stream", answer=True)
def _how_many_stream(cluster, answer):
    """Count, on the primary, the rows of pg_stat_replication whose state is 'streaming'."""
    given = as_count(answer)
    if given is None:
        return False, f"answer with a whole number, e.g. answer=3 (not {answer!r})"
    names = cluster.primary.sql("SELECT application_name FROM pg_stat_replication WHERE state = 'streaming' "
                                "ORDER BY 1", dbname="postgres")["application_name"].tolist()
    if given == len(names):
        return True, (f"right: {len(names)} replica{'' if len(names) == 1 else 's'} "
                      f"stream{'s' if len(names) == 1 else ''} from the primary ({', '.join(names) or 'none'})")
    return False, ("not what the primary says: on the primary, count the rows of pg_stat_replication "
                   "whose state is 'streaming'")


@exercise("01.3", "which node is in recovery", answer=True)
def _in_recovery(cluster, answer):
    """Ask each running node SELECT pg_is_in_recovery() and answer with the name(s) of the node(s) where
    it is true, e.g. answer='replica1' or a list of names."""
    items = [answer] if isinstance(answer, (str, Node)) else answer
    if not isinstance(items, (list, tuple, set, frozenset)) or not items:
        return False, f"answer with a node name, e.g. answer='primary', or a list of names (not {answer!r})"
    given = set()
    for a in items:
        name = a.name if isinstance(a, Node) else str(a).strip().lower()
        if name in _ORIGINAL_NAMES:
            return False, f"{name} was the original course's container; here it is {_ORIGINAL_NAMES[name]!r}"
        if name not in {n.name for n in cluster.nodes}:
            return False, f"no node {name!r} in this cluster: the nodes are {', '.join(n.name for n in cluster.nodes)}"
        given.add(name)
    in_recovery = {n.name for n in cluster.nodes
                   if n.is_running and n.scalar("SELECT pg_is_in_recovery()", dbname="postgres")}
    if given == in_recovery:
        return True, (f"right: {', '.join(sorted(in_recovery))} replay{'s' if len(in_recovery) == 1 else ''} "
                      "the primary's WAL, so pg_is_in_recovery() is true there")
    return False, "not what the nodes say: ask each running node SELECT pg_is_in_recovery()"


MIENTRAS = "mientras "


@exercise("01.4", "a stopped replica catches up", needs=MAIN_REPLICA)
def _stopped_replica_catches_up(cluster, replica):
    """Stop the replica, INSERT a row whose mensaje starts with 'mientras ' on the primary, then start the
    replica again: it catches up on what it missed."""
    how = (f"stop {replica.name}, INSERT a row whose mensaje starts with {MIENTRAS!r} on the primary, "
           f"then start {replica.name} again")
    stops = stopped_intervals(replica.logs(tail=5000))
    if not stops:
        return False, f"{replica.name} has not been stopped yet: {how}"
    rows = cluster.primary.sql("SELECT id, mensaje, creado_en FROM test_replication WHERE mensaje ILIKE %s "
                               "ORDER BY id", (MIENTRAS + "%",))
    missed = [r for r in rows.itertuples()
              if any(down < pd.Timestamp(r.creado_en) and (up is None or pd.Timestamp(r.creado_en) < up)
                     for down, up in stops)]
    if not replica.is_running:
        if missed:
            return False, (f"{len(missed)} row(s) written while {replica.name} is stopped: now start it with "
                          f"cluster.node({replica.name!r}).start() and check again")
        return False, f"{replica.name} is stopped: write a row starting with {MIENTRAS!r} on the primary now"
    if not missed:
        return False, f"no row starting with {MIENTRAS!r} was written while {replica.name} was stopped: {how}"
    try:
        lsn = cluster.wait_replayed(timeout=5)
    except Timeout:
        return False, (f"{replica.name} runs again but has not caught up with the primary: "
                       f"see lab.replication.stat_wal_receiver(cluster) and cluster.node({replica.name!r}).logs()")
    ids = [int(r.id) for r in missed]
    found = replica.scalar("SELECT count(*) FROM test_replication WHERE id = ANY(%s)", (ids,))
    if found != len(ids):
        return False, f"{replica.name} has replayed {lsn} but lacks rows written while it was stopped"
    return True, (f"{replica.name} missed {len(ids)} row(s) while it was stopped, caught up after its start "
                  f"and has replayed the primary's WAL up to {lsn}")


@exercise("01.5", "down() and up() keep the data")
def _down_up_keeps_data(cluster):
    """After exercise 01.1, run cluster.down(), then cluster = lab.up(replicas=1): your 'hola de ' row is
    still on the primary and on the replica."""
    replica = main_replica(cluster)  # a cluster brought up without a replica passes on the primary alone
    query = "SELECT id, mensaje, creado_en FROM test_replication WHERE mensaje ILIKE %s ORDER BY id LIMIT 1"
    first = cluster.primary.sql(query, (HOLA + "_%",))
    if first.empty:
        return False, f"do exercise 01.1 first: this one checks that its {HOLA!r} row survives a restart"
    row = first.iloc[0]
    started = cluster.primary.scalar("SELECT pg_postmaster_start_time()")
    if started < row["creado_en"]:
        return False, (f"the primary has not been restarted since {row['mensaje']!r} was written: "
                       "run cluster.down(), then cluster = lab.up(replicas=1), and check again")
    if replica is not None:
        if not replica.is_running:
            return False, stopped(replica)
        cluster.wait_replayed(timeout=5)
        if replica.scalar("SELECT count(*) FROM test_replication WHERE id = %s", (int(row["id"]),)) != 1:
            return False, f"{row['mensaje']!r} is on the primary but not on {replica.name}: see cluster.status()"
    where = "primary" + (f" and {replica.name}" if replica is not None else "")
    return True, (f"{row['mensaje']!r} was written before the primary's last start "
                  f"({started:%H:%M:%S}) and is still on the {where}")
