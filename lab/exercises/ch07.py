"""Chapter 07's self-checks (the crypto app on the cluster); ``lab.checks.check("07.1", cluster)``."""
from __future__ import annotations

from .. import webapp
from ..errors import LabError
from .registry import Precondition, Unmet, exercise


def _running_app(cluster):
    info = webapp.status(cluster)
    if not info.running:
        raise Unmet("the crypto app is not running: lab.webapp.start(cluster)")
    return info


RUNNING_APP = Precondition("the crypto app, running on this cluster", _running_app)


@exercise("07.1", "the app reads from the replicas", needs=RUNNING_APP)
def _reads_on_replicas(cluster, _app):
    """With both replicas running, the app's reads go to them, not to the primary: lab.webapp.reads(cluster)
    shows who served each one."""
    df = webapp.reads(cluster, n=6)
    roles = set(df["role"])
    if roles == {"replica"}:
        return True, (f"6 reads served by {', '.join(sorted(set(df['served_by'])))}, all in the replica role: "
                      "none by the primary")
    why = "; ".join(sorted(set(df["fallback"]) - {""})) or "see lab.webapp.reads(cluster)"
    return False, f"some reads went to the primary ({why}): are both replicas running? cluster.start()"


@exercise("07.2", "who serves reads when no replica answers", answer=True)
def _who_serves_without_replicas(cluster, answer):
    """Stop both replicas, look at lab.webapp.reads(cluster)['served_by'], and answer with the name of the node
    that serves the reads."""
    name = str(answer).strip().lower()
    if name in (cluster.primary.name, "primary", "pg-master"):
        return True, (f"right: with no replica answering, the app reads from the primary ({cluster.primary.name}) "
                      "and says why in the X-Read-Fallback header")
    return False, "not that one: stop both replicas, then look at lab.webapp.reads(cluster)['served_by']"


@exercise("07.3", "writes reach the current primary", needs=RUNNING_APP)
def _writes_reach_primary(cluster, _app):
    """Write through the app, lab.webapp.write(cluster): it lands on the lab's current primary, even after a
    failover."""
    try:
        w = webapp.write(cluster)
    except LabError as e:
        return False, str(e)
    if w["status"] != 201:
        return False, (f"the write got {w['status']}: {w.get('detail', '')} — is there a running primary? "
                       "(a crashed one: promote a replica, or start it again)")
    if w["primary"] != cluster.primary.name:
        return False, f"the write landed on {w['primary']}, but the lab's primary is {cluster.primary.name}"
    return True, f"a write committed on {w['primary']} (the primary now) at LSN {w['lsn']}"


@exercise("07.4", "a read with min_lsn sees its own write", needs=RUNNING_APP)
def _read_your_writes(cluster, _app):
    """Read with min_lsn, lab.webapp.read_your_writes(cluster, use_min_lsn=True): each read waits until the
    replica has replayed the write before it."""
    try:
        df = webapp.read_your_writes(cluster, rounds=3, use_min_lsn=True)
    except LabError as e:
        return False, str(e)
    if df["saw_own_write"].all():
        who = sorted({f"{n} ({r})" for n, r in zip(df["served_by"], df["role"])})
        return True, f"3 of 3 reads saw their write (served by {', '.join(who)})"
    return False, "a read with min_lsn missed its write: see lab.webapp.read_your_writes(cluster)"
