"""Free ports on 127.0.0.1, claimed atomically so two labs on one host never collide.

A claim is a file ``<claims dir>/<port>.json`` created with mode ``"x"`` (fails if it
exists).  It names the lab home that holds it and the process that made it.  A claim
is stale, and may be taken over, when it belongs to another lab home whose process is
gone and nothing listens on the port.

On a shared machine (a class on one server, one Unix user per student) every student's lab
claims in one directory, sticky and writable by all like /tmp, so no two students' servers are
given the same port.  There a stale claim made by another user cannot be removed (the sticky bit
keeps a file to its owner): the port is then skipped, and another one is claimed instead.
"""
from __future__ import annotations

import json
import os
import random
import socket
import tempfile
from pathlib import Path

from ..i18n import _
from ..errors import PortUnavailable
from .process import pid_alive



def _outside_ephemeral(lo: int = 20000, hi: int = 40000) -> "tuple[int, int]":
    """The lab's ports: ``lo``..``hi`` without the kernel's ephemeral range (Linux: 32768-60999 by
    default), where every outgoing connection takes its own port and could take one the lab
    claimed in the instant before its server binds it."""
    try:
        e_lo, e_hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return lo, hi
    if e_lo > hi or e_hi < lo:
        return lo, hi
    below, above = (lo, e_lo - 1), (e_hi + 1, hi)
    best = max(below, above, key=lambda r: r[1] - r[0])
    return best if best[1] - best[0] >= 2000 else (lo, hi)


PORT_RANGE = _outside_ephemeral()


def claims_dir() -> Path:
    d = Path(os.environ.get("LAB_PORT_CLAIMS") or Path(tempfile.gettempdir()) / "pglab-port-claims")
    d.mkdir(parents=True, exist_ok=True)
    try:  # shared by every user of the host, like /tmp
        os.chmod(d, 0o1777)
    except PermissionError:
        pass
    return d


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if nothing listens on host:port and we could bind it right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def read_claim(port: int) -> "dict | None":
    try:
        return json.loads((claims_dir() / f"{port}.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError, OSError):
        return None


def _is_stale(claim: "dict | None", port: int, owner: str) -> bool:
    if claim is None:  # unreadable or half-written: treat as stale only if the port is free
        return port_is_free(port)
    if claim.get("lab_home") == owner:
        return False
    return not pid_alive(claim.get("pid")) and port_is_free(port)


def nobody_listens(port: int, host: str = "127.0.0.1") -> bool:
    """True if no socket listens on host:port (a client's connection may still use it as its own
    ephemeral port, which a server binding with SO_REUSEADDR does not mind)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) != 0


def claim(port: int, owner: str, keep: bool = False) -> bool:
    """Claim ``port`` for the lab home ``owner``; True if it is now ours.  ``keep``: a port the
    owner's servers had before (an HA cluster's, which cannot move): it counts as free when nobody
    listens there, even if a client's connection uses it as its ephemeral port right now."""
    path = claims_dir() / f"{port}.json"
    for _attempt in range(2):
        try:
            with open(path, "x") as f:
                json.dump({"lab_home": owner, "pid": os.getpid()}, f)
            os.chmod(path, 0o644)
            if port_is_free(port) or (keep and nobody_listens(port)):
                return True
            path.unlink(missing_ok=True)  # someone outside the lab listens there
            return False
        except FileExistsError:
            existing = read_claim(port)
            if existing and existing.get("lab_home") == owner:
                return True
            if _is_stale(existing, port, owner) and _remove(path):
                continue
            return False
    return False


def _remove(path: Path) -> bool:
    """Remove a stale claim; False if it is another user's in a sticky directory, which only that
    user (or root) may remove: the port is left to them."""
    try:
        path.unlink(missing_ok=True)
    except PermissionError:
        return False
    return True


def claim_free_ports(n: int, owner: str, preferred: "list[int] | None" = None) -> list[int]:
    """Claim ``n`` free ports: the preferred ones first (a cluster's old ports), then random ones."""
    got: list[int] = []
    for p in preferred or []:
        if len(got) < n and p and p not in got and claim(p, owner):
            got.append(p)
    lo, hi = PORT_RANGE
    tries = 0
    while len(got) < n:
        tries += 1
        if tries > 500:
            release(got, owner)
            raise PortUnavailable(
                _("no free port on 127.0.0.1 between {lo} and {hi} after 500 tries: "
                  "stop other servers or set LAB_PORT_CLAIMS to a clean directory").format(lo=lo, hi=hi)
            )
        p = random.randint(lo, hi)
        # a random port must be a new claim: one this home holds already is another server's
        # (a node's, pgAdmin's), and claim() would hand it back as "ours"
        if p not in got and not _held_by(p, owner) and claim(p, owner):
            got.append(p)
    return got


def _held_by(port: int, owner: str) -> bool:
    c = read_claim(port)
    return c is not None and c.get("lab_home") == owner


def claim_one(port: int, owner: str) -> int:
    """Re-claim ``port`` for ``owner`` if possible, else claim another free port."""
    if claim(port, owner):
        return port
    return claim_free_ports(1, owner)[0]


def release(ports, owner: str) -> None:
    for p in ports:
        c = read_claim(p)
        if c is not None and c.get("lab_home") == owner:
            (claims_dir() / f"{p}.json").unlink(missing_ok=True)


def claims_of(owner: str) -> list[int]:
    out = []
    for f in claims_dir().glob("*.json"):
        try:
            c = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if c.get("lab_home") == owner:
            out.append(int(f.stem))
    return sorted(out)


def release_all(owner: str) -> None:
    release(claims_of(owner), owner)
