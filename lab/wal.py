"""The write-ahead log (WAL): positions, files, records, what each operation costs, checkpoints.

>>> lab.wal.position(cluster)                              # doctest: +SKIP
>>> lab.wal.waldump(cluster.primary, "0/3000060", "0/3000200")   # doctest: +SKIP
>>> lab.wal.run_operation(cluster, "UPDATE", rows=1000)["wal_bytes"]   # doctest: +SKIP
>>> lab.wal.operation_panel(cluster)                       # doctest: +SKIP

Every measurement reads LSNs before and after on the primary: the difference is the bytes of
WAL written in between.  ``pg_waldump`` shows the records themselves; its text is parsed by
``parse_waldump``, a pure function.  Widget callbacks are plain functions of this module.
"""
from __future__ import annotations

import datetime as dt
import html
import io
import re
import time

import ipywidgets as w
import pandas as pd
import psycopg2
from IPython.display import display
from matplotlib.figure import Figure

from .errors import BadArgument, LabError, NotRunning, SQLError, Text, need_int, need_str
from .faults import need_a_node, need_cluster, need_node
from .i18n import N_, _, ngettext
from .lsn import format_lsn, lsn_diff, parse_lsn, wal_segment_name
from .plots import human_bytes

_WAL_FILE_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")


# --- the results a function reads back: a DataFrame another lab call returned ---------------------
def _need_frame(value, what: str, columns, made_by: str) -> pd.DataFrame:
    """``value`` if it is a DataFrame with ``columns``, else a LabError saying which call makes one."""
    if isinstance(value, pd.DataFrame):
        missing = [c for c in columns if c not in value.columns]
        if not missing:
            return value
        shown = ngettext("a DataFrame without the column {columns}", "a DataFrame without the columns {columns}",
                         len(missing)).format(columns=", ".join(missing))
    else:
        shown = _shown(value)
    raise BadArgument(_("{what} is what {made_by} returns, not {shown}").format(what=what, made_by=made_by,
                                                                                shown=shown))


def _shown(value) -> str:
    text = " ".join(repr(value).split())  # one line
    return text if len(text) <= 60 else text[:57] + "..."


# --- LSNs and WAL files ----------------------------------------------------------------------
def _server_version(node) -> int:
    return int(node.scalar("SHOW server_version_num", dbname="postgres"))


def segment_size(node) -> int:
    """The node's WAL segment size in bytes (``wal_segment_size``, 16 MB unless initdb chose another).

    >>> lab.wal.segment_size(cluster.primary)     # doctest: +SKIP
    16777216
    """
    return int(node.settings("wal_segment_size").loc[0, "setting"])


def _timeline(node) -> int:
    """The timeline the node writes (primary) or replays (replica)."""
    if node.scalar("SELECT pg_is_in_recovery()", dbname="postgres"):
        return int(node.scalar("SELECT timeline_id FROM pg_control_checkpoint()", dbname="postgres"))
    # pg_control_checkpoint() lags behind a promotion until the next checkpoint; the file name does not
    return int(node.scalar("SELECT pg_walfile_name(pg_current_wal_insert_lsn())", dbname="postgres")[:8], 16)


def position(cluster) -> pd.DataFrame:
    """Where the primary is in the WAL: one row.

    ``insert_lsn`` is where the next record goes, ``current_lsn`` what is written to the WAL files
    (``pg_current_wal_lsn()``), ``flush_lsn`` what is on disk for sure.  ``wal_file`` is the server's
    ``pg_walfile_name(current_lsn)``, ``lab_wal_file`` the same from ``lab.lsn.wal_segment_name``.
    """
    p = need_cluster(cluster).primary
    row = p.sql("SELECT pg_current_wal_insert_lsn()::text AS insert_lsn, pg_current_wal_lsn()::text AS current_lsn, "
                "pg_current_wal_flush_lsn()::text AS flush_lsn, pg_walfile_name(pg_current_wal_lsn()) AS wal_file, "
                "(pg_walfile_name_offset(pg_current_wal_lsn())).file_offset AS offset_in_file",
                dbname="postgres")
    lsn = row.loc[0, "current_lsn"]
    row["lab_wal_file"] = wal_segment_name(lsn, _timeline(p), segment_size(p))
    row["agree"] = row["wal_file"] == row["lab_wal_file"]
    return row


def walfile_names(cluster, lsns) -> pd.DataFrame:
    """For each LSN: the server's ``pg_walfile_name`` and ``lab.lsn.wal_segment_name``, side by side.

    >>> lab.wal.walfile_names(cluster, ["0/3000000", "0/3000001"])   # doctest: +SKIP
    """
    p = need_cluster(cluster).primary
    if isinstance(lsns, str):
        lsns = [lsns]
    if not isinstance(lsns, (list, tuple)):
        raise BadArgument(_("lsns is a list of LSNs, e.g. ['0/3000000', '0/3000001'], not {value}").format(
            value=_shown(lsns)))
    tli, seg = _timeline(p), segment_size(p)
    rows = []
    for lsn in lsns:
        lsn = format_lsn(lsn)
        r = p.sql("SELECT pg_walfile_name(%s::pg_lsn) AS pg_walfile_name, "
                  "(pg_walfile_name_offset(%s::pg_lsn)).file_offset AS offset", (lsn, lsn), dbname="postgres").iloc[0]
        ours = wal_segment_name(lsn, tli, seg)
        rows.append(dict(lsn=lsn, pg_walfile_name=r["pg_walfile_name"], offset=int(r["offset"]),
                         lab_wal_segment_name=ours, agree=r["pg_walfile_name"] == ours,
                         offset_in_segment=parse_lsn(lsn) % seg))
    return pd.DataFrame(rows)


def segment_number(name: str, segment_size: int = 16 << 20) -> "int | None":
    """The segment number in a WAL file's name (the timeline left out), None for another file of pg_wal/
    (a history or backup file).

    >>> segment_number("000000010000000100000002"), segment_number("00000002.history")
    (258, None)
    """
    m = _WAL_FILE_RE.match(name)
    if not m:
        return None
    return int(m.group(2), 16) * (0x100000000 // segment_size) + int(m.group(3), 16)


def wal_files(cluster, node=None) -> pd.DataFrame:
    """The files of ``pg_wal/`` (``pg_ls_waldir()``), oldest first, with what each one is for.

    ``kind``: *current* is the one segment being written (the primary) or replayed (a replica), on the
    timeline written now; *past* is already written (kept for crash recovery and replicas until a
    checkpoint lets it go), and so is every segment of an older timeline (after a promotion), whatever its
    number; *future* is a recycled file, renamed ahead, waiting to be written; *other* is a history or
    backup file.
    """
    need_cluster(cluster)
    node = cluster.primary if node is None else need_node(cluster, node)
    seg = segment_size(node)
    df = node.sql("SELECT name, size::bigint AS size, modification FROM pg_ls_waldir() ORDER BY name", dbname="postgres")
    if node.scalar("SELECT pg_is_in_recovery()", dbname="postgres"):
        here = node.scalar("SELECT coalesce(pg_last_wal_replay_lsn(), '0/0')::text", dbname="postgres")
    else:
        here = node.scalar("SELECT pg_current_wal_insert_lsn()::text", dbname="postgres")
    df["kind"] = wal_file_kinds(df["name"], here, seg)
    df["size_pretty"] = [human_bytes(s) for s in df["size"]]
    return df[["name", "kind", "size", "size_pretty", "modification"]]


# a file's kind in pg_wal/, in the current language where it is shown (wal_file_kinds)
PAST, CURRENT, FUTURE, OTHER = N_("past"), N_("current"), N_("future"), N_("other")


def wal_file_kinds(names, lsn: str, segment_size: int = 16 << 20) -> list:
    """For each name of ``pg_wal/``: current, past, future or other (in the current language: compare
    with ``_(CURRENT)``...), with ``lsn`` the position being written.

    The current timeline is the highest among the files of the current segment number (a newer timeline
    starts inside the segment where the older one was left, and only the newer is written): one file
    at most is current; a segment of an older timeline is past.
    >>> wal_file_kinds(["000000010000000000000005", "000000010000000000000006", "000000020000000000000005",
    ...                 "000000020000000000000006", "00000002.history"], "0/5000100")
    ['past', 'past', 'current', 'future', 'other']
    """
    names = list(names)
    current = parse_lsn(lsn) // segment_size
    timelines = [int(n[:8], 16) for n in names if segment_number(n, segment_size) == current]
    tli = max(timelines) if timelines else None
    kinds = []
    for name in names:
        n = segment_number(name, segment_size)
        if n is None:
            kinds.append(OTHER)
        elif tli is not None and int(name[:8], 16) < tli:
            kinds.append(PAST)
        elif n == current:
            kinds.append(CURRENT)
        else:
            kinds.append(PAST if n < current else FUTURE)
    return [_(k) for k in kinds]


# --- pg_waldump --------------------------------------------------------------------------------
_RECORD_RE = re.compile(
    r"^rmgr: (?P<rmgr>\S+)\s+len \(rec/tot\):\s*(?P<rec>\d+)/\s*(?P<tot>\d+), "
    r"tx:\s*(?P<tx>\d+), lsn: (?P<lsn>[0-9A-Fa-f]+/[0-9A-Fa-f]+), prev (?P<prev>[0-9A-Fa-f]+/[0-9A-Fa-f]+), "
    r"desc: (?P<rest>.*)$")
RECORD_COLUMNS = ["lsn", "rmgr", "record", "rec_len", "tot_len", "tx", "fpw", "desc", "blkref", "prev"]


def parse_waldump(text: str) -> pd.DataFrame:
    """pg_waldump's text output -> one row per WAL record (other lines are ignored).

    Columns: ``lsn`` (as PostgreSQL prints a pg_lsn), ``rmgr`` (resource manager: Heap, Btree,
    Transaction, XLOG...), ``record`` (the first word of the description: INSERT, COMMIT...),
    ``rec_len`` (the record without page images), ``tot_len`` (with them), ``tx`` (transaction id,
    0 for the server's own records), ``fpw`` (it carries a full-page image), ``desc``, ``blkref``
    (the blocks it changes: ``rel tablespace/database/relfilenode blk n``), ``prev``.

    >>> line = ("rmgr: Heap        len (rec/tot):     59/    59, tx:        735, lsn: 0/03000060, "
    ...         "prev 0/03000028, desc: INSERT off 3 flags 0x00, blkref #0: rel 1663/16384/16389 blk 0")
    >>> parse_waldump(line)[["lsn", "rmgr", "record", "tot_len", "tx"]].values.tolist()
    [['0/3000060', 'Heap', 'INSERT', 59, 735]]
    """
    rows = []
    for line in text.splitlines():
        m = _RECORD_RE.match(line.strip())
        if not m:
            continue
        desc, sep, blk = m.group("rest").partition(", blkref #")
        blkref = ("#" + blk).strip() if sep else ""
        desc = desc.strip()
        rows.append(dict(lsn=format_lsn(m.group("lsn")), rmgr=m.group("rmgr"),
                         record=desc.split()[0] if desc else "", rec_len=int(m.group("rec")),
                         tot_len=int(m.group("tot")), tx=int(m.group("tx")),
                         fpw=bool(re.search(r"\bFPW\b", blkref)), desc=desc, blkref=blkref,
                         prev=format_lsn(m.group("prev"))))
    df = pd.DataFrame(rows, columns=RECORD_COLUMNS)
    for col in ("rec_len", "tot_len", "tx"):
        df[col] = df[col].astype("int64")
    df["fpw"] = df["fpw"].astype(bool)
    return df


# pg_waldump stops with one of these when it reaches the end of the WAL written so far (zeros, or an
# old recycled file's leftovers): that is where the log ends, not an error.
_END_OF_WAL = ("error in WAL record at", "could not find a valid record after")


def end_of_wal(stderr: str) -> bool:
    """Did pg_waldump stop because the WAL written so far ends there (not a real error)?"""
    return any(s in stderr for s in _END_OF_WAL)


def _wait_written(node, lsn, timeout: float = 5.0) -> None:
    """pg_waldump reads the files: wait until the WAL up to ``lsn`` is written to them (an
    asynchronous commit is written by the WAL writer a moment later)."""
    if node.scalar("SELECT pg_is_in_recovery()", dbname="postgres"):
        return
    target = parse_lsn(lsn)
    deadline = time.monotonic() + timeout
    while parse_lsn(node.scalar("SELECT pg_current_wal_lsn()::text", dbname="postgres")) < target:
        if time.monotonic() > deadline:
            return  # pg_waldump shows what there is
        time.sleep(0.01)


def _check_start(node, start, timeline: int) -> None:
    """Say at once when the WAL at ``start`` is not there (pg_waldump would retry for 5 s first)."""
    if not node.scalar("SELECT pg_is_in_recovery()", dbname="postgres"):
        here = node.scalar("SELECT pg_current_wal_insert_lsn()::text", dbname="postgres")
        if parse_lsn(start) > parse_lsn(here):
            raise LabError(_("{node}: {lsn} is ahead of the WAL written so far "
                             "(pg_current_wal_insert_lsn() is {here})").format(node=node.name, lsn=format_lsn(start),
                                                                               here=here))
    name = wal_segment_name(start, timeline, segment_size(node))
    if not node.scalar("SELECT count(*) FROM pg_ls_waldir() WHERE name = %s", (name,), dbname="postgres"):
        raise LabError(_("{node}: the WAL at {lsn} is gone: a checkpoint removed or recycled its "
                         "file {file}; lab.wal.wal_files(cluster) lists what is left").format(
                             node=node.name, lsn=format_lsn(start), file=name))


def waldump(node, start, end=None, limit: "int | None" = None) -> pd.DataFrame:
    """The WAL records from ``start`` to ``end`` (or to the end of the WAL written so far), as read by
    ``pg_waldump`` in the node's ``pg_wal/``: one row per record (see ``parse_waldump``).

    >>> start = cluster.primary.scalar("SELECT pg_current_wal_lsn()")            # doctest: +SKIP
    >>> cluster.primary.execute("INSERT INTO test_replication (mensaje) VALUES ('x')")  # doctest: +SKIP
    >>> lab.wal.waldump(cluster.primary, start)                                   # doctest: +SKIP
    """
    need_a_node(node)
    if limit is not None:
        need_int(limit, "limit", 1)
    if not node.is_running:
        raise NotRunning(_("{node} is stopped: start it with cluster.node({node!r}).start()").format(node=node.name))
    if end is not None and parse_lsn(end) <= parse_lsn(start):
        return parse_waldump("")
    tli = _timeline(node)
    _check_start(node, start, tli)
    args = ["pg_waldump", "-p", f"{node.pgdata}/pg_wal", "-t", str(tli), "-s", format_lsn(start)]
    if end is not None:
        _wait_written(node, end)
        args += ["-e", format_lsn(end)]
    if limit is not None:
        args += ["-n", str(int(limit))]
    r = node.tool(*args, check=False)
    records = parse_waldump(r.stdout)
    if r.returncode != 0 and not end_of_wal(r.stderr):
        first = next((ln for ln in r.stderr.splitlines() if ln.strip()),
                     _("exit code {code}").format(code=r.returncode))
        raise LabError(f"{node.name}: {first.strip()}")
    return records


def summarize(records: pd.DataFrame) -> pd.DataFrame:
    """Records per kind (resource manager and record type): how many, their bytes, full-page images."""
    _need_frame(records, "records", ["lsn", "rmgr", "record", "tot_len", "fpw"],
                _("lab.wal.waldump(node, start) (or run_operation(...)['records'])"))
    if records.empty:
        return pd.DataFrame(columns=["rmgr", "record", "records", "bytes", "fpw"])
    g = records.groupby(["rmgr", "record"], as_index=False).agg(records=("lsn", "size"), bytes=("tot_len", "sum"),
                                                               fpw=("fpw", "sum"))
    return g.sort_values("bytes", ascending=False, ignore_index=True)


# --- what each operation costs --------------------------------------------------------------
DEMO_TABLE = "wal_demo"
_CREATE = f"CREATE TABLE {DEMO_TABLE} (id int, v text) WITH (autovacuum_enabled = off)"
_CREATE_UNLOGGED = f"CREATE UNLOGGED TABLE {DEMO_TABLE} (id int, v text) WITH (autovacuum_enabled = off)"
_FILL = f"INSERT INTO {DEMO_TABLE} SELECT g, 'fila ' || g FROM generate_series(1, {{rows}}) g"

# operation -> (statements that prepare the table, not measured; the measured statement)
OPERATIONS = {
    "INSERT": ([_CREATE], _FILL),
    "UPDATE": ([_CREATE, _FILL], f"UPDATE {DEMO_TABLE} SET v = v || '!'"),
    "DELETE": ([_CREATE, _FILL], f"DELETE FROM {DEMO_TABLE}"),
    "COPY": ([_CREATE], f"COPY {DEMO_TABLE} (id, v) FROM STDIN"),
    "CREATE INDEX": ([_CREATE, _FILL], f"CREATE INDEX {DEMO_TABLE}_id ON {DEMO_TABLE} (id)"),
    "INSERT (UNLOGGED)": ([_CREATE_UNLOGGED], _FILL),
}
MAX_ROWS = 100_000


def _check_rows(rows) -> int:
    return need_int(rows, "rows", 1, MAX_ROWS)


def _operation(op: str) -> str:
    need_str(op, "op", example="'INSERT'")
    for name in OPERATIONS:
        if str(op).strip().upper() == name:
            return name
    raise LabError(_("unknown operation {op!r}: choose one of {operations}").format(
        op=op, operations=", ".join(OPERATIONS)))


def _sql_error(node, e: psycopg2.Error) -> SQLError:
    text = (e.pgerror or str(e)).strip()
    return SQLError(f"{node.name}: {text.splitlines()[0] if text else type(e).__name__}", node=node.name,
                    sqlstate=e.pgcode)


def _measure(node, work, setup=()) -> dict:
    """Run ``setup`` (not measured), then ``work(cursor)`` in one transaction on one connection;
    the LSNs around it, its transaction id and the time it took."""
    conn = node.connect()
    try:
        with conn.cursor() as cur:
            try:
                for stmt in setup:
                    cur.execute(stmt)
                cur.execute("SELECT pg_current_wal_insert_lsn()::text")
                start = cur.fetchone()[0]
                t0 = time.perf_counter()
                cur.execute("BEGIN")
                work(cur)
                cur.execute("SELECT pg_current_xact_id_if_assigned()::text")
                xid = cur.fetchone()[0]
                cur.execute("COMMIT")
                seconds = time.perf_counter() - t0
                cur.execute("SELECT pg_current_wal_insert_lsn()::text")
                end = cur.fetchone()[0]
            except psycopg2.Error as e:
                raise _sql_error(node, e) from None
    finally:
        conn.close()
    # pg_waldump shows 32-bit transaction ids; pg_current_xact_id() adds the epoch above them
    return dict(start_lsn=start, end_lsn=end, wal_bytes=lsn_diff(end, start), seconds=seconds,
                xid=int(xid) & 0xFFFFFFFF if xid is not None else None)


def _own(records: pd.DataFrame, xids, relfilenodes=()) -> pd.DataFrame:
    """The records of our transactions, and server records (tx 0) that touch our tables."""
    mine = records["tx"].isin([x for x in xids if x is not None])
    for rel in relfilenodes:
        mine |= (records["tx"] == 0) & records["blkref"].str.contains(rf"rel \d+/\d+/{rel} ", regex=True)
    return records[mine].reset_index(drop=True)


def run_operation(cluster, op: str, rows: int = 10_000) -> dict:
    """Run one operation on ``rows`` rows of the table wal_demo and measure the WAL it writes.

    ``op`` is one of ``OPERATIONS``: INSERT, UPDATE, DELETE, COPY, CREATE INDEX, INSERT (UNLOGGED).
    The table is made anew each time (not measured); the operation runs in one transaction.
    Returns a dict: ``operation, rows, statement, start_lsn, end_lsn, wal_bytes`` (LSN difference),
    ``bytes_per_row, wal_records, fpw, seconds`` and ``records``: the pg_waldump records of the
    operation's transaction (the server's own background records are left out).

    >>> r = lab.wal.run_operation(cluster, "DELETE", rows=1000)    # doctest: +SKIP
    >>> r["wal_bytes"], r["records"].head()                        # doctest: +SKIP
    """
    name, rows = _operation(op), _check_rows(rows)
    setup, stmt = OPERATIONS[name]
    primary = need_cluster(cluster).primary
    setup = [f"DROP TABLE IF EXISTS {DEMO_TABLE}"] + [s.format(rows=rows) for s in setup]
    stmt = stmt.format(rows=rows)

    def work(cur):
        if name == "COPY":
            data = "".join(f"{i}\tfila {i}\n" for i in range(1, rows + 1))
            cur.copy_expert(stmt, io.StringIO(data))
        else:
            cur.execute(stmt)

    m = _measure(primary, work, setup)
    rel = primary.scalar(f"SELECT pg_relation_filenode('{DEMO_TABLE}')")
    records = _own(waldump(primary, m["start_lsn"], m["end_lsn"]), [m["xid"]], [rel])
    return dict(operation=name, rows=rows, statement=stmt, start_lsn=m["start_lsn"], end_lsn=m["end_lsn"],
                wal_bytes=m["wal_bytes"], bytes_per_row=float(f"{m['wal_bytes'] / rows:.3g}"),
                wal_records=len(records), fpw=int(records["fpw"].sum()), seconds=round(m["seconds"], 4),
                records=records)


def wal_volume(cluster, rows: int = 10_000, operations=None) -> pd.DataFrame:
    """``run_operation`` for each operation on the same number of rows: one row each, no records."""
    if isinstance(operations, str):
        operations = [operations]
    if operations is not None and not isinstance(operations, (list, tuple)):
        raise BadArgument(_("operations is a list of operations, e.g. ['INSERT', 'UPDATE'] (None: all of "
                            "{operations}), not {value}").format(operations=", ".join(OPERATIONS),
                                                                 value=_shown(operations)))
    ops = [_operation(o) for o in (operations or OPERATIONS)]
    out = []
    for i, op in enumerate(ops, 1):
        r = run_operation(cluster, op, rows)
        print(_("{i}/{total} {operation}: {size} of WAL").format(i=i, total=len(ops), operation=op,
                                                                  size=human_bytes(r["wal_bytes"])), flush=True)
        out.append({k: v for k, v in r.items() if k != "records"})
    return pd.DataFrame(out)[["operation", "rows", "wal_bytes", "bytes_per_row", "wal_records", "fpw", "seconds",
                              "statement"]]


def plot_volume(volume: pd.DataFrame) -> Figure:
    """A bar per operation: the bytes of WAL it wrote (what ``wal_volume`` returns)."""
    if not isinstance(volume, pd.DataFrame) or volume.empty \
            or not {"operation", "rows", "wal_bytes", "bytes_per_row"} <= set(volume.columns):
        raise LabError(_("plot_volume() draws what lab.wal.wal_volume(cluster) returns: pass its DataFrame"))
    df = volume.iloc[::-1]
    fig = Figure(figsize=(8.5, 0.45 * len(df) + 1.2))
    ax = fig.add_subplot()
    ax.barh(df["operation"], df["wal_bytes"] / 1024, color="#2f5d8a")
    top = float(df["wal_bytes"].max()) / 1024 or 1.0
    for y, (b, per) in enumerate(zip(df["wal_bytes"], df["bytes_per_row"])):
        ax.text(b / 1024 + top * 0.01, y, _("{size}  ({per_row:g} B/row)").format(size=human_bytes(b), per_row=per),
                va="center", fontsize=8.5)
    ax.set_xlim(0, top * 1.35)
    ax.set_xlabel(_("WAL written (kB)"))
    rows = volume["rows"].iloc[0]
    ax.set_title(_("WAL written by each operation on {rows:,} rows").format(rows=rows), fontsize=10)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return fig


# --- full-page writes -----------------------------------------------------------------------
FPW_TABLE = "wal_fpw"
FPW_STEPS = (N_("1st UPDATE after CHECKPOINT"), N_("2nd UPDATE, same page"))  # shown with _()


def full_page_writes(cluster, attempts: int = 3) -> pd.DataFrame:
    """CHECKPOINT, then UPDATE one row of a one-page table twice: the records of both UPDATEs.

    The first change of a page after a checkpoint carries the whole page (``fpw`` True, ``tot_len``
    far above ``rec_len``); the second does not.  Column ``wal_compression`` says what it was set to.
    A timed checkpoint that slips in between the two updates spoils the comparison: then it tries again.
    """
    need_int(attempts, "attempts", 1, 10)
    p = need_cluster(cluster).primary
    compression = p.scalar("SHOW wal_compression")
    for _attempt in range(attempts):
        for stmt in (f"DROP TABLE IF EXISTS {FPW_TABLE}",
                     f"CREATE TABLE {FPW_TABLE} (id int, n int, v text) WITH (autovacuum_enabled = off)",
                     # text like a real table's: words repeat from row to row, so the page compresses
                     f"INSERT INTO {FPW_TABLE} SELECT g, 0, format('cliente %s, pedido %s: BTC comprado, "
                     f"pendiente de confirmar', g, g * 7) FROM generate_series(1, 60) g",
                     f"VACUUM {FPW_TABLE}",  # sets hint bits now, so no later scan logs a page for them
                     "CHECKPOINT"):
            p.execute(stmt)
        rel = p.scalar(f"SELECT pg_relation_filenode('{FPW_TABLE}')")
        frames = []
        for step, row in zip(FPW_STEPS, (1, 2)):
            m = _measure(p, lambda cur, r=row: cur.execute(f"UPDATE {FPW_TABLE} SET n = n + 1 WHERE id = {r}"))
            recs = _own(waldump(p, m["start_lsn"], m["end_lsn"]), [m["xid"]], [rel])
            frames.append(recs.assign(step=_(step), wal_compression=compression))
        if not frames[1]["fpw"].any():
            break
    df = pd.concat(frames, ignore_index=True)
    return df[["wal_compression", "step"] + RECORD_COLUMNS[:-1]]


def by_step(*records: pd.DataFrame) -> pd.DataFrame:
    """Totals per step of what ``full_page_writes`` returned (one or more of them)."""
    if not records:
        raise BadArgument(_("by_step() adds up what lab.wal.full_page_writes(cluster) returns: pass one or more of "
                            "them"))
    for r in records:
        _need_frame(r, _("each argument of by_step()"), ["wal_compression", "step", "lsn", "rec_len", "tot_len", "fpw"],
                    "lab.wal.full_page_writes(cluster)")
    df = pd.concat(records, ignore_index=True)
    df = df.assign(image_bytes=(df["tot_len"] - df["rec_len"]).where(df["fpw"], 0))
    return df.groupby(["wal_compression", "step"], as_index=False, sort=False).agg(
        records=("lsn", "size"), wal_bytes=("tot_len", "sum"), fpw=("fpw", "sum"), image_bytes=("image_bytes", "sum"))


# --- checkpoints, recycling -----------------------------------------------------------------
def _counters_sql(version: int) -> str:
    if version >= 170000:  # PostgreSQL 17 moved the checkpoint counters to pg_stat_checkpointer
        ckpt = "SELECT num_timed AS checkpoints_timed, num_requested AS checkpoints_req FROM pg_stat_checkpointer"
    else:
        ckpt = "SELECT checkpoints_timed, checkpoints_req FROM pg_stat_bgwriter"
    if version >= 140000:
        wal = "SELECT wal_records, wal_fpi, wal_bytes::bigint AS wal_bytes FROM pg_stat_wal"
    else:  # pg_stat_wal is new in 14
        wal = "SELECT NULL::bigint AS wal_records, NULL::bigint AS wal_fpi, NULL::bigint AS wal_bytes"
    return (f"SELECT k.checkpoints_timed, k.checkpoints_req, w.wal_records, w.wal_fpi, w.wal_bytes, "
            f"c.redo_lsn::text AS redo_lsn, c.redo_wal_file, c.checkpoint_time, "
            f"f.files AS pg_wal_files, f.bytes AS pg_wal_bytes "
            f"FROM ({ckpt}) k, ({wal}) w, pg_control_checkpoint() c, "
            f"(SELECT count(*) AS files, coalesce(sum(size), 0)::bigint AS bytes FROM pg_ls_waldir() "
            f" WHERE name ~ '^[0-9A-F]{{24}}$') f")


COUNTER_COLUMNS = ["checkpoints_timed", "checkpoints_req", "wal_records", "wal_fpi", "wal_bytes", "redo_lsn",
                   "redo_wal_file", "checkpoint_time", "pg_wal_files", "pg_wal_bytes"]


def counters(cluster) -> pd.DataFrame:
    """One row: checkpoints so far (timed / requested), WAL so far (records, full-page images, bytes:
    ``pg_stat_wal``), the last checkpoint's redo point and the WAL files in pg_wal/."""
    p = need_cluster(cluster).primary
    return p.sql(_counters_sql(_server_version(p)), dbname="postgres")


def changes(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Two ``counters`` rows and what changed between them."""
    for name, frame in (("before", before), ("after", after)):
        _need_frame(frame, name, COUNTER_COLUMNS, "lab.wal.counters(cluster)")
        if len(frame) != 1:
            raise BadArgument(_("{name} is what lab.wal.counters(cluster) returns (one row), not {rows} rows").format(
                name=name, rows=len(frame)))
    df = pd.concat([before, after], ignore_index=True)
    numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])]
    change = {c: (df[c].iloc[1] - df[c].iloc[0]) for c in numeric}
    df.index = [_("before"), _("after")]
    return pd.concat([df, pd.DataFrame([change], index=[_("change")])])


def _wait_checkpoints_req(node, above: int, timeout: float = 10) -> None:
    """The checkpointer reports its counters just after a checkpoint completes: wait for them."""
    sql = _counters_sql(_server_version(node))
    deadline = time.monotonic() + timeout
    while int(node.sql(sql, dbname="postgres").loc[0, "checkpoints_req"]) <= above:
        if time.monotonic() > deadline:
            return
        time.sleep(0.02)


def retention(cluster) -> pd.DataFrame:
    """Why pg_wal/ keeps its oldest files: each reason to keep WAL, the LSN it keeps from and its file.

    At a checkpoint, files older than the oldest of these are recycled (renamed to future segments)
    or removed.
    """
    p = need_cluster(cluster).primary
    tli, seg = _timeline(p), segment_size(p)
    rows = []
    redo = p.scalar("SELECT redo_lsn::text FROM pg_control_checkpoint()", dbname="postgres")
    rows.append(dict(reason=_("redo point of the last checkpoint (crash recovery starts here)"), lsn=redo))
    slots = p.sql("SELECT slot_name, restart_lsn::text AS restart_lsn FROM pg_replication_slots "
                  "WHERE restart_lsn IS NOT NULL ORDER BY slot_name", dbname="postgres")
    for s in slots.itertuples():
        rows.append(dict(reason=_("replication slot {slot} (its replica may still need it)").format(slot=s.slot_name),
                         lsn=s.restart_lsn))
    keep = p.settings("wal_keep_size").iloc[0]  # its unit is MB
    if int(keep["setting"]):
        # wal_keep_size counts whole segments back from the current one
        here = p.scalar("SELECT pg_current_wal_insert_lsn()::text", dbname="postgres")
        back = max(seg, (parse_lsn(here) // seg) * seg - int(keep["setting"]) * 1024 * 1024)
        rows.append(dict(reason=_("wal_keep_size = {value} behind the current file").format(value=keep["value"]),
                         lsn=format_lsn(back)))
    df = pd.DataFrame(rows)
    df["wal_file"] = [wal_segment_name(lsn, tli, seg) for lsn in df["lsn"]]
    oldest = min(parse_lsn(lsn) for lsn in df["lsn"])
    df["oldest"] = [parse_lsn(lsn) == oldest for lsn in df["lsn"]]
    files = wal_files(cluster)
    segs = files[files["kind"] != _(OTHER)]["name"]
    df.attrs["oldest_in_pg_wal"] = segs.iloc[0] if len(segs) else None
    return df


def parse_inodes(ls_output: str) -> dict:
    """``ls -1i`` output -> {file name: inode}."""
    out = {}
    for line in ls_output.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0].isdigit():
            out[parts[1].strip()] = int(parts[0])
    return out


def _inodes(node) -> dict:
    return parse_inodes(node.tool("ls", "-1i", f"{node.pgdata}/pg_wal").stdout)


def switch_and_checkpoint(cluster) -> pd.DataFrame:
    """``pg_switch_wal()`` then ``CHECKPOINT``, and what happened to each file of pg_wal/.

    One row per file (followed by its inode, so a renamed file is recognised): its name and kind
    before and after, and its fate: *kept*, *recycled* (renamed to a future segment), *removed* or
    *new*.  pg_switch_wal() only moves to a new file if WAL was written since the last switch, so a
    small message is written to the WAL first.
    """
    p = need_cluster(cluster).primary
    before, ino_before = wal_files(cluster), _inodes(p)
    req = int(counters(cluster).loc[0, "checkpoints_req"])
    p.execute("SELECT pg_logical_emit_message(false, 'lab', 'before pg_switch_wal')", dbname="postgres")
    p.execute("SELECT pg_switch_wal()", dbname="postgres")
    p.execute("CHECKPOINT", dbname="postgres")
    _wait_checkpoints_req(p, req)
    after, ino_after = wal_files(cluster), _inodes(p)
    by_ino_after = {ino: name for name, ino in ino_after.items()}
    kinds_before = dict(zip(before["name"], before["kind"]))
    kinds_after = dict(zip(after["name"], after["kind"]))
    rows, seen = [], set()
    for name in before["name"]:
        ino = ino_before.get(name)
        new = by_ino_after.get(ino)
        seen.add(new)
        if new == name:
            fate = _("kept")
        elif new is not None:
            fate = _("recycled")
        else:
            fate = _("removed")
        rows.append(dict(name_before=name, kind_before=kinds_before[name], name_after=new,
                         kind_after=kinds_after.get(new), fate=fate, inode=ino))
    for name in after["name"]:
        if name not in seen:
            rows.append(dict(name_before=None, kind_before=None, name_after=name, kind_after=kinds_after[name],
                             fate=_("new"), inode=ino_after.get(name)))
    df = pd.DataFrame(rows)
    df["inode"] = df["inode"].astype("Int64")
    return df


# --- break it: max_wal_size too small ---------------------------------------------------------
LOAD_TABLE = "wal_load"
LOAD_ROWS = 270_000  # about 4000 pages, 32 MB: more than one WAL segment of full-page images per round
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) (?:UTC|GMT) ")


def log_time(line: str) -> "dt.datetime | None":
    """The time at the start of a server log line (log_line_prefix '%m ...', log_timezone UTC), or None.

    >>> log_time("2026-01-01 10:00:05.250 UTC [1] LOG:  database system is shut down").second
    5
    """
    m = _LOG_TIME.match(line)
    if not m:
        return None
    return dt.datetime.fromisoformat(m.group(1)).replace(tzinfo=dt.timezone.utc)


def count_checkpoints(log_text: str, since: "dt.datetime | None" = None) -> dict:
    """From a server log (log_checkpoints on): checkpoints started because of WAL volume
    ("checkpoint starting: ... wal"), all checkpoints started, and "checkpoints are occurring too
    frequently" warnings, at or after ``since`` (an aware datetime; log times are UTC, in ms)."""
    if since is not None:
        since = since.replace(microsecond=since.microsecond // 1000 * 1000)
    out = dict(checkpoints=0, wal_checkpoints=0, too_frequent=0)
    for line in log_text.splitlines():
        t = log_time(line)
        if since is not None and (t is None or t < since):
            continue
        m = re.search(r"checkpoint starting:(.*)$", line)
        if m:
            out["checkpoints"] += 1
            out["wal_checkpoints"] += bool(re.search(r"\bwal\b", m.group(1)))
        elif "checkpoints are occurring too frequently" in line:
            out["too_frequent"] += 1
    return out


def checkpoint_log(cluster, last: int = 12):
    """The primary's last ``last`` log lines about checkpoints (and the hints that come with them)."""
    need_int(last, "last", 1, 1000)
    need_cluster(cluster)
    lines = [ln for ln in cluster.primary.logs(tail=3000).splitlines()
             if ("LOG:" in ln and "checkpoint" in ln) or ("HINT:" in ln and "max_wal_size" in ln)]
    return Text("\n".join(lines[-last:]))


def _prepare_load(node) -> int:
    """The table wal_load (made once; kept between runs); how many rows of it sit in one page."""
    exists = node.scalar(f"SELECT count(*) FROM pg_class WHERE relname = '{LOAD_TABLE}' AND relkind = 'r'")
    if not exists:
        print(_("making the table {table} ({rows:,} rows)…").format(table=LOAD_TABLE, rows=LOAD_ROWS), flush=True)
        for stmt in (f"CREATE TABLE {LOAD_TABLE} (id int, n int, pad text) "
                     f"WITH (autovacuum_enabled = off, fillfactor = 90)",
                     f"INSERT INTO {LOAD_TABLE} SELECT g, 0, md5(g::text) || md5((-g)::text) "
                     f"FROM generate_series(1, {LOAD_ROWS}) g",
                     f"VACUUM {LOAD_TABLE}"):
            node.execute(stmt)
    pages = node.scalar(f"SELECT pg_relation_size('{LOAD_TABLE}') / current_setting('block_size')::int")
    return max(1, LOAD_ROWS // max(1, int(pages)))


def write_load(cluster, rounds: int = 3) -> pd.DataFrame:
    """The same work every time: ``rounds`` UPDATE rounds, each touching every page of wal_load once.

    It starts with a CHECKPOINT (so every run starts alike) and ends with one (so no checkpoint is left
    half-done).  One row: ``max_wal_size`` then, ``rows_updated``, ``wal_bytes`` (LSN difference),
    ``wal_fpi`` and ``wal_records`` (pg_stat_wal), the checkpoints started meanwhile
    (``wal_checkpoints``: because of WAL volume, from the server log) and the log's "checkpoints are
    occurring too frequently" warnings, and ``seconds``.
    """
    need_int(rounds, "rounds", 1, 20)
    p = need_cluster(cluster).primary
    version = _server_version(p)
    per_page = _prepare_load(p)
    conn = p.connect()
    try:
        with conn.cursor() as cur:
            def one(q, params=None):
                cur.execute(q, params)
                return cur.fetchone()

            try:
                cur.execute("CHECKPOINT")
                max_wal_size = one("SHOW max_wal_size")[0]
                since = one("SELECT clock_timestamp()")[0]
                stats0 = one("SELECT wal_records, wal_fpi FROM pg_stat_wal") if version >= 140000 else None
                start = one("SELECT pg_current_wal_insert_lsn()::text")[0]
                t0, updated = time.perf_counter(), 0
                for i in range(int(rounds)):
                    cur.execute(f"UPDATE {LOAD_TABLE} SET n = n + 1 WHERE id %% %s = %s", (per_page, i % per_page))
                    updated += cur.rowcount
                    here = one("SELECT pg_current_wal_insert_lsn()::text")[0]
                    print(_("round {round}/{rounds}: {size} of WAL so far").format(
                        round=i + 1, rounds=rounds, size=human_bytes(lsn_diff(here, start))), flush=True)
                seconds = time.perf_counter() - t0
                end = one("SELECT pg_current_wal_insert_lsn()::text")[0]
                stats1 = None
                if version >= 150000:  # flush this session's WAL counters to pg_stat_wal now
                    cur.execute("SELECT pg_stat_force_next_flush()")
                if stats0 is not None:
                    stats1 = one("SELECT wal_records, wal_fpi FROM pg_stat_wal")
                cur.execute(_counters_sql(version))
                req = cur.fetchone()[1]
                cur.execute("CHECKPOINT")
            except psycopg2.Error as e:
                raise _sql_error(p, e) from None
    finally:
        conn.close()
    _wait_checkpoints_req(p, int(req))  # so that counters(cluster) includes this run's checkpoints
    seen = count_checkpoints(p.logs(tail=3000), since)
    row = dict(max_wal_size=max_wal_size, rounds=int(rounds), rows_updated=updated, wal_bytes=lsn_diff(end, start),
               wal_pretty=human_bytes(lsn_diff(end, start)),
               wal_fpi=(stats1[1] - stats0[1]) if stats1 else None,
               wal_records=(stats1[0] - stats0[0]) if stats1 else None,
               wal_checkpoints=seen["wal_checkpoints"], too_frequent=seen["too_frequent"], seconds=round(seconds, 2))
    _log_run(p, row)
    df = pd.DataFrame([row])
    for col in ("wal_fpi", "wal_records"):
        df[col] = df[col].astype("Int64")
    return df


def _log_run(node, row: dict) -> None:
    """Write the run's numbers into the server log, where exercise 02.4 reads them (the same numbers as its row)."""
    setting = re.sub(r"[^0-9A-Za-z]", "", str(row["max_wal_size"]))
    line = (f"lab.wal.write_load: max_wal_size={setting} rounds={row['rounds']} "
            f"wal_checkpoints={row['wal_checkpoints']} too_frequent={row['too_frequent']}")
    node.execute(f"DO $$BEGIN RAISE LOG '{line}'; END$$")


def cleanup(cluster) -> None:
    """Drop the tables this chapter made (wal_demo, wal_fpw, wal_load)."""
    need_cluster(cluster)
    for t in (DEMO_TABLE, FPW_TABLE, LOAD_TABLE):
        cluster.primary.execute(f"DROP TABLE IF EXISTS {t}")


# --- widget ---------------------------------------------------------------------------------
def describe(result: dict) -> str:
    """One line about a ``run_operation`` result."""
    keys = ("operation", "rows", "wal_bytes", "bytes_per_row", "wal_records", "fpw", "start_lsn", "end_lsn")
    if not isinstance(result, dict) or not all(k in result for k in keys):
        raise BadArgument(_("result is what lab.wal.run_operation(cluster, op) returns, not {value}").format(
            value=_shown(result)))
    size = human_bytes(result["wal_bytes"])
    if result["fpw"]:
        return _("{operation} of {rows:,} rows wrote {size} of WAL ({per_row:g} bytes per row) in {records:,} "
                 "record(s), {images} full-page image(s), from {start} to {end}").format(
                     operation=result["operation"], rows=result["rows"], size=size, per_row=result["bytes_per_row"],
                     records=result["wal_records"], images=result["fpw"], start=result["start_lsn"],
                     end=result["end_lsn"])
    return _("{operation} of {rows:,} rows wrote {size} of WAL ({per_row:g} bytes per row) in {records:,} "
             "record(s), from {start} to {end}").format(
                 operation=result["operation"], rows=result["rows"], size=size, per_row=result["bytes_per_row"],
                 records=result["wal_records"], start=result["start_lsn"], end=result["end_lsn"])


def operation_panel(cluster):
    """Pick an operation and a number of rows; *run* measures its WAL and shows its records.

    The button calls ``run_operation`` and ``describe``, which you can call yourself.
    """
    need_cluster(cluster)
    op = w.Dropdown(options=list(OPERATIONS), value="INSERT", description=_("operation"),
                    layout=w.Layout(width="280px"))
    rows = w.BoundedIntText(value=1000, min=1, max=MAX_ROWS, step=1000, description=_("rows"),
                            layout=w.Layout(width="200px"))
    run = w.Button(description=_("run"), button_style="primary", icon="play", layout=w.Layout(width="90px"))
    message = w.HTML(value="<i>" + html.escape(_("pick an operation and a number of rows, then run")) + "</i>")
    out = w.Output()

    def on_run(_button):
        message.value = "<i>" + html.escape(_("running {operation} on {rows:,} rows…").format(
            operation=op.value, rows=rows.value)) + "</i>"
        try:
            result = run_operation(cluster, op.value, rows.value)
        except LabError as e:
            message.value = html.escape(str(e))
            return
        message.value = html.escape(describe(result))
        with out:
            out.clear_output(wait=True)
            display(summarize(result["records"]))
            display(result["records"].head(10))

    run.on_click(on_run)
    return w.VBox([w.HBox([op, rows, run]), message, out])
