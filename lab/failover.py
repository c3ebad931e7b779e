"""Failover: the primary crashes (or is cut off) under write load, a replica is promoted, and the
writer's own log says how long writes were impossible and which acknowledged writes were lost.

>>> run = lab.failover.failover(cluster, mode="async", latency_ms=10)    # doctest: +SKIP
>>> run.summary()                  # outage, lost acknowledged writes, promote time   # doctest: +SKIP
>>> lab.failover.timelines(cluster)                                      # doctest: +SKIP
>>> lab.failover.history(cluster.primary)       # the new timeline's .history file  # doctest: +SKIP
>>> lab.failover.restore(cluster)   # former primary rewound (pg_rewind) into a replica   # doctest: +SKIP

Who plays the HA manager: this module, by hand and at once — it kills the primary, picks the
replica that received the most WAL, promotes it, and (for a partition) fences the old primary.
Clients follow by themselves: the writer connects with one libpq string naming every node and
``target_session_attrs=read-write`` (``lab.workload.multi_host_dsn``), so after the promotion
libpq skips the dead node and the read-only ones and lands on the new primary.

Modes (``MODES``): ``async`` (no synchronous standby), ``on`` and ``remote_apply`` (every
running replica in ``synchronous_standby_names = 'ANY 1 (...)'``, the writer's
``synchronous_commit`` at that level).  Faults (``FAULTS``): ``crash`` (SIGKILL of the
primary) and ``partition`` (every replica cut off the primary by its proxy; the writer stays
with the old primary until it is fenced).
"""
from __future__ import annotations

import dataclasses
import html
import time

import pandas as pd
import psycopg2
from matplotlib.figure import Figure

from . import commands, faults, plots, proxy, sync, workload  # noqa: F401 (plots: Figures show as pictures)
from .errors import LabError, NotRunning, Text, Timeout, need_bool, need_choice, need_int, need_number, need_str
from .lsn import format_lsn, parse_lsn, record_end
from .node import Node, Role
from .faults import need_a_node, need_cluster
from .i18n import N_, _
from .system.operations import changes_cluster, check_fresh

MODES = ("async", "on", "remote_apply")
FAULTS = ("crash", "partition")


def _say(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, flush=True)


# --- timelines -------------------------------------------------------------------------------
def _control(node) -> dict:
    """pg_controldata of a node, as a dict (LANG=C is set by Node.tool)."""
    out = node.tool("pg_controldata", node.pgdata).stdout
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)}


def timeline(node) -> dict:
    """Where ``node`` stands: its current timeline (from the WAL it writes, or receives), the
    timeline of its last checkpoint (``pg_control_checkpoint()`` and ``pg_controldata``, the same
    control file), and its cluster state."""
    need_a_node(node)
    row = node.sql("SELECT pg_is_in_recovery() AS in_recovery, "
                   "(SELECT timeline_id FROM pg_control_checkpoint()) AS checkpoint_timeline, "
                   "CASE WHEN pg_is_in_recovery() THEN (SELECT received_tli FROM pg_stat_wal_receiver) "
                   "ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END "
                   "AS timeline", dbname="postgres").iloc[0]
    control = _control(node)
    return dict(node=node.name, in_recovery=bool(row["in_recovery"]),
                timeline=None if pd.isna(row["timeline"]) else int(row["timeline"]),
                checkpoint_timeline=int(row["checkpoint_timeline"]),
                controldata_timeline=int(control.get("Latest checkpoint's TimeLineID", 0)),
                cluster_state=control.get("Database cluster state"))


def timelines(cluster) -> pd.DataFrame:
    """One row per running node: role, timeline now, timeline of its last checkpoint (SQL and
    pg_controldata), cluster state.  Right after a promotion the checkpoint columns still show the
    old timeline until the new primary's first checkpoint (pg_rewind reads them: CHECKPOINT first)."""
    need_cluster(cluster)
    rows = []
    for n in cluster.nodes:
        if n.is_running:
            rows.append(dict(role=n.role.value, **timeline(n)))
    cols = ["node", "role", "in_recovery", "timeline", "checkpoint_timeline", "controldata_timeline",
            "cluster_state"]
    df = pd.DataFrame(rows, columns=cols)
    df["timeline"] = df["timeline"].astype("Int64")
    return df


def history(node) -> pd.DataFrame:
    """The newest timeline history file in ``node``'s pg_wal (``00000002.history``...; it repeats the
    lineage of the older ones), one row per line: the timeline the file describes, a parent
    timeline, the LSN where that parent was left, and why.  The raw text is in ``df.attrs["text"]``."""
    need_a_node(node)
    files = node.sql("SELECT name FROM pg_ls_waldir() WHERE name LIKE '%.history' ORDER BY name",
                     dbname="postgres")["name"].tolist()
    rows, texts = [], []
    for f in files[-1:]:  # the newest holds the whole lineage
        text = node.scalar("SELECT pg_read_file('pg_wal/' || %s)", (f,), dbname="postgres") or ""
        texts.append(f"--- {f}\n{text}")
        for line in text.splitlines():
            parts = line.split("\t")
            if len(parts) >= 2 and parts[0].strip().isdigit():
                rows.append(dict(file=f, timeline=int(f[:8], 16), parent_timeline=int(parts[0]),
                                 switchpoint=parts[1].strip(), reason=(parts[2] if len(parts) > 2 else "").strip()))
    df = pd.DataFrame(rows, columns=["file", "timeline", "parent_timeline", "switchpoint", "reason"])
    df.attrs["text"] = Text("\n".join(texts) or _("(no history file: this node has only ever been on timeline 1)"))
    return df


# --- who is the primary -----------------------------------------------------------------------
def who_answers(cluster, target_session_attrs: str = "read-write", nodes=None) -> dict:
    """Connect once with ``multi_host_dsn`` (every node, or ``nodes`` in that order) and say which
    node libpq chose, and whether it is in recovery."""
    need_cluster(cluster)
    dsn = workload.multi_host_dsn(cluster, target_session_attrs=target_session_attrs, nodes=nodes,
                                  connect_timeout=2)
    names = {(n.host, str(n.port)): n.name for n in cluster.nodes}
    order = " → ".join(n.name for n in (nodes or cluster.nodes))
    try:
        conn = psycopg2.connect(dsn)
    except psycopg2.OperationalError as e:
        return dict(hosts_in_order=order, answered_by=None, in_recovery=None,
                    error=str(e).strip().splitlines()[-1])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_is_in_recovery()")
            rec = cur.fetchone()[0]
        return dict(hosts_in_order=order, answered_by=names.get((conn.info.host, str(conn.info.port))),
                    in_recovery=rec, error=None)
    finally:
        conn.close()


def writable(cluster) -> pd.DataFrame:
    """Every running node of the physical cluster and whether it accepts writes (not in recovery): more
    than one is split brain.  A standalone server (chapters 09-10) is writable by design: not listed."""
    need_cluster(cluster)
    rows = []
    for n in cluster.nodes:
        if n.is_running and n.role != Role.STANDALONE:
            t = timeline(n)
            rows.append(dict(node=n.name, accepts_writes=not t["in_recovery"], timeline=t["timeline"], port=n.port))
    return pd.DataFrame(rows, columns=["node", "accepts_writes", "timeline", "port"])


def received(cluster) -> "dict[str, int]":
    """How far each running replica has received the WAL (and flushed it to its own disk:
    ``pg_last_wal_receive_lsn()``, else what it replayed), as byte positions by node name.  A
    replica that does not answer is left out."""
    need_cluster(cluster)
    out = {}
    for r in cluster.replicas:
        if not r.is_running:
            continue
        try:
            lsn = r.scalar("SELECT coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text",
                           dbname="postgres")
        except LabError:
            continue
        out[r.name] = parse_lsn(lsn) if lsn else 0
    return out


def _most_wal(cluster, positions: "dict[str, int]") -> Node:
    if not positions:
        raise NotRunning(_("no running replica to promote: start one (cluster.start()) or add one"))
    return cluster.node(max(positions, key=lambda name: positions[name]))


def best_candidate(cluster) -> Node:
    """The running replica that has received the most WAL (what an HA manager promotes)."""
    need_cluster(cluster)
    return _most_wal(cluster, received(cluster))


# --- one failover ----------------------------------------------------------------------------
@dataclasses.dataclass
class Failover:
    """What one failover did and what the writer saw.  ``summary()`` is one row of the RPO/RTO table."""
    mode: str
    fault: str
    old: str
    new: str
    writer: workload.Writer
    t_fault: float                      # wall clock
    t_promoted: float
    promote_s: float                    # the promotion itself (pg_ctl promote + the lab's bookkeeping)
    t_fenced: "float | None" = None
    lost: "pd.DataFrame | None" = None  # acknowledged writes the new primary lacks
    audit: "pd.DataFrame | None" = None
    # the most WAL any standby had when the links went down: the furthest of the replicas'
    # received-and-flushed positions read right after the cut and the new timeline's switchpoint
    standby_flushed: "str | None" = None
    wal_sizes: "tuple[int, int]" = (8192, 16 * 1024 * 1024)  # wal_block_size, wal_segment_size
    attrs: dict = dataclasses.field(default_factory=dict)   # which call made it, when (check_fresh)

    @property
    def log(self) -> pd.DataFrame:
        return self.writer.log()

    @property
    def outage_s(self) -> "float | None":
        """From the fault to the first write acknowledged by the new primary."""
        log = self.log
        after = log[(log["outcome"] == "acknowledged") & (log["node"] == self.new) & (log["done_at"] > self.t_fault)]
        return None if after.empty else round(float(after["done_at"].min() - self.t_fault), 3)

    def acknowledged_alone(self) -> "pd.DataFrame | None":
        """The writes the old primary acknowledged although no standby had their commit record
        when the links went down: their commit LSN is past ``standby_flushed``.  Only the isolated
        old primary of a partition can acknowledge such a write (a killed one answers nobody:
        None); under ``on`` or ``remote_apply`` it cannot either, as each COMMIT waits for a
        standby to flush it.

        Decided from the WAL, not from clocks: a COMMIT whose standby's reply crossed the link
        just before the cut may return to the client just after it, and is not one of these."""
        if self.fault != "partition" or self.standby_flushed is None:
            return None
        ack = self.writer.acknowledged()
        on_old = ack[ack["node"] == self.old]
        flushed = parse_lsn(self.standby_flushed)
        past = on_old["lsn"].map(lambda x: record_end(x, *self.wal_sizes) > flushed)
        return on_old[past.astype(bool)].reset_index(drop=True)

    def summary(self) -> pd.DataFrame:
        """One row: the writer's outcomes; ``lost`` (acknowledged, missing on the new primary);
        ``acked_by_old_after_fault`` (``acknowledged_alone``: acknowledged by the cut-off old
        primary with no standby holding the commit; None for a crash); the outage from the fault
        to the first write on the new primary; the promotion's time; median commit times (ms)."""
        check_fresh(self, _("this failover's results"))
        log = self.log
        counts = log["outcome"].value_counts()
        ack = log[log["outcome"] == "acknowledged"]
        on_old, on_new = ack[ack["node"] == self.old], ack[ack["node"] == self.new]
        alone = self.acknowledged_alone()
        late = None if alone is None else len(alone)

        def ms(part):
            return round(float(part["latency_s"].median()) * 1000, 2) if len(part) else None
        return pd.DataFrame([dict(
            mode=self.mode, fault=self.fault, old_primary=self.old, new_primary=self.new,
            acknowledged=int(counts.get("acknowledged", 0)), lost=0 if self.lost is None else len(self.lost),
            unknown=int(counts.get("unknown", 0)), failed=int(counts.get("failed", 0)),
            acked_by_old_after_fault=late, outage_s=self.outage_s, promote_s=round(self.promote_s, 3),
            commit_ms_old=ms(on_old), commit_ms_new=ms(on_new))])

    def against_fork(self) -> pd.DataFrame:
        """The acknowledged writes split by the node that acknowledged them, where their commit LSN
        lies against the new timeline's switchpoint (from the new primary's .history file), and
        whether the new primary has them: the old primary's lost ones are all past the fork; the
        new primary's own writes are past it too, on the new timeline."""
        check_fresh(self, _("this failover's results"))
        hist = history(self.writer.cluster.node(self.new))
        if hist.empty:
            raise LabError(_("{node} has no timeline history file: was it promoted?").format(node=self.new))
        point = hist.sort_values("timeline")["switchpoint"].iloc[-1]
        ack = self.writer.acknowledged()
        lost = set(self.lost["seq"]) if self.lost is not None else set()
        before, past = _("before the switchpoint"), _("past the switchpoint")
        where = ack["lsn"].map(lambda x: before if parse_lsn(x) <= parse_lsn(point) else past)
        by = ack["node"].map(lambda n: _("{node} (old primary)").format(node=n) if n == self.old else
                             _("{node} (new primary)").format(node=n) if n == self.new else str(n))
        df = pd.DataFrame({"acknowledged_by": by, "commit_lsn": where, "on_new_primary": ~ack["seq"].isin(lost)})
        out = (df.groupby(["acknowledged_by", "commit_lsn", "on_new_primary"], sort=False).size()
               .rename("writes").reset_index())
        out.attrs["switchpoint"] = point
        return out

    def figure(self) -> Figure:
        """Acknowledged writes per 50 ms, by the node that acknowledged them; the fault, the
        promotion and the fencing as lines; lost writes in red."""
        check_fresh(self, _("this failover's results"))
        log = self.log
        t0 = self.t_fault
        fig = Figure(figsize=(9, 3))
        ax = fig.subplots()
        ack = log[log["outcome"] == "acknowledged"]
        colours = {self.old: "#2f5d8a", self.new: "#3b7d3b"}
        t_all = ack["done_at"] - t0
        bins = [x / 20 for x in range(int(min(t_all.min(), 0) * 20) - 1, int(t_all.max() * 20) + 2)]
        for node, part in ack.groupby("node"):
            ax.hist(part["done_at"] - t0, bins=bins, color=colours.get(node, "#777777"), alpha=0.8,
                    label=_("acknowledged by {node}").format(node=node))
        if self.lost is not None and len(self.lost):
            ax.hist(self.lost["done_at"] - t0, bins=bins, color="#b3261e", label=_("acknowledged, then LOST"))
        for x, what, style in ((0, _("fault"), "-"), (self.t_promoted - t0, _("promote() returned"), "--"),
                               (None if self.t_fenced is None else self.t_fenced - t0, _("fenced"), ":")):
            if x is not None:
                ax.axvline(x, color="black", linestyle=style, linewidth=1)
                ax.text(x, ax.get_ylim()[1] * 0.95, f" {what}", fontsize=8, va="top")
        ax.set_xlabel(_("seconds since the {fault}").format(fault=self.fault))
        ax.set_ylabel(_("writes per 50 ms"))
        ax.set_title(_("{mode}, {fault}: outage {outage} s, {lost} acknowledged writes lost").format(
            mode=self.mode, fault=self.fault, outage=self.outage_s, lost=0 if self.lost is None else len(self.lost)),
            fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
        fig.tight_layout()
        return fig


def _check_mode(mode, fault):
    if mode not in MODES:
        raise LabError(_("mode is one of {modes}, not {mode!r}").format(modes=", ".join(MODES), mode=mode))
    if fault not in FAULTS:
        raise LabError(_("fault is one of {faults}, not {fault!r}").format(faults=", ".join(FAULTS), fault=fault))


@changes_cluster()
def set_mode(cluster, mode: str) -> str:
    """``async``: no synchronous standby; ``on`` / ``remote_apply``: every running replica in
    ``ANY 1 (...)`` (each COMMIT waits for one of them).  Returns synchronous_standby_names."""
    need_cluster(cluster)
    _check_mode(mode, "crash")
    names = ""
    if mode != "async":
        running = [r.name for r in cluster.replicas if r.is_running]
        if not running:
            raise NotRunning(_("a synchronous mode needs a running replica: cluster.start()"))
        names = f"ANY 1 ({', '.join(running)})"
        sync.set_synchronous(cluster, names)
    elif cluster.primary.scalar("SHOW synchronous_standby_names", dbname="postgres"):
        cluster.primary.set(synchronous_standby_names=None)
    return names


def _wait_for(pred, timeout: float, step: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def _route(cluster, replica: str, latency_ms: float):
    """``proxy.route``, tried once more if the proxy's new port could not be bound: on compose the
    proxy listens on the network's gateway, where a port free on 127.0.0.1 (what its claim checks)
    may still be taken; the retry claims another."""
    try:
        return proxy.route(cluster, replica, latency_ms=latency_ms)
    except LabError as e:
        if "could not listen" not in str(e) and not _could_not_listen(str(e)):
            raise
        return proxy.route(cluster, replica, latency_ms=latency_ms)


def _could_not_listen(text: str) -> bool:
    """Is ``text`` the proxy's "could not listen" LabError (lab/backends/links.py), in the language
    the lab speaks now?  Its words up to the first placeholder, looked up under the same messages."""
    starts = (_("the proxy could not listen on {listen}: {error}; try again"),
              _("the proxy could not listen on {listen}:{port}: {reason}; try again"))
    return any(s.split("{")[0] and text.startswith(s.split("{")[0]) for s in starts)


def _standby_flushed(at_cut: "dict[str, int]", new: Node) -> "str | None":
    """The furthest WAL position any standby held when its link went down: ``at_cut`` (read right
    after the cut) or, if further, the new timeline's switchpoint (the promoted replica replays
    all it received, bytes still in its socket when its position was read included)."""
    points = list(at_cut.values())
    try:
        hist = history(new)
    except LabError:
        hist = pd.DataFrame()
    if len(hist):
        points.append(parse_lsn(hist.sort_values("timeline")["switchpoint"].iloc[-1]))
    return format_lsn(max(points)) if points else None


def _not_rejoined(cluster) -> "list[str]":
    return [n.name for n in cluster.nodes if n.role == Role.FORMER_PRIMARY]


def _check_failover_args(mode, fault, rate, before, after, latency_ms, fence_after, candidate, quiet):
    _check_mode(mode, fault)
    if rate is not None:
        need_number(rate, "rate", 1, 20_000, "rows per second")
    need_number(before, "before", 0, 60, "seconds")
    need_number(after, "after", 0, 60, "seconds")
    need_number(latency_ms, "latency_ms", 0, 2_000, "milliseconds")
    need_number(fence_after, "fence_after", 0, 60, "seconds")
    if candidate is not None:
        need_str(candidate, "candidate", example="'replica2'")
    need_bool(quiet, "quiet")


def failover(cluster, mode: str = "async", fault: str = "crash", rate: "float | None" = 500,
             before: float = 1.0, after: float = 0.5, latency_ms: float = 0, fence_after: float = 0.5,
             candidate: "str | None" = None, quiet: bool = False) -> Failover:
    """Write at ``rate`` rows/s through a multi-host connection string, then after ``before`` s:
    ``crash`` (SIGKILL the primary; with ``latency_ms`` its links go down with it, so WAL still in
    flight is lost, as when a machine loses power) or ``partition`` (cut every replica off it), promote the replica
    with the most WAL (or ``candidate``), and for a partition fence the old primary (stop it) after
    ``fence_after`` s.  Writes go on ``after`` s past the first one the new primary acknowledges.
    ``latency_ms``: one-way latency added on every replica's link (lag, so async loses writes).

    The old primary is left stopped (a former primary): ``restore(cluster)`` rewinds it into a replica.
    A second failover waits for that: run twice in a row, it refuses (it would crash the new primary
    too, leaving two former primaries on two timelines).
    """
    need_cluster(cluster)
    _check_failover_args(mode, fault, rate, before, after, latency_ms, fence_after, candidate, quiet)
    formers = _not_rejoined(cluster)
    if formers:
        raise LabError(_("a failover happened already: {formers} (the old primary) is not rejoined, "
                         "{primary} is the primary; lab.failover.restore(cluster) rewinds it into a "
                         "replica, then fail over again").format(formers=", ".join(formers), primary=cluster.primary.name))
    if candidate is not None and cluster.node(candidate).role != Role.REPLICA:
        raise LabError(_("candidate {candidate} is the {role}: name a replica").format(
            candidate=candidate, role=cluster.node(candidate).role))
    return _failover(cluster, mode, fault, rate, before, after, latency_ms, fence_after, candidate, quiet)


@changes_cluster("failover", tidy=lambda c: tidy(c))
def _failover(cluster, mode, fault, rate, before, after, latency_ms, fence_after, candidate, quiet) -> Failover:
    old = cluster.primary
    if not old.is_running:
        raise NotRunning(_("the primary ({name}) is stopped: restore(cluster) or cluster.start() first").format(
            name=old.name))
    running = [r for r in cluster.replicas if r.is_running]
    if not running:
        raise NotRunning(_("failover needs a running replica: cluster.start() or cluster.add_replica()"))
    workload.ensure_table(old)
    sizes = old.settings("wal_block_size", "wal_segment_size").set_index("name")["setting"].astype(int)
    names = set_mode(cluster, mode)
    routed = []
    if latency_ms or fault == "partition":
        for r in running:
            _route(cluster, r.name, latency_ms)
            routed.append(r.name)
    level = None if mode == "async" else mode
    dsn = workload.multi_host_dsn(cluster, connect_timeout=1)
    w = workload.Writer(dsn, rate=rate, duration=before + after + fence_after + 60, cluster=cluster,
                        synchronous_commit=level, retry_interval=0.02, run=f"fo-{mode}-{fault}-{int(time.time())}")
    if latency_ms:
        _say(quiet, _("{mode}, {fault}: writing to {node} ({sync}, +{latency:g} ms each way to every replica)").format(
            mode=mode, fault=fault, node=old.name, sync=names or _("asynchronous"), latency=latency_ms))
    else:
        _say(quiet, _("{mode}, {fault}: writing to {node} ({sync})").format(
            mode=mode, fault=fault, node=old.name, sync=names or _("asynchronous")))
    t_fenced = None
    w.start()
    try:
        _wait_for(lambda: any(x.outcome == "acknowledged" for x in w.writes), 10)
        time.sleep(before)
        # t_fault: when the fault is complete (the primary dead, or every link down)
        if fault == "crash":
            # The machine dies with its network: WAL still on its way to a replica is lost too.
            for r in routed:
                proxy.link(cluster, r).cut()
            faults.kill(old)
            t_fault = time.time()
            _say(quiet, "  " + (_("{node} killed (SIGKILL), its links down with it") if routed
                                else _("{node} killed (SIGKILL)")).format(node=old.name))
        else:
            for r in routed:
                proxy.link(cluster, r).cut()
            t_fault = time.time()
            _say(quiet, "  " + _("every replica cut off {node}; {node} still runs and its clients still write").format(
                node=old.name))
        # What the standbys hold now, the links down: no later flush of theirs can reach the old
        # primary, so no COMMIT it acknowledges from now on is on a standby beyond this.
        at_cut = received(cluster)
        new = cluster.node(candidate) if candidate else _most_wal(cluster, at_cut)
        p0 = time.perf_counter()
        new.promote()
        promote_s = time.perf_counter() - p0
        t_promoted = time.time()
        _say(quiet, "  " + _("{node} promoted in {seconds:.3f} s").format(node=new.name, seconds=promote_s))
        if fault == "partition":
            time.sleep(fence_after)
            old.stop()
            t_fenced = time.time()
            _say(quiet, "  " + _("{node} fenced (stopped) {seconds:.2f} s after the cut").format(
                node=old.name, seconds=t_fenced - t_fault))

        def first_on_new():
            return any(x.outcome == "acknowledged" and x.node == new.name for x in w.writes)
        if not _wait_for(first_on_new, 15, 0.01):
            raise Timeout(_("no write reached the new primary {node} within 15 s: see writer.log()").format(
                node=new.name))
        time.sleep(after)
    finally:
        w.stop()
        for r in routed:
            proxy.unroute(cluster, r, wait=False)
    run = Failover(mode, fault, old.name, new.name, w, t_fault, t_promoted, promote_s, t_fenced,
                   standby_flushed=_standby_flushed(at_cut, new),
                   wal_sizes=(int(sizes["wal_block_size"]), int(sizes["wal_segment_size"])))
    run.lost = workload.lost_writes(w, new)
    run.audit = workload.audit(w, new)
    s = run.summary().iloc[0]
    _say(quiet, "  " + _("first write on {node} {outage} s after the {fault}; "
                         "{lost} of {acknowledged} acknowledged writes lost, {unknown} unknown").format(
        node=new.name, outage=s['outage_s'], fault=fault, lost=s['lost'], acknowledged=s['acknowledged'],
        unknown=s['unknown']))
    return run


def promote_commands(cluster, name: str) -> Text:
    """The standard ways to promote replica ``name`` by hand: in psql (``SELECT pg_promote()``, which
    waits until it is done) or in a terminal (``pg_ctl promote``, as the server's user)."""
    need_cluster(cluster)
    need_str(name, "name", example="'replica1'")
    node = cluster.node(name)
    user = cluster.credentials["user"]
    if node.spec.get("container"):
        shell = f"docker exec -u postgres {node.spec['container']} pg_ctl promote -D {node.pgdata}"
    else:
        shell = f"pg_ctl promote -D {node.pgdata}    # " + _("as the user the server runs as")
    return Text(_("# in psql, connected to {name}:").format(name=name)
                + f"  psql -h 127.0.0.1 -p {node.port} -U {user} -d postgres\n"
                "SELECT pg_promote();             -- " + _("waits (up to 60 s) until it accepts writes") + "\n"
                + _("# or in a terminal:") + f"\n{shell}")


# --- after a failover ---------------------------------------------------------------------------
def follows(cluster, r: Node, timeout: float = 2.0) -> bool:
    """Does replica ``r`` stream from the current primary, on its timeline?

    True when ``r`` streams (within ``timeout`` seconds) and the timeline its WAL receiver
    receives is the current primary's; False for a stopped node, a replica left on an old
    timeline after a failover, or one that never connects::

        >>> failover.follows(cluster, cluster.node("pg-replica"))
        True
    """
    need_cluster(cluster)
    try:
        cluster.wait_streaming(timeout=timeout, names=[r.name])
    except (Timeout, LabError):
        return False
    try:
        tli = r.scalar("SELECT received_tli FROM pg_stat_wal_receiver", dbname="postgres")
        return tli == timeline(cluster.primary)["timeline"]
    except LabError:
        return False


@changes_cluster()
def restore(cluster, quiet: bool = True) -> "list[str]":
    """Every node back to work under the current primary: former primaries (and replicas that had
    gone past the fork, so cannot follow) rewound with pg_rewind; stopped replicas started.  What
    it did, one line each."""
    need_cluster(cluster)
    done = []
    faults.resume_all(cluster)
    for n in cluster.nodes:
        if n.name == cluster.primary.name or n.role == Role.STANDALONE:  # outside the physical cluster
            continue
        if n.role == Role.REPLICA and not n.is_running:
            try:
                n.start()
                done.append(_("started {node}").format(node=n.name))
            except LabError:
                pass
        if n.role == Role.REPLICA and n.is_running and follows(cluster, n):
            continue
        t0 = time.monotonic()
        cluster.rejoin(n.name)
        done.append(_("rewound {node} into a replica of {primary} ({seconds:.1f} s)").format(
            node=n.name, primary=cluster.primary.name, seconds=time.monotonic() - t0))
    _say(quiet, "\n".join(done) or _("nothing to restore: every node streams from the primary"))
    return done


@changes_cluster()
def tidy(cluster) -> "list[str]":
    """Put back what this chapter changes, after an interrupted run: thaw, unroute proxies,
    asynchronous replication, every other node a streaming replica of the primary."""
    need_cluster(cluster)
    done = []
    thawed = faults.resume_all(cluster)
    if thawed:
        done.append(_("resumed {nodes}").format(nodes=", ".join(thawed)))
    if not cluster.primary.is_running:
        cluster.primary.start()
        done.append(_("started the primary {node}").format(node=cluster.primary.name))
    routed = proxy.unroute_all(cluster, wait=False)
    if routed:
        done.append(_("closed the proxy of {nodes}").format(nodes=", ".join(routed)))
    if cluster.primary.scalar("SHOW synchronous_standby_names", dbname="postgres"):
        cluster.primary.set(synchronous_standby_names=None)
        done.append(_("synchronous_standby_names reset (asynchronous replication)"))
    done += restore(cluster)
    return done or [_("nothing to tidy")]


# --- split brain and fencing ----------------------------------------------------------------
# the row split_brain writes on each writable node (in test_replication, shown to the student)
SPLIT = N_("split brain: written on {node} at {time}")


@changes_cluster()
def split_brain(cluster, former: "str | None" = None) -> pd.DataFrame:
    """Start the former primary again after a failover: it comes back writable, on its old
    timeline, beside the new primary.  One row is written on every writable node; the table shows
    which node has which rows (they diverge), and which node a multi-host client reaches when its
    host list starts with each of them."""
    need_cluster(cluster)
    if former is None:
        formers = _not_rejoined(cluster)
        if not formers:
            raise LabError(_("no former primary: run a failover first (lab.failover.failover(cluster))"))
        former = formers[0]
    need_str(former, "former", example="'primary'")
    old = cluster.node(former)
    if old.role != Role.FORMER_PRIMARY:
        raise LabError(_("{former} is the {role}, not a former primary: split_brain starts the old primary "
                         "of a failover (lab.failover.failover(cluster) first)").format(former=former, role=old.role))
    if not old.is_running:
        old.start()  # a former primary starts as it was: a primary (crash recovery after a kill)
    now = cluster.primary
    stamp = time.strftime("%H:%M:%S")
    texts = [_(SPLIT).format(node=n.name, time=stamp) for n in (now, old)]  # this call's rows, and only them
    rows = []
    for n, text in zip((now, old), texts):
        if not timeline(n)["in_recovery"]:
            n.execute("INSERT INTO test_replication (mensaje) VALUES (%s)", (text,))
    for n in (now, old):
        t = timeline(n)
        mine = n.sql("SELECT mensaje FROM test_replication WHERE mensaje = ANY(%s) ORDER BY id",
                     (texts,))["mensaje"].tolist()
        first = [n] + [m for m in cluster.nodes if m.name != n.name]
        rows.append(dict(node=n.name, accepts_writes=not t["in_recovery"], timeline=t["timeline"],
                         rows_it_has=mine, client_listing_it_first_reaches=who_answers(cluster, nodes=first)["answered_by"]))
    return pd.DataFrame(rows)


def survivors(cluster, brain: pd.DataFrame) -> pd.DataFrame:
    """The rows ``split_brain`` wrote, and which running node has each now (after fencing and
    rejoining, only the new primary's survive)."""
    need_cluster(cluster)
    if not isinstance(brain, pd.DataFrame) or not {"node", "rows_it_has"} <= set(brain.columns):
        raise LabError(_("survivors reads what lab.failover.split_brain(cluster) returned"))
    rows = []
    for writer, texts in zip(brain["node"], brain["rows_it_has"]):
        for text in texts:
            row = dict(row=text, written_on=writer)
            for n in cluster.nodes:
                if n.is_running:
                    row[f"on {n.name}"] = bool(n.scalar("SELECT count(*) FROM test_replication WHERE mensaje = %s",
                                                        (text,)))
            rows.append(row)
    return pd.DataFrame(rows)


@changes_cluster()
def fence(cluster, name: str, how: str = "stop") -> pd.DataFrame:
    """Fence a node that must not take writes: ``stop`` it, or ``standby`` (stop, write a
    ``standby.signal`` and start it: it comes back read-only and follows nobody's writes).
    Only a running node that accepts writes beside the primary can be fenced (the old primary of a
    split brain): fencing another one would leave the writable one writing.
    Returns ``writable(cluster)``."""
    need_str(name, "name", example="crash.old")
    need_choice(how, "how", ("stop", "standby"))
    node = cluster.node(name)
    if name == cluster.primary.name:
        raise LabError(_("{name} is the current primary: fence the OLD one").format(name=name))
    others = [n.name for n in cluster.nodes if n.name != cluster.primary.name and n.is_running
              and n.role != Role.STANDALONE and not timeline(n)["in_recovery"]]
    if name not in others:
        if not node.is_running and others:
            msg = _("{name} is stopped: it takes no writes, nothing to fence; "
                    "the node writing beside {primary} is {others}")
        elif not node.is_running:
            msg = _("{name} is stopped: it takes no writes, nothing to fence; only {primary} accepts writes")
        elif others:
            msg = _("{name} is read-only (in recovery): it takes no writes, nothing to fence; "
                    "the node writing beside {primary} is {others}")
        else:
            msg = _("{name} is read-only (in recovery): it takes no writes, nothing to fence; "
                    "only {primary} accepts writes")
        raise LabError(msg.format(name=name, primary=cluster.primary.name, others=", ".join(others)))
    node.stop()
    if how == "standby":
        node.tool("touch", f"{node.pgdata}/standby.signal")
        node.start()
    return writable(cluster)


# --- a commit whose synchronous wait was cancelled --------------------------------------------
@changes_cluster(tidy=lambda c: tidy(c))
def cancelled_wait(cluster, quiet: bool = False) -> pd.DataFrame:
    """Synchronous replication does not protect a commit whose wait was cancelled: with a replica
    as the one synchronous standby, stop it and commit a row (it waits), cancel the waiting
    session (the client gets success and a WARNING), crash the primary, start the standby and
    promote it.  One row per step; the acknowledged write is lost.  Leaves the old primary
    stopped: ``restore(cluster)``."""
    need_bool(quiet, "quiet")
    formers = _not_rejoined(cluster)
    if formers:
        raise LabError(_("{formers} (an old primary) is not rejoined: lab.failover.restore(cluster) first").format(
            formers=", ".join(formers)))
    old = cluster.primary
    standby = best_candidate(cluster)
    workload.ensure_table(old)
    steps, t0 = [], time.monotonic()

    def step(what, **extra):
        steps.append(dict(t_s=round(time.monotonic() - t0, 3), step=what, **extra))
        _say(quiet, f"{time.monotonic() - t0:5.2f} s  {what}")

    sync.set_synchronous(cluster, standby.name)
    step(_("synchronous_standby_names = '{standby}' on {primary}").format(standby=standby.name, primary=old.name))
    standby.stop()
    step(_("{node} stopped").format(node=standby.name))
    w = workload.Writer(workload.multi_host_dsn(cluster), max_rows=1, duration=60, cluster=cluster,
                        synchronous_commit="on", run=f"cancelled-{int(time.time())}")
    app = f"lab-writer-{w.run_id}"
    try:
        w.start()
        _wait_for(lambda: sync._sync_waiters(cluster, app) > 0, 10, 0.02)
        step(_("COMMIT waits for the synchronous standby"), waiting_in_SyncRep=sync._sync_waiters(cluster, app))
        old.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                    (app,), dbname="postgres")
        w.wait(10)
        rec = w.writes[0] if w.writes else None
        step(_("the waiting session cancelled: COMMIT returns"), acknowledged=int(bool(rec and rec.outcome == "acknowledged")),
             warning=rec.note if rec else None)
        seen = old.scalar("SELECT count(*) FROM lab_writes WHERE run = %s", (w.run_id,))
        step(_("the row, read on {node}").format(node=old.name), rows_visible=int(seen))
    finally:
        w.stop()
    faults.kill(old)
    step(_("{node} crashes (SIGKILL)").format(node=old.name))
    standby.start()
    standby.promote()
    step(_("{node} started and promoted").format(node=standby.name))
    lost = workload.lost_writes(w, standby)
    step(_("the acknowledged row, read on the new primary {node}").format(node=standby.name), lost=len(lost))
    return pd.DataFrame(steps)


# --- the RPO/RTO table ---------------------------------------------------------------------------
@changes_cluster(tidy=lambda c: tidy(c))
def rpo_rto(cluster, modes=MODES, faults_=FAULTS, rate: float = 500, before: float = 0.8, after: float = 0.3,
            latency_ms: float = 10, quiet: bool = False) -> pd.DataFrame:
    """One failover per (mode, fault), each followed by ``restore``: lost acknowledged writes (RPO)
    and outage (RTO) side by side.  ``acked_by_old_after_fault``: writes the old primary, cut off
    by a partition, acknowledged although no standby had their commit when the links went down
    (from the WAL: ``Failover.acknowledged_alone``); empty for a crash."""
    for what, values, allowed in (("modes", modes, MODES), ("faults_", faults_, FAULTS)):
        if isinstance(values, str) or not isinstance(values, (list, tuple)) or not values:
            raise LabError(_("{what} is a list of some of {allowed}, not {values!r}").format(
                what=what, allowed=", ".join(allowed), values=values))
        for v in values:
            need_choice(v, what, allowed)
    need_bool(quiet, "quiet")
    rows = []
    for mode in modes:
        for fault in faults_:
            run = failover(cluster, mode=mode, fault=fault, rate=rate, before=before, after=after,
                           latency_ms=latency_ms, quiet=True)
            rows.append(run.summary().iloc[0].to_dict())
            restore(cluster)
            _say(quiet, _("{mode:>12} × {fault:<9}: lost {lost:>3} acknowledged writes, outage {outage} s").format(
                mode=mode, fault=fault, lost=rows[-1]['lost'], outage=rows[-1]['outage_s']))
    set_mode(cluster, "async")
    df = pd.DataFrame(rows)
    return df[["mode", "fault", "acknowledged", "lost", "unknown", "acked_by_old_after_fault", "outage_s",
               "promote_s", "commit_ms_old", "old_primary", "new_primary"]]


def failover_action(cluster, mode: str, fault: str, latency_ms: float = 10, rows: "list | None" = None) -> str:
    """What the failover panel's button does, as a plain function: one failover (``failover``), then
    ``restore``; its summary row is appended to ``rows`` (your RPO/RTO table, ``rpo_table(rows)``).
    A one-line message, never a LabError.

    >>> mine = []                                                                  # doctest: +SKIP
    >>> lab.failover.failover_action(cluster, "async", "partition", 10, mine)      # doctest: +SKIP
    'async × partition: 212 of 690 acknowledged writes lost, outage 0.64 s (replica1 is the primary now)'
    """
    need_cluster(cluster)
    if rows is not None:
        _need_rows(rows)
    try:
        run = failover(cluster, mode=mode, fault=fault, latency_ms=latency_ms, before=0.8, after=0.3, quiet=True)
        restore(cluster)
    except LabError as e:
        return _("{mode} × {fault}: could not fail over: {error}").format(mode=mode, fault=fault, error=e)
    row = run.summary().iloc[0].to_dict()
    row["latency_ms"] = latency_ms
    if rows is not None:
        rows.append(row)
    return _("{mode} × {fault}: {lost} of {acknowledged} acknowledged writes lost, "
             "outage {outage} s ({node} is the primary now)").format(
        mode=mode, fault=fault, lost=row['lost'], acknowledged=row['acknowledged'], outage=row['outage_s'], node=run.new)


def rpo_table(rows) -> pd.DataFrame:
    """The rows ``failover_action`` collected: one line per failover you ran."""
    cols = ["mode", "fault", "latency_ms", "acknowledged", "lost", "unknown", "outage_s", "commit_ms_old"]
    _need_rows(rows)
    return pd.DataFrame(list(rows), columns=cols)


def _need_rows(rows) -> None:
    if not isinstance(rows, (list, tuple)) or not all(isinstance(r, dict) for r in rows):
        raise LabError(_("rows is the list failover_action fills (start with mine = []), not {value!r}").format(
            value=str(rows)[:40]))


def failover_panel(cluster, rows: "list | None" = None):
    """Pick a mode, a fault and the added latency, press *fail over*: each press runs
    ``failover_action`` and adds a row to the table below it (``rows``, if you pass your own list)."""
    import ipywidgets as w  # lazy: ipywidgets (~1 s under load) only for the panel, not lab.failover's functions
    from IPython.display import display  # lazy: as ipywidgets
    rows = rows if rows is not None else []
    mode = w.Dropdown(options=MODES, value="async", description=_("mode"), layout=w.Layout(width="200px"))
    fault = w.Dropdown(options=FAULTS, value="crash", description=_("fault"), layout=w.Layout(width="200px"))
    latency = w.IntSlider(value=10, min=0, max=50, step=5, description=_("latency ms"), layout=w.Layout(width="320px"))
    go = w.Button(description=_("fail over"), button_style="danger", layout=w.Layout(width="110px"))
    message = w.HTML(value="<i>" + _("nothing happens until you press the button (each press takes a few seconds)")
                     + "</i>")
    out = w.Output()

    def on_click(_b):
        message.value = "<i>" + _("{mode} × {fault}: failing over…").format(
            mode=html.escape(mode.value), fault=html.escape(fault.value)) + "</i>"
        message.value = html.escape(failover_action(cluster, mode.value, fault.value, latency.value, rows))
        with out:
            out.clear_output(wait=True)
            display(rpo_table(rows))

    go.on_click(on_click)
    return w.VBox([w.HBox([mode, fault, latency, go]), message, out])


def rewind_log(node, tail: int = 400) -> Text:
    """The lines of ``node``'s log written by replica/entrypoint.sh and pg_rewind (its last rejoin)."""
    need_a_node(node)
    need_int(tail, "tail", 1, 1_000_000)
    log = commands.mask_log(node._cluster.backend.logs(node.spec, tail))  # the English lines, to find the rejoin
    lines = [ln for ln in log.splitlines() if ln.startswith(("entrypoint[", "pg_rewind:"))]
    last = max((i for i, ln in enumerate(lines) if "timeline" in ln and "here" in ln), default=0)
    return Text(commands.entrypoint_says("\n".join(lines[last:])) or _("(no rejoin in the last lines of the log)"))


@changes_cluster(tidy=lambda c: tidy(c))
def switchover(cluster, to: "str | None" = None, rate: float = 300, seconds: float = 1.0, quiet: bool = False) -> pd.DataFrame:
    """A planned switchover to replica ``to`` under write load (``Cluster.switchover``): the writer's
    audit on the new primary, and how long writes paused.  ``to``: by default the node called
    ``primary`` if it is a replica now, else the replica with the most WAL."""
    need_number(rate, "rate", 1, 20_000, "rows per second")
    need_number(seconds, "seconds", 0, 60)
    need_bool(quiet, "quiet")
    if to is None:
        names = [r.name for r in cluster.replicas if r.is_running]
        to = "primary" if "primary" in names else best_candidate(cluster).name
    need_str(to, "to", example="'replica1'")
    if cluster.node(to).role != Role.REPLICA:
        raise LabError(_("{to} is the {role}: switch over to a running replica").format(to=to, role=cluster.node(to).role))
    workload.ensure_table(cluster.primary)
    set_mode(cluster, "async")
    w = workload.Writer(workload.multi_host_dsn(cluster, connect_timeout=1), rate=rate, duration=seconds + 60,
                        cluster=cluster, retry_interval=0.02, run=f"switchover-{int(time.time())}")
    w.start()
    try:
        time.sleep(seconds / 2)
        t0 = time.time()
        cluster.switchover(to)
        _wait_for(lambda: any(x.outcome == "acknowledged" and x.node == to for x in w.writes), 15, 0.01)
        time.sleep(seconds / 2)
    finally:
        w.stop()
    log = w.log()
    first_new = log[(log["outcome"] == "acknowledged") & (log["node"] == to)]["done_at"].min()
    lost = workload.lost_writes(w, cluster.node(to))
    counts = log["outcome"].value_counts()
    row = dict(new_primary=to, acknowledged=int(counts.get("acknowledged", 0)), lost=len(lost),
               unknown=int(counts.get("unknown", 0)), failed=int(counts.get("failed", 0)),
               writes_paused_s=round(float(first_new - t0), 3) if pd.notna(first_new) else None)
    _say(quiet, _("switchover to {to}: {lost} of {acknowledged} acknowledged writes lost, "
                  "writes paused {paused} s").format(to=to, lost=row['lost'], acknowledged=row['acknowledged'],
                                                     paused=row['writes_paused_s']))
    return pd.DataFrame([row])
