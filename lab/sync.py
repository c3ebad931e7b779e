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

import contextlib
import re
import time

import pandas as pd
from matplotlib.figure import Figure

from . import faults, plots, proxy, workload  # noqa: F401 (plots: shows Figures as pictures in notebooks)
from .errors import BadArgument, LabError, NotRunning, Timeout, need_bool, need_choice, need_number, need_str
from .faults import need_cluster, need_replica
from .i18n import N_, _, ngettext
from .system.operations import changes_cluster, check_fresh

MODES = ("off", "local", "remote_write", "on", "remote_apply")
# the setups chapter 05 labels its commit_cost runs with: shown in the lab's language (any other label as given)
SETUPS = (N_("standby next door"), N_("+20 ms round trip"))


def _say(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, flush=True)


def sync_table(cluster) -> pd.DataFrame:
    """Each replica as the primary sees it: state, sync_state (async / sync / quorum / potential),
    sync_priority; and the primary's synchronous_standby_names."""
    need_cluster(cluster)
    df = cluster.primary.sql("SELECT application_name AS replica, state, sync_state, sync_priority, "
                             "current_setting('synchronous_standby_names') AS synchronous_standby_names "
                             "FROM pg_stat_replication ORDER BY application_name", dbname="postgres")
    return df


# --- synchronous_standby_names as PostgreSQL reads it (src/backend/replication/syncrep_scanner.l) ----
_TOKEN = re.compile(r'\s*(?:"((?:[^"]|"")*)"|([A-Za-z\x80-\uffff_][A-Za-z\x80-\uffff_0-9$]*)|([0-9]+)|(\*)|([(),]))')


def _tokens(text: str) -> list:
    """(kind, value) pairs: kind is 'name' (quoted or not), 'num', 'kw' (ANY, FIRST) or the punctuation."""
    out, pos = [], 0
    while pos < len(text):
        if not text[pos:].strip():
            break
        m = _TOKEN.match(text, pos)
        if not m:
            raise BadArgument(_("synchronous_standby_names: cannot read {part!r} in {text!r}: "
                                "write 'replica1', 'FIRST 1 (replica1, replica2)' or 'ANY 1 (replica1, replica2)'").format(
                part=text[pos:].strip()[:30], text=text))
        quoted, ident, num, star, punct = m.groups()
        if quoted is not None:
            out.append(("name", quoted.replace('""', '"')))
        elif ident is not None:
            out.append(("kw", ident.upper()) if ident.upper() in ("ANY", "FIRST") else ("name", ident))
        elif num is not None:
            out.append(("num", num))
        elif star is not None:
            out.append(("name", "*"))
        else:
            out.append((punct, punct))
        pos = m.end()
    return out


def parse_standby_names(text: str) -> "tuple[str | None, int, list]":
    """(method, how many standbys a COMMIT waits for, the standby names) of a
    ``synchronous_standby_names`` value, in the forms PostgreSQL accepts: ``'a, b'`` (the first of
    them), ``'FIRST n (a, b)'`` / ``'n (a, b)'`` (the first n by priority), ``'ANY n (a, b)'`` (any n),
    names quoted or not, ``*`` for any standby; ``''`` is asynchronous.

    >>> parse_standby_names('ANY 1 (replica1, "Replica 2")')
    ('any', 1, ['replica1', 'Replica 2'])
    >>> parse_standby_names("replica1, replica2"), parse_standby_names("")
    (('first', 1, ['replica1', 'replica2']), (None, 0, []))
    """
    need_str(text, "synchronous_standby_names", empty=True, example=_("'replica1' or 'ANY 1 (replica1, replica2)'"))
    toks = _tokens(text)
    if not toks:
        return None, 0, []
    bad = BadArgument(_("synchronous_standby_names {text!r} is not what PostgreSQL accepts: write 'replica1', "
                        "'replica1, replica2', 'FIRST 1 (replica1, replica2)' or 'ANY 1 (replica1, replica2)'").format(
        text=text))
    method, num, i = "first", 1, 0
    if toks[0][0] == "kw" or (toks[0][0] == "num" and len(toks) > 1 and toks[1][0] == "("):
        if toks[0][0] == "kw":
            method, i = toks[0][1].lower(), 1
        if i + 1 >= len(toks) or toks[i][0] != "num" or toks[i + 1][0] != "(" or toks[-1][0] != ")":
            raise bad
        num, body = int(toks[i][1]), toks[i + 2:-1]
    else:
        body = toks
    names = []
    for k, (kind, value) in enumerate(body):
        if k % 2 == 0 and kind in ("name", "num"):
            names.append(value)
        elif k % 2 == 1 and kind == ",":
            continue
        else:
            raise bad
    if not names or body[-1][0] == ",":
        raise bad
    if num < 1:
        raise BadArgument(_("synchronous_standby_names {text!r}: the number of synchronous standbys is at least 1").format(
            text=text))
    return method, num, names


def _connected(cluster) -> list:
    return cluster.primary.sql("SELECT application_name FROM pg_stat_replication ORDER BY 1",
                               dbname="postgres")["application_name"].tolist()


def _starting(cluster, connected: list) -> set:
    """application_names (lower case) of running replicas that are not connected yet (just started)."""
    here = {c.lower() for c in connected}
    return {r.spec.get("app_name", r.name).lower() for r in cluster.replicas if r.is_running} - here


def _check_names(cluster, names: str, timeout: float = 15) -> int:
    """Refuse a value whose standbys are not connected (every COMMIT would wait for them forever);
    a replica of the cluster that runs but has not connected yet is waited for (``timeout``).
    How many synchronous standbys a COMMIT will wait for."""
    method, num, listed = parse_standby_names(names)
    if method is None:
        return 0
    deadline = time.monotonic() + timeout
    while True:
        connected = _connected(cluster)
        here = {c.lower() for c in connected}
        unknown = [n for n in listed if n != "*" and n.lower() not in here]
        matching = len(connected) if "*" in listed else len({n.lower() for n in listed} & here)
        if not unknown and matching >= num:
            return num
        starting = _starting(cluster, connected)
        coming = starting if "*" in listed else starting & {n.lower() for n in listed}
        if not coming or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    shown = ", ".join(connected) or _("none")
    if unknown:
        raise BadArgument(_("no connected standby is called {names}: the connected standbys are {connected} "
                            "(pg_stat_replication.application_name); synchronous_standby_names unchanged").format(
            names=", ".join(map(repr, unknown)), connected=shown))
    raise BadArgument(ngettext("{names!r} makes every COMMIT wait for {num} standbys, but it names only {matching} "
                               "connected one(s) ({connected}); synchronous_standby_names unchanged",
                               "{names!r} makes every COMMIT wait for {num} standbys, but it names only {matching} "
                               "connected one(s) ({connected}); synchronous_standby_names unchanged", num).format(
        names=names, num=num, matching=matching, connected=shown))


def _put_back(cluster, names: str) -> None:
    primary = cluster.primary
    if primary.scalar("SHOW synchronous_standby_names", dbname="postgres") != names:
        primary.set(synchronous_standby_names=names or None)


@contextlib.contextmanager
def standby_names_kept(cluster, always: bool = True):
    """``synchronous_standby_names`` as it was before the block, put back on the way out (``always``)
    or only if the block fails (also on KeyboardInterrupt): a COMMIT never stays blocked behind a
    change that was not meant to stay.  Yields the value it will put back."""
    before = cluster.primary.scalar("SHOW synchronous_standby_names", dbname="postgres")
    try:
        yield before
    except BaseException:
        try:
            _put_back(cluster, before)
        except LabError:  # the first error is the one to show (the primary may be gone)
            pass
        raise
    if always:
        _put_back(cluster, before)


@changes_cluster("set_synchronous")
def set_synchronous(cluster, names: str, timeout: float = 15) -> pd.DataFrame:
    """``synchronous_standby_names = names`` on the primary (a reload), then wait until the primary
    reports as many synchronous (or quorum) standbys as ``names`` asks for ('' : asynchronous).

    Names no connected standby has are refused before anything changes (each COMMIT would wait for
    them forever); if the wait fails (or is interrupted), the previous value is put back."""
    need_cluster(cluster)
    need_str(names, "names (synchronous_standby_names)", empty=True,
             example=_("'replica1', 'ANY 1 (replica1, replica2)' or '' for asynchronous"))
    timeout = need_number(timeout, "timeout", lo=0.1, hi=300, unit="seconds")
    primary = cluster.primary
    if not primary.is_running:
        raise NotRunning(_("the primary ({name}) is stopped: start it first").format(name=primary.name))
    wanted = _check_names(cluster, names, timeout)
    with standby_names_kept(cluster, always=False):
        primary.set(synchronous_standby_names=names if names.strip() else None)
        if wanted:
            deadline = time.monotonic() + timeout
            while True:
                df = sync_table(cluster)
                if df["sync_state"].isin(["sync", "quorum"]).sum() >= wanted:
                    break
                if time.monotonic() > deadline:
                    raise Timeout(_("no running replica matches synchronous_standby_names = {names!r} after "
                                    "{timeout:g} s: put back as it was; see lab.sync.sync_table(cluster)").format(
                        names=names, timeout=timeout))
                time.sleep(0.05)
    return sync_table(cluster)


def _modes(modes) -> tuple:
    if isinstance(modes, str):
        modes = (modes,)
    if not isinstance(modes, (list, tuple)) or not modes:
        raise BadArgument(_("modes is a list of synchronous_commit levels from {levels}, not {value!r}").format(
            levels=", ".join(MODES), value=modes)[:200])
    return tuple(need_choice(m, _("a synchronous_commit level"), MODES) for m in modes)


@changes_cluster("commit_cost", tidy=lambda c: tidy(c))
def commit_cost(cluster, modes=MODES, seconds: float = 1.0, label: str = "", quiet: bool = False) -> pd.DataFrame:
    """For each ``synchronous_commit`` level, a writer commits one row per transaction as fast as it
    can for ``seconds``: transactions per second and commit latency (median, p99, ms).  ``label`` names
    the setup in the ``setup`` column, as given (one of ``SETUPS``, the chapter's: in the lab's language)."""
    need_cluster(cluster)
    modes = _modes(modes)
    seconds = need_number(seconds, _("seconds per level"), lo=0.2, hi=10)
    need_str(label, "label", empty=True, example="'standby next door'")
    need_bool(quiet, "quiet")
    names = cluster.primary.scalar("SHOW synchronous_standby_names")
    setup = _(label) if label in SETUPS else label
    rows = []
    for mode in modes:
        w = workload.Writer(cluster.primary, duration=seconds, synchronous_commit=mode).run()
        s = w.summary().iloc[0]
        rows.append(dict(setup=setup, synchronous_commit=mode, commits=int(s["acknowledged"]),
                         tps=float(s["ack_per_s"] or 0), latency_ms_p50=s["latency_ms_p50"],
                         latency_ms_p99=s["latency_ms_p99"], failed=int(s["failed"] + s["unknown"])))
        _say(quiet, _("synchronous_commit = {mode:<12} {tps:>8.0f} commits/s, median {latency} ms").format(
            mode=mode, tps=rows[-1]["tps"], latency=rows[-1]["latency_ms_p50"]))
    df = pd.DataFrame(rows)
    df.attrs["synchronous_standby_names"] = names
    return df


_COST_COLUMNS = ("setup", "synchronous_commit", "tps", "latency_ms_p50")


def _costs(costs, what: str) -> list:
    frames = []
    for c in costs:
        if not isinstance(c, pd.DataFrame) or not set(_COST_COLUMNS) <= set(c.columns):
            raise BadArgument(_("{what} takes what lab.sync.commit_cost(cluster) returns, not "
                                "{type}: pass one or more of those").format(what=what, type=type(c).__name__))
        check_fresh(c, _("these costs"))
        if len(c):
            frames.append(c)
    if not frames:
        raise LabError(_("{what} takes what lab.sync.commit_cost(cluster) returns: pass one or more").format(what=what))
    return frames


def _short(v: float, unit: str = "") -> str:
    """A bar's value, short: 41, 2.3k, 0.42."""
    if v != v:
        return "?"
    if v >= 10_000:
        return f"{v / 1000:.0f}k{unit}"
    if v >= 1000:
        return f"{v / 1000:.1f}k{unit}"
    return f"{v:.0f}{unit}" if v >= 10 else f"{v:.2g}{unit}"


def cost_figure(*costs) -> Figure:
    """Bars of ``commit_cost`` results: commits/s on the left, median commit latency on the right,
    one colour per setup (e.g. direct vs +RTT).  Both on a log scale, each bar labelled with its
    value: 40 commits/s stays readable next to 4000."""
    frames = _costs(costs, "cost_figure")
    fig = Figure(figsize=(9.5, 3.8))
    left, right = fig.subplots(1, 2)
    width = 0.8 / len(frames)
    colours = ["#2f5d8a", "#b3261e", "#3b7d3b", "#9a6a16"]
    modes = frames[0]["synchronous_commit"].tolist()
    for i, (df, colour) in enumerate(zip(frames, colours * 3)):
        where = {m: j for j, m in enumerate(modes)}
        df = df[df["synchronous_commit"].isin(where)]
        x = [where[m] + (i - (len(frames) - 1) / 2) * width for m in df["synchronous_commit"]]
        label = df["setup"].iloc[0] if len(df) and df["setup"].iloc[0] else _("run {number}").format(number=i + 1)
        for ax, col, unit in ((left, "tps", ""), (right, "latency_ms_p50", "")):
            values = pd.to_numeric(df[col], errors="coerce").astype(float).fillna(float("nan")).tolist()
            bars = ax.bar(x, [v if v == v and v > 0 else 0 for v in values], width, color=colour, label=label)
            ax.bar_label(bars, labels=[_short(v, unit) for v in values], fontsize=7, padding=1)
    for ax, title in ((left, _("commits per second (log scale)")), (right, _("median commit latency, ms (log scale)"))):
        ax.set_yscale("log")
        heights = [p.get_height() for p in ax.patches if p.get_height() > 0]
        if heights:  # room for the labels above the highest bar; the lowest one well above the floor
            ax.set_ylim(min(heights) / 4, max(heights) * 4)
        ax.set_xticks(range(len(modes)))
        ax.set_xticklabels(modes, rotation=20, fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8, loc="upper left" if ax is right else "upper right")
    fig.suptitle(_("what synchronous_commit costs, one row per transaction"), fontsize=10)
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
# UNBLOCK's sentences as blocked_commit shows them, in the lab's language when shown
_UNBLOCK_SHOWN = {
    "start": lambda: _("start the synchronous standby again (the commit completes once it has the WAL)"),
    "async": lambda: _("synchronous_standby_names = '' (the primary stops waiting: the commit is NOT on any standby)"),
    "cancel": lambda: _("pg_cancel_backend() of the waiting session (committed locally, not replicated: a WARNING)"),
}


def _start_if_stopped(node) -> None:
    if not node.is_running:
        node.start()


@changes_cluster("blocked_commit", tidy=lambda c: tidy(c))
def blocked_commit(cluster, replica: str = "replica1", blocked_for: float = 1.5, unblock: str = "start",
                   quiet: bool = False) -> pd.DataFrame:
    """With ``replica`` the only synchronous standby, stop it and commit one row: the COMMIT waits.
    After ``blocked_for`` s, unblock it one of three ways (``UNBLOCK``).  One row per step, with
    the seconds since the commit was sent.  Leaves the standby running and synchronous_standby_names
    as it found it, whatever happens."""
    need_cluster(cluster)
    node = need_replica(cluster, replica, "replica")
    blocked_for = need_number(blocked_for, "blocked_for", lo=0.2, hi=30, unit="seconds")
    need_choice(unblock, "unblock", UNBLOCK)
    need_bool(quiet, "quiet")
    steps = []
    t0 = None
    w = None

    def step(what, **extra):
        steps.append(dict(t_s=None if t0 is None else round(time.monotonic() - t0, 3), step=what, **extra))
        _say(quiet, f"{'' if t0 is None else f'{time.monotonic() - t0:5.2f} s  '}{what}")

    with standby_names_kept(cluster) as before, contextlib.ExitStack() as undo:
        undo.callback(_start_if_stopped, node)                 # 3. the standby runs again
        undo.callback(lambda: w is not None and w.stop(timeout=10))  # 2. the writer ends
        undo.callback(_put_back, cluster, before)              # 1. a blocked COMMIT is released
        set_synchronous(cluster, node.name)
        step(f"synchronous_standby_names = '{node.name}'")
        node.stop()
        step(_("{node} stopped").format(node=node.name))
        w = workload.Writer(cluster.primary, max_rows=1, duration=60, run=f"blocked-{unblock}-{int(time.time())}")
        w.start()
        t0 = time.monotonic()
        app = f"lab-writer-{w.run_id}"
        deadline = t0 + blocked_for
        while time.monotonic() < deadline and not w.writes:
            time.sleep(0.05)
        waiting = _sync_waiters(cluster, app)
        step(_("COMMIT still waiting") if not w.writes else _("COMMIT returned"),
             waiting_in_SyncRep=waiting, acknowledged=sum(x.outcome == "acknowledged" for x in w.writes))
        visible = cluster.primary.scalar("SELECT count(*) FROM lab_writes WHERE run = %s", (w.run_id,))
        step(_("the row, read on the primary by another session"), rows_visible=int(visible))
        if unblock == "start":
            node.start()
        elif unblock == "async":
            cluster.primary.set(synchronous_standby_names=None)
        else:
            cluster.primary.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                                    (app,), dbname="postgres")
        step(_("unblock: {way}").format(way=_UNBLOCK_SHOWN[unblock]()))
        w.wait(30)
        log = w.log()
        ack = log.iloc[0] if len(log) else None
        step(_("COMMIT returned") if ack is not None else _("COMMIT still waiting after 30 s"),
             acknowledged=int(ack is not None and ack["outcome"] == "acknowledged"),
             commit_latency_s=None if ack is None else round(float(ack["latency_s"]), 3),
             warning=None if ack is None else ack["note"])
    cluster.wait_streaming(names=[node.name])
    return pd.DataFrame(steps)


def commits_while_down(cluster, names: str, down: str, seconds: float = 1.0, quiet: bool = False) -> dict:
    """With ``synchronous_standby_names = names``, stop replica ``down`` and write for ``seconds``:
    how many commits were acknowledged meanwhile (0: the primary blocked).  Restores everything,
    whatever happens."""
    need_cluster(cluster)
    need_str(names, "names (synchronous_standby_names)", example="'ANY 1 (replica1, replica2)'")
    node = need_replica(cluster, down, "down")
    seconds = need_number(seconds, "seconds", lo=0.2, hi=30)
    need_bool(quiet, "quiet")
    w = None
    # the writer's table first: created while the standby is down, its COMMIT would wait too
    cluster.primary.execute(workload.CREATE_TABLE)
    with standby_names_kept(cluster) as before, contextlib.ExitStack() as undo:
        undo.callback(_start_if_stopped, node)                 # 3. the standby runs again
        undo.callback(lambda: w is not None and w.stop())      # 2. the writer ends
        undo.callback(_put_back, cluster, before)              # 1. a blocked COMMIT is released
        set_synchronous(cluster, names)
        node.stop()
        w = workload.Writer(cluster.primary, duration=seconds)
        w.start()
        w.wait(seconds + 0.5)
        window_end = time.time()
        acked = sum(x.outcome == "acknowledged" and x.done_at <= window_end for x in w.writes)
        blocked = w.running
    cluster.wait_streaming(names=[node.name])
    row = dict(synchronous_standby_names=names, stopped=node.name, commits_acknowledged=acked,
               blocked_at_the_end=blocked)
    if blocked:
        _say(quiet, _("{names!r} with {node} stopped: {acked} commits in {seconds:g} s — blocked").format(
            names=names, node=node.name, acked=acked, seconds=seconds))
    else:
        _say(quiet, _("{names!r} with {node} stopped: {acked} commits in {seconds:g} s").format(
            names=names, node=node.name, acked=acked, seconds=seconds))
    return row


@changes_cluster("quorum", tidy=lambda c: tidy(c))
def quorum(cluster, replicas=("replica1", "replica2"), seconds: float = 1.0, quiet: bool = False) -> pd.DataFrame:
    """Three configurations, each with ``replicas[1]`` stopped: one named standby (the stopped one),
    ``FIRST 2 (...)`` (both), and ``ANY 1 (...)`` (a quorum of one): commits acknowledged in
    ``seconds``."""
    need_cluster(cluster)
    if not isinstance(replicas, (list, tuple)) or len(replicas) != 2:
        raise BadArgument(_("replicas is two replicas' names, e.g. ('replica1', 'replica2'), not {value!r}").format(
            value=replicas)[:200])
    a, b = (need_replica(cluster, r, "replicas").name for r in replicas)
    if a == b:
        raise BadArgument(_("replicas names two different replicas, not {name!r} twice").format(name=a))
    seconds = need_number(seconds, "seconds", lo=0.2, hi=30)
    need_bool(quiet, "quiet")
    configs = [b, f"FIRST 2 ({a}, {b})", f"ANY 1 ({a}, {b})"]
    return pd.DataFrame([commits_while_down(cluster, c, b, seconds, quiet) for c in configs])


def tidy(cluster) -> "list[str]":
    """Put back what chapter 05 changes, after an interrupted run: thaw paused nodes, every replica
    back on the primary directly (no proxy), synchronous_standby_names reset, stopped replicas
    started.  What it did, one line each."""
    need_cluster(cluster)
    done = []
    thawed = faults.resume_all(cluster)
    if thawed:
        done.append(_("resumed {nodes}").format(nodes=", ".join(thawed)))
    for r in cluster.replicas:
        if not r.is_running:
            r.start()
            done.append(_("started {node}").format(node=r.name))
    routed = proxy.unroute_all(cluster)
    if routed:
        done.append(_("closed the proxy of {nodes}").format(nodes=", ".join(routed)))
    if cluster.primary.scalar("SHOW synchronous_standby_names"):
        cluster.primary.set(synchronous_standby_names=None)
        done.append(_("synchronous_standby_names reset (asynchronous replication)"))
    return done or [_("nothing to tidy")]


def cost_table(*costs) -> pd.DataFrame:
    """``commit_cost`` results one under the other (one row per setup and level)."""
    return pd.concat(_costs(costs, "cost_table"), ignore_index=True)
