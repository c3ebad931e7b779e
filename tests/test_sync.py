"""synchronous_commit on real servers: the cost per level, a blocked commit unblocked three ways,
and a quorum that survives a stopped standby."""
from __future__ import annotations

import pytest
from matplotlib.figure import Figure

from lab import proxy, sync
from lab.errors import LabError

pytestmark = pytest.mark.integration


def test_set_synchronous_and_back(two):
    t = sync.set_synchronous(two, "replica1").set_index("replica")
    assert t.loc["replica1", "sync_state"] == "sync"
    assert t.loc["replica2", "sync_state"] == "async"
    t = sync.set_synchronous(two, "")
    assert set(t["sync_state"]) == {"async"}


def test_commit_latency_with_a_sync_standby_is_at_least_the_round_trip(two):
    sync.set_synchronous(two, "replica1")
    try:
        proxy.route(two, "replica1", latency_ms=15)
        cost = sync.commit_cost(two, modes=("local", "on", "remote_apply"), seconds=0.5, quiet=True)
    finally:
        proxy.unroute(two, "replica1")
        sync.set_synchronous(two, "")
    c = cost.set_index("synchronous_commit")
    assert (c["failed"] == 0).all()
    # on / remote_apply wait for the standby: a round trip through the proxy, 2 x 15 ms at least
    assert c.loc["on", "latency_ms_p50"] >= 30 and c.loc["remote_apply", "latency_ms_p50"] >= 30
    assert c.loc["local", "latency_ms_p50"] < 30
    assert isinstance(sync.cost_figure(cost), Figure)


@pytest.mark.parametrize("unblock", ["start", "async", "cancel"])
def test_a_stopped_sync_standby_blocks_commit_until_unblocked(two, unblock):
    steps = sync.blocked_commit(two, "replica1", blocked_for=0.8, unblock=unblock, quiet=True)
    waiting = steps[steps["step"] == "COMMIT still waiting"].iloc[0]
    assert waiting["waiting_in_SyncRep"] == 1 and waiting["acknowledged"] == 0
    assert steps[steps["step"].str.startswith("the row")].iloc[0]["rows_visible"] == 0
    last = steps.iloc[-1]
    assert last["step"] == "COMMIT returned" and last["acknowledged"] == 1
    assert last["commit_latency_s"] >= 0.8
    if unblock == "cancel":
        assert "committed locally" in last["warning"]
    assert two.node("replica1").is_running
    assert two.primary.scalar("SHOW synchronous_standby_names") == ""


def test_quorum_of_one_survives_a_stopped_standby(two):
    q = sync.quorum(two, seconds=0.8, quiet=True).set_index("synchronous_standby_names")
    assert q.loc["replica2", "commits_acknowledged"] == 0 and q.loc["replica2", "blocked_at_the_end"]
    assert q.loc["FIRST 2 (replica1, replica2)", "commits_acknowledged"] == 0
    assert q.loc["ANY 1 (replica1, replica2)", "commits_acknowledged"] > 0
    assert all(r.is_running for r in two.replicas)


def test_bad_arguments(two):
    with pytest.raises(LabError):
        sync.commit_cost(two, modes=("sometimes",))
    with pytest.raises(LabError):
        sync.blocked_commit(two, unblock="pray")
    with pytest.raises(LabError):
        sync.set_synchronous(two, None)


def test_tidy_puts_back_what_the_chapter_changes(two):
    sync.set_synchronous(two, "replica1")
    two.node("replica2").stop()
    proxy.route(two, "replica1")
    done = sync.tidy(two)
    assert any("replica2" in d for d in done) and any("proxy" in d for d in done)
    assert two.primary.scalar("SHOW synchronous_standby_names") == ""
    assert all(r.is_running for r in two.replicas)
    assert sync.tidy(two) == ["nothing to tidy"]
