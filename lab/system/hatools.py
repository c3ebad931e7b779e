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
import tempfile
from dataclasses import dataclass
from importlib.metadata import version as dist_version
from pathlib import Path

from ..i18n import N_, _
from ..errors import LabError

PROGRAMS = {
    "etcd": ("LAB_ETCD", N_("the consensus store"), N_("`sudo apt-get install etcd-server` (Debian/Ubuntu), "
                                                       "`conda install -c conda-forge etcd` or `brew install etcd`")),
    "haproxy": ("LAB_HAPROXY", N_("the router"), N_("`sudo apt-get install haproxy` (Debian/Ubuntu), "
                                                   "`sudo dnf install haproxy` (Fedora) or `brew install haproxy` "
                                                   "(conda-forge has none)")),
    "patroni": ("LAB_PATRONI", N_("the HA manager"), N_("`pip install 'patroni[etcd3]'` into the lab's environment "
                                                       "(make setup does it)")),
    "patronictl": ("LAB_PATRONICTL", N_("Patroni's command line"),
                   N_("`pip install 'patroni[etcd3]'` (make setup does it)")),
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
            out.append(_("{program} ({role}) not found: install it with {hint}, or set {var}").format(
                program=program, role=_(role), hint=_(hint), var=var))
    return out


def find() -> HATools:
    """Every program, or one HAToolMissing that names each missing one and what to install."""
    lacking = missing()
    if lacking:
        raise HAToolMissing(_("chapter 08 needs etcd, HAProxy and Patroni: {missing}").format(
            missing="; ".join(lacking)))
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


def server_python(run_kwargs: dict, install: bool = True) -> "tuple[str, dict]":
    """A Python the server user can run that imports Patroni: (interpreter, extra environment).

    1. this interpreter, when the server user can run it (the usual case: the servers run as you);
    2. a system Python of the same version given this environment's packages through PYTHONPATH
       (root with a virtualenv whose interpreter lives under /root, in a readable clone);
    3. a virtualenv of its own the server user can read, made once per Patroni version in the
       system's temp dir with a system Python and the same Patroni from PyPI (``install``: make it
       if it is missing) — when this environment itself is out of the server user's reach.
    HAToolMissing if none works, with what to do."""
    ver = f"{sys.version_info[0]}.{sys.version_info[1]}"
    site = os.pathsep.join(dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]))
    tries = [(sys.executable, {})]
    for cand in (f"/usr/bin/python{ver}", f"/usr/local/bin/python{ver}", f"/opt/homebrew/bin/python{ver}"):
        if os.path.exists(cand):
            tries.append((cand, {"PYTHONPATH": site}))
    own = own_venv()
    if own is not None and (own / "bin" / "python").exists():
        tries.append((str(own / "bin" / "python"), {}))
    tried = []
    for exe, extra in tries:
        ok, why = _imports_patroni(exe, extra, run_kwargs)
        if ok:
            return exe, extra
        tried.append(f"{exe}: {why}")
    if install and own is not None and not (own / "bin" / "python").exists():
        made = _make_own_venv(own)
        if made is None:
            ok, why = _imports_patroni(str(own / "bin" / "python"), {}, run_kwargs)
            if ok:
                return str(own / "bin" / "python"), {}
            made = why
        tried.append(f"{own}: {made}")
    raise HAToolMissing(_("the server user cannot run Patroni ({tried}): install python3 and python3-venv "
                          "system-wide (`sudo apt-get install python3-venv`), or run the lab from an environment "
                          "the server user can read").format(tried="; ".join(tried)))


def _imports_patroni(exe: str, extra: dict, run_kwargs: dict) -> "tuple[bool, str]":
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp", **extra}
    try:
        # what Patroni imports to reach etcd, not only its package: a system Python given this
        # environment's packages can fail there (Debian's pyOpenSSL against a newer cryptography)
        r = subprocess.run([exe, "-c", "import patroni.dcs.etcd3, patroni.api, psycopg2"], env=env, cwd="/",
                           capture_output=True, text=True, timeout=60, **run_kwargs)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    if r.returncode == 0:
        return True, ""
    return False, (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]


def _patroni_version() -> "str | None":
    try:
        return dist_version("patroni")
    except Exception:
        return None


def own_venv() -> "Path | None":
    """Where the lab's own Patroni environment for the server user lives (None: no Patroni here to copy)."""
    v = _patroni_version()
    if v is None:
        return None
    return Path(tempfile.gettempdir()) / f"pglab-patroni-{v}-uid{os.geteuid()}"


def _make_own_venv(path: Path) -> "str | None":
    """Make ``path`` (a venv with this Patroni version, readable by all, writable by us only); None
    if it worked, else why not."""
    base = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3", "/opt/homebrew/bin/python3")
                 if os.path.exists(p)), None)
    if base is None:
        return _("no system python3 to make it with")
    if path.exists() and (path.stat().st_uid != os.geteuid() or path.stat().st_mode & 0o022):
        return _("{path} exists and is not ours alone: remove it").format(path=path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    print(_("the server user cannot read this Python environment: making {path} with Patroni for it "
            "(once, about 30 s)").format(path=path), file=sys.stderr)
    try:
        subprocess.run([base, "-m", "venv", str(tmp)], check=True, capture_output=True, text=True, timeout=300)
        subprocess.run([str(tmp / "bin" / "pip"), "install", "--disable-pip-version-check", "-q",
                        f"patroni[etcd3]=={_patroni_version()}", "psycopg2-binary"],
                       check=True, capture_output=True, text=True, timeout=900)
        for root, dirs, files in os.walk(tmp):
            for n in dirs + files:
                p = os.path.join(root, n)
                if not os.path.islink(p):
                    os.chmod(p, os.stat(p).st_mode | 0o044 | (0o011 if os.path.isdir(p) or os.access(p, os.X_OK) else 0))
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    except (OSError, subprocess.SubprocessError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        err = getattr(e, "stderr", None) or str(e)
        return _("could not make it ({reason})").format(
            reason=str(err).strip().splitlines()[-1] if str(err).strip() else e)
    return None
