"""The crypto app without a server: settings, the simulator, the live source (against a local fake
HTTP server, never the internet), DSN routing strings.  Plus the feed on a real cluster."""
from __future__ import annotations

import datetime as dt
import doctest
import http.server
import json
import subprocess
import sys
import threading

import pytest

from app import db, market, settings as settings_mod
from app.feed import dedupe, plan_backfill
from app.market import COINS_BY_SYMBOL, LiveSource, LiveSourceError, Simulator, Tick
from app.settings import Settings, SettingsError
from app_fixtures import ROOT, app_env, app_settings, prepare

UTC = dt.timezone.utc
BASE = {"APP_PRIMARY_DSN": "host=127.0.0.1 port=5432 dbname=crypto_db user=admin"}


# --- settings ---------------------------------------------------------------------------------------
def test_defaults():
    s = Settings.from_env(BASE)
    assert s.read_from == "replicas" and s.replica_dsns == () and s.api_token is None
    assert s.api_url == "http://127.0.0.1:8000" and s.tick_rate == 1.0 and s.seed == 42


def test_replica_dsns_by_semicolons_or_json():
    a, b = "host=127.0.0.1 port=1 dbname=d", "host=127.0.0.1 port=2 dbname=d"
    assert Settings.from_env({**BASE, "APP_REPLICA_DSNS": f"{a}; {b}"}).replica_dsns == (a, b)
    assert Settings.from_env({**BASE, "APP_REPLICA_DSNS": json.dumps([a, b])}).replica_dsns == (a, b)


@pytest.mark.parametrize("var,value,says", [
    ("APP_PRIMARY_DSN", "", "APP_PRIMARY_DSN is not set"),
    ("APP_PRIMARY_DSN", "host='unterminated", "not a libpq connection string"),
    ("APP_PRIMARY_DSN", "nonsense here", "not a libpq connection string"),
    ("APP_REPLICA_DSNS", "[1, 2]", "JSON list of DSN strings"),
    ("APP_REPLICA_DSNS", "[oops", "not a JSON list"),
    ("APP_API_PORT", "80000", "out of range"),
    ("APP_API_PORT", "eighty", "not a whole number"),
    ("APP_TICK_RATE", "0", "out of range"),
    ("APP_TICK_RATE", "nan", "out of range"),
    ("APP_TICK_RATE", "fast", "not a number"),
    ("APP_READ_FROM", "anywhere", "expected one of replicas, primary"),
    ("APP_API_TOKEN", "short", "too short"),
    ("APP_API_TOKEN", "aaaaaaaaaaaaaaaaaaaa", "trivial"),
    ("APP_API_TOKEN", "0123456789abcdef", "well-known"),
    ("APP_COINS", "BTC,b@d", "not a symbol"),
    ("APP_API_URL", "localhost:8000", "expected http://host:port"),
    ("APP_LIVE_URL", "ftp://x", "http(s) URL"),
    ("APP_SOURCE", "exchange", "expected one of"),
])
def test_a_bad_setting_is_one_line_naming_it(var, value, says):
    with pytest.raises(SettingsError) as e:
        Settings.from_env({**BASE, var: value})
    msg = str(e.value)
    assert var in msg and says in msg and "\n" not in msg


def test_the_api_refuses_to_start_without_a_token():
    with pytest.raises(SettingsError, match="APP_API_TOKEN is not set"):
        Settings.from_env(BASE).require_token()


def test_settings_round_trip_through_the_environment():
    s = Settings.from_env({**BASE, "APP_REPLICA_DSNS": "host=a port=1", "APP_COINS": "BTC,ETH",
                           "APP_API_TOKEN": "a-good-token-0123456789"})
    assert Settings.from_env(s.to_env()) == s


def test_command_line_reports_a_bad_setting_in_one_line():
    env = {"PATH": "/usr/bin:/bin", "APP_PRIMARY_DSN": BASE["APP_PRIMARY_DSN"], "APP_API_PORT": "-1"}
    r = subprocess.run([sys.executable, "-m", "app", "api"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: APP_API_PORT=-1: out of range (expected 1..65535)"


def test_doctests():
    for mod in (settings_mod, db):
        assert doctest.testmod(mod).failed == 0


# --- routing strings ----------------------------------------------------------------------------------
def test_write_dsn_spans_every_node_with_the_same_login():
    p = "host=127.0.0.1 port=5000 user=admin password=pw dbname=crypto_db"
    r1 = "host=127.0.0.1 port=5001 user=admin password=pw dbname=crypto_db"
    other = "host=127.0.0.1 port=5002 user=ferram password=x dbname=crypto_db"
    import psycopg2.extensions

    got = psycopg2.extensions.parse_dsn(db.write_dsn(p, [r1, other]))
    assert got["host"] == "127.0.0.1,127.0.0.1" and got["port"] == "5000,5001"
    assert got["target_session_attrs"] == "read-write" and got["password"] == "pw"


# --- the simulator --------------------------------------------------------------------------------------
END = dt.datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def test_same_seed_same_market_other_seed_another():
    btc = COINS_BY_SYMBOL["BTC"]
    a = Simulator(seed=7).history(btc, END, 500, 60)
    assert a == Simulator(seed=7).history(btc, END, 500, 60)
    assert a != Simulator(seed=8).history(btc, END, 500, 60)
    s1, s2 = Simulator(seed=7), Simulator(seed=7)
    s1.seed_last({"BTC": (END, 60000.0)})
    s2.seed_last({"BTC": (END, 60000.0)})
    for k in range(1, 4):
        now = END + dt.timedelta(seconds=k)
        assert s1.ticks(now) == s2.ticks(now)


def test_history_ends_at_a_realistic_price_with_coin_specific_volatility():
    sim = Simulator(seed=1)
    for coin in market.COINS:
        h = sim.history(coin, END, 1441, 60)
        assert len(h) == 1441 and h[-1].time == END and h[0].time == END - dt.timedelta(days=1)
        assert h[-1].price == pytest.approx(coin.price)
        assert all(t.price > 0 and t.volume >= 0 for t in h)
    import math
    import statistics

    def vol(sym):
        h = sim.history(COINS_BY_SYMBOL[sym], END, 5000, 60)
        r = [math.log(b.price / a.price) for a, b in zip(h, h[1:])]
        return statistics.pstdev(r)
    assert vol("DOGE") > vol("BTC"), "Dogecoin swings more than Bitcoin"


def test_backfill_plan_fills_history_then_only_the_gap():
    sim = Simulator(market.select_coins(["BTC", "ETH"]), seed=3)
    fresh = plan_backfill(sim, {}, END, days=1, step_s=300)
    assert len(fresh) == 2 * (288 + 1)
    last = {"BTC": (END - dt.timedelta(minutes=30), 50000.0)}
    gap = [t for t in plan_backfill(sim, last, END, days=1, step_s=300) if t.coin == "BTC"]
    assert [t.time for t in gap] == [END - dt.timedelta(minutes=25 - 5 * i) for i in range(6)]
    assert gap[0].price == pytest.approx(50000.0, rel=0.05)


def test_dedupe_keeps_the_last_tick_of_a_coin_and_time():
    a, b = Tick("BTC", END, 1.0, 0.0), Tick("BTC", END, 2.0, 0.0)
    assert dedupe([a, b, Tick("ETH", END, 3.0, 0.0)]) == [b, Tick("ETH", END, 3.0, 0.0)]


def test_unknown_coin_named():
    with pytest.raises(ValueError, match="unknown coin"):
        market.select_coins(["BTC", "ZZZ"])


# --- the live source, against a local fake server ----------------------------------------------------------
RECORDED = {  # the shape CoinGecko's simple/price answers with include_24hr_vol=true
    "bitcoin": {"usd": 67187.12, "usd_24h_vol": 31234567890.5},
    "ethereum": {"usd": 3521.4, "usd_24h_vol": 15012345678.0},
    "solana": {"usd": "not a number"},
}


class FakePriceApi:
    def __init__(self, body: bytes, status: int = 200):
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v3/simple/price"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def test_live_source_reads_the_recorded_shape():
    with FakePriceApi(json.dumps(RECORDED).encode()) as fake:
        src = LiveSource(fake.url, market.select_coins(["BTC", "ETH", "SOL", "ADA"]))
        src.seed_last({"BTC": (END - dt.timedelta(seconds=10), 1.0)})
        ticks = src.ticks(END)
    assert "ids=bitcoin%2Cethereum%2Csolana%2Ccardano" in fake.requests[0]
    assert "include_24hr_vol=true" in fake.requests[0]
    by = {t.coin: t for t in ticks}
    assert set(by) == {"BTC", "ETH"}, "a bad price (SOL) and a missing coin (ADA) are skipped"
    assert by["BTC"].price == 67187.12
    assert by["BTC"].volume == pytest.approx(31234567890.5 / 86400 * 10)


@pytest.mark.parametrize("body,status,says", [
    (b"<html>busy</html>", 200, "not JSON"),
    (b"[1, 2]", 200, "JSON object"),
    (b"{}", 503, "503"),
])
def test_live_source_errors_are_one_line(body, status, says):
    with FakePriceApi(body, status) as fake:
        with pytest.raises(LiveSourceError, match=says):
            LiveSource(fake.url).ticks(END)


def test_live_source_nothing_listening():
    with pytest.raises(LiveSourceError):
        LiveSource("http://127.0.0.1:9/none", timeout=2).ticks(END)


# --- the feed on a real cluster -----------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.app
def test_feed_backfills_once_then_fills_the_gap_and_writes_live_ticks(fresh_app_cluster):
    from app.feed import Feeder, backfill

    cluster = fresh_app_cluster  # prepare() back-filled 2 days at 600 s
    n = cluster.primary.scalar("SELECT count(*) FROM price_ticks")
    assert n == 8 * (2 * 144 + 1)
    feeder = Feeder(app_settings(cluster))
    assert backfill(feeder.router, feeder.sim, 2, 600)[0] <= 8, "only the gap since the last tick"
    feeder.prepare()
    before = cluster.primary.scalar("SELECT count(*) FROM price_ticks")
    assert feeder.run(rounds=3) == 3
    assert cluster.primary.scalar("SELECT count(*) FROM price_ticks") == before + 3 * 8
    cluster.wait_replayed(feeder.last_lsn)
    assert cluster.node("replica2").scalar("SELECT count(*) FROM price_ticks") == before + 24
    feeder.router.close()


@pytest.mark.integration
@pytest.mark.app
def test_feed_from_the_live_source_and_the_simulate_command(fresh_app_cluster, tmp_path):
    from app.feed import Feeder

    cluster = fresh_app_cluster
    with FakePriceApi(json.dumps(RECORDED).encode()) as fake:
        s = app_settings(cluster, APP_SOURCE="live", APP_LIVE_URL=fake.url, APP_COINS="BTC,ETH")
        feeder = Feeder(s)
        feeder.prepare()
        assert feeder.round() is not None
        feeder.router.close()
    assert cluster.primary.scalar("SELECT price FROM price_ticks WHERE coin='BTC' ORDER BY time DESC LIMIT 1") \
        == 67187.12
    env = {**app_env(cluster), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "app", "simulate", "--rounds", "2", "--rate", "20"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "stopped after 2 rounds" in r.stdout
