"""Synchronous replication: what each ``synchronous_commit`` level costs, a commit blocked by a
stopped synchronous standby and the ways out, and a quorum that survives one failure.

>>> lab.sync.set_synchronous(cluster, "replica1")                 # doctest: +SKIP
>>> cost = lab.sync.commit_cost(cluster, seconds=1)               # doctest: +SKIP
>>> lab.sync.cost_figure(cost)                                    # doctest: +SKIP
>>> lab.sync.blocked_commit(cluster, "replica1", unblock="start") # doctest: +SKIP
>>> lab.sync.set_synchronous(cluster, "")                         # doctest: +SKIP

``synchronous_commit`` (per session or per transaction) says how long COMMIT waits, once
``synchronous_standby_names`` names a standby:
  off          not even for the primary's own disk (a crash may lose the last ~0.6 s)
  local        for the primary's disk only
  remote_write for the standby to have written the WAL (in its OS cache)
  on           for the standby to have flushed it to disk
  remote_apply for the standby to have replayed it (visible to its queries)
"""
from __future__ import annotations

import time

import pandas as pd
from matplotlib.figure import Figure

from . import faults, plots, proxy, workload  # noqa: F401 (plots: shows Figures as pictures in notebooks)
from .errors import LabError, NotRunning, Timeout

MODES = ("off", "local", "remote_write", "on", "remote_apply")


def _say(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, flush=True)


def sync_table(cluster) -> pd.DataFrame:
    """Each replica as the primary sees it: state, sync_state (async / sync / quorum / potential),
    sync_priority; and the primary's synchronous_standby_names."""
    df = cluster.primary.sql("SELECT application_name AS replica, state, sync_state, sync_priority, "
                             "current_setting('synchronous_standby_names') AS synchronous_standby_names "
                             "FROM pg_stat_replication ORDER BY application_name", dbname="postgres")
    return df


def set_synchronous(cluster, names: str, timeout: float = 15) -> pd.DataFrame:
    """``synchronous_standby_names = names`` on the primary (a reload), then wait until the primary
    reports a synchronous (or quorum) standby among the running replicas ('' : asynchronous)."""
    if not isinstance(names, str):
        raise LabError("names is synchronous_standby_names as text: 'replica1', 'ANY 1 (replica1, replica2)' "
                       "or '' for asynchronous")
    primary = cluster.primary
    if not primary.is_running:
        raise NotRunning(f"the primary ({primary.name}) is stopped: start it first")
    primary.set(synchronous_standby_names=names or None)
    if names.strip():
        deadline = time.monotonic() + timeout
        while True:
            df = sync_table(cluster)
            if df["sync_state"].isin(["sync", "quorum"]).any():
                break
            if time.monotonic() > deadline:
                raise Timeout(f"no running replica matches synchronous_standby_names = {names!r} after "
                              f"{timeout:g} s: commits would wait forever; see lab.sync.sync_table(cluster)")
            time.sleep(0.05)
    return sync_table(cluster)


def commit_cost(cluster, modes=MODES, seconds: float = 1.0, label: str = "", quiet: bool = False) -> pd.DataFrame:
    """For each ``synchronous_commit`` level, a writer commits one row per transaction as fast as it
    can for ``seconds``: transactions per second and commit latency (median, p99, ms)."""
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise LabError(f"unknown synchronous_commit level(s) {bad}: choose from {', '.join(MODES)}")
    if not 0.2 <= seconds <= 10:
        raise LabError(f"seconds per level is from 0.2 to 10, not {seconds!r}")
    names = cluster.primary.scalar("SHOW synchronous_standby_names")
    rows = []
    for mode in modes:
        w = workload.Writer(cluster.primary, duration=seconds, synchronous_commit=mode).run()
        s = w.summary().iloc[0]
        rows.append(dict(setup=label, synchronous_commit=mode, commits=int(s["acknowledged"]),
                         tps=float(s["ack_per_s"] or 0), latency_ms_p50=s["latency_ms_p50"],
                         latency_ms_p99=s["latency_ms_p99"], failed=int(s["failed"] + s["unknown"])))
        _say(quiet, f"synchronous_commit = {mode:<12} {rows[-1]['tps']:>8.0f} commits/s, "
                    f"median {rows[-1]['latency_ms_p50']} ms")
    df = pd.DataFrame(rows)
    df.attrs["synchronous_standby_names"] = names
    return df


def cost_figure(*costs) -> Figure:
    """Bars of ``commit_cost`` results: commits/s on the left, median commit latency on the right,
    one colour per setup (e.g. direct vs +RTT)."""
    frames = [c for c in costs if isinstance(c, pd.DataFrame) and len(c)]
    if not frames:
        raise LabError("cost_figure draws what lab.sync.commit_cost(cluster) returns: pass one or more")
    fig = Figure(figsize=(9, 3.4))
    left, right = fig.subplots(1, 2)
    width = 0.8 / len(frames)
    colours = ["#2f5d8a", "#b3261e", "#3b7d3b", "#9a6a16"]
    for i, (df, colour) in enumerate(zip(frames, colours * 3)):
        x = [j + (i - (len(frames) - 1) / 2) * width for j in range(len(df))]
        label = df["setup"].iloc[0] or f"run {i + 1}"
        left.bar(x, df["tps"], width, color=colour, label=label)
        right.bar(x, df["latency_ms_p50"], width, color=colour, label=label)
    modes = frames[0]["synchronous_commit"].tolist()
    for ax, title in ((left, "commits per second"), (right, "median commit latency (ms)")):
        ax.set_xticks(range(len(modes)))
        ax.set_xticklabels(modes, rotation=20, fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8)
    right.set_yscale("log")
    fig.suptitle("what synchronous_commit costs, one row per transaction", fontsize=10)
    fig.tight_layout()
    return fig


def _sync_waiters(cluster, app: str) -> int:
    return int(cluster.primary.scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                                      "AND wait_event = 'SyncRep'", (app,), dbname="postgres"))


UNBLOCK = {
    "start": "start the synchronous standby again (the commit completes once it has the WAL)",
    "async": "synchronous_standby_names = '' (the primary stops waiting: the commit is NOT on any standby)",
    "cancel": "pg_cancel_backend() of the waiting session (committed locally, not replicated: a WARNING)",
}


def blocked_commit(cluster, replica: str = "replica1", blocked_for: float = 1.5, unblock: str = "start",
                   quiet: bool = False) -> pd.DataFrame:
    """With ``replica`` the only synchronous standby, stop it and commit one row: the COMMIT waits.
    After ``blocked_for`` s, unblock it one of three ways (``UNBLOCK``).  One row per step, with
    the seconds since the commit was sent.  Leaves the standby running and synchronous_standby_names
    as it found it."""
    if unblock not in UNBLOCK:
        raise LabError(f"unblock is one of {', '.join(UNBLOCK)}, not {unblock!r}")
    node = cluster.node(replica)
    names = cluster.primary.scalar("SHOW synchronous_standby_names")
    steps = []
    t0 = None

    def step(what, **extra):
        steps.append(dict(t_s=None if t0 is None else round(time.monotonic() - t0, 3), step=what, **extra))
        _say(quiet, f"{'' if t0 is None else f'{time.monotonic() - t0:5.2f} s  '}{what}")

    set_synchronous(cluster, replica)
    step(f"synchronous_standby_names = '{replica}'")
    node.stop()
    step(f"{replica} stopped")
    w = workload.Writer(cluster.primary, max_rows=1, duration=60, run=f"blocked-{unblock}-{int(time.time())}")
    try:
        w.start()
        t0 = time.monotonic()
        app = f"lab-writer-{w.run_id}"
        deadline = t0 + blocked_for
        while time.monotonic() < deadline and not w.writes:
            time.sleep(0.05)
        waiting = _sync_waiters(cluster, app)
        step("COMMIT still waiting" if not w.writes else "COMMIT returned",
             waiting_in_SyncRep=waiting, acknowledged=sum(x.outcome == "acknowledged" for x in w.writes))
        visible = cluster.primary.scalar("SELECT count(*) FROM lab_writes WHERE run = %s", (w.run_id,))
        step("the row, read on the primary by another session", rows_visible=int(visible))
        if unblock == "start":
            node.start()
        elif unblock == "async":
            cluster.primary.set(synchronous_standby_names=None)
        else:
            cluster.primary.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                                    (app,), dbname="postgres")
        step(f"unblock: {UNBLOCK[unblock]}")
        w.wait(30)
        log = w.log()
        ack = log.iloc[0] if len(log) else None
        step("COMMIT returned" if ack is not None else "COMMIT still waiting after 30 s",
             acknowledged=int(ack is not None and ack["outcome"] == "acknowledged"),
             commit_latency_s=None if ack is None else round(float(ack["latency_s"]), 3),
             warning=None if ack is None else ack["note"])
    finally:
        w.stop(timeout=1)
        if not node.is_running:
            node.start()
        cluster.primary.set(synchronous_standby_names=names or None)
        if w.running:  # released by the reset above
            w.wait(10)
    cluster.wait_streaming(names=[replica])
    return pd.DataFrame(steps)


def commits_while_down(cluster, names: str, down: str, seconds: float = 1.0, quiet: bool = False) -> dict:
    """With ``synchronous_standby_names = names``, stop replica ``down`` and write for ``seconds``:
    how many commits were acknowledged meanwhile (0: the primary blocked).  Restores everything."""
    before = cluster.primary.scalar("SHOW synchronous_standby_names")
    node = cluster.node(down)
    # the writer's table first: created while the standby is down, its COMMIT would wait too
    cluster.primary.execute(workload.CREATE_TABLE)
    set_synchronous(cluster, names)
    node.stop()
    w = workload.Writer(cluster.primary, duration=seconds)
    try:
        w.start()
        w.wait(seconds + 0.5)
        window_end = time.time()
        acked = sum(x.outcome == "acknowledged" and x.done_at <= window_end for x in w.writes)
        blocked = w.running
    finally:
        cluster.primary.set(synchronous_standby_names=before or None)  # releases a blocked commit
        w.stop()
        node.start()
    cluster.wait_streaming(names=[down])
    row = dict(synchronous_standby_names=names, stopped=down, commits_acknowledged=acked,
               blocked_at_the_end=blocked)
    _say(quiet, f"{names!r} with {down} stopped: {acked} commits in {seconds:g} s"
                f"{' — blocked' if blocked else ''}")
    return row


def quorum(cluster, replicas=("replica1", "replica2"), seconds: float = 1.0, quiet: bool = False) -> pd.DataFrame:
    """Three configurations, each with ``replicas[1]`` stopped: one named standby (the stopped one),
    ``FIRST 2 (...)`` (both), and ``ANY 1 (...)`` (a quorum of one): commits acknowledged in
    ``seconds``."""
    a, b = replicas
    configs = [b, f"FIRST 2 ({a}, {b})", f"ANY 1 ({a}, {b})"]
    return pd.DataFrame([commits_while_down(cluster, c, b, seconds, quiet) for c in configs])


def tidy(cluster) -> "list[str]":
    """Put back what chapter 05 changes, after an interrupted run: thaw paused nodes, every replica
    back on the primary directly (no proxy), synchronous_standby_names reset, stopped replicas
    started.  What it did, one line each."""
    done = []
    thawed = faults.resume_all(cluster)
    if thawed:
        done.append(f"resumed {', '.join(thawed)}")
    for r in cluster.replicas:
        if not r.is_running:
            r.start()
            done.append(f"started {r.name}")
    routed = proxy.unroute_all(cluster)
    if routed:
        done.append(f"closed the proxy of {', '.join(routed)}")
    if cluster.primary.scalar("SHOW synchronous_standby_names"):
        cluster.primary.set(synchronous_standby_names=None)
        done.append("synchronous_standby_names reset (asynchronous replication)")
    return done or ["nothing to tidy"]


def cost_table(*costs) -> pd.DataFrame:
    """``commit_cost`` results one under the other (one row per setup and level)."""
    frames = [c for c in costs if isinstance(c, pd.DataFrame)]
    if not frames:
        raise LabError("cost_table lists what lab.sync.commit_cost(cluster) returns: pass one or more")
    return pd.concat(frames, ignore_index=True)
