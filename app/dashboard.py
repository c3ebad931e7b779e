"""The Streamlit dashboard: market overview, one coin's charts, and the replication panel.

Every read goes through the API (``ApiClient``), which says in its headers which node served
it; the replication panel lists those.  Page code lives in these functions; the script that
Streamlit runs (app/dashboard_page.py) only calls ``main()``.

    python -m app dashboard           # APP_API_URL says where the API is
"""
from __future__ import annotations

import datetime as dt
import os
import re

import altair as alt
import pandas as pd
import streamlit as st

from .client import ApiClient, ApiError
from .i18n import N_, _
from .settings import SettingsError, url_path

RANGES = {N_("1 hour"): dt.timedelta(hours=1), N_("6 hours"): dt.timedelta(hours=6),
          N_("24 hours"): dt.timedelta(days=1), N_("7 days"): dt.timedelta(days=7)}
DEFAULT_INTERVAL = {"1 hour": "1m", "6 hours": "5m", "24 hours": "1h", "7 days": "1d"}
INTERVALS = ["1m", "5m", "1h", "1d"]
UP, DOWN = "#16a34a", "#dc2626"


def api_url() -> str:
    """The API's URL: APP_API_URL, else http://APP_API_HOST:APP_API_PORT (no database settings needed)."""
    url = os.environ.get("APP_API_URL", "").strip().rstrip("/")
    if url:
        if not url.startswith(("http://", "https://")):
            raise SettingsError(f"APP_API_URL={url!r}: expected http://host:port")
        return url
    host = os.environ.get("APP_API_HOST", "").strip() or "127.0.0.1"
    port = os.environ.get("APP_API_PORT", "").strip() or "8000"
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"


def public_api_url(url: str) -> str:
    """Where a reader's browser reaches the API, for the link on the page: APP_API_PUBLIC_URL (an
    http(s) URL, or a path such as /user/alice/proxy/8000 behind a proxy), else the API's URL."""
    raw = os.environ.get("APP_API_PUBLIC_URL", "").strip().rstrip("/")
    if not raw:
        return url
    if raw.startswith("/"):
        url_path({"APP_API_PUBLIC_URL": raw}, "APP_API_PUBLIC_URL")
    elif not re.match(r"^https?://[^/\s]+[^\s]*$", raw):
        raise SettingsError(f"APP_API_PUBLIC_URL={raw!r}: an http(s) URL or a path such as /user/alice/proxy/8000")
    return raw


def refresh_seconds() -> float:
    raw = os.environ.get("APP_REFRESH_S", "").strip()
    try:
        return max(0.0, float(raw)) if raw else 5.0
    except ValueError:
        raise SettingsError(f"APP_REFRESH_S={raw!r}: not a number of seconds") from None


# --- pieces of the page (each takes the client, draws, and returns what it read) ----------------
def overview(api: ApiClient) -> pd.DataFrame:
    """Market overview: last price, 24 h change, 24 h volume and a 24 h sparkline per coin."""
    st.subheader(_("Market overview"))
    df = api.summary()
    spark = []
    for sym in df["symbol"]:
        try:
            spark.append(api.candles(sym, interval="1h", limit=24)["close"].tolist())
        except ApiError:
            spark.append([])
    df = df.assign(last_24h=spark)
    st.dataframe(
        df[["symbol", "name", "price", "change_24h_pct", "volume_24h", "last_24h", "time"]],
        hide_index=True,
        column_config={
            "symbol": _("coin"), "name": _("name"),
            "price": st.column_config.NumberColumn(_("last price (USD)"), format="%.4f"),
            "change_24h_pct": st.column_config.NumberColumn(_("24 h change"), format="%+.2f %%"),
            "volume_24h": st.column_config.NumberColumn(_("24 h volume (USD)"), format="compact"),
            "last_24h": st.column_config.LineChartColumn(_("last 24 h")),
            "time": st.column_config.DatetimeColumn(_("last tick"), format="HH:mm:ss"),
        },
    )
    return df


def candlestick(df: pd.DataFrame) -> alt.Chart:
    """An OHLC candlestick chart of a candles DataFrame (time, open, high, low, close)."""
    color = alt.condition("datum.open <= datum.close", alt.value(UP), alt.value(DOWN))
    base = alt.Chart(df).encode(x=alt.X("time:T", title=None), color=color,
                                tooltip=["time:T", "open:Q", "high:Q", "low:Q", "close:Q", "volume:Q"])
    wick = base.mark_rule().encode(y=alt.Y("low:Q", scale=alt.Scale(zero=False), title="USD"), y2="high:Q")
    body = base.mark_bar().encode(y="open:Q", y2="close:Q")
    return wick + body


def price_line(df: pd.DataFrame) -> alt.Chart:
    """The price over time, on an axis that fits the prices (not from zero)."""
    return alt.Chart(df).mark_line().encode(
        x=alt.X("time:T", title=None), y=alt.Y("price:Q", scale=alt.Scale(zero=False), title="USD"),
        tooltip=["time:T", "price:Q", "volume:Q"])


def coin_view(api: ApiClient, symbol: str, range_name: str, interval: str) -> dict:
    """One coin over a range: its price line and its candlesticks."""
    st.subheader(_("{symbol} over the last {range}").format(symbol=symbol, range=_(range_name)))
    start = pd.Timestamp.now(tz="UTC") - RANGES[range_name]
    prices = api.prices(symbol, start=start, limit=5000)
    candles = api.candles(symbol, interval=interval, start=start, limit=500)
    left, right = st.columns(2)
    with left:
        st.caption(_("price, {ticks} ticks").format(ticks=len(prices)))
        if prices.empty:
            st.info(_("no ticks of {symbol} in the last {range}").format(symbol=symbol, range=_(range_name)))
        else:
            st.altair_chart(price_line(prices), height=300)
    with right:
        st.caption(_("candles of {interval}, {candles}").format(interval=interval, candles=len(candles)))
        if candles.empty:
            st.info(_("no candles of {symbol} in the last {range}").format(symbol=symbol, range=_(range_name)))
        else:
            st.altair_chart(candlestick(candles), height=300)
    return {"prices": prices, "candles": candles}


def replication_panel(api: ApiClient) -> pd.DataFrame:
    """The nodes as the app sees them, and which node served each read of this page."""
    st.subheader(_("Replication"))
    nodes = api.cluster()
    st.dataframe(nodes[["node", "role", "reachable", "lag_ms", "lsn", "reads_served", "host", "port"]],
                 hide_index=True)
    reads = api.reads_table()
    st.caption(_("the reads of this page: which node served each"))
    st.dataframe(reads, hide_index=True)
    counts = reads[reads["path"] != "/cluster"]["node"].value_counts()
    st.markdown(_("served by: {nodes}").format(nodes=", ".join(f"**{n}** {c}" for n, c in counts.items())))
    return reads


def page(api: ApiClient, symbol: "str | None", range_name: str, interval: str) -> None:
    """The whole page for one set of choices (what a refresh re-runs)."""
    api.reads.clear()
    try:
        overview(api)
        if symbol:
            coin_view(api, symbol, range_name, interval)
        replication_panel(api)
    except ApiError as e:
        st.error(str(e))
    st.caption(_("updated {time} UTC").format(time=f"{pd.Timestamp.now(tz='UTC'):%H:%M:%S}"))


def sidebar(symbols: list[str]) -> tuple["str | None", str, str, bool]:
    st.sidebar.header(_("Crypto app"))
    first = symbols.index("BTC") if "BTC" in symbols else 0
    symbol = st.sidebar.selectbox(_("coin"), symbols, index=first if symbols else None, key="symbol")
    range_name = st.sidebar.selectbox(_("range"), list(RANGES), index=2, key="range", format_func=_)
    interval = st.sidebar.selectbox(_("candle interval"), INTERVALS,
                                    index=INTERVALS.index(DEFAULT_INTERVAL[range_name]), key="interval")
    auto = st.sidebar.toggle(_("auto-refresh"), value=True, key="auto")
    return symbol, range_name, interval, auto


def main() -> None:
    st.set_page_config(page_title=_("Crypto app on a replicated PostgreSQL"), layout="wide")
    st.title(_("Crypto app"))
    try:
        url, every = api_url(), refresh_seconds()
        public = public_api_url(url)
    except SettingsError as e:
        st.error(str(e))
        return
    st.caption(_("writes go to the primary, reads to the replicas — API [{url}]({url}/docs)").format(url=public))
    api = session_client(url)
    try:
        symbols = api.coins()["symbol"].tolist()
    except ApiError as e:
        st.error(_("{error} — start it with `python -m app api`").format(error=e))
        return
    symbol, range_name, interval, auto = sidebar(symbols)
    if auto and every > 0:
        st.fragment(run_every=every)(page)(api, symbol, range_name, interval)
    else:
        page(api, symbol, range_name, interval)


def session_client(url: str) -> ApiClient:
    """One API client per browser session (auto-refresh re-runs reuse its connection)."""
    api = st.session_state.get("api")
    if api is None or api.base_url != url.rstrip("/"):
        api = st.session_state["api"] = ApiClient(url)
    return api
