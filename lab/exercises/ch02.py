"""Chapter 02's self-checks (the WAL), checked against the real cluster.

>>> lab.checks.check("02.1", cluster, answer="0/3000060")                  # doctest: +SKIP
>>> lab.checks.exercises("02")                                             # doctest: +SKIP
"""
from __future__ import annotations

import re

from ..errors import LabError
from ..lsn import format_lsn, parse_lsn
from ..wal import segment_number, segment_size, wal_files, waldump
from .registry import exercise

WAL_DE = "wal de "
_WAL_FILE_RE = re.compile(r"^[0-9A-F]{24}$")


def _lsn(answer) -> "str | None":
    try:
        return format_lsn(answer) if isinstance(answer, str) and answer.strip() else None
    except ValueError:
        return None


def _record_at(cluster, lsn: str):
    """The WAL record that starts exactly at ``lsn`` (a row of pg_waldump's output), or a hint."""
    try:
        recs = waldump(cluster.primary, lsn, limit=1)
    except LabError as e:
        return None, f"pg_waldump could not read there: {e}"
    if recs.empty or parse_lsn(recs.loc[0, "lsn"]) != parse_lsn(lsn):
        return None, (f"no WAL record starts at {lsn}: copy the value after 'lsn:' on a line of "
                      "lab.wal.waldump(...) (not 'prev', which is the record before)")
    return recs.iloc[0], None


@exercise("02.1", "your transaction's COMMIT in the WAL", answer=True)
def _your_insert(cluster, answer):
    """Note pg_current_wal_lsn(), INSERT a row into test_replication whose mensaje starts with 'wal de ', then find
    your transaction in lab.wal.waldump(cluster.primary, start) (its tx) and answer with the LSN of its Transaction
    COMMIT record."""
    rows = cluster.primary.sql("SELECT id, mensaje, xmin::text::bigint AS xid FROM test_replication "
                               "WHERE mensaje ILIKE %s ORDER BY id", (WAL_DE + "_%",))
    if rows.empty:
        return False, (f"no row of test_replication starts with {WAL_DE!r} yet: note pg_current_wal_lsn(), INSERT "
                       f"one with mensaje = '{WAL_DE}<your name>', then lab.wal.waldump(cluster.primary, start)")
    lsn = _lsn(answer)
    if lsn is None:
        return False, f"answer with an LSN as pg_waldump prints it, e.g. answer='0/3000060' (not {answer!r})"
    rec, hint = _record_at(cluster, lsn)
    if rec is None:
        return False, hint
    xids = {int(x) & 0xFFFFFFFF for x in rows["xid"]}
    if rec["tx"] not in xids:
        return False, (f"the record at {lsn} ({rec['rmgr']} {rec['record']}) belongs to transaction {rec['tx']}, "
                       f"not to the one that inserted your {WAL_DE!r} row (SELECT xmin FROM test_replication shows it)")
    if rec["rmgr"] == "Heap" and rec["record"].startswith("INSERT"):
        return False, (f"{lsn} is your Heap INSERT, where your transaction's WAL begins (the LSN you noted before the "
                       f"INSERT points there too): read on in lab.wal.waldump(cluster.primary, {lsn!r}) for the "
                       f"Transaction COMMIT of transaction {rec['tx']}")
    if rec["rmgr"] != "Transaction" or not rec["record"].startswith("COMMIT"):
        return False, (f"that record is {rec['rmgr']} {rec['record']} of your transaction (an index entry or a "
                       "sequence step): its Transaction COMMIT comes after it")
    return True, (f"right: {lsn} is the {rec['record']} of transaction {rec['tx']} ({rec['tot_len']} bytes): the "
                  "record that makes your INSERT count, written after the row and its index entry")


@exercise("02.2", "the WAL file being written now", answer=True)
def _current_file(cluster, answer):
    """Ask the primary for pg_walfile_name(pg_current_wal_lsn()), or look at lab.wal.wal_files(cluster), and
    answer with the name of the WAL file being written now."""
    if not isinstance(answer, str) or not _WAL_FILE_RE.match(answer.strip().upper()):
        return False, f"answer with a WAL file name (24 hex digits), e.g. answer='000000010000000000000003' (not {answer!r})"
    given = answer.strip().upper()
    files = wal_files(cluster)
    kinds = dict(zip(files["name"], files["kind"]))
    if kinds.get(given) == "current":
        return True, f"right: {given} holds the primary's insert position, pg_current_wal_insert_lsn()"
    seg = segment_size(cluster.primary)
    if given not in kinds:
        return False, ("no such file in the primary's pg_wal/: ask the primary for "
                       "pg_walfile_name(pg_current_wal_lsn()), or list lab.wal.wal_files(cluster)")
    if kinds[given] == "future":
        return False, (f"{given} is in pg_wal/ but ahead of the insert position: a recycled file waiting to be "
                       "written (its modification time is old)")
    current = files.loc[files["kind"] == "current", "name"]
    if len(current) and segment_number(current.iloc[0], seg) - segment_number(given, seg) == 1 and \
            parse_lsn(cluster.primary.scalar("SELECT pg_current_wal_lsn()::text")) % seg == 0:
        return False, (f"{given} is what pg_walfile_name() says at an exact file boundary (it names the file of the "
                       "byte before the LSN); the next record goes into the next file")
    return False, (f"{given} is an older file, already written and kept until a checkpoint lets it go: the "
                   "current one holds pg_current_wal_lsn() (written since, or a pg_switch_wal() moved on)")


@exercise("02.3", "a full-page image of yours", answer=True)
def _your_fpw(cluster, answer):
    """Read test_replication, run CHECKPOINT, UPDATE one row of it, then find your UPDATE in
    lab.wal.waldump(...) and answer with the LSN of its record with fpw True (a full-page image)."""
    how = ("read the table (SELECT count(*) FROM test_replication), run CHECKPOINT, then UPDATE one row of "
           "test_replication, then find your UPDATE in lab.wal.waldump(...): the record with fpw True")
    lsn = _lsn(answer)
    if lsn is None:
        return False, f"answer with the LSN of a record that carries a full-page image, e.g. answer='0/3000060': {how}"
    rec, hint = _record_at(cluster, lsn)
    if rec is None:
        return False, hint
    if not rec["fpw"]:
        return False, (f"the record at {lsn} ({rec['rmgr']} {rec['record']}) carries no page image "
                       f"(tot_len {rec['tot_len']} = rec_len {rec['rec_len']}): {how}")
    if rec["tx"] == 0:
        return False, (f"that image ({rec['rmgr']} {rec['record']}) belongs to no transaction: it was logged when a "
                       "read set hint bits on the page (wal_log_hints is on), so your UPDATE found the page imaged "
                       f"already. Try again: {how}")
    return True, (f"right: {rec['rmgr']} {rec['record']} of transaction {rec['tx']} carries a full-page image: "
                  f"{rec['tot_len']} bytes in all, {rec['rec_len']} without the image")


# --- 02.4: break it (max_wal_size too small), then repair it -------------------------------------
_CHANGED = re.compile(r'parameter "max_wal_size" changed to "([^"]+)"')
_RESET = re.compile(r'parameter "max_wal_size" removed from configuration file, reset to default')
_UNITS = {"kB": 1 / 1024, "MB": 1, "GB": 1024, "TB": 1024 * 1024}


def _mb(value: str) -> "float | None":
    m = re.fullmatch(r"\s*(\d+)\s*(kB|MB|GB|TB)?\s*", value or "")
    if not m:
        return None
    return int(m.group(1)) * _UNITS[m.group(2) or "MB"]


def wal_checkpoints_by_setting(log_text: str) -> list:
    """[max_wal_size in MB (None before the log names one), checkpoints started by WAL volume] for each
    stretch of a server log between two changes of max_wal_size (a reload logs each change)."""
    stretches = [[None, 0]]
    for line in log_text.splitlines():
        m = _CHANGED.search(line)
        if m or _RESET.search(line):
            stretches.append([_mb(m.group(1)) if m else None, 0])
            continue
        s = re.search(r"checkpoint starting:(.*)$", line)
        if s and re.search(r"\bwal\b", s.group(1)):
            stretches[-1][1] += 1
    return stretches


_RUN = re.compile(r"LOG:\s+lab\.wal\.write_load: max_wal_size=(\S+) rounds=(\d+) wal_checkpoints=(\d+) "
                  r"too_frequent=(\d+)")


def write_load_runs(log_text: str) -> list:
    """The runs of lab.wal.write_load in a server log, oldest first: dict(max_wal_size, mb, rounds,
    wal_checkpoints, too_frequent), the numbers of the row each run returned (it logs them when it ends)."""
    runs = []
    for line in log_text.splitlines():
        m = _RUN.search(line)
        if m:
            runs.append(dict(max_wal_size=m.group(1), mb=_mb(m.group(1)), rounds=int(m.group(2)),
                             wal_checkpoints=int(m.group(3)), too_frequent=int(m.group(4))))
    return runs


def _run_said(run: dict) -> str:
    return (f"write_load with max_wal_size = {run['max_wal_size']} counted {run['wal_checkpoints']} checkpoint(s) "
            "started by WAL volume (wal_checkpoints in the row it returned)")


@exercise("02.4", "break it: max_wal_size too small; then repair it")
def _broke_and_repaired(cluster):
    """Break it: cluster.primary.set(max_wal_size='32MB'), then lab.wal.write_load(cluster) and look for
    'checkpoint starting: wal' in lab.wal.checkpoint_log(cluster); repair it: cluster.primary.set(max_wal_size=None)."""
    p = cluster.primary
    s = p.settings("max_wal_size").iloc[0]
    value = f"{s['setting']}{s['unit'] or ''}"
    now = _mb(f"{s['setting']}{s['unit'] or 'MB'}")
    log = p.logs(tail=5000)
    runs = write_load_runs(log)
    if bool(s["set_by_alter_system"]):
        here = [r for r in runs if r["mb"] == now]
        if here and here[-1]["wal_checkpoints"]:
            return False, f"broken: your last {_run_said(here[-1])}. Now repair it: cluster.primary.set(max_wal_size=None)"
        stretch = wal_checkpoints_by_setting(log)[-1]
        if not here and stretch[0] == now and stretch[1]:
            return False, (f"broken: the server log shows {stretch[1]} checkpoint(s) started by WAL volume since "
                           f"max_wal_size became {value}. Now repair it: cluster.primary.set(max_wal_size=None)")
        return False, (f"max_wal_size is {value}: now write WAL with lab.wal.write_load(cluster) "
                       "and look for 'checkpoint starting: wal' in lab.wal.checkpoint_log(cluster)")
    broken = [i for i, r in enumerate(runs) if r["mb"] is not None and r["mb"] != now and r["wal_checkpoints"]]
    if broken:
        i = broken[-1]
        after = [r for r in runs[i + 1:] if r["mb"] == now]
        since = f"; your next run at {value} counted {after[0]['wal_checkpoints']}" if after else ""
        return True, (f"broken, then repaired: your last {_run_said(runs[i])}{since}, and max_wal_size is back to "
                      f"its configured {value}")
    stretches = [st for st in wal_checkpoints_by_setting(log) if st[0] is not None and st[0] != now and st[1]]
    if stretches:  # broken with a load of one's own, not write_load
        mb, n = stretches[-1]
        return True, (f"broken, then repaired: the server log shows {n} checkpoint(s) started by WAL volume while "
                      f"max_wal_size was {mb:g}MB, and it is back to its configured {value}")
    return False, ("nothing broken yet: cluster.primary.set(max_wal_size='32MB'), then lab.wal.write_load(cluster), "
                   "then repair it with cluster.primary.set(max_wal_size=None)")
