"""lab.backends.reaper: the subreaper each Patroni runs under (no server: plain processes)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_CHILD_SUBREAPER is Linux's")


def _reaper(*cmd):
    return subprocess.Popen([sys.executable, "-m", "lab.backends.reaper", "--", *cmd],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_an_orphan_below_it_is_reaped_at_once_when_it_dies():
    # the orphan (a sleep whose parent shell exited) becomes the reaper's child; once it dies it
    # must not stay a zombie, as it does under a PID 1 that reaps late
    r = _reaper("sh", "-c", "sh -c 'sleep 30 & echo $!' ; sleep 30")
    try:
        orphan = int(r.stdout.readline())
        deadline = time.monotonic() + 5
        while psutil.Process(orphan).ppid() != r.pid:
            assert time.monotonic() < deadline, "the orphan was not re-parented to the reaper"
            time.sleep(0.01)
        os.kill(orphan, signal.SIGKILL)
        deadline = time.monotonic() + 2
        while psutil.pid_exists(orphan):
            assert time.monotonic() < deadline, f"the killed orphan is still {psutil.Process(orphan).status()}"
            time.sleep(0.01)
    finally:
        r.kill()
        r.wait(5)


def test_it_forwards_sigterm_and_exits_with_the_commands_code():
    r = _reaper("sh", "-c", "trap 'exit 7' TERM; echo ready; sleep 30 & wait")
    assert r.stdout.readline().strip() == "ready"
    r.send_signal(signal.SIGTERM)
    assert r.wait(10) == 7


def test_it_ends_when_its_command_ends_even_if_an_orphan_lives_on():
    # Patroni killed while PostgreSQL runs on: the reaper must end (the lab sees Patroni gone)
    r = _reaper("sh", "-c", "sh -c 'sleep 30 & echo $!'")
    orphan = int(r.stdout.readline())
    try:
        assert r.wait(10) == 0
        assert psutil.pid_exists(orphan)
    finally:
        os.kill(orphan, signal.SIGKILL)


def test_bad_usage_is_one_line():
    r = subprocess.run([sys.executable, "-m", "lab.backends.reaper", "--bogus", "1", "--", "true"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "unknown option" in r.stderr
