"""lab.plots: figures drawn from a real cluster and a real measurement."""
from __future__ import annotations

import io

import pytest
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

import lab
from lab import plots

pytestmark = pytest.mark.integration


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def _draws(fig):
    fig.savefig(io.BytesIO(), format="png")


def test_human_bytes():
    assert plots.human_bytes(0) == "0 B"
    assert plots.human_bytes(1023) == "1023 B"
    assert plots.human_bytes(1536) == "1.5 kB"
    assert plots.human_bytes(3 * 1024 ** 3) == "3.0 GB"
    assert plots.human_bytes(None) == "?"


def test_topology_of_a_primary_and_a_replica(cluster):
    cluster.wait_replayed()
    # one status for the figure and the assertions: the WAL moves on by itself (the
    # background writer logs a running-transactions record every 15 s)
    status = cluster.status()
    fig = plots.topology(cluster, status=status)
    assert isinstance(fig, Figure)
    _draws(fig)
    texts = "\n".join(_texts(fig))
    for node in cluster.nodes:
        assert node.name in texts and f":{node.port}" in texts
    row = status.set_index("node")
    assert f"current LSN {row.loc['primary', 'current_lsn']}" in texts
    assert f"streaming\nlag {plots.human_bytes(row.loc['replica1', 'lag_bytes'])}" in texts
    patches = fig.axes[0].patches
    assert sum(isinstance(p, FancyBboxPatch) for p in patches) == 2
    assert sum(isinstance(p, FancyArrowPatch) for p in patches) == 1


def test_a_stopped_replica_is_grey_and_not_streaming(cluster):
    cluster.node("replica1").stop()
    fig = plots.topology(cluster)
    _draws(fig)
    ax = fig.axes[0]
    replica_box = next(t for t in ax.texts if t.get_text().startswith("replica1"))
    assert "stopped" in replica_box.get_text()
    assert replica_box.get_color() == plots._LOOK["stopped"][2]
    assert "not streaming" in _texts(fig)


def test_topology_from_zero_to_five_replicas(cluster):
    status = cluster.status()
    fig = plots.topology(cluster, status=status[status["role"] == "primary"])
    _draws(fig)
    assert any("no replicas" in t for t in _texts(fig))
    added = [cluster.add_replica().name for _ in range(4)]
    try:
        fig = plots.topology(cluster)
        _draws(fig)
        patches = fig.axes[0].patches
        assert sum(isinstance(p, FancyBboxPatch) for p in patches) == 6
        assert sum(isinstance(p, FancyArrowPatch) for p in patches) == 5
        assert any("5 replica(s)" in t.get_text() for t in fig.texts)  # the suptitle
    finally:
        for name in added:
            cluster.remove_replica(name)


def test_delays_of_a_real_measurement(cluster):
    d = lab.replication.time_to_replica(cluster, n=8)
    fig = plots.delays(d)
    _draws(fig)
    strip = fig.axes[0]
    median_ms = d["seconds"].median() * 1000
    assert strip.get_legend().get_texts()[0].get_text() == f"median {median_ms:.3g} ms"
    assert len(strip.lines[0].get_ydata()) == 8
    with pytest.raises(lab.LabError, match="time_to_replica"):
        plots.delays(d.iloc[0:0])
    with pytest.raises(lab.LabError, match="unit"):
        plots.delays(d, unit="hours")


def test_a_figure_shows_as_a_png_in_ipython():
    """Figures are made without pyplot: lab.plots registers the PNG formatter itself."""
    from IPython.core.interactiveshell import InteractiveShell
    from matplotlib.figure import Figure as MplFigure
    shell = InteractiveShell.instance()
    try:
        plots.show_figures_in_notebooks()
        fig = MplFigure()
        fig.add_subplot().plot([1, 2, 3])
        data, _ = shell.display_formatter.format(fig)
        assert data["image/png"][:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        InteractiveShell.clear_instance()
