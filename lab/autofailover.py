"""Chapter 08's experiments: automatic failover by consensus, measured on the student's cluster.

>>> c = lab.ha.up()                                               # doctest: +SKIP
>>> lab.autofailover.etcd_election(c)        # kill etcd's Raft leader, time the next election
>>> lab.autofailover.lease_watch(c)          # the leader key's lease, renewed every loop_wait
>>> r = lab.autofailover.crash(c, "machine") # SIGKILL Patroni + PostgreSQL under the writer
>>> r.summary(); r.events; r.figure()

``crash`` runs two clients: the *app*, writing through HAProxy's read-write port (it follows the
primary by itself), and a *stale client* that stays connected to the old primary's own port (a
client nobody re-routed).  It watches, every 50 ms, who holds the leader key, the lease's time
left and which nodes accept writes, then puts the cluster back (the old node rejoins) and audits
every acknowledged write against the new primary.  Faults:

- ``machine``: SIGKILL of the primary's Patroni *and* PostgreSQL (nobody acts for it: the lease
  expires, a replica takes the key);
- ``postgres``: SIGKILL of the postmaster only (Patroni restarts it in place, or fails over when
  ``primary_start_timeout`` is 0);
- ``patroni``: SIGKILL of Patroni only (PostgreSQL keeps running, writable, unmanaged: the case
  a watchdog exists for);
- ``partition``: the primary cut from etcd (its relay), PostgreSQL replication untouched (it
  cannot renew its lease and demotes itself).
"""
from __future__ import annotations

import dataclasses
import threading
import time

import pandas as pd
import psycopg2
from matplotlib.figure import Figure

from . import workload
from .errors import BadArgument, LabError, Timeout, need_bool, need_choice, need_int, need_number
from .ha import STANDARD_DCS, HACluster, _start_all
from .i18n import LANGUAGES, N_, _, catalog
from .system.operations import changes_cluster, check_fresh

FAULTS = ("machine", "postgres", "patroni", "partition")
SYNC = ("off", "on", "strict")
POLL = 0.05


def _shown(value) -> str:
    """``repr(value)`` on one line, at most 60 characters (a DataFrame's takes several lines)."""
    return " ".join(repr(value).split())[:60]


def need_ha(cluster) -> HACluster:
    if not isinstance(cluster, HACluster):
        raise BadArgument(_("this is chapter 08's experiment: give it lab.ha.up()'s cluster, not {value}").format(
            value=_shown(cluster)))
    return cluster


# --- 1. the consensus store ------------------------------------------------------------------------
@changes_cluster("autofailover.etcd_election")
def etcd_election(cluster, timeout: float = 20) -> pd.DataFrame:
    """SIGKILL etcd's Raft leader; time until the two others agree on a new one (higher term);
    check that the store still answers (Patroni's leader key read) with two of three; start the
    killed member again and time its return.  One row."""
    need_ha(cluster)
    timeout = need_number(timeout, "timeout", lo=1, hi=300, unit="seconds")
    b = cluster.backend
    b.wait_etcd(timeout=30)
    before = cluster.etcd()
    leader = cluster.etcd_leader()
    if leader is None:
        raise LabError(_("the etcd members do not agree on a leader right now: look at cluster.etcd()"))
    term0 = int(before.set_index("member").loc[leader, "raft_term"])
    others = [m for m in before["member"] if m != leader]
    t0 = time.perf_counter()
    b.stop_etcd(leader, kill=True)
    new, term = None, None
    try:
        deadline = t0 + timeout
        while time.perf_counter() < deadline:
            st = [b.etcd_status(m, timeout=0.3) for m in others]
            if all(st) and len({str(s.get("leader")) for s in st}) == 1:
                ids = {str(s["header"]["member_id"]): m for s, m in zip(st, others)}
                lead = ids.get(str(st[0].get("leader")))
                if lead and int(st[0].get("raftTerm", 0)) > term0:
                    new, term = lead, int(st[0]["raftTerm"])
                    break
            time.sleep(0.01)
        elected = time.perf_counter() - t0
        if new is None:
            raise Timeout(_("etcd elected no new leader within {seconds:g} s: see cluster.etcd()").format(
                seconds=timeout))
        key = cluster.leader_key()
    finally:
        t1 = time.perf_counter()
        cluster.start_etcd(leader, wait=True)
        back = time.perf_counter() - t1
    return pd.DataFrame([dict(killed=leader, term_before=term0, new_leader=new, term_after=term,
                              election_ms=round(elected * 1000), answers_with_two=key["holder"] is not None,
                              patroni_leader=key["holder"], killed_member_back_ms=round(back * 1000))])


# --- 2. the leader lock ---------------------------------------------------------------------------------
def lease_watch(cluster, seconds: float = 6, every: float = 0.25) -> pd.DataFrame:
    """Sample Patroni's leader key for ``seconds``: its holder and the lease's time left.  The
    time left falls second by second and jumps back to ttl each time the leader renews (every
    loop_wait)."""
    need_ha(cluster)
    seconds = need_number(seconds, "seconds", lo=0.5, hi=120, unit="seconds")
    every = need_number(every, "every", lo=0.05, hi=10, unit="seconds")
    rows, t0 = [], time.monotonic()
    while time.monotonic() - t0 < seconds:
        k = cluster.leader_key(record=not rows)  # the command once in the transcript
        rows.append(dict(t_s=round(time.monotonic() - t0, 2), holder=k["holder"], left_s=k["left_s"],
                         ttl_s=k["ttl_s"]))
        time.sleep(every)
    df = pd.DataFrame(rows)
    df.attrs["renewals"] = int((df["left_s"].diff() > 0).sum())
    return df


def plot_lease(lease: pd.DataFrame) -> Figure:
    """The leader key's lease over time, from what ``lease_watch`` returns: the time left falls, and
    jumps back to ttl each time the leader renews it."""
    if not isinstance(lease, pd.DataFrame) or not {"t_s", "left_s", "ttl_s"} <= set(lease.columns) or lease.empty:
        raise BadArgument(_("plot_lease() takes what lab.autofailover.lease_watch() returned"))
    t = pd.to_numeric(lease["t_s"], errors="coerce")
    left = pd.to_numeric(lease["left_s"], errors="coerce")
    ttl = pd.to_numeric(lease["ttl_s"], errors="coerce").max()
    fig = Figure(figsize=(7, 2.5))
    ax = fig.subplots()
    ax.step(t, left, where="post", color="#2f5d8a")
    ax.set_ylim(0, (float(ttl) if pd.notna(ttl) else float(left.max() or 0)) + 1)
    ax.set_xlabel(_("seconds"))
    ax.set_ylabel(_("lease time left (s)"))
    ax.set_title(_("the leader key's lease"))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# --- 3-6. faults under the writer ------------------------------------------------------------------------
class _Monitor:
    """Every POLL seconds: the leader key (holder, lease left) and which nodes accept writes."""

    def __init__(self, cluster: HACluster):
        self.cluster = cluster
        self.rows: list = []
        self._stop = threading.Event()
        self._conns: dict = {}
        self._thread = threading.Thread(target=self._run, name="lab-ha-monitor", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(10)
        for c in self._conns.values():
            try:
                c.close()
            except psycopg2.Error:
                pass

    def _writable(self, name: str, spec: dict) -> "bool | None":
        conn = self._conns.get(name)
        try:
            if conn is None or conn.closed:
                st = self.cluster._state
                conn = psycopg2.connect(host="127.0.0.1", port=spec["port"], user=st["superuser"],
                                        password=st["password"], dbname="postgres", connect_timeout=1,
                                        application_name="lab-ha-monitor")
                conn.autocommit = True
                self._conns[name] = conn
            with conn.cursor() as cur:
                cur.execute("SET statement_timeout = 500; SELECT NOT pg_is_in_recovery()")
                return bool(cur.fetchone()[0])
        except psycopg2.Error:
            if conn is not None:
                try:
                    conn.close()
                except psycopg2.Error:
                    pass
            self._conns.pop(name, None)
            return None

    def _run(self):
        specs = dict(self.cluster._state["nodes"])
        while not self._stop.is_set():
            t = time.time()
            try:
                k = self.cluster.leader_key(record=False, timeout=0.3)
            except LabError:
                k = {"holder": None, "left_s": None}
            row = dict(t=t, holder=k.get("holder"), left_s=k.get("left_s"))
            for name, spec in specs.items():
                row[name] = self._writable(name, spec)
            self.rows.append(row)
            self._stop.wait(POLL)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


@dataclasses.dataclass
class AutoFailover:
    """What one automatic failover did: the writers' logs, the monitor's samples, the events."""

    fault: str
    config: dict
    synchronous: str
    old: str
    new: "str | None"
    t_fault: float
    log: pd.DataFrame = dataclasses.field(repr=False)
    stale_log: pd.DataFrame = dataclasses.field(repr=False)
    samples: pd.DataFrame = dataclasses.field(repr=False)
    events: pd.DataFrame = dataclasses.field(repr=False)
    lost: pd.DataFrame = dataclasses.field(repr=False)
    restored: str = ""
    attrs: dict = dataclasses.field(default_factory=dict, repr=False)

    def _event(self, name: str) -> "float | None":
        """When event ``name`` (its English name) happened; the events table shows it in the language
        the lab spoke when it was made, so it is looked for in every language."""
        e = self.events[self.events["event"].isin(_in_every_language(name))]
        return None if e.empty else float(e["t_s"].iloc[0])

    @property
    def rto_s(self) -> "float | None":
        """Fault → the first write the app had acknowledged after the outage (None: no outage seen)."""
        return self._event("first acknowledged write")

    @property
    def acked_after_expiry(self) -> "int | None":
        """Writes the old primary acknowledged (to the stale client) after its lease expired or
        another node held the key: a second writable primary's work (None: the lease never ended)."""
        end = self._event("lease expired") if self._event("lease expired") is not None else self._event("new leader elected")
        if end is None:
            return None
        ack = self.stale_log[self.stale_log["outcome"] == "acknowledged"]
        return int(((ack["done_at"] - self.t_fault) > end).sum())

    @property
    def two_primaries_s(self) -> float:
        """How long two nodes accepted writes at the same time (as the monitor saw them)."""
        s = self.samples
        nodes = [c for c in s.columns if c not in ("t", "holder", "left_s")]
        both = s[nodes].apply(lambda r: sum(v is True for v in r), axis=1) >= 2
        return round(float(both.sum() * POLL), 2)

    def summary(self) -> pd.DataFrame:
        """One row: the fault and the configuration, RTO, acknowledged writes lost, writes the old
        primary acknowledged after its lease ended, time with two writable primaries, commit latency."""
        check_fresh(self, _("this failover's results"))
        ack = self.log[self.log["outcome"] == "acknowledged"]
        lat = ack["latency_s"] * 1000
        return pd.DataFrame([dict(
            fault=self.fault, ttl=self.config.get("ttl"), loop_wait=self.config.get("loop_wait"),
            retry_timeout=self.config.get("retry_timeout"), primary_start_timeout=self.config.get("primary_start_timeout"),
            synchronous=self.synchronous, old_leader=self.old, new_leader=self.new,
            rto_s=self.rto_s, lost_acknowledged=len(self.lost), acked_by_old_after_expiry=self.acked_after_expiry,
            two_primaries_s=self.two_primaries_s,
            commit_ms_p50=round(float(lat.median()), 2) if len(lat) else None)])

    def figure(self) -> Figure:
        """Acknowledged writes per 250 ms (app and stale client) and the events as lines."""
        check_fresh(self, _("this failover's results"))
        fig = Figure(figsize=(9, 3.2))
        ax = fig.subplots()
        t0 = self.t_fault
        for log, label, colour in ((self.log, _("app (through HAProxy)"), "#2f5d8a"),
                                   (self.stale_log, _("stale client (on {node}'s port)").format(node=self.old),
                                    "#c77c02")):
            ack = log[log["outcome"] == "acknowledged"]
            if len(ack):
                t = ack["done_at"] - t0
                bins = [x / 4 for x in range(int(min(t.min(), 0) * 4) - 1, int(t.max() * 4) + 2)]
                ax.hist(t, bins=bins, alpha=0.7, color=colour, label=label)
        if len(self.lost):
            ax.hist(self.lost["done_at"] - t0, bins=20, color="#b3261e", label=_("acknowledged, then LOST"))
        top = ax.get_ylim()[1]
        for i, (_row, e) in enumerate(self.events.iterrows()):
            is_fault = e["event"] in _in_every_language(N_("fault"))
            ax.axvline(e["t_s"], color="black", linewidth=0.8, linestyle="-" if is_fault else "--")
            ax.text(e["t_s"], top * (0.95 - 0.12 * (i % 4)), " " + str(e["event"]), fontsize=7, va="top")
        ax.set_xlabel(_("seconds since the fault ({fault})").format(fault=self.fault))
        ax.set_ylabel(_("writes per 250 ms"))
        ax.set_title(_("{fault} crash, ttl {ttl} s, synchronous {synchronous}: RTO {rto} s, "
                       "{lost} acknowledged writes lost").format(
            fault=self.fault, ttl=self.config.get("ttl"), synchronous=self.synchronous, rto=self.rto_s,
            lost=len(self.lost)), fontsize=10)
        ax.legend(fontsize=7, loc="upper right")
        fig.tight_layout()
        return fig


def _in_every_language(name: str) -> "set[str]":
    """An event's English name and its translation in each language the lab speaks."""
    return {name} | {catalog(code).gettext(name) for code in LANGUAGES}


def _events(samples: pd.DataFrame, app: pd.DataFrame, t_fault: float, old: str) -> pd.DataFrame:
    """What happened after the fault, in order: one row per event (its name in the language the lab
    speaks now, seconds since the fault, a detail)."""
    rows = [(N_("fault"), 0.0, _("on {node}").format(node=old))]
    before = samples[samples["t"] < t_fault]
    if len(before) > 1:
        up = before[before["left_s"].astype(float).diff() > 0]
        if len(up):
            rows.append((N_("last lease renewal"), round(float(up["t"].iloc[-1] - t_fault), 2),
                         _("by {node}").format(node=old)))
        left = before["left_s"].iloc[-1]
        if left is not None and left == left:
            rows.append((N_("lease would expire"), round(float(before["t"].iloc[-1] - t_fault + left), 2),
                         _("{seconds} s left at the fault").format(seconds=left)))
    after = samples[samples["t"] >= t_fault]
    gone = after[after["holder"] != old]
    if len(gone):
        first = gone.iloc[0]
        if first["holder"] is None or first["holder"] != first["holder"]:
            rows.append((N_("lease expired"), round(float(first["t"] - t_fault), 2), _("no leader key")))
        elected = gone[gone["holder"].notna()]
        if len(elected):
            e = elected.iloc[0]
            rows.append((N_("new leader elected"), round(float(e["t"] - t_fault), 2),
                         _("{node} holds the key").format(node=e["holder"])))
            new = e["holder"]
            if new in after.columns:
                w = after[(after["t"] >= e["t"]) & (after[new] == True)]  # noqa: E712 (True, not truthy)
                if len(w):
                    rows.append((N_("promoted"), round(float(w["t"].iloc[0] - t_fault), 2),
                                 _("{node} accepts writes").format(node=new)))
    if old in after.columns:
        ro = after[after[old] == False]  # noqa: E712
        if len(ro):
            rows.append((N_("old primary read-only"), round(float(ro["t"].iloc[0] - t_fault), 2),
                         _("{node} demoted itself").format(node=old)))
        down = after[after[old].isna()]
        if len(down):
            rows.append((N_("old primary unreachable"), round(float(down["t"].iloc[0] - t_fault), 2), ""))
    ack = app[app["outcome"] == "acknowledged"].sort_values("done_at")
    if len(ack) > 1:
        ends = ack["done_at"].to_numpy()
        gaps = ends[1:] - ends[:-1]
        mask = ends[1:] > t_fault
        if mask.any():
            i = int(gaps[mask].argmax())
            gap_end = ends[1:][mask][i]
            if gaps[mask][i] > 0.3:
                rows.append((N_("first acknowledged write"), round(float(gap_end - t_fault), 2),
                             _("after {seconds:.2f} s without one").format(seconds=gaps[mask][i])))
    df = pd.DataFrame([(_(name), t_s, detail) for name, t_s, detail in rows], columns=["event", "t_s", "detail"])
    return df.sort_values("t_s", kind="stable").reset_index(drop=True)


def _wait_healthy(cluster: HACluster, timeout: float = 120) -> None:
    """Every member running (leader) or streaming (replicas), one leader, writable."""
    deadline = time.monotonic() + timeout
    while True:
        view = cluster.cluster_view() or {}
        members = view.get("members", [])
        leaders = [m for m in members if m.get("role") == "leader"]
        # a replica counts once it streams: a former primary whose Patroni just came back shows
        # "running" while Patroni demotes and rewinds it
        ok = (len(members) == len(cluster._state["nodes"]) and len(leaders) == 1
              and leaders[0].get("state") == "running"
              and all(m.get("state") == "streaming" for m in members if m is not leaders[0]))
        if ok:
            cluster.wait_leader(timeout=max(1.0, deadline - time.monotonic()))
            return
        if time.monotonic() > deadline:
            raise Timeout(_("the HA cluster is not healthy after {seconds:g} s: {members} — see cluster.members() "
                            "and cluster.patroni_log(name)").format(
                seconds=timeout, members=[(m.get("name"), m.get("role"), m.get("state")) for m in members]))
        time.sleep(0.2)


def restore(cluster) -> str:
    """Put the HA cluster back after a fault: links healed, every etcd member and Patroni running
    (a killed node restarts; Patroni rejoins it with pg_rewind), the dynamic configuration the
    chapter starts from, every member healthy.  One line."""
    need_ha(cluster)
    said = _start_all(cluster, quiet=True)
    cfg = cluster.config()
    back = {k: v for k, v in STANDARD_DCS.items() if cfg.get(k) != v and not (k not in cfg and not v)}
    if back:
        cluster.set_config(**back)
    _wait_healthy(cluster)
    cluster.wait_router()
    parts = (([_("started {what}").format(what=", ".join(said))] if said else [])
             + ([_("config {settings}").format(settings=back)] if back else []))
    if parts:
        return _("HA cluster healthy ({done})").format(done="; ".join(parts))
    return _("HA cluster healthy")


def _tidy(cluster) -> "list[str]":
    return [restore(cluster)]


def _sync_ready(cluster: HACluster, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = cluster.cluster_view() or {}
        if any(m.get("role") == "sync_standby" for m in view.get("members", [])):
            return
        time.sleep(0.1)
    raise Timeout(_("no synchronous standby within {seconds:g} s: see cluster.members()").format(seconds=timeout))


@changes_cluster("autofailover.crash", tidy=_tidy)
def crash(cluster, fault: str = "machine", synchronous: str = "off", rate: float = 50, before: float = 2,
          timeout: float = 90, settle: float = 1, **config) -> AutoFailover:
    """Inject ``fault`` on the leader under two writers; watch until the app writes again on a
    leader (or ``timeout``), then put the cluster back and audit.  ``synchronous``: "off",
    "on" (``synchronous_mode``) or "strict" (also ``synchronous_mode_strict``).  ``config``:
    dynamic settings for this run (``ttl``, ``loop_wait``, ``retry_timeout``,
    ``primary_start_timeout``), put back afterwards."""
    need_ha(cluster)
    need_choice(fault, "fault", FAULTS)
    need_choice(synchronous, "synchronous", SYNC)
    rate = need_number(rate, _("rate (writes per second)"), lo=1, hi=1000)
    before = need_number(before, "before", lo=0.5, hi=60, unit="seconds")
    timeout = need_number(timeout, "timeout", lo=5, hi=600, unit="seconds")
    settle = need_number(settle, "settle", lo=0, hi=60, unit="seconds")
    for k in config:
        if k not in ("ttl", "loop_wait", "retry_timeout", "primary_start_timeout", "maximum_lag_on_failover"):
            raise BadArgument(_("crash() takes ttl, loop_wait, retry_timeout, primary_start_timeout as settings, "
                                "not {name!r}").format(name=k))
    restore(cluster)
    previous = cluster.config()
    wanted = dict(config, synchronous_mode=synchronous != "off", synchronous_mode_strict=synchronous == "strict")
    changed = {k: v for k, v in wanted.items() if previous.get(k, False if isinstance(v, bool) else None) != v}
    monitor = app = stale = None
    try:
        if changed:
            cluster.set_config(**changed)
            time.sleep(2 * cluster.config().get("loop_wait", 2) + 0.5)  # every member has applied it
        if synchronous != "off":
            _sync_ready(cluster)
        cfg = cluster.config()
        old = cluster.wait_leader(timeout=60)
        old_node = cluster.node(old)
        workload.ensure_table(old_node)
        cluster.wait_replayed(timeout=30)
        monitor = _Monitor(cluster).start()
        app = workload.Writer(cluster.rw_dsn, rate=rate, duration=before + timeout + settle, cluster=cluster,
                              retry_interval=0.05, create_table=False)
        stale = workload.Writer(workload.node_dsn(old_node, connect_timeout=1), rate=rate,
                                duration=before + timeout + settle, cluster=cluster, retry_interval=0.2,
                                create_table=False)
        app.start()
        stale.start()
        time.sleep(before)
        t_fault = time.time()
        if fault == "machine":
            cluster.backend.kill(old_node.spec)
        elif fault == "postgres":
            cluster.backend.kill_postgres(old_node.spec)
        elif fault == "patroni":
            cluster.backend.kill_patroni(old_node.spec)
        else:
            cluster.backend.cut(old_node.spec)
        deadline = time.time() + timeout
        new = None
        while time.time() < deadline:
            leader = cluster.leader
            acked = [w for w in app.writes[-5:] if w.outcome == "acknowledged" and w.done_at > t_fault + 0.3]
            if leader and acked and (leader != old or fault == "postgres") and cluster._writable(leader):
                new = leader
                break
            time.sleep(0.1)
        time.sleep(settle)
        app.stop()
        stale.stop()
        monitor.stop()
        samples = monitor.frame()
        log, stale_log = app.log(), stale.log()
        events = _events(samples, log, t_fault, old)
        restored = restore(cluster)
        leader = cluster.wait_leader(timeout=60)
        cluster.wait_replayed(timeout=60)
        lost = pd.concat([workload.lost_writes(app, cluster.node(leader)).assign(client="app"),
                          workload.lost_writes(stale, cluster.node(leader)).assign(client="stale")],
                         ignore_index=True)
    finally:
        for w in (app, stale):
            if w is not None and w.running:
                w.stop()
        if monitor is not None:
            monitor.stop()
        if changed:
            try:
                cluster.set_config(**{k: previous.get(k, False if isinstance(v, bool) else STANDARD_DCS.get(k))
                                      for k, v in changed.items()})
            except LabError:
                pass
    return AutoFailover(fault=fault, config={k: cfg.get(k) for k in ("ttl", "loop_wait", "retry_timeout",
                                                                    "primary_start_timeout")},
                        synchronous=synchronous, old=old, new=new, t_fault=t_fault, log=log, stale_log=stale_log,
                        samples=samples, events=events, lost=lost, restored=restored)


def table(*results: AutoFailover) -> pd.DataFrame:
    """The summaries of several failovers, one row each (the chapter's comparison)."""
    if not results:
        raise BadArgument(_("table() takes what crash() returned, one or more: table(r1, r2)"))
    for r in results:
        if not isinstance(r, AutoFailover):
            raise BadArgument(_("table() takes what crash() returned, not {value}").format(value=_shown(r)))
    return pd.concat([r.summary() for r in results], ignore_index=True)


# --- 7. quorum lost -----------------------------------------------------------------------------------------
@changes_cluster("autofailover.quorum_loss", tidy=_tidy)
def quorum_loss(cluster, failsafe: bool = False, hold: "float | None" = None, rate: float = 20) -> pd.DataFrame:
    """Stop two of the three etcd members for ``hold`` seconds (default ttl + 5): no leader can be
    elected or renewed.  Watch the primary (does it keep accepting writes?) with the app writing,
    then start the members again and watch the cluster recover.  ``failsafe``: Patroni's
    ``failsafe_mode`` (the primary stays while it reaches every member over the REST API).  One row
    per second: etcd members answering, leader key, primary writable, writes acknowledged."""
    need_ha(cluster)
    need_bool(failsafe, "failsafe")
    rate = need_number(rate, _("rate (writes per second)"), lo=1, hi=1000)
    restore(cluster)
    if hold is None:
        hold = cluster.config().get("ttl", 20) + 5
    hold = need_number(hold, "hold", lo=1, hi=300, unit="seconds")
    if failsafe:
        cluster.set_config(failsafe_mode=True)
        time.sleep(2 * cluster.config().get("loop_wait", 2) + 0.5)
    leader = cluster.wait_leader(timeout=60)
    keep = cluster.etcd_leader() or "etcd1"
    victims = [m for m in ("etcd1", "etcd2", "etcd3") if m != keep]
    monitor = _Monitor(cluster).start()
    app = workload.Writer(cluster.rw_dsn, rate=rate, duration=hold + 60, cluster=cluster, retry_interval=0.1,
                          create_table=True)
    try:
        app.start()
        time.sleep(1)
        for m in victims:
            cluster.stop_etcd(m, kill=True)
        t0 = time.time()  # quorum lost
        time.sleep(hold)
        t_back = time.time()
        for m in victims:
            cluster.start_etcd(m, wait=False)
        cluster.backend.wait_etcd(timeout=30)
        cluster.wait_leader(timeout=60)
        time.sleep(2)
    finally:
        app.stop()
        monitor.stop()
        if failsafe:
            try:
                cluster.set_config(failsafe_mode=False)
            except LabError:
                pass
    rows = _quorum_seconds(monitor.frame(), app.log(), t0, t_back, time.time())
    df = pd.DataFrame(rows)
    df.attrs.update(leader=leader, failsafe=failsafe, hold_s=hold, stopped=victims)
    return df


def _quorum_seconds(s: pd.DataFrame, log: pd.DataFrame, t0: float, t_back: float, t_end: float) -> "list[dict]":
    """``quorum_loss``'s table, one row per second from the second before the quorum was lost (``t0``)
    to ``t_end``: the phase, who held the leader key, which nodes accepted writes, the app's writes
    acknowledged in that second.  ``s``: the monitor's samples; ``log``: the app's writer log."""
    ack = log[log["outcome"] == "acknowledged"]
    nodes = [c for c in s.columns if c not in ("t", "holder", "left_s")]
    rows = []
    for sec in range(-1, int(t_end - t0) + 1):
        part = s[(s["t"] - t0 >= sec) & (s["t"] - t0 < sec + 1)]
        if part.empty:
            continue
        writable = sorted({n for n in nodes if (part[n] == True).any()})  # noqa: E712
        phase = _("quorum lost") if t0 <= t0 + sec < t_back else (_("before") if sec < 0 else _("restored"))
        rows.append(dict(t_s=sec, phase=phase,
                         leader_key=part["holder"].dropna().iloc[-1] if part["holder"].notna().any() else _("(no answer)"),
                         writable=", ".join(writable) or _("none"),
                         acknowledged=int(((ack["done_at"] - t0 >= sec) & (ack["done_at"] - t0 < sec + 1)).sum())))
    return rows


# --- 8. tuning ----------------------------------------------------------------------------------------------
@changes_cluster("autofailover.false_failovers", tidy=_tidy)
def false_failovers(cluster, latency_ms: float, seconds: float = 10, **config) -> pd.DataFrame:
    """Slow the leader's link to etcd by ``latency_ms`` each way for ``seconds``, with the dynamic
    ``config`` given (``ttl``, ``loop_wait``, ``retry_timeout``), then heal it and watch until a
    leader accepts writes again.  Nothing crashed, yet the leader may *demote itself* (it cannot
    renew its lease within ``retry_timeout``) and even lose the key.  One row: how often the
    leader demoted itself, how long no node accepted writes, leader changes."""
    need_ha(cluster)
    latency_ms = need_number(latency_ms, "latency_ms", lo=0, hi=10_000, unit="milliseconds")
    seconds = need_number(seconds, "seconds", lo=1, hi=300, unit="seconds")
    for k in config:
        if k not in ("ttl", "loop_wait", "retry_timeout"):
            raise BadArgument(_("false_failovers() takes ttl, loop_wait, retry_timeout as settings, not {name!r}")
                              .format(name=k))
    why = cluster.link_shaping()
    if why:
        raise LabError(why)
    restore(cluster)
    previous = cluster.config()
    changed = {k: v for k, v in config.items() if previous.get(k) != v}
    monitor = None
    try:
        if changed:
            cluster.set_config(**changed)
            time.sleep(2 * cluster.config().get("loop_wait", 2) + 0.5)
        cfg = cluster.config()
        leader = cluster.wait_leader(timeout=60)
        monitor = _Monitor(cluster).start()
        time.sleep(0.3)
        cluster.etcd_latency(leader, latency_ms)
        time.sleep(seconds)
        cluster.heal_etcd(leader)
        t_heal = time.time()
        now = cluster.wait_leader(timeout=cfg.get("ttl", 20) + 30)
        time.sleep(0.5)
    finally:
        if monitor is not None:
            monitor.stop()
        cluster.heal_etcd()
        if changed:
            try:
                cluster.set_config(**{k: previous.get(k) for k in changed})
            except LabError:
                pass
    samples = monitor.frame()
    nodes = [c for c in samples.columns if c not in ("t", "holder", "left_s")]
    any_writable = samples[nodes].apply(lambda r: any(v is True for v in r), axis=1)
    lead_writable = samples[leader] == True  # noqa: E712
    demotions = int((lead_writable.astype(int).diff() == -1).sum())
    holders = samples["holder"].dropna()
    changes = int((holders != holders.shift()).sum() - 1) if len(holders) else 0
    return pd.DataFrame([dict(ttl=cfg.get("ttl"), loop_wait=cfg.get("loop_wait"),
                              retry_timeout=cfg.get("retry_timeout"), latency_ms=latency_ms, seconds=seconds,
                              leader_demoted=demotions, no_primary_s=round(float((~any_writable).sum() * POLL), 2),
                              leader_changes=changes, leader_after=now,
                              back_after_heal_s=round(time.time() - t_heal, 1))])


def tuning(cluster, latencies=(500, 2000), retry_timeouts=(5, 9), seconds: float = 8) -> pd.DataFrame:
    """``false_failovers`` for each latency and each ``retry_timeout`` (ttl and loop_wait as they
    are): one row each.  ``tuning_figure`` plots it."""
    need_ha(cluster)
    if isinstance(latencies, (str, bytes)) or not hasattr(latencies, "__iter__") or not (latencies := list(latencies)):
        raise BadArgument(_("latencies is a list of milliseconds, e.g. (500, 2000), not {value}").format(
            value=_shown(latencies)))
    if isinstance(retry_timeouts, (str, bytes)) or not hasattr(retry_timeouts, "__iter__") \
            or not (retry_timeouts := list(retry_timeouts)):
        raise BadArgument(_("retry_timeouts is a list of seconds, e.g. (5, 9), not {value}").format(
            value=_shown(retry_timeouts)))
    # every value checked before the first run: a wrong one at the end of a list must not come after minutes of runs
    latencies = [need_number(ms, _("each of latencies"), lo=0, hi=10_000, unit="milliseconds") for ms in latencies]
    retry_timeouts = [need_int(rt, _("each of retry_timeouts (seconds)"), lo=1, hi=600) for rt in retry_timeouts]
    seconds = need_number(seconds, "seconds", lo=1, hi=300, unit="seconds")
    why = cluster.link_shaping()
    if why:  # the containers' Docker host cannot delay a link: say so, measure nothing
        print(_("not measured: {why}").format(why=why))
        out = pd.DataFrame(columns=["ttl", "loop_wait", "retry_timeout", "latency_ms", "seconds", "leader_demoted",
                                    "no_primary_s", "leader_changes", "leader_after", "back_after_heal_s"])
        out.attrs["not_measured"] = why
        return out
    rows = [false_failovers(cluster, latency_ms=ms, seconds=seconds, retry_timeout=rt)
            for rt in retry_timeouts for ms in latencies]
    return pd.concat(rows, ignore_index=True)


def tuning_figure(df: pd.DataFrame) -> Figure:
    """Seconds without a writable primary against the latency added to the leader's link to etcd,
    one line per ``retry_timeout``."""
    if not isinstance(df, pd.DataFrame) or not {"latency_ms", "no_primary_s", "retry_timeout", "ttl"} <= set(df.columns):
        raise BadArgument(_("tuning_figure() takes what lab.autofailover.tuning() returned"))
    fig = Figure(figsize=(6.5, 3))
    ax = fig.subplots()
    if df.attrs.get("not_measured"):
        ax.text(0.5, 0.5, _("not measured on this cluster:\n{why}").format(why=df.attrs["not_measured"].split(":")[0]),
                ha="center", va="center", wrap=True, transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    for rt, part in df.groupby("retry_timeout"):
        part = part.sort_values("latency_ms")
        ax.plot(part["latency_ms"], part["no_primary_s"], marker="o",
                label=_("retry_timeout {retry_timeout} s (ttl {ttl} s)").format(retry_timeout=rt,
                                                                                ttl=part["ttl"].iloc[0]))
    ax.set_xlabel(_("latency added to the leader's link to etcd, each way (ms)"))
    ax.set_ylabel(_("seconds without a primary"))
    ax.set_title(_("a slow link to etcd, no crash: false failovers"), fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


__all__ = ["FAULTS", "AutoFailover", "crash", "etcd_election", "false_failovers", "lease_watch", "plot_lease",
           "quorum_loss", "restore", "table", "tuning", "tuning_figure"]
