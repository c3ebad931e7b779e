"""Chapter 02's self-checks (the WAL), checked against the real cluster.

>>> lab.checks.check("02.1", cluster, answer="0/3000060")                  # doctest: +SKIP
>>> lab.checks.exercises("02")                                             # doctest: +SKIP
"""
from __future__ import annotations

import re

from ..errors import LabError
from ..i18n import N_, _
from ..lsn import format_lsn, parse_lsn
from ..wal import CURRENT, FUTURE, segment_number, segment_size, wal_files, waldump
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
        return None, _("pg_waldump could not read there: {error}").format(error=e)
    if recs.empty or parse_lsn(recs.loc[0, "lsn"]) != parse_lsn(lsn):
        return None, _("no WAL record starts at {lsn}: copy the value after 'lsn:' on a line of "
                       "lab.wal.waldump(...) (not 'prev', which is the record before)").format(lsn=lsn)
    return recs.iloc[0], None


@exercise("02.1", N_("your transaction's COMMIT in the WAL"), answer=True,
          hint=N_("Note pg_current_wal_lsn(), INSERT a row into test_replication whose mensaje starts with 'wal de ', "
                  "then find your transaction in lab.wal.waldump(cluster.primary, start) (its tx) and answer with the "
                  "LSN of its Transaction COMMIT record."))
def _your_insert(cluster, answer):
    rows = cluster.primary.sql("SELECT id, mensaje, xmin::text::bigint AS xid FROM test_replication "
                               "WHERE mensaje ILIKE %s ORDER BY id", (WAL_DE + "_%",))
    if rows.empty:
        return False, _("no row of test_replication starts with {prefix!r} yet: note pg_current_wal_lsn(), INSERT "
                        "one with mensaje = '{prefix}<your name>', then lab.wal.waldump(cluster.primary, start)").format(
            prefix=WAL_DE)
    lsn = _lsn(answer)
    if lsn is None:
        return False, _("answer with an LSN as pg_waldump prints it, e.g. answer='0/3000060' (not {answer!r})").format(
            answer=answer)
    rec, hint = _record_at(cluster, lsn)
    if rec is None:
        return False, hint
    xids = {int(x) & 0xFFFFFFFF for x in rows["xid"]}
    if rec["tx"] not in xids:
        return False, _("the record at {lsn} ({rmgr} {record}) belongs to transaction {tx}, not to the one that "
                        "inserted your {prefix!r} row (SELECT xmin FROM test_replication shows it)").format(
            lsn=lsn, rmgr=rec["rmgr"], record=rec["record"], tx=rec["tx"], prefix=WAL_DE)
    if rec["rmgr"] == "Heap" and rec["record"].startswith("INSERT"):
        return False, _("{lsn} is your Heap INSERT, where your transaction's WAL begins (the LSN you noted before the "
                        "INSERT points there too): read on in lab.wal.waldump(cluster.primary, {lsn!r}) for the "
                        "Transaction COMMIT of transaction {tx}").format(lsn=lsn, tx=rec["tx"])
    if rec["rmgr"] != "Transaction" or not rec["record"].startswith("COMMIT"):
        return False, _("that record is {rmgr} {record} of your transaction (an index entry or a "
                        "sequence step): its Transaction COMMIT comes after it").format(
            rmgr=rec["rmgr"], record=rec["record"])
    return True, _("right: {lsn} is the {record} of transaction {tx} ({bytes} bytes): the record that makes your "
                   "INSERT count, written after the row and its index entry").format(
        lsn=lsn, record=rec["record"], tx=rec["tx"], bytes=rec["tot_len"])


@exercise("02.2", N_("the WAL file being written now"), answer=True,
          hint=N_("Ask the primary for pg_walfile_name(pg_current_wal_lsn()), or look at lab.wal.wal_files(cluster), "
                  "and answer with the name of the WAL file being written now."))
def _current_file(cluster, answer):
    if not isinstance(answer, str) or not _WAL_FILE_RE.match(answer.strip().upper()):
        return False, _("answer with a WAL file name (24 hex digits), e.g. answer='000000010000000000000003' "
                        "(not {answer!r})").format(answer=answer)
    given = answer.strip().upper()
    files = wal_files(cluster)
    kinds = dict(zip(files["name"], files["kind"]))
    if kinds.get(given) == _(CURRENT):
        return True, _("right: {file} holds the primary's insert position, pg_current_wal_insert_lsn()").format(
            file=given)
    seg = segment_size(cluster.primary)
    if given not in kinds:
        return False, _("no such file in the primary's pg_wal/: ask the primary for "
                        "pg_walfile_name(pg_current_wal_lsn()), or list lab.wal.wal_files(cluster)")
    if kinds[given] == _(FUTURE):
        return False, _("{file} is in pg_wal/ but ahead of the insert position: a recycled file waiting to be "
                        "written (its modification time is old)").format(file=given)
    current = files.loc[files["kind"] == _(CURRENT), "name"]
    if len(current) and segment_number(current.iloc[0], seg) - segment_number(given, seg) == 1 and \
            parse_lsn(cluster.primary.scalar("SELECT pg_current_wal_lsn()::text")) % seg == 0:
        return False, _("{file} is what pg_walfile_name() says at an exact file boundary (it names the file of the "
                        "byte before the LSN); the next record goes into the next file").format(file=given)
    return False, _("{file} is an older file, already written and kept until a checkpoint lets it go: the "
                    "current one holds pg_current_wal_lsn() (written since, or a pg_switch_wal() moved on)").format(
        file=given)


@exercise("02.3", N_("a full-page image of yours"), answer=True,
          hint=N_("Read test_replication, run CHECKPOINT, UPDATE one row of it, then find your UPDATE in "
                  "lab.wal.waldump(...) and answer with the LSN of its record with fpw True (a full-page image)."))
def _your_fpw(cluster, answer):
    how = _("read the table (SELECT count(*) FROM test_replication), run CHECKPOINT, then UPDATE one row of "
            "test_replication, then find your UPDATE in lab.wal.waldump(...): the record with fpw True")
    lsn = _lsn(answer)
    if lsn is None:
        return False, _("answer with the LSN of a record that carries a full-page image, e.g. answer='0/3000060': "
                        "{how}").format(how=how)
    rec, hint = _record_at(cluster, lsn)
    if rec is None:
        return False, hint
    if not rec["fpw"]:
        return False, _("the record at {lsn} ({rmgr} {record}) carries no page image "
                        "(tot_len {tot_len} = rec_len {rec_len}): {how}").format(
            lsn=lsn, rmgr=rec["rmgr"], record=rec["record"], tot_len=rec["tot_len"], rec_len=rec["rec_len"], how=how)
    if rec["tx"] == 0:
        return False, _("that image ({rmgr} {record}) belongs to no transaction: it was logged when a "
                        "read set hint bits on the page (wal_log_hints is on), so your UPDATE found the page imaged "
                        "already. Try again: {how}").format(rmgr=rec["rmgr"], record=rec["record"], how=how)
    return True, _("right: {rmgr} {record} of transaction {tx} carries a full-page image: "
                   "{tot_len} bytes in all, {rec_len} without the image").format(
        rmgr=rec["rmgr"], record=rec["record"], tx=rec["tx"], tot_len=rec["tot_len"], rec_len=rec["rec_len"])


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
    return _("write_load with max_wal_size = {size} counted {count} checkpoint(s) "
             "started by WAL volume (wal_checkpoints in the row it returned)").format(
        size=run["max_wal_size"], count=run["wal_checkpoints"])


@exercise("02.4", N_("break it: max_wal_size too small; then repair it"),
          hint=N_("Break it: cluster.primary.set(max_wal_size='32MB'), then lab.wal.write_load(cluster) and look for "
                  "'checkpoint starting: wal' in lab.wal.checkpoint_log(cluster); repair it: "
                  "cluster.primary.set(max_wal_size=None)."))
def _broke_and_repaired(cluster):
    p = cluster.primary
    s = p.settings("max_wal_size").iloc[0]
    value = f"{s['setting']}{s['unit'] or ''}"
    now = _mb(f"{s['setting']}{s['unit'] or 'MB'}")
    log = p.logs(tail=5000)
    runs = write_load_runs(log)
    if bool(s["set_by_alter_system"]):
        here = [r for r in runs if r["mb"] == now]
        if here and here[-1]["wal_checkpoints"]:
            return False, _("broken: your last {run}. Now repair it: cluster.primary.set(max_wal_size=None)").format(
                run=_run_said(here[-1]))
        stretch = wal_checkpoints_by_setting(log)[-1]
        if not here and stretch[0] == now and stretch[1]:
            return False, _("broken: the server log shows {count} checkpoint(s) started by WAL volume since "
                            "max_wal_size became {value}. Now repair it: cluster.primary.set(max_wal_size=None)").format(
                count=stretch[1], value=value)
        return False, _("max_wal_size is {value}: now write WAL with lab.wal.write_load(cluster) "
                        "and look for 'checkpoint starting: wal' in lab.wal.checkpoint_log(cluster)").format(value=value)
    broken = [i for i, r in enumerate(runs) if r["mb"] is not None and r["mb"] != now and r["wal_checkpoints"]]
    if broken:
        i = broken[-1]
        after = [r for r in runs[i + 1:] if r["mb"] == now]
        if after:
            return True, _("broken, then repaired: your last {run}; your next run at {value} counted {count}, and "
                           "max_wal_size is back to its configured {value}").format(
                run=_run_said(runs[i]), value=value, count=after[0]["wal_checkpoints"])
        return True, _("broken, then repaired: your last {run}, and max_wal_size is back to "
                       "its configured {value}").format(run=_run_said(runs[i]), value=value)
    stretches = [st for st in wal_checkpoints_by_setting(log) if st[0] is not None and st[0] != now and st[1]]
    if stretches:  # broken with a load of one's own, not write_load
        mb, n = stretches[-1]
        return True, _("broken, then repaired: the server log shows {count} checkpoint(s) started by WAL volume "
                       "while max_wal_size was {mb:g}MB, and it is back to its configured {value}").format(
            count=n, mb=mb, value=value)
    return False, _("nothing broken yet: cluster.primary.set(max_wal_size='32MB'), then lab.wal.write_load(cluster), "
                    "then repair it with cluster.primary.set(max_wal_size=None)")
