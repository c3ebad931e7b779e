"""The Streamlit dashboard, headless with streamlit.testing.v1.AppTest, reading through a real API
process (uvicorn) on a real primary + 2 replicas."""
from __future__ import annotations

import pandas as pd
import pytest

from app_fixtures import ROOT, api_process

pytestmark = [pytest.mark.integration, pytest.mark.app]
PAGE = str(ROOT / "app" / "dashboard_page.py")


@pytest.fixture(scope="module")
def api_url(app_home, tmp_path_factory):
    import lab

    cluster = lab.up(replicas=2, home=app_home, quiet=True)
    with api_process(cluster, tmp_path_factory.mktemp("api")) as url:
        yield url


@pytest.fixture
def page(api_url, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("APP_API_URL", api_url)
    monkeypatch.setenv("APP_REFRESH_S", "0")
    at = AppTest.from_file(PAGE, default_timeout=60)
    return at


def frames(at) -> list[pd.DataFrame]:
    return [d.value for d in at.dataframe]


def test_overview_coin_charts_and_replication_panel(page):
    at = page.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value == "Crypto app"
    assert [s.value for s in at.subheader] == ["Market overview", "BTC over the last 24 hours", "Replication"]
    overview, nodes, reads = frames(at)
    assert {"BTC", "ETH", "SOL"} <= set(overview["symbol"])
    assert overview["price"].notna().all() and overview["change_24h_pct"].notna().all()
    assert all(len(s) > 0 for s in overview["last_24h"]), "a sparkline per coin"
    assert set(nodes["node"]) == {"primary", "replica1", "replica2"}
    assert set(nodes.set_index("node")["role"].items()) == {("primary", "primary"), ("replica1", "replica"),
                                                            ("replica2", "replica")}
    data_reads = reads[reads["path"] != "/cluster"]
    assert set(data_reads["node"]) == {"replica1", "replica2"}, "the page's reads were served by the replicas"
    assert "/prices/BTC" in set(reads["path"]) and "/candles/BTC" in set(reads["path"])
    md = " ".join(m.value for m in at.markdown)
    assert "served by:" in md and "replica1" in md


def test_choosing_a_coin_range_and_interval(page):
    at = page.run()
    at.sidebar.selectbox(key="symbol").select("ETH")
    at.sidebar.selectbox(key="range").select("6 hours")
    at.sidebar.selectbox(key="interval").select("5m")
    at.sidebar.toggle(key="auto").set_value(False)
    at.run()
    assert not at.exception, at.exception
    assert at.subheader[1].value == "ETH over the last 6 hours"
    captions = " ".join(c.value for c in at.caption)
    assert "candles of 5m" in captions


def test_page_functions_render_one_piece_each(api_url):
    """The pieces are plain functions of an ApiClient (what AppTest runs them through, minus Streamlit)."""
    from app.client import ApiClient

    with ApiClient(api_url) as api:
        summary = api.summary()
        candles = api.candles("BTC", interval="1h", limit=24)
        assert len(candles) == 24 and (candles["high"] >= candles["low"]).all()
        assert set(summary["symbol"]) >= {"BTC", "ETH"}
        assert set(api.reads_table()["node"]) <= {"replica1", "replica2"}
        from app.dashboard import candlestick

        spec = candlestick(candles).to_dict()
        assert len(spec["layer"]) == 2  # wicks and bodies


def test_the_api_down_is_one_error_on_the_page(monkeypatch):
    from streamlit.testing.v1 import AppTest

    from app_fixtures import free_port

    monkeypatch.setenv("APP_API_URL", f"http://127.0.0.1:{free_port()}")
    at = AppTest.from_file(PAGE, default_timeout=30).run()
    assert not at.exception
    assert len(at.error) == 1 and "did not answer" in at.error[0].value and "python -m app api" in at.error[0].value


def test_a_bad_api_url_setting_is_shown(monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("APP_API_URL", "localhost:8000")
    at = AppTest.from_file(PAGE, default_timeout=30).run()
    assert len(at.error) == 1 and "APP_API_URL" in at.error[0].value
