"""The schema (created idempotently on the primary) and the read queries, all plain SQL.

Tables
    coins        (symbol, name)
    price_ticks  (coin, time, price, volume); primary key (coin, time) is the index every
                 read below uses: latest tick, a time range, candles, 24 h summary.
    price_volume_hourly (coin, hour, volume, ticks): the volume of each coin's whole UTC hours, a
                 rollup kept by triggers on price_ticks in the same transaction as the ticks (so a
                 replica never sees one without the other).
    market_summary (coin, time, price, change_24h_pct, volume_24h): what GET /market/summary
                 answers, one row per coin, recounted by the same triggers for the coins a statement
                 touched: the newest tick, the change since the newest tick 24 h older, and the 24 h
                 volume from ~23 rows of the hourly rollup plus the ticks of the two partial hours
                 (~150 rows a coin instead of ~1,440).  The summary depends on the ticks alone (its
                 24 h end at the newest tick, not at now()), so it changes only when they do: it is
                 counted once per write on the primary, replicated like every other row, and a read
                 on a replica is one short index scan.  What exchanges do for their 24 h
                 statistics; a covering index would still visit every tick of the day at each read.
                 Both are made and back-filled the first time the schema is checked.
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
CREATE TABLE IF NOT EXISTS market_summary (
    coin           text PRIMARY KEY REFERENCES coins (symbol) ON DELETE CASCADE,
    time           timestamptz,       -- the coin's newest tick (NULL: no tick)
    price          double precision,  -- its price
    change_24h_pct double precision,  -- against the newest tick at least 24 h older (NULL: none)
    volume_24h     double precision   -- the volume of (time - 24 h, time]
);
-- Recount the summary of the coins in ``wanted`` from the ticks and the hourly rollup.  One writer at a
-- time per coin, taken in one order (coin names sorted): a second transaction writing the same coin
-- waits here until the first commits, and its recount, a statement of its own, then sees the first's
-- ticks (READ COMMITTED, as the app and the feeder write).  Each LATERAL is an index range scan on a
-- primary key; the hours are cut on epoch seconds, as candles are, so the session's TimeZone never moves them.
CREATE OR REPLACE FUNCTION market_summary_refresh(wanted text[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    s text;
BEGIN
    FOR s IN SELECT DISTINCT w FROM unnest(wanted) w ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(1398099277, hashtext(s));  -- 1398099277: "SUMM"
    END LOOP;
    INSERT INTO market_summary AS m (coin, time, price, change_24h_pct, volume_24h)
    SELECT c.symbol, l.time, l.price, (l.price / p.price - 1) * 100, v.volume
    FROM coins c
    LEFT JOIN LATERAL (SELECT time, price FROM price_ticks t WHERE t.coin = c.symbol
                       ORDER BY time DESC LIMIT 1) l ON true
    LEFT JOIN LATERAL (SELECT price FROM price_ticks t WHERE t.coin = c.symbol
                         AND t.time <= l.time - interval '24 hours'
                       ORDER BY time DESC LIMIT 1) p ON true
    LEFT JOIN LATERAL (SELECT to_timestamp(floor(extract(epoch FROM l.time - interval '24 hours') / 3600) * 3600
                                           + 3600) AS first,
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
    WHERE c.symbol = ANY (wanted)
    ON CONFLICT (coin) DO UPDATE SET time = excluded.time, price = excluded.price,
        change_24h_pct = excluded.change_24h_pct, volume_24h = excluded.volume_24h;
END $$;
-- One function for every statement that changes ticks: it subtracts what the statement removed
-- (old_rows) from the hourly rollup and adds what it wrote (new_rows), one upsert per (coin, hour)
-- touched, then recounts the summary of the coins touched.
CREATE OR REPLACE FUNCTION price_volume_hourly_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    touched text[] := '{}';
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM price_volume_hourly;
        DELETE FROM market_summary;
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO price_volume_hourly AS h (coin, hour, volume, ticks)
        SELECT coin, to_timestamp(floor(extract(epoch FROM time) / 3600) * 3600), -sum(volume), -count(*)
        FROM old_rows GROUP BY 1, 2
        ON CONFLICT (coin, hour) DO UPDATE SET volume = h.volume + excluded.volume, ticks = h.ticks + excluded.ticks;
        touched := touched || ARRAY(SELECT DISTINCT coin FROM old_rows);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO price_volume_hourly AS h (coin, hour, volume, ticks)
        SELECT coin, to_timestamp(floor(extract(epoch FROM time) / 3600) * 3600), sum(volume), count(*)
        FROM new_rows GROUP BY 1, 2
        ON CONFLICT (coin, hour) DO UPDATE SET volume = h.volume + excluded.volume, ticks = h.ticks + excluded.ticks;
        touched := touched || ARRAY(SELECT DISTINCT coin FROM new_rows);
    END IF;
    PERFORM market_summary_refresh(touched);
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
-- Every coin's summary recounted at each check: a database made before the summary table gets it
-- filled, and one whose coins were added since gets their rows (cheap: one recount per coin).
SELECT market_summary_refresh(ARRAY(SELECT symbol FROM coins));
DROP FUNCTION IF EXISTS market_summary_json();  -- what the API read before the summary had a table
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

# Per coin: the summary the triggers keep (market_summary_refresh above); a coin with no tick has nulls.
SUMMARY_JSON = """
SELECT coalesce(json_agg(json_build_object(
           'symbol', c.symbol, 'name', c.name, 'time', m.time, 'price', m.price,
           'change_24h_pct', m.change_24h_pct, 'volume_24h', m.volume_24h) ORDER BY c.symbol), '[]')::text
FROM coins c LEFT JOIN market_summary m ON m.coin = c.symbol
"""

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

