"""The schema (created idempotently on the primary) and the read queries, all plain SQL.

Tables
    coins        (symbol, name)
    price_ticks  (coin, time, price, volume); primary key (coin, time) is the index every
                 read below uses: latest tick, a time range, candles, 24 h summary.
    price_volume_hourly (coin, hour, volume, ticks): the volume of each coin's whole UTC hours, a
                 rollup kept by triggers on price_ticks in the same transaction as the ticks (so a
                 replica never sees one without the other).  The 24 h summary adds 23 or so of its
                 rows and the ticks of the two partial hours at the window's ends, instead of reading
                 every tick of the day: with a tick a minute, ~150 rows a coin instead of ~1,440.
                 What exchanges do for their 24 h statistics; a covering index would still visit
                 every tick.  Made and back-filled once, the first time the schema is checked.
Candles (OHLCV per interval) are computed in SQL from the ticks (no stored aggregate), with
arithmetic on epoch seconds, so PostgreSQL 13 (which has no date_bin) works too.
"""
from __future__ import annotations

INTERVALS = {"1m": 60, "5m": 300, "1h": 3600, "1d": 86400}

DDL = """
CREATE TABLE IF NOT EXISTS coins (
    symbol text PRIMARY KEY CHECK (symbol ~ '^[A-Z0-9]{2,10}$'),
    name   text NOT NULL
);
CREATE TABLE IF NOT EXISTS price_ticks (
    coin   text NOT NULL REFERENCES coins (symbol),
    time   timestamptz NOT NULL,
    price  double precision NOT NULL CHECK (price > 0 AND price < 'Infinity'),  -- no NaN either
    volume double precision NOT NULL CHECK (volume >= 0 AND volume < 'Infinity'),
    PRIMARY KEY (coin, time)
);
CREATE TABLE IF NOT EXISTS price_volume_hourly (
    coin   text NOT NULL REFERENCES coins (symbol),
    hour   timestamptz NOT NULL,      -- the start of a UTC hour
    volume double precision NOT NULL,
    ticks  integer NOT NULL,
    PRIMARY KEY (coin, hour)
);
-- One function for every statement that changes ticks: it subtracts what the statement removed
-- (old_rows) and adds what it wrote (new_rows), one upsert per (coin, hour) touched.  Hours are cut on
-- epoch seconds, as candles are, so the session's TimeZone never moves them.
CREATE OR REPLACE FUNCTION price_volume_hourly_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM price_volume_hourly;
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO price_volume_hourly AS h (coin, hour, volume, ticks)
        SELECT coin, to_timestamp(floor(extract(epoch FROM time) / 3600) * 3600), -sum(volume), -count(*)
        FROM old_rows GROUP BY 1, 2
        ON CONFLICT (coin, hour) DO UPDATE SET volume = h.volume + excluded.volume, ticks = h.ticks + excluded.ticks;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO price_volume_hourly AS h (coin, hour, volume, ticks)
        SELECT coin, to_timestamp(floor(extract(epoch FROM time) / 3600) * 3600), sum(volume), count(*)
        FROM new_rows GROUP BY 1, 2
        ON CONFLICT (coin, hour) DO UPDATE SET volume = h.volume + excluded.volume, ticks = h.ticks + excluded.ticks;
    END IF;
    RETURN NULL;
END $$;
-- The triggers, made once with the back-fill of what price_ticks already holds (CREATE TRIGGER locks
-- out writers until this transaction commits, so no tick is counted twice or missed).  Not dropped and
-- made again at each start: that would take an exclusive lock, which on the replicas cancels the reads.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'price_ticks'::regclass
                   AND tgname = 'price_volume_hourly_ins') THEN
        CREATE TRIGGER price_volume_hourly_ins AFTER INSERT ON price_ticks
            REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION price_volume_hourly_apply();
        CREATE TRIGGER price_volume_hourly_upd AFTER UPDATE ON price_ticks
            REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION price_volume_hourly_apply();
        CREATE TRIGGER price_volume_hourly_del AFTER DELETE ON price_ticks
            REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION price_volume_hourly_apply();
        CREATE TRIGGER price_volume_hourly_trunc AFTER TRUNCATE ON price_ticks
            FOR EACH STATEMENT EXECUTE FUNCTION price_volume_hourly_apply();
        DELETE FROM price_volume_hourly;
        INSERT INTO price_volume_hourly (coin, hour, volume, ticks)
        SELECT coin, to_timestamp(floor(extract(epoch FROM time) / 3600) * 3600), sum(volume), count(*)
        FROM price_ticks GROUP BY 1, 2;
    END IF;
END $$;
"""

# A lock so that two processes starting at once (API workers, simulator) do not race the DDL.
SCHEMA_LOCK = 0x43525950  # "CRYP"

COIN_EXISTS_SQL = "SELECT EXISTS (SELECT 1 FROM coins WHERE symbol = %s)"

# The read queries answer one JSON text each, made by the server: the API passes it on as it
# is (no row-by-row work in Python), and the probe below rides in the same round trip.
COINS_JSON = """
SELECT coalesce(json_agg(json_build_object('symbol', symbol, 'name', name) ORDER BY symbol), '[]')::text
FROM coins
"""

# The newest %(limit)s ticks within [start, end], oldest first.
PRICES_JSON = """
SELECT coalesce(json_agg(json_build_object('time', time, 'price', price, 'volume', volume) ORDER BY time), '[]')::text
FROM (SELECT time, price, volume FROM price_ticks
      WHERE coin = %(coin)s
        AND time >= coalesce(%(start)s::timestamptz, '-infinity')
        AND time <= coalesce(%(end)s::timestamptz, 'infinity')
      ORDER BY time DESC
      LIMIT %(limit)s) t
"""

# OHLCV per bucket of %(secs)s seconds (epoch arithmetic: PostgreSQL 13 has no date_bin),
# the newest %(limit)s buckets within [start, end], oldest first.
CANDLES_JSON = """
SELECT coalesce(json_agg(json_build_object('time', bucket, 'open', open, 'high', high, 'low', low,
                                           'close', close, 'volume', volume, 'ticks', ticks)
                         ORDER BY bucket), '[]')::text
FROM (SELECT to_timestamp(floor(extract(epoch FROM time) / %(secs)s) * %(secs)s) AS bucket,
             (array_agg(price ORDER BY time))[1]      AS open,
             max(price)                               AS high,
             min(price)                               AS low,
             (array_agg(price ORDER BY time DESC))[1] AS close,
             sum(volume)                              AS volume,
             count(*)                                 AS ticks
      FROM price_ticks
      WHERE coin = %(coin)s
        AND time >= coalesce(%(start)s::timestamptz, '-infinity')
        AND time <= coalesce(%(end)s::timestamptz, 'infinity')
      GROUP BY 1
      ORDER BY 1 DESC
      LIMIT %(limit)s) c
"""

# Per coin: its newest tick, the newest tick at least 24 h older than that, and the volume of the
# 24 h up to the newest tick, (l.time - 24 h, l.time]: the whole hours inside it from the rollup
# ([first, last) below), the ticks of the partial hours at either end from price_ticks.  Every
# LATERAL is an index range scan on a primary key.  The API runs it through market_summary_json()
# (made by SUMMARY_FUNCTION_DDL, part of the schema): a PL/pgSQL function keeps its plan for the
# session, and planning this query took as long as running it.
SUMMARY_QUERY = """
SELECT coalesce(json_agg(json_build_object(
           'symbol', c.symbol, 'name', c.name, 'time', l.time, 'price', l.price,
           'change_24h_pct', (l.price / p.price - 1) * 100, 'volume_24h', v.volume) ORDER BY c.symbol), '[]')::text
FROM coins c
LEFT JOIN LATERAL (SELECT time, price FROM price_ticks t WHERE t.coin = c.symbol
                   ORDER BY time DESC LIMIT 1) l ON true
LEFT JOIN LATERAL (SELECT price FROM price_ticks t WHERE t.coin = c.symbol
                     AND t.time <= l.time - interval '24 hours'
                   ORDER BY time DESC LIMIT 1) p ON true
LEFT JOIN LATERAL (SELECT to_timestamp(floor(extract(epoch FROM l.time - interval '24 hours') / 3600) * 3600 + 3600)
                              AS first,
                          to_timestamp(floor(extract(epoch FROM l.time) / 3600) * 3600) AS last) w ON true
LEFT JOIN LATERAL (SELECT sum(volume) AS volume FROM (
                       SELECT volume FROM price_volume_hourly h
                       WHERE h.coin = c.symbol AND h.hour >= w.first AND h.hour < w.last
                       UNION ALL
                       SELECT volume FROM price_ticks t
                       WHERE t.coin = c.symbol AND t.time > l.time - interval '24 hours' AND t.time < w.first
                       UNION ALL
                       SELECT volume FROM price_ticks t
                       WHERE t.coin = c.symbol AND t.time >= w.last AND t.time <= l.time) parts) v ON true
"""

SUMMARY_FUNCTION_DDL = f"""
CREATE OR REPLACE FUNCTION market_summary_json() RETURNS text LANGUAGE plpgsql STABLE AS $fn$
BEGIN
    RETURN ({SUMMARY_QUERY});
END $fn$;
"""

SUMMARY_JSON = "SELECT market_summary_json()"

# What the node that serves a read says about itself, in the same round trip as nothing else:
# its name (cluster_name, else host:port), whether it is a standby, its replay lag in ms
# (0 when it has replayed all it received: an idle primary is not "lagging"), and whether it
# has replayed %(min_lsn)s (read-your-writes; always true on a primary).
PROBE_SQL = """
SELECT coalesce(nullif(current_setting('cluster_name'), ''),
                coalesce(host(inet_server_addr()), 'local') || ':' || current_setting('port')) AS name,
       pg_is_in_recovery() AS standby,
       CASE WHEN NOT pg_is_in_recovery() THEN 0
            WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
            ELSE greatest(0, extract(epoch FROM now() - pg_last_xact_replay_timestamp()) * 1000)
       END::float8 AS lag_ms,
       (%(min_lsn)s::pg_lsn IS NULL OR NOT pg_is_in_recovery()
        OR pg_last_wal_replay_lsn() >= %(min_lsn)s::pg_lsn) AS has_lsn
"""

INSERT_TICKS_SQL = """
INSERT INTO price_ticks (coin, time, price, volume) VALUES %s
ON CONFLICT (coin, time) DO UPDATE SET price = excluded.price, volume = excluded.volume
"""

COMMIT_LSN_SQL = "SELECT pg_current_wal_insert_lsn()::text"


DDL += SUMMARY_FUNCTION_DDL  # the summary reads the rollup: made with the tables, replaced at each check
