"""Chapter 05's self-checks (lag, synchronous commit, consistency); ``lab.checks.check("05.1", cluster)``."""
from __future__ import annotations

import re
import time

from .. import faults
from ..errors import LabError
from ..i18n import N_, _
from .registry import RUNNING_REPLICA, exercise


def _sync_rows(cluster):
    return cluster.primary.sql("SELECT application_name, sync_state FROM pg_stat_replication", dbname="postgres")


@exercise("05.1", N_("replica1 is the synchronous standby"), needs=RUNNING_REPLICA,
          hint=N_("Name the replica alone in the primary's synchronous_standby_names: "
                  "lab.sync.set_synchronous(cluster, 'replica1')."))
def _replica_is_sync(cluster, replica):
    names = cluster.primary.scalar("SHOW synchronous_standby_names")
    if not names:
        return False, _("synchronous_standby_names is empty on the primary: every replica is asynchronous; "
                        "lab.sync.set_synchronous(cluster, {replica!r}) or cluster.primary.set(...)").format(
            replica=replica.name)
    rows = _sync_rows(cluster).set_index("application_name")["sync_state"]
    state = rows.get(replica.name)
    if state != "sync":
        if not state:
            return False, _("synchronous_standby_names = {names!r}, and the primary reports {replica} as "
                            "not connected: name it alone, e.g. {replica!r}").format(names=names, replica=replica.name)
        return False, _("synchronous_standby_names = {names!r}, and the primary reports {replica} as "
                        "{state}: name it alone, e.g. {replica!r}").format(names=names, replica=replica.name,
                                                                           state=state)
    return True, _("{replica} is the synchronous standby (sync_state 'sync'): with synchronous_commit = on, "
                   "every COMMIT on the primary now waits until {replica} has flushed it").format(replica=replica.name)


@exercise("05.2", N_("a quorum of one among two replicas"),
          hint=N_("With two running replicas (lab.up(replicas=2)), make COMMIT wait for either one: "
                  "lab.sync.set_synchronous(cluster, 'ANY 1 (replica1, replica2)')."))
def _quorum(cluster):
    running = [r.name for r in cluster.replicas if r.is_running]
    if len(running) < 2:
        return False, _("this needs two running replicas: lab.up(replicas=2) adds the second one")
    names = cluster.primary.scalar("SHOW synchronous_standby_names") or ""
    m = re.match(r"^\s*ANY\s+(\d+)\s*\((.*)\)\s*$", names, re.I)
    if not m:
        return False, _("synchronous_standby_names = {names!r}: a quorum is written ANY n (name, name, ...), "
                        "e.g. 'ANY 1 (replica1, replica2)'").format(names=names)
    listed = [x.strip().strip('"') for x in m.group(2).split(",")]
    if int(m.group(1)) != 1 or len([x for x in listed if x in running]) < 2:
        return False, _("{names!r} is a quorum, but not of ONE among two running replicas ({running})").format(
            names=names, running=", ".join(running))
    states = _sync_rows(cluster).set_index("application_name")["sync_state"]
    quorum = [n for n in listed if states.get(n) == "quorum"]
    if len(quorum) < 2:
        return False, _("the primary does not report both as 'quorum' yet: are both streaming? cluster.status()")
    return True, _("{names}: each COMMIT waits for whichever of {quorum} answers first, so either "
                   "can stop without blocking the primary (you measured it with lab.sync.quorum)").format(
        names=names, quorum=", ".join(quorum))


@exercise("05.3", N_("your writes are visible on replica1 right after COMMIT"), needs=RUNNING_REPLICA,
          hint=N_("Make every COMMIT on the primary wait until the replica has replayed it: pick the "
                  "synchronous_commit level that waits for replay, and make the replica a synchronous standby."))
def _read_your_writes(cluster, replica):
    level = cluster.primary.scalar("SHOW synchronous_commit")
    w, r = cluster.primary.connect(), replica.connect()
    misses = 0
    try:
        with w.cursor() as wc, r.cursor() as rc:
            for i in range(10):
                wc.execute("INSERT INTO test_replication (mensaje) VALUES (%s) RETURNING id", (f"05.3 check {i}",))
                row_id = wc.fetchone()[0]
                rc.execute("SELECT count(*) FROM test_replication WHERE id = %s", (row_id,))
                misses += rc.fetchone()[0] == 0
    except Exception as e:
        raise LabError(_("the check could not write and read: {error}").format(error=e)) from None
    finally:
        w.close()
        r.close()
    if misses:
        return False, _("{misses} of 10 rows written on the primary were not yet on {replica} when read "
                        "right after COMMIT (synchronous_commit = {level}): which level makes COMMIT wait "
                        "for the replica's replay, and what must {replica} be for it to apply?").format(
            misses=misses, replica=replica.name, level=level)
    if level != "remote_apply":
        return False, _("10 of 10 rows were on {replica} at once, but only because it is fast: with "
                        "synchronous_commit = {level} COMMIT does not wait for the replica's replay, and a "
                        "replica a few ms away misses them (you measured it). Which level waits for replay?").format(
            replica=replica.name, level=level)
    names = cluster.primary.scalar("SHOW synchronous_standby_names")
    state = _sync_rows(cluster).set_index("application_name")["sync_state"].get(replica.name)
    if state not in ("sync", "quorum"):
        return False, _("synchronous_commit is remote_apply, but {replica} is not a synchronous standby "
                        "(synchronous_standby_names = {names!r}): COMMIT waits for no replica").format(
            replica=replica.name, names=names)
    return True, _("10 of 10 rows were on {replica} at once: COMMIT waited for its replay (remote_apply, "
                   "{replica} {state}). Put it back afterwards: "
                   "cluster.primary.set(synchronous_commit=None, synchronous_standby_names=None)").format(
        replica=replica.name, state=state)


@exercise("05.4", N_("every replica streams from the primary directly again"),
          hint=N_("Put back what the chapter changed: lab.sync.tidy(cluster) (synchronous_standby_names empty, "
                  "synchronous_commit on, every replica running, unpaused and streaming straight from the primary)."))
def _repaired(cluster):
    problems = []
    names = cluster.primary.scalar("SHOW synchronous_standby_names")
    if names:
        problems.append(_("synchronous_standby_names is still {names!r}").format(names=names))
    level = cluster.primary.scalar("SHOW synchronous_commit")
    if level != "on":
        problems.append(_("synchronous_commit is {level} on the primary (the default is on)").format(level=level))
    for r in cluster.replicas:
        if not r.is_running:
            problems.append(_("{replica} is stopped").format(replica=r.name))
            continue
        if faults.is_paused(r):
            problems.append(_("{replica} is paused").format(replica=r.name))
            continue
        got = r.sql("SELECT status, sender_port FROM pg_stat_wal_receiver", dbname="postgres")
        deadline = time.monotonic() + 3
        while (not len(got) or got["status"].iloc[0] != "streaming") and time.monotonic() < deadline:
            time.sleep(0.1)
            got = r.sql("SELECT status, sender_port FROM pg_stat_wal_receiver", dbname="postgres")
        if not len(got) or got["status"].iloc[0] != "streaming":
            problems.append(_("{replica} is not streaming").format(replica=r.name))
        elif int(got["sender_port"].iloc[0]) != cluster.primary.port:
            problems.append(_("{replica} streams through port {port}, not the primary's {primary_port} (a proxy)").format(
                replica=r.name, port=int(got["sender_port"].iloc[0]), primary_port=cluster.primary.port))
    if problems:
        return False, _("{problems}: lab.sync.tidy(cluster) puts everything back").format(problems="; ".join(problems))
    return True, _("every replica streams straight from the primary, asynchronously, nothing paused or cut")
