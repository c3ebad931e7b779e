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
import os
import signal
import subprocess
import time

from .errors import LabError, NotRunning

MAX_PAUSE_SECONDS = 60
_watchdogs: dict = {}   # pgdata -> Popen of the local watchdog that resumes a paused node


def _node(cluster_or_node, name=None):
    from .node import Node
    if isinstance(cluster_or_node, Node) and name is None:
        return cluster_or_node
    if name is None:
        raise LabError("name the node: lab.faults.pause(cluster.node('replica1')) or (cluster, 'replica1')")
    return cluster_or_node.node(name if isinstance(name, str) else name.name)


def _local(node) -> bool:
    return node._cluster.backend_name == "local"


# --- kill --------------------------------------------------------------------------------------
def kill(node) -> str:
    """SIGKILL the node's postmaster (``docker kill`` on compose): a crash.  ``node.start()`` runs
    crash recovery and brings it back.  Returns a one-line account."""
    if not node.is_running:
        raise NotRunning(f"{node.name} is stopped already: nothing to kill")
    if is_paused(node):  # a SIGKILLed postmaster leaves its frozen children behind
        resume(node)
    t = time.time()
    node.kill()
    return f"{node.name}: killed (SIGKILL) at {time.strftime('%H:%M:%S', time.localtime(t))}"


# --- pause / resume ------------------------------------------------------------------------------
def process_tree(pid: int) -> list:
    """``pid`` and every descendant (Linux /proc), parents before children."""
    children: dict = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [int(pid)]
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo.extend(sorted(children.get(p, [])))
    return out


def _state(pid: int) -> "str | None":
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _wait_states(pids, stopped: bool, timeout: float = 2.0) -> None:
    """Signals arrive asynchronously: wait until /proc shows them taken (stopped or not)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [_state(p) for p in pids]
        if all(st is None or (st in ("T", "t")) == stopped or st == "Z" for st in states):
            return
        time.sleep(0.002)


def is_paused(node) -> bool:
    """Is the node frozen (SIGSTOPped postmaster / paused container)?"""
    backend = node._cluster.backend
    if _local(node):
        pid = node.pid
        return bool(pid) and _state(pid) in ("T", "t")
    c = backend.container(node.spec)
    return c is not None and c.status == "paused"


def signal_tree(pids, sig) -> None:
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def pause(node, max_seconds: float = MAX_PAUSE_SECONDS) -> str:
    """Freeze a node: SIGSTOP to its postmaster and every child (``docker pause`` on compose).

    Locally a watchdog process resumes it after ``max_seconds`` even if this kernel dies;
    ``resume(node)`` ends the watchdog.  Returns a one-line account.
    """
    if isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float)) or not 0 < max_seconds <= 3600:
        raise LabError(f"max_seconds is how long the node may stay frozen, 0 to 3600 s, not {max_seconds!r}")
    if not node.is_running:
        raise NotRunning(f"{node.name} is stopped: start it before pausing it")
    if is_paused(node):
        return f"{node.name}: paused already"
    if _local(node):
        pids = process_tree(node.pid)
        # The watchdog first: if anything below fails, the node still wakes up.
        dog = subprocess.Popen(["sh", "-c", 'sleep "$0"; kill -CONT "$@"', str(max_seconds), *map(str, pids)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
        _watchdogs[node.spec["pgdata"]] = dog
        signal_tree(pids, signal.SIGSTOP)
        # a child forked between the listing and the postmaster's stop: freeze it too
        late = [p for p in process_tree(node.pid) if p not in pids]
        signal_tree(late, signal.SIGSTOP)
        _wait_states(pids + late, stopped=True)
        return f"{node.name}: paused ({len(pids) + len(late)} processes stopped; resumed by itself after {max_seconds:g} s)"
    node._cluster.backend.pause(node.spec)
    return f"{node.name}: paused (docker pause)"


def resume(node) -> str:
    """Thaw a paused node (SIGCONT to its process tree / ``docker unpause``); a no-op if it is not."""
    if _local(node):
        dog = _watchdogs.pop(node.spec["pgdata"], None)
        if dog is not None:
            if dog.poll() is None:  # its own session: the shell and its sleep go together
                try:
                    os.killpg(dog.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            dog.wait()
        pid = node.pid
        if not pid:
            return f"{node.name}: not running"
        was = is_paused(node)
        tree = process_tree(pid)
        signal_tree(reversed(tree), signal.SIGCONT)
        _wait_states(tree, stopped=False)
        return f"{node.name}: resumed" if was else f"{node.name}: was not paused"
    was = is_paused(node)
    node._cluster.backend.unpause(node.spec)
    return f"{node.name}: resumed (docker unpause)" if was else f"{node.name}: was not paused"


def resume_all(cluster) -> list:
    """Thaw every node of the cluster; the names of those that were paused."""
    thawed = []
    for n in cluster.nodes:
        if n.is_running and is_paused(n):
            resume(n)
            thawed.append(n.name)
        elif _local(n):
            resume(n)  # ends a watchdog whose node was restarted meanwhile
    return thawed


@contextlib.contextmanager
def paused(node, max_seconds: float = MAX_PAUSE_SECONDS):
    """``with lab.faults.paused(node): ...`` — frozen inside, resumed on the way out, always."""
    pause(node, max_seconds)
    try:
        yield node
    finally:
        resume(node)


# --- cut / heal ------------------------------------------------------------------------------
def _replica(cluster, replica):
    from .node import Role
    node = _node(cluster, replica)
    if node.role != Role.REPLICA:
        raise LabError(f"{node.name} is the {node.role}: cut a replica's link to the primary")
    return node


def cut(cluster, replica: str = "replica1", hold: bool = False) -> str:
    """Cut ``replica`` off the primary.  Local: through its proxy (``lab.proxy.route`` makes one if
    there is none), which closes the link and refuses new ones (``hold=True``: silent instead).
    Compose: ``docker network disconnect`` (the replica loses every network link)."""
    node = _replica(cluster, replica)
    if cluster.backend_name == "local":
        from . import proxy
        lk = proxy.link(cluster, node.name) or proxy.route(cluster, node.name)
        lk.cut(hold=hold)
        return f"{node.name}: cut off the primary (proxy on port {lk.proxy.port}{', silent' if hold else ''})"
    cluster.backend.disconnect(node.spec)
    return f"{node.name}: disconnected from the compose network"


def heal(cluster, replica: str = "replica1") -> str:
    """Undo ``cut``: the proxy lets bytes through again / the container rejoins the network."""
    node = _replica(cluster, replica)
    if cluster.backend_name == "local":
        from . import proxy
        lk = proxy.link(cluster, node.name)
        if lk is None:
            return f"{node.name}: no proxy link in this process: nothing to heal"
        lk.heal()
        return f"{node.name}: link healed"
    try:
        cluster.backend.connect(node.spec)
    except Exception as e:  # docker says so when it is connected already
        if "already exists" not in str(e):
            raise
    return f"{node.name}: reconnected to the compose network"


def is_cut(cluster, replica: str = "replica1") -> bool:
    node = _replica(cluster, replica)
    if cluster.backend_name == "local":
        from . import proxy
        lk = proxy.link(cluster, node.name)
        return lk is not None and lk.proxy.is_cut
    net = cluster.backend.network()
    net.reload()
    return node.spec["container"] not in {c.name for c in net.containers}


@contextlib.contextmanager
def partitioned(cluster, replica: str = "replica1", hold: bool = False):
    """``with lab.faults.partitioned(cluster, "replica1"): ...`` — cut inside, healed on the way out."""
    cut(cluster, replica, hold=hold)
    try:
        yield
    finally:
        heal(cluster, replica)


@contextlib.contextmanager
def killed(node, restart: bool = True):
    """``with lab.faults.killed(cluster.node("replica1")): ...`` — crashed inside; started again
    (crash recovery) on the way out unless ``restart=False``."""
    kill(node)
    try:
        yield node
    finally:
        if restart and not node.is_running:
            node.start()
