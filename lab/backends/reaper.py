"""Run one command as a *subreaper*: a process that reaps every orphan below it at once.

Patroni starts PostgreSQL detached from itself, so the postmaster's parent is the machine's PID 1.
Patroni learns that PostgreSQL died when the postmaster's pid is gone; a killed postmaster stays a
zombie until its parent reaps it.  A PID 1 that reaps slowly (seconds, in some VMs) or never (the
main process of a container, where Jupyter runs as PID 1) would delay or prevent every restart and
failover.  The lab therefore starts each Patroni under this wrapper: it declares itself the child
subreaper (Linux ``PR_SET_CHILD_SUBREAPER``), so orphans below it become its children, and reaps
them as they die.  It forwards SIGTERM, SIGINT and SIGHUP to the command, and exits with its code.

    python -m lab.backends.reaper [--uid N --gid N] -- <command> [args...]

``--uid/--gid`` run the command as that user (the server user: the wrapper runs as the lab's user).
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Declare this process the subreaper of its descendants (Linux); False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def main(argv: list) -> int:
    uid = gid = None
    while argv and argv[0] != "--":
        opt, value, argv = argv[0], argv[1], argv[2:]
        if opt == "--uid":
            uid = int(value)
        elif opt == "--gid":
            gid = int(value)
        else:
            print(f"reaper: unknown option {opt}", file=sys.stderr)
            return 2
    cmd = argv[1:]
    if not cmd:
        print("reaper: no command after --", file=sys.stderr)
        return 2
    become_subreaper()
    kwargs = {"user": uid, "group": gid, "extra_groups": []} if uid is not None else {}
    child = None
    early = []  # a signal that came before the command started: delivered once it has

    def forward(signum, _frame):
        if child is None:
            early.append(signum)
            return
        try:
            os.kill(child.pid, signum)
        except ProcessLookupError:
            pass
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, forward)
    child = subprocess.Popen(cmd, **kwargs)
    for signum in early:
        forward(signum, None)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 0
        if pid == child.pid:
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
