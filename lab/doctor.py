"""``python -m lab doctor``: what this machine has for the lab, and what to do about what it lacks."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from .backends import choose_backend
from .backends.compose import _client, compose_cli
from .cluster import Cluster
from .errors import LabError
from .system import binaries, ports
from .system.home import LabHome, cache_dir
from .system.osuser import server_user


def docker_status() -> tuple[bool, str]:
    """(answers, detail) for the Docker daemon, without waiting long."""
    try:
        client = _client(timeout=3)
    except LabError as e:
        return False, str(e)
    try:
        return True, f"Docker {client.version().get('Version', '?')} answers"
    finally:
        client.close()


def running_clusters() -> list[str]:
    """Lab homes that hold port claims on this host right now."""
    homes = set()
    for f in ports.claims_dir().glob("*.json"):
        try:
            homes.add(json.loads(f.read_text()).get("lab_home"))
        except (OSError, json.JSONDecodeError):
            pass
    return sorted(h for h in homes if h)


def report(home=None) -> list[tuple[str, bool, str]]:
    """Rows of (check, ok, detail)."""
    rows = []
    try:
        b = binaries.find()
        rows.append(("PostgreSQL server", True, f"{b.version} in {b.bindir} (found via {b.source})"))
    except LabError as e:
        rows.append(("PostgreSQL server", False, str(e)))
    try:
        u = server_user()
        rows.append(("server user", True, u.name + (" (you)" if u.is_me else " (PostgreSQL refuses to run as root)")))
    except LabError as e:
        rows.append(("server user", False, str(e)))
    h = LabHome(home)
    try:
        h.ensure()
        st = h.load()
        if st:
            c = Cluster(h, st)
            desc = ", ".join(f"{n.name} {n.role} {n.state} :{n.port}" for n in c.nodes)
            rows.append(("lab home", True, f"{h.path}: {desc}"))
        else:
            rows.append(("lab home", True, f"{h.path}: no cluster yet (lab.up() creates one)"))
    except LabError as e:
        rows.append(("lab home", False, str(e)))
    ok, detail = docker_status()
    rows.append(("Docker", ok, detail))
    cli = compose_cli()
    rows.append(("Compose CLI", True, " ".join(Path(c).name for c in cli) if cli else
                 "none (only the compose backend needs it: docker compose v2 or docker-compose)"))
    try:
        rows.append(("backend for a new cluster", True, choose_backend(None) +
                     " (lab.up(backend='local'|'compose') or LAB_BACKEND choose)"))
    except LabError as e:
        rows.append(("backend for a new cluster", False, str(e)))
    others = [x for x in running_clusters() if x != str(h.path)]
    rows.append(("other labs on this host", True, ", ".join(others) if others else "none"))
    free = sum(ports.port_is_free(p) for p in range(ports.PORT_RANGE[0], ports.PORT_RANGE[0] + 50))
    rows.append(("free ports", free > 0, f"{free}/50 free at {ports.PORT_RANGE[0]}..{ports.PORT_RANGE[0] + 49} "
                 f"(the lab picks from {ports.PORT_RANGE[0]}-{ports.PORT_RANGE[1]})"))
    t = cache_dir()
    rows.append(("template cache", True, f"{t} ({'ready' if any(t.glob('template-*')) else 'made on first up()'})"))
    return rows


def format_report(rows) -> str:
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{'ok ' if ok else 'NO '} {name:<{width}}  {detail}" for name, ok, detail in rows)


class Doctor:
    """What ``lab.doctor()`` returns: prints as a table in a notebook."""

    def __init__(self, rows):
        self.rows = rows

    @property
    def ok(self) -> bool:
        return all(ok for name, ok, _ in self.rows if name not in ("Docker",))

    def __repr__(self):
        return format_report(self.rows)
