"""Chapter 05's self-checks (lag, synchronous commit, consistency); ``lab.checks.check("05.1", cluster)``."""
from __future__ import annotations

import re
import time

from .. import faults
from ..errors import LabError
from .registry import RUNNING_REPLICA, exercise


def _sync_rows(cluster):
    return cluster.primary.sql("SELECT application_name, sync_state FROM pg_stat_replication", dbname="postgres")


@exercise("05.1", "replica1 is the synchronous standby", needs=RUNNING_REPLICA)
def _replica_is_sync(cluster, replica):
    """Name the replica alone in the primary's synchronous_standby_names:
    lab.sync.set_synchronous(cluster, 'replica1')."""
    names = cluster.primary.scalar("SHOW synchronous_standby_names")
    if not names:
        return False, ("synchronous_standby_names is empty on the primary: every replica is asynchronous; "
                       f"lab.sync.set_synchronous(cluster, {replica.name!r}) or cluster.primary.set(...)")
    rows = _sync_rows(cluster).set_index("application_name")["sync_state"]
    state = rows.get(replica.name)
    if state != "sync":
        return False, (f"synchronous_standby_names = {names!r}, and the primary reports {replica.name} as "
                       f"{state or 'not connected'}: name it alone, e.g. {replica.name!r}")
    return True, (f"{replica.name} is the synchronous standby (sync_state 'sync'): with synchronous_commit = on, "
                  f"every COMMIT on the primary now waits until {replica.name} has flushed it")


@exercise("05.2", "a quorum of one among two replicas")
def _quorum(cluster):
    """With two running replicas (lab.up(replicas=2)), make COMMIT wait for either one:
    lab.sync.set_synchronous(cluster, 'ANY 1 (replica1, replica2)')."""
    running = [r.name for r in cluster.replicas if r.is_running]
    if len(running) < 2:
        return False, "this needs two running replicas: lab.up(replicas=2) adds the second one"
    names = cluster.primary.scalar("SHOW synchronous_standby_names") or ""
    m = re.match(r"^\s*ANY\s+(\d+)\s*\((.*)\)\s*$", names, re.I)
    if not m:
        return False, (f"synchronous_standby_names = {names!r}: a quorum is written ANY n (name, name, ...), "
                       "e.g. 'ANY 1 (replica1, replica2)'")
    listed = [x.strip().strip('"') for x in m.group(2).split(",")]
    if int(m.group(1)) != 1 or len([x for x in listed if x in running]) < 2:
        return False, f"{names!r} is a quorum, but not of ONE among two running replicas ({', '.join(running)})"
    states = _sync_rows(cluster).set_index("application_name")["sync_state"]
    quorum = [n for n in listed if states.get(n) == "quorum"]
    if len(quorum) < 2:
        return False, "the primary does not report both as 'quorum' yet: are both streaming? cluster.status()"
    return True, (f"{names}: each COMMIT waits for whichever of {', '.join(quorum)} answers first, so either "
                  "can stop without blocking the primary (you measured it with lab.sync.quorum)")


@exercise("05.3", "your writes are visible on replica1 right after COMMIT", needs=RUNNING_REPLICA)
def _read_your_writes(cluster, replica):
    """Make every COMMIT on the primary wait until the replica has replayed it: pick the synchronous_commit
    level that waits for replay, and make the replica a synchronous standby."""
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
        raise LabError(f"the check could not write and read: {e}") from None
    finally:
        w.close()
        r.close()
    if misses:
        return False, (f"{misses} of 10 rows written on the primary were not yet on {replica.name} when read "
                       f"right after COMMIT (synchronous_commit = {level}): which level makes COMMIT wait "
                       f"for the replica's replay, and what must {replica.name} be for it to apply?")
    if level != "remote_apply":
        return False, (f"10 of 10 rows were on {replica.name} at once, but only because it is fast: with "
                       f"synchronous_commit = {level} COMMIT does not wait for the replica's replay, and a "
                       "replica a few ms away misses them (you measured it). Which level waits for replay?")
    names = cluster.primary.scalar("SHOW synchronous_standby_names")
    state = _sync_rows(cluster).set_index("application_name")["sync_state"].get(replica.name)
    if state not in ("sync", "quorum"):
        return False, (f"synchronous_commit is remote_apply, but {replica.name} is not a synchronous standby "
                       f"(synchronous_standby_names = {names!r}): COMMIT waits for no replica")
    return True, (f"10 of 10 rows were on {replica.name} at once: COMMIT waited for its replay (remote_apply, "
                  f"{replica.name} {state}). Put it back afterwards: "
                  "cluster.primary.set(synchronous_commit=None, synchronous_standby_names=None)")


@exercise("05.4", "every replica streams from the primary directly again")
def _repaired(cluster):
    """Put back what the chapter changed: lab.sync.tidy(cluster) (synchronous_standby_names empty,
    synchronous_commit on, every replica running, unpaused and streaming straight from the primary)."""
    problems = []
    names = cluster.primary.scalar("SHOW synchronous_standby_names")
    if names:
        problems.append(f"synchronous_standby_names is still {names!r}")
    level = cluster.primary.scalar("SHOW synchronous_commit")
    if level != "on":
        problems.append(f"synchronous_commit is {level} on the primary (the default is on)")
    for r in cluster.replicas:
        if not r.is_running:
            problems.append(f"{r.name} is stopped")
            continue
        if faults.is_paused(r):
            problems.append(f"{r.name} is paused")
            continue
        got = r.sql("SELECT status, sender_port FROM pg_stat_wal_receiver", dbname="postgres")
        deadline = time.monotonic() + 3
        while (not len(got) or got["status"].iloc[0] != "streaming") and time.monotonic() < deadline:
            time.sleep(0.1)
            got = r.sql("SELECT status, sender_port FROM pg_stat_wal_receiver", dbname="postgres")
        if not len(got) or got["status"].iloc[0] != "streaming":
            problems.append(f"{r.name} is not streaming")
        elif int(got["sender_port"].iloc[0]) != cluster.primary.port:
            problems.append(f"{r.name} streams through port {int(got['sender_port'].iloc[0])}, not the primary's "
                            f"{cluster.primary.port} (a proxy)")
    if problems:
        return False, "; ".join(problems) + ": lab.sync.tidy(cluster) puts everything back"
    return True, "every replica streams straight from the primary, asynchronously, nothing paused or cut"
