"""lab.widgets: the callbacks are plain functions, called here directly on a real cluster."""
from __future__ import annotations

import ipywidgets as w
import pandas as pd
import pytest

import lab
from lab import widgets

pytestmark = pytest.mark.integration


def _state(cluster, node):
    df = widgets.refresh(cluster)
    return df.set_index("node").loc[node, "state"]


def test_refresh_is_the_cluster_status(cluster):
    df = widgets.refresh(cluster)
    assert isinstance(df, pd.DataFrame)
    assert df["node"].tolist() == ["primary", "replica1"]
    assert df["state"].tolist() == ["running", "running"]


def test_stop_and_start_a_replica(cluster):
    replica = cluster.node("replica1")
    msg = widgets.node_action(cluster, "replica1", "stop")
    assert msg.startswith("replica1: stopped") and "(now stopped)" in msg
    assert _state(cluster, "replica1") == "stopped" and not replica.is_running
    assert widgets.node_action(cluster, "replica1", "stop") == "replica1 is already stopped"
    msg = widgets.node_action(cluster, "replica1", "start")
    assert msg.startswith("replica1: started") and "(now running)" in msg
    assert _state(cluster, "replica1") == "running"
    assert replica.scalar("SELECT pg_is_in_recovery()") is True
    assert widgets.node_action(cluster, "replica1", "start") == "replica1 is already running"


def test_restart_gives_a_new_server_process(cluster):
    before = cluster.primary.pid
    msg = widgets.node_action(cluster, "primary", "restart")
    assert msg.startswith("primary: restarted") and "(now running)" in msg
    assert cluster.primary.pid not in (None, before)
    assert cluster.primary.scalar("SELECT count(*) FROM test_replication") >= 2


def test_the_state_in_the_message_is_in_the_lab_s_language(cluster):
    import lab
    lab.set_language("es")
    msg = widgets.node_action(cluster, "primary", "restart")
    assert msg.startswith("primary: reiniciado en") and msg.endswith("(estado ahora: en marcha)")


def test_unknown_action_and_node_are_messages(cluster):
    msg = widgets.node_action(cluster, "replica1", "explode")
    assert "unknown action 'explode'" in msg and "start, stop, restart" in msg
    msg = widgets.node_action(cluster, "replica9", "stop")
    assert "no node 'replica9'" in msg  # the LabError's own text
    assert _state(cluster, "replica1") == "running"


def test_control_panel_buttons_wire_the_callbacks(cluster):
    panel = widgets.control_panel(cluster)
    assert isinstance(panel, w.VBox)
    picker = next(c for c in panel.children[1].children if isinstance(c, w.Dropdown))
    buttons = {c.description: c for c in panel.children[1].children if isinstance(c, w.Button)}
    message = panel.children[2]
    assert list(picker.options) == [("primary (primary)", "primary"), ("replica1 (replica)", "replica1")]
    assert set(buttons) == {"start", "stop", "restart", "refresh"}

    picker.value = "replica1"
    buttons["stop"].click()
    assert not cluster.node("replica1").is_running
    assert "replica1: stopped" in message.value
    buttons["start"].click()
    assert cluster.node("replica1").is_running
    assert "replica1: started" in message.value

    # refresh picks up a replica added since the panel was made
    cluster.add_replica("replica2")
    try:
        buttons["refresh"].click()
        assert [v for _label, v in picker.options] == ["primary", "replica1", "replica2"]
        assert picker.options[2] == ("replica2 (replica)", "replica2")
        assert picker.value == "replica1"
    finally:
        cluster.remove_replica("replica2")
    buttons["refresh"].click()
    assert [v for _label, v in picker.options] == ["primary", "replica1"]


def test_node_choices_name_each_node_with_its_role_now():
    import pandas as pd
    df = pd.DataFrame(dict(node=["primary", "replica1"], role=["replica", "primary"]))  # after a failover
    assert widgets.node_choices(df) == [("primary (replica)", "primary"), ("replica1 (primary)", "replica1")]
