"""Faults, the same on both backends: crash a node, freeze it, cut a replica off the primary.

>>> lab.faults.kill(cluster.primary)                        # SIGKILL, a crash     # doctest: +SKIP
>>> with lab.faults.paused(cluster.node("replica1")):       # SIGSTOP/docker pause # doctest: +SKIP
...     ...                                                 # resumed on the way out, whatever happens
>>> with lab.faults.partitioned(cluster, "replica1"):       # proxy cut/disconnect # doctest: +SKIP
...     ...

=========  =====================================  ===========================================
fault      local backend                          compose backend
=========  =====================================  ===========================================
kill       SIGKILL to the postmaster              ``docker kill`` (SIGKILL)
pause      SIGSTOP to the postmaster and all its  ``docker pause`` (the cgroup freezer)
           children (a watchdog resumes them
           after ``max_seconds`` if you do not)
cut        the replica's proxy (lab/proxy.py)     ``docker network disconnect`` of the replica
           closes and refuses its connections     (it loses every link, clients' too)
=========  =====================================  ===========================================

A paused node is frozen, not stopped: its port still accepts TCP connections (the kernel
does that) but nothing answers, so clients wait for their ``connect_timeout``.  Always pair
``pause`` with ``resume`` (the context managers do it); ``resume_all(cluster)`` thaws every node.
"""
from __future__ import annotations

import contextlib
import time

from .cluster import Cluster
from .errors import BadArgument, LabError, NotRunning, need_bool, need_number, need_str
from .i18n import _
from .node import MAX_PAUSE_SECONDS, Node, Role


# --- the arguments every chapter module takes: a cluster, a node (or its name), a replica ---------
def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def need_cluster(cluster) -> Cluster:
    """``cluster`` if it is a Cluster (what ``lab.up()`` returns), else a one-line BadArgument."""
    if not isinstance(cluster, Cluster):
        raise BadArgument(_("cluster is what lab.up() returns, not {value}").format(value=_shown(cluster)))
    return cluster


def need_node(cluster, node, what: str = "node") -> Node:
    """A Node of ``cluster`` from a Node or a node's name (an unknown name: the cluster's LabError)."""
    if isinstance(node, Node):
        return node
    need_str(node, what, example=_("'replica1' or cluster.node('replica1')"))
    return need_cluster(cluster).node(node)


def need_a_node(node, what: str = "node") -> Node:
    """``node`` if it is a Node (``cluster.primary``, ``cluster.node('replica1')``)."""
    if not isinstance(node, Node):
        raise BadArgument(_("{what} is a node, e.g. cluster.node('replica1') or cluster.primary, not {value}").format(
            what=what, value=_shown(node)))
    return node


def need_replica(cluster, node, what: str = "replica") -> Node:
    """A replica of ``cluster`` from a Node or a name; a LabError if it is the primary."""
    n = need_node(cluster, node, what)
    if n.role != Role.REPLICA:
        names = ", ".join(r.name for r in n._cluster.replicas) or _("none: cluster.add_replica() adds one")
        raise LabError(_("{node} is the {role}, not a replica: pick one of {names}").format(
            node=n.name, role=n.role, names=names))
    return n


def _node(cluster_or_node, name=None):
    if isinstance(cluster_or_node, Node) and name is None:
        return cluster_or_node
    if name is None:
        raise LabError(_("name the node: lab.faults.pause(cluster.node('replica1')) or (cluster, 'replica1')"))
    return need_node(cluster_or_node, name)


# --- kill --------------------------------------------------------------------------------------
def kill(node) -> str:
    """SIGKILL the node's postmaster (``docker kill`` on compose): a crash.  ``node.start()`` runs
    crash recovery and brings it back.  Returns a one-line account."""
    need_a_node(node)
    if not node.is_running:
        raise NotRunning(_("{node} is stopped already: nothing to kill").format(node=node.name))
    if is_paused(node):  # a SIGKILLed postmaster leaves its frozen children behind
        resume(node)
    t = time.time()
    node.kill()
    return _("{node}: killed (SIGKILL) at {time}").format(node=node.name, time=time.strftime('%H:%M:%S', time.localtime(t)))


# --- pause / resume ------------------------------------------------------------------------------
def is_paused(node) -> bool:
    """Is the node frozen (SIGSTOPped postmaster / paused container)?"""
    need_a_node(node)
    return node._cluster.backend.is_paused(node.spec)


def pause(node, max_seconds: float = MAX_PAUSE_SECONDS) -> str:
    """Freeze a node: SIGSTOP to its postmaster and every child (``docker pause`` on compose).

    Locally a watchdog process resumes it after ``max_seconds`` even if this kernel dies;
    ``resume(node)`` ends the watchdog.  Returns a one-line account.
    """
    need_a_node(node)
    return node.pause(need_number(max_seconds, "max_seconds", lo=0.1, hi=3600, unit="seconds"))


def resume(node) -> str:
    """Thaw a paused node (SIGCONT to its process tree / ``docker unpause``); a no-op if it is not."""
    need_a_node(node)
    return node.resume()


def resume_all(cluster) -> list:
    """Thaw every node of the cluster; the names of those that were paused (a watchdog left by a
    node restarted meanwhile is ended too)."""
    need_cluster(cluster)
    thawed = []
    for n in cluster.nodes:
        was = is_paused(n)
        resume(n)
        if was:
            thawed.append(n.name)
    return thawed


@contextlib.contextmanager
def paused(node, max_seconds: float = MAX_PAUSE_SECONDS):
    """``with lab.faults.paused(node): ...`` — frozen inside, resumed on the way out, always."""
    need_a_node(node)
    pause(node, max_seconds)
    try:
        yield node
    finally:
        resume(node)


# --- cut / heal ------------------------------------------------------------------------------
def _replica(cluster, replica):
    node = need_node(need_cluster(cluster), replica, "replica")
    if node.role != Role.REPLICA:
        raise LabError(_("{node} is the {role}: cut a replica's link to the primary").format(node=node.name, role=node.role))
    return node


def cut(cluster, replica: str = "replica1", hold: bool = False) -> str:
    """Cut ``replica`` off the primary.  Local: through its proxy (``lab.proxy.route`` makes one if
    there is none), which closes the link and refuses new ones (``hold=True``: silent instead).
    Compose: ``docker network disconnect`` (the replica loses every network link)."""
    need_bool(hold, "hold")
    node = _replica(cluster, replica)
    return f"{node.name}: {cluster.backend.cut(node.spec, hold=hold)}"


def heal(cluster, replica: str = "replica1") -> str:
    """Undo ``cut``: the proxy lets bytes through again / the container rejoins the network."""
    node = _replica(cluster, replica)
    return f"{node.name}: {cluster.backend.heal(node.spec)}"


def is_cut(cluster, replica: str = "replica1") -> bool:
    node = _replica(cluster, replica)
    return cluster.backend.is_cut(node.spec)


@contextlib.contextmanager
def partitioned(cluster, replica: str = "replica1", hold: bool = False):
    """``with lab.faults.partitioned(cluster, "replica1"): ...`` — cut inside, healed on the way out."""
    need_bool(hold, "hold")
    cut(cluster, replica, hold=hold)
    try:
        yield
    finally:
        heal(cluster, replica)


@contextlib.contextmanager
def killed(node, restart: bool = True):
    """``with lab.faults.killed(cluster.node("replica1")): ...`` — crashed inside; started again
    (crash recovery) on the way out unless ``restart=False``."""
    need_a_node(node)
    need_bool(restart, "restart")
    kill(node)
    try:
        yield node
    finally:
        if restart and not node.is_running:
            node.start()
