"""Processes of this machine: is one there, its tree, signals, waiting until it is gone.

The one place the lab looks at processes (port claims, the local backend, faults, services);
psutil reads them, so the same code runs on Linux and macOS.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil


def pid_exists(pid) -> bool:
    """True while the pid exists at all, zombies included (PostgreSQL's own lock-file check).
    Only positive pids name a process (kill(-n, 0) would ask about a process group)."""
    try:
        pid = int(pid)
        if pid <= 0:
            return False
        os.kill(pid, 0)
    except (ProcessLookupError, ValueError, TypeError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def state(pid) -> "str | None":
    """The process's status as psutil names it ("running", "sleeping", "stopped", "zombie", …);
    None if there is no such process."""
    try:
        return psutil.Process(int(pid)).status()
    except (psutil.Error, ValueError, TypeError):
        return None


def pid_alive(pid) -> bool:
    """True if the process exists and is not a zombie."""
    if not pid or not pid_exists(pid):
        return False
    st = state(pid)
    if st is None:  # gone meanwhile, or not readable: existing is alive
        return pid_exists(pid)
    return st != psutil.STATUS_ZOMBIE


def command_line(pid, limit: int = 120) -> "str | None":
    """The process's command line (at most ``limit`` characters); None if it is gone."""
    try:
        return " ".join(psutil.Process(int(pid)).cmdline())[:limit]
    except (psutil.Error, ValueError, TypeError):
        return None


def is_stopped(pid) -> bool:
    """Is the process frozen by SIGSTOP?"""
    return state(pid) in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)


def process_tree(pid: int) -> "list[int]":
    """``pid`` and every descendant, parents before children (empty if ``pid`` is gone)."""
    try:
        root = psutil.Process(int(pid))
        children = root.children(recursive=True)
    except (psutil.Error, ValueError, TypeError):
        return []
    by_parent: dict = {}
    for c in children:
        try:
            by_parent.setdefault(c.ppid(), []).append(c.pid)
        except psutil.Error:
            continue
    out, todo = [], [root.pid]
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo.extend(sorted(by_parent.get(p, [])))
    return out


def signal_tree(pids, sig) -> None:
    """Send ``sig`` to each pid in turn (those already gone are skipped)."""
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def wait_states(pids, stopped: bool, timeout: float = 2.0) -> None:
    """Signals arrive asynchronously: wait until every process shows them taken (stopped or not)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [state(p) for p in pids]
        if all(st is None or st == psutil.STATUS_ZOMBIE
               or (st in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)) == stopped for st in states):
            return
        time.sleep(0.002)


def wait_gone(pid: int, timeout: float, reaped: bool = False) -> bool:
    """Wait until ``pid`` has exited; with ``reaped``, until its parent has reaped it too.
    True if it is gone (or only a zombie, without ``reaped``) when this returns."""
    deadline = time.monotonic() + timeout
    while pid_exists(pid) if reaped else pid_alive(pid):
        if time.monotonic() > deadline:
            return not pid_alive(pid)
        time.sleep(0.005)
    return True


def terminate_tree(pid: int, timeout: float = 10, sig=signal.SIGTERM) -> bool:
    """``sig`` to ``pid`` and its descendants, SIGKILL to whoever outlives ``timeout``; True if all
    are gone."""
    try:
        procs = [psutil.Process(p) for p in process_tree(pid)]
    except psutil.Error:
        procs = []
    if not procs:
        return True
    for p in procs:
        try:
            p.send_signal(signal.SIGCONT)  # a frozen process cannot act on the signal
            p.send_signal(sig)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(alive, timeout=5)
    return not alive


def working_in(root, uids) -> "list[int]":
    """Processes of the users ``uids`` that work on something under ``root``: a path under it on
    their command line, their working directory, or their PGDATA (a server, initdb, pg_basebackup,
    the replica script): what a killed ``lab.up`` may leave running there.  Parents come first."""
    needles = {str(root).rstrip("/") + "/", os.path.realpath(root).rstrip("/") + "/"}
    me = os.getpid()

    def under(path) -> bool:
        return bool(path) and any(n in str(path) + "/" for n in needles)

    found = []
    for p in psutil.process_iter(["pid", "ppid", "uids", "cmdline", "cwd"]):
        info = p.info
        if info["pid"] == me or not info["uids"] or info["uids"].effective not in uids:
            continue
        hit = any(under(a) for a in info["cmdline"] or []) or under(info["cwd"])
        if not hit:
            try:
                hit = under(p.environ().get("PGDATA"))
            except psutil.Error:
                pass
        if hit:
            found.append((info["pid"], info["ppid"]))
    pids = {pid for pid, _ in found}
    return [pid for pid, ppid in found if ppid not in pids]  # the tops: terminate_tree takes the rest


def spawn_detached(argv, log, env: dict, cwd=None, run_kwargs: "dict | None" = None) -> subprocess.Popen:
    """Start ``argv`` in a session of its own (it outlives the kernel that started it), stdin closed,
    stdout and stderr appended to the file ``log`` (made 0600); ``env`` is its whole environment;
    ``run_kwargs``: ``user``/``group`` to run it as another user (``ServerUser.run_kwargs()``)."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as out:
        return subprocess.Popen([str(a) for a in argv], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                                **(run_kwargs or {}))
