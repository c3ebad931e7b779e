"""Self-checks of chapter 07 (the crypto app on the cluster); ``lab.checks.check("07.1", cluster)`` loads them."""
from __future__ import annotations

from .checks import exercise
from .errors import LabError

_NOT_RUNNING = "the crypto app is not running: lab.webapp.start(cluster)"


def _running(cluster):
    from . import webapp
    info = webapp.status(cluster)
    return info if info.running else None


@exercise("07.1", "the app reads from the replicas")
def _reads_on_replicas(cluster):
    from . import webapp
    if not _running(cluster):
        return False, _NOT_RUNNING
    df = webapp.reads(cluster, n=6)
    roles = set(df["role"])
    if roles == {"replica"}:
        return True, f"6 reads served by {', '.join(sorted(set(df['served_by'])))}: none by the primary"
    why = "; ".join(sorted(set(df["fallback"]) - {""})) or "see lab.webapp.reads(cluster)"
    return False, f"some reads went to the primary ({why}): are both replicas running? cluster.start()"


@exercise("07.2", "who serves reads when no replica answers", answer=True)
def _who_serves_without_replicas(cluster, answer):
    if answer is ...:
        return False, "answer with the name of the node, e.g. answer='replica1'"
    name = str(answer).strip().lower()
    if name in (cluster.primary.name, "primary", "pg-master"):
        return True, (f"right: with no replica answering, the app reads from the primary ({cluster.primary.name}) "
                      "and says why in the X-Read-Fallback header")
    return False, "not that one: stop both replicas, then look at lab.webapp.reads(cluster)['served_by']"


@exercise("07.3", "writes reach the current primary")
def _writes_reach_primary(cluster):
    from . import webapp
    if not _running(cluster):
        return False, _NOT_RUNNING
    try:
        w = webapp.write(cluster)
    except LabError as e:
        return False, str(e)
    if w["status"] != 201:
        return False, (f"the write got {w['status']}: {w.get('detail', '')} — is there a running primary? "
                       "(a crashed one: promote a replica, or start it again)")
    if w["primary"] != cluster.primary.name:
        return False, f"the write landed on {w['primary']}, but the lab's primary is {cluster.primary.name}"
    return True, f"a write committed on {w['primary']} at LSN {w['lsn']}"


@exercise("07.4", "a read with min_lsn sees its own write")
def _read_your_writes(cluster):
    from . import webapp
    if not _running(cluster):
        return False, _NOT_RUNNING
    try:
        df = webapp.read_your_writes(cluster, rounds=3, use_min_lsn=True)
    except LabError as e:
        return False, str(e)
    if df["saw_own_write"].all():
        return True, f"3 of 3 reads saw their write (served by {', '.join(sorted(set(df['served_by'])))})"
    return False, "a read with min_lsn missed its write: see lab.webapp.read_your_writes(cluster)"
