"""Reading from replicas, and what a client can see that it should not (*Designing Data-Intensive
Applications*, ch. 5), each counted: read-your-writes and monotonic-reads violations, and fixes.

>>> lab.consistency.read_your_writes_compare(cluster, "replica1", n=30)   # doctest: +SKIP
>>> lab.consistency.monotonic_reads_compare(cluster, n=40)               # doctest: +SKIP

Read-your-writes: a client writes on the primary, then reads from a replica that has not
replayed the write yet, and does not see its own write.  Two fixes:
  - ``wait_lsn``: the client keeps the LSN of its commit and, before reading from the replica,
    waits until ``pg_last_wal_replay_lsn()`` there has reached it (routing by LSN): only this
    client pays, and only when the replica is behind;
  - ``remote_apply``: the COMMIT itself waits until the synchronous standby has replayed it:
    every writer pays a round trip and the replay, but any reader of that standby sees it.
Monotonic reads: a client reads from one replica, then from another that is further behind,
and sees time go backwards (a row it saw is gone).  Fixes: stick to one replica, or carry the
highest LSN seen and wait for it (the same LSN wait).
"""
from __future__ import annotations

import secrets
import time

import pandas as pd
import psycopg2

from . import proxy, sync, workload
from .errors import BadArgument, LabError, NotRunning, Timeout, need_bool, need_choice, need_int, need_number
from .faults import need_cluster, need_node, need_replica
from .i18n import _
from .lsn import format_lsn, record_end
from .system.operations import changes_cluster, check_fresh
from .workload import CREATE_TABLE, TABLE, WRITE

RYW_FIXES = ("none", "wait_lsn", "remote_apply")
MONOTONIC_MODES = ("alternate", "sticky", "wait_lsn")


def _say(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, flush=True)


def _wait_lsn(cur, lsn: str, timeout: float = 10) -> None:
    """Until the replica of ``cur`` has replayed the record that ends at (or just before) ``lsn``: a
    commit's ``pg_current_wal_insert_lsn()`` may point past a page header that no record fills yet."""
    target = format_lsn(record_end(lsn))
    deadline = time.monotonic() + timeout
    while True:
        cur.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,))
        if cur.fetchone()[0]:
            return
        if time.monotonic() > deadline:
            raise Timeout(_("the replica has not replayed {lsn} after {timeout:g} s: is it streaming?").format(
                lsn=lsn, timeout=timeout))
        time.sleep(0.0005)


def _running(node) -> None:
    if not node.is_running:
        raise NotRunning(_("{node} is stopped: start it with cluster.node({node!r}).start()").format(node=node.name))


def _replicas(cluster, replicas) -> list:
    if isinstance(replicas, (str, bytes)) or not isinstance(replicas, (list, tuple)) or not replicas:
        raise BadArgument(_("replicas is a list of replicas' names, e.g. ('replica1', 'replica2'), not {value!r}").format(
            value=replicas)[:200])
    return [need_node(cluster, r, _("each of replicas")) for r in replicas]


def read_your_writes(cluster, replica: str = "replica1", n: int = 30, fix: str = "none") -> pd.DataFrame:
    """``n`` times: write one row on the primary, then at once read it back from ``replica``.
    One row per trial: ``seen`` (False is a violation), the seconds from sending the write to
    having the answer of the read (``latency_s``), and the commit's LSN.  ``fix``: none /
    wait_lsn / remote_apply (``remote_apply`` needs ``replica`` to be a synchronous standby:
    ``lab.sync.set_synchronous``)."""
    need_cluster(cluster)
    need_choice(fix, "fix", RYW_FIXES)
    need_int(n, _("n (the number of trials)"), lo=1, hi=10_000)
    node = need_node(cluster, replica, "replica")
    replica = node.name
    _running(node)
    if fix == "remote_apply":
        names = cluster.primary.scalar("SHOW synchronous_standby_names")
        if replica not in names:
            raise LabError(_("remote_apply waits only for a synchronous standby and {replica} is not one "
                             "(synchronous_standby_names = {names!r}): lab.sync.set_synchronous(cluster, {replica!r})"
                             ).format(replica=replica, names=names))
    cluster.primary.execute(CREATE_TABLE)
    cluster.wait_replayed()
    run = f"ryw-{fix}-{secrets.token_hex(3)}"
    w, r = cluster.primary.connect(), node.connect()
    trials = []
    try:
        with w.cursor() as wc, r.cursor() as rc:
            # without remote_apply, COMMIT waits for the primary's disk only (asynchronous replica)
            wc.execute("SET synchronous_commit = %s", ("remote_apply" if fix == "remote_apply" else "local",))
            for seq in range(1, n + 1):
                t0 = time.perf_counter()
                wc.execute(WRITE, (run, seq, ""))
                lsn = wc.fetchone()[0]
                committed = time.perf_counter()
                if fix == "wait_lsn":
                    _wait_lsn(rc, lsn)
                rc.execute(f"SELECT count(*) FROM {TABLE} WHERE run = %s AND seq = %s", (run, seq))
                seen = rc.fetchone()[0] == 1
                done = time.perf_counter()
                trials.append(dict(fix=fix, trial=seq, lsn=lsn, seen=seen, commit_s=committed - t0,
                                   latency_s=done - t0))
    except psycopg2.Error as e:
        raise LabError(f"read_your_writes: {str(e).strip().splitlines()[0]}") from None
    finally:
        w.close()
        r.close()
    return pd.DataFrame(trials)


def summarize(trials: pd.DataFrame, violation: str = "seen") -> pd.DataFrame:
    """Per fix (or mode): trials, violations, latency median and p99 (ms).  ``violation`` names the
    column: ``seen`` (a violation where False) or ``went_back`` (where True)."""
    need_choice(violation, "violation", ("seen", "went_back"))
    if not isinstance(trials, pd.DataFrame) or violation not in trials or "latency_s" not in trials:
        raise BadArgument(_("summarize counts what read_your_writes(_compare) or monotonic_reads(_compare) return"))
    check_fresh(trials, _("these trials"))
    key = "fix" if "fix" in trials else "mode"
    bad = ~trials[violation].astype(bool) if violation == "seen" else trials[violation].astype(bool)
    g = trials.assign(violation=bad).groupby(key, sort=False)
    out = pd.DataFrame({
        "trials": g.size(),
        "violations": g["violation"].sum().astype(int),
        "latency_ms_p50": g["latency_s"].median() * 1000,
        "latency_ms_p99": g["latency_s"].quantile(0.99) * 1000,
    })
    return out.round(2).reset_index()


@changes_cluster("read_your_writes_compare", tidy=lambda c: sync.tidy(c))
def read_your_writes_compare(cluster, replica: str = "replica1", n: int = 30, latency_ms: float = 5,
                             quiet: bool = False) -> pd.DataFrame:
    """The three variants side by side on a replica behind ``latency_ms`` of added one-way latency
    (a proxy, so that it lags the way a replica in another building would): all trials, one row
    each; ``summarize`` counts.  Restores the replica's link and synchronous_standby_names."""
    need_cluster(cluster)
    replica = need_replica(cluster, replica, "replica").name
    need_int(n, _("n (the number of trials)"), lo=1, hi=10_000)
    latency_ms = need_number(latency_ms, "latency_ms", lo=0, hi=1000, unit="milliseconds")
    need_bool(quiet, "quiet")
    names = cluster.primary.scalar("SHOW synchronous_standby_names")
    frames = []
    try:
        if latency_ms:
            proxy.route(cluster, replica, latency_ms=latency_ms)
        for fix in RYW_FIXES:
            if fix == "remote_apply":
                sync.set_synchronous(cluster, replica)
            frames.append(read_your_writes(cluster, replica, n, fix))
            s = frames[-1]
            _say(quiet, _("{fix:<13} {missed:>3} of {n} reads missed the write; median {median:.1f} ms from write "
                          "to read").format(fix=fix, missed=int((~s["seen"]).sum()), n=n,
                                            median=s["latency_s"].median() * 1000))
    finally:
        cluster.primary.set(synchronous_standby_names=names or None)
        if latency_ms:
            proxy.unroute(cluster, replica)
    return pd.concat(frames, ignore_index=True)


def monotonic_reads(cluster, replicas=("replica1", "replica2"), n: int = 40, mode: str = "alternate",
                    rate: float = 400, every: float = 0.01) -> pd.DataFrame:
    """A writer adds rows at ``rate``/s; a client reads the newest row ``n`` times, every ``every`` s,
    from the replicas in turn (``alternate``), always the first (``sticky``), or in turn but
    first waiting until the replica has replayed the highest LSN it saw before (``wait_lsn``).
    One row per read: which replica, the newest seq it showed, and ``went_back`` (a violation:
    older than a row this client had already seen)."""
    need_cluster(cluster)
    nodes = _replicas(cluster, replicas)
    need_int(n, _("n (the number of reads)"), lo=1, hi=10_000)
    need_choice(mode, "mode", MONOTONIC_MODES)
    need_number(rate, _("rate (rows per second)"), lo=1, hi=10_000)
    need_number(every, _("every (seconds between reads)"), lo=0, hi=1)
    for node in nodes:
        _running(node)
    conns = []
    reads = []
    try:
        for node in nodes:
            conns.append(node.connect())
        with workload.Writer(cluster.primary, rate=rate, duration=n * every + 30) as w:
            while len(w.writes) < 5:
                time.sleep(0.005)
            best, best_lsn = 0, None
            for i in range(n):
                k = 0 if mode == "sticky" else i % len(nodes)
                t0 = time.perf_counter()
                with conns[k].cursor() as cur:
                    if mode == "wait_lsn" and best_lsn:
                        _wait_lsn(cur, best_lsn)
                    cur.execute(f"SELECT coalesce(max(seq), 0), pg_last_wal_replay_lsn()::text FROM {TABLE} "
                                "WHERE run = %s", (w.run_id,))
                    seq, lsn = cur.fetchone()
                done = time.perf_counter()
                reads.append(dict(mode=mode, read=i + 1, replica=nodes[k].name, newest_seq=int(seq),
                                  went_back=int(seq) < best, latency_s=done - t0))
                if int(seq) >= best:
                    best, best_lsn = int(seq), lsn
                time.sleep(every)
    finally:
        for c in conns:
            c.close()
    return pd.DataFrame(reads)


@changes_cluster("monotonic_reads_compare", tidy=lambda c: sync.tidy(c))
def monotonic_reads_compare(cluster, replicas=("replica1", "replica2"), n: int = 40, delay_ms: float = 30,
                            quiet: bool = False) -> pd.DataFrame:
    """The second replica behind ``delay_ms`` of added latency (a proxy); the three modes side by
    side.  Every read, one row each; ``summarize(df, "went_back")`` counts."""
    need_cluster(cluster)
    slow = _replicas(cluster, replicas)[-1].name
    need_int(n, _("n (the number of reads)"), lo=1, hi=10_000)
    delay_ms = need_number(delay_ms, "delay_ms", lo=0, hi=1000, unit="milliseconds")
    need_bool(quiet, "quiet")
    frames = []
    routed = bool(delay_ms)
    try:
        if routed:
            proxy.route(cluster, slow, latency_ms=delay_ms)
        for mode in MONOTONIC_MODES:
            frames.append(monotonic_reads(cluster, replicas, n, mode))
            s = frames[-1]
            _say(quiet, _("{mode:<10} {went_back:>3} of {n} reads went back in time").format(
                mode=mode, went_back=int(s["went_back"].sum()), n=n))
    finally:
        if routed:
            proxy.unroute(cluster, slow)
    return pd.concat(frames, ignore_index=True)
