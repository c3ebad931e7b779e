"""The lab's lock (one process at a time changes a cluster), interruptions that end in one line,
results never taken from an interrupted run, and a private lab home.  No server: processes and
files only (the lock between two kernels on real servers is in tests/test_core_robust.py)."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from lab.errors import Interrupted, LabBusy, LabError
from lab.system import operations
from lab.system.home import LabHome, register_user, who_am_i

REPO = Path(__file__).resolve().parent.parent


class Fake:
    """Stands for a Cluster: what the decorator needs of one is its lab home."""

    def __init__(self, home: LabHome):
        self.home = home


def _other_process(home: Path, body: str, timeout: float = 60) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from lab.system.home import LabHome
        from lab.errors import LabError
        home = LabHome({str(home)!r})
    """) + textwrap.dedent(body)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, JPY_SESSION_NAME="/home/s/notebooks/05_lag.ipynb"))


def test_a_new_lab_home_is_private(tmp_path):
    home = LabHome(tmp_path / "deep" / "lab")
    home.ensure()
    assert stat.S_IMODE(home.path.stat().st_mode) == 0o700


def test_an_existing_home_others_could_list_is_made_private_and_says_so(tmp_path, capsys):
    path = tmp_path / "lab"
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)
    LabHome(path).ensure()
    assert stat.S_IMODE(path.stat().st_mode) == 0o711  # traversable: a server user may reach data inside
    err = capsys.readouterr().err
    assert "mode 755" in err and "711" in err and len(err.strip().splitlines()) == 1


def test_the_lock_is_reentrant_in_a_process_and_orders_before_the_state_lock(tmp_path):
    home = LabHome(tmp_path / "lab")
    with home.operation("outer"):
        with home.locked():           # takes the operation lock again (re-entrant), then the state lock
            with home.operation("inner"):
                pass
    with home.locked():
        pass


def test_a_second_process_waits_naming_the_notebook_that_holds_the_lock(tmp_path):
    home = LabHome(tmp_path / "lab")
    home.ensure()
    holder = _other_process(home.path, """
        with home.operation("failover"):
            print("holding", flush=True)
            time.sleep(1.5)
    """)
    assert holder.stdout.readline().strip() == "holding"
    t0 = time.monotonic()
    with home.operation("stop"):
        waited = time.monotonic() - t0
    out, err = holder.communicate(timeout=30)
    assert holder.returncode == 0, err
    assert waited > 0.5  # it did wait for the other process (no timing bound asserted)


def test_the_waiting_line_and_the_busy_error_name_the_other_notebook(tmp_path, capsys):
    home = LabHome(tmp_path / "lab")
    home.ensure()
    holder = _other_process(home.path, """
        with home.operation("failover"):
            print("holding", flush=True)
            time.sleep(30)
    """)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(LabBusy) as e:
            with home.operation("stop", wait=0.5):
                pass
        msg = str(e.value)
        assert "05_lag.ipynb" in msg and "failover" in msg and "\n" not in msg
        waiting = capsys.readouterr().err
        assert "waiting: notebook 05_lag.ipynb" in waiting and "stop goes on" in waiting
    finally:
        holder.kill()
        holder.communicate()
    with home.operation("stop", wait=5):  # a dead holder's lock is free (flock dies with it)
        pass


def test_an_interrupted_call_ends_in_one_line_saying_what_it_put_back(tmp_path):
    home = LabHome(tmp_path / "lab")
    put_back = []

    def tidy(cluster):
        put_back.append(cluster)
        return ["closed the proxy of replica1", "reset synchronous_standby_names"]

    @operations.changes_cluster("lag_under_latency", tidy=tidy)
    def experiment(cluster):
        raise KeyboardInterrupt

    fake = Fake(home)
    with pytest.raises(Interrupted) as e:
        experiment(fake)
    assert put_back == [fake]
    msg = str(e.value)
    assert msg.startswith("lag_under_latency interrupted after") and "closed the proxy of replica1" in msg
    assert "\n" not in msg and isinstance(e.value, LabError)
    assert e.value._render_traceback_() == [f"Interrupted: {msg}"]
    with home.operation("after", wait=1):  # the lock was released
        pass


def test_results_of_a_run_before_an_interrupted_one_are_refused(tmp_path):
    home = LabHome(tmp_path / "lab")
    calls = []

    @operations.changes_cluster("measure_it")
    def measure(cluster):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return pd.DataFrame({"x": [1, 2]})

    first = measure(Fake(home))
    operations.check_fresh(first)  # fine: nothing was interrupted since
    assert first.attrs["lab_call"]["call"] == "measure_it"
    with pytest.raises(Interrupted):
        measure(Fake(home))
    with pytest.raises(LabError, match="was interrupted and left none: run that cell again"):
        operations.check_fresh(first, "these samples")
    third = measure(Fake(home))
    operations.check_fresh(third)  # a finished run after the interrupted one is fresh


def test_other_processes_using_the_lab_are_listed_by_their_notebook(tmp_path):
    home = LabHome(tmp_path / "lab")
    home.ensure()
    other = _other_process(home.path, """
        from lab.system.home import register_user
        register_user(home)
        print("registered", flush=True)
        time.sleep(30)
    """)
    try:
        assert other.stdout.readline().strip() == "registered"
        assert register_user(home) == [f"notebook 05_lag.ipynb (pid {other.pid})"]
    finally:
        other.kill()
        other.communicate()
    assert register_user(home) == []  # a dead kernel is forgotten
    assert who_am_i().endswith(f"(pid {os.getpid()})")


# --- on a real cluster: a second notebook's kernel ------------------------------------------------
@pytest.mark.integration
def test_a_second_kernel_cannot_stop_a_node_while_the_first_changes_the_cluster(cluster, capsys):
    import lab
    holder = _other_process(cluster.home.path, """
        import lab
        from lab.system.home import register_user
        c = lab.attach(home.path)
        register_user(home)
        with c.home.operation("failover"):
            print("holding", flush=True)
            time.sleep(3)
        time.sleep(60)  # still a kernel using this lab
    """)
    try:
        assert holder.stdout.readline().strip() == "holding", holder.stderr.read()
        replica = cluster.node("replica1")
        with pytest.raises(LabBusy, match=r"notebook 05_lag.ipynb \(pid \d+\), in failover"):
            with cluster.home.operation("test", wait=0.3):
                replica.stop()
        assert replica.is_running  # nothing was done meanwhile
        again = lab.up(replicas=1, home=cluster.home.path)  # waits for the holder, then goes on
        assert again.node("replica1").is_running
        out = capsys.readouterr()
        assert f"also using this lab: notebook 05_lag.ipynb (pid {holder.pid})" in out.out
        assert "waiting: notebook 05_lag.ipynb" in out.err
    finally:
        holder.kill()
        holder.communicate()
