"""End to end: the API and the dashboard as real processes on 127.0.0.1, the dashboard loaded in headless
Chromium (Debian's `chromium`, installed by scripts/ensure-chromium.sh), driven over the DevTools
protocol until the page has rendered; asserts on the rendered text and saves a screenshot to
<repo>/.lab/artifacts/app-dashboard.png (.lab/ is git-ignored; LAB_ARTIFACTS overrides)."""
from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from app_fixtures import MARKER, ROOT, SESSION, api_process, dashboard_process, free_port

pytestmark = [pytest.mark.integration, pytest.mark.app, pytest.mark.browser]
CHUNK_ERROR = "Failed to fetch dynamically imported module"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def chromium() -> "str | None":
    for name in (os.environ.get("LAB_CHROMIUM"), "chromium", "chromium-browser", "google-chrome-stable"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def artifacts() -> Path:
    d = Path(os.environ.get("LAB_ARTIFACTS") or ROOT / ".lab" / "artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


class DevTools:
    """The smallest DevTools-protocol client: one page, commands in order."""

    def __init__(self, ws_url: str):
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=64 * 2**20, open_timeout=10).__enter__()
        self.n = 0

    def call(self, method: str, timeout: float = 30, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def text(self) -> str:
        r = self.call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''",
                      returnByValue=True)
        return r["result"].get("value") or ""

    def close(self):
        self.ws.__exit__(None, None, None)


@contextlib.contextmanager
def browser(tmp_path: Path):
    exe = chromium()
    port = free_port()
    proc = subprocess.Popen([exe, *FLAGS, f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1",
                             f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1400,2000",
                             "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                             "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "chromium.log", "w"),
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, MARKER: SESSION, "HOME": str(tmp_path)})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    pages = [p for p in json.load(r) if p.get("type") == "page"]
                if pages:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start: {(tmp_path / 'chromium.log').read_text()[-800:]}")
            time.sleep(0.2)
        tools = DevTools(pages[0]["webSocketDebuggerUrl"])
        try:
            yield tools
        finally:
            tools.close()
    finally:
        import signal
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def wait_for_text(tools: DevTools, wanted: list[str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = tools.text()
        if all(w in text for w in wanted):
            return text
        time.sleep(0.3)
    raise AssertionError(f"the page never showed {wanted}; it showed:\n{text[:1500]}")


@pytest.mark.skipif(chromium() is None, reason="no chromium: run scripts/ensure-chromium.sh as root "
                    "(apt-get install chromium) or set LAB_CHROMIUM")
def test_dashboard_renders_in_headless_chromium(fresh_app_cluster, tmp_path):
    cluster = fresh_app_cluster
    with api_process(cluster, tmp_path) as api_url, dashboard_process(api_url, tmp_path) as dash_url, \
            browser(tmp_path) as tools:
        tools.call("Page.enable")
        tools.call("Page.navigate", url=dash_url)
        wanted = ["Crypto app", "Market overview", "BTC over the last 24 hours", "Replication", "served by:"]
        text = wait_for_text(tools, wanted)
        if CHUNK_ERROR in text:
            # Seen now and then on a loaded 2-core machine: Chromium fails to fetch one of Streamlit's
            # lazily loaded chunks (the server answers it 200).  A reader reloads; so does the test, once.
            tools.call("Page.reload", ignoreCache=True)
            time.sleep(1.0)
            text = wait_for_text(tools, wanted)
        assert "replica1" in text or "replica2" in text
        assert "Traceback" not in text and "Error" not in text, text[:1500]
        # the charts and the data grids are drawn
        deadline = time.monotonic() + 30
        while True:
            got = json.loads(tools.call("Runtime.evaluate", returnByValue=True, expression=(
                "JSON.stringify({charts: document.querySelectorAll('[data-testid=\"stVegaLiteChart\"]').length,"
                " grids: document.querySelectorAll('[data-testid=\"stDataFrame\"]').length})"))["result"]["value"])
            if (got["charts"] >= 2 and got["grids"] >= 3) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert got["charts"] >= 2 and got["grids"] >= 3, got
        time.sleep(1.0)  # let the charts finish their first paint
        shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path = artifacts() / "app-dashboard.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        assert path.stat().st_size > 20_000
