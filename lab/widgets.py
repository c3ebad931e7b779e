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
from .i18n import _

ACTIONS = ("start", "stop", "restart")
# what each action did and could not do, its button's label and tooltip: looked up when shown
_DONE = {"start": lambda: _("{node}: started in {seconds:.1f} s (now {state})"),
         "stop": lambda: _("{node}: stopped in {seconds:.1f} s (now {state})"),
         "restart": lambda: _("{node}: restarted in {seconds:.1f} s (now {state})")}
_FAILED = {"start": lambda: _("{node}: could not start: {error}"),
           "stop": lambda: _("{node}: could not stop: {error}"),
           "restart": lambda: _("{node}: could not restart: {error}")}
_LABEL = {"start": lambda: _("start"), "stop": lambda: _("stop"), "restart": lambda: _("restart")}
_TOOLTIP = {"start": lambda: _("start the selected node"), "stop": lambda: _("stop the selected node"),
            "restart": lambda: _("restart the selected node")}


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
        return _("unknown action {action!r}: choose one of {choices}").format(action=action, choices=", ".join(ACTIONS))
    try:
        node = cluster.node(node_name)
        before = node.state.value
        if action == "start" and before == "running":
            return _("{node} is already running").format(node=node.name)
        if action == "stop" and before == "stopped":
            return _("{node} is already stopped").format(node=node.name)
        t0 = time.monotonic()
        getattr(node, action)()
        took = time.monotonic() - t0
        return _DONE[action]().format(node=node.name, seconds=took, state=node.state.label)
    except LabError as e:
        return _FAILED[action]().format(node=node_name, error=e)


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
    picker = w.Dropdown(options=names, value=names[0][1] if names else None, description=_("node"),
                        layout=w.Layout(width="260px"))
    buttons = {a: w.Button(description=_LABEL[a](), tooltip=_TOOLTIP[a](), layout=w.Layout(width="90px"))
               for a in ACTIONS}
    buttons["stop"].button_style = "warning"
    refresh_button = w.Button(description=_("refresh"), icon="refresh", layout=w.Layout(width="100px"))
    hint = _("pick a node and an action")
    message = w.HTML(value=f"<i>{html.escape(hint)}</i>")
    out = w.Output()

    def on_action(action):
        def handler(_button):
            doing = _("{action} {node}…").format(action=_LABEL[action](), node=picker.value)
            message.value = f"<i>{html.escape(doing)}</i>"
            message.value = html.escape(node_action(cluster, picker.value, action))
            _show_status(cluster, out, picker)
        return handler

    for action, button in buttons.items():
        button.on_click(on_action(action))
    refresh_button.on_click(lambda _b: _show_status(cluster, out, picker))
    _show_status(cluster, out, picker)
    title = w.HTML(_("<b>Cluster</b> in <code>{path}</code>").format(path=html.escape(str(cluster.home.path))))
    return w.VBox([title, w.HBox([picker, *buttons.values(), refresh_button]), message, out])
