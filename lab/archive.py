"""Chapter 10: the WAL archive, point-in-time recovery and cascading replicas.

>>> lab.archive.enable(cluster)                                   # doctest: +SKIP
>>> lab.archive.switch_wal(cluster)                               # doctest: +SKIP
>>> lab.archive.stats(cluster)                                    # doctest: +SKIP
>>> backup = lab.archive.take_backup(cluster)                     # doctest: +SKIP
>>> mistake = lab.archive.make_mistake(cluster)                   # doctest: +SKIP
>>> restored = lab.archive.restore(cluster, "pitr_lsn", backup, mistake, by="lsn")  # doctest: +SKIP

The archive is a directory every node can read and write (``cluster.archive_dir()``: under the
data root locally, a volume shared by the containers with compose).  The primary copies each
finished WAL segment there with ``archive_command``; a server recovering from a base backup, or a
standby that cannot stream, fetches segments back with ``restore_command``.  Every listing of the
archive is made by a server (``pg_ls_dir``), so it reads the directory as the nodes see it on both
backends.  ``tidy`` puts back what the chapter changes; archiving itself is left on.
"""
from __future__ import annotations

import contextlib
import io
import os
import shlex
import shutil
import time
from pathlib import Path

import pandas as pd
from psycopg2 import sql as pgsql

from . import conninfo as libpq
from .backups import backup_label, backups_dir, take_base_backup, tree_size
from .errors import BadArgument, LabError, NotRunning, Text, Timeout, _shown, need_bool, need_choice, need_int, need_number, need_str
from .faults import need_a_node, need_cluster, need_node
from .i18n import _, ngettext
from .node import Node, Role, valid_node_name
from .plots import human_bytes
from .lsn import wal_segment_name
from .slots import checkpoint, lines_after, setting_bytes, slot_of, wal_dir, write_wal
from . import standby
from .standby import RECOVERY_TABLE, wait_replayed

# A wrong directory in archive_command: the archive "breaks" the way a typo in the real command does.
BROKEN_SUBDIR = "no_such_dir"
ARCHIVE_SETTINGS = ("archive_mode", "archive_command", "archive_timeout", "restore_command", "wal_level")
MARK = "archivo"  # the rows this chapter writes into test_replication say so


def _say(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, flush=True)


# --- pure functions ------------------------------------------------------------------------------
def _conf_path(directory: str) -> str:
    """A directory for a shell command PostgreSQL expands: shell-quoted, with ``%`` doubled (PostgreSQL
    replaces ``%f`` and ``%p`` and reads ``%%`` as one ``%``)."""
    need_str(directory, "directory")
    return shlex.quote(directory).replace("%", "%%")


def archive_command(directory: str) -> str:
    """The ``archive_command`` that copies a finished segment into ``directory``, refusing to overwrite
    one already there (an archived segment is never replaced: another server may have written it), and
    succeeding when the file there is identical: after a failover or a rewind a node holds segments
    that another node archived already, and would otherwise retry them for ever.

    >>> archive_command("/var/lib/postgresql/archive")
    'test ! -f /var/lib/postgresql/archive/%f && cp %p /var/lib/postgresql/archive/%f || cmp -s %p /var/lib/postgresql/archive/%f'
    """
    d = _conf_path(directory)
    return f"test ! -f {d}/%f && cp %p {d}/%f || cmp -s %p {d}/%f"


def restore_command(directory: str) -> str:
    """The ``restore_command`` that copies a segment (or a timeline history file) back from ``directory``.

    >>> restore_command("/tmp/my archive")
    "cp '/tmp/my archive'/%f %p"
    """
    return f"cp {_conf_path(directory)}/%f %p"


def file_kind(name: str) -> str:
    """What a file in a WAL archive is, by its name.

    >>> [file_kind(n) for n in ("000000010000000000000003", "00000002.history",
    ...                         "000000010000000000000004.00000028.backup", "000000010000000000000005.partial", "x")]
    ['segment', 'timeline history', 'backup history', 'partial segment', 'other']
    """
    need_str(name, "name", empty=True)
    if len(name) == 24 and all(c in "0123456789ABCDEF" for c in name):
        return "segment"
    if name.endswith(".history") and len(name) == 16:
        return "timeline history"
    if name.endswith(".backup"):
        return "backup history"
    if name.endswith(".partial"):
        return "partial segment"
    return "other"


# --- where the archive is, and what is in it -------------------------------------------------------
def archive_dir(cluster) -> str:
    """The archive directory as the nodes see it (``cluster.archive_dir()``)."""
    return need_cluster(cluster).archive_dir()


def _running(cluster) -> Node:
    """A running node of the physical cluster to read the archive through (the primary first)."""
    for n in [cluster.primary, *cluster.replicas]:
        if n.is_running:
            return n
    raise NotRunning(_("no node of the cluster runs: start it with lab.up(replicas=1)"))


def _primary_running(cluster) -> Node:
    p = need_cluster(cluster).primary
    if not p.is_running:
        raise NotRunning(_("the primary ({name}) is stopped: start it with cluster.start()").format(name=p.name))
    return p


_LIST = """
SELECT f AS name, (pg_stat_file(%(d)s || '/' || f, true)).size AS bytes,
       (pg_stat_file(%(d)s || '/' || f, true)).modification AS modified
  FROM pg_ls_dir(%(d)s, true, false) AS f ORDER BY f
"""


def contents(cluster, kind: "str | None" = None) -> pd.DataFrame:
    """The files in the archive: ``name, kind, bytes, modified`` (read by a running node with
    ``pg_ls_dir``, as the servers see the directory).  ``kind``: only files of that kind
    ('segment', 'timeline history', 'backup history', 'partial segment')."""
    need_cluster(cluster)
    if kind is not None:
        need_choice(kind, "kind", ("segment", "timeline history", "backup history", "partial segment", "other"))
    df = _running(cluster).sql(_LIST, {"d": archive_dir(cluster)}, dbname="postgres")
    df.insert(1, "kind", [file_kind(n) for n in df["name"]])
    if kind is not None:
        df = df[df["kind"] == kind].reset_index(drop=True)
    df["bytes"] = df["bytes"].astype("Int64")
    return df


def archive_bytes(cluster) -> int:
    """The archive's size in bytes (every file in it)."""
    df = contents(cluster)
    return int(df["bytes"].sum()) if len(df) else 0


# --- turning archiving on ----------------------------------------------------------------------
def settings(cluster) -> pd.DataFrame:
    """The archiving settings on every running node: one row per node, a column per setting, and
    ``pending_restart`` naming those changed but waiting for a restart."""
    need_cluster(cluster)
    rows = []
    for n in cluster.nodes:
        if not n.is_running:
            continue
        df = n.sql("SELECT name, current_setting(name) AS value, pending_restart FROM pg_settings "
                   "WHERE name = ANY(%s)", (list(ARCHIVE_SETTINGS),), dbname="postgres").set_index("name")
        row = dict(node=n.name, role=str(n.role))
        row.update({s: df.loc[s, "value"] if s in df.index else None for s in ARCHIVE_SETTINGS})
        row["pending_restart"] = ", ".join(df.index[df["pending_restart"]]) or "-"
        rows.append(row)
    return pd.DataFrame(rows, columns=["node", "role", *ARCHIVE_SETTINGS, "pending_restart"])


def _archiving_nodes(cluster) -> list:
    """The physical cluster's running primary and replicas: a replica archives once it is promoted."""
    return [n for n in cluster.nodes if n.role in (Role.PRIMARY, Role.REPLICA) and n.is_running]


def enable(cluster, restart: bool = False, quiet: bool = False) -> pd.DataFrame:
    """Turn archiving on: ``archive_mode = on`` and the ``archive_command`` that copies into
    ``cluster.archive_dir()``, on the primary and on every replica (a replica archives nothing until
    it is promoted; then it must, or the new timeline's WAL would be missing from the archive), and
    the ``restore_command`` that reads it back: a replica fetches from the archive what it cannot
    stream, a promotion looks there for the timelines already taken, and base backups (hence new
    replicas) carry the setting.

    ``archive_mode`` takes effect only at a restart: with ``restart=False`` the result shows it in
    ``pending_restart``; with ``restart=True`` each node that waits for one is restarted (the
    primary first) and the replicas stream again before this returns.  Safe to run again.
    """
    need_cluster(cluster)
    need_bool(restart, "restart")
    need_bool(quiet, "quiet")
    _primary_running(cluster)
    wanted = dict(archive_mode="on", archive_command=archive_command(archive_dir(cluster)),
                  restore_command=restore_command(archive_dir(cluster)))
    for n in _archiving_nodes(cluster):
        now = n.sql("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (list(wanted),),
                    dbname="postgres").set_index("name")["setting"].to_dict()
        if now != wanted:
            with contextlib.redirect_stdout(io.StringIO()):  # the table shows pending_restart
                n.set(**wanted)
    if restart:
        restart_pending(cluster, quiet=quiet)
    return settings(cluster)


def restart_pending(cluster, quiet: bool = False, timeout: float = 60) -> pd.DataFrame:
    """Restart every running node with a setting waiting for a restart (the primary first), then wait
    until the replicas stream again; the settings afterwards."""
    need_cluster(cluster)
    need_bool(quiet, "quiet")
    timeout = need_number(timeout, "timeout", lo=1, hi=600, unit=_("seconds"))
    nodes = sorted(_archiving_nodes(cluster), key=lambda n: n.role != Role.PRIMARY)
    for n in nodes:
        if n.scalar("SELECT count(*) FROM pg_settings WHERE pending_restart", dbname="postgres"):
            t0 = time.monotonic()
            n.restart()
            _say(quiet, _("{node}: restarted ({seconds:.1f} s)").format(node=n.name, seconds=time.monotonic() - t0))
    if cluster.replicas:
        cluster.wait_streaming(timeout=timeout)
    return settings(cluster)


def is_archiving(cluster) -> bool:
    """Does the primary archive into ``cluster.archive_dir()`` (archive_mode on, the lab's command)?"""
    p = _primary_running(cluster)
    return (p.scalar("SHOW archive_mode", dbname="postgres") in ("on", "always")
            and p.scalar("SHOW archive_command", dbname="postgres") == archive_command(archive_dir(cluster)))


def _need_archiving(cluster) -> Node:
    p = _primary_running(cluster)
    if p.scalar("SHOW archive_mode", dbname="postgres") == "off":
        raise LabError(_("archiving is off on the primary: lab.archive.enable(cluster, restart=True) turns it on"))
    return p


def basic_archive_available(cluster) -> pd.DataFrame:
    """Whether each running node's PostgreSQL has the ``basic_archive`` module (the file
    ``<pkglibdir>/basic_archive.so``), asked where the node runs (the server's own ``pg_config`` view,
    then ``ls`` there)."""
    need_cluster(cluster)
    rows = []
    for n in cluster.nodes:
        if not n.is_running:
            continue
        libdir = n.scalar("SELECT setting FROM pg_config WHERE name = 'PKGLIBDIR'", dbname="postgres")
        found = n.tool("ls", f"{libdir}/basic_archive.so", check=False)
        rows.append(dict(node=n.name, pkglibdir=libdir, basic_archive_so=found.returncode == 0,
                         version=n.scalar("SHOW server_version", dbname="postgres")))
    return pd.DataFrame(rows, columns=["node", "version", "pkglibdir", "basic_archive_so"])


# --- measuring the archiver --------------------------------------------------------------------------
_STATS = """
SELECT a.archived_count, a.last_archived_wal, a.last_archived_time, a.failed_count, a.last_failed_wal,
       a.last_failed_time,
       (SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready') AS ready_files,
       (SELECT count(*) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$') AS pg_wal_files,
       (SELECT count(*) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'
           AND substr(name, 9) < substr(pg_walfile_name(pg_current_wal_lsn()), 9)) AS pg_wal_behind,
       (SELECT coalesce(sum(size), 0) FROM pg_ls_waldir())::bigint AS pg_wal_bytes,
       pg_walfile_name(pg_current_wal_lsn()) AS current_segment
  FROM pg_stat_archiver a
"""


def sample(cluster) -> dict:
    """One measurement on the primary: ``pg_stat_archiver``'s counters, the ``.ready`` files in
    ``pg_wal/archive_status`` (segments finished but not archived yet), ``pg_wal``'s size, and its
    segments older than the one being written (``pg_wal_behind``: kept; the others are recycled
    files waiting for WAL to come)."""
    row = _primary_running(cluster).sql(_STATS, dbname="postgres").iloc[0].to_dict()
    for k in ("archived_count", "failed_count", "ready_files", "pg_wal_files", "pg_wal_behind", "pg_wal_bytes"):
        row[k] = int(row[k])
    return row


def stats(cluster) -> pd.Series:
    """``pg_stat_archiver`` on the primary (archived_count, last_archived_wal, failed_count, ...), with
    the segments waiting to be archived (``ready_files``) and ``pg_wal``'s size."""
    row = sample(cluster)
    row["pg_wal_size"] = human_bytes(row["pg_wal_bytes"])
    return pd.Series(row, name=_("pg_stat_archiver (primary)"), dtype="object")


def _wait_archived(cluster, segment: str, timeout: float) -> float:
    """Seconds until ``segment`` is in the archive (its ``.done`` file, or the archiver reports it
    archived, or later).

    The archiver renames ``.ready`` to ``.done`` a moment before it counts the copy in
    ``pg_stat_archiver``: once the file is done this waits (at most a second) for the count too, so
    that ``stats()`` right after already shows it."""
    t0 = time.monotonic()
    done_at = None
    p = cluster.primary
    conn = p.connect(dbname="postgres")
    try:
        with conn.cursor() as cur:
            while True:
                cur.execute("SELECT last_archived_wal FROM pg_stat_archiver")
                last = cur.fetchone()[0]
                # within a timeline, segment names sort in WAL order
                if last is not None and last[:8] == segment[:8] and last >= segment:
                    return (done_at or time.monotonic()) - t0
                if done_at is None:
                    cur.execute("SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name = %s",
                                (segment + ".done",))
                    if cur.fetchone()[0]:
                        done_at = time.monotonic()
                elif time.monotonic() - done_at > 1:  # counted elsewhere (stats reset, a crash): done is done
                    return done_at - t0
                if time.monotonic() - t0 > timeout:
                    raise Timeout(_("{segment} is not archived {timeout:g} s after its switch: see "
                                    "lab.archive.stats(cluster) (failed_count) and cluster.primary.logs()").format(
                        segment=segment, timeout=timeout))
                time.sleep(0.01)
    finally:
        conn.close()


def switch_wal(cluster, timeout: float = 30) -> pd.Series:
    """Write a row, close the current WAL segment with ``pg_switch_wal()`` and time its arrival in
    the archive: ``segment``, ``switch_lsn``, ``seconds_to_archive``, and the file as the archive lists it."""
    need_cluster(cluster)
    timeout = need_number(timeout, "timeout", lo=0.1, hi=600, unit=_("seconds"))
    p = _need_archiving(cluster)
    conn = p.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO test_replication (mensaje) VALUES (%s)", (f"{MARK}: pg_switch_wal",))
            cur.execute("SELECT pg_switch_wal()::text")
            lsn = cur.fetchone()[0]
            cur.execute("SELECT pg_walfile_name(%s::pg_lsn)", (lsn,))
            segment = cur.fetchone()[0]
    finally:
        conn.close()
    seconds = _wait_archived(cluster, segment, timeout)
    files = contents(cluster)
    row = files[files["name"] == segment]
    return pd.Series(dict(segment=segment, switch_lsn=lsn, seconds_to_archive=round(seconds, 3),
                          in_archive=bool(len(row)), bytes=int(row["bytes"].iloc[0]) if len(row) else None,
                          archive_files=len(files)),
                     name="pg_switch_wal", dtype="object")


# --- break and repair ----------------------------------------------------------------------------
def break_archiving(cluster, timeout: float = 20) -> str:
    """Give the primary an ``archive_command`` with a wrong directory (a typo, as happens): every copy
    fails from now on.  ``repair`` puts the right one back.

    The archiver reads the new command when it gets to the reload, a moment after the sessions do:
    one segment is switched out and this returns once its copy has failed, so that what follows
    measures the broken command only."""
    timeout = need_number(timeout, "timeout", lo=1, hi=600, unit=_("seconds"))
    p = _need_archiving(cluster)
    with contextlib.redirect_stdout(io.StringIO()):  # archive_command needs no restart
        p.set(archive_command=archive_command(f"{archive_dir(cluster)}/{BROKEN_SUBDIR}"))
    failed = sample(cluster)["failed_count"]
    t0 = time.monotonic()
    p.execute("INSERT INTO test_replication (mensaje) VALUES (%s)", (f"{MARK}: broken",))
    p.execute("SELECT pg_switch_wal()", dbname="postgres")
    while sample(cluster)["failed_count"] == failed:
        if time.monotonic() - t0 > timeout:
            raise Timeout(_("no archive copy failed {timeout:g} s after the change: "
                            "see lab.archive.stats(cluster)").format(timeout=timeout))
        time.sleep(0.05)
    return _("{node}: archive_command changed. The primary runs as before; watch "
             "lab.archive.stats(cluster) while it writes WAL").format(node=p.name)


def _frame(rows: list) -> pd.DataFrame:
    cols = ["t_s", "phase", "archived_count", "failed_count", "ready_files", "pg_wal_behind", "pg_wal_files",
            "pg_wal_bytes",
            "current_segment", "last_archived_wal", "last_failed_wal"]
    df = pd.DataFrame(rows)
    df = df[[c for c in cols if c in df.columns]]
    df["t_s"] = df["t_s"].astype(float).round(3)
    return df


def watch_backlog(cluster, segments: int = 4, phase: "str | None" = None, quiet: bool = False) -> pd.DataFrame:
    """Write ``segments`` WAL segments on the primary (a CHECKPOINT after each, so ``pg_wal`` keeps only
    what it must) and sample the archiver before and after each: ``t_s, phase, archived_count,
    failed_count, ready_files, pg_wal_files, pg_wal_bytes, ...``.  ``phase`` labels the rows (None:
    "writing", in the lab's language)."""
    need_cluster(cluster)
    need_int(segments, _("segments (how many 16 MB WAL segments to write)"), lo=1, hi=32)
    phase = _("writing") if phase is None else need_str(phase, "phase", empty=True)
    need_bool(quiet, "quiet")
    _need_archiving(cluster)
    t0 = time.monotonic()
    checkpoint(cluster)
    rows = [dict(t_s=0.0, phase=phase, **sample(cluster))]
    for i in range(1, segments + 1):
        write_wal(cluster, 1, checkpoint_each=True)
        time.sleep(0.2)  # the archiver tries the segment just finished (or fails) meanwhile
        rows.append(dict(t_s=time.monotonic() - t0, phase=phase, **sample(cluster)))
    r = rows[-1]
    _say(quiet, ngettext("{n} segment written: {ready} waiting to be archived, failed_count {failed}, pg_wal {size}",
                         "{n} segments written: {ready} waiting to be archived, failed_count {failed}, pg_wal {size}",
                         segments).format(n=segments, ready=r["ready_files"], failed=r["failed_count"],
                                          size=human_bytes(r["pg_wal_bytes"])))
    return _frame(rows)


def failures(cluster, last: int = 4) -> Text:
    """The primary's last log lines about the failing archive command (its error, and the server's line)."""
    p = _primary_running(cluster)
    need_int(last, "last", lo=1, hi=100)
    lines = [ln for ln in p.logs(2000).splitlines() if "archive command failed" in ln or
             (BROKEN_SUBDIR in ln and "cp:" in ln) or "archiving write-ahead log file" in ln]
    return Text("\n".join(lines[-last:]) if lines
                else _("(no failed archive command in {node}'s log)").format(node=p.name))


def repair(cluster, timeout: float = 60, quiet: bool = False) -> pd.DataFrame:
    """Put the right ``archive_command`` back and sample until every waiting segment is archived (the
    backlog drains), then CHECKPOINT: ``pg_wal`` shrinks back.  Samples as in ``watch_backlog``."""
    need_cluster(cluster)
    timeout = need_number(timeout, "timeout", lo=1, hi=600, unit=_("seconds"))
    need_bool(quiet, "quiet")
    p = _need_archiving(cluster)
    t0 = time.monotonic()
    rows = [dict(t_s=0.0, phase=_("broken"), **sample(cluster))]
    p.set(archive_command=archive_command(archive_dir(cluster)))  # the reload wakes the archiver
    while True:
        r = sample(cluster)
        rows.append(dict(t_s=time.monotonic() - t0, phase=_("repaired, draining"), **r))
        if r["ready_files"] == 0:
            break
        if time.monotonic() - t0 > timeout:
            raise Timeout(ngettext("{n} segment still waits to be archived {timeout:g} s after the repair: "
                                   "see lab.archive.failures(cluster)",
                                   "{n} segments still wait to be archived {timeout:g} s after the repair: "
                                   "see lab.archive.failures(cluster)", r["ready_files"]).format(
                n=r["ready_files"], timeout=timeout))
        time.sleep(0.05)
    drained = rows[-1]["t_s"]
    checkpoint(cluster)
    rows.append(dict(t_s=time.monotonic() - t0, phase=_("drained, after a CHECKPOINT"), **sample(cluster)))
    _say(quiet, _("backlog archived in {seconds:.2f} s; pg_wal {before} → {after}").format(
        seconds=drained, before=human_bytes(rows[0]["pg_wal_bytes"]), after=human_bytes(rows[-1]["pg_wal_bytes"])))
    return _frame(rows)


# --- point-in-time recovery ----------------------------------------------------------------------
BACKUP = "pitr"                         # the base backup this chapter restores from
RESTORE_POINT = "before_the_mistake"    # pg_create_restore_point's name
TARGETS = {"lsn": "recovery_target_lsn", "time": "recovery_target_time", "name": "recovery_target_name"}


def take_backup(cluster, name: str = BACKUP, quiet: bool = False):
    """A base backup of the primary for point-in-time recovery (``lab.backups.take_base_backup``): the
    starting point; the archive holds every change after it.  Archiving must be on, or the WAL written
    after the backup would be lost at the next CHECKPOINT."""
    _need_archiving(cluster)
    return take_base_backup(cluster, name, _("chapter 10: point-in-time recovery"), quiet=quiet)


def make_mistake(cluster, table: str = RECOVERY_TABLE, timeout: float = 30) -> pd.Series:
    """Note where we are (the primary's LSN and clock, and a named restore point), then the mistake:
    ``DROP TABLE table``.  Then the segment holding the DROP is switched out and archived, so that a
    recovery can reach past it.  What was recorded, as a Series: ``target_lsn``, ``target_time``,
    ``restore_point`` (each just before the DROP), ``mistake_lsn`` (just after), the rows the table had."""
    need_str(table, "table", example="'wallets'")
    timeout = need_number(timeout, "timeout", lo=1, hi=600, unit=_("seconds"))
    p = _need_archiving(cluster)
    if not p.scalar("SELECT to_regclass(%s) IS NOT NULL", (table,)):
        raise LabError(_("there is no table {table} on the primary to drop: lab.standby.make_wallets(cluster) "
                         "makes the chapter's one").format(table=table))
    rows = int(p.scalar(pgsql.SQL("SELECT count(*) FROM {}").format(pgsql.Identifier(table))))
    conn = p.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_create_restore_point(%s)::text", (RESTORE_POINT,))
            point_lsn = cur.fetchone()[0]
            cur.execute("SELECT pg_current_wal_lsn()::text, clock_timestamp()::text")
            lsn, at = cur.fetchone()
            time.sleep(0.01)  # the DROP commits strictly after target_time
            cur.execute(pgsql.SQL("DROP TABLE {}").format(pgsql.Identifier(table)))
            cur.execute("SELECT pg_current_wal_lsn()::text")
            after = cur.fetchone()[0]
    finally:
        conn.close()
    switched = switch_wal(cluster, timeout=timeout)
    return pd.Series(dict(table=table, rows_before=rows, restore_point=RESTORE_POINT, restore_point_lsn=point_lsn,
                          target_lsn=lsn, target_time=at, mistake=f"DROP TABLE {table}", mistake_lsn=after,
                          archived_up_to=switched["segment"]), name=_("the mistake"), dtype="object")


def _need_backup(backup) -> Path:
    """``backup`` as the Path of a base backup's directory (what ``take_backup`` returns, or its path as a string)."""
    if isinstance(backup, bool) or not isinstance(backup, (str, os.PathLike)) or not str(os.fspath(backup)).strip() \
            or "\0" in str(os.fspath(backup)) or not (Path(backup) / "PG_VERSION").is_file():
        raise BadArgument(_("backup is the directory of a base backup (what lab.archive.take_backup(cluster) "
                            "returns), not {value}").format(value=_shown(backup)))
    return Path(backup)


def _copy_backup(backup, name: str):
    """A copy of ``backup`` for one restore (``add_standalone`` moves the directory it is given), its
    archiving turned off: a restored copy must not write its own timeline into the cluster's archive."""
    src = Path(backup)
    if not (src / "PG_VERSION").is_file():
        raise LabError(_("{path} is not a base backup: lab.archive.take_backup(cluster) takes one").format(path=src))
    dst = src.with_name(f"{src.name}.{name}")
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, symlinks=True)
    with open(dst / "postgresql.auto.conf", "a") as f:
        f.write("archive_mode = 'off'\n")
    return dst


def _remove_standalone(cluster, name: str) -> bool:
    """Remove the copy an earlier ``restore(cluster, name, ...)`` made (recovered from this cluster's
    archive); any other node of that name is refused, never removed: it may hold a student's work
    (chapter 09's subscriber, a standalone node of their own)."""
    if name in {n.name for n in cluster.nodes}:
        node = cluster.node(name)
        if node.role != Role.STANDALONE:
            raise LabError(_("{name} is this cluster's {role}: pick another name for the restored copy").format(
                name=name, role=node.role))
        if (node.spec.get("recovery") or {}).get("restore_command") != restore_command(archive_dir(cluster)):
            raise LabError(_("{name} is a standalone node that lab.archive.restore did not make: pick another "
                             "name for the restored copy, or remove it first with cluster.remove_node({name!r})").format(
                                 name=name))
        cluster.remove_node(name)
        return True
    return False


def restore(cluster, name: str, backup, mistake: pd.Series, by: str = "lsn", table: "str | None" = None,
            quiet: bool = False) -> pd.Series:
    """Restore a copy of ``backup`` to just before ``mistake`` (``make_mistake``'s Series) as a new
    standalone node ``name``: its WAL comes from the archive (``restore_command``), recovery stops at
    the target (``by``: 'lsn' → recovery_target_lsn, 'time' → recovery_target_time, 'name' →
    recovery_target_name) and the node is promoted (``recovery_target_action = 'promote'``) onto a new
    timeline.  A copy of that name left by an earlier run is removed first (a node restore did not make
    is refused, never removed).  What it took, as a Series:
    the target, the seconds until the node was writable, its timeline, the table's rows on it."""
    need_cluster(cluster)
    need_str(name, "name", example="'pitr_lsn'")
    if not valid_node_name(name):
        raise BadArgument(_("bad node name {name!r:.60}: use lowercase letters, digits and '_', "
                            "starting with a letter (e.g. 'pitr_lsn')").format(name=name))
    backup = _need_backup(backup)
    need_choice(by, "by", tuple(TARGETS))
    need_bool(quiet, "quiet")
    if not isinstance(mistake, pd.Series) or not {"target_lsn", "target_time", "restore_point", "table"} <= set(
            mistake.index):
        raise BadArgument(_("mistake is what lab.archive.make_mistake(cluster) returned"))
    table = mistake["table"] if table is None else need_str(table, "table")
    target = {"lsn": mistake["target_lsn"], "time": mistake["target_time"], "name": mistake["restore_point"]}[by]
    _running(cluster)
    if _remove_standalone(cluster, name):
        _say(quiet, _("{node}: removed the copy an earlier run restored").format(node=name))
    copy = _copy_backup(backup, name)
    recovery = {"restore_command": restore_command(archive_dir(cluster)), TARGETS[by]: target,
                "recovery_target_action": "promote", "recovery_target_timeline": "current"}
    t0 = time.monotonic()
    try:
        node = cluster.add_standalone(name, from_backup=copy, recovery=recovery, quiet=True)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    seconds = time.monotonic() - t0
    node.execute("CHECKPOINT", dbname="postgres")  # so pg_control names the new timeline
    rows = None
    if node.scalar("SELECT to_regclass(%s) IS NOT NULL", (table,)):
        rows = int(node.scalar(pgsql.SQL("SELECT count(*) FROM {}").format(pgsql.Identifier(table))))
    out = dict(node=name, target=TARGETS[by], value=target, seconds_to_writable=round(seconds, 2),
               timeline=int(node.scalar("SELECT timeline_id FROM pg_control_checkpoint()", dbname="postgres")),
               table=table, rows=rows, in_recovery=bool(node.scalar("SELECT pg_is_in_recovery()")))
    have = _("gone") if rows is None else ngettext("{n} row", "{n} rows", rows).format(n=rows)
    _say(quiet, _("{node}: restored to {setting} = {target!s:.40} in {seconds:.1f} s, {table}: {rows}").format(
        node=name, setting=TARGETS[by], target=target, seconds=seconds, table=table, rows=have))
    return pd.Series(out, name=_("restored: {node}").format(node=name), dtype="object")


def timeline(node) -> pd.Series:
    """A node's timeline (``timeline_id`` of ``pg_control_checkpoint()``, after a CHECKPOINT) and the
    history file that records where it branched off (``pg_wal/<timeline>.history``, read with
    ``pg_read_file``)."""
    need_a_node(node)
    # pg_control names a new timeline only after the next checkpoint (a restartpoint on a standby)
    node.execute("CHECKPOINT", dbname="postgres")
    tli = int(node.scalar("SELECT timeline_id FROM pg_control_checkpoint()", dbname="postgres"))
    name = f"{tli:08X}.history"
    history = None
    if tli > 1:
        history = node.scalar("SELECT pg_read_file('pg_wal/' || %s, 0, 10000, true)", (name,), dbname="postgres")
    return pd.Series(dict(node=node.name, timeline_id=tli, history_file=name if history is not None else None,
                          history=(history or "").strip() or None),
                     name=_("{node}: timeline").format(node=node.name), dtype="object")


def copy_back(cluster, source: str, table: str = RECOVERY_TABLE) -> pd.DataFrame:
    """Copy a table that is gone from the primary back from node ``source`` (a restored copy), with
    chapter 04's ``lab.standby.recover_table``: its columns, constraints and rows read in one snapshot,
    then created and filled on the primary in one transaction.  One row; ``seconds``."""
    return standby.recover_table(cluster, source, table)


def _data_bytes(node: Node) -> int:
    """A server's databases and WAL on disk, as it reports them."""
    return int(node.scalar("SELECT (SELECT sum(pg_database_size(oid)) FROM pg_database) + "
                           "(SELECT coalesce(sum(size), 0) FROM pg_ls_waldir())", dbname="postgres"))


def compare_with_delayed(cluster, backup, restores, copied: "pd.DataFrame | None" = None) -> pd.DataFrame:
    """Chapter 04's delayed replica against a base backup + the archive, measured here: how far back
    each reaches, what it costs (a running server's data vs the backup's and the archive's bytes), and
    the time to get the data back (a restore's seconds, plus the copy's, ``copied``: ``copy_back``'s row)."""
    need_cluster(cluster)
    if isinstance(restores, pd.Series):
        restores = [restores]
    if not isinstance(restores, (list, tuple)) or not restores or not all(
            isinstance(r, pd.Series) and isinstance(r.get("seconds_to_writable"), (int, float)) for r in restores):
        raise BadArgument(_("restores is restore()'s Series, or a list of them"))
    backup = _need_backup(backup)
    if copied is not None and not (isinstance(copied, pd.DataFrame) and (
            copied.empty or ("seconds" in copied and pd.api.types.is_numeric_dtype(copied["seconds"])))):
        raise BadArgument(_("copied is what lab.archive.copy_back(cluster, ...) returned, or None"))
    replica = next((r for r in cluster.replicas if r.is_running), None)
    if replica is None:
        raise NotRunning(_("no replica runs: lab.up(replicas=1) starts one (its size stands for a delayed replica's)"))
    label = backup_label(backup)
    start = label.get("START TIME")
    copy_s = float(copied["seconds"].iloc[0]) if isinstance(copied, pd.DataFrame) and len(copied) else 0.0
    restore_s = min(float(r["seconds_to_writable"]) for r in restores)
    delayed_bytes = _data_bytes(replica)
    b_bytes, a_bytes = tree_size(backup), archive_bytes(cluster)
    return pd.DataFrame([
        dict(method=_("delayed replica (chapter 04)"),
             reaches_back=_("recovery_min_apply_delay (5 s there), and only if you pause it in time"),
             keeps=_("a running server"), bytes=delayed_bytes, size=human_bytes(delayed_bytes),
             seconds_to_data=round(copy_s, 2)),
        dict(method=_("base backup + WAL archive"),
             reaches_back=_("any moment since the backup started ({start})").format(start=start),
             keeps=_("files: the backup and every segment since"), bytes=b_bytes + a_bytes,
             size=_("{backup} backup + {archive} archive").format(backup=human_bytes(b_bytes),
                                                                  archive=human_bytes(a_bytes)),
             seconds_to_data=round(restore_s + copy_s, 2)),
    ])


# --- a standby fed from the archive --------------------------------------------------------------
def _archive_only_replica(cluster, name: str, retry: str, quiet: bool) -> Node:
    """A replica that never streams: ``add_replica(name)``, then ``primary_conninfo = ''`` (no
    walreceiver) and ``restore_command`` (the archive), reloaded; its slot on the primary is dropped
    (nothing would ever read it, and it would keep WAL for ever).  ``retry`` is its
    ``wal_retrieve_retry_interval``: how long it waits before asking the archive again for a segment
    that is not there yet (5 s by default)."""
    node = cluster.add_replica(name, quiet=quiet)
    with contextlib.redirect_stdout(io.StringIO()):  # no setting here needs a restart
        node.set(primary_conninfo="", primary_slot_name="", restore_command=restore_command(archive_dir(cluster)),
                 wal_retrieve_retry_interval=retry)
    _drop_slot(cluster, name)
    deadline = time.monotonic() + 10
    while node.scalar("SELECT count(*) FROM pg_stat_wal_receiver", dbname="postgres"):
        if time.monotonic() > deadline:
            raise Timeout(_("{node} still streams 10 s after primary_conninfo = '': see its logs()").format(node=name))
        time.sleep(0.05)
    _say(quiet, _("{node}: streams from nobody; replays what it finds in the archive").format(node=name))
    return node


def _drop_slot(cluster, slot: str, timeout: float = 10) -> None:
    p = _primary_running(cluster)
    deadline = time.monotonic() + timeout
    while True:
        try:
            p.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                      (slot,), dbname="postgres")
            return
        except LabError as e:  # still active for a moment after the walreceiver ends
            if "is active" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _visible_after(cluster, node: Node, switch: bool, timeout: float) -> "float | None":
    """Insert a row on the primary (then ``pg_switch_wal()`` if ``switch``); seconds until ``node``
    shows it, or None after ``timeout``."""
    p = _primary_running(cluster)
    conn = p.connect()
    watch = node.connect()
    try:
        with conn.cursor() as cur, watch.cursor() as wcur:
            cur.execute("INSERT INTO test_replication (mensaje) VALUES (%s) RETURNING id", (f"{MARK}: visible?",))
            row_id = cur.fetchone()[0]
            t0 = time.monotonic()
            if switch:
                cur.execute("SELECT pg_switch_wal()")
            while True:
                wcur.execute("SELECT 1 FROM test_replication WHERE id = %s", (row_id,))
                if wcur.fetchone():
                    return time.monotonic() - t0
                if time.monotonic() - t0 > timeout:
                    return None
                time.sleep(0.01)
    finally:
        conn.close()
        watch.close()


def archive_lag(cluster, timeout: float = 8, archive_timeout: str = "2s", retry: str = "1s",
                name: str = "from_archive", quiet: bool = False) -> pd.DataFrame:
    """How long a row takes to show on a replica fed only from the archive, three ways: the row alone
    (its segment is not finished, so it is not archived: nothing within ``timeout``); the row then
    ``pg_switch_wal()`` (the segment is closed and archived at once); the row with ``archive_timeout``
    set on the primary (the primary switches segments by itself after that long).

    The replica (``name``) is made for the measurement and removed after it, even if it fails: a
    replica that streams from nobody is not the lab's standard layout (``lab.up`` would try to
    repair it).  ``retry`` is its ``wal_retrieve_retry_interval``.  The primary's
    ``archive_timeout`` is reset afterwards.  One row per way, with the segments the replica had
    restored from the archive by then."""
    need_cluster(cluster)
    timeout = need_number(timeout, "timeout", lo=1, hi=120, unit=_("seconds"))
    need_str(archive_timeout, "archive_timeout", example="'2s'")
    need_str(retry, "retry", example="'1s'")
    need_str(name, "name", example="'from_archive'")
    need_bool(quiet, "quiet")
    p = _need_archiving(cluster)
    if name in {n.name for n in cluster.nodes}:
        old = cluster.node(name)
        if old.role != Role.REPLICA or (old.is_running and old.scalar("SHOW primary_conninfo", dbname="postgres")):
            raise LabError(_("{name} is a node of this cluster already: pick another name for the replica "
                             "fed from the archive").format(name=name))
        cluster.remove_node(name)  # left by an interrupted run: it streamed from nobody
    node = _archive_only_replica(cluster, name, retry, quiet)
    rows = []

    def measure(how, switch, setting="0"):
        s = _visible_after(cluster, node, switch=switch, timeout=timeout)
        restored = sum("restored log file" in ln for ln in node.logs(5000).splitlines())
        rows.append(dict(how=how, archive_timeout=setting, visible=s is not None,
                         seconds=float("nan") if s is None else round(s, 2), segments_restored=restored))
        seen = (_("not visible after {seconds:g} s").format(seconds=timeout) if s is None
                else _("visible after {seconds:.2f} s").format(seconds=s))
        _say(quiet, f"{how}: {seen}")

    try:
        measure(_("a row, nothing else"), switch=False)
        measure(_("a row, then pg_switch_wal()"), switch=True)
        with contextlib.redirect_stdout(io.StringIO()):
            p.set(archive_timeout=archive_timeout)
        try:
            # the first forced switch comes archive_timeout after the last switch: start on a fresh segment
            _visible_after(cluster, node, switch=True, timeout=timeout)
            measure(_("a row, archive_timeout = {value}").format(value=archive_timeout), switch=False,
                    setting=archive_timeout)
        finally:
            with contextlib.redirect_stdout(io.StringIO()):
                p.set(archive_timeout=None)
    finally:
        cluster.remove_node(name)
    df = pd.DataFrame(rows)
    df["wal_retrieve_retry_interval"] = retry
    return df


def replica_without_slot(cluster, name: str = "no_slot", quiet: bool = False) -> Node:
    """A replica made from a plain base backup (``lab.backups.take_base_backup``: no slot, as chapter 03's
    ``replica_manual``): the primary keeps no WAL for it beyond ``wal_keep_size``.  It has the
    primary's ``restore_command`` (the backup copies its settings).  The same name again gives it back."""
    need_cluster(cluster)
    need_str(name, "name", example="'no_slot'")
    need_bool(quiet, "quiet")
    _need_archiving(cluster)
    if name in {n.name for n in cluster.nodes}:
        return cluster.add_replica(name, quiet=quiet)
    path = take_base_backup(cluster, name, _("chapter 10: a replica without a slot"), quiet=True)
    return cluster.add_replica(name, from_backup=path, quiet=quiet)


def outrun(cluster, replica: str = "no_slot", segments: int = 4, timeout: float = 60,
           quiet: bool = False) -> pd.Series:
    """Chapter 03's lost WAL, with the archive: stop a replica without a slot, write ``segments`` WAL
    segments and CHECKPOINT until the primary has removed the first one the replica needs, then start
    it and time its catch-up.  It fetches what the primary lost from the archive (``restored log
    file ... from archive`` in its log), then streams again.  Needs ``wal_keep_size`` small on the
    primary, as ``lab.slots.lose_wal`` does."""
    node = need_node(need_cluster(cluster), replica, "replica")
    need_int(segments, _("segments (how many 16 MB WAL segments to write)"), lo=2, hi=32)
    timeout = need_number(timeout, "timeout", lo=1, hi=600, unit=_("seconds"))
    need_bool(quiet, "quiet")
    p = _need_archiving(cluster)
    if node.role != Role.REPLICA or not node.is_running:
        raise LabError(_("{node} is not a running replica: lab.archive.replica_without_slot(cluster) makes one").format(
            node=node.name))
    if slot_of(node):
        raise LabError(_("{node} streams through a slot: the primary keeps its WAL; use a replica without one "
                         "(lab.archive.replica_without_slot(cluster))").format(node=node.name))
    if not node.scalar("SHOW restore_command", dbname="postgres"):
        raise LabError(_("{node} has no restore_command: set it, "
                         "cluster.node({node!r}).set(restore_command=...)").format(node=node.name))
    seg = setting_bytes(p, "wal_segment_size")
    if setting_bytes(p, "wal_keep_size") >= (segments - 1) * seg:
        raise LabError(_("the primary keeps wal_keep_size of WAL for any replica, more than the segments written: "
                         "set cluster.primary.set(wal_keep_size=0) first"))
    cluster.wait_replayed(timeout=timeout)
    stopped_at = node.scalar("SELECT pg_last_wal_replay_lsn()::text", dbname="postgres")
    tli = int(p.scalar("SELECT timeline_id FROM pg_control_checkpoint()", dbname="postgres"))
    needs = wal_segment_name(stopped_at, tli, seg)
    before = node.logs(3000).splitlines()
    marker = before[-1] if before else None
    node.stop()
    write_wal(cluster, segments)
    for _i in range(4):
        cluster.wait_replayed(timeout=timeout)  # the other replicas' slots let go of the WAL
        checkpoint(cluster)
        oldest = wal_dir(p)["oldest"]
        if oldest is None or oldest > needs:
            break
        write_wal(cluster, 1)
    target = p.scalar("SELECT pg_current_wal_lsn()::text", dbname="postgres")
    _say(quiet, _("{node} stopped at {lsn} (needs {needs}); the primary's oldest segment is now {oldest}").format(
        node=node.name, lsn=stopped_at, needs=needs, oldest=oldest))
    t0 = time.monotonic()
    node.start()
    wait_replayed(p, node, timeout=timeout, lsn=target)
    seconds = time.monotonic() - t0
    lines = lines_after(node.logs(3000), marker)
    restored = [ln for ln in lines if "restored log file" in ln]
    receiver = node.scalar("SELECT status FROM pg_stat_wal_receiver", dbname="postgres")
    _say(quiet, ngettext("{node}: caught up in {seconds:.1f} s, {n} segment from the archive",
                         "{node}: caught up in {seconds:.1f} s, {n} segments from the archive", len(restored)).format(
        node=node.name, seconds=seconds, n=len(restored)))
    return pd.Series(dict(replica=node.name, stopped_at_lsn=stopped_at, needs_segment=needs,
                          oldest_segment_on_primary=oldest, segments_from_archive=len(restored),
                          seconds_to_catch_up=round(seconds, 2), walreceiver=receiver or _("not yet"),
                          first_restore=restored[0][restored[0].find("LOG:"):] if restored else None),
                     name="outrun", dtype="object")


# --- cascading replication --------------------------------------------------------------------------
def add_cascade(cluster, name: str = "replica2", upstream: str = "replica1", quiet: bool = False) -> Node:
    """A replica of a replica: ``cluster.add_replica(name, upstream=upstream)`` (its base backup taken
    from ``upstream``, its slot there).  The same name again gives it back."""
    need_cluster(cluster)
    need_str(name, "name", example="'replica2'")
    need_str(upstream, "upstream", example="'replica1'")
    return cluster.add_replica(name, upstream=upstream, quiet=quiet)


_FEEDS = """
SELECT pg_is_in_recovery() AS in_recovery,
       (SELECT timeline_id FROM pg_control_checkpoint()) AS timeline,
       (SELECT array_agg(application_name ORDER BY application_name) FROM pg_stat_replication
         WHERE state = 'streaming') AS sends_to,
       (SELECT status FROM pg_stat_wal_receiver) AS walreceiver,
       (SELECT received_tli FROM pg_stat_wal_receiver) AS received_timeline,
       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text AS lsn
"""


def cascade(cluster) -> pd.DataFrame:
    """Who streams from whom, asked of every node of the physical cluster: its role, timeline, the node
    it streams from (the one whose ``pg_stat_replication`` lists it), the standbys it sends WAL to,
    its own walreceiver's state, its LSN (replayed on a standby)."""
    need_cluster(cluster)
    rows = []
    for n in cluster.nodes:
        if n.role == Role.STANDALONE:
            continue
        row = dict(node=n.name, role=str(n.role), running=n.is_running)
        if n.is_running:
            r = n.sql(_FEEDS, dbname="postgres").iloc[0].to_dict()
            r["sends_to"] = list(r["sends_to"] or [])
            row.update(r)
        rows.append(row)
    senders = {name: r["node"] for r in rows for name in r.get("sends_to") or []}
    for r in rows:
        r["streams_from"] = senders.get(r["node"], "-" if r.get("in_recovery") else None)
        r["sends_to"] = ", ".join(r.get("sends_to") or []) or "-"
        if r.get("timeline") is not None:
            r["timeline"] = int(r["timeline"])
    cols = ["node", "role", "running", "timeline", "streams_from", "sends_to", "walreceiver", "received_timeline",
            "lsn"]
    return pd.DataFrame(rows).reindex(columns=cols)


def hop_lag(cluster, hops=("replica1", "replica2"), samples: int = 20, timeout: float = 5) -> pd.DataFrame:
    """Time for a new row to become visible on each node of a chain: ``samples`` rows inserted on the
    primary one at a time, each watched for on every node of ``hops`` (in order) through open
    connections.  One row per sample: ``seconds`` to each node, and the time each hop added."""
    need_cluster(cluster)
    need_int(samples, "samples", lo=1, hi=500)
    timeout = need_number(timeout, "timeout", lo=0.1, hi=60, unit=_("seconds"))
    if isinstance(hops, str) or not isinstance(hops, (list, tuple)) or not hops:
        raise BadArgument(_("hops is a list of node names in streaming order, e.g. ['replica1', 'replica2']"))
    nodes = [need_node(cluster, h, "hop") for h in hops]
    for n in nodes:
        if not n.is_running:
            raise NotRunning(_("{name} is stopped: start it with cluster.node({name!r}).start()").format(name=n.name))
    p = _primary_running(cluster)
    conn = p.connect()
    watchers = [n.connect() for n in nodes]
    out = []
    try:
        with conn.cursor() as cur:
            curs = [w.cursor() for w in watchers]
            for i in range(samples):
                cur.execute("INSERT INTO test_replication (mensaje) VALUES (%s) RETURNING id",
                            (f"{MARK}: hop {i + 1}/{samples}",))
                row_id = cur.fetchone()[0]
                t0 = time.monotonic()
                seen = {}
                while len(seen) < len(nodes):
                    for n, c in zip(nodes, curs):
                        if n.name in seen:
                            continue
                        c.execute("SELECT 1 FROM test_replication WHERE id = %s", (row_id,))
                        if c.fetchone():
                            seen[n.name] = time.monotonic() - t0
                    if time.monotonic() - t0 > timeout:
                        break
                row = dict(sample=i + 1)
                prev = 0.0
                for n in nodes:
                    s = seen.get(n.name)
                    row[f"to_{n.name}_ms"] = None if s is None else s * 1000
                    row[f"hop_{n.name}_ms"] = None if s is None or prev is None else (s - prev) * 1000
                    prev = s
                out.append(row)
                time.sleep(0.02)
    finally:
        conn.close()
        for w in watchers:
            w.close()
    return pd.DataFrame(out).astype(float).round(2).astype({"sample": int})


def hop_summary(samples: pd.DataFrame) -> pd.DataFrame:
    """``hop_lag``'s samples summed up per hop: median, min, max (ms), and how many samples saw the row."""
    if not isinstance(samples, pd.DataFrame) or not any(c.startswith("hop_") for c in samples.columns):
        raise BadArgument(_("samples is what lab.archive.hop_lag(cluster) returned"))
    rows = []
    prev = "primary"
    for col in [c for c in samples.columns if c.startswith("hop_")]:
        name = col[len("hop_"):-len("_ms")]
        v = samples[col].dropna()
        rows.append(dict(hop=f"{prev} → {name}", median_ms=round(float(v.median()), 2) if len(v) else None,
                         min_ms=round(float(v.min()), 2) if len(v) else None,
                         max_ms=round(float(v.max()), 2) if len(v) else None, samples=len(v)))
        prev = name
    return pd.DataFrame(rows)


def visible_on(cluster, nodes=("replica1", "replica2"), timeout: float = 3) -> pd.DataFrame:
    """Insert one row on the primary and wait up to ``timeout`` s for it on each node: ``visible``,
    ``seconds`` (NaN if it never showed)."""
    need_cluster(cluster)
    timeout = need_number(timeout, "timeout", lo=0.1, hi=60, unit=_("seconds"))
    if isinstance(nodes, str) or not isinstance(nodes, (list, tuple)) or not nodes:
        raise BadArgument(_("nodes is a list of node names, e.g. ['replica1', 'replica2']"))
    rows = []
    for name in nodes:
        n = need_node(cluster, name, "node")
        if not n.is_running:
            rows.append(dict(node=n.name, visible=False, seconds=float("nan"), why=_("stopped")))
            continue
        s = _visible_after(cluster, n, switch=False, timeout=timeout)
        rows.append(dict(node=n.name, visible=s is not None, seconds=float("nan") if s is None else round(s, 3),
                         why="" if s is not None else _("not within {seconds:g} s").format(seconds=timeout)))
    return pd.DataFrame(rows)


def stream_from_primary(cluster, name: str = "replica2") -> pd.DataFrame:
    """Point a cascading replica whose upstream is gone at the primary, as you would by hand:
    ``ALTER SYSTEM SET primary_conninfo`` to the primary's address (the rest of its connection string
    kept) and no slot (``primary_slot_name = ''``), then a reload: the walreceiver reconnects."""
    need_cluster(cluster)
    node = need_node(cluster, name, "replica")
    if node.role != Role.REPLICA or not node.is_running:
        raise LabError(_("{node} is not a running replica").format(node=node.name))
    p = _primary_running(cluster)
    current = libpq.parse(node.scalar("SHOW primary_conninfo", dbname="postgres") or "")
    if not current:
        raise LabError(_("{node} has no primary_conninfo: it streams from nobody").format(node=node.name))
    where = libpq.parse(cluster.conninfo_from(node.name, p.name))
    new = libpq.make(**{**current, "host": where["host"], "port": where["port"]})
    with contextlib.redirect_stdout(io.StringIO()):
        node.set(primary_conninfo=new, primary_slot_name="")
    deadline = time.monotonic() + 15
    while node.scalar("SELECT status FROM pg_stat_wal_receiver", dbname="postgres") != "streaming":
        if time.monotonic() > deadline:
            raise Timeout(_("{node} does not stream from {primary} 15 s after the change: see its logs()").format(
                node=node.name, primary=p.name))
        time.sleep(0.05)
    return cascade(cluster)


# --- leaving the cluster as the chapter found it -------------------------------------------------------
CHAPTER_NODES = ("pitr_lsn", "pitr_time", "pitr_name", "from_archive", "no_slot", "replica2")
_RESET = ("archive_mode", "archive_command", "restore_command", "archive_timeout", "wal_keep_size",
          "wal_retrieve_retry_interval")


def tidy(cluster, archiving: bool = False, quiet: bool = False) -> Text:
    """Undo what this chapter changes: the nodes it adds are removed (restored copies, the
    archive-only replica, the replica without a slot, the cascade), the table ``wallets`` dropped, its
    base backups removed, and (unless ``archiving=True``) archiving turned off again on every node
    (a restart) and the archive emptied.  Safe to run at any time; says what it did."""
    need_cluster(cluster)
    need_bool(archiving, "archiving")
    need_bool(quiet, "quiet")
    done = []
    names = {n.name for n in cluster.nodes}
    for name in CHAPTER_NODES:
        if name in names and cluster.node(name).role in (Role.STANDALONE, Role.REPLICA):
            cluster.remove_node(name)
            done.append(_("removed {node}").format(node=name))
    p = _primary_running(cluster)
    for slot in CHAPTER_NODES:
        if p.scalar("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s AND NOT active", (slot,),
                    dbname="postgres"):
            _drop_slot(cluster, slot)
            done.append(_("dropped slot {slot}").format(slot=slot))
    if p.scalar("SELECT to_regclass(%s) IS NOT NULL", (RECOVERY_TABLE,)):
        p.execute(pgsql.SQL("DROP TABLE {}").format(pgsql.Identifier(RECOVERY_TABLE)))
        done.append(_("dropped table {table}").format(table=RECOVERY_TABLE))
    bdir = backups_dir(cluster)
    for b in (BACKUP, "no_slot"):
        for path in sorted(bdir.glob(f"{b}*")) if bdir.is_dir() else []:
            shutil.rmtree(path, ignore_errors=True)
            done.append(_("removed backup {name}").format(name=path.name))
    if not archiving:
        for n in _archiving_nodes(cluster):
            changed = n.sql("SELECT name FROM pg_settings WHERE name = ANY(%s) AND sourcefile LIKE "
                            "'%%postgresql.auto.conf'", (list(_RESET),), dbname="postgres")["name"].tolist()
            if changed:
                with contextlib.redirect_stdout(io.StringIO()):
                    n.set(**{c: None for c in changed})
                done.append(_("{node}: reset {settings}").format(node=n.name, settings=", ".join(changed)))
        if any(n.scalar("SELECT count(*) FROM pg_settings WHERE pending_restart", dbname="postgres")
               for n in _archiving_nodes(cluster)):
            restart_pending(cluster, quiet=True)
            done.append(_("restarted the nodes: archive_mode is off"))
        emptied = _empty_archive(cluster)
        if emptied:
            done.append(ngettext("emptied the archive ({n} file)", "emptied the archive ({n} files)", emptied).format(
                n=emptied))
    text = "\n".join(done) if done else _("nothing to tidy: the cluster is as the chapter found it")
    return Text(text)


def _empty_archive(cluster) -> int:
    """Remove every file from the archive, as the server user where the nodes run; how many there were."""
    n = len(contents(cluster))
    if n:
        d = archive_dir(cluster)
        _running(cluster).tool("find", d, "-mindepth", "1", "-delete")
    return n
