"""The lab's proxy between one Patroni and the etcd members, as a process of its own.

A Patroni node reaches etcd only through its relay: one listening port per etcd member, each
forwarding to that member (``links.Proxy``).  Cutting a node's relay partitions that node from
the consensus store while everything else keeps talking; its latency slows only that node's
view of etcd.  The relay runs detached (its own session, like the servers), so a cluster keeps
working when the kernel that started it dies; it is told what to do through its control file:

    {"owner": ..., "name": "pg1", "routes": [[listen_port, etcd_client_port], ...],
     "generation": 3, "cut": false, "hold": false, "latency_ms": 0, "jitter_ms": 0}

It polls the file, applies a new generation, then writes that generation to ``<control>.applied``
(``set_link`` waits for it).  Removing the control file, or SIGTERM, ends it.

    python -m lab.backends.relay <control file>
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from ..i18n import _
from ..errors import LabError, Timeout
from .links import Proxy

POLL = 0.01


def write_control(path, control: dict) -> None:
    """Write the control file in one step (a rename): the relay never reads half of it."""
    path = Path(path)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(control, f)
    os.replace(tmp, path)


def read_control(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def applied(path) -> int:
    try:
        return int(Path(str(path) + ".applied").read_text().strip() or -1)
    except (OSError, ValueError):
        return -1


def set_link(path, timeout: float = 5, **changes) -> dict:
    """Change the relay's settings (``cut``, ``hold``, ``latency_ms``, ``jitter_ms``) and wait until
    it has applied them; the new control."""
    control = read_control(path)
    if not control:
        raise LabError(_("no relay control file at {path}: is the HA cluster up? (lab.ha.up())").format(path=path))
    control.update(changes)
    control["generation"] = int(control.get("generation", 0)) + 1
    write_control(path, control)
    deadline = time.monotonic() + timeout
    while applied(path) < control["generation"]:
        if time.monotonic() > deadline:
            raise Timeout(_("the relay of {name} did not apply {changes} within {timeout:g} s: "
                            "restart the HA cluster with lab.ha.up()").format(
                name=control.get('name'), changes=changes, timeout=timeout))
        time.sleep(0.005)
    return control


def _apply(proxies, control: dict) -> None:
    for p in proxies:
        p.set_latency(float(control.get("latency_ms", 0)), float(control.get("jitter_ms", 0)))
        if control.get("cut"):
            if not p.is_cut:
                p.cut(hold=bool(control.get("hold")))
        elif p.is_cut:
            p.heal()


def main(path: str) -> int:
    control = read_control(path)
    if not control:
        print(f"relay: no control file at {path}", file=sys.stderr)
        return 2
    proxies = [Proxy("127.0.0.1", target, owner=control["owner"], name=f"{control['name']}-etcd{i}", port=port)
               for i, (port, target) in enumerate(control["routes"], start=1)]
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_args: stopping.append(1))
    seen = None
    try:
        while not stopping:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                break
            key = (st.st_ino, st.st_mtime_ns)
            if key != seen:
                seen = key
                control = read_control(path) or control
                _apply(proxies, control)
                Path(str(path) + ".applied").write_text(str(control.get("generation", 0)))
            time.sleep(POLL)
    finally:
        for p in proxies:
            p.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
