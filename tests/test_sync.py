"""synchronous_commit on real servers: the cost per level, a blocked commit unblocked three ways,
and a quorum that survives a stopped standby."""
from __future__ import annotations

import io
import math

import pandas as pd
import pytest
from matplotlib.figure import Figure

from lab import proxy, sync
from lab.errors import Interrupted, BadArgument, LabError

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


# --- a setting that would block every COMMIT is refused, and a failed change is put back ----------
def _names(cluster) -> str:
    return cluster.primary.scalar("SHOW synchronous_standby_names")


@pytest.mark.parametrize("names", ["replica9", "FIRST 1 (replica1, nobody)", 'ANY 1 ("Replica 1 ")',
                                   "replica1, replica3", "FIRST 3 (replica1, replica2)", "ANY 1 (replica1",
                                   "FIRST (replica1)", "replica1 replica2"])
def test_a_name_no_standby_has_is_refused_and_nothing_changes(two, names):
    sync.set_synchronous(two, "replica2")
    try:
        with pytest.raises(BadArgument) as e:
            sync.set_synchronous(two, names)
        message = str(e.value)
        assert "\n" not in message
        if "replica9" in names or "nobody" in names or "replica3" in names:
            assert "connected standbys are replica1, replica2" in message
        assert _names(two) == "replica2"
        # and COMMIT does not block: an INSERT returns at once
        assert two.primary.execute("INSERT INTO test_replication (mensaje) VALUES ('no bloquea')") == 1
    finally:
        sync.set_synchronous(two, "")


def test_every_form_postgresql_accepts_with_connected_standbys_is_taken(two):
    try:
        for names, states in [("replica1, replica2", {"sync", "potential"}),
                              ('FIRST 2 ("replica1", replica2)', {"sync"}),
                              ("2 (replica1, replica2)", {"sync"}),
                              ("ANY 2 (REPLICA1, replica2)", {"quorum"}),
                              ("*", {"sync", "potential"})]:
            t = sync.set_synchronous(two, names)
            assert set(t["sync_state"]) == states, names
            assert _names(two) == names
    finally:
        sync.set_synchronous(two, "")
    assert _names(two) == ""


def test_parse_standby_names():
    assert sync.parse_standby_names("  ") == (None, 0, [])
    assert sync.parse_standby_names('any 2 (a, "B c", "d""e")') == ("any", 2, ["a", "B c", 'd"e'])
    assert sync.parse_standby_names("3 (a, b, c)") == ("first", 3, ["a", "b", "c"])
    assert sync.parse_standby_names("first 1 (a)") == ("first", 1, ["a"])
    for bad in ("ANY (a)", "a,", ",a", "ANY 1 a", "FIRST 0 (a)", "a b", "(a)", 'a, "b'):
        with pytest.raises(BadArgument):
            sync.parse_standby_names(bad)


def test_a_failed_wait_puts_the_previous_setting_back(two, monkeypatch):
    sync.set_synchronous(two, "replica2")
    calls = []

    def broken_table(cluster):
        calls.append(_names(cluster))
        raise KeyboardInterrupt  # Kernel > Interrupt in the middle of the wait

    monkeypatch.setattr(sync, "sync_table", broken_table)
    try:
        with pytest.raises(Interrupted, match="set_synchronous interrupted"):  # one line, not a traceback
            sync.set_synchronous(two, "replica1")
        assert calls == ["replica1"]           # the change had been made...
        assert _names(two) == "replica2"       # ...and was put back
    finally:
        monkeypatch.undo()
        sync.set_synchronous(two, "")


def test_a_failure_inside_commits_while_down_puts_everything_back(two, monkeypatch):
    def broken_start(self):
        raise LabError("the writer could not start (made up by the test)")

    monkeypatch.setattr(sync.workload.Writer, "start", broken_start)
    with pytest.raises(LabError, match="made up"):
        sync.commits_while_down(two, "replica2", "replica2", seconds=0.3, quiet=True)
    monkeypatch.undo()
    assert _names(two) == ""
    assert two.node("replica2").is_running
    assert two.primary.execute("INSERT INTO test_replication (mensaje) VALUES ('no bloquea')") == 1


def test_a_failure_inside_blocked_commit_puts_everything_back(two, monkeypatch):
    def broken_waiters(cluster, app):
        raise LabError("pg_stat_activity could not be read (made up by the test)")

    monkeypatch.setattr(sync, "_sync_waiters", broken_waiters)
    with pytest.raises(LabError, match="made up"):
        sync.blocked_commit(two, "replica1", blocked_for=0.3, quiet=True)
    monkeypatch.undo()
    assert _names(two) == ""
    assert two.node("replica1").is_running
    assert two.primary.execute("INSERT INTO test_replication (mensaje) VALUES ('no bloquea')") == 1


@pytest.mark.parametrize("call", [
    lambda c: sync.set_synchronous(c, 42),
    lambda c: sync.set_synchronous(c, "replica1", timeout="soon"),
    lambda c: sync.commit_cost(c, seconds=float("nan")),
    lambda c: sync.commit_cost(c, modes=[["on"]]),
    lambda c: sync.commit_cost(c, modes=42),
    lambda c: sync.blocked_commit(c, replica=["replica1"]),
    lambda c: sync.blocked_commit(c, replica="primary"),
    lambda c: sync.blocked_commit(c, blocked_for=-1),
    lambda c: sync.quorum(c, replicas="replica1"),
    lambda c: sync.quorum(c, replicas=("replica1", "replica1")),
    lambda c: sync.commits_while_down(c, "replica1", "replica9"),
    lambda c: sync.cost_figure("cost"),
    lambda c: sync.cost_table(None),
    lambda c: sync.sync_table("cluster"),
])
def test_wrong_arguments_are_one_line_lab_errors(two, call):
    with pytest.raises(LabError) as e:
        call(two)
    assert "\n" not in str(e.value)
    assert _names(two) == "" and all(r.is_running for r in two.replicas)


def _bar_values(ax) -> list:
    return [p.get_height() for p in ax.patches]


def test_the_cost_figure_shows_every_bar_and_its_value(two):
    """A commit 20 ms away is ~100 times slower than a local one: on a linear scale its bar is a
    sliver; on the log scale every bar is tall enough to see, and each says its value."""
    sync.set_synchronous(two, "replica1")
    try:
        near = sync.commit_cost(two, modes=("local", "on"), seconds=0.4, label="next door", quiet=True)
        proxy.route(two, "replica1", latency_ms=10)
        far = sync.commit_cost(two, modes=("local", "on"), seconds=0.4, label="+20 ms", quiet=True)
    finally:
        proxy.unroute(two, "replica1")
        sync.set_synchronous(two, "")
    fig = sync.cost_figure(near, far)
    fig.savefig(io.BytesIO(), format="png")
    left, right = fig.axes[:2]
    for ax, column in ((left, "tps"), (right, "latency_ms_p50")):
        assert ax.get_yscale() == "log"
        heights = _bar_values(ax)
        assert sorted(heights) == sorted(pd.concat([near, far])[column].astype(float).tolist())
        bottom, top = ax.get_ylim()
        for h in heights:  # each bar reaches at least a tenth of the axis' height, and fits under its top
            assert h > bottom and h < top
            assert (math.log(h) - math.log(bottom)) / (math.log(top) - math.log(bottom)) >= 0.1
        labels = [t.get_text() for t in ax.texts]
        assert len(labels) == len(heights) and all(labels)
    slow = far.set_index("synchronous_commit").loc["on", "tps"]
    fast = near.set_index("synchronous_commit").loc["local", "tps"]
    assert slow < fast  # the far standby's bar is the lower one (by 3 to 100 times, with the machine)
    assert sync._short(slow) in [t.get_text() for t in left.texts]
    assert sync.cost_table(near, far)["setup"].tolist() == ["next door"] * 2 + ["+20 ms"] * 2


def test_a_stopped_standby_is_refused_and_one_just_started_is_waited_for(two):
    replica = two.node("replica2")
    replica.stop()
    try:
        with pytest.raises(BadArgument, match="connected standbys are replica1 "):
            sync.set_synchronous(two, "ANY 1 (replica1, replica2)")
        assert _names(two) == ""
        replica.start()
        t = sync.set_synchronous(two, "FIRST 2 (replica1, replica2)").set_index("replica")
        assert set(t["sync_state"]) == {"sync"}
    finally:
        if not replica.is_running:
            replica.start()
        sync.set_synchronous(two, "")
