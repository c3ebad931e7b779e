"""Chapter 01's self-checks (a primary and a replica), checked against the real cluster.

>>> lab.checks.check("01.2", cluster, answer=1)                            # doctest: +SKIP
>>> lab.checks.exercises("01")                                             # doctest: +SKIP
"""
from __future__ import annotations

import pandas as pd

from ..errors import Timeout
from ..i18n import N_, _, ngettext
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


@exercise("01.1", N_("a row of yours reaches the replica"), needs=MAIN_REPLICA,
          hint=N_("INSERT a row into test_replication on the primary whose mensaje starts with 'hola de ', e.g. "
                  "'hola de <your name>', then read it on the replica."))
def _row_reaches_replica(cluster, replica):
    query = "SELECT id, mensaje FROM test_replication WHERE mensaje ILIKE %s ORDER BY id"
    mine = cluster.primary.sql(query, (HOLA + "_%",))
    if mine.empty:
        return False, _("no row of test_replication starts with {prefix!r} on the primary yet: INSERT one there "
                        "with cluster.primary.execute(...), e.g. mensaje = '{prefix}<your name>'").format(prefix=HOLA)
    if not replica.is_running:
        return False, _("your row is on the primary, but {stopped}").format(stopped=stopped(replica))
    if replica.sql(query, (HOLA + "_%",)).empty:
        try:  # asynchronous: give the replica a moment to replay it
            cluster.wait_replayed(timeout=3)
        except Timeout:
            pass
    seen = replica.sql(query, (HOLA + "_%",))
    if seen.empty:
        return False, _("your row is on the primary but not on {replica}: is it streaming? "
                        "see lab.replication.stat_replication(cluster)").format(replica=replica.name)
    row = seen.iloc[-1]
    return True, _("{message!r} (id {id}) was written on the primary and is on {replica}").format(
        message=row["mensaje"], id=row["id"], replica=replica.name)


@exercise("01.2", N_("how many replicas stream"), answer=True,
          hint=N_("Count, on the primary, the rows of pg_stat_replication whose state is 'streaming'."))
def _how_many_stream(cluster, answer):
    given = as_count(answer)
    if given is None:
        return False, _("answer with a whole number, e.g. answer=3 (not {answer!r})").format(answer=answer)
    names = cluster.primary.sql("SELECT application_name FROM pg_stat_replication WHERE state = 'streaming' "
                                "ORDER BY 1", dbname="postgres")["application_name"].tolist()
    if given == len(names):
        if not names:
            return True, _("right: 0 replicas stream from the primary (none)")
        return True, ngettext("right: {count} replica streams from the primary ({names})",
                              "right: {count} replicas stream from the primary ({names})",
                              len(names)).format(count=len(names), names=", ".join(names))
    return False, _("not what the primary says: on the primary, count the rows of pg_stat_replication "
                    "whose state is 'streaming'")


@exercise("01.3", N_("which node is in recovery"), answer=True,
          hint=N_("Ask each running node SELECT pg_is_in_recovery() and answer with the name(s) of the node(s) "
                  "where it is true, e.g. answer='replica1' or a list of names."))
def _in_recovery(cluster, answer):
    items = [answer] if isinstance(answer, (str, Node)) else answer
    if not isinstance(items, (list, tuple, set, frozenset)) or not items:
        return False, _("answer with a node name, e.g. answer='primary', or a list of names (not {answer!r})").format(
            answer=answer)
    given = set()
    for a in items:
        name = a.name if isinstance(a, Node) else str(a).strip().lower()
        if name in _ORIGINAL_NAMES:
            return False, _("{name} was the original course's container; here it is {here!r}").format(
                name=name, here=_ORIGINAL_NAMES[name])
        if name not in {n.name for n in cluster.nodes}:
            return False, _("no node {name!r} in this cluster: the nodes are {nodes}").format(
                name=name, nodes=", ".join(n.name for n in cluster.nodes))
        given.add(name)
    in_recovery = {n.name for n in cluster.nodes
                   if n.is_running and n.scalar("SELECT pg_is_in_recovery()", dbname="postgres")}
    if given == in_recovery:
        return True, ngettext("right: {names} replays the primary's WAL, so pg_is_in_recovery() is true there",
                              "right: {names} replay the primary's WAL, so pg_is_in_recovery() is true there",
                              len(in_recovery)).format(names=", ".join(sorted(in_recovery)))
    return False, _("not what the nodes say: ask each running node SELECT pg_is_in_recovery()")


MIENTRAS = "mientras "


@exercise("01.4", N_("a stopped replica catches up"), needs=MAIN_REPLICA,
          hint=N_("Stop the replica, INSERT a row whose mensaje starts with 'mientras ' on the primary, then start "
                  "the replica again: it catches up on what it missed."))
def _stopped_replica_catches_up(cluster, replica):
    how = _("stop {replica}, INSERT a row whose mensaje starts with {prefix!r} on the primary, "
            "then start {replica} again").format(replica=replica.name, prefix=MIENTRAS)
    stops = stopped_intervals(replica.logs(tail=5000))
    if not stops:
        return False, _("{replica} has not been stopped yet: {how}").format(replica=replica.name, how=how)
    rows = cluster.primary.sql("SELECT id, mensaje, creado_en FROM test_replication WHERE mensaje ILIKE %s "
                               "ORDER BY id", (MIENTRAS + "%",))
    missed = [r for r in rows.itertuples()
              if any(down < pd.Timestamp(r.creado_en) and (up is None or pd.Timestamp(r.creado_en) < up)
                     for down, up in stops)]
    if not replica.is_running:
        if missed:
            return False, _("{count} row(s) written while {replica} is stopped: now start it with "
                            "cluster.node({replica!r}).start() and check again").format(
                count=len(missed), replica=replica.name)
        return False, _("{replica} is stopped: write a row starting with {prefix!r} on the primary now").format(
            replica=replica.name, prefix=MIENTRAS)
    if not missed:
        return False, _("no row starting with {prefix!r} was written while {replica} was stopped: {how}").format(
            prefix=MIENTRAS, replica=replica.name, how=how)
    try:
        lsn = cluster.wait_replayed(timeout=5)
    except Timeout:
        return False, _("{replica} runs again but has not caught up with the primary: see "
                        "lab.replication.stat_wal_receiver(cluster) and cluster.node({replica!r}).logs()").format(
            replica=replica.name)
    ids = [int(r.id) for r in missed]
    found = replica.scalar("SELECT count(*) FROM test_replication WHERE id = ANY(%s)", (ids,))
    if found != len(ids):
        return False, _("{replica} has replayed {lsn} but lacks rows written while it was stopped").format(
            replica=replica.name, lsn=lsn)
    return True, _("{replica} missed {count} row(s) while it was stopped, caught up after its start "
                   "and has replayed the primary's WAL up to {lsn}").format(replica=replica.name, count=len(ids), lsn=lsn)


@exercise("01.5", N_("down() and up() keep the data"),
          hint=N_("After exercise 01.1, run cluster.down(), then cluster = lab.up(replicas=1): your 'hola de ' row "
                  "is still on the primary and on the replica."))
def _down_up_keeps_data(cluster):
    replica = main_replica(cluster)  # a cluster brought up without a replica passes on the primary alone
    query = "SELECT id, mensaje, creado_en FROM test_replication WHERE mensaje ILIKE %s ORDER BY id LIMIT 1"
    first = cluster.primary.sql(query, (HOLA + "_%",))
    if first.empty:
        return False, _("do exercise 01.1 first: this one checks that its {prefix!r} row survives a restart").format(
            prefix=HOLA)
    row = first.iloc[0]
    started = cluster.primary.scalar("SELECT pg_postmaster_start_time()")
    if started < row["creado_en"]:
        return False, _("the primary has not been restarted since {message!r} was written: "
                        "run cluster.down(), then cluster = lab.up(replicas=1), and check again").format(
            message=row["mensaje"])
    if replica is not None:
        if not replica.is_running:
            return False, stopped(replica)
        cluster.wait_replayed(timeout=5)
        if replica.scalar("SELECT count(*) FROM test_replication WHERE id = %s", (int(row["id"]),)) != 1:
            return False, _("{message!r} is on the primary but not on {replica}: see cluster.status()").format(
                message=row["mensaje"], replica=replica.name)
    if replica is None:
        return True, _("{message!r} was written before the primary's last start ({started:%H:%M:%S}) "
                       "and is still on the primary").format(message=row["mensaje"], started=started)
    return True, _("{message!r} was written before the primary's last start ({started:%H:%M:%S}) "
                   "and is still on the primary and {replica}").format(
        message=row["mensaje"], started=started, replica=replica.name)
