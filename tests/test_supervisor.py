"""lab.services.supervisor on a tiny real process (``python -m http.server`` on a claimed port):
start, ready, re-attach from another process, stop with nothing left, a start that fails
half-way leaves nothing, the services registry."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest

import lab
from lab import services
from lab.services.supervisor import MARK, Service, marked_pids
from lab.system import ports
from lab.system.home import LabHome
from lab.system.process import pid_alive

# No PostgreSQL here, but the tier guard (labtest/tiers.py) counts every port claimed for a lab
# home as a server started, a service's included; these start tiny HTTP servers under a lab home.
pytestmark = pytest.mark.integration


@pytest.fixture
def svc(tmp_path):
    s = Service(LabHome(tmp_path / "home"), "demo", title="the demo")
    yield s
    with s.locked():
        s.stop(timeout=5)
    ports.release_all(s.home.owner)
    assert s.pids() == [], "a process of the test's service outlived it"


def _start(svc: Service, timeout: float = 30) -> dict:
    with svc.locked(), svc.starting(keep=("secret",)) as run:
        port, = run.claim_ports(1)
        # a child of the server, in its tree and marked: stop() must end it too
        proc = run.spawn("http", [sys.executable, "-c",
                                  "import subprocess, sys, runpy; "
                                  "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
                                  f"sys.argv = ['http.server', '--bind', '127.0.0.1', '{port}']; "
                                  "runpy.run_module('http.server', run_name='__main__')"])
        run.wait_ready("http", proc, f"http://127.0.0.1:{port}/", timeout)
        state = {"secret": "kept", "port": port, "ports": [port], "pids": dict(run.pids)}
        svc.write_state(state)
    return state


def test_start_ready_reattach_and_stop_leave_nothing(svc):
    state = _start(svc)
    pid, port = state["pids"]["http"], state["port"]

    # ready means answering; the files are private; the processes carry the mark
    assert svc.ours(pid)
    assert stat.S_IMODE(svc.dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(svc.state_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(svc.log("http").stat().st_mode) == 0o600
    assert ports.read_claim(port)["lab_home"] == svc.home.owner
    marked = svc.pids()
    assert pid in marked and len(marked) >= 2, "the server and its child are both marked"

    # a restarted kernel: another process finds it from the state file and the mark alone
    probe = (f"from lab.services.supervisor import Service; from lab.system.home import LabHome; "
             f"s = Service(LabHome({str(svc.home.path)!r}), 'demo'); "
             f"print(s.running(s.read_state()['pids']))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr
    # a recycled pid is not ours: our own pid lacks the service's mark
    assert not svc.ours(os.getpid())

    with svc.locked():
        assert svc.stop(timeout=5) is True
    assert not pid_alive(pid)
    assert svc.pids() == [] and marked_pids(svc.mark) == []
    assert ports.read_claim(port) is None
    assert svc.read_state() == {}, "stop keeps only what it is told to keep (nothing here)"
    with svc.locked():
        assert svc.stop(timeout=5) is False  # stopping twice is fine


def test_stop_keeps_what_it_is_told_to_keep(svc):
    _start(svc)
    with svc.locked():
        assert svc.stop(timeout=5, keep=("secret",))
    assert svc.read_state() == {"secret": "kept"}


def test_a_start_that_fails_half_way_leaves_nothing(svc):
    """The first process is up when the second one exits at once: the error carries the second's
    last log lines, the first is ended and both ports released."""
    claimed = []
    with pytest.raises(lab.LabError) as e:
        with svc.locked(), svc.starting(keep=("secret",)) as run:
            good, bad = run.claim_ports(2)
            claimed += [good, bad]
            svc.write_state({"secret": "kept", "pids": run.pids})
            first = run.spawn("first", [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(good)])
            run.wait_ready("first", first, f"http://127.0.0.1:{good}/", 30)
            second = run.spawn("second", [sys.executable, "-c",
                                          "import sys; print('cannot start: no such thing'); sys.exit(3)"])
            run.wait_ready("second", second, f"http://127.0.0.1:{bad}/", 30)
    msg = str(e.value)
    assert "the demo's second exited (code 3)" in msg and "no such thing" in msg, msg
    assert svc.pids() == []
    assert not pid_alive(first.pid)
    assert [ports.read_claim(p) for p in claimed] == [None, None]
    assert svc.read_state() == {"secret": "kept"}


def test_readiness_has_a_deadline_and_shows_the_log(svc):
    """A process that runs but never answers: the error comes at the deadline, not never."""
    with pytest.raises(lab.LabError, match=r"did not answer .* within 1 s; its last lines:\nwaiting forever"):
        with svc.locked(), svc.starting() as run:
            port, = run.claim_ports(1)
            proc = run.spawn("mute", [sys.executable, "-c",
                                      "import time; print('waiting forever', flush=True); time.sleep(600)"])
            t0 = time.monotonic()
            run.wait_ready("mute", proc, f"http://127.0.0.1:{port}/", 1)
    assert time.monotonic() - t0 < 10
    assert svc.pids() == [] and not pid_alive(proc.pid)
    assert ports.read_claim(port) is None


def test_claims_avoid_the_nodes_ports_and_release_spares_them(svc):
    node_port = ports.claim_free_ports(1, svc.home.owner)[0]
    svc.home.save({"nodes": {"primary": {"name": "primary", "port": node_port}}})
    got = svc.claim_ports(1, avoid={node_port}, preferred=[node_port])
    assert got != [node_port]
    svc.release_ports(got + [node_port])
    assert ports.read_claim(got[0]) is None
    assert ports.read_claim(node_port)["lab_home"] == svc.home.owner, "a node's claim is not the service's to drop"


def test_the_mark_is_in_the_environment_of_each_process(svc):
    state = _start(svc)
    env = open(f"/proc/{state['pids']['http']}/environ", "rb").read().split(b"\0")
    assert f"{MARK}=demo:{svc.home.path}".encode() in env


def test_registry_stops_every_service_of_a_home(tmp_path):
    home = LabHome(tmp_path / "home")
    assert set(services.SERVICES) == {"webapp", "pgadmin"}
    assert services.stop_all(home) == []
    demo = Service(home, "webapp", title="a stand-in")  # a process under the app's mark
    with demo.locked(), demo.starting() as run:
        port, = run.claim_ports(1)
        proc = run.spawn("api", [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)])
        run.wait_ready("api", proc, f"http://127.0.0.1:{port}/", 30)
        demo.write_state({"token": "t", "ports": [port], "pids": dict(run.pids)})
    assert services.status_all(home)["webapp"].running
    assert services.stop_all(home, wipe=True) == ["webapp"]
    assert not pid_alive(proc.pid) and demo.pids() == []
    assert ports.read_claim(port) is None
    assert not demo.dir.exists()
