"""Replication slots: the WAL they keep on the primary, and what happens without them.

>>> lab.slots.slot_table(cluster)                                   # doctest: +SKIP
>>> df = lab.slots.retention_while_stopped(cluster, "replica1")     # doctest: +SKIP
>>> lab.slots.plot_retention(df)                                    # doctest: +SKIP
>>> lab.slots.drop_slot(cluster, "forgotten")                       # doctest: +SKIP
"dropped slot 'forgotten' (it held 96.0 MB of WAL)"
>>> lab.slots.slot_dashboard(cluster)                               # doctest: +SKIP

WAL is generated cheaply: a one-row INSERT, then ``pg_switch_wal()`` closes the current 16 MB
segment, so each step moves the primary one whole segment ahead; a ``CHECKPOINT`` then removes
(or recycles) the segments nobody needs any more.  The dashboard's buttons only wire the plain
functions ``slot_table`` and ``drop_slot``, which tests call directly.
"""
from __future__ import annotations

import html
import re
import time

import ipywidgets as w
import pandas as pd
import psycopg2
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from . import plots  # noqa: F401 (shows Figures as pictures in notebooks)
from .errors import BadArgument, LabError, NotRunning, Text, Timeout, need_bool, need_int, need_number, need_str
from .faults import need_a_node, need_cluster, need_node
from .i18n import _
from .lsn import parse_lsn, wal_segment_name
from .node import Node, Role
from .plots import human_bytes
from .wal import segment_number, segment_size
from .widgets import show_table

WAL_GONE = "has already been removed"  # PostgreSQL's "requested WAL segment ... has already been removed"
FILLER = "relleno de WAL"  # the rows write_wal inserts into test_replication

_SLOTS = """
SELECT s.slot_name, s.slot_type, s.active, s.active_pid, r.application_name AS consumer,
       s.wal_status, s.restart_lsn::text AS restart_lsn,
       pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint AS retained_bytes,
       s.safe_wal_size
  FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
 ORDER BY s.slot_name
"""

_SAMPLE = """
SELECT pg_current_wal_lsn()::text AS current_lsn,
       s.active, s.wal_status, s.restart_lsn::text AS restart_lsn,
       pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint AS retained_bytes,
       s.safe_wal_size,
       (SELECT sum(size) FROM pg_ls_waldir())::bigint AS pg_wal_bytes,
       (SELECT array_agg(name ORDER BY name) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$') AS wal_files,
       pg_size_bytes(current_setting('wal_segment_size')) AS segment_size
  FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots s ON s.slot_name = %s
"""


def split_wal_files(names, current_lsn, segment_size: int = 16 << 20) -> tuple:
    """(behind, ahead): how many WAL files come before the segment ``current_lsn`` is in, and after it.

    >>> split_wal_files(["000000010000000000000002", "000000010000000000000003", "000000010000000000000005"],
    ...                 "0/3000060")
    (1, 1)
    """
    if names is not None and (not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names)):
        raise BadArgument(_("names is a list of WAL file names, not {type}").format(type=type(names).__name__))
    need_int(segment_size, _("segment_size (bytes)"), lo=1 << 20, hi=1 << 30)
    if parse_lsn(current_lsn) is None:
        raise BadArgument(_("current_lsn is an LSN like '0/3000060', not None"))
    current = parse_lsn(current_lsn) // segment_size
    segs = [segment_number(n, segment_size) for n in names or []]
    return sum(s < current for s in segs), sum(s > current for s in segs)


def _human(n) -> str:
    return human_bytes(n)


def _say(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, flush=True)


def _every(n: int) -> set:
    """Which steps of ``n`` to report: a few lines, never one per step."""
    step = max(1, -(-n // 3))
    return {i for i in range(1, n + 1) if i % step == 0} | {1, n}


# --- looking -------------------------------------------------------------------------------
def slot_table(cluster) -> pd.DataFrame:
    """Every replication slot on the primary: who uses it, its WAL status and how much WAL it keeps.

    ``consumer`` is the replica streaming through it (empty when nobody is); ``retained_bytes``
    is ``pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)``: WAL the primary may not remove.
    """
    need_cluster(cluster)
    df = cluster.primary.sql(_SLOTS, dbname="postgres")
    for col in ("active_pid", "retained_bytes", "safe_wal_size"):
        df[col] = df[col].astype("Int64")
    df.insert(df.columns.get_loc("retained_bytes") + 1, "retained",
              [_human(v) if pd.notna(v) else None for v in df["retained_bytes"]])
    return df


def inactive_slots(cluster) -> pd.DataFrame:
    """``pg_replication_slots WHERE NOT active``, and whether a (stopped) node of this cluster owns each.

    A slot nobody owns is a forgotten slot: it keeps WAL for a replica that will never come.
    """
    need_cluster(cluster)
    df = cluster.primary.sql("SELECT slot_name, wal_status, restart_lsn::text AS restart_lsn, "
                             "pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS retained_bytes "
                             "FROM pg_replication_slots WHERE NOT active ORDER BY slot_name", dbname="postgres")
    df["retained_bytes"] = df["retained_bytes"].astype("Int64")
    df["retained"] = [_human(v) if pd.notna(v) else None for v in df["retained_bytes"]]
    owners = {n.name: n for n in cluster.replicas}
    df["owner"] = [_("{node} (stopped)").format(node=s) if s in owners and not owners[s].is_running else
                   (s if s in owners else None) for s in df["slot_name"]]
    return df


def wal_dir(node: Node) -> pd.Series:
    """``pg_wal`` of a node: its WAL files and their size, split at the segment being written.

    ``behind``: files before the current segment (kept for a slot, ``wal_keep_size`` or the last
    checkpoint); ``ahead``: files already recycled (renamed) for the WAL still to come.
    """
    need_a_node(node)
    r = node.sql("SELECT name, size FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$' ORDER BY name",
                 dbname="postgres")
    lsn = node.scalar("SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() "
                      "ELSE pg_current_wal_insert_lsn() END::text", dbname="postgres")
    seg = segment_size(node)
    tli = int(node.scalar("SELECT timeline_id FROM pg_control_checkpoint()", dbname="postgres"))
    names = r["name"].tolist()
    behind, ahead = split_wal_files(names, lsn, seg) if lsn else (None, None)
    out = dict(files=len(names), bytes=int(r["size"].sum()) if len(r) else 0, behind=behind,
               current=wal_segment_name(lsn, tli, seg) if lsn else None, ahead=ahead,
               oldest=names[0] if names else None, newest=names[-1] if names else None)
    out["size"] = _human(out["bytes"])
    return pd.Series(out, name=f"{node.name}: pg_wal", dtype="object")


_WAL_SETTINGS = ("wal_keep_size", "max_slot_wal_keep_size")


def wal_settings(cluster) -> pd.DataFrame:
    """``wal_keep_size`` and ``max_slot_wal_keep_size`` on every running node, and where each comes from:
    ``set_by_alter_system`` is true when ``postgresql.auto.conf`` (ALTER SYSTEM, ``node.set``) sets it."""
    need_cluster(cluster)
    rows = []
    for n in cluster.nodes:
        if not n.is_running:
            continue
        for r in n.settings(*_WAL_SETTINGS).itertuples():
            value = r.setting if r.setting == "-1" else f"{r.setting}{r.unit or ''}"
            rows.append(dict(node=n.name, setting=r.name, value=value, source=r.source,
                             set_by_alter_system=bool(r.set_by_alter_system)))
    return pd.DataFrame(rows, columns=["node", "setting", "value", "source", "set_by_alter_system"])


def sample(cluster, slot: "str | None" = None) -> dict:
    """One measurement on the primary: its current LSN, the slot's state and retained WAL, pg_wal's size."""
    need_cluster(cluster)
    if slot is not None:
        need_str(slot, _("slot (a slot's name, or None)"))
    row = cluster.primary.sql(_SAMPLE, (slot,), dbname="postgres").iloc[0].to_dict()
    row["slot"] = slot
    files = row.pop("wal_files") or []
    row["pg_wal_files"] = len(files)
    row["pg_wal_behind"], row["pg_wal_ahead"] = split_wal_files(files, row["current_lsn"], int(row.pop("segment_size")))
    for k in ("retained_bytes", "safe_wal_size", "pg_wal_bytes"):
        row[k] = None if pd.isna(row[k]) else int(row[k])
    row["active"] = None if pd.isna(row["active"]) else bool(row["active"])
    return row


def _frame(rows: list) -> pd.DataFrame:
    cols = ["t_s", "phase", "slot", "active", "wal_status", "restart_lsn", "current_lsn", "retained_bytes",
            "safe_wal_size", "pg_wal_bytes", "pg_wal_files", "pg_wal_behind", "pg_wal_ahead"]
    df = pd.DataFrame(rows)
    df = df[[c for c in cols if c in df.columns] + [c for c in df.columns if c not in cols]]
    for col in ("retained_bytes", "safe_wal_size", "pg_wal_bytes", "pg_wal_files", "pg_wal_behind", "pg_wal_ahead"):
        if col in df:
            df[col] = df[col].astype("Int64")
    df["t_s"] = df["t_s"].astype(float).round(3)
    return df


# --- doing ---------------------------------------------------------------------------------
def _primary_running(cluster) -> Node:
    p = need_cluster(cluster).primary
    if not p.is_running:
        raise NotRunning(_("the primary ({name}) is stopped: start it with cluster.start()").format(name=p.name))
    return p


def create_slot(cluster, name: str) -> str:
    """``SELECT pg_create_physical_replication_slot(name, true)`` (``true``: reserve WAL from now on).

    A one-line message; an existing slot of that name is left as it is.
    """
    need_str(name, _("name (the slot's)"), example="'forgotten'")
    p = _primary_running(cluster)
    if p.scalar("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (name,), dbname="postgres"):
        return _("slot {name!r} exists already").format(name=name)
    lsn = p.scalar("SELECT lsn::text FROM pg_create_physical_replication_slot(%s, true)", (name,),
                   dbname="postgres")
    return _("created slot {name!r}: the primary keeps every WAL segment from {lsn} on until it is dropped").format(
        name=name, lsn=lsn)


def drop_slot(cluster, name: str) -> str:
    """Drop a replication slot on the primary; a one-line message (never raises a LabError).

    An active slot (a replica streams through it) is refused: stop or remove the replica first.
    >>> lab.slots.drop_slot(cluster, "forgotten")        # doctest: +SKIP
    "dropped slot 'forgotten' (it held 96.0 MB of WAL)"
    """
    if not name:
        return _("pick a slot to drop")
    if not isinstance(name, str):
        return _("a slot's name is a string, not {type}: pick a slot to drop").format(type=type(name).__name__)
    try:
        p = _primary_running(cluster)
        df = p.sql("SELECT active, r.application_name AS consumer, "
                   "pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS held "
                   "FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid "
                   "WHERE slot_name = %s", (name,), dbname="postgres")
        if df.empty:
            known = ", ".join(slot_table(cluster)["slot_name"]) or _("none")
            return _("no slot {name!r} on {node} (slots: {known})").format(name=name, node=p.name, known=known)
        row = df.iloc[0]
        if row["active"]:
            who = row["consumer"] if isinstance(row["consumer"], str) else _("a replica")
            return _("slot {name!r} is active: {who} streams through it; stop or remove that replica "
                     "before dropping its slot").format(name=name, who=who)
        p.execute("SELECT pg_drop_replication_slot(%s)", (name,), dbname="postgres")
        held = row["held"]
        if pd.notna(held):
            return _("dropped slot {name!r} (it held {size} of WAL)").format(name=name, size=_human(held))
        return _("dropped slot {name!r} (it held no WAL)").format(name=name)
    except LabError as e:
        return _("could not drop slot {name!r}: {error}").format(name=name, error=e)


def checkpoint(cluster) -> None:
    """``CHECKPOINT`` on the primary: old WAL segments that nothing keeps are removed or recycled."""
    _primary_running(cluster).execute("CHECKPOINT", dbname="postgres")


def write_wal(cluster, segments: int = 1, checkpoint_each: bool = False, quiet: bool = True) -> str:
    """Move the primary ``segments`` WAL segments ahead: each a one-row INSERT + ``pg_switch_wal()``.

    ``checkpoint_each``: a CHECKPOINT after each segment, so ``pg_wal`` shows what is kept.
    Returns the primary's LSN afterwards.
    """
    _check_segments(segments)
    need_bool(checkpoint_each, "checkpoint_each")
    need_bool(quiet, "quiet")
    conn = _primary_running(cluster).connect()
    try:
        with conn.cursor() as cur:
            for i in range(1, segments + 1):
                cur.execute("INSERT INTO test_replication (mensaje) VALUES (%s)", (f"{FILLER} {i}/{segments}",))
                cur.execute("SELECT pg_switch_wal()")
                if checkpoint_each:
                    cur.execute("CHECKPOINT")
                if i in _every(segments) and not quiet:
                    print(_("writing WAL: {i}/{segments} segments").format(i=i, segments=segments), flush=True)
            cur.execute("SELECT pg_current_wal_lsn()::text")
            return cur.fetchone()[0]
    except psycopg2.Error as e:
        raise LabError(f"{cluster.primary.name}: {(e.pgerror or str(e)).strip().splitlines()[0]}") from None
    finally:
        conn.close()


def _check_segments(segments) -> None:
    need_int(segments, _("segments (how many 16 MB WAL segments to write)"), lo=1, hi=64)


def watch_slot(cluster, slot: "str | None", segments: int = 6, phase: "str | None" = None, quiet: bool = False,
               t0: "float | None" = None) -> pd.DataFrame:
    """Write ``segments`` WAL segments on the primary (CHECKPOINT after each) and sample ``slot``
    before and after each one: ``t_s, phase, active, wal_status, restart_lsn, retained_bytes,
    safe_wal_size, pg_wal_bytes, pg_wal_files, pg_wal_behind, pg_wal_ahead``.  ``phase`` labels the
    rows (None: "writing", in the lab's language).

    A CHECKPOINT first, so the first row shows only what is kept, not what no checkpoint has
    removed yet.
    """
    need_cluster(cluster)
    if slot is not None:
        need_str(slot, _("slot (a slot's name, or None)"))
    _check_segments(segments)
    phase = _("writing") if phase is None else need_str(phase, "phase", empty=True)
    need_bool(quiet, "quiet")
    if t0 is not None:
        need_number(t0, _("t0 (a time.monotonic() value)"))
    t0 = time.monotonic() if t0 is None else t0
    checkpoint(cluster)
    rows = [dict(t_s=time.monotonic() - t0, phase=phase, **sample(cluster, slot))]
    for i in range(1, segments + 1):
        write_wal(cluster, 1, checkpoint_each=True)
        rows.append(dict(t_s=time.monotonic() - t0, phase=phase, **sample(cluster, slot)))
        if i in _every(segments):
            r = rows[-1]
            if r["retained_bytes"] is not None:
                _say(quiet, _("writing WAL: {i}/{segments} segments (pg_wal {size}, slot keeps {kept})").format(
                    i=i, segments=segments, size=_human(r["pg_wal_bytes"]), kept=_human(r["retained_bytes"])))
            else:
                _say(quiet, _("writing WAL: {i}/{segments} segments (pg_wal {size})").format(
                    i=i, segments=segments, size=_human(r["pg_wal_bytes"])))
    return _frame(rows)


def slot_of(node: Node) -> "str | None":
    """The slot a running replica streams through (its ``primary_slot_name``), or None.

    >>> lab.slots.slot_of(cluster.node("replica1"))     # doctest: +SKIP
    'replica1'
    """
    return need_a_node(node).scalar("SHOW primary_slot_name", dbname="postgres") or None


def _replica(cluster, name) -> Node:
    node = need_node(need_cluster(cluster), name, "replica")
    if node.role != Role.REPLICA:
        raise LabError(_("{node} is the {role}, not a replica: pick one of {replicas}").format(
            node=node.name, role=node.role, replicas=", ".join(r.name for r in cluster.replicas) or _("(none)")))
    return node


def retention_while_stopped(cluster, replica: str = "replica1", segments: int = 6, timeout: float = 60,
                            quiet: bool = False) -> pd.DataFrame:
    """Stop a replica that has a slot, write ``segments`` WAL segments, start it again; sample its slot
    all along: ``streaming`` → ``replica stopped`` (the slot keeps the WAL) → ``catching up`` →
    ``caught up`` (after a last CHECKPOINT), each phase in the lab's language but ``streaming`` (the
    state PostgreSQL names).  The replica runs again at the end."""
    node = _replica(cluster, replica)
    _check_segments(segments)
    timeout = need_number(timeout, "timeout", lo=1, hi=600, unit="seconds")
    need_bool(quiet, "quiet")
    _primary_running(cluster)
    slot = slot_of(node) if node.is_running else None
    slot = slot or node.name  # a stopped replica of the lab streams through the slot named after it
    if slot not in set(slot_table(cluster)["slot_name"]):
        raise LabError(_("{node} has no slot on the primary: this experiment needs a replica with one "
                         "(replica1, made by lab.up, has its own)").format(node=node.name))
    t0 = time.monotonic()
    rows = []
    if node.is_running:
        cluster.wait_replayed(timeout=timeout)
        checkpoint(cluster)
        rows.append(dict(t_s=0.0, phase="streaming", **sample(cluster, slot)))
        node.stop()
    _say(quiet, _("{node} stopped; its slot {slot!r} keeps the WAL it has not received").format(node=node.name,
                                                                                                slot=slot))
    stopped = watch_slot(cluster, slot, segments, phase=_("replica stopped"), quiet=quiet, t0=t0)
    rows += stopped.to_dict("records")
    target = parse_lsn(rows[-1]["current_lsn"])
    node.start()
    deadline = time.monotonic() + timeout
    while True:
        r = sample(cluster, slot)
        rows.append(dict(t_s=time.monotonic() - t0, phase=_("catching up"), **r))
        if r["restart_lsn"] and parse_lsn(r["restart_lsn"]) >= target:
            break
        if time.monotonic() > deadline:
            raise Timeout(_("{node} has not caught up after {timeout:g} s: see cluster.node({node!r}).logs()").format(
                node=node.name, timeout=timeout))
        time.sleep(0.05)
    _say(quiet, _("{node} started again and caught up in {seconds:.1f} s").format(
        node=node.name, seconds=rows[-1]["t_s"] - stopped["t_s"].iloc[-1]))
    checkpoint(cluster)
    rows.append(dict(t_s=time.monotonic() - t0, phase=_("caught up, after a CHECKPOINT"), **sample(cluster, slot)))
    return _frame(rows)


def setting_bytes(node: Node, setting: str) -> int:
    """A size setting in bytes (``-1`` stays -1)."""
    r = node.settings(setting).iloc[0]
    v = int(r["setting"])
    return v if v < 0 else v * {"MB": 1 << 20, "kB": 1 << 10, "B": 1}.get(r["unit"] or "B", 1)


def lines_after(log: str, marker: "str | None") -> list:
    """The lines of ``log`` after the last line equal to ``marker`` (all of them if it is gone).

    >>> lines_after("a\\nb\\nc", "b"), lines_after("a\\nb", None), lines_after("x", "b")
    (['c'], ['a', 'b'], ['x'])
    """
    need_str(log, "log", empty=True)
    if marker is not None:
        need_str(marker, "marker", empty=True)
    lines = log.splitlines()
    if marker is not None and marker in lines:
        return lines[len(lines) - lines[::-1].index(marker):]
    return lines


def start_and_read_error(cluster, replica: str, timeout: float = 30, tail: int = 3000) -> str:
    """Start a stopped replica and wait until its log says the primary no longer has the WAL it
    needs (``requested WAL segment … has already been removed``); that log line.

    Raises a ``Timeout`` if the replica streams fine instead (the primary still had the WAL).
    """
    node = _replica(cluster, replica)
    timeout = need_number(timeout, "timeout", lo=0, hi=600, unit="seconds")
    need_int(tail, _("tail (log lines)"), lo=1, hi=100_000)
    before = node.logs(tail).splitlines()
    marker = before[-1] if before else None  # a timestamp and a pid: only new lines come after it
    node.start()
    deadline = time.monotonic() + timeout
    while True:
        found = [ln for ln in lines_after(node.logs(tail), marker) if WAL_GONE in ln]
        if found:
            return found[-1]
        if time.monotonic() > deadline:
            raise Timeout(_("{node} did not report missing WAL within {timeout:g} s: "
                            "it probably streams normally (lab.replication.stat_replication(cluster))").format(
                                node=node.name, timeout=timeout))
        time.sleep(0.05)


def lose_wal(cluster, replica: str = "replica_manual", segments: int = 4, timeout: float = 30,
             quiet: bool = False) -> pd.Series:
    """Stop a replica that has **no** slot, let the primary write ``segments`` WAL segments and
    CHECKPOINT, then start it: the WAL it needs is gone.  What happened, as a Series.

    Needs a small ``wal_keep_size`` on the primary (``cluster.primary.set(wal_keep_size=0)``),
    else the primary keeps that WAL for every replica anyway.
    """
    node = _replica(cluster, replica)
    primary = _primary_running(cluster)
    _check_segments(segments)
    timeout = need_number(timeout, "timeout", lo=1, hi=600, unit="seconds")
    need_bool(quiet, "quiet")
    if not node.is_running:
        raise NotRunning(_("{node} is stopped: start it first (cluster.node({node!r}).start())").format(node=node.name))
    slot = slot_of(node)
    if slot:
        raise LabError(_("{node} streams through slot {slot!r}: the primary keeps its WAL however much "
                         "it writes; use a replica made from a backup without -S (replica_manual)").format(
                             node=node.name, slot=slot))
    seg = setting_bytes(primary, "wal_segment_size")
    keep = setting_bytes(primary, "wal_keep_size")
    if keep >= (segments - 1) * seg:
        raise LabError(_("the primary keeps wal_keep_size = {size} of WAL for any replica, more than "
                         "{segments} segments can outrun: set cluster.primary.set(wal_keep_size=0) first").format(
                             size=_human(keep), segments=segments))
    cluster.wait_replayed(timeout=timeout)
    stopped_at = node.scalar("SELECT pg_last_wal_replay_lsn()::text", dbname="postgres")
    timeline = primary.scalar("SELECT timeline_id FROM pg_control_checkpoint()", dbname="postgres")
    node.stop()
    _say(quiet, _("{node} stopped at {lsn}; the primary writes on").format(node=node.name, lsn=stopped_at))
    write_wal(cluster, segments, quiet=quiet)
    needs = wal_segment_name(stopped_at, timeline, seg)
    # another replica's slot holds WAL until that replica has flushed it: let them catch up, so
    # that the CHECKPOINT removes what this one needs (a slow machine could otherwise keep it)
    for _round in range(4):
        cluster.wait_replayed(timeout=timeout)
        checkpoint(cluster)
        if (oldest := wal_dir(primary)["oldest"]) is None or oldest > needs:
            break
        write_wal(cluster, 1)
    error = start_and_read_error(cluster, node.name, timeout=timeout)
    _say(quiet, _("{node} started: the primary no longer has the WAL it needs").format(node=node.name))
    return pd.Series(dict(replica=node.name, stopped_at_lsn=stopped_at, needs_segment=needs,
                          oldest_segment_on_primary=oldest, error=_message(error)),
                     name="lose_wal", dtype="object")


def _message(log_line: str) -> str:
    """A server log line without its timestamp and pid prefix."""
    m = re.search(r"\b(LOG|FATAL|ERROR|WARNING|PANIC):\s", log_line)
    return log_line[m.start():] if m else log_line


def lose_slot(cluster, replica: str = "replica1", max_segments: int = 32, quiet: bool = False) -> pd.DataFrame:
    """With ``max_slot_wal_keep_size`` set, stop a replica that has a slot and write WAL until the
    slot is past the limit, then CHECKPOINT: the primary gives the slot up (``wal_status`` 'lost').

    One row per segment written (``reserved`` → ``unreserved`` → ``lost``); the replica stays stopped:
    ``start_and_read_error(cluster, replica)`` shows what it says when it starts.
    """
    node = _replica(cluster, replica)
    primary = _primary_running(cluster)
    need_int(max_segments, "max_segments", lo=1, hi=64)
    need_bool(quiet, "quiet")
    limit = setting_bytes(primary, "max_slot_wal_keep_size")
    if limit < 0:
        raise LabError(_("max_slot_wal_keep_size is -1 (no limit): a slot never gives up; set it first, "
                         "e.g. cluster.primary.set(max_slot_wal_keep_size='32MB')"))
    slot = (slot_of(node) if node.is_running else None) or node.name
    if slot not in set(slot_table(cluster)["slot_name"]):
        raise LabError(_("{node} has no slot on the primary: use a replica that has one (replica1)").format(
            node=node.name))
    t0 = time.monotonic()
    rows = []
    if node.is_running:
        cluster.wait_replayed()
        rows.append(dict(t_s=0.0, phase="streaming", **sample(cluster, slot)))
        node.stop()
    _say(quiet, _("{node} stopped; max_slot_wal_keep_size = {size}").format(node=node.name, size=_human(limit)))
    rows.append(dict(t_s=time.monotonic() - t0, phase=_("replica stopped"), **sample(cluster, slot)))
    for i in range(1, max_segments + 1):
        write_wal(cluster, 1)
        rows.append(dict(t_s=time.monotonic() - t0, phase=_("replica stopped"), **sample(cluster, slot)))
        if rows[-1]["wal_status"] in ("unreserved", "lost"):
            break
    _say(quiet, _("writing WAL: {i} segments, slot {slot!r} is {status}; CHECKPOINT").format(
        i=i, slot=slot, status=rows[-1]["wal_status"]))
    checkpoint(cluster)
    rows.append(dict(t_s=time.monotonic() - t0, phase=_("after a CHECKPOINT"), **sample(cluster, slot)))
    return _frame(rows)


def log_lines(node: Node, text: str, last: int = 3, tail: int = 2000) -> str:
    """The ``last`` lines of a node's recent log (its last ``tail`` lines) that contain ``text``.

    >>> lab.slots.log_lines(cluster.primary, "invalidating slot")     # doctest: +SKIP
    """
    need_a_node(node)
    need_str(text, _("text (what the lines contain)"))
    need_int(last, "last", lo=1, hi=100_000)
    need_int(tail, "tail", lo=1, hi=100_000)
    found = [ln for ln in node.logs(tail).splitlines() if text in ln][-last:]
    return Text("\n".join(found) if found else _("(no line with {text!r} in the last {tail} lines of {node}'s log)").format(
        text=text, tail=tail, node=node.name))


# --- a picture --------------------------------------------------------------------------------
def plot_retention(samples: pd.DataFrame, title: "str | None" = None):
    """WAL kept over time: the slot's retained bytes and the size of ``pg_wal``; grey where the slot
    had no consumer (its replica stopped, or nobody)."""
    if title is not None:
        need_str(title, "title", empty=True)
    if not isinstance(samples, pd.DataFrame) or samples.empty or not {"retained_bytes", "t_s", "active"} <= set(samples):
        raise BadArgument(_("plot_retention() plots what retention_while_stopped() or watch_slot() return"))
    mb = 1 << 20
    t = samples["t_s"].astype(float)
    fig = Figure(figsize=(8.5, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    retained = samples["retained_bytes"].astype("Float64").to_numpy(dtype=float, na_value=float("nan")) / mb
    ax.plot(t, retained, "o-", ms=4, color="#2f5d8a", label=_("retained by the slot"))
    if "pg_wal_bytes" in samples:
        wal = samples["pg_wal_bytes"].astype("Float64").to_numpy(dtype=float, na_value=float("nan")) / mb
        ax.plot(t, wal, "s--", ms=3, color="#9a6a16", label=_("size of pg_wal"))
    inactive = samples["active"].fillna(False).astype(bool).to_numpy() == False  # noqa: E712
    start = None
    for i, idle in enumerate(list(inactive) + [False]):
        if idle and start is None:
            start = i
        elif not idle and start is not None:
            end = min(i, len(t) - 1)
            ax.axvspan(t.iloc[start], t.iloc[end] if end > start else t.iloc[start] + 0.05,
                       color="#a0a0a0", alpha=0.2, lw=0)
            start = None
    ax.set_xlabel(_("seconds"))
    ax.set_ylabel("MB")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    handles, _labels = ax.get_legend_handles_labels()
    handles.append(Patch(color="#a0a0a0", alpha=0.2, label=_("no consumer on the slot")))
    # below the axes: inside, it would cover the lines wherever they are
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize=8, frameon=False)
    slot = samples["slot"].dropna().iloc[0] if "slot" in samples and samples["slot"].notna().any() else "?"
    if title is None:
        title = (_("WAL the primary keeps for slot {slot!r}, which nobody reads") if inactive.all()
                 else _("WAL the primary keeps for slot {slot!r}")).format(slot=slot)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# --- the slot dashboard (ipywidgets) -------------------------------------------------------------
def slot_dashboard(cluster):
    """A table of the primary's slots, a slot picker, and buttons to refresh or drop the picked slot.

    The buttons call ``slot_table`` and ``drop_slot``, which you can call yourself.
    """
    need_cluster(cluster)
    picker = w.Dropdown(options=[], description=_("slot"), layout=w.Layout(width="240px"))
    refresh_button = w.Button(description=_("refresh"), icon="refresh", layout=w.Layout(width="100px"))
    drop_button = w.Button(description=_("drop slot"), button_style="danger", layout=w.Layout(width="110px"),
                           tooltip=_("pg_drop_replication_slot(the picked slot)"))
    message = w.HTML(value="<i>" + html.escape(_("pick a slot; an active one (a replica streams through it) cannot "
                                                 "be dropped")) + "</i>")
    out = w.Output()

    def show():
        try:
            df = slot_table(cluster)
        except LabError as e:
            message.value = html.escape(str(e))
            return
        show_table(df, df["slot_name"].tolist(), out, picker)

    def on_drop(_button):
        message.value = html.escape(drop_slot(cluster, picker.value))
        show()

    refresh_button.on_click(lambda _b: show())
    drop_button.on_click(on_drop)
    show()
    title = w.HTML(_("<b>Replication slots</b> on {node}").format(node=html.escape(cluster.primary.name)))
    return w.VBox([title, w.HBox([picker, refresh_button, drop_button]), message, out])
