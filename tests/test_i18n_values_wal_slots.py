"""The values lab.wal, lab.slots, lab.backups and lab.archive put in their tables, in Spanish: a WAL
file's kind and fate, the steps of full_page_writes, the rows of changes(), the phases of the slot
experiments, the rows of recovery_settings, the labels of the base backups.  What stays English:
column names, PostgreSQL's own words (``streaming``, ``reserved``, ``lost``), and the archive's file
kinds (``contents(cluster, kind='timeline history')`` takes them back as an argument).

Pure functions first (no server), then the module's cluster (``integration``)."""
from __future__ import annotations

import pandas as pd
import pytest

import lab
from lab import archive, backups, slots, wal
from lab.checks import check
from lab.i18n import _

NAMES = ["000000010000000000000005", "000000010000000000000006", "000000020000000000000005",
         "000000020000000000000006", "00000002.history"]


# --- pure functions -------------------------------------------------------------------------------
def test_the_kind_of_a_wal_file_in_spanish_and_in_english():
    assert wal.wal_file_kinds(NAMES, "0/5000100") == ["past", "past", "current", "future", "other"]
    lab.set_language("es")
    assert wal.wal_file_kinds(NAMES, "0/5000100") == ["pasado", "pasado", "actual", "futuro", "otro"]
    assert _(wal.CURRENT) == "actual" and _(wal.FUTURE) == "futuro"  # what the lab compares with


def _counters(wal_bytes: int, files: int) -> pd.DataFrame:
    row = dict.fromkeys(wal.COUNTER_COLUMNS, 0)
    row.update(wal_bytes=wal_bytes, pg_wal_files=files, redo_lsn="0/3000028", redo_wal_file="0" * 24,
               checkpoint_time=pd.Timestamp("2026-01-01", tz="UTC"))
    return pd.DataFrame([row])


def test_changes_names_its_rows_in_spanish_and_still_subtracts():
    english = wal.changes(_counters(100, 3), _counters(250, 4))
    assert list(english.index) == ["before", "after", "change"]
    lab.set_language("es")
    ch = wal.changes(_counters(100, 3), _counters(250, 4))
    assert list(ch.index) == ["antes", "después", "cambio"]
    assert ch.loc["cambio", "wal_bytes"] == 150 and ch.loc["cambio", "pg_wal_files"] == 1


def test_by_step_keeps_the_spanish_steps_in_their_order():
    lab.set_language("es")
    first, second = (_(s) for s in wal.FPW_STEPS)
    assert (first, second) == ("1.er UPDATE tras el CHECKPOINT", "2.º UPDATE, misma página")
    records = pd.DataFrame(dict(wal_compression="off", step=[first, first, second], lsn=["0/1", "0/2", "0/3"],
                                rec_len=[80, 40, 80], tot_len=[8000, 40, 80], fpw=[True, False, False]))
    t = wal.by_step(records)
    assert t["step"].tolist() == [first, second]
    assert t["image_bytes"].tolist() == [7920, 0] and t["fpw"].tolist() == [1, 0]


def _backup_dir(tmp_path, conninfo: str, slot: "str | None", signal: bool):
    (tmp_path / "postgresql.auto.conf").write_text(
        f"primary_conninfo = '{conninfo}'\n" + (f"primary_slot_name = '{slot}'\n" if slot else ""))
    if signal:
        (tmp_path / "standby.signal").write_text("")
    return tmp_path


def test_recovery_settings_rows_in_spanish(tmp_path):
    path = _backup_dir(tmp_path, "user=replicator host=10.0.0.1 port=5432 sslmode=prefer gssencmode=disable",
                       None, True)
    lab.set_language("es")
    s = backups.recovery_settings(path).set_index("setting")["value"]
    assert s["standby.signal"] == "presente"
    assert s["primary_conninfo: otras palabras clave"] == "sslmode=prefer gssencmode=disable"
    assert s["primary_slot_name"] == "(sin definir: no hay slot)"
    assert s["primary_conninfo: user"] == "replicator"  # the keywords are libpq's: not translated
    (path / "standby.signal").unlink()
    assert backups.recovery_settings(path).set_index("setting")["value"]["standby.signal"].startswith("ausente")


def test_recovery_settings_rows_in_english(tmp_path):
    path = _backup_dir(tmp_path, "user=replicator sslmode=prefer", "replica1", True)
    s = backups.recovery_settings(path).set_index("setting")["value"]
    assert s["standby.signal"] == "present" and s["primary_slot_name"] == "replica1"
    assert s["primary_conninfo: other keywords"] == "sslmode=prefer"


def test_the_archives_file_kinds_stay_english_they_are_an_argument():
    lab.set_language("es")
    assert archive.file_kind("00000002.history") == "timeline history"
    assert archive.file_kind("000000010000000000000003") == "segment"


# --- on a cluster -----------------------------------------------------------------------------------
@pytest.mark.integration
def test_the_files_of_pg_wal_their_kinds_and_fates_in_spanish(cluster):
    lab.set_language("es")
    # after a WAL switch the next file is made only when its first record is written: write one
    cluster.primary.execute("INSERT INTO test_replication (mensaje) VALUES ('un fichero actual')")
    files = wal.wal_files(cluster)
    assert set(files["kind"]) <= {"pasado", "actual", "futuro", "otro"}
    assert (files["kind"] == "actual").sum() == 1
    current = files.loc[files["kind"] == "actual", "name"].iloc[0]
    assert check("02.2", cluster, answer=current).ok  # the exercise compares the same words
    df = wal.switch_and_checkpoint(cluster)
    assert set(df["fate"]) <= {"conservado", "reciclado", "borrado", "nuevo"}
    was = df[df["name_before"] == current].iloc[0]
    assert was["kind_before"] == "actual" and was["kind_after"] == "pasado"
    assert (df.loc[df["fate"] == "reciclado", "kind_after"] == "futuro").all()
    keep = wal.retention(cluster)
    assert keep.attrs["oldest_in_pg_wal"] is not None and not keep.attrs["oldest_in_pg_wal"].endswith(".history")
    assert keep["reason"].str.startswith("punto de redo").any()


@pytest.mark.integration
def test_full_page_writes_steps_in_spanish(cluster):
    lab.set_language("es")
    fpw = wal.full_page_writes(cluster)
    t = wal.by_step(fpw).set_index("step")
    assert list(t.index) == ["1.er UPDATE tras el CHECKPOINT", "2.º UPDATE, misma página"]
    assert t.loc["1.er UPDATE tras el CHECKPOINT", "fpw"] >= 1 and t.loc["2.º UPDATE, misma página", "fpw"] == 0


@pytest.mark.integration
def test_the_slot_experiments_phases_in_spanish(cluster, capsys):
    lab.set_language("es")
    df = slots.retention_while_stopped(cluster, "replica1", segments=2)
    phases = df["phase"].unique().tolist()
    assert phases[0] == "streaming"  # PostgreSQL's word, as pg_stat_replication says it
    assert phases[1:] == ["réplica detenida", "poniéndose al día", "al día, tras un CHECKPOINT"], phases
    assert "replica1 detenida" in capsys.readouterr().out
    growth = slots.watch_slot(cluster, None, segments=1, quiet=True)
    assert set(growth["phase"]) == {"escribiendo"}
    assert set(slots.watch_slot(cluster, None, segments=1, phase="mío", quiet=True)["phase"]) == {"mío"}
    replica = cluster.node("replica1")
    replica.stop()
    try:
        assert slots.inactive_slots(cluster)["owner"].tolist() == ["replica1 (detenida)"]
    finally:
        replica.start()


@pytest.mark.integration
def test_a_base_backup_by_hand_is_labelled_in_spanish(cluster, capsys):
    lab.set_language("es")
    path = backups.take_base_backup(cluster, name="es")
    try:
        assert backups.backup_label(path)["LABEL"] == "hecha a mano"
        s = backups.recovery_settings(path).set_index("setting")["value"]
        assert s["standby.signal"] == "presente" and s["primary_slot_name"] == "(sin definir: no hay slot)"
        # a label with accents (chapter 10's) goes through pg_basebackup and back unchanged
        label = _("chapter 10: point-in-time recovery")
        assert label == "capítulo 10: recuperación a un punto en el tiempo"
        again = backups.take_base_backup(cluster, name="es", label=label, quiet=True)
        assert backups.backup_label(again)["LABEL"] == label
        assert label in backups.known_backups(cluster)["label"].tolist()
    finally:
        backups.clean(cluster)


@pytest.mark.integration
def test_the_archive_backlog_phase_in_spanish(cluster):
    lab.set_language("es")
    try:
        archive.enable(cluster, restart=True, quiet=True)
        df = archive.watch_backlog(cluster, segments=1, quiet=True)
        assert set(df["phase"]) == {"escribiendo"}
    finally:
        archive.tidy(cluster, quiet=True)
