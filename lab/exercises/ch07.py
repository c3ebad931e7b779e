"""Chapter 07's self-checks (the crypto app on the cluster); ``lab.checks.check("07.1", cluster)``."""
from __future__ import annotations

from .. import webapp
from ..errors import LabError
from ..i18n import N_, _
from .registry import Precondition, Unmet, exercise


def _running_app(cluster):
    info = webapp.status(cluster)
    if not info.running:
        raise Unmet(_("the crypto app is not running: lab.webapp.start(cluster)"))
    return info


RUNNING_APP = Precondition("the crypto app, running on this cluster", _running_app)


@exercise("07.1", N_("the app reads from the replicas"), needs=RUNNING_APP,
          hint=N_("With both replicas running, the app's reads go to them, not to the primary: "
                  "lab.webapp.reads(cluster) shows who served each one."))
def _reads_on_replicas(cluster, _app):
    df = webapp.reads(cluster, n=6)
    roles = set(df["role"])
    if roles == {"replica"}:
        return True, _("6 reads served by {nodes}, all in the replica role: none by the primary").format(
            nodes=", ".join(sorted(set(df["served_by"]))))
    why = "; ".join(sorted(set(df["fallback"]) - {""})) or _("see lab.webapp.reads(cluster)")
    return False, _("some reads went to the primary ({why}): are both replicas running? cluster.start()").format(
        why=why)


@exercise("07.2", N_("who serves reads when no replica answers"), answer=True,
          hint=N_("Stop both replicas, look at lab.webapp.reads(cluster)['served_by'], and answer with the name of "
                  "the node that serves the reads."))
def _who_serves_without_replicas(cluster, answer):
    name = str(answer).strip().lower()
    if name in (cluster.primary.name, "primary", "pg-master"):
        return True, _("right: with no replica answering, the app reads from the primary ({primary}) "
                       "and says why in the X-Read-Fallback header").format(primary=cluster.primary.name)
    return False, _("not that one: stop both replicas, then look at lab.webapp.reads(cluster)['served_by']")


@exercise("07.3", N_("writes reach the current primary"), needs=RUNNING_APP,
          hint=N_("Write through the app, lab.webapp.write(cluster): it lands on the lab's current primary, even "
                  "after a failover."))
def _writes_reach_primary(cluster, _app):
    try:
        w = webapp.write(cluster)
    except LabError as e:
        return False, str(e)
    if w["status"] != 201:
        return False, _("the write got {status}: {detail} — is there a running primary? "
                        "(a crashed one: promote a replica, or start it again)").format(
            status=w["status"], detail=w.get("detail", ""))
    if w["primary"] != cluster.primary.name:
        return False, _("the write landed on {node}, but the lab's primary is {primary}").format(
            node=w["primary"], primary=cluster.primary.name)
    return True, _("a write committed on {node} (the primary now) at LSN {lsn}").format(node=w["primary"], lsn=w["lsn"])


@exercise("07.4", N_("a read with min_lsn sees its own write"), needs=RUNNING_APP,
          hint=N_("Read with min_lsn, lab.webapp.read_your_writes(cluster, use_min_lsn=True): each read waits until "
                  "the replica has replayed the write before it."))
def _read_your_writes(cluster, _app):
    try:
        df = webapp.read_your_writes(cluster, rounds=3, use_min_lsn=True)
    except LabError as e:
        return False, str(e)
    if df["saw_own_write"].all():
        who = sorted({f"{n} ({r})" for n, r in zip(df["served_by"], df["role"])})
        return True, _("3 of 3 reads saw their write (served by {nodes})").format(nodes=", ".join(who))
    return False, _("a read with min_lsn missed its write: see lab.webapp.read_your_writes(cluster)")
