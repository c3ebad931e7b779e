"""Chapter 06's self-checks (failover); ``lab.checks.check("06.1", cluster, answer=...)``."""
from __future__ import annotations

from ..failover import follows, timeline
from ..i18n import N_, _, ngettext
from ..node import Role
from .answers import as_count
from .registry import exercise


@exercise("06.1", N_("the timeline the primary writes on now"), answer=True,
          hint=N_("Answer with the timeline the primary writes on: lab.failover.timelines(cluster) shows it, or the "
                  "first 8 hex digits of pg_walfile_name(pg_current_wal_lsn()) on the primary."))
def _primary_timeline(cluster, answer):
    primary = cluster.primary
    if not primary.is_running:
        return False, _("the primary ({primary}) is stopped: lab.failover.tidy(cluster), then check again").format(
            primary=primary.name)
    given = as_count(answer)
    if given is None:
        return False, _("answer with a whole number, e.g. answer=2 (not {answer!r})").format(answer=answer)
    now = timeline(primary)["timeline"]
    if given == now:
        return True, _("right: {primary} writes on timeline {timeline}; every promotion started a new one, and "
                       "its {timeline:08X}.history file in pg_wal says where each older one was left").format(
            primary=primary.name, timeline=now)
    return False, _("not the primary's timeline: lab.failover.timelines(cluster) shows it (column timeline), or "
                    "read the first 8 hex digits of pg_walfile_name(pg_current_wal_lsn()) on the primary")


@exercise("06.2", N_("exactly one node accepts writes"),
          hint=N_("After a failover, fence the old primary (lab.failover.fence, or cluster.rejoin) so that only the "
                  "lab's primary accepts writes."))
def _one_writable(cluster):
    writers = []
    for n in cluster.nodes:  # a standalone server (chapters 09-10) is writable by design: not split brain
        if n.is_running and n.role != Role.STANDALONE and not timeline(n)["in_recovery"]:
            writers.append(n.name)
    if not writers:
        return False, _("no running node accepts writes: start the primary (lab.failover.tidy(cluster))")
    if len(writers) > 1:
        others = [w for w in writers if w != cluster.primary.name]
        return False, _("split brain: {writers} all accept writes; fence the old one(s): "
                        "lab.failover.fence(cluster, {old!r}) or cluster.rejoin({old!r})").format(
            writers=", ".join(writers), old=others[0])
    if writers[0] != cluster.primary.name:
        return False, _("{writer} accepts writes but the lab's primary is {primary}: cluster.status()").format(
            writer=writers[0], primary=cluster.primary.name)
    return True, _("only {writer} accepts writes: a client with any host order reaches the same primary").format(
        writer=writers[0])


@exercise("06.3", N_("every other node is a replica of the current primary again"),
          hint=N_("Bring every other node back as a streaming replica of the current primary, on its timeline: "
                  "cluster.rejoin(name) rewinds a former primary; lab.failover.restore(cluster) repairs all of it."))
def _all_follow(cluster):
    problems = []
    physical = [n for n in cluster.nodes if n.role != Role.STANDALONE]
    for n in physical:
        if n.name == cluster.primary.name:
            continue
        if n.role != Role.REPLICA:
            problems.append(_("{node} is a {role} (cluster.rejoin({node!r}) rewinds it)").format(node=n.name, role=n.role))
        elif not n.is_running:
            problems.append(_("{node} is stopped").format(node=n.name))
        elif not follows(cluster, n):
            problems.append(_("{node} does not stream from {primary} on its timeline").format(
                node=n.name, primary=cluster.primary.name))
    if problems:
        return False, _("{problems}: lab.failover.restore(cluster) repairs all of it").format(problems="; ".join(problems))
    count = len(physical) - 1
    return True, ngettext("{count} node streams from {primary} on timeline {timeline}",
                          "{count} nodes stream from {primary} on timeline {timeline}", count).format(
        count=count, primary=cluster.primary.name, timeline=timeline(cluster.primary)["timeline"])


# What each level that waits for a standby keeps, when the primary crashes (always: the standby has the
# commit before the client hears of it), when the standby's machine crashes at the same time, and what a
# read on the standby sees right after the COMMIT returned.  Marked here, translated where shown.
_KEEPS = {
    "remote_write": (N_("in the standby's OS cache (written, not yet flushed)"),
                     N_("an OS crash of the standby at the same moment would lose it (the cache goes with it)"),
                     N_("a read on the standby may not see it yet (not replayed)")),
    "on": (N_("on the standby's disk (flushed)"),
           N_("it survives even an OS crash of the standby at the same moment"),
           N_("a read on the standby may not see it yet (not replayed)")),
    "remote_apply": (N_("on the standby's disk and replayed"),
                     N_("it survives even an OS crash of the standby at the same moment"),
                     N_("a read on the standby sees it as soon as the COMMIT returned")),
}


@exercise("06.4", N_("a crash of the primary now would lose no acknowledged write"),
          hint=N_("Make every acknowledged COMMIT wait until a standby has it: a synchronous standby "
                  "(synchronous_standby_names) and a synchronous_commit level that waits for it (remote_write, on or "
                  "remote_apply)."))
def _zero_loss(cluster):
    primary = cluster.primary
    if not primary.is_running:
        return False, _("the primary ({primary}) is stopped: lab.failover.tidy(cluster) first").format(
            primary=primary.name)
    names = primary.scalar("SHOW synchronous_standby_names", dbname="postgres")
    level = primary.scalar("SHOW synchronous_commit", dbname="postgres")
    if not names:
        return False, _("synchronous_standby_names is empty: every replica is asynchronous, and a crash loses "
                        "what they had not received yet (your RPO table counted it)")
    states = primary.sql("SELECT application_name, sync_state FROM pg_stat_replication", dbname="postgres")
    sync = states[states["sync_state"].isin(["sync", "quorum"])]["application_name"].tolist()
    if not sync:
        return False, _("synchronous_standby_names = {names!r}, but no running replica matches it: commits block").format(
            names=names)
    if level not in _KEEPS:
        return False, _("synchronous_commit = {level} on the primary: COMMIT returns before any standby has the "
                        "WAL, so a crash of the primary can lose it; which levels wait for the standby?").format(
            level=level)
    where, os_crash, reads = (_(text) for text in _KEEPS[level])
    return True, _("synchronous_standby_names = {names!r} ({standbys} synchronous) with synchronous_commit = "
                   "{level}: an acknowledged COMMIT is {where} before the client hears of it, so a crash of the "
                   "primary alone loses none once the most advanced standby is promoted; {os_crash}, and {reads}. "
                   "Put it back afterwards: lab.failover.set_mode(cluster, 'async')").format(
        names=names, standbys=", ".join(sync), level=level, where=where, os_crash=os_crash, reads=reads)
