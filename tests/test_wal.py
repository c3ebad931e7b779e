"""lab.wal and chapter 02's exercises: pure parsers, then real servers (WAL, pg_waldump, checkpoints)."""
from __future__ import annotations

import datetime as dt
import re

import ipywidgets as w
import pandas as pd
import pytest
from matplotlib.figure import Figure

import lab
from lab import wal
from lab.checks import check
from lab.exercises.ch02 import wal_checkpoints_by_setting, write_load_runs
from lab.lsn import lsn_diff, parse_lsn, wal_segment_name

pytestmark = pytest.mark.integration

# --- pg_waldump's text (PostgreSQL 15, and 16+ where descriptions gained "key: value," pairs) ----------
PG15 = """\
rmgr: Heap        len (rec/tot):     59/    59, tx:        735, lsn: 0/03000060, prev 0/03000028, desc: INSERT off 3 flags 0x00, blkref #0: rel 1663/16384/16389 blk 0
rmgr: Transaction len (rec/tot):     34/    34, tx:        735, lsn: 0/030000A0, prev 0/03000060, desc: COMMIT 2026-11-29 00:52:40.763873 UTC
rmgr: Heap        len (rec/tot):     65/  5829, tx:        779, lsn: 0/038341A8, prev 0/03834130, desc: HOT_UPDATE off 1 xmax 779 flags 0x21 ; new off 41 xmax 0, blkref #0: rel 1663/16385/16442 blk 0 FPW
rmgr: XLOG        len (rec/tot):     49/   145, tx:          0, lsn: 0/0301B9E8, prev 0/0301B970, desc: FPI_FOR_HINT , blkref #0: rel 1663/16385/16396 blk 0 FPW
rmgr: Heap        len (rec/tot):     86/    86, tx:        775, lsn: 0/03682E20, prev 0/03682DE8, desc: UPDATE off 1 xmax 775 flags 0x00 ; new off 11 xmax 0, blkref #0: rel 1663/16385/16436 blk 54, blkref #1: rel 1663/16385/16436 blk 0
rmgr: Heap2       len (rec/tot):     59/  8251, tx:          0, lsn: 1/A0000028, prev 1/9FFFFFD0, desc: VISIBLE cutoff xid 800 flags 0x01, blkref #0: rel 1663/16385/16436 fork vm blk 0 FPW, blkref #1: rel 1663/16385/16436 blk 3
rmgr: Standby     len (rec/tot):     50/    50, tx:          0, lsn: 0/0301B8B8, prev 0/0301B890, desc: RUNNING_XACTS nextXid 841 latestCompletedXid 840 oldestRunningXid 841
"""
PG16 = ("rmgr: Heap        len (rec/tot):     59/    59, tx:        735, lsn: 0/03000060, prev 0/03000028, "
        "desc: INSERT off: 3, flags: 0x00, blkref #0: rel 1663/16384/16389 blk 0\n"
        "rmgr: Heap        len (rec/tot):     54/  7994, tx:        736, lsn: 0/030000A0, prev 0/03000060, "
        "desc: DELETE xmax: 736, off: 2, infobits: [KEYS_UPDATED], flags: 0x00, "
        "blkref #0: rel 1663/16384/16389 blk 0 FPW for WAL verification\n")


def test_parse_waldump_pg15_lines():
    df = wal.parse_waldump("pg_waldump: first record is after 0/3000028, skipping over 56 bytes\n" + PG15 + "garbage\n")
    assert list(df.columns) == wal.RECORD_COLUMNS
    assert len(df) == 7
    first = df.iloc[0]
    assert (first["lsn"], first["rmgr"], first["record"], first["rec_len"], first["tot_len"], first["tx"]) == \
        ("0/3000060", "Heap", "INSERT", 59, 59, 735)
    assert first["desc"] == "INSERT off 3 flags 0x00" and first["blkref"] == "#0: rel 1663/16384/16389 blk 0"
    assert first["prev"] == "0/3000028" and not first["fpw"]
    assert df["fpw"].tolist() == [False, False, True, True, False, True, False]
    assert df.loc[1, "blkref"] == "" and df.loc[1, "desc"].startswith("COMMIT 2026")
    assert df.loc[2, "desc"] == "HOT_UPDATE off 1 xmax 779 flags 0x21 ; new off 41 xmax 0"
    assert df.loc[3, "record"] == "FPI_FOR_HINT" and df.loc[3, "tx"] == 0
    assert df.loc[4, "blkref"].count("rel 1663/16385/16436") == 2
    assert df.loc[5, "lsn"] == "1/A0000028" and "fork vm" in df.loc[5, "blkref"]
    assert df.loc[6, "record"] == "RUNNING_XACTS" and df.loc[6, "blkref"] == ""
    assert df["tot_len"].dtype == "int64" and df["fpw"].dtype == bool


def test_parse_waldump_pg16_descriptions_with_commas():
    df = wal.parse_waldump(PG16)
    assert df["desc"].tolist() == ["INSERT off: 3, flags: 0x00",
                                   "DELETE xmax: 736, off: 2, infobits: [KEYS_UPDATED], flags: 0x00"]
    assert df["record"].tolist() == ["INSERT", "DELETE"]
    assert df["fpw"].tolist() == [False, True]


def test_parse_waldump_of_nothing_is_an_empty_table():
    df = wal.parse_waldump("")
    assert df.empty and list(df.columns) == wal.RECORD_COLUMNS
    assert wal.summarize(df).empty


def test_summarize_groups_records_by_kind():
    s = wal.summarize(wal.parse_waldump(PG15))
    assert s.iloc[0][["rmgr", "record", "bytes"]].tolist() == ["Heap2", "VISIBLE", 8251]
    assert s["records"].sum() == 7 and s["fpw"].sum() == 3


@pytest.mark.parametrize("stderr,end", [
    ("pg_waldump: error: error in WAL record at 0/301B910: invalid record length at 0/301B938: wanted 24, got 0", True),
    ("pg_waldump: error: could not find a valid record after 0/35CF160", True),
    ('pg_waldump: error: could not find file "000000010000000000000001": No such file or directory', False),
    ("", False)])
def test_end_of_wal_is_not_an_error(stderr, end):
    assert wal.end_of_wal(stderr) is end


def test_parse_inodes_of_ls():
    text = " 2154506 000000010000000000000012\n2154512 000000010000000000000013\n2155730 archive_status\n\n"
    assert wal.parse_inodes(text) == {"000000010000000000000012": 2154506, "000000010000000000000013": 2154512,
                                      "archive_status": 2155730}


def test_segment_numbers_of_file_names():
    seg = 16 * 1024 * 1024
    assert wal.segment_number("000000010000000000000003", seg) == 3
    assert wal.segment_number("0000000200000001000000FF", seg) == 256 + 255
    assert wal.segment_number("00000002.history", seg) is None
    assert wal.segment_number("000000010000000100000002") == 258  # 16 MB segments unless told
    name = wal_segment_name("1/FF000000", timeline=2)
    assert wal.segment_number(name, seg) == parse_lsn("1/FF000000") // seg


def test_only_the_segment_being_written_on_the_newest_timeline_is_current():
    # after a promotion at 0/5000100: timeline 1 was left in segment 5, timeline 2 writes segment 5 on
    names = ["000000010000000000000004", "000000010000000000000005", "000000010000000000000006",
             "000000020000000000000005", "000000020000000000000006", "00000002.history"]
    kinds = wal.wal_file_kinds(names, "0/5000100")
    assert kinds == ["past", "past", "past", "current", "future", "other"]
    assert kinds.count("current") == 1
    # one timeline: the segment of the LSN, the ones before and after it
    assert wal.wal_file_kinds(names[:3], "0/5FFFFFF") == ["past", "current", "future"]
    assert wal.wal_file_kinds(names[:3], "0/7000000") == ["past", "past", "past"]  # none written yet


def test_write_load_runs_are_read_from_the_log():
    log = ("2026-11-29 00:56:12.721 UTC [29481] LOG:  checkpoint starting: wal\n"
           "2026-11-29 00:56:13.000 UTC [29490] admin@crypto_db LOG:  lab.wal.write_load: max_wal_size=32MB rounds=3 "
           "wal_checkpoints=4 too_frequent=3\n"
           "2026-11-29 00:56:13.000 UTC [29490] admin@crypto_db CONTEXT:  PL/pgSQL function inline_code_block line 1\n"
           "2026-11-29 00:57:13.000 UTC [29490] admin@crypto_db LOG:  lab.wal.write_load: max_wal_size=1GB rounds=3 "
           "wal_checkpoints=0 too_frequent=0\n")
    assert write_load_runs(log) == [
        dict(max_wal_size="32MB", mb=32, rounds=3, wal_checkpoints=4, too_frequent=3),
        dict(max_wal_size="1GB", mb=1024, rounds=3, wal_checkpoints=0, too_frequent=0)]


LOG = """\
2026-11-29 00:55:04.515 UTC [29481] LOG:  checkpoint starting: immediate force wait
2026-11-29 00:56:12.630 UTC [29480] LOG:  parameter "max_wal_size" changed to "32MB"
2026-11-29 00:56:12.721 UTC [29481] LOG:  checkpoints are occurring too frequently (0 seconds apart)
2026-11-29 00:56:12.721 UTC [29481] HINT:  Consider increasing the configuration parameter "max_wal_size".
2026-11-29 00:56:12.721 UTC [29481] LOG:  checkpoint starting: wal
2026-11-29 00:56:12.809 UTC [29481] LOG:  checkpoint complete: wrote 1186 buffers (57.9%); 0 WAL file(s) added
2026-11-29 00:56:12.881 UTC [29481] LOG:  checkpoint starting: immediate force wait wal
2026-11-29 00:56:12.910 UTC [29480] LOG:  parameter "max_wal_size" changed to "256MB"
2026-11-29 00:57:00.000 UTC [29481] LOG:  checkpoint starting: time
2026-11-29 00:58:00.000 UTC [29481] LOG:  checkpoint starting: wal
"""


def test_count_checkpoints_since_a_moment():
    assert wal.count_checkpoints(LOG) == dict(checkpoints=5, wal_checkpoints=3, too_frequent=1)
    since = dt.datetime(2026, 11, 29, 0, 56, 12, 721400, tzinfo=dt.timezone.utc)  # log times are in ms
    assert wal.count_checkpoints(LOG, since) == dict(checkpoints=4, wal_checkpoints=3, too_frequent=1)
    late = dt.datetime(2026, 11, 29, 0, 56, 13, tzinfo=dt.timezone.utc)
    assert wal.count_checkpoints(LOG, late) == dict(checkpoints=2, wal_checkpoints=1, too_frequent=0)


def test_wal_checkpoints_by_max_wal_size_setting():
    assert wal_checkpoints_by_setting(LOG) == [[None, 0], [32, 2], [256, 1]]
    reset = 'x LOG:  parameter "max_wal_size" removed from configuration file, reset to default\n'
    assert wal_checkpoints_by_setting(LOG + reset) == [[None, 0], [32, 2], [256, 1], [None, 0]]
    assert wal_checkpoints_by_setting('parameter "max_wal_size" changed to "1GB"\n')[-1] == [1024, 0]


@pytest.mark.parametrize("version,has,lacks", [
    (130012, ["pg_stat_bgwriter", "NULL::bigint AS wal_fpi"], ["pg_stat_wal ", "pg_stat_checkpointer"]),
    (150018, ["pg_stat_bgwriter", "FROM pg_stat_wal"], ["pg_stat_checkpointer"]),
    (170002, ["pg_stat_checkpointer", "num_requested", "FROM pg_stat_wal"], ["pg_stat_bgwriter"])])
def test_counters_sql_follows_the_server_version(version, has, lacks):
    sql = wal._counters_sql(version)
    assert all(h in sql for h in has) and not any(x in sql for x in lacks)


def test_plot_volume_is_a_figure_with_a_bar_per_operation():
    df = pd.DataFrame(dict(operation=["INSERT", "INSERT (UNLOGGED)"], rows=[100, 100], wal_bytes=[7200, 40],
                           bytes_per_row=[72.0, 0.4]))
    fig = wal.plot_volume(df)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert len(ax.patches) == 2 and "100 rows" in ax.get_title()
    assert {t.get_text() for t in ax.get_yticklabels()} == {"INSERT", "INSERT (UNLOGGED)"}
    with pytest.raises(lab.LabError, match="wal_volume"):
        wal.plot_volume(pd.DataFrame())


def test_by_step_totals_images_only_where_there_is_one():
    recs = wal.parse_waldump(PG15).iloc[:3].assign(wal_compression="off", step=["a", "a", "b"])
    t = wal.by_step(recs)
    assert t[["step", "records", "wal_bytes", "fpw", "image_bytes"]].values.tolist() == [
        ["a", 2, 93, 0, 0], ["b", 1, 5829, 1, 5829 - 65]]


@pytest.mark.parametrize("op,rows,match", [("TRUNCATE", 10, "unknown operation"), ("INSERT", 0, "rows is"),
                                           ("INSERT", True, "rows is"), ("INSERT", 10**6, "rows is")])
def test_bad_operation_or_rows_is_a_lab_error_before_any_sql(op, rows, match):
    with pytest.raises(lab.LabError, match=match):
        wal.run_operation(None, op, rows)


# --- on a real cluster ------------------------------------------------------------------
def test_position_and_file_names_agree_with_the_server(cluster):
    # a new cluster can sit exactly on a file boundary (see below): write something first
    cluster.primary.execute("INSERT INTO test_replication (mensaje) VALUES ('posición')")
    pos = wal.position(cluster)
    row = pos.iloc[0]
    assert row["agree"] and row["wal_file"] == row["lab_wal_file"]
    assert parse_lsn(row["insert_lsn"]) >= parse_lsn(row["current_lsn"]) >= parse_lsn(row["flush_lsn"]) > 0
    names = wal.walfile_names(cluster, ["0/3000000", "0/3000001", row["current_lsn"]])
    # pg_walfile_name names the file of the byte *before* an exact segment boundary
    assert names["pg_walfile_name"].tolist()[:2] == ["000000010000000000000002", "000000010000000000000003"]
    assert names["agree"].tolist()[:2] == [False, True]
    assert names["lab_wal_segment_name"].iloc[0] == "000000010000000000000003"


def test_wal_files_lists_pg_wal_with_one_current_file(cluster):
    # after a WAL switch the next file is made only when its first record is written: write one
    cluster.primary.execute("INSERT INTO test_replication (mensaje) VALUES ('un archivo actual')")
    files = wal.wal_files(cluster)
    segs = files[files["kind"] != "other"]
    assert (files["kind"] == "current").sum() == 1
    assert (segs["size"] == 16 * 1024 * 1024).all()
    assert files["name"].tolist() == sorted(files["name"])
    current = files.loc[files["kind"] == "current", "name"].iloc[0]
    assert current == wal.position(cluster).loc[0, "lab_wal_file"]
    replica = wal.wal_files(cluster, cluster.node("replica1"))
    assert (replica["kind"] == "current").sum() <= 1 and len(replica)


def test_waldump_shows_your_own_transaction(cluster):
    p = cluster.primary
    start = p.scalar("SELECT pg_current_wal_lsn()")
    p.execute("INSERT INTO test_replication (mensaje) VALUES ('prueba waldump')")
    p.execute("UPDATE test_replication SET mensaje = 'prueba waldump 2' WHERE mensaje = 'prueba waldump'")
    p.execute("DELETE FROM test_replication WHERE mensaje = 'prueba waldump 2'")
    end = p.scalar("SELECT pg_current_wal_lsn()")
    recs = wal.waldump(p, start, end)
    heap = recs[recs["rmgr"] == "Heap"]
    assert [r.split("_")[-1] for r in heap["record"]] == ["INSERT", "UPDATE", "DELETE"]
    assert (recs["record"] == "COMMIT").sum() == 3
    assert len(set(heap["tx"])) == 3 and set(heap["tx"]) <= set(recs.loc[recs["record"] == "COMMIT", "tx"])
    assert all(parse_lsn(start) <= parse_lsn(x) < parse_lsn(end) for x in recs["lsn"])
    # to the end of the WAL: pg_waldump stops with an error there, which is no error
    open_ended = wal.waldump(p, start)
    assert open_ended["lsn"].tolist()[:len(recs)] == recs["lsn"].tolist()
    assert wal.waldump(p, end, end).empty
    assert len(wal.waldump(p, start, limit=2)) == 2


def test_waldump_of_wal_gone_or_not_yet_written_says_so(cluster):
    p = cluster.primary
    here = p.scalar("SELECT pg_current_wal_lsn()::text")
    with pytest.raises(lab.LabError, match="ahead of the WAL written so far"):
        wal.waldump(p, "FF/0")
    p.execute("SELECT pg_switch_wal()")  # make sure segment 1 is long gone here or says so
    with pytest.raises(lab.LabError, match="is gone"):
        wal.waldump(p, "0/10")
    assert parse_lsn(p.scalar("SELECT pg_current_wal_lsn()::text")) >= parse_lsn(here)


def test_run_operation_measures_each_operation(cluster):
    res = {op: wal.run_operation(cluster, op, 2000) for op in wal.OPERATIONS}
    for op, r in res.items():
        assert r["operation"] == op and r["rows"] == 2000
        assert r["wal_bytes"] == lsn_diff(r["end_lsn"], r["start_lsn"]) > 0
        recs = r["records"]
        assert r["wal_records"] == len(recs) and (recs["record"] == "COMMIT").sum() == 1
        assert recs["tx"].nunique() == 1  # one transaction
        assert op in wal.describe(r) and "of WAL" in wal.describe(r)
    assert (res["INSERT"]["records"]["record"].str.startswith("INSERT")).sum() == 2000
    assert res["COPY"]["wal_records"] < res["INSERT"]["wal_records"] / 10  # COPY logs pages of rows
    assert res["CREATE INDEX"]["fpw"] > 0  # an index build logs whole pages
    assert res["INSERT (UNLOGGED)"]["wal_records"] == 1  # its COMMIT, nothing else
    assert res["INSERT (UNLOGGED)"]["wal_bytes"] < res["INSERT"]["wal_bytes"] / 100
    assert res["UPDATE"]["wal_bytes"] > res["DELETE"]["wal_bytes"]
    assert wal.run_operation(cluster, "delete", 1)["rows"] == 1  # names are case-insensitive


def test_wal_volume_and_its_bar_chart(cluster, capsys):
    vol = wal.wal_volume(cluster, rows=1000, operations=["INSERT", "INSERT (UNLOGGED)"])
    assert vol["operation"].tolist() == ["INSERT", "INSERT (UNLOGGED)"]
    assert "records" not in vol and (vol["rows"] == 1000).all()
    assert vol["wal_bytes"].iloc[0] > 1000 * 50 > vol["wal_bytes"].iloc[1]
    assert "1/2 INSERT" in capsys.readouterr().out
    assert isinstance(wal.plot_volume(vol), Figure)


def test_full_page_write_after_a_checkpoint_and_compression(cluster):
    p = cluster.primary
    off = wal.full_page_writes(cluster)
    first, second = (off[off["step"] == s] for s in wal.FPW_STEPS)
    assert first["fpw"].sum() == 1 and second["fpw"].sum() == 0
    image = first[first["fpw"]].iloc[0]
    assert image["rmgr"] == "Heap" and image["tot_len"] > image["rec_len"] + 4000
    try:
        p.set(wal_compression="on")
        on = wal.full_page_writes(cluster)
    finally:
        p.set(wal_compression=None)
    assert p.scalar("SHOW wal_compression") == "off"
    t = wal.by_step(off, on).set_index(["wal_compression", "step"])
    assert t["image_bytes"].loc[("off", wal.FPW_STEPS[0])] > 2 * t["image_bytes"].loc[("pglz", wal.FPW_STEPS[0])] > 0
    assert t["image_bytes"].loc[("off", wal.FPW_STEPS[1])] == 0


def test_counters_and_changes(cluster):
    before = wal.counters(cluster)
    assert before.loc[0, "wal_records"] > 0 and before.loc[0, "pg_wal_files"] >= 1
    assert before.loc[0, "redo_wal_file"] == wal_segment_name(before.loc[0, "redo_lsn"])
    cluster.primary.execute("INSERT INTO test_replication (mensaje) VALUES ('contador')")
    after = wal.counters(cluster)
    ch = wal.changes(before, after)
    assert list(ch.index) == ["before", "after", "change"]
    assert ch.loc["change", "wal_bytes"] == after.loc[0, "wal_bytes"] - before.loc[0, "wal_bytes"]


def test_switch_and_checkpoint_follows_each_file(cluster):
    before = wal.counters(cluster)
    current = wal.position(cluster).loc[0, "lab_wal_file"]
    df = wal.switch_and_checkpoint(cluster)
    assert set(df["fate"]) <= {"kept", "recycled", "removed", "new"}
    was = df[df["name_before"] == current].iloc[0]
    assert was["kind_before"] == "current" and was["kind_after"] == "past"  # pg_switch_wal moved on
    assert (df["kind_after"] == "current").sum() == 1
    assert (df.loc[df["fate"] == "recycled", "kind_after"] == "future").all()
    after = wal.counters(cluster)
    assert after.loc[0, "checkpoints_req"] > before.loc[0, "checkpoints_req"]
    assert parse_lsn(after.loc[0, "redo_lsn"]) > parse_lsn(before.loc[0, "redo_lsn"])
    keep = wal.retention(cluster)
    assert any("replica1" in r for r in keep["reason"]) and keep["reason"].str.startswith("redo point").any()
    assert keep["oldest"].sum() >= 1
    oldest_needed = keep.loc[keep["oldest"], "wal_file"].iloc[0]
    assert keep.attrs["oldest_in_pg_wal"] <= oldest_needed  # what is needed is still there


def test_break_it_and_repair_it(cluster):
    p = cluster.primary
    hint = check("02.4", cluster)
    assert not hint.ok and "nothing broken yet" in hint.message
    try:
        p.set(max_wal_size="32MB")
        assert "now write WAL" in check("02.4", cluster).message
        broken = wal.write_load(cluster, rounds=3)
        said = check("02.4", cluster)
        assert not said.ok and "Now repair it" in said.message
        assert f"counted {broken.loc[0, 'wal_checkpoints']} checkpoint(s)" in said.message
    finally:
        p.set(max_wal_size=None)
    repaired = wal.write_load(cluster, rounds=3)
    assert broken.loc[0, "max_wal_size"] == "32MB" and repaired.loc[0, "max_wal_size"] != "32MB"
    assert broken.loc[0, "rows_updated"] == repaired.loc[0, "rows_updated"] > 0
    assert broken.loc[0, "wal_checkpoints"] >= 1 and broken.loc[0, "too_frequent"] >= 1
    assert repaired.loc[0, "wal_checkpoints"] == 0
    # the same work wrote more full-page images, so more WAL, when checkpoints came more often
    assert broken.loc[0, "wal_fpi"] > repaired.loc[0, "wal_fpi"]
    assert broken.loc[0, "wal_bytes"] > repaired.loc[0, "wal_bytes"]
    log = wal.checkpoint_log(cluster, last=40)
    assert re.search(r"checkpoint starting: .*wal", log) and "HINT:  Consider increasing" in log
    assert all("checkpoint" in ln or "max_wal_size" in ln for ln in log.splitlines())
    ok = check("02.4", cluster)
    assert ok.ok and "broken, then repaired" in ok.message
    # the numbers it gives are those of the rows the student saw, even after a second break (a re-run)
    assert f"max_wal_size = 32MB counted {broken.loc[0, 'wal_checkpoints']} checkpoint(s)" in ok.message
    assert f"your next run at {repaired.loc[0, 'max_wal_size']} counted 0" in ok.message
    runs = write_load_runs(p.logs(tail=5000))
    assert [(r["max_wal_size"], r["wal_checkpoints"]) for r in runs] == [
        ("32MB", broken.loc[0, "wal_checkpoints"]), (repaired.loc[0, "max_wal_size"], 0)]
    assert runs[0]["too_frequent"] == broken.loc[0, "too_frequent"]


# --- exercises ----------------------------------------------------------------------------------
def _records_of(cluster, sql):
    p = cluster.primary
    start = p.scalar("SELECT pg_current_wal_lsn()")
    p.execute(sql)
    # the insert position: a read that logs a hint-bit image does not wait for it to be written
    return wal.waldump(p, start, p.scalar("SELECT pg_current_wal_insert_lsn()"))


def test_02_1_your_commit_in_the_wal(cluster):
    assert "replace ... with your answer" in check("02.1", cluster).message
    assert "no row of test_replication starts with 'wal de '" in check("02.1", cluster, answer="0/0").message
    noted = cluster.primary.scalar("SELECT pg_current_wal_lsn()")
    recs = _records_of(cluster, "INSERT INTO test_replication (mensaje) VALUES ('wal de Ada')")
    # the LSN noted before the INSERT is where its Heap INSERT starts (or the page header before it): not the answer
    heap = recs[(recs["rmgr"] == "Heap") & recs["record"].str.startswith("INSERT")].iloc[0]
    assert not check("02.1", cluster, answer=noted).ok
    not_yet = check("02.1", cluster, answer=heap["lsn"])
    assert not not_yet.ok and "is your Heap INSERT" in not_yet.message and "Transaction COMMIT" in not_yet.message
    commit = recs[(recs["rmgr"] == "Transaction") & (recs["tx"] == heap["tx"])].iloc[0]
    ok = check("02.1", cluster, answer=commit["lsn"])
    assert ok.ok and f"transaction {heap['tx']}" in ok.message and "COMMIT" in ok.message
    index = recs[recs["rmgr"] == "Btree"].iloc[0]
    assert "its Transaction COMMIT comes after it" in check("02.1", cluster, answer=index["lsn"]).message
    inside = lab.format_lsn(parse_lsn(heap["lsn"]) + 8)
    assert "no WAL record starts at" in check("02.1", cluster, answer=inside).message
    assert "answer with an LSN" in check("02.1", cluster, answer="Heap INSERT").message
    other = _records_of(cluster, "INSERT INTO test_replication (mensaje) VALUES ('otra')")
    other_commit = other[other["rmgr"] == "Transaction"].iloc[0]
    assert "not to the one that inserted" in check("02.1", cluster, answer=other_commit["lsn"]).message


def test_02_2_the_wal_file_being_written(cluster):
    files = wal.wal_files(cluster)
    current = files.loc[files["kind"] == "current", "name"].iloc[0]
    assert check("02.2", cluster, answer=current.lower()).ok
    past = files.loc[files["kind"] == "past", "name"]
    if len(past):
        assert "older file" in check("02.2", cluster, answer=past.iloc[0]).message
    future = files.loc[files["kind"] == "future", "name"]
    if len(future):
        assert "recycled file" in check("02.2", cluster, answer=future.iloc[-1]).message
    assert "no such file" in check("02.2", cluster, answer="00000001000000FF000000FF").message
    assert "24 hex digits" in check("02.2", cluster, answer="0/3000060").message
    assert not check("02.2", cluster).ok


def test_02_3_a_full_page_image_of_yours(cluster):
    p = cluster.primary
    p.execute("SELECT count(*) FROM test_replication")  # sets hint bits now, not after the checkpoint
    p.execute("CHECKPOINT")
    recs = _records_of(cluster, "UPDATE test_replication SET mensaje = mensaje WHERE id = (SELECT min(id) FROM "
                                "test_replication)")
    image = recs[recs["fpw"] & (recs["tx"] != 0)].iloc[0]
    ok = check("02.3", cluster, answer=image["lsn"])
    assert ok.ok and "full-page image" in ok.message
    commit = recs[recs["record"] == "COMMIT"].iloc[0]
    assert "carries no page image" in check("02.3", cluster, answer=commit["lsn"]).message
    assert "answer with the LSN" in check("02.3", cluster, answer=42).message
    # an image logged for hint bits belongs to no transaction: a new table, read after a checkpoint
    p.execute("CREATE TABLE wal_hint (id int)")
    p.execute("INSERT INTO wal_hint VALUES (1)")
    p.execute("CHECKPOINT")
    hint = _records_of(cluster, "SELECT count(*) FROM wal_hint")
    p.execute("DROP TABLE wal_hint")
    image = hint[hint["record"] == "FPI_FOR_HINT"].iloc[0]
    assert "belongs to no transaction" in check("02.3", cluster, answer=image["lsn"]).message


def test_exercises_of_chapter_02_are_listed():
    df = lab.checks.exercises("02")
    assert df["exercise"].tolist() == ["02.1", "02.2", "02.3", "02.4"]
    assert df["answer"].tolist() == [True, True, True, False]


# --- widget -----------------------------------------------------------------------------------------
def test_operation_panel_runs_the_chosen_operation(cluster):
    panel = wal.operation_panel(cluster)
    assert isinstance(panel, w.VBox)
    op, rows, run = panel.children[0].children
    message = panel.children[1]
    assert list(op.options) == list(wal.OPERATIONS)
    op.value, rows.value = "DELETE", 500
    run.click()
    assert message.value.startswith("DELETE of 500 rows wrote") and "of WAL" in message.value
    assert cluster.primary.scalar("SELECT count(*) FROM wal_demo") == 0  # the rows were deleted


def test_cleanup_drops_the_chapter_tables(cluster):
    wal.run_operation(cluster, "INSERT", 10)
    wal.cleanup(cluster)
    left = cluster.primary.scalar("SELECT count(*) FROM pg_class WHERE relname IN ('wal_demo', 'wal_fpw', 'wal_load')")
    assert left == 0
