"""The crypto app's API on a real primary + 2 replicas: routing, fallbacks both ways, read-your-writes,
validation.  FastAPI's TestClient runs the real app in-process against the real servers."""
from __future__ import annotations

import collections
import datetime as dt
import math
import threading

import pytest

from app_fixtures import auth, client_for, prepare

pytestmark = [pytest.mark.integration, pytest.mark.app]
UTC = dt.timezone.utc


def served_by(client, url, n=1, **kw) -> collections.Counter:
    out = collections.Counter()
    for _ in range(n):
        r = client.get(url, **kw)
        assert r.status_code == 200, r.text
        out[r.headers["X-Served-By"]] += 1
    return out


# --- reads go to the replicas -----------------------------------------------------------------
def test_every_read_endpoint_answers_from_a_replica_with_its_lag(api_client):
    for url in ("/health", "/coins", "/prices/BTC", "/candles/ETH?interval=1h", "/market/summary"):
        r = api_client.get(url)
        assert r.status_code == 200, (url, r.text)
        assert r.headers["X-Served-By"] in ("replica1", "replica2"), url
        assert r.headers["X-Served-Role"] == "replica"
        assert float(r.headers["X-Replica-Lag-Ms"]) >= 0
        assert "X-Read-Fallback" not in r.headers


def test_reads_spread_over_both_replicas(api_client):
    counts = served_by(api_client, "/prices/BTC?limit=5", n=20)
    assert set(counts) == {"replica1", "replica2"}
    assert counts["replica1"] == counts["replica2"] == 10  # round-robin


def test_read_from_primary_setting_sends_reads_to_the_primary(app_cluster):
    with client_for(app_cluster, APP_READ_FROM="primary") as client:
        assert served_by(client, "/coins", n=4) == {"primary": 4}


def test_no_replica_configured_the_primary_serves_reads(app_cluster):
    with client_for(app_cluster, APP_REPLICA_DSNS="") as client:
        r = client.get("/market/summary")
        assert r.status_code == 200
        assert r.headers["X-Served-By"] == "primary" and r.headers["X-Served-Role"] == "primary"
        assert "X-Read-Fallback" not in r.headers


# --- the data -------------------------------------------------------------------------------------
def test_coins_and_prices_are_what_the_simulator_wrote(api_client, app_cluster):
    coins = api_client.get("/coins").json()
    assert {c["symbol"] for c in coins} >= {"BTC", "ETH", "SOL"}
    r = api_client.get("/prices/btc", params={"limit": 50})  # symbols are case-insensitive
    body = r.json()
    assert body["symbol"] == "BTC" and len(body["prices"]) == 50
    times = [dt.datetime.fromisoformat(p["time"]) for p in body["prices"]]
    assert times == sorted(times), "oldest first"
    newest = app_cluster.primary.scalar("SELECT max(time) FROM price_ticks WHERE coin = 'BTC'")
    assert times[-1] == newest
    assert 10_000 < body["prices"][-1]["price"] < 1_000_000  # a realistic Bitcoin price


def test_prices_time_range_and_limit(api_client):
    every = api_client.get("/prices/ETH", params={"limit": 10000}).json()["prices"]
    t = [p["time"] for p in every]
    start, end = t[10], t[20]
    got = api_client.get("/prices/ETH", params={"start": start, "end": end, "limit": 10000}).json()["prices"]
    assert [p["time"] for p in got] == t[10:21]
    got = api_client.get("/prices/ETH", params={"start": start, "end": end, "limit": 3}).json()["prices"]
    assert [p["time"] for p in got] == t[18:21], "the newest `limit` of the range"


def test_candles_are_the_ohlcv_of_the_ticks(api_client):
    ticks = api_client.get("/prices/SOL", params={"limit": 10000}).json()["prices"]
    buckets = collections.defaultdict(list)
    for p in ticks:
        t = dt.datetime.fromisoformat(p["time"])
        buckets[int(t.timestamp()) // 3600 * 3600].append(p)
    candles = api_client.get("/candles/SOL", params={"interval": "1h", "limit": 10000}).json()["candles"]
    assert len(candles) == len(buckets)
    for c in candles:
        ps = buckets[int(dt.datetime.fromisoformat(c["time"]).timestamp())]
        assert c["open"] == ps[0]["price"] and c["close"] == ps[-1]["price"]
        assert c["high"] == max(p["price"] for p in ps) and c["low"] == min(p["price"] for p in ps)
        assert math.isclose(c["volume"], sum(p["volume"] for p in ps), rel_tol=1e-9)
        assert c["ticks"] == len(ps)


@pytest.mark.parametrize("interval,seconds", [("1m", 60), ("5m", 300), ("1h", 3600), ("1d", 86400)])
def test_candle_intervals_are_aligned(api_client, interval, seconds):
    candles = api_client.get(f"/candles/BTC?interval={interval}&limit=5").json()["candles"]
    assert candles and len(candles) <= 5
    for c in candles:
        assert int(dt.datetime.fromisoformat(c["time"]).timestamp()) % seconds == 0
        assert c["low"] <= min(c["open"], c["close"]) <= max(c["open"], c["close"]) <= c["high"]


def test_market_summary_change_and_volume_match_sql(api_client, app_cluster):
    summary = {s["symbol"]: s for s in api_client.get("/market/summary").json()}
    row = app_cluster.primary.sql(
        "SELECT (SELECT price FROM price_ticks WHERE coin='DOGE' ORDER BY time DESC LIMIT 1) AS last, "
        "(SELECT price FROM price_ticks WHERE coin='DOGE' AND time <= (SELECT max(time) FROM price_ticks "
        " WHERE coin='DOGE') - interval '24 hours' ORDER BY time DESC LIMIT 1) AS ago, "
        "(SELECT sum(volume) FROM price_ticks WHERE coin='DOGE' AND time > (SELECT max(time) FROM price_ticks "
        " WHERE coin='DOGE') - interval '24 hours') AS vol").iloc[0]
    doge = summary["DOGE"]
    assert doge["price"] == row["last"]
    assert math.isclose(doge["change_24h_pct"], (row["last"] / row["ago"] - 1) * 100, rel_tol=1e-9)
    assert math.isclose(doge["volume_24h"], row["vol"], rel_tol=1e-9)


ROLLUP_MISMATCHES = """
SELECT count(*) FROM
    (SELECT coin, to_timestamp(floor(extract(epoch FROM time) / 3600) * 3600) AS hour, sum(volume) AS v, count(*) AS n
     FROM price_ticks GROUP BY 1, 2) r
FULL JOIN (SELECT * FROM price_volume_hourly WHERE ticks <> 0) h USING (coin, hour)
WHERE r.n IS DISTINCT FROM h.ticks
   OR abs(coalesce(r.v, 0) - coalesce(h.volume, 0)) > 1e-6 * greatest(1, abs(coalesce(r.v, 0)))
"""


# market_summary (what /market/summary answers) against a count from scratch over the ticks alone:
# the coins whose row differs.
SUMMARY_MISMATCHES = """
SELECT count(*) FROM coins c
LEFT JOIN market_summary m ON m.coin = c.symbol
LEFT JOIN LATERAL (SELECT time, price FROM price_ticks WHERE coin = c.symbol ORDER BY time DESC LIMIT 1) l ON true
LEFT JOIN LATERAL (SELECT price FROM price_ticks WHERE coin = c.symbol AND time <= l.time - interval '24 hours'
                   ORDER BY time DESC LIMIT 1) p ON true
LEFT JOIN LATERAL (SELECT sum(volume) AS volume FROM price_ticks
                   WHERE coin = c.symbol AND time > l.time - interval '24 hours') v ON true
WHERE m.time IS DISTINCT FROM l.time OR m.price IS DISTINCT FROM l.price
   OR (m.change_24h_pct IS NULL) <> (p.price IS NULL)
   OR abs(m.change_24h_pct - (l.price / p.price - 1) * 100) > 1e-9 * greatest(1, abs(m.change_24h_pct))
   OR (m.volume_24h IS NULL) <> (v.volume IS NULL)
   OR abs(m.volume_24h - v.volume) > 1e-6 * greatest(1, abs(v.volume))
"""


def test_the_hourly_rollup_follows_every_change_to_the_ticks(api_client, app_cluster):
    """price_volume_hourly (what /market/summary reads) against the ticks themselves, after the
    back-fill's COPY, inserts, ON CONFLICT updates, deletes; and the summary's 24 h volume against the
    plain sum for a newest tick in the middle of an hour, on a replica."""
    p = app_cluster.primary
    assert p.scalar(ROLLUP_MISMATCHES) == 0, "the back-fill (COPY) is in the rollup"
    assert p.scalar(SUMMARY_MISMATCHES) == 0, "the back-fill (COPY) is in the summary"
    t0 = dt.datetime(2032, 3, 1, 10, 17, 23, tzinfo=UTC)
    ticks = [{"symbol": "SOL", "price": 100.0 + i, "volume": 1.5 * i,
              "time": (t0 - dt.timedelta(minutes=37 * i)).isoformat()} for i in range(60)]
    try:
        assert api_client.post("/ticks", json={"ticks": ticks}, headers=auth()).status_code == 201
        assert p.scalar(ROLLUP_MISMATCHES) == 0 and p.scalar(SUMMARY_MISMATCHES) == 0, "inserts"
        again = [dict(t, volume=t["volume"] * 2 + 1) for t in ticks[::3]]
        assert api_client.post("/ticks", json={"ticks": again}, headers=auth()).status_code == 201
        assert p.scalar(ROLLUP_MISMATCHES) == 0 and p.scalar(SUMMARY_MISMATCHES) == 0, "ON CONFLICT DO UPDATE"
        p.execute("DELETE FROM price_ticks WHERE coin = 'SOL' AND time > %s", (t0 - dt.timedelta(hours=5),))
        assert p.scalar(ROLLUP_MISMATCHES) == 0 and p.scalar(SUMMARY_MISMATCHES) == 0, "deletes"
        app_cluster.wait_replayed()
        sol = {s["symbol"]: s for s in api_client.get("/market/summary").json()}["SOL"]
        newest = p.scalar("SELECT max(time) FROM price_ticks WHERE coin = 'SOL'")
        raw = p.scalar("SELECT sum(volume) FROM price_ticks WHERE coin = 'SOL' AND time > %s - interval '24 hours'",
                       (newest,))
        assert dt.datetime.fromisoformat(sol["time"]) == newest and newest.minute != 0
        assert math.isclose(sol["volume_24h"], raw, rel_tol=1e-9)
    finally:
        p.execute("DELETE FROM price_ticks WHERE time >= '2032-01-01'")
    assert p.scalar(ROLLUP_MISMATCHES) == 0 and p.scalar(SUMMARY_MISMATCHES) == 0


def test_two_writers_of_one_coin_at_once_leave_the_summary_right(app_cluster):
    """The second transaction's recount waits for the first's commit and sees its tick: without the
    per-coin lock it would count the coin without the first's (newer) tick and keep that."""
    p = app_cluster.primary
    # in two hours: the two do not meet on a row of the hourly rollup (which would order them too)
    newer, older = dt.datetime(2033, 1, 1, 13, 0, 2, tzinfo=UTC), dt.datetime(2033, 1, 1, 12, 0, 1, tzinfo=UTC)
    first, second = p.connect(autocommit=False), p.connect(autocommit=False)
    done = threading.Event()
    try:
        with first.cursor() as cur:
            cur.execute("INSERT INTO price_ticks VALUES ('XRP', %s, 0.75, 10)", (newer,))
        def write_second():
            with second.cursor() as cur:
                cur.execute("INSERT INTO price_ticks VALUES ('XRP', %s, 0.70, 20)", (older,))
            second.commit()
            done.set()
        t = threading.Thread(target=write_second)
        t.start()
        assert not done.wait(0.5), "the second writer waits for the first's commit"
        first.commit()
        t.join(10)
        assert done.is_set()
        row = p.sql("SELECT time, price FROM market_summary WHERE coin = 'XRP'").iloc[0]
        assert row["time"] == newer and row["price"] == 0.75
        assert p.scalar(SUMMARY_MISMATCHES) == 0
    finally:
        for conn in (first, second):
            conn.rollback()
            conn.close()
        p.execute("DELETE FROM price_ticks WHERE time >= '2033-01-01'")
    assert p.scalar(SUMMARY_MISMATCHES) == 0


# --- writes, and reading them back ----------------------------------------------------------------
def test_post_ticks_writes_on_the_primary_and_returns_the_commit_lsn(api_client, app_cluster):
    t = dt.datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    r = api_client.post("/ticks", json={"ticks": [{"symbol": "btc", "price": 70000.5, "volume": 2, "time": t.isoformat()},
                                                 {"symbol": "ETH", "price": 4000}]}, headers=auth())
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["written"] == 2 and body["primary"] == "primary"
    assert app_cluster.primary.scalar("SELECT pg_current_wal_insert_lsn() >= %s::pg_lsn", (body["lsn"],))
    assert app_cluster.primary.scalar("SELECT price FROM price_ticks WHERE coin='BTC' AND time=%s", (t,)) == 70000.5
    # the same (coin, time) again: the newer price wins, no error
    r = api_client.post("/ticks", json={"ticks": [{"symbol": "BTC", "price": 1.0, "time": t.isoformat()},
                                                 {"symbol": "BTC", "price": 2.0, "time": t.isoformat()}]},
                        headers=auth())
    assert r.status_code == 201 and r.json()["written"] == 1
    assert app_cluster.primary.scalar("SELECT price FROM price_ticks WHERE coin='BTC' AND time=%s", (t,)) == 2.0
    app_cluster.primary.execute("DELETE FROM price_ticks WHERE time >= '2030-01-01'")


def test_read_your_writes_with_min_lsn(api_client, app_cluster):
    """Replay paused on both replicas: a plain read is stale, a read with min_lsn goes to the primary;
    replay resumed: the replicas serve min_lsn reads again."""
    replicas = app_cluster.replicas
    t = dt.datetime(2031, 6, 1, tzinfo=UTC)
    for r in replicas:
        r.execute("SELECT pg_wal_replay_pause()")
    try:
        w = api_client.post("/ticks", json={"ticks": [{"symbol": "ADA", "price": 9.99, "time": t.isoformat()}]},
                            headers=auth())
        lsn = w.json()["lsn"]
        stale = api_client.get("/prices/ADA?limit=1")
        assert stale.headers["X-Served-Role"] == "replica"
        assert stale.json()["prices"][-1]["price"] != 9.99, "a paused replica has not seen the write"
        fresh = api_client.get(f"/prices/ADA?limit=1&min_lsn={lsn}")
        assert fresh.status_code == 200
        assert fresh.headers["X-Served-By"] == "primary"
        assert "has not replayed" in fresh.headers["X-Read-Fallback"]
        assert fresh.json()["prices"][-1]["price"] == 9.99
    finally:
        for r in replicas:
            r.execute("SELECT pg_wal_replay_resume()")
    app_cluster.wait_replayed()
    again = api_client.get(f"/prices/ADA?limit=1&min_lsn={lsn}")
    assert again.headers["X-Served-Role"] == "replica" and "X-Read-Fallback" not in again.headers
    assert again.json()["prices"][-1]["price"] == 9.99
    app_cluster.primary.execute("DELETE FROM price_ticks WHERE time >= '2031-01-01'")


# --- failures, both ways ---------------------------------------------------------------------------
def test_a_stopped_replica_then_both_reads_fall_back_and_come_back(api_client, app_cluster):
    r1, r2 = app_cluster.node("replica1"), app_cluster.node("replica2")
    r1.stop()
    try:
        counts = served_by(api_client, "/prices/BTC?limit=3", n=6)
        assert counts == {"replica2": 6}
        r2.stop()
        r = api_client.get("/prices/BTC?limit=3")
        assert r.status_code == 200
        assert r.headers["X-Served-By"] == "primary"
        assert "down" in r.headers["X-Read-Fallback"]
        assert api_client.get("/market/summary").headers["X-Served-By"] == "primary"
    finally:
        r1.start()
        r2.start()
    app_cluster.wait_replayed()
    import time
    time.sleep(0.3)  # APP_NODE_RETRY_S=0.2: the app tries the replicas again
    assert set(served_by(api_client, "/prices/BTC?limit=3", n=6)) == {"replica1", "replica2"}


def test_primary_down_writes_503_reads_served_then_back(api_client, app_cluster):
    app_cluster.primary.stop()
    try:
        r = api_client.post("/ticks", json={"ticks": [{"symbol": "BTC", "price": 1.0}]}, headers=auth())
        assert r.status_code == 503
        assert int(r.headers["Retry-After"]) >= 1
        assert "primary" in r.json()["detail"]
        r = api_client.get("/prices/BTC?limit=2")
        assert r.status_code == 200 and r.headers["X-Served-Role"] == "replica"
        assert api_client.get("/cluster").status_code == 200
    finally:
        app_cluster.primary.start()
    import time
    time.sleep(0.3)
    r = api_client.post("/ticks", json={"ticks": [{"symbol": "BTC", "price": 65000.0}]}, headers=auth())
    assert r.status_code == 201, r.text


def test_primary_killed_then_replica_promoted_writes_follow(fresh_app_cluster):
    cluster = fresh_app_cluster
    with client_for(cluster) as client:
        cluster.primary.kill()
        r = client.post("/ticks", json={"ticks": [{"symbol": "ETH", "price": 3000.0}]}, headers=auth())
        assert r.status_code == 503 and "Retry-After" in r.headers
        assert client.get("/coins").status_code == 200
        cluster.node("replica1").promote()
        import time
        deadline = time.monotonic() + 20
        while True:
            r = client.post("/ticks", json={"ticks": [{"symbol": "ETH", "price": 3001.0}]}, headers=auth())
            if r.status_code == 201 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.status_code == 201, r.text
        assert r.json()["primary"] == "replica1", "libpq's target_session_attrs=read-write found the new primary"
        nodes = {n["node"]: n for n in client.get("/cluster").json()["nodes"] if n["node"]}
        assert nodes["replica1"]["role"] == "primary"


def test_no_node_answers_reads_get_503_not_500(fresh_app_cluster):
    cluster = fresh_app_cluster
    with client_for(cluster) as client:
        for n in cluster.nodes:
            n.stop()
        r = client.get("/prices/BTC")
        assert r.status_code == 503 and r.headers["Retry-After"]
        assert "no node answered" in r.json()["detail"]
        assert client.get("/health").status_code == 503
        cluster.primary.start()  # and back: the primary serves reads again
        import time
        time.sleep(0.3)
        assert client.get("/health").status_code == 200


# --- bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize("url,where", [
    ("/prices/b@d", "symbol"),
    ("/prices/" + "X" * 21, "symbol"),
    ("/prices/BTC?limit=0", "limit"),
    ("/prices/BTC?limit=10001", "limit"),
    ("/prices/BTC?limit=ten", "limit"),
    ("/prices/BTC?start=yesterday", "start"),
    ("/prices/BTC?start=0.5", "start"),                  # a number is not a date-time (pydantic would take it)
    ("/prices/BTC?start=2030-01-01T00:00:00", "start"),  # RFC 3339 has an offset
    ("/candles/BTC?end=2030-01-01", "end"),
    ("/prices/BTC?end=2030-02-30T00:00:00Z", "end"),
    ("/candles/BTC?interval=2m", "interval"),
    ("/coins?min_lsn=zz", "min_lsn"),
    ("/prices/BTC?min_lsn=0/XYZ", "min_lsn"),
])
def test_bad_input_is_a_422_with_a_message(api_client, url, where):
    r = api_client.get(url)
    assert r.status_code == 422, r.text
    assert where in r.json()["detail"]


def test_unknown_symbol_is_a_404(api_client):
    for url in ("/prices/NOPE", "/candles/NOPE?interval=1m"):
        r = api_client.get(url)
        assert r.status_code == 404
        assert "unknown symbol NOPE" in r.json()["detail"]
        assert r.headers["X-Served-By"]
    r = api_client.post("/ticks", json={"ticks": [{"symbol": "NOPE", "price": 1}]}, headers=auth())
    assert r.status_code == 404 and "NOPE" in r.json()["detail"]


def test_a_known_coin_without_ticks_in_range_is_empty_not_404(api_client):
    r = api_client.get("/prices/BTC?start=1990-01-01T00:00:00Z&end=1990-01-02T00:00:00Z")
    assert r.status_code == 200 and r.json()["prices"] == []
    # an end before its start is an empty range: the schema cannot forbid it, so the server answers it
    for url in ("/prices/BTC?start=2030-01-01T00:00:00Z&end=2020-01-01T00:00:00Z",
                "/candles/BTC?start=2030-01-01T00:00:00Z&end=2020-01-01T00:00:00Z"):
        r = api_client.get(url)
        assert r.status_code == 200 and r.json()[url[1:url.index("/", 1)]] == [], r.text
    assert api_client.get("/prices/NOPE?start=2030-01-01T00:00:00Z&end=2020-01-01T00:00:00Z").status_code == 404


@pytest.mark.parametrize("body", [
    {},
    {"ticks": []},
    {"ticks": [{"symbol": "BTC"}]},
    {"ticks": [{"symbol": "BTC", "price": 0}]},
    {"ticks": [{"symbol": "BTC", "price": -1}]},
    {"ticks": [{"symbol": "BTC", "price": 1, "volume": -1}]},
    {"ticks": [{"symbol": "BTC", "price": 1e300}]},
    {"ticks": [{"symbol": "BTC", "price": "NaN"}]},
    {"ticks": [{"symbol": "BTC", "price": 1, "time": "0001-01-01T00:00:00Z"}]},
    {"ticks": [{"symbol": "BTC", "price": 1, "time": 0}]},                       # a number is not a date-time
    {"ticks": [{"symbol": "BTC", "price": 1, "time": "2030-01-01T00:00:00"}]},   # RFC 3339 has an offset
    {"ticks": [{"symbol": "BTC", "price": 1, "time": "9000-01-01T00:00:00Z"}]},
    {"ticks": [{"symbol": "BTC", "price": "1.5"}]},                              # strings are not numbers
    {"ticks": [{"symbol": "BTC", "price": 1, "volume": False}]},
    {"ticks": [{"symbol": "B T C", "price": 1}]},
])
def test_bad_ticks_are_a_422(api_client, body):
    r = api_client.post("/ticks", json=body, headers=auth())
    assert r.status_code == 422, r.text
    assert r.json()["detail"]


def test_a_body_that_is_not_json_is_a_documented_400(api_client):
    r = api_client.post("/ticks", content=b"\xff\xfe{", headers={**auth(), "Content-Type": "application/json"})
    assert r.status_code in (400, 422) and r.json()["detail"], r.text
    documented = api_client.get("/openapi.json").json()["paths"]["/ticks"]["post"]["responses"]
    assert str(r.status_code) in documented


def test_posting_ticks_needs_the_token(api_client, app_cluster):
    body = {"ticks": [{"symbol": "BTC", "price": 1.0}]}
    assert api_client.post("/ticks", json=body).status_code == 401
    r = api_client.post("/ticks", json=body, headers={"Authorization": "Bearer wrong-token-0123456789"})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    assert api_client.post("/ticks", json={"bad": 1}).status_code == 401, "no token: nothing else is looked at"
    with client_for(app_cluster, APP_API_TOKEN="") as client:
        r = client.post("/ticks", json=body, headers=auth())
        assert r.status_code == 403 and "APP_API_TOKEN" in r.json()["detail"]


def test_cluster_view_lists_every_node(api_client):
    r = api_client.get("/cluster")
    nodes = {n["node"]: n for n in r.json()["nodes"]}
    assert set(nodes) == {"primary", "replica1", "replica2"}
    assert nodes["primary"]["role"] == "primary"
    assert nodes["replica1"]["role"] == nodes["replica2"]["role"] == "replica"
    assert all(n["reachable"] and n["lsn"] for n in nodes.values())
    assert set(r.headers["X-Served-By"].split(",")) == set(nodes)


def test_schema_creation_is_idempotent(app_cluster):
    from app.db import Router
    from app.feed import ensure_schema
    from app.market import COINS

    before = app_cluster.primary.scalar("SELECT count(*) FROM price_ticks")
    router = Router(app_settings_for(app_cluster))
    try:
        ensure_schema(router, COINS)
        ensure_schema(router, COINS)
    finally:
        router.close()
    assert app_cluster.primary.scalar("SELECT count(*) FROM price_ticks") == before
    assert app_cluster.primary.scalar("SELECT count(*) FROM coins") == len(COINS)


def app_settings_for(cluster):
    from app_fixtures import app_settings

    return app_settings(cluster)


def test_times_with_any_offset_python_accepts(api_client):
    """Found by the fuzz test: PostgreSQL takes UTC offsets up to 15:59, Python up to 23:59."""
    r = api_client.get("/prices/BTC", params={"end": "2000-01-01T00:00:00+16:00"})
    assert r.status_code == 200 and r.json()["prices"] == []
    # year 1 at +01:00 is before Python's first year in UTC: the range is open on that side
    r = api_client.get("/prices/BTC", params={"start": "0001-01-01T00:00:00+01:00", "limit": 1})
    assert r.status_code == 200 and len(r.json()["prices"]) == 1
    r = api_client.get("/prices/BTC", params={"end": "9999-12-31T23:59:59-01:00", "limit": 1})
    assert r.status_code == 200 and len(r.json()["prices"]) == 1
    r = api_client.post("/ticks", json={"ticks": [{"symbol": "BTC", "price": 1.0,
                                                   "time": "2032-01-01T00:00:00+23:00"}]}, headers=auth())
    assert r.status_code == 201, r.text
