"""Pictures of the cluster and of measurements, as matplotlib Figures.

>>> lab.plots.topology(cluster)                                           # doctest: +SKIP
>>> lab.plots.delays(lab.replication.time_to_replica(cluster, n=50))      # doctest: +SKIP

Figures are made without pyplot, so a notebook shows each one once (as the cell's value) and
nothing is left open in pyplot's global state.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from .errors import BadArgument, LabError, need_choice
from .faults import need_cluster
from .i18n import _, ngettext

try:  # IPython comes with Jupyter; without it (a plain script) there is no notebook to show figures in
    from IPython import get_ipython
    from IPython.core.pylabtools import print_figure
except ImportError:  # pragma: no cover
    get_ipython = print_figure = None


def show_figures_in_notebooks() -> None:
    """Make a Figure that is a cell's value show as a picture.

    Jupyter's inline backend registers its PNG formatter only once pyplot is imported, and
    the lab never imports pyplot: register the same formatter for ``Figure`` ourselves.
    """
    if get_ipython is None:
        return
    ip = get_ipython()
    if ip is not None:
        ip.display_formatter.formatters["image/png"].for_type(Figure, lambda f: print_figure(f, "png"))


show_figures_in_notebooks()

# fill, edge, text per look; stopped nodes are greyed
_LOOK = {
    "primary": ("#dbe8f6", "#2f5d8a", "black"),
    "replica": ("#dcefdc", "#3b7d3b", "black"),
    "former primary": ("#f3e6cc", "#9a6a16", "black"),
    "not answering": ("#f8d7d3", "#b3261e", "black"),
    "stopped": ("#eeeeee", "#a0a0a0", "#808080"),
}
BOX_W, BOX_H_IN = 0.30, 0.85  # width in axes fraction, height in inches


def human_bytes(n) -> str:
    """``1536`` -> ``'1.5 kB'`` (powers of 1024, as PostgreSQL's pg_size_pretty)."""
    if n is None or n is pd.NA:
        return "?"
    if isinstance(n, bool) or not isinstance(n, numbers.Real):
        raise BadArgument(_("human_bytes takes a number of bytes, not {type}").format(type=type(n).__name__))
    if not math.isfinite(n):
        return "?"
    n = int(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def _streaming(cluster) -> set:
    try:
        df = cluster.primary.sql("SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'",
                                 dbname="postgres")
    except LabError:
        return set()
    return set(df["application_name"])


def _label(row) -> str:
    lsn = row["current_lsn"] if row["role"] == "primary" else row["replayed_lsn"]
    lsn = lsn if isinstance(lsn, str) else "–"
    if row["role"] == "primary":
        where = _("current LSN {lsn}").format(lsn=lsn)
    else:
        where = _("replayed LSN {lsn}").format(lsn=lsn)
    return f"{row['node']}\n{row['role']} · {row['state']}\n{row['host']}:{row['port']}\n{where}"


def _look(row) -> str:
    if row["state"] == "stopped":
        return "stopped"
    if row["state"] != "running":
        return "not answering"
    return row["role"]


_STATUS_COLUMNS = {"node", "role", "state", "host", "port", "current_lsn", "replayed_lsn", "lag_bytes"}


def topology(cluster, status: "pd.DataFrame | None" = None) -> Figure:
    """One box per node (name, role, state, port, LSN); arrows primary → replicas labelled with lag.

    Stopped nodes are grey and so is the arrow to a replica that is not streaming.
    ``status`` defaults to ``cluster.status()``.
    """
    need_cluster(cluster)
    if status is not None and (not isinstance(status, pd.DataFrame) or not _STATUS_COLUMNS <= set(status.columns)):
        raise BadArgument(_("status is what cluster.status() returns (or None for the current one)"))
    st = cluster.status() if status is None else status
    # the primary the lab writes to goes left; anything else (even a second primary after a
    # failover chapter's split brain) goes right, so no two boxes overlap
    is_primary = st["node"] == cluster.primary.name
    primary, others = st[is_primary], st[~is_primary]
    n = max(1, len(others))
    height = max(2.6, 1.1 * n + 0.7)  # inches: every box keeps room for its four lines
    fig = Figure(figsize=(8.5, height))
    ax = fig.add_axes((0, 0, 1, 1 - 0.45 / height))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    ys = [1 - (i + 0.5) / n for i in range(n)]
    box_h = BOX_H_IN / (height - 0.45)
    streaming = _streaming(cluster)

    def box(x, y, row):
        fill, edge, text = _LOOK[_look(row)]
        ax.add_patch(FancyBboxPatch((x - BOX_W / 2, y - box_h / 2), BOX_W, box_h,
                                    boxstyle="round,pad=0.01,rounding_size=0.02", fc=fill, ec=edge, lw=1.5))
        ax.text(x, y, _label(row), ha="center", va="center", fontsize=8.5, color=text, family="monospace")

    px, rx = 0.2, 0.78
    py = 0.5
    for _i, row in primary.iterrows():
        box(px, py, row)
    if primary.empty:
        ax.text(px, py, _("no primary"), ha="center", va="center", color="#b3261e")
    for y, (_i, row) in zip(ys, others.iterrows()):
        box(rx, y, row)
        if row["role"] != "replica" or primary.empty:
            continue  # a former primary follows nobody until it is rejoined
        live = row["node"] in streaming and row["state"] == "running"
        colour = "#3b7d3b" if live else "#a0a0a0"
        ax.add_patch(FancyArrowPatch((px + BOX_W / 2, py), (rx - BOX_W / 2, y), arrowstyle="-|>",
                                     mutation_scale=14, lw=1.5, color=colour, ls="-" if live else "--"))
        label = _("streaming\nlag {size}").format(size=human_bytes(row["lag_bytes"])) if live else _("not streaming")
        # nearer the replica than the primary, where the arrows fan out and labels do not collide
        at = (px + BOX_W / 2 + 0.62 * (rx - px - BOX_W), py + 0.62 * (y - py))
        ax.text(*at, label, ha="center", va="center", fontsize=8, color=colour,
                bbox=dict(fc="white", ec="none", pad=1))
    if others.empty:
        ax.text(rx, 0.5, _("no replicas\n(cluster.add_replica() adds one)"), ha="center", va="center",
                color="#808080", fontsize=9)
    version = getattr(cluster, "pg_version", "")
    replicas = int((st["role"] == "replica").sum())
    fig.suptitle(_("PostgreSQL {version}: {primaries} primary, {replicas} replica(s)").format(
        version=version, primaries=len(primary), replicas=replicas), fontsize=10)
    return fig


def delays(measurements: pd.DataFrame, unit: str = "ms") -> Figure:
    """How long rows took to reach the replica: every trial as a dot, a histogram, and the median.

    ``measurements`` is what ``lab.replication.time_to_replica`` returns.
    """
    if not isinstance(measurements, pd.DataFrame) or "seconds" not in measurements or measurements.empty:
        raise BadArgument(_("delays() plots what lab.replication.time_to_replica(cluster) returns: "
                            "pass its DataFrame"))
    scale = {"s": 1.0, "ms": 1e3, "µs": 1e6, "us": 1e6}
    scale = scale[need_choice(unit, "unit", scale)]
    values = measurements["seconds"].to_numpy(dtype=float) * scale
    median = float(np.median(values))
    fig = Figure(figsize=(8.5, 3.2))
    strip, hist = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=[1.2, 1]))
    strip.plot(measurements.get("trial", pd.Series(range(1, len(values) + 1))), values, "o", ms=4,
               color="#2f5d8a")
    strip.axhline(median, color="#b3261e", lw=1, ls="--", label=_("median {median:.3g} {unit}").format(median=median, unit=unit))
    strip.set_xlabel(_("trial"))
    strip.set_ylabel(_("time to replica ({unit})").format(unit=unit))
    strip.legend(loc="upper right", fontsize=8)
    positive = values[values > 0]
    if len(positive) and positive.max() / positive.min() > 50:  # one slow trial would squash the rest
        strip.set_yscale("log")
        bins = np.logspace(np.log10(positive.min()), np.log10(positive.max()), 20)
        hist.set_xscale("log")
    else:
        bins = 20
    hist.hist(values, bins=bins, color="#2f5d8a", alpha=0.8)
    hist.axvline(median, color="#b3261e", lw=1, ls="--")
    hist.set_xlabel(_("time to replica ({unit})").format(unit=unit))
    hist.set_ylabel(_("trials"))
    if "replica" in measurements:
        title = ngettext("{n} rows inserted on the primary: time until visible on {replica}",
                         "{n} rows inserted on the primary: time until visible on {replica}",
                         len(values)).format(n=len(values), replica=measurements["replica"].iloc[0])
    else:
        title = ngettext("{n} rows inserted on the primary: time until visible on the replica",
                         "{n} rows inserted on the primary: time until visible on the replica",
                         len(values)).format(n=len(values))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
