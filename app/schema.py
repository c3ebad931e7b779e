"""The schema (created idempotently on the primary) and the read queries, all plain SQL.

Tables
    coins        (symbol, name)
    price_ticks  (coin, time, price, volume); primary key (coin, time) is the index every
                 read below uses: latest tick, a time range, candles, 24 h summary.
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

# Per coin: its newest tick, the newest tick at least 24 h older than that, and the volume
# of the 24 h up to the newest tick.  Each LATERAL is an index range scan on (coin, time).
SUMMARY_JSON = """
SELECT coalesce(json_agg(json_build_object(
           'symbol', c.symbol, 'name', c.name, 'time', l.time, 'price', l.price,
           'change_24h_pct', (l.price / p.price - 1) * 100, 'volume_24h', v.volume) ORDER BY c.symbol), '[]')::text
FROM coins c
LEFT JOIN LATERAL (SELECT time, price FROM price_ticks t WHERE t.coin = c.symbol
                   ORDER BY time DESC LIMIT 1) l ON true
LEFT JOIN LATERAL (SELECT price FROM price_ticks t WHERE t.coin = c.symbol
                     AND t.time <= l.time - interval '24 hours'
                   ORDER BY time DESC LIMIT 1) p ON true
LEFT JOIN LATERAL (SELECT sum(volume) AS volume FROM price_ticks t WHERE t.coin = c.symbol
                     AND t.time > l.time - interval '24 hours') v ON true
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

