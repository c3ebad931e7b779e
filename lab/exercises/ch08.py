"""Chapter 08's self-checks (automatic failover by consensus); ``lab.checks.check("08.1", cluster, answer=...)``
with ``cluster = lab.ha.up()``."""
from __future__ import annotations

from ..ha import HACluster
from ..i18n import N_, _
from .answers import as_count
from .registry import exercise


def _ha(cluster) -> "str | None":
    if not isinstance(cluster, HACluster):
        return _("this is chapter 08's check: give it the HA cluster, cluster = lab.ha.up()")
    return None


@exercise("08.1", N_("the etcd member that is the Raft leader now"), answer=True,
          hint=N_("Answer with the name of the etcd member that leads the Raft group now (etcd1, etcd2 or etcd3): "
                  "cluster.etcd() shows it (column is_leader)."))
def _etcd_leader(cluster, answer):
    bad = _ha(cluster)
    if bad:
        return False, bad
    leader = cluster.etcd_leader()
    if leader is None:
        return False, _("the etcd members do not agree on a leader right now: lab.ha.up() starts the missing ones")
    if isinstance(answer, str) and answer.strip() == leader:
        term = cluster.etcd().set_index("member").loc[leader, "raft_term"]
        return True, _("right: {leader} leads Raft term {term}; every write to etcd (Patroni's leader key too) "
                       "goes through it and is committed once a majority (2 of 3) has it").format(leader=leader, term=term)
    return False, _("not the Raft leader now: cluster.etcd() shows it (is_leader); it changes after each election")


@exercise("08.2", N_("the lease of Patroni's leader key, in seconds"), answer=True,
          hint=N_("Answer with the TTL of the leader key's lease (seconds): cluster.leader_key() (ttl_s), or the ttl "
                  "of cluster.config()."))
def _ttl(cluster, answer):
    bad = _ha(cluster)
    if bad:
        return False, bad
    try:
        given = as_count(answer)
    except ValueError:  # '²' passes str.isdigit() but not int(), nor do 5000 digits
        given = None
    if given is None:
        return False, _("answer with a whole number of seconds, e.g. answer=30 (not {answer})").format(
            answer=" ".join(repr(answer).split())[:60])
    ttl = cluster.config().get("ttl")
    if given == ttl:
        loop = cluster.config().get("loop_wait")
        return True, _("right: {ttl} s. The leader renews it every loop_wait ({loop} s); if it stops renewing "
                       "(a crash, a partition) the key expires after at most {ttl} s and a replica may take it").format(
            ttl=ttl, loop=loop)
    return False, _("not the lease's TTL: cluster.leader_key() shows ttl_s, cluster.config() shows ttl")


@exercise("08.3", N_("exactly one node accepts writes, and it holds the leader key"),
          hint=N_("After any experiment, lab.autofailover.restore(cluster) puts the cluster back: one leader, "
                  "writable, every other node a streaming replica."))
def _one_writable(cluster):
    bad = _ha(cluster)
    if bad:
        return False, bad
    writers = [n.name for n in cluster.nodes if n.is_running and cluster._writable(n.name)]
    holder = cluster.leader_key()["holder"]
    if not writers:
        return False, _("no node accepts writes: lab.autofailover.restore(cluster)")
    if len(writers) > 1:
        return False, _("split brain: {writers} all accept writes (a Patroni killed on one of them?): "
                        "lab.autofailover.restore(cluster) starts its Patroni, which demotes it").format(
            writers=", ".join(writers))
    if writers[0] != holder:
        if not holder:
            return False, _("{writer} accepts writes but nobody holds the leader key: wait a loop, check again").format(
                writer=writers[0])
        return False, _("{writer} accepts writes but {holder} holds the leader key: wait a loop, check again").format(
            writer=writers[0], holder=holder)
    return True, _("only {writer} accepts writes, and it holds the leader key: HAProxy's /primary check agrees").format(
        writer=writers[0])


@exercise("08.4", N_("a configuration in which a machine crash loses no acknowledged write"),
          hint=N_("Turn on Patroni's synchronous mode (strict, so a commit never returns without a standby's copy): "
                  "cluster.set_config(synchronous_mode=True, synchronous_mode_strict=True). Put it back with "
                  "lab.autofailover.restore(cluster) afterwards."))
def _no_loss(cluster):
    bad = _ha(cluster)
    if bad:
        return False, bad
    cfg = cluster.config()
    if not cfg.get("synchronous_mode"):
        return False, _("synchronous_mode is off: a commit returns before any standby has it (RPO > 0)")
    view = cluster.cluster_view() or {}
    sync = [m["name"] for m in view.get("members", []) if m.get("role") == "sync_standby"]
    if not sync:
        return False, _("synchronous_mode is on but no member is a sync_standby yet: wait a loop, check again")
    if cfg.get("synchronous_mode_strict"):
        return True, _("synchronous mode on, {standbys} confirms every commit (strict: without a standby, commits "
                       "wait); only a member that has every acknowledged commit may take the leader key").format(
            standbys=", ".join(sync))
    return True, _("synchronous mode on, {standbys} confirms every commit (not strict: with no standby left Patroni "
                   "turns it off, and a crash then may lose writes); only a member that has every acknowledged "
                   "commit may take the leader key").format(standbys=", ".join(sync))
