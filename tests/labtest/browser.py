"""Headless Chromium for tests that load a page as a student's browser would (Debian's `chromium`,
installed by scripts/ensure-chromium.sh; ``LAB_CHROMIUM`` names another), driven over the DevTools
protocol.  A test asks ``chromium()`` whether there is one (skip with ``NO_CHROMIUM`` when not), opens
one with ``with browser(tmp_path) as tools:``, navigates and reads the page's text with
``wait_for_text``; ``artifacts()`` is where screenshots go.

Chromium runs in its own process group, carries APP_TEST_SESSION (so the leftovers check counts it
as the app's) and is stopped, group and all, when the ``with`` block ends."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from labtest.session import SESSION

ROOT = Path(__file__).resolve().parents[2]
MARKER = "APP_TEST_SESSION"  # labtest/leftovers.py: APP_MARK
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
NO_CHROMIUM = ("no chromium: run scripts/ensure-chromium.sh as root (apt-get install chromium) "
               "or set LAB_CHROMIUM")
# Seen now and then on a loaded 2-core machine: Chromium fails to fetch one of Streamlit's lazily
# loaded chunks (the server answers it 200).  A reader reloads; so may a test, once.
CHUNK_ERROR = "Failed to fetch dynamically imported module"


def chromium() -> "str | None":
    """The Chromium executable, or None where there is none."""
    for name in (os.environ.get("LAB_CHROMIUM"), "chromium", "chromium-browser", "google-chrome-stable"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def artifacts() -> Path:
    """Where screenshots go: <repo>/.lab/artifacts (git-ignored), or LAB_ARTIFACTS."""
    d = Path(os.environ.get("LAB_ARTIFACTS") or ROOT / ".lab" / "artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DevTools:
    """The smallest DevTools-protocol client: one page, commands in order."""

    def __init__(self, ws_url: str):
        from websockets.sync.client import connect  # lazy: only browser tests need websockets

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

    def evaluate(self, expression: str, await_promise: bool = False):
        """The value of a JavaScript expression in the page (JSON-serialisable values only);
        ``await_promise``: of the promise it returns, once settled."""
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=await_promise)
        if "exceptionDetails" in r:
            raise RuntimeError(f"the page's JavaScript failed: {r['exceptionDetails'].get('text')} "
                               f"{r['result'].get('description', '')}")
        return r["result"].get("value")

    def text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def close(self):
        self.ws.__exit__(None, None, None)


@contextlib.contextmanager
def browser(tmp_path: Path):
    """A headless Chromium with a profile under ``tmp_path``; yields a DevTools client of its page."""
    exe = chromium()
    if exe is None:
        raise RuntimeError(NO_CHROMIUM)
    port = _free_port()
    log = open(tmp_path / "chromium.log", "w")
    proc = subprocess.Popen([exe, *FLAGS, f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1",
                             f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1400,2000",
                             "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                             "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
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
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


def wait_for_text(tools: DevTools, wanted: "list[str]", timeout: float = 60) -> str:
    """The page's text once it shows every string of ``wanted``; an AssertionError with what it
    showed if it does not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = tools.text()
        if all(w in text for w in wanted):
            return text
        time.sleep(0.3)
    raise AssertionError(f"the page never showed {wanted}; it showed:\n{text[:1500]}")


def load_dashboard(tools: DevTools, url: str, wanted: "list[str]", timeout: float = 60) -> str:
    """Navigate to the crypto app's dashboard at ``url`` and wait until it shows ``wanted``; its text.
    A page that does not within ``timeout`` (the chunk error above, or a page left blank: once, on a
    loaded machine, through the hub's proxy) is reloaded once, as a person would, and given
    ``timeout`` again.  (The reload used to come after a wait that had already raised.)"""
    tools.call("Page.enable")
    tools.call("Page.navigate", url=url)
    try:
        return wait_for_text(tools, wanted, timeout)
    except AssertionError:
        tools.call("Page.reload", ignoreCache=True)
        time.sleep(1.0)
        return wait_for_text(tools, wanted, timeout)


def dashboard_drawn(tools: DevTools, timeout: float = 30) -> dict:
    """How many charts and data grids the dashboard has drawn, once it has at least 2 and 3 (or the
    count at ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        got = json.loads(tools.evaluate(
            "JSON.stringify({charts: document.querySelectorAll('[data-testid=\"stVegaLiteChart\"]').length,"
            " grids: document.querySelectorAll('[data-testid=\"stDataFrame\"]').length})"))
        if (got["charts"] >= 2 and got["grids"] >= 3) or time.monotonic() > deadline:
            return got
        time.sleep(0.3)
