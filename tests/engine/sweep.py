"""What an engine leaves on the host, found and removed: its processes, mounts and cgroups.

Processes come from psutil and ``lab.system.process`` (the lab's one process helper); the
engine's cgroup membership, the mount table and the cgroup trees are read from /proc and the
cgroup file systems, which only Linux has (and so does the private engine).
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import time
from pathlib import Path

import psutil

from lab.system.process import pid_alive, signal_tree, wait_gone


def cmdline(pid: int) -> list[str]:
    """The command line of ``pid`` (empty if it is gone or not readable)."""
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


def names_root(pid: int, root: Path) -> bool:
    """Does the command line of ``pid`` name ``root`` (dockerd, containerd and shims of one engine)?"""
    return any(str(root) in a for a in cmdline(pid))


def _in_cgroup(pid: int, cgroup: str) -> bool:
    try:
        cg = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False
    return f"/{cgroup}/" in cg or cg.rstrip().endswith(f"/{cgroup}")


def processes_of(root: Path, cgroup: str | None = None) -> dict[int, str]:
    """pid -> command of every live process of the engine at ``root``: the command line names
    the root (dockerd, containerd, shims), or the process sits in the engine's cgroup
    (containers' processes)."""
    out = {}
    me = os.getpid()
    for pid in psutil.pids():
        if pid == me or not pid_alive(pid):
            continue
        cmd = cmdline(pid)
        if any(str(root) in a for a in cmd) or (cgroup and _in_cgroup(pid, cgroup)):
            out[pid] = " ".join(cmd)[:200]
    return out


def other_engines(root: Path | None) -> list[int]:
    """Docker engines running on the host that are not the one at ``root``."""
    out = []
    for pid in psutil.pids():
        cmd = cmdline(pid)
        if cmd and os.path.basename(cmd[0]) in ("dockerd", "containerd") and pid_alive(pid):
            if root is None or not any(str(root) in a for a in cmd):
                out.append(pid)
    return out


def kill_and_wait(pids, sig, timeout: float) -> set[int]:
    """``sig`` to each live pid of ``pids`` (not to their children: dockerd stops its own
    containerd on SIGTERM), then wait up to ``timeout`` for all of them; returns who is left."""
    pids = {p for p in pids if pid_alive(p)}
    signal_tree(pids, sig)
    deadline = time.monotonic() + timeout
    return {p for p in pids if not wait_gone(p, max(0.0, deadline - time.monotonic()))}


# --------------------------------------------------------------------------------------------
# Mounts

def _unescape_mount(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def mountinfo() -> list[tuple[str, str]]:
    """(mount point, fstype) of every mount in our mount namespace."""
    out = []
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        parts = left.split()
        if len(parts) >= 5:
            out.append((_unescape_mount(parts[4]), right.split()[0] if right else "?"))
    return out


def mounts_under(root: Path) -> list[str]:
    r = str(root).rstrip("/")
    return [m for m, _ in mountinfo() if m == r or m.startswith(r + "/")]


_libc = None


def _umount(path: str) -> bool:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    for flags in (0, 2):  # then MNT_DETACH
        if _libc.umount2(path.encode(), flags) == 0:
            return True
        if ctypes.get_errno() in (errno.EINVAL, errno.ENOENT):  # not a mount (any more)
            return True
    return False


def unmount_all(root: Path) -> list[str]:
    """Unmount everything at or under ``root``, deepest first; returns what is still mounted."""
    for _ in range(5):
        left = mounts_under(root)
        if not left:
            return []
        for m in sorted(left, key=lambda p: (p.count("/"), len(p)), reverse=True):
            _umount(m)
    return mounts_under(root)


# --------------------------------------------------------------------------------------------
# Cgroups

def cgroup_mounts() -> list[str]:
    return [m for m, fs in mountinfo() if fs in ("cgroup", "cgroup2")]


def cgroup_dirs(name: str) -> list[Path]:
    """Every cgroup directory called ``name``, in every hierarchy.  A relative --cgroup-parent
    sits under dockerd's own cgroup of each hierarchy, which need not be the root (here the
    memory hierarchy puts each command under /process_api/<id>/): search a few levels down."""
    out = []
    for m in cgroup_mounts():
        for dirpath, dirnames, _ in os.walk(m):
            if os.path.basename(dirpath) == name:
                out.append(Path(dirpath))
                dirnames[:] = []
            elif dirpath[len(m):].count("/") >= 4:
                dirnames[:] = []
    return out


def remove_cgroups(name: str) -> list[str]:
    """rmdir the engine's cgroup (children first) in every hierarchy; returns what is left."""
    left = []
    for top in cgroup_dirs(name):
        for dirpath, _, _ in sorted(os.walk(top), key=lambda t: -t[0].count("/")):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
        if top.exists():
            left.append(str(top))
    return left
