"""``python -m lab doctor``: what this machine has for the lab, and what to do about what it lacks."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

from .backends import choose_backend
from .backends.compose import _client, compose_cli
from .cluster import Cluster
from .errors import LabError
from .i18n import _
from .system import binaries, hatools, ports
from .system.home import LabHome, cache_dir
from .system.osuser import server_user


def docker_status() -> tuple[bool, str]:
    """(answers, detail) for the Docker daemon, without waiting long."""
    try:
        client = _client(timeout=3)
    except LabError as e:
        return False, str(e)
    try:
        return True, _("Docker {version} answers").format(version=client.version().get("Version", "?"))
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


# Chapter 08's rows: optional, like Docker (a machine without etcd or HAProxy has every other
# chapter), so they do not count in Doctor.ok.
HA_ROWS = ("etcd (chapter 08)", "HAProxy (chapter 08)", "Patroni (chapter 08)", "Patroni as the server user")
LOGICAL_ROW = "logical decoding (chapter 09)"
OPTIONAL_ROWS = ("Docker", LOGICAL_ROW) + HA_ROWS
_HA_CACHE = "doctor-ha.json"


def contrib_hint() -> str:
    """What to install when PostgreSQL's contrib modules are missing (chapter 09's test_decoding)."""
    return _("install PostgreSQL's contrib modules: `sudo apt-get install postgresql-contrib` (Debian/Ubuntu "
             "ship them in postgresql-<version>), `conda install -c conda-forge postgresql` or Homebrew's "
             "postgresql@N include them")


def row_label(name: str) -> str:
    """A row's check (the English name its rows and OPTIONAL_ROWS use) in the current language."""
    labels = {
        "PostgreSQL server": _("PostgreSQL server"), "server user": _("server user"), "lab home": _("lab home"),
        "Docker": "Docker", "Compose CLI": _("Compose CLI"), "backend for a new cluster": _("backend for a new cluster"),
        "other labs on this host": _("other labs on this host"), "free ports": _("free ports"),
        "template cache": _("template cache"), "etcd (chapter 08)": _("etcd (chapter 08)"),
        "HAProxy (chapter 08)": _("HAProxy (chapter 08)"), "Patroni (chapter 08)": _("Patroni (chapter 08)"),
        "Patroni as the server user": _("Patroni as the server user"),
        "logical decoding (chapter 09)": _("logical decoding (chapter 09)"),
    }
    return labels.get(name, name)


def _stamp(path) -> "list | None":
    """What changes when a file is installed again: its real path, mtime and size."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except (OSError, TypeError):
        return None
    return [real, st.st_mtime_ns, st.st_size]


class _Cache:
    """Slow answers (``patroni --version``, a Python started as the server user) kept in the template
    cache directory, each under a key made of the stamps of the files it depends on: a reinstall or
    an upgrade changes the key, and the answer is asked again."""

    def __init__(self):
        self.path = cache_dir() / _HA_CACHE
        try:
            self.data = json.loads(self.path.read_text())
            if not isinstance(self.data, dict):
                self.data = {}
        except (OSError, ValueError):
            self.data = {}
        self.changed = False

    def get(self, name: str, key):
        entry = self.data.get(name)
        return entry["value"] if isinstance(entry, dict) and entry.get("key") == key else None

    def put(self, name: str, key, value) -> None:
        self.data[name] = {"key": key, "value": value}
        self.changed = True

    def save(self) -> None:
        if not self.changed:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f"{_HA_CACHE}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.data, indent=1))
            os.replace(tmp, self.path)
        except OSError:
            pass  # a cache that cannot be written only costs time


def _version(cache: _Cache, program: str, path: str) -> str:
    key = _stamp(path)
    v = cache.get(program, key)
    if v is None:
        v = hatools.version(path)
        if key is not None and v != "?":
            cache.put(program, key, v)
    return v


def _server_runs_patroni(cache: _Cache) -> tuple[bool, str]:
    """Whether the server user can run this environment's Patroni (hatools.server_python); only
    a success is cached, keyed by the user, this Python, Patroni and psycopg2."""
    try:
        user = server_user()
    except LabError as e:
        return False, _("not checked: no server user ({error})").format(error=e)
    mods = [find_spec(m) for m in ("patroni", "psycopg2")]
    key = [user.name, user.uid, _stamp(sys.executable)] + [_stamp(m.origin) if m else None for m in mods]
    hit = cache.get("server_python", key)
    if hit and _stamp(hit["python"]) == hit["stamp"]:
        exe, extra = hit["python"], hit["env"]
    else:
        try:
            exe, extra = hatools.server_python(user.run_kwargs(), install=False)  # the doctor only looks
        except LabError as e:
            return False, str(e)
        cache.put("server_python", key, {"python": exe, "env": extra, "stamp": _stamp(exe)})
    if extra.get("PYTHONPATH"):
        return True, _("{user} runs Patroni with {python} (given this environment's packages through "
                       "PYTHONPATH)").format(user=user.name, python=exe)
    return True, _("{user} runs Patroni with {python}").format(user=user.name, python=exe)


def ha_rows() -> list[tuple[str, bool, str]]:
    """Chapter 08's rows: etcd, HAProxy and Patroni (version and path, or what to install, in
    hatools' words), and whether the server user can run Patroni.  Quick after the first time:
    versions and the server-user check are cached (see _Cache)."""
    cache = _Cache()
    hints = hatools.missing()
    rows = []
    found = {}
    for program, row in zip(("etcd", "haproxy", "patroni"), HA_ROWS):
        path = hatools.locate(program)
        found[program] = path
        if path:
            rows.append((row, True, _("{version} at {path}").format(version=_version(cache, program, path), path=path)))
        else:
            # hatools' line for it: "etcd (...) not found: ..." (the program's name is not always first
            # in another language: "no se encontró etcd (...)")
            hint = next((h for h in hints if f"{program} (" in h), None)
            rows.append((row, False, hint or _("{program} not found").format(program=program)))
    if found["patroni"]:
        ok, detail = _server_runs_patroni(cache)
    else:
        ok, detail = False, _("not checked: Patroni is not installed (see above)")
    rows.append((HA_ROWS[3], ok, detail))
    cache.save()
    return rows


def report(home=None) -> list[tuple[str, bool, str]]:
    """Rows of (check, ok, detail)."""
    rows = []
    try:
        b = binaries.find()
        rows.append(("PostgreSQL server", True, _("{version} in {bindir} (found via {source})").format(
            version=b.version, bindir=b.bindir, source=b.source)))
    except LabError as e:
        b = None
        rows.append(("PostgreSQL server", False, str(e)))
    if b is not None:
        lacking = binaries.missing_for_logical(b)
        if len(lacking) > 1:
            detail = _("missing {first} and {second}: {hint}").format(
                first=", ".join(lacking[:-1]), second=lacking[-1], hint=contrib_hint())
        elif lacking:
            detail = _("missing {first}: {hint}").format(first=lacking[0], hint=contrib_hint())
        else:
            detail = _("pg_recvlogical and test_decoding in {path}").format(path=binaries.pkglibdir(b))
        rows.append((LOGICAL_ROW, not lacking, detail))
    try:
        u = server_user()
        rows.append(("server user", True, _("{user} (you)").format(user=u.name) if u.is_me else
                     _("{user} (PostgreSQL refuses to run as root)").format(user=u.name)))
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
            rows.append(("lab home", True, _("{path}: no cluster yet (lab.up() creates one)").format(path=h.path)))
    except LabError as e:
        rows.append(("lab home", False, str(e)))
    ok, detail = docker_status()
    rows.append(("Docker", ok, detail))
    cli = compose_cli()
    rows.append(("Compose CLI", True, " ".join(Path(c).name for c in cli) if cli else
                 _("none (only the compose backend needs it: docker compose v2 or docker-compose)")))
    try:
        rows.append(("backend for a new cluster", True, _("{backend} (lab.up(backend='local'|'compose') or "
                                                          "LAB_BACKEND choose)").format(backend=choose_backend(None))))
    except LabError as e:
        rows.append(("backend for a new cluster", False, str(e)))
    others = [x for x in running_clusters() if x != str(h.path)]
    rows.append(("other labs on this host", True, ", ".join(others) if others else _("none")))
    free = sum(ports.port_is_free(p) for p in range(ports.PORT_RANGE[0], ports.PORT_RANGE[0] + 50))
    rows.append(("free ports", free > 0, _("{free}/50 free at {first}..{last} (the lab picks from {lo}-{hi})").format(
        free=free, first=ports.PORT_RANGE[0], last=ports.PORT_RANGE[0] + 49, lo=ports.PORT_RANGE[0],
        hi=ports.PORT_RANGE[1])))
    t = cache_dir()
    rows.append(("template cache", True, _("{path} (ready)").format(path=t) if any(t.glob("template-*")) else
                 _("{path} (made on first up())").format(path=t)))
    rows.extend(ha_rows())
    return rows


def format_report(rows) -> str:
    labels = [row_label(r[0]) for r in rows]
    width = max(len(label) for label in labels)
    return "\n".join(f"{'ok ' if ok else 'NO '} {label:<{width}}  {detail}"
                     for label, (name, ok, detail) in zip(labels, rows))


class Doctor:
    """What ``lab.doctor()`` returns: prints as a table in a notebook."""

    def __init__(self, rows):
        self.rows = rows

    @property
    def ok(self) -> bool:
        return all(ok for name, ok, _detail in self.rows if name not in OPTIONAL_ROWS)

    def __repr__(self):
        return format_report(self.rows)
