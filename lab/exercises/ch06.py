"""Chapter 06's self-checks (failover); ``lab.checks.check("06.1", cluster, answer=...)``."""
from __future__ import annotations

from ..failover import follows, timeline
from ..node import Role
from .answers import as_count
from .registry import exercise


@exercise("06.1", "the timeline the primary writes on now", answer=True)
def _primary_timeline(cluster, answer):
    """Answer with the timeline the primary writes on: lab.failover.timelines(cluster) shows it, or the first
    8 hex digits of pg_walfile_name(pg_current_wal_lsn()) on the primary."""
    primary = cluster.primary
    if not primary.is_running:
        return False, f"the primary ({primary.name}) is stopped: lab.failover.tidy(cluster), then check again"
    given = as_count(answer)
    if given is None:
        return False, f"answer with a whole number, e.g. answer=2 (not {answer!r})"
    now = timeline(primary)["timeline"]
    if given == now:
        return True, (f"right: {primary.name} writes on timeline {now}; every promotion started a new one, and "
                      f"its {now:08X}.history file in pg_wal says where each older one was left")
    return False, ("not the primary's timeline: lab.failover.timelines(cluster) shows it (column timeline), or "
                   "read the first 8 hex digits of pg_walfile_name(pg_current_wal_lsn()) on the primary")


@exercise("06.2", "exactly one node accepts writes")
def _one_writable(cluster):
    """After a failover, fence the old primary (lab.failover.fence, or cluster.rejoin) so that only the
    lab's primary accepts writes."""
    writers = []
    for n in cluster.nodes:  # a standalone server (chapters 09-10) is writable by design: not split brain
        if n.is_running and n.role != Role.STANDALONE and not timeline(n)["in_recovery"]:
            writers.append(n.name)
    if not writers:
        return False, "no running node accepts writes: start the primary (lab.failover.tidy(cluster))"
    if len(writers) > 1:
        others = [w for w in writers if w != cluster.primary.name]
        return False, (f"split brain: {', '.join(writers)} all accept writes; fence the old one(s): "
                       f"lab.failover.fence(cluster, {others[0]!r}) or cluster.rejoin({others[0]!r})")
    if writers[0] != cluster.primary.name:
        return False, f"{writers[0]} accepts writes but the lab's primary is {cluster.primary.name}: cluster.status()"
    return True, f"only {writers[0]} accepts writes: a client with any host order reaches the same primary"


@exercise("06.3", "every other node is a replica of the current primary again")
def _all_follow(cluster):
    """Bring every other node back as a streaming replica of the current primary, on its timeline:
    cluster.rejoin(name) rewinds a former primary; lab.failover.restore(cluster) repairs all of it."""
    problems = []
    physical = [n for n in cluster.nodes if n.role != Role.STANDALONE]
    for n in physical:
        if n.name == cluster.primary.name:
            continue
        if n.role != Role.REPLICA:
            problems.append(f"{n.name} is a {n.role} (cluster.rejoin({n.name!r}) rewinds it)")
        elif not n.is_running:
            problems.append(f"{n.name} is stopped")
        elif not follows(cluster, n):
            problems.append(f"{n.name} does not stream from {cluster.primary.name} on its timeline")
    if problems:
        return False, "; ".join(problems) + ": lab.failover.restore(cluster) repairs all of it"
    count = len(physical) - 1
    return True, (f"{count} node{'s' if count != 1 else ''} stream{'' if count != 1 else 's'} from "
                  f"{cluster.primary.name} on timeline {timeline(cluster.primary)['timeline']}")


# What each level that waits for a standby keeps, when the primary crashes (always: the standby has the
# commit before the client hears of it), when the standby's machine crashes at the same time, and what a
# read on the standby sees right after the COMMIT returned.
_KEEPS = {
    "remote_write": ("in the standby's OS cache (written, not yet flushed)",
                     "an OS crash of the standby at the same moment would lose it (the cache goes with it)",
                     "a read on the standby may not see it yet (not replayed)"),
    "on": ("on the standby's disk (flushed)",
           "it survives even an OS crash of the standby at the same moment",
           "a read on the standby may not see it yet (not replayed)"),
    "remote_apply": ("on the standby's disk and replayed",
                     "it survives even an OS crash of the standby at the same moment",
                     "a read on the standby sees it as soon as the COMMIT returned"),
}


@exercise("06.4", "a crash of the primary now would lose no acknowledged write")
def _zero_loss(cluster):
    """Make every acknowledged COMMIT wait until a standby has it: a synchronous standby
    (synchronous_standby_names) and a synchronous_commit level that waits for it (remote_write, on or remote_apply)."""
    primary = cluster.primary
    if not primary.is_running:
        return False, f"the primary ({primary.name}) is stopped: lab.failover.tidy(cluster) first"
    names = primary.scalar("SHOW synchronous_standby_names", dbname="postgres")
    level = primary.scalar("SHOW synchronous_commit", dbname="postgres")
    if not names:
        return False, ("synchronous_standby_names is empty: every replica is asynchronous, and a crash loses "
                       "what they had not received yet (your RPO table counted it)")
    states = primary.sql("SELECT application_name, sync_state FROM pg_stat_replication", dbname="postgres")
    sync = states[states["sync_state"].isin(["sync", "quorum"])]["application_name"].tolist()
    if not sync:
        return False, f"synchronous_standby_names = {names!r}, but no running replica matches it: commits block"
    if level not in _KEEPS:
        return False, (f"synchronous_commit = {level} on the primary: COMMIT returns before any standby has the "
                       "WAL, so a crash of the primary can lose it; which levels wait for the standby?")
    where, os_crash, reads = _KEEPS[level]
    return True, (f"synchronous_standby_names = {names!r} ({', '.join(sync)} synchronous) with synchronous_commit = "
                  f"{level}: an acknowledged COMMIT is {where} before the client hears of it, so a crash of the "
                  f"primary alone loses none once the most advanced standby is promoted; {os_crash}, and {reads}. "
                  "Put it back afterwards: lab.failover.set_mode(cluster, 'async')")
