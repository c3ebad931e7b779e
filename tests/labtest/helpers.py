"""Helpers tests import (``from labtest.helpers import insert, rows_with, postmasters``), and the
scans of this host's processes that the tier guard and the leftovers check use (Linux ``/proc``;
elsewhere they find nothing)."""
from __future__ import annotations

import os
from pathlib import Path

from labtest.session import SESSION, SESSION_VAR

PROC = Path("/proc")
_SESSION_ENTRY = f"{SESSION_VAR}={SESSION}".encode()


def insert(node, text) -> int:
    """INSERT one row into test_replication (the original course's table) on ``node``."""
    return node.execute("INSERT INTO test_replication (mensaje) VALUES (%s)", (text,))


def rows_with(node, text) -> int:
    """How many rows of test_replication on ``node`` say ``text``."""
    return node.scalar("SELECT count(*) FROM test_replication WHERE mensaje = %s", (text,))


def _pids():
    try:
        names = os.listdir(PROC)
    except OSError:
        return
    for name in names:
        if name.isdigit():
            yield int(name)


def _read(pid: int, what: str) -> bytes:
    with open(PROC / str(pid) / what, "rb") as f:
        return f.read()


def environ(pid: int) -> "list[bytes]":
    """The ``NAME=value`` entries of a process's environment ([] if it cannot be read)."""
    try:
        return _read(pid, "environ").split(b"\0")
    except OSError:
        return []


def command(pid: int) -> str:
    try:
        return _read(pid, "cmdline").replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def of_this_session(pid: int) -> bool:
    """True if the process carries this session's mark (it was started by these tests)."""
    return _SESSION_ENTRY in environ(pid)


def postmasters() -> "dict[int, str]":
    """pid -> data directory of every running postgres postmaster on this host."""
    out = {}
    for pid in _pids():
        try:
            cmd = _read(pid, "cmdline").split(b"\0")
            if not cmd or not cmd[0].endswith(b"postgres") or b"-D" not in cmd:
                continue
            out[pid] = os.readlink(PROC / str(pid) / "cwd")
        except OSError:
            continue
    return out


def session_postmasters() -> "dict[int, str]":
    """The postmasters this test session started (servers in containers are not among them)."""
    return {pid: d for pid, d in postmasters().items() if of_this_session(pid)}


def session_processes(*env_names: str, cmdline: "bytes | None" = None) -> "dict[int, str]":
    """pid -> command line of the processes of this session that have one of ``env_names`` in
    their environment or ``cmdline`` in their command line."""
    keys = tuple(n.encode() + b"=" for n in env_names)
    out = {}
    for pid in _pids():
        if pid == os.getpid():
            continue
        env = environ(pid)
        if _SESSION_ENTRY not in env:
            continue
        try:
            cmd = _read(pid, "cmdline")
        except OSError:
            continue
        if (cmdline is not None and cmdline in cmd) or any(e.startswith(keys) for e in env if keys):
            out[pid] = cmd.replace(b"\0", b" ").decode(errors="replace").strip()[:160]
    return out


def free_tcp_ports(n: int) -> "list[int]":
    """``n`` distinct ports free on 127.0.0.1 right now, for servers a test starts that cannot be
    given port 0 (a hub, its proxy, its services).  Taken from the lab's own range, outside the
    kernel's ephemeral range: a port the kernel hands out for ``bind(0)`` is the kind every
    outgoing connection may take in the instant before the server binds it."""
    import random  # lazy: only the hub tier asks
    from lab.system.ports import PORT_RANGE, port_is_free  # lazy: only the hub tier asks

    picked: "list[int]" = []
    candidates = random.sample(range(PORT_RANGE[0], PORT_RANGE[1] + 1), min(2000, PORT_RANGE[1] - PORT_RANGE[0]))
    for port in candidates:
        if port not in picked and port_is_free(port):
            picked.append(port)
            if len(picked) == n:
                return picked
    raise RuntimeError(f"found fewer than {n} free ports in {PORT_RANGE}")
