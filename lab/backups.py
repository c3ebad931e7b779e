"""Base backups by hand: ``pg_basebackup -R -X stream`` into a directory, and what is inside it.

>>> path = lab.backups.take_base_backup(cluster)               # doctest: +SKIP
>>> lab.backups.backup_label(path)                             # doctest: +SKIP
>>> lab.backups.verify(cluster, path)                          # doctest: +SKIP
✅ pg_verifybackup: backup successfully verified
>>> cluster.add_replica("replica_manual", from_backup=path)    # doctest: +SKIP

The replication password never goes on a command line (where ``ps`` shows it) nor into the
backup: it sits in one libpq password file, ``<data_root>/replication.pgpass`` (mode 0600, owned
by the server user), and the connection string names that file with ``passfile=``.  A replica
made from such a backup reads the same file when it connects, so the file stays until
``clean(cluster)`` finds no node that uses it.

With the compose backend the backup is taken where the primary runs, in its container (the
password file is ``/var/lib/postgresql/replication.pgpass`` there, and ``-R`` names the primary by
its service name, as a replica container reaches it), then copied out to
``<lab home>/base-backups/<name>`` so that you can read it like any directory; ``add_replica(
from_backup=path)`` copies it into a replica container's volume.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import conninfo as libpq
from .backends.pgconf import conf_string
from .errors import BadArgument, LabError, NotRunning, need_bool, need_str
from .faults import need_cluster
from .i18n import _
from .node import Node
from .plots import human_bytes

PASSFILE = "replication.pgpass"
# not a valid node name (it has a '-'), so it never collides with a node's directory
BACKUPS_DIR = "base-backups"

# What pg_basebackup -R -X stream leaves that a student should look at, in reading order.
NOTABLE = ("backup_label", "backup_manifest", "standby.signal", "postgresql.auto.conf", "pg_wal", "base", "global")


def notable() -> dict:
    """What each entry of ``NOTABLE`` is for, in the current language."""
    return {
        "backup_label": _("where recovery starts (checkpoint, first WAL)"),
        "backup_manifest": _("each file's size and checksum; the WAL range"),
        "standby.signal": _("start as a standby, not as a primary (-R)"),
        "postgresql.auto.conf": _("primary_conninfo: how to reach the primary (-R)"),
        "pg_wal": _("the WAL written during the copy (-X stream)"),
        "base": _("the databases: tables and indexes"),
        "global": _("cluster-wide: roles, databases, pg_control"),
    }


# --- pure functions: file formats --------------------------------------------------------
def passfile_line(host: str, port, database: str, user: str, password: str) -> str:
    """One line of a libpq password file (``:`` and ``\\`` escaped in each field).

    >>> passfile_line("127.0.0.1", "*", "*", "replicator", "a:b")
    '127.0.0.1:*:*:replicator:a\\\\:b\\n'
    """
    def esc(v):
        v = str(v)
        return v if v == "*" else v.replace("\\", "\\\\").replace(":", "\\:")
    return ":".join(esc(v) for v in (host, port, database, user, password)) + "\n"


def parse_backup_label(text: str) -> dict:
    """``backup_label`` as a dict of its lines, keys as PostgreSQL writes them.

    >>> parse_backup_label("START WAL LOCATION: 0/3000028 (file 000000010000000000000003)\\nLABEL: x\\n")
    {'START WAL LOCATION': '0/3000028 (file 000000010000000000000003)', 'LABEL': 'x'}
    """
    need_str(text, _("text (a backup_label's)"), empty=True)
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


_START_RE = re.compile(r"^([0-9A-Fa-f]+/[0-9A-Fa-f]+)\s*\(file ([0-9A-Fa-f]{24})\)")


def start_of(label: dict) -> "tuple[str, str] | None":
    """(LSN, WAL file) of a parsed label's START WAL LOCATION, or None.

    >>> start_of({"START WAL LOCATION": "0/3000028 (file 000000010000000000000003)"})
    ('0/3000028', '000000010000000000000003')
    """
    if not isinstance(label, dict):
        raise BadArgument(_("label is a parsed backup_label (a dict), not {type}").format(type=type(label).__name__))
    if not isinstance(label.get("START WAL LOCATION", ""), str):
        return None
    m = _START_RE.match(label.get("START WAL LOCATION", ""))
    return (m.group(1), m.group(2).upper()) if m else None


def summarise_manifest(manifest: dict) -> dict:
    """What a ``backup_manifest`` (parsed JSON) says: how many files, how big, which WAL."""
    if not isinstance(manifest, dict):
        raise BadArgument(_("manifest is a backup_manifest's JSON (a dict), not {type}").format(
            type=type(manifest).__name__))
    files = manifest.get("Files", [])
    ranges = manifest.get("WAL-Ranges", [])
    if not isinstance(files, list) or not isinstance(ranges, list) \
            or not all(isinstance(x, dict) for x in files + ranges):
        raise LabError(_("not a backup_manifest: its Files and WAL-Ranges are lists of objects"))
    algos = sorted({f.get("Checksum-Algorithm", "NONE") for f in files})
    return {
        "manifest_version": manifest.get("PostgreSQL-Backup-Manifest-Version"),
        "files": len(files),
        "total_bytes": sum(int(f.get("Size", 0)) for f in files),
        "checksum_algorithm": ", ".join(algos) or None,
        "wal_timeline": ranges[0]["Timeline"] if ranges else None,
        "wal_start_lsn": ranges[0]["Start-LSN"] if ranges else None,
        "wal_end_lsn": ranges[-1]["End-LSN"] if ranges else None,
    }


_SETTING_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*?)\s*$")


def parse_auto_conf(text: str) -> dict:
    """The settings of a ``postgresql.auto.conf`` text (quotes removed, ``''`` unescaped)."""
    need_str(text, _("text (a postgresql.auto.conf's)"), empty=True)
    out = {}
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        m = _SETTING_RE.match(line)
        if not m:
            continue
        value = m.group(2)
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = conf_string(value[1:-1])
        out[m.group(1)] = value
    return out


# --- where backups live --------------------------------------------------------------------
def backups_dir(cluster) -> Path:
    """``<data_root>/base-backups`` (``<lab home>/base-backups`` with compose): where
    ``take_base_backup`` puts backups."""
    return need_cluster(cluster).backend.host_dir() / BACKUPS_DIR


def write_passfile(cluster) -> str:
    """``<data_root>/replication.pgpass``: the replication login, mode 0600, owned by the server user
    (with compose, in the primary's container); its path where pg_basebackup runs."""
    need_cluster(cluster)
    cred = cluster.credentials
    # any port: the primary may move to another port across down()/up()
    host = cluster.backend.primary_address()[0]
    line = passfile_line(host, "*", "*", cred["replication_user"], cred["replication_password"])
    return cluster.backend.write_server_file(cluster.primary.spec, PASSFILE, line)


def passfile_info(cluster) -> pd.Series:
    """The password file: where it is, its mode and owner, and its line with the password masked."""
    p = need_cluster(cluster).primary
    path = cluster.backend.server_file(p.spec, PASSFILE)
    where = cluster.backend.where(p.spec, path)
    r = p.tool("stat", "-c", "%A %U", path, check=False)
    if r.returncode != 0:
        raise LabError(_("no {file}: take_base_backup(cluster) writes it").format(file=where))
    mode, owner = r.stdout.split()
    text = p.tool("cat", path).stdout
    fields = re.split(r"(?<!\\):", text.strip(), maxsplit=4)
    return pd.Series(dict(path=where, mode=mode, owner=owner,
                          line=":".join(fields[:4] + ["********"])), name=PASSFILE, dtype="object")


def conninfo(cluster, passfile) -> str:
    """How pg_basebackup reaches the primary: the replication user, its password from ``passfile``;
    the primary's address as a replica reaches it (with compose: its service name and port inside
    the network)."""
    need_cluster(cluster)
    need_str(passfile, _("passfile (a password file's path)"))
    host, port = cluster.backend.primary_address()
    return libpq.make(host=host, port=port, user=cluster.credentials["replication_user"], passfile=passfile)


def tree_size(path: Path) -> int:
    """Bytes of a file, or of every file under a directory (a base backup, an archive)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for n in files:
            try:
                total += os.lstat(os.path.join(root, n)).st_size
            except OSError:
                pass
    return total


def _remove_backup_dir(path: Path) -> None:
    if (path / "postmaster.pid").exists():
        raise LabError(_("{path} has a postmaster.pid: a server may run on it, so it is not removed").format(path=path))
    shutil.rmtree(path)


# --- taking and inspecting ----------------------------------------------------------------
def take_base_backup(cluster, name: str = "manual", label: "str | None" = None, quiet: bool = False) -> Path:
    """``pg_basebackup -R -X stream -c fast`` of the primary into ``<data_root>/base-backups/<name>``.

    ``label`` is written into its ``backup_label`` (None: "taken by hand", in the lab's language).

    An earlier backup of the same name is removed first (a half-written one would otherwise be
    taken for a good one).  No slot (``-S``): a replica made from it keeps no WAL on the primary.
    >>> path = lab.backups.take_base_backup(cluster)       # doctest: +SKIP
    """
    need_cluster(cluster)
    label = _("taken by hand") if label is None else need_str(label, "label", example=repr(_("taken by hand")))
    need_bool(quiet, "quiet")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name) or name.startswith("."):
        raise BadArgument(_("a backup name uses letters, digits, '_', '-' and '.', not {name!r}").format(name=name))
    root = backups_dir(cluster)
    primary = cluster.primary
    if not primary.is_running:
        raise NotRunning(_("the primary ({name}) is stopped: start it with cluster.start()").format(name=primary.name))
    root.mkdir(mode=0o700, exist_ok=True)
    cluster.backend.give_to_server(root)
    path = root / name
    if path.exists():
        if not quiet:
            print(_("removing an earlier backup in {path}").format(path=path))
        _remove_backup_dir(path)
    pf = write_passfile(cluster)
    t0 = time.monotonic()
    try:
        # where pg_basebackup runs (in the primary's container with compose: copied out after)
        with cluster.backend.directory_out(primary.spec, path) as target:
            r = primary.tool("pg_basebackup", "-D", target, "-R", "-X", "stream", "-c", "fast", "-l", label,
                             "--no-password", "-d", conninfo(cluster, pf), check=False, timeout=300)
            if r.returncode != 0:
                last = (r.stderr or r.stdout).strip().splitlines()
                raise LabError(_("pg_basebackup failed: {error}").format(
                    error=last[-1] if last else _("exit {code}").format(code=r.returncode)))
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)  # never leave a half-written backup behind
        raise
    if not quiet:
        print(_("base backup of {node}: {size} in {path} ({seconds:.1f} s)").format(
            node=primary.name, size=human_bytes(tree_size(path)), path=path, seconds=time.monotonic() - t0))
    return path


def _path(path, what: str = "path") -> Path:
    """A backup directory's path (str or Path), else a BadArgument."""
    if isinstance(path, Path) or (isinstance(path, str) and path.strip() and "\0" not in path):
        return Path(path)
    raise BadArgument(_("{what} is a backup directory, as take_base_backup returns it, not {value!r}").format(
        what=what, value=path)[:200])


def _read(source, name: str) -> str:
    """A file of a backup directory, or of a node's data directory (read where the node runs)."""
    if isinstance(source, Node):
        r = source.tool("cat", f"{source.pgdata}/{name}", check=False)
        if r.returncode != 0:
            raise FileNotFoundError(name)
        return r.stdout
    try:
        return (_path(source, "source") / name).read_text()
    except (IsADirectoryError, NotADirectoryError, PermissionError, UnicodeDecodeError):
        raise FileNotFoundError(name) from None


def backup_label(source) -> pd.Series:
    """The lines of a backup's ``backup_label``: a backup directory, or a node (its ``backup_label.old``).

    >>> lab.backups.backup_label(path)["START WAL LOCATION"]           # doctest: +SKIP
    '0/3000028 (file 000000010000000000000003)'
    """
    for name in ("backup_label", "backup_label.old"):
        try:
            text = _read(source, name)
        except (FileNotFoundError, NotRunning):
            continue
        return pd.Series(parse_backup_label(text), name=name, dtype="object")
    raise LabError(_("no backup_label in {where}: is it a base backup?").format(where=getattr(source, "pgdata", source)))


def manifest(path) -> pd.Series:
    """What the backup's ``backup_manifest`` lists, beside what is on disk.

    ``files`` / ``total_bytes`` come from the manifest; ``files_on_disk`` counts every file of
    the backup, and ``not_in_manifest`` names those the manifest does not list (``pg_wal/*``: the
    ``wal_files_in_pg_wal`` WAL files).
    """
    path = _path(path)
    try:
        data = json.loads((path / "backup_manifest").read_text())
    except (FileNotFoundError, NotADirectoryError):
        raise LabError(_("no backup_manifest in {path}: pg_basebackup writes one unless --no-manifest").format(
            path=path)) from None
    except (OSError, ValueError) as e:
        raise LabError(_("cannot read {file}: {error}").format(
            file=path / "backup_manifest", error=str(e).splitlines()[0] if str(e) else repr(e))) from None
    out = summarise_manifest(data)
    on_disk = {os.path.relpath(os.path.join(root, n), path) for root, _dirs, files in os.walk(path) for n in files}
    listed = {f.get("Path") for f in data.get("Files", [])}
    out["files_on_disk"] = len(on_disk)
    missing = sorted(on_disk - listed)
    wal = [m for m in missing if m.startswith("pg_wal/")]
    out["not_in_manifest"] = ", ".join([m for m in missing if m not in wal] + (["pg_wal/*"] if wal else []))
    out["wal_files_in_pg_wal"] = len(wal)
    out["total_size"] = human_bytes(out["total_bytes"])
    return pd.Series(out, name="backup_manifest", dtype="object")


def backup_files(path, everything: bool = False) -> pd.DataFrame:
    """The top of a backup directory: the entries worth knowing first (``everything=True``: all)."""
    path = _path(path)
    need_bool(everything, "everything")
    if not path.is_dir():
        raise LabError(_("{path} is not a directory: pass what take_base_backup returned").format(path=path))
    rows = []
    what = notable()
    entries = sorted(path.iterdir(), key=lambda p: (p.name not in NOTABLE, NOTABLE.index(p.name)
                                                      if p.name in NOTABLE else 0, p.name))
    for p in entries:
        if not everything and p.name not in NOTABLE:
            continue
        size = tree_size(p)
        rows.append(dict(name=p.name + ("/" if p.is_dir() else ""), size=human_bytes(size), bytes=size,
                         what=what.get(p.name, "")))
    return pd.DataFrame(rows, columns=["name", "size", "bytes", "what"])


# the keywords of primary_conninfo worth a row of their own; the rest are libpq defaults written out
_CONNINFO_SHOWN = ("user", "password", "passfile", "host", "port", "application_name")


def recovery_settings(path) -> pd.DataFrame:
    """The standby settings ``-R`` wrote: ``primary_conninfo`` keyword by keyword (a password masked),
    ``primary_slot_name``, and whether ``standby.signal`` is there."""
    path = _path(path)
    try:
        settings = parse_auto_conf((path / "postgresql.auto.conf").read_text())
    except (OSError, UnicodeDecodeError):
        raise LabError(_("no postgresql.auto.conf in {path}: was the backup taken with -R?").format(path=path)) from None
    rows = [dict(setting="standby.signal",
                 value=_("present") if (path / "standby.signal").exists() else _("absent: it would start as a primary"))]
    conn = libpq.parse(settings.pop("primary_conninfo", "") or "")
    for key in _CONNINFO_SHOWN:
        if key in conn:
            rows.append(dict(setting=f"primary_conninfo: {key}", value="********" if key == "password" else conn[key]))
    rest = [f"{k}={v}" for k, v in conn.items() if k not in _CONNINFO_SHOWN]
    if rest:
        rows.append(dict(setting=_("primary_conninfo: other keywords"), value=" ".join(rest)))
    slot = settings.pop("primary_slot_name", None)
    rows.append(dict(setting="primary_slot_name", value=slot or _("(not set: no slot)")))
    rows += [dict(setting=k, value=v) for k, v in settings.items()]
    return pd.DataFrame(rows, columns=["setting", "value"])


@dataclass(frozen=True)
class Verification:
    """What ``pg_verifybackup`` said: ``ok`` and its output."""
    ok: bool
    output: str

    def __bool__(self):
        return self.ok

    def __repr__(self):
        return f"{'✅' if self.ok else '❌'} pg_verifybackup: {self.output}"


def verify(cluster, path) -> Verification:
    """Run ``pg_verifybackup`` on a backup: every file against the manifest, and its WAL with pg_waldump.

    A damaged backup is a ❌ with the tool's message, not an exception.
    """
    need_cluster(cluster)
    path = _path(path)
    if not path.is_dir():
        raise LabError(_("{path} is not a directory: pass what take_base_backup returned").format(path=path))
    p = cluster.primary
    # verify this very copy: where the tool runs (a copy in the primary's container with compose)
    with cluster.backend.directory_in(p.spec, path) as where:
        r = p.tool("pg_verifybackup", where, check=False, timeout=300)
    text = "\n".join(ln for ln in (r.stdout + r.stderr).strip().splitlines() if ln.strip())
    text = text.replace(where, str(path))
    return Verification(r.returncode == 0, text or _("exit {code}").format(code=r.returncode))


# --- the backups a cluster holds, and tidying up ---------------------------------------------
def known_backups(cluster) -> pd.DataFrame:
    """Every base backup in the cluster: each node's data directory (made by one) and each backup
    directory under ``base-backups``, with where it starts."""
    need_cluster(cluster)
    rows = []
    sources = [(n.name, n) for n in cluster.nodes]
    bdir = backups_dir(cluster)
    if bdir.is_dir():
        sources += [(str(p), p) for p in sorted(bdir.iterdir()) if p.is_dir()]
    for where, source in sources:
        try:
            label = backup_label(source)
        except LabError:
            continue
        start = start_of(label.to_dict())
        rows.append(dict(where=where, label=label.get("LABEL"), start_lsn=start and start[0],
                         start_wal_file=start and start[1], start_time=label.get("START TIME")))
    return pd.DataFrame(rows, columns=["where", "label", "start_lsn", "start_wal_file", "start_time"])


def clean(cluster) -> str:
    """Remove the backup directories, and the password file once no node connects with it."""
    need_cluster(cluster)
    done = []
    bdir = backups_dir(cluster)
    if bdir.exists():
        for p in sorted(bdir.iterdir()):
            _remove_backup_dir(p) if p.is_dir() else p.unlink()
            done.append(p.name)
        bdir.rmdir()
    gone = _("removed {count} backup(s) ({names})").format(count=len(done), names=", ".join(done)) if done \
        else _("no backups to remove")
    kept = cluster.backend.remove_server_file(cluster.primary.spec, PASSFILE, what=_("password file"))
    return f"{gone}; {kept}"
