"""A TCP proxy the lab controls, between a replica and the primary: added latency and jitter, a
cut link and its healing, and what went through it.

>>> link = lab.proxy.route(cluster, "replica1", latency_ms=50)   # doctest: +SKIP
>>> link.proxy.cut(); link.proxy.heal()                          # doctest: +SKIP
>>> link.proxy.stats()                                           # doctest: +SKIP
>>> lab.proxy.unroute(cluster, "replica1")                       # doctest: +SKIP

The proxy (``lab/backends/links.py``) listens on 127.0.0.1 on a port claimed like a node's and forwards to
the primary.  ``route`` points a replica's ``primary_conninfo`` at it (a reload: the WAL receiver
reconnects through the proxy) and ``unroute`` points it back.  Latency is one-way and per
direction, so ``latency_ms=50`` adds 100 ms to every round trip; order is kept (a chunk never
overtakes the one before it).  A cut closes every connection and refuses new ones
(``hold=True`` instead keeps them open and silent, like a partition TCP has not noticed yet;
the bytes are delivered on ``heal``).

The proxy runs in a thread of the process that made it (your notebook's kernel): if that
process ends, the replica points at a closed port until ``unroute_all(cluster)`` (or ``tidy``
of chapter 05) puts it back.

With the compose backend the replica runs in a container, which cannot reach the host's
127.0.0.1: the proxy listens on the host's address on the compose network (its gateway, which
only that network's containers and the host reach) and forwards to the primary's published
port; the replica's ``primary_conninfo`` is set with ALTER SYSTEM, and ``unroute`` points it
back at the primary's service (``host=pg-master port=5432``).
"""
from __future__ import annotations

from .backends import links as _links_mod
from .backends.links import Link, Proxy  # noqa: F401 (lab.proxy.Proxy, lab.proxy.Link)
from .errors import LabError, need_bool, need_number
from .faults import need_cluster, need_node
from .i18n import _
from .node import Role


def link(cluster, replica: str) -> "Link | None":
    """The Link of ``replica`` made by ``route`` in this process, or None."""
    node = need_node(need_cluster(cluster), replica, "replica")
    return _links_mod.link(cluster.backend.owner, node.name)


def links() -> list:
    return _links_mod.links()


def route(cluster, replica: str = "replica1", latency_ms: float = 0, jitter_ms: float = 0,
          timeout: float = 30) -> Link:
    """Put a proxy between ``replica`` and the primary and wait until the replica streams through it
    (again: re-routing a routed replica only sets the latency).

    >>> link = lab.proxy.route(cluster, "replica1", latency_ms=20)   # doctest: +SKIP
    """
    node = need_node(need_cluster(cluster), replica, "replica")
    latency_ms = need_number(latency_ms, "latency_ms", lo=0, hi=10_000, unit=_("milliseconds"))
    jitter_ms = need_number(jitter_ms, "jitter_ms", lo=0, hi=10_000, unit=_("milliseconds"))
    timeout = need_number(timeout, "timeout", lo=0.1, hi=600, unit=_("seconds"))
    if node.role != Role.REPLICA:
        raise LabError(_("{replica} is the {role}: only a replica's link to the primary goes through a proxy").format(
            replica=replica, role=node.role))
    return _links_mod.route(cluster.backend, node.spec, latency_ms, jitter_ms, timeout)


def unroute(cluster, replica: str = "replica1", timeout: float = 30, wait: bool = True) -> None:
    """Point ``replica`` back at the primary and close its proxy (a no-op if it has none)."""
    node = need_node(need_cluster(cluster), replica, "replica")
    timeout = need_number(timeout, "timeout", lo=0.1, hi=600, unit=_("seconds"))
    need_bool(wait, "wait")
    _links_mod.unroute(cluster.backend, node.spec, point_back=node.role == Role.REPLICA)
    if wait and node.is_running and node.role == Role.REPLICA and cluster.primary.is_running:
        cluster.wait_streaming(timeout=timeout, names=[node.name])


def unroute_all(cluster, wait: bool = True) -> list:
    """Every replica back on the primary directly (also after a kernel that routed them died);
    the names of those that had a proxy in this process."""
    need_cluster(cluster)
    need_bool(wait, "wait")
    names = [lk.replica for lk in _links_mod.links(cluster.backend.owner)]
    for r in cluster.replicas:
        if r.name in names:
            unroute(cluster, r.name, wait=wait)
        else:
            cluster.backend.retarget(r.spec, *cluster.backend.primary_address())
    if wait and cluster.primary.is_running:
        running = [r.name for r in cluster.replicas if r.is_running]
        if running:
            cluster.wait_streaming(names=running)
    return names
