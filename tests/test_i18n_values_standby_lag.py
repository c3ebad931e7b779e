"""The values chapters 01, 04 and 05 show in their tables speak Spanish when chosen (lab/standby.py,
lab/lag.py, lab/sync.py, lab/workload.py): row labels, phases and words the lab makes up; setting
names, PostgreSQL's own words and the names a student passes back in code stay as they are.

Pure functions first (no server), then what only a real cluster makes (integration)."""
from __future__ import annotations

import io

import pandas as pd
import pytest
from matplotlib.figure import Figure

from lab import i18n, lag, standby, sync, workload


def _run(finished: bool, **settings) -> standby.ConflictRun:
    """A ConflictRun as query_conflict returns one, from made-up numbers (its samples made in English)."""
    samples = pd.DataFrame(dict(t=[0.0, 0.1, 0.2, 0.3], lag_bytes=[100, 2000, 4000, 0],
                                query=["running", "running", "finished" if finished else "canceled", "finished"]))
    return standby.ConflictRun(
        replica="replica1", settings=dict(hot_standby_feedback=settings.get("feedback", "off"),
                                          max_standby_streaming_delay=settings.get("delay", "1s"),
                                          recovery_min_apply_delay="0"),
        rows_seen=10_000, query_finished=finished, query_ran_s=1.234 if not finished else 3.0,
        error=None if finished else "canceling statement due to conflict with recovery", sqlstate=None if finished
        else "40001", deleted=5000, vacuum=dict(removed=0 if finished else 5000, remain=5000,
                                                dead_not_removable=5000 if finished else 0),
        vacuum_text="", primary_xmin_for_replica="899" if finished else None, n_dead_tup_after_vacuum=0,
        confl_snapshot_before=3, confl_snapshot_after=3 if finished else 4, replayed_vacuum_after_s=1.75,
        query_ended_s=0.15, vacuum_lsn="0/3000000", samples=samples)


# --- no server --------------------------------------------------------------------------------------
def test_a_conflict_runs_summary_names_its_rows_in_spanish(spanish):
    canceled, finished = _run(False), _run(True, feedback="on")
    table = standby.compare([canceled, finished])
    assert table.columns.tolist() == ["feedback off, retardo máx. 1s", "feedback on, retardo máx. 1s"]
    assert table.index.tolist() == [
        "hot_standby_feedback", "max_standby_streaming_delay", "consulta en la réplica",
        "duración de la consulta (s)", "sqlstate", "confl_snapshot (+)", "filas borradas en el primario",
        "eliminadas por VACUUM", "muertas pero aún no eliminables", "n_dead_tup tras el VACUUM",
        "xmin que el primario conserva para la réplica", "VACUUM reproducido al cabo de (s)",
        "retraso de reproducción máximo (bytes)"]
    assert table.loc["consulta en la réplica"].tolist() == ["CANCELADA", "terminada"]
    # the settings' values and PostgreSQL's SQLSTATE are PostgreSQL's
    assert table.loc["hot_standby_feedback"].tolist() == ["off", "on"]
    assert table.loc["sqlstate"].tolist() == ["40001", "-"]
    assert table.loc["xmin que el primario conserva para la réplica"].tolist() == ["-", "899"]
    assert table.loc["retraso de reproducción máximo (bytes)"].tolist() == [4000, 4000]
    assert canceled.summary().columns.tolist() == ["feedback off, retardo máx. 1s"]


def test_the_same_summary_in_english_keeps_its_english_rows():
    row = _run(False).row()
    assert row["replica query"] == "CANCELED" and row["VACUUM removed"] == 5000
    assert row["dead but not yet removable"] == 0 and row["max replay lag (bytes)"] == 4000


def test_the_conflict_figure_finds_where_the_query_ended_in_any_language(spanish):
    run = _run(False)  # its samples' words are English: the figure does not read them
    fig = standby.conflict_figure([run])
    ax = fig.axes[0]
    dots = [line for line in ax.lines if line.get_marker() == "o"]
    assert len(dots) == 1 and dots[0].get_xdata()[0] == 0.2  # the first sample after query_ended_s
    assert ax.get_xlabel().startswith("segundos")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["feedback off, retardo máx. 1s"]


def test_the_chapters_setups_are_translated_and_any_other_label_is_kept(spanish):
    assert i18n._(sync.SETUPS[0]) == "standby al lado"
    assert i18n._(sync.SETUPS[1]) == "+20 ms de ida y vuelta"
    near = pd.DataFrame(dict(setup="standby al lado", synchronous_commit=["local", "on"], tps=[1000.0, 800.0],
                             latency_ms_p50=[0.6, 1.1]))
    fig = sync.cost_figure(near)
    assert isinstance(fig, Figure)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["standby al lado"]
    assert fig.axes[0].get_xticklabels()[0].get_text() == "local"  # synchronous_commit's values are PostgreSQL's


def test_a_writers_outcomes_stay_names_in_spanish(spanish):
    """acknowledged / failed / unknown are names (the log file keeps them, summary() names its columns after
    them, chapter 06's code filters on them): the Spanish chapter explains them, the lab does not translate them."""
    log = pd.DataFrame(dict(seq=[1, 2, 3], outcome=["acknowledged", "failed", "unknown"], sent_at=[0.0, 0.1, 0.2],
                            done_at=[0.01, 0.11, 0.21], latency_s=[0.01, 0.01, 0.01]))
    s = workload.summarize(log).iloc[0]
    assert (s["acknowledged"], s["failed"], s["unknown"]) == (1, 1, 1)
    assert workload.OUTCOMES == ("acknowledged", "failed", "unknown")


def test_the_lag_phases_read_in_spanish(spanish):
    samples = pd.DataFrame(dict(t=[0.0, 0.1, 0.2, 0.3, 0.4], replica="replica1",
                                phase=["+0 ms", "+20 ms", i18n._("link cut"), i18n._("healed"), i18n._("healed")],
                                behind_bytes=[0, 10, 500, 40, 0], replay_lag_s=[0.001, 0.041, None, 0.002, 0.001],
                                replay_lag_bytes=[0, 10, 500, 40, 0]))
    assert samples["phase"].tolist()[2:4] == ["enlace cortado", "restablecido"]
    out = lag.phase_summary(samples).set_index("phase")
    assert out.index.tolist() == ["+0 ms", "+20 ms", "enlace cortado", "restablecido"]
    assert out.loc["+20 ms", "added_round_trip_ms"] == 40
    assert pd.isna(out.loc["enlace cortado", "added_round_trip_ms"])
    fig = lag.lag_figure(samples)
    assert {"enlace cortado", "restablecido"} <= {t.get_text() for t in fig.axes[0].texts}


# --- on a real cluster -------------------------------------------------------------------------------
@pytest.mark.integration
def test_query_conflict_and_pause_timeline_speak_spanish(cluster, spanish):
    try:
        run = standby.query_conflict(cluster, "replica1", seconds=0.5, rows=1000, quiet=True)
        assert run.query_finished  # the default 30 s delay: replay waits for the query
        assert set(run.samples["query"]) <= {"en marcha", "terminada"} and "terminada" in set(run.samples["query"])
        column = run.summary()[run.label]
        assert column["consulta en la réplica"] == "terminada"
        assert column["filas borradas en el primario"] == 500
        buf = io.BytesIO()
        standby.conflict_figure(run).savefig(buf, format="png")
        df = standby.pause_timeline(cluster, "replica1", before=0.3, paused=0.5, after=0.3, quiet=True)
        assert df["phase"].unique().tolist() == ["antes", "en pausa", "después"]
        assert set(df["replay"]) <= {"not paused", "pause requested", "paused"}  # PostgreSQL's words
        by_phase = df.groupby("phase", sort=False)["lag_bytes"].max()
        assert by_phase.index.tolist() == ["antes", "en pausa", "después"]
    finally:
        standby.tidy(cluster)


@pytest.mark.integration
def test_lag_under_latency_and_the_sampler_speak_spanish(cluster, spanish):
    df = lag.lag_under_latency(cluster, "replica1", latencies=(0,), seconds=0.4, cut_seconds=0.4, rate=200,
                               live=False, quiet=True)
    phases = [p for p in df["phase"].unique() if p]  # a first sample may come before the first phase
    assert phases == ["+0 ms", "enlace cortado", "restablecido"]
    assert [p for p in lag.phase_summary(df)["phase"] if p] == ["+0 ms", "enlace cortado", "restablecido"]
    replica = cluster.node("replica1")
    replica.stop()
    try:
        row = lag.LagSampler(cluster, every=0.1, duration=5).sample()[0]
        assert row["state"] == "sin conexión" and row["replica"] == "replica1"
    finally:
        replica.start()
        cluster.wait_streaming()


@pytest.mark.integration
def test_commit_cost_names_the_chapters_setup_in_spanish(cluster, spanish):
    near = sync.commit_cost(cluster, modes=("local",), seconds=0.2, label="standby next door", quiet=True)
    mine = sync.commit_cost(cluster, modes=("local",), seconds=0.2, label="mi portátil", quiet=True)
    table = sync.cost_table(near, mine)
    assert table["setup"].tolist() == ["standby al lado", "mi portátil"]
    assert table["synchronous_commit"].tolist() == ["local", "local"]
