"""lab.webapp and chapter 07's self-checks: the crypto app started from the lab on a real primary +
2 replicas, re-attached, used, stopped; nothing left behind."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

import lab
from lab import webapp
from lab.checks import check
from lab.services.supervisor import MARK, answers

pytestmark = [pytest.mark.integration, pytest.mark.app]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    h = tmp_path_factory.mktemp("weblab")
    lab.up(replicas=2, home=h, quiet=True)
    yield h
    lab.down(wipe=True, home=h)  # stops the app too, like pgAdmin
    left = _marked_processes(str(h))
    assert not left, f"app processes left running: {left}"


def _marked_processes(home: str) -> dict:
    """Processes whose environment says they are this lab home's app (lab.services marks them)."""
    from pathlib import Path
    mark = f"{MARK}=webapp:{home}".encode()
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if mark in (d / "environ").read_bytes().split(b"\0"):
                    out[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ")[:100]
            except OSError:
                pass
    return out


@pytest.fixture
def cluster(home):
    c = lab.up(replicas=2, home=home, quiet=True)
    c.start()
    c.wait_replayed()
    return c


@pytest.fixture
def running(cluster):
    info = webapp.start(cluster, quiet=True)
    return info


def _pids_alive(info) -> list:
    from lab.system.process import pid_alive
    return [p for p in info.pids.values() if pid_alive(p)]


def test_start_shows_urls_and_the_app_answers(running, cluster):
    assert running.running and running.api_url.startswith("http://127.0.0.1:")
    assert set(running.pids) == {"api", "feed", "dashboard"}
    html = running._repr_html_()
    assert running.dashboard_url in html and "<iframe" in html and "/docs" in html
    assert running.token not in repr(running) and running.token not in html, "the token is not shown"
    # what start returns embeds the dashboard: it answers already, page and health check
    assert answers(running.dashboard_url + "/") and answers(running.dashboard_url + "/_stcore/health")
    assert webapp.wait_dashboard(running, timeout=1) is running
    state = (cluster.home.path / "webapp" / "webapp.json")
    assert oct(state.stat().st_mode & 0o777) == "0o600"
    assert oct((cluster.home.path / "webapp").stat().st_mode & 0o777) == "0o700"


def test_start_again_reattaches_even_from_another_process(running, cluster):
    again = webapp.start(cluster, quiet=True)
    assert again.pids == running.pids and again.api_url == running.api_url
    out = subprocess.run([sys.executable, "-c", f"import lab.webapp as w; print(w.status({str(cluster.home.path)!r}).api_url)"],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == running.api_url


def test_reads_spread_and_the_feed_writes(running, cluster):
    counts = webapp.spread(cluster, n=10).set_index("served_by")["reads"].to_dict()
    assert counts == {"replica1": 5, "replica2": 5}
    before = cluster.primary.scalar("SELECT count(*) FROM price_ticks")
    deadline = time.monotonic() + 15
    while cluster.primary.scalar("SELECT count(*) FROM price_ticks") == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cluster.primary.scalar("SELECT count(*) FROM price_ticks") > before, "the live feed writes ticks"


def test_a_stopped_replica_and_read_your_writes(running, cluster):
    r1 = cluster.node("replica1")
    r1.stop()
    try:
        assert set(webapp.reads(cluster, n=4)["served_by"]) == {"replica2"}
    finally:
        r1.start()
    from lab import standby
    for r in cluster.replicas:
        standby.pause_replay(cluster, r.name)
    try:
        stale = webapp.read_your_writes(cluster, rounds=4, use_min_lsn=False)
        fresh = webapp.read_your_writes(cluster, rounds=4, use_min_lsn=True)
    finally:
        for r in cluster.replicas:
            standby.resume_replay(cluster, r.name)
    assert not stale["saw_own_write"].any(), "paused replicas cannot show the write"
    assert fresh["saw_own_write"].all() and set(fresh["served_by"]) == {"primary"}
    assert set(stale["role"]) == {"replica"} and set(fresh["role"]) == {"primary"}


def test_chapter_07_checks(running, cluster):
    assert check("07.1", cluster).ok
    assert not check("07.2", cluster).ok
    assert not check("07.2", cluster, answer="replica1").ok
    assert check("07.2", cluster, answer="primary").ok
    assert check("07.3", cluster).ok
    assert check("07.4", cluster).ok


def test_primary_crash_writes_503_then_resume(running, cluster):
    cluster.primary.kill()
    try:
        w = webapp.write(cluster)
        assert w["status"] == 503 and w["retry_after_s"] >= 1
        assert not check("07.3", cluster).ok
        assert (webapp.reads(cluster, n=2)["status"] == 200).all()
    finally:
        cluster.primary.start()
    deadline = time.monotonic() + 15
    while webapp.write(cluster)["status"] != 201 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert check("07.3", cluster).ok


def test_stop_ends_every_process_and_releases_the_ports(running, cluster):
    from lab.system import ports
    assert webapp.stop(cluster, quiet=True)
    assert not _pids_alive(running)
    assert not _marked_processes(str(cluster.home.path)), "streamlit's and uvicorn's children too"
    assert not webapp.status(cluster).running
    assert running.api_url.rsplit(":", 1)[1] not in {str(p) for p in ports.claims_of(cluster.home.owner)}
    assert not check("07.1", cluster).ok
    assert webapp.stop(cluster, quiet=True) is False
    token = json.loads((cluster.home.path / "webapp" / "webapp.json").read_text())["token"]
    assert token == running.token, "the token survives a stop"
    assert "stopped" in repr(webapp.status(cluster))


def test_bad_arguments_are_one_line_errors_before_any_request(cluster):
    for call in (lambda: webapp.reads(cluster, n=0), lambda: webapp.spread(cluster, n=True),
                 lambda: webapp.write(cluster, wait=-1), lambda: webapp.read_your_writes(cluster, rounds="3"),
                 lambda: webapp.start(cluster, read_from="both"), lambda: webapp.compare_read_your_writes(cluster, 0)):
        with pytest.raises(lab.errors.BadArgument):
            call()
    with pytest.raises(lab.LabError, match="not running"):
        webapp.wait_dashboard(webapp.WebApp(api_url=None, dashboard_url=None, token="", pids={}, running=False))


def test_start_needs_a_running_primary(cluster):
    webapp.stop(cluster, quiet=True)
    cluster.primary.stop()
    try:
        with pytest.raises(lab.LabError, match="primary .* is stopped"):
            webapp.start(cluster, quiet=True)
    finally:
        cluster.primary.start()


def test_after_a_failover_start_restarts_the_app_on_the_new_roles(tmp_path):
    from lab import failover

    home = tmp_path / "lab"
    c = lab.up(replicas=2, home=home, quiet=True)
    try:
        first = webapp.start(c, quiet=True, feed=False)
        c.primary.kill()
        c.node("replica1").promote()
        assert webapp.write(c, wait=15)["primary"] == "replica1"
        failover.restore(c)
        again = webapp.start(c, quiet=True, feed=False)
        assert again.pids != first.pids, "restarted: its replicas are now primary and replica2"
        counts = webapp.spread(c, n=6, wait=10).set_index("served_by")["reads"].to_dict()
        assert counts == {"primary": 3, "replica2": 3}
        assert set(webapp.spread(c, n=2)["role"]) == {"replica"}
        # the node called primary is a replica now: the tables say so by role, not by its name
        rw = webapp.read_your_writes(c, rounds=4, use_min_lsn=False)
        assert set(rw["role"]) == {"replica"} and "primary" in set(rw["served_by"])
        both = webapp.compare_read_your_writes(c, rounds=4).set_index("min_lsn")
        assert (both["primary_is"] == "replica1").all()
        assert both.loc["off", "served_by_primary"] == 0 and both.loc["off", "served_by_replicas"] == 4
        assert (both["served_by_primary"] + both["served_by_replicas"] == both["reads"]).all()
    finally:
        webapp.stop(home, quiet=True, wipe=True)
        lab.down(wipe=True, home=home)
    assert not _marked_processes(str(home))


def test_cluster_down_stops_the_app_too(tmp_path):
    home = tmp_path / "lab"
    c = lab.up(replicas=1, home=home, quiet=True)
    try:
        webapp.start(c, quiet=True)
        assert _marked_processes(str(home))
        c.down()  # data kept, like docker compose down: web-app goes with the databases
        assert not _marked_processes(str(home))
    finally:
        lab.down(wipe=True, home=home)
    assert not _marked_processes(str(home))
