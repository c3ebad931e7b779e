"""Replication lag over time: a sampler in a background thread, a figure that redraws while it
runs, and the chapter-05 experiment (lag under added latency, a cut link and its catch-up).

>>> with lab.lag.LagSampler(cluster, every=0.1) as s:          # doctest: +SKIP
...     lab.workload.Writer(cluster.primary, rate=500, duration=3).run()
>>> lab.lag.lag_figure(s.frame())                              # doctest: +SKIP

Per replica and sample, two views of the same stream:
  - the primary's (``pg_stat_replication``): how far the replica has *written*, *flushed* and
    *replayed* the WAL (``*_lag_bytes`` from the primary's current LSN), and PostgreSQL's own
    ``write_lag`` / ``flush_lag`` / ``replay_lag`` (seconds; they go NULL when the replica is idle
    and caught up);
  - the replica's own (``pg_last_wal_receive_lsn()``, ``pg_last_wal_replay_lsn()``): what it
    says it has, asked on its own connection.
"""
from __future__ import annotations

import html
import threading
import time

import pandas as pd
import psycopg2
from matplotlib.figure import Figure

from . import faults, plots, proxy, sync, workload  # noqa: F401 (plots: shows Figures as pictures in notebooks)
from .errors import LabError, NotRunning, need_bool, need_number, need_str
from .i18n import _
from .lsn import lsn_diff, parse_lsn
from .standby import lag_table
from .system.operations import changes_cluster, check_fresh

_PRIMARY_SQL = """
SELECT pg_current_wal_lsn()::text, application_name, state, sync_state,
       write_lsn::text, flush_lsn::text, replay_lsn::text,
       EXTRACT(epoch FROM write_lag)::float8, EXTRACT(epoch FROM flush_lag)::float8,
       EXTRACT(epoch FROM replay_lag)::float8
  FROM (SELECT 1) one LEFT JOIN pg_stat_replication ON true
"""
COLUMNS = ["t", "phase", "replica", "state", "sync_state", "primary_lsn", "write_lsn", "flush_lsn", "replay_lsn",
           "write_lag_bytes", "flush_lag_bytes", "replay_lag_bytes", "write_lag_s", "flush_lag_s", "replay_lag_s",
           "received_lsn", "replayed_lsn", "behind_bytes"]


class LagSampler:
    """Sample every replica's lag every ``every`` seconds in a thread, for at most ``duration`` s.

    ``phase`` (a string you set while it runs) labels the samples.  ``frame()`` is the DataFrame
    so far, one row per replica per sample; ``t`` counts seconds from the start.
    """

    def __init__(self, cluster, every: float = 0.1, duration: float = 120, replicas=None):
        if isinstance(every, bool) or not isinstance(every, (int, float)) or not 0.01 <= every <= 10:
            raise LabError(_("every is the sampling interval in seconds (0.01 to 10), not {value!r}").format(value=every))
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not 0 < duration <= 600:
            raise LabError(_("duration bounds the sampler (seconds, at most 600), not {value!r}").format(value=duration))
        self.cluster = cluster
        self.every = float(every)
        self.duration = float(duration)
        self.names = [r if isinstance(r, str) else r.name for r in (replicas or cluster.replicas)]
        self.phase = ""
        self._rows: list = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self.t0: "float | None" = None
        self.error: "str | None" = None
        self._conns: dict = {}

    def _conn(self, name):
        c = self._conns.get(name)
        if c is None or c.closed:
            node = self.cluster.primary if name == "primary" else self.cluster.node(name)
            c = node.connect(dbname="postgres", connect_timeout=2)
            self._conns[name] = c
        return c

    def _ask(self, name, query):
        try:
            with self._conn(name).cursor() as cur:
                cur.execute(query)
                return cur.fetchall()
        except (psycopg2.Error, LabError):
            c = self._conns.pop(name, None)
            if c is not None and not c.closed:
                c.close()
            return None

    def sample(self) -> list:
        """One sample of every replica now (also what the thread does)."""
        t = time.monotonic() - (self.t0 if self.t0 is not None else time.monotonic())
        rows = self._ask("primary", _PRIMARY_SQL) or []
        current = rows[0][0] if rows else None
        by_app = {r[1]: r for r in rows if r[1] is not None}
        out = []
        for name in self.names:
            spec = self.cluster._state["nodes"].get(name, {})
            r = by_app.get(spec.get("app_name", name))
            own = self._ask(name, "SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text")
            received, replayed = own[0] if own else (None, None)
            row = dict(t=t, phase=self.phase, replica=name, state=r[2] if r else _("not connected"),
                       sync_state=r[3] if r else None, primary_lsn=current,
                       write_lsn=r[4] if r else None, flush_lsn=r[5] if r else None, replay_lsn=r[6] if r else None,
                       write_lag_s=r[7] if r else None, flush_lag_s=r[8] if r else None,
                       replay_lag_s=r[9] if r else None, received_lsn=received, replayed_lsn=replayed)
            for kind in ("write", "flush", "replay"):
                d = lsn_diff(current, row[f"{kind}_lsn"])
                row[f"{kind}_lag_bytes"] = None if d is None else max(0, d)
            d = lsn_diff(current, replayed)
            row["behind_bytes"] = None if d is None else max(0, d)
            out.append(row)
        with self._lock:
            self._rows.extend(out)
        return out

    def _run(self):
        try:
            deadline = self.t0 + self.duration
            while not self._stop.is_set() and time.monotonic() < deadline:
                self.sample()
                self._stop.wait(self.every)
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"
        finally:
            for c in self._conns.values():
                c.close()
            self._conns.clear()

    def start(self) -> "LagSampler":
        if self._thread is not None:
            raise LabError(_("this sampler has run already: make a new one"))
        if not self.cluster.primary.is_running:
            raise NotRunning(_("the primary ({name}) is stopped: start it first").format(name=self.cluster.primary.name))
        self.t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="lab-lag-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> "LagSampler":
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def frame(self) -> pd.DataFrame:
        with self._lock:
            rows = list(self._rows)
        df = pd.DataFrame(rows, columns=COLUMNS)
        for c in ("write_lag_bytes", "flush_lag_bytes", "replay_lag_bytes", "behind_bytes"):
            df[c] = df[c].astype("Int64")
        for c in ("t", "write_lag_s", "flush_lag_s", "replay_lag_s"):
            df[c] = df[c].astype("float")
        return df


# --- figures -------------------------------------------------------------------------------------
_COLOURS = ["#b3261e", "#2f5d8a", "#3b7d3b", "#9a6a16"]


def lag_figure(samples: pd.DataFrame, title: "str | None" = None) -> Figure:
    """Replay lag of each replica over time: bytes behind the primary on top, PostgreSQL's
    ``replay_lag`` (seconds) below; phases (``phase`` column) shaded and named."""
    if not isinstance(samples, pd.DataFrame) \
            or not {"t", "phase", "replica", "behind_bytes", "replay_lag_s", "replay_lag_bytes"} <= set(samples.columns):
        raise LabError(_("lag_figure draws a LagSampler's frame(): pass sampler.frame()"))
    fig = Figure(figsize=(8.5, 4.4))
    top, bottom = fig.subplots(2, 1, sharex=True)
    if len(samples):
        _shade_phases(samples, (top, bottom))
        for (name, s), colour in zip(samples.groupby("replica", sort=True), _COLOURS * 3):
            top.plot(s["t"], s["behind_bytes"].astype("float") / 1024, color=colour, lw=1.5,
                     label=_("{replica}: primary − replayed").format(replica=name))
            bottom.plot(s["t"], s["replay_lag_s"] * 1000, color=colour, lw=1.5, label=f"{name}: replay_lag")
        top.legend(loc="upper left", fontsize=8)
        bottom.legend(loc="upper left", fontsize=8)
    top.set_ylabel(_("kB of WAL behind"))
    bottom.set_ylabel("replay_lag (ms)")
    bottom.set_xlabel(_("time (s)"))
    fig.suptitle(title or _("replication lag over time"), fontsize=10)
    fig.tight_layout()
    return fig


def _shade_phases(samples, axes) -> None:
    spans = phase_spans(samples)
    shades = ["#f3e6cc", "#e3ecf5", "#e6f0e1", "#f1dede"]
    for i, (phase, start, end) in enumerate(spans):
        if not phase:
            continue
        for ax in axes:
            ax.axvspan(start, end, color=shades[i % len(shades)], alpha=0.7, lw=0)
        axes[0].annotate(phase, (start, 1.0), xycoords=("data", "axes fraction"), fontsize=7,
                         va="top", ha="left", xytext=(2, -2), textcoords="offset points")


def phase_spans(samples: pd.DataFrame) -> list:
    """(phase, first t, last t) for each run of equal ``phase`` values, in order."""
    spans = []
    for phase, t in zip(samples["phase"], samples["t"]):
        if spans and spans[-1][0] == phase:
            spans[-1][2] = t
        else:
            spans.append([phase, t, t])
    return [tuple(s) for s in spans]


class LivePlot:
    """A lag figure that redraws in place in a notebook (an IPython display handle); outside
    IPython it draws nothing.  ``update(sampler)`` redraws from the sampler's frame."""

    def __init__(self, title: "str | None" = None):
        self.title = title
        self.handle = None
        try:
            from IPython import get_ipython  # lazy: IPython is there only in a notebook, and slow to import
            from IPython.display import display  # lazy: as above
            if get_ipython() is not None:
                self.handle = display(lag_figure(pd.DataFrame(columns=COLUMNS), title), display_id=True)
        except ImportError:
            pass

    def update(self, sampler: LagSampler) -> None:
        if self.handle is not None:
            self.handle.update(lag_figure(sampler.frame(), self.title))


# --- the chapter's experiment ---------------------------------------------------------------------
def _wait_caught_up(cluster, name: str, target: int, timeout: float, sampler, plot, every=0.5) -> "float | None":
    node = cluster.node(name)
    t0 = time.monotonic()
    last_draw = t0
    while time.monotonic() - t0 < timeout:
        try:
            got = node.scalar("SELECT pg_last_wal_replay_lsn()::text", dbname="postgres")
        except LabError:
            got = None
        if got is not None and parse_lsn(got) >= target:
            return time.monotonic() - t0
        if plot is not None and time.monotonic() - last_draw > every:
            plot.update(sampler)
            last_draw = time.monotonic()
        time.sleep(0.01)
    return None


def _hold(seconds: float, sampler, plot, every: float = 0.5) -> None:
    """Let ``seconds`` pass, redrawing the live plot every ``every`` s."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(min(every, max(0.0, end - time.monotonic())))
        if plot is not None:
            plot.update(sampler)


@changes_cluster("lag_under_latency", tidy=lambda c: sync.tidy(c))
def lag_under_latency(cluster, replica: str = "replica1", latencies=(0, 20, 50, 100), seconds: float = 2.0,
                      cut_seconds: float = 2.0, rate: "float | None" = 300, every: float = 0.1, live: bool = True,
                      quiet: bool = False) -> pd.DataFrame:
    """The writer writes ``rate`` rows/s while ``replica`` streams through a proxy whose one-way
    latency steps through ``latencies`` (ms), ``seconds`` each; then the link is cut for
    ``cut_seconds`` and healed, and the time to catch up is measured.  The lag plot redraws as
    it goes (``live``).  Returns the samples, their ``phase`` ``+N ms`` for each latency, then
    "link cut" and "healed" (in the lab's language); ``attrs["catch_up_s"]`` is the catch-up time and
    ``attrs["behind_at_heal"]`` how many bytes the replica had to fetch.  The replica is put
    back on the primary at the end, whatever happens.
    """
    replica = faults.need_replica(cluster, replica).name
    steps = list(latencies) if isinstance(latencies, (list, tuple, range)) else []
    if not steps or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 <= x <= 1000 for x in steps):
        raise LabError(_("latencies are milliseconds (0 to 1000), e.g. (0, 20, 50, 100), not {value!r}").format(
            value=latencies)[:200])
    need_number(seconds, _("seconds (per latency)"), 0.2, 20)
    need_number(cut_seconds, "cut_seconds", 0, 20)
    need_bool(live, "live")
    need_bool(quiet, "quiet")
    total = len(steps) * seconds + cut_seconds + 20
    # made before the link is routed: they check every and rate, and a wrong one leaves nothing to put back
    sampler = LagSampler(cluster, every=every, duration=total, replicas=[replica])
    writer = workload.Writer(cluster.primary, rate=rate, duration=total)
    if not live:
        plot = None
    elif rate:
        plot = LivePlot(_("{replica}: lag while the primary writes {rate} rows/s").format(replica=replica, rate=rate))
    else:
        plot = LivePlot(_("{replica}: lag while the primary writes as fast as it can rows/s").format(replica=replica))
    link = proxy.route(cluster, replica, latency_ms=steps[0])
    catch_up, behind = None, None
    try:
        sampler.start()
        writer.start()
        for ms in steps:
            link.set_latency(ms)
            sampler.phase = f"+{ms:g} ms"
            if not quiet:
                print(_("{replica}: {ms:g} ms added each way").format(replica=replica, ms=ms), flush=True)
            _hold(seconds, sampler, plot)
        link.set_latency(0)
        if cut_seconds:
            sampler.phase = _("link cut")
            link.cut()
            if not quiet:
                print(_("{replica}: link cut for {seconds:g} s").format(replica=replica, seconds=cut_seconds), flush=True)
            _hold(cut_seconds, sampler, plot)
            writer.stop()
            target = parse_lsn(cluster.primary.scalar("SELECT pg_current_wal_lsn()::text", dbname="postgres"))
            got = cluster.node(replica).scalar("SELECT pg_last_wal_replay_lsn()::text", dbname="postgres")
            behind = max(0, target - parse_lsn(got)) if got else None
            sampler.phase = _("healed")
            link.heal()
            catch_up = _wait_caught_up(cluster, replica, target, 30, sampler, plot)
            if not quiet:
                if catch_up is None:
                    said = _("{replica}: healed; {behind} bytes behind, caught up in (not within 30 s)").format(
                        replica=replica, behind=behind)
                else:
                    said = _("{replica}: healed; {behind} bytes behind, caught up in {seconds:.2f} s").format(
                        replica=replica, behind=behind, seconds=catch_up)
                print(said, flush=True)
            time.sleep(min(0.5, every * 5))
    finally:
        writer.stop()
        sampler.stop()
        proxy.unroute(cluster, replica)
    if plot is not None:
        plot.update(sampler)
    df = sampler.frame()
    df.attrs.update(replica=replica, catch_up_s=catch_up, behind_at_heal=behind, writes=len(writer.writes))
    return df


def phase_summary(samples: pd.DataFrame) -> pd.DataFrame:
    """Per phase: samples, median and max bytes behind, median replay_lag (ms), and for a phase of added
    latency (``+N ms``, N each way) the round trip it adds (``added_round_trip_ms``, 2 N) and your median
    replay_lag divided by it (``replay_lag_per_round_trip``)."""
    if not isinstance(samples, pd.DataFrame) or "phase" not in samples or samples.empty:
        raise LabError(_("phase_summary reads what lag_under_latency (or a LagSampler) returns"))
    check_fresh(samples, _("these samples"))
    order = list(dict.fromkeys(samples["phase"]))
    g = samples.groupby("phase", sort=False)
    out = pd.DataFrame({
        "samples": g.size(),
        "behind_bytes_median": g["behind_bytes"].apply(lambda s: s.astype("float").median()),
        "behind_bytes_max": g["behind_bytes"].apply(lambda s: s.astype("float").max()),
        "replay_lag_ms_median": g["replay_lag_s"].median() * 1000,
    }).reindex(order)
    out["added_round_trip_ms"] = [2 * _added_ms(p) if _added_ms(p) is not None else float("nan") for p in out.index]
    ratio = out["replay_lag_ms_median"] / out["added_round_trip_ms"].where(out["added_round_trip_ms"] > 0)
    out["replay_lag_per_round_trip"] = ratio
    out = out.round(1)
    out["replay_lag_per_round_trip"] = ratio.round(2)
    return out.reset_index()


def _added_ms(phase) -> "float | None":
    """The latency a phase named ``+N ms`` added each way (N), else None.

    >>> _added_ms("+20 ms"), _added_ms("link cut")
    (20.0, None)
    """
    text = str(phase)
    if text.startswith("+") and text.endswith(" ms"):
        try:
            return float(text[1:-3])
        except ValueError:
            return None
    return None


# --- a panel for the link: latency slider, cut and heal -----------------------------------------
LINK_ACTIONS = ("latency", "cut", "heal", "direct")
# what an action could not do, and the panel's buttons: looked up when shown
_COULD_NOT = {"latency": lambda: _("{replica}: could not latency: {error}"),
              "cut": lambda: _("{replica}: could not cut: {error}"),
              "heal": lambda: _("{replica}: could not heal: {error}"),
              "direct": lambda: _("{replica}: could not direct: {error}")}
_BUTTON = {"cut": lambda: _("cut"), "heal": lambda: _("heal"), "direct": lambda: _("direct")}
PANEL_RATE = 100  # rows per second: a light load, enough for the lag to show in the table
_writers: dict = {}  # (lab home, replica) -> the Writer kept running while that replica's link is played with


def _key(cluster, replica: str) -> tuple:
    return (str(cluster.home.path), replica)


def link_writer(cluster, replica: str = "replica1") -> "workload.Writer | None":
    """The light writer that runs while ``replica``'s link panel is open or its link is changed (None if none
    runs): PANEL_RATE rows per second on the primary, so that the lag has something to show."""
    need_str(replica, "replica", example="'replica1'")
    w = _writers.get(_key(cluster, replica))
    return w if w is not None and w.running else None


def _start_writer(cluster, replica: str) -> str:
    if link_writer(cluster, replica) is not None:
        return ""
    try:
        w = workload.Writer(cluster.primary, rate=PANEL_RATE, duration=workload.MAX_SECONDS)
        w.start()
    except LabError as e:
        return "; " + _("no writer to show lag ({error})").format(error=e)
    _writers[_key(cluster, replica)] = w
    return "; " + _("a writer adds {rate} rows/s on the primary so that lag shows (for at most "
                    "{minutes} min; 'direct' stops it)").format(rate=PANEL_RATE, minutes=workload.MAX_SECONDS // 60)


def stop_link_writer(cluster, replica: str = "replica1") -> str:
    """Stop the light writer of ``replica``'s link panel, if one runs; a one-line message."""
    need_str(replica, "replica", example="'replica1'")
    w = _writers.pop(_key(cluster, replica), None)
    if w is None:
        return _("no writer was running")
    w.stop()
    return _("the writer stopped after {rows} rows").format(rows=len(w.writes))


def link_action(cluster, replica: str, action: str, latency_ms: float = 0) -> str:
    """What the link panel's controls do, as a plain function; a one-line message (a LabError only for an
    argument that is not what it should be, a BadArgument).

    ``latency``: route ``replica`` through a proxy (if it is not) with ``latency_ms`` each way;
    ``cut`` / ``heal``: the proxy's link; ``direct``: back on the primary, no proxy.  While the link goes
    through the proxy, a light writer (``link_writer``) writes on the primary, so that lag shows; ``direct``
    stops it.
    >>> lab.lag.link_action(cluster, "replica1", "latency", 50)   # doctest: +SKIP
    'replica1: +50 ms each way (through the proxy on port 31234); a writer adds 100 rows/s ...'
    """
    faults.need_cluster(cluster)
    need_str(replica, "replica", example="'replica1'")
    if action not in LINK_ACTIONS:
        return _("unknown action {action!r}: choose one of {choices}").format(action=action, choices=", ".join(LINK_ACTIONS))
    need_number(latency_ms, "latency_ms", 0, 1000, unit="milliseconds")
    try:
        if action == "direct":
            proxy.unroute(cluster, replica)
            stopped = stop_link_writer(cluster, replica)
            again = _("{replica}: streams from the primary directly again").format(replica=replica)
            return again + (f"; {stopped}" if stopped != _("no writer was running") else "")
        if action == "latency":
            lk = proxy.route(cluster, replica, latency_ms=latency_ms)
            said = _("{replica}: +{ms:g} ms each way (through the proxy on port {port})").format(
                replica=replica, ms=latency_ms, port=lk.proxy.port)
        elif action == "cut":
            said = faults.cut(cluster, replica)
        else:
            said = faults.heal(cluster, replica)
        return said + _start_writer(cluster, replica)
    except LabError as e:
        return _COULD_NOT[action]().format(replica=replica, error=e)


def panel_action(panel, action: str, latency_ms: float = 0) -> str:
    """What a control of a ``link_panel`` does: ``link_action``, then the panel's message and lag table;
    ``direct`` also puts its slider back to 0 (without adding a proxy again)."""
    text = link_action(panel.cluster, panel.replica, action, latency_ms)
    if action == "direct":
        panel.resetting = True
        try:
            panel.slider.value = 0
        finally:
            panel.resetting = False
    _show(panel, text)
    return text


def panel_slider_moved(panel, change: dict) -> "str | None":
    """The slider's observer: a new latency, unless ``panel_action`` is putting the slider back to 0."""
    if panel.resetting:
        return None
    return panel_action(panel, "latency", change["new"])


def _show(panel, text: str) -> None:
    from IPython.display import display  # lazy: as ipywidgets, only for the panel
    panel.message.value = html.escape(text)
    with panel.out:
        panel.out.clear_output(wait=True)
        display(lag_table(panel.cluster))


def link_panel(cluster, replica: str = "replica1"):
    """A latency slider and cut / heal / direct buttons for ``replica``'s link, with its lag table.

    While the panel is open a light writer (``link_writer``) writes on the primary, so that lag shows;
    ``direct``, closing the panel (``panel.close()``) or making a new one stops it.  Each control calls
    ``panel_action`` (so ``link_action``); the link does not change until you touch one."""
    faults.need_cluster(cluster)
    need_str(replica, "replica", example="'replica1'")
    import ipywidgets as w  # lazy: ipywidgets (~1 s under load) only for the panel, not lab.lag's functions

    class LinkPanel(w.VBox):
        def close(self):
            stop_link_writer(self.cluster, self.replica)
            super().close()

    stop_link_writer(cluster, replica)  # a panel made before: its writer goes with it
    slider = w.IntSlider(value=0, min=0, max=200, step=10, description=_("latency ms"),
                         continuous_update=False, layout=w.Layout(width="360px"))
    buttons = {a: w.Button(description=_BUTTON[a](), layout=w.Layout(width="80px")) for a in ("cut", "heal", "direct")}
    buttons["cut"].button_style = "warning"
    message = w.HTML()
    out = w.Output()
    panel = LinkPanel([w.HBox([slider, *buttons.values()]), message, out])
    panel.cluster, panel.replica, panel.resetting = cluster, replica, False
    panel.slider, panel.buttons, panel.message, panel.out = slider, buttons, message, out
    started = _start_writer(cluster, replica).lstrip("; ")
    message.value = html.escape(_("{replica} streams as it did; {writer}: move the slider to add latency").format(
        replica=replica, writer=started))
    slider.observe(lambda ch: panel_slider_moved(panel, ch), names="value")
    for action, b in buttons.items():
        b.on_click(lambda _b, a=action: panel_action(panel, a))
    return panel
