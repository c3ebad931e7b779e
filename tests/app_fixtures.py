"""Fixtures of the crypto app's tests (tests/test_app_*.py): a real cluster, the app's settings
for it, and the app's processes (uvicorn, streamlit), each stopped by its process group.

Every process started here carries APP_TEST_SESSION=<pytest's pid> in its environment, so
the leftovers check at the session's end (tests/labtest/leftovers.py) can say if one survives the tests.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import lab

ROOT = Path(__file__).resolve().parent.parent
SESSION = str(os.getpid())
MARKER = "APP_TEST_SESSION"
TOKEN = "test-" + secrets.token_urlsafe(24)


def app_env(cluster, **overrides) -> dict:
    """APP_* variables for ``cluster``: writes to its primary, reads from its replicas."""
    env = {
        "APP_PRIMARY_DSN": cluster.primary.dsn,
        "APP_REPLICA_DSNS": json.dumps([r.dsn for r in cluster.replicas]),
        "APP_API_TOKEN": TOKEN,
        "APP_NODE_RETRY_S": "0.2",
        "APP_CONNECT_TIMEOUT": "2",
        "APP_POOL_SIZE": "4",
        "APP_HISTORY_DAYS": "2",
        "APP_HISTORY_STEP_S": "600",
        "APP_TICK_RATE": "5",
    }
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def app_settings(cluster, **overrides):
    from app.settings import Settings

    return Settings.from_env(app_env(cluster, **overrides))


def prepare(cluster, **overrides):
    """Schema + back-filled history on ``cluster``, replayed by every replica; the Feeder."""
    from app.feed import Feeder

    feeder = Feeder(app_settings(cluster, **overrides))
    feeder.prepare()
    cluster.wait_replayed()
    return feeder


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    """Poll ``url`` until it answers 200; if the process dies or the deadline passes, raise with its log."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError as e:
            last = str(e)
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
    raise RuntimeError(f"{url} did not answer ({last}; exit code {proc.poll()}); log:\n{tail}")


class AppProcess:
    """``python -m app <what>`` in its own process group; ``stop()`` ends the whole group."""

    def __init__(self, args: list[str], env: dict, log: Path, ready_url: "str | None" = None):
        self.log = log
        full_env = {**os.environ, **env, MARKER: SESSION}
        self.proc = subprocess.Popen([sys.executable, "-m", "app", *args], cwd=ROOT, env=full_env,
                                     stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        if ready_url:
            try:
                wait_http(ready_url, self.proc, log)
            except BaseException:
                self.stop()
                raise

    def stop(self, timeout: float = 10) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group: workers, children
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


@contextlib.contextmanager
def api_process(cluster, tmp_path: Path, **overrides):
    """The API as a real uvicorn process on a free port of 127.0.0.1; yields its base URL."""
    port = free_port()
    env = app_env(cluster, APP_API_PORT=port, **overrides)
    with AppProcess(["api"], env, tmp_path / f"api-{port}.log", f"http://127.0.0.1:{port}/health"):
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def dashboard_process(api_url: str, tmp_path: Path, **overrides):
    """The Streamlit dashboard on a free port; yields its URL."""
    port = free_port()
    env = {"APP_API_URL": api_url, "APP_DASHBOARD_PORT": str(port), "APP_REFRESH_S": "0",
           "HOME": str(tmp_path), **{k: str(v) for k, v in overrides.items()}}
    with AppProcess(["dashboard"], env, tmp_path / f"dashboard-{port}.log",
                    f"http://127.0.0.1:{port}/_stcore/health"):
        yield f"http://127.0.0.1:{port}"


# --- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def app_home(tmp_path_factory):
    """A primary + 2 replicas with the app's schema and two days of history, for a module; wiped after."""
    home = tmp_path_factory.mktemp("applab")
    cluster = lab.up(replicas=2, home=home, quiet=True)
    try:
        prepare(cluster)
        yield home
    finally:
        lab.down(wipe=True, home=home)


@pytest.fixture
def app_cluster(app_home):
    """The module's cluster, every node started again (a test may have stopped one)."""
    cluster = lab.up(replicas=2, home=app_home, quiet=True)
    for n in cluster.nodes:
        if not n.is_running:
            n.start()
    cluster.wait_replayed()
    return cluster


@pytest.fixture
def fresh_app_cluster(tmp_path):
    """A primary + 2 replicas with the app's data, for one destructive test (a crash, a promotion)."""
    home = tmp_path / "lab"
    cluster = lab.up(replicas=2, home=home, quiet=True)
    try:
        prepare(cluster)
        yield cluster
    finally:
        lab.down(wipe=True, home=home)


@pytest.fixture
def api_client(app_cluster):
    """An in-process client of the API (FastAPI's TestClient: the real app, the real cluster)."""
    from fastapi.testclient import TestClient

    from app.api import create_app

    with TestClient(create_app(app_settings(app_cluster))) as client:
        yield client


def client_for(cluster, **overrides):
    from fastapi.testclient import TestClient

    from app.api import create_app

    return TestClient(create_app(app_settings(cluster, **overrides)))


def auth() -> dict:
    return {"Authorization": f"Bearer {TOKEN}"}
