"""Find the programs of an automatically failed-over cluster (chapter 08): etcd, HAProxy, Patroni.

Search order for each: an environment variable naming the program (``LAB_ETCD``, ``LAB_HAPROXY``,
``LAB_PATRONI``), this Python's own ``bin/`` (Patroni installed with the lab, or a conda env), then
``PATH``, then the places packages put them that are not always on a user's ``PATH``
(``/usr/sbin`` for Debian's HAProxy, Homebrew's prefixes).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from ..errors import LabError

PROGRAMS = {
    "etcd": ("LAB_ETCD", "the consensus store", "`sudo apt-get install etcd-server` (Debian/Ubuntu), "
             "`conda install -c conda-forge etcd` or `brew install etcd`"),
    "haproxy": ("LAB_HAPROXY", "the router", "`sudo apt-get install haproxy` (Debian/Ubuntu), "
                "`sudo dnf install haproxy` (Fedora) or `brew install haproxy` (conda-forge has none)"),
    "patroni": ("LAB_PATRONI", "the HA manager", "`pip install 'patroni[etcd3]'` into the lab's environment "
                "(make setup does it)"),
    "patronictl": ("LAB_PATRONICTL", "Patroni's command line", "`pip install 'patroni[etcd3]'` (make setup does it)"),
}
_EXTRA_DIRS = ("/usr/sbin", "/usr/local/sbin", "/usr/local/bin", "/opt/homebrew/bin", "/opt/homebrew/sbin")


class HAToolMissing(LabError):
    """A program chapter 08 needs is not installed."""


@dataclass(frozen=True)
class HATools:
    etcd: str
    haproxy: str
    patroni: str
    patronictl: str

    def versions(self) -> dict:
        return {name: version(getattr(self, name)) for name in ("etcd", "haproxy", "patroni")}


def locate(program: str) -> "str | None":
    """The path of ``program`` (one of PROGRAMS), or None."""
    var = PROGRAMS[program][0]
    given = os.environ.get(var)
    if given:
        return given if os.access(given, os.X_OK) else None
    here = Path(sys.executable).parent / program
    if here.exists() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which(program)
    if found:
        return found
    for d in _EXTRA_DIRS:
        p = Path(d) / program
        if p.exists() and os.access(p, os.X_OK):
            return str(p)
    return None


def missing() -> "list[str]":
    """The programs that are not found, each with what to install, one line each."""
    out = []
    for program, (var, role, hint) in PROGRAMS.items():
        if locate(program) is None:
            out.append(f"{program} ({role}) not found: install it with {hint}, or set {var}")
    return out


def find() -> HATools:
    """Every program, or one HAToolMissing that names each missing one and what to install."""
    lacking = missing()
    if lacking:
        raise HAToolMissing("chapter 08 needs etcd, HAProxy and Patroni: " + "; ".join(lacking))
    return HATools(**{p: locate(p) for p in PROGRAMS})


def version(path: str) -> str:
    """The version a program reports (``etcd --version``, ``haproxy -v``, ``patroni --version``)."""
    flag = "-v" if Path(path).name == "haproxy" else "--version"
    try:
        r = subprocess.run([path, flag], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    m = re.search(r"(\d+\.\d+(?:\.\d+)?)", r.stdout + r.stderr)
    return m.group(1) if m else "?"


def server_python(run_kwargs: dict) -> "tuple[str, dict]":
    """A Python the server user can run that imports this environment's Patroni: (interpreter, extra
    environment).  This interpreter when the server user can run it (the usual case: the servers run
    as you); else a system Python of the same version given this environment's packages through
    PYTHONPATH (root with a virtualenv whose interpreter lives under /root).  HAToolMissing if none."""
    ver = f"{sys.version_info[0]}.{sys.version_info[1]}"
    site = os.pathsep.join(dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]))
    tries = [(sys.executable, {})]
    for cand in (f"/usr/bin/python{ver}", f"/usr/local/bin/python{ver}", f"/opt/homebrew/bin/python{ver}"):
        if os.path.exists(cand):
            tries.append((cand, {"PYTHONPATH": site}))
    tried = []
    for exe, extra in tries:
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp", **extra}
        try:
            r = subprocess.run([exe, "-c", "import patroni, psycopg2"], env=env, cwd="/",
                               capture_output=True, text=True, timeout=60, **run_kwargs)
        except (OSError, subprocess.TimeoutExpired) as e:
            tried.append(f"{exe}: {e}")
            continue
        if r.returncode == 0:
            return exe, extra
        tried.append(f"{exe}: {(r.stderr.strip().splitlines() or ['exit %d' % r.returncode])[-1]}")
    raise HAToolMissing("the server user cannot run Patroni from this Python environment (" + "; ".join(tried)
                        + f"): install python{ver} system-wide (`sudo apt-get install python3`), or run the lab "
                        "from an environment the server user can read")
