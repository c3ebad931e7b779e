"""End to end: the API and the dashboard as real processes on 127.0.0.1, the dashboard loaded in headless
Chromium (tests/labtest/browser.py) until the page has rendered; asserts on the rendered text and saves a
screenshot to <repo>/.lab/artifacts/app-dashboard.png (.lab/ is git-ignored; LAB_ARTIFACTS overrides)."""
from __future__ import annotations

import base64
import time

import pytest

from app_fixtures import api_process, dashboard_process
from labtest.browser import NO_CHROMIUM, artifacts, browser, chromium, dashboard_drawn, load_dashboard

pytestmark = [pytest.mark.integration, pytest.mark.app, pytest.mark.browser]
WANTED = ["Crypto app", "Market overview", "BTC over the last 24 hours", "Replication", "served by:"]


@pytest.mark.skipif(chromium() is None, reason=NO_CHROMIUM)
def test_dashboard_renders_in_headless_chromium(fresh_app_cluster, tmp_path):
    cluster = fresh_app_cluster
    with api_process(cluster, tmp_path) as api_url, dashboard_process(api_url, tmp_path) as dash_url, \
            browser(tmp_path) as tools:
        text = load_dashboard(tools, dash_url, WANTED)
        assert "replica1" in text or "replica2" in text
        assert "Traceback" not in text and "Error" not in text, text[:1500]
        got = dashboard_drawn(tools)  # the charts and the data grids are drawn
        assert got["charts"] >= 2 and got["grids"] >= 3, got
        time.sleep(1.0)  # let the charts finish their first paint
        shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path = artifacts() / "app-dashboard.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        assert path.stat().st_size > 20_000
