"""The values in the tables of chapters 06, 08 and 09 (lab.failover, lab.autofailover, lab.ha,
lab.logical) speak Spanish when the lab does: event names, phases, the split brain's rows,
kinds, accepted/refused, the capability labels, pgoutput's tuples.  Pure functions without a
server first; then the values only a real cluster makes (a split brain, a subscriber)."""
from __future__ import annotations

import pandas as pd
import pytest

import lab
from lab import autofailover, failover, logical

from labtest.pgoutput import DELETE_ETH, INSERT_BTC, RELATION, UPDATE_SOL


def _tidy(c):
    """What this module's cluster needs put back: the analytics server and its subscription, then
    chapter 06's changes (tests/labtest/clusters.py's ``two`` fixture calls it)."""
    try:
        logical.tidy(c)
    finally:
        failover.tidy(c)


TIDY = _tidy


# --- lab.autofailover: events and the quorum table ---------------------------------------------------
def _samples():
    # pg1 leads and renews, the fault at 0.6 s, the key gone at 1.0 s, pg2 holds it and writes at 1.5 s
    return pd.DataFrame(dict(t=[0.0, 0.5, 1.0, 1.5], holder=["pg1", "pg1", None, "pg2"], left_s=[10, 12, None, 20],
                             pg1=[True, True, False, None], pg2=[False, False, False, True]))


def _app():
    return pd.DataFrame(dict(outcome=["acknowledged"] * 2, done_at=[0.2, 1.4], latency_s=[0.001, 0.002]))


def _run(events):
    empty = pd.DataFrame(columns=["outcome", "done_at", "latency_s"])
    return autofailover.AutoFailover(
        fault="machine", config=dict(ttl=10, loop_wait=1, retry_timeout=5, primary_start_timeout=0),
        synchronous="off", old="pg1", new="pg2", t_fault=0.6, log=_app(), stale_log=empty, samples=_samples(),
        events=events, lost=pd.DataFrame(columns=["done_at"]))


def test_the_events_are_named_in_spanish(spanish):
    events = autofailover._events(_samples(), _app(), 0.6, "pg1")
    assert events["event"].tolist() == ["última renovación del lease", "fallo", "lease caducado",
                                        "antiguo primario de solo lectura", "primera escritura confirmada",
                                        "nuevo líder elegido", "promovido", "antiguo primario inalcanzable",
                                        "el lease caducaría"]
    assert events.set_index("event").loc["fallo", "detail"] == "en pg1"


def test_a_run_finds_its_events_in_the_language_they_were_named_in(spanish):
    run = _run(autofailover._events(_samples(), _app(), 0.6, "pg1"))
    assert run.rto_s == 0.8  # "primera escritura confirmada" is "first acknowledged write"
    assert run.acked_after_expiry == 0  # found by "lease caducado"
    s = run.summary().iloc[0]
    assert s["rto_s"] == 0.8 and s["new_leader"] == "pg2"
    lab.set_language(None)  # made in Spanish, read in English: the same moments
    assert run.rto_s == 0.8 and run.acked_after_expiry == 0
    english = _run(autofailover._events(_samples(), _app(), 0.6, "pg1"))
    assert "first acknowledged write" in english.events["event"].tolist() and english.rto_s == 0.8


def test_the_figure_labels_the_events_in_spanish(spanish):
    fig = _run(autofailover._events(_samples(), _app(), 0.6, "pg1")).figure()
    texts = {t.get_text().strip() for t in fig.axes[0].texts}
    assert {"fallo", "nuevo líder elegido", "lease caducado"} <= texts
    solid = [ln for ln in fig.axes[0].lines if ln.get_linestyle() == "-"]
    assert len(solid) == 1 and solid[0].get_xdata()[0] == 0.0  # the fault's line, found by its Spanish name


def test_the_quorum_table_speaks_spanish(spanish):
    samples = pd.DataFrame(dict(t=[9.5, 10.2, 11.2, 12.2], holder=["pg1", None, None, "pg2"],
                                left_s=[10, None, None, 20], pg1=[True, False, None, False],
                                pg2=[False, False, False, True]))
    log = pd.DataFrame(dict(outcome=["acknowledged", "failed", "acknowledged"], done_at=[9.6, 10.5, 12.3]))
    rows = pd.DataFrame(autofailover._quorum_seconds(samples, log, t0=10.0, t_back=12.0, t_end=12.5))
    assert rows["phase"].tolist() == ["antes", "quórum perdido", "quórum perdido", "restablecido"]
    assert rows["leader_key"].tolist() == ["pg1", "(sin respuesta)", "(sin respuesta)", "pg2"]
    assert rows["writable"].tolist() == ["pg1", "ninguno", "ninguno", "pg2"]
    assert rows["acknowledged"].tolist() == [1, 0, 0, 1]


def test_the_quorum_table_in_english_as_before():
    samples = pd.DataFrame(dict(t=[9.5, 10.2], holder=["pg1", None], left_s=[10, None], pg1=[True, False]))
    rows = autofailover._quorum_seconds(samples, pd.DataFrame(columns=["outcome", "done_at"]), 10.0, 12.0, 10.5)
    assert [(r["phase"], r["leader_key"], r["writable"]) for r in rows] == [
        ("before", "pg1", "pg1"), ("quorum lost", "(no answer)", "none")]


# --- lab.logical: pgoutput's tuples, kinds ---------------------------------------------------------------
def _pgoutput():
    return pd.DataFrame({"lsn": ["0/1", "0/2", "0/3", "0/4"], "data": [RELATION, INSERT_BTC, UPDATE_SOL, DELETE_ETH]})


def test_pgoutput_tuples_are_named_in_spanish(spanish):
    df = logical.parse_pgoutput(_pgoutput())
    assert df["message"].tolist() == ["RELATION", "INSERT", "UPDATE", "DELETE"]  # the protocol's names
    assert df["values"].tolist()[1:] == ["nueva: moneda=BTC",
                                         "antigua: moneda=SOL, precio=1 | nueva: moneda=SOL, precio=(sin cambios)",
                                         "clave: moneda=ETH"]


def test_pgoutput_tuples_in_english():
    assert logical.parse_pgoutput(_pgoutput())["values"].tolist()[1:] == [
        "new: moneda=BTC", "old: moneda=SOL, precio=1 | new: moneda=SOL, precio=(unchanged)", "key: moneda=ETH"]


def test_the_split_brain_row_and_kinds_in_spanish(spanish):
    assert lab.i18n._(failover.SPLIT).format(node="primary", time="10:00:00") == \
        "cerebro dividido: escrita en primary a las 10:00:00"
    assert [lab.i18n._(k) for k in (logical.REPLICA_KIND, logical.SUBSCRIBER_KIND, logical.ACCEPTED,
                                    logical.REFUSED)] == ["réplica física", "suscriptor lógico", "aceptado", "rechazado"]


# --- on a real cluster ------------------------------------------------------------------------------------
@pytest.fixture
def cluster(two):
    failover.tidy(two)
    return two


@pytest.mark.integration
def test_the_subscriber_and_the_replica_answer_in_spanish(cluster, spanish):
    logical.setup(cluster, rows=200, quiet=True)
    side = logical.writable_side_by_side(cluster, "replica1").set_index("kind")
    assert side.loc["suscriptor lógico", "insert"] == "aceptado"
    assert side.loc["réplica física", "insert"] == "rechazado"
    refused = logical.update_without_key(cluster)
    assert refused["update"] == "rechazado" and refused["error"]
    assert logical.repair_identity(cluster, how="full")["update"] == "aceptado"
    logical.subscribe(cluster, quiet=True)
    cap = logical.capabilities(cluster, "replica1").set_index("kind")
    assert list(cap.columns) == ["node", "acepta escrituras", "llega una tabla nueva (DDL)",
                                 "llegan las filas de una tabla no publicada", "llega el valor de la secuencia",
                                 "elige tablas y filas"]
    assert cap.loc["réplica física"].tolist()[1:] == [False, True, True, True, False]
    assert cap.loc["suscriptor lógico"].tolist()[1:] == [True, False, False, False, True]
    assert logical.missed(cluster).name == "lo que falta"
    logical.tidy(cluster)


@pytest.mark.integration
def test_a_split_brain_writes_its_rows_in_spanish(cluster, spanish):
    run = failover.failover(cluster, mode="async", rate=200, before=0.3, after=0.2, quiet=True)
    brain = failover.split_brain(cluster).set_index("node")
    mine_old, mine_new = brain.loc[run.old, "rows_it_has"], brain.loc[run.new, "rows_it_has"]
    assert len(mine_old) == 1 and mine_old[0].startswith(f"cerebro dividido: escrita en {run.old} a las ")
    assert len(mine_new) == 1 and mine_new[0].startswith(f"cerebro dividido: escrita en {run.new} a las ")
    failover.fence(cluster, run.old, how="standby")
    cluster.rejoin(run.old)
    cluster.wait_replayed(timeout=30)
    alive = failover.survivors(cluster, brain.reset_index()).set_index("written_on")
    assert not alive.loc[run.old, f"on {run.new}"] and alive.loc[run.new, f"on {run.old}"]
