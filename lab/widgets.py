"""A control panel for the cluster: status table, a node picker, start/stop/restart buttons.

>>> lab.widgets.control_panel(cluster)                        # doctest: +SKIP
>>> lab.widgets.node_action(cluster, "replica1", "restart")   # doctest: +SKIP
'replica1: restarted in 0.3 s (now running)'

Widget callbacks do not run under nbval, so each button only wires a plain function of this
module (``refresh``, ``node_action``) that the tests call directly.
"""
from __future__ import annotations

import html
import time

import ipywidgets as w
import pandas as pd
from IPython.display import display

from .errors import LabError, need_str

ACTIONS = ("start", "stop", "restart")
_DONE = {"start": "started", "stop": "stopped", "restart": "restarted"}


def refresh(cluster) -> pd.DataFrame:
    """What the panel shows: ``cluster.status()``."""
    return cluster.status()


def node_action(cluster, node_name: str, action: str) -> str:
    """Start, stop or restart one node; a one-line message of what happened (never raises a LabError but
    for an argument that is not a string, a BadArgument).

    >>> lab.widgets.node_action(cluster, "replica1", "stop")      # doctest: +SKIP
    'replica1: stopped in 0.1 s (now stopped)'
    """
    need_str(node_name, "node_name", example="'replica1'")
    if action not in ACTIONS:
        return f"unknown action {action!r}: choose one of {', '.join(ACTIONS)}"
    try:
        node = cluster.node(node_name)
        before = node.state.value
        if action == "start" and before == "running":
            return f"{node.name} is already running"
        if action == "stop" and before == "stopped":
            return f"{node.name} is already stopped"
        t0 = time.monotonic()
        getattr(node, action)()
        took = time.monotonic() - t0
        return f"{node.name}: {_DONE[action]} in {took:.1f} s (now {node.state.value})"
    except LabError as e:
        return f"{node_name}: could not {action}: {e}"


def show_table(df, names, out: w.Output, picker: w.Dropdown) -> None:
    """Show ``df`` in ``out`` and offer ``names`` in ``picker``, keeping its choice if still there.

    ``names`` are values, or (label, value) pairs: the control panel labels each node with its role now."""
    names = list(names)
    values = [n[1] if isinstance(n, tuple) else n for n in names]
    if [tuple(o) if isinstance(o, (tuple, list)) else o for o in picker.options] != names:  # changed since
        keep = picker.value if picker.value in values else (values[0] if values else None)
        picker.options = names
        picker.value = keep
    with out:
        out.clear_output(wait=True)
        display(df)


def node_choices(df: pd.DataFrame) -> list:
    """(label, node) pairs for a picker, from ``cluster.status()``: each node's name and its role now
    (after a failover, the node called ``primary`` may be a replica)."""
    return [(f"{n} ({r})", n) for n, r in zip(df["node"], df["role"])]


def _show_status(cluster, out: w.Output, picker: w.Dropdown) -> None:
    df = refresh(cluster)
    show_table(df, node_choices(df), out, picker)


def control_panel(cluster) -> w.VBox:
    """A panel with the cluster's status and buttons to start, stop or restart a node.

    >>> panel = lab.widgets.control_panel(cluster)   # doctest: +SKIP
    """
    names = [(f"{n.name} ({n.role})", n.name) for n in cluster.nodes]
    picker = w.Dropdown(options=names, value=names[0][1] if names else None, description="node",
                        layout=w.Layout(width="260px"))
    buttons = {a: w.Button(description=a, tooltip=f"{a} the selected node", layout=w.Layout(width="90px"))
               for a in ACTIONS}
    buttons["stop"].button_style = "warning"
    refresh_button = w.Button(description="refresh", icon="refresh", layout=w.Layout(width="100px"))
    message = w.HTML(value="<i>pick a node and an action</i>")
    out = w.Output()

    def on_action(action):
        def handler(_button):
            message.value = f"<i>{html.escape(action)} {html.escape(str(picker.value))}…</i>"
            message.value = html.escape(node_action(cluster, picker.value, action))
            _show_status(cluster, out, picker)
        return handler

    for action, button in buttons.items():
        button.on_click(on_action(action))
    refresh_button.on_click(lambda _b: _show_status(cluster, out, picker))
    _show_status(cluster, out, picker)
    title = w.HTML(f"<b>Cluster</b> in <code>{html.escape(str(cluster.home.path))}</code>")
    return w.VBox([title, w.HBox([picker, *buttons.values(), refresh_button]), message, out])
