"""Is a process there?  Small helpers shared by port claims and the local backend."""
from __future__ import annotations

import os


def pid_exists(pid) -> bool:
    """True while the pid exists at all, zombies included (PostgreSQL's own lock-file check)."""
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def pid_alive(pid) -> bool:
    """True if the process exists and is not a zombie."""
    if not pid or not pid_exists(pid):
        return False
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # no /proc (macOS): existing is alive
        return True
