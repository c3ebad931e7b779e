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
    price  double precision NOT NULL CHECK (price > 0),
    volume double precision NOT NULL CHECK (volume >= 0),
    PRIMARY KEY (coin, time)
);
"""

# A lock so that two processes starting at once (API workers, simulator) do not race the DDL.
SCHEMA_LOCK = 0x43525950  # "CRYP"

COINS_SQL = "SELECT symbol, name FROM coins ORDER BY symbol"

COIN_EXISTS_SQL = "SELECT EXISTS (SELECT 1 FROM coins WHERE symbol = %s)"

# The newest ticks first within [start, end]; the caller reverses for a chart.
PRICES_SQL = """
SELECT time, price, volume FROM price_ticks
WHERE coin = %(coin)s
  AND time >= coalesce(%(start)s::timestamptz, '-infinity')
  AND time <= coalesce(%(end)s::timestamptz, 'infinity')
ORDER BY time DESC
LIMIT %(limit)s
"""

CANDLES_SQL = """
WITH t AS (
    SELECT to_timestamp(floor(extract(epoch FROM time) / %(secs)s) * %(secs)s) AS bucket, time, price, volume
    FROM price_ticks
    WHERE coin = %(coin)s
      AND time >= coalesce(%(start)s::timestamptz, '-infinity')
      AND time <= coalesce(%(end)s::timestamptz, 'infinity')
)
SELECT bucket AS time,
       (array_agg(price ORDER BY time))[1]      AS open,
       max(price)                               AS high,
       min(price)                               AS low,
       (array_agg(price ORDER BY time DESC))[1] AS close,
       sum(volume)                              AS volume,
       count(*)                                 AS ticks
FROM t
GROUP BY bucket
ORDER BY bucket DESC
LIMIT %(limit)s
"""

# Per coin: its newest tick, the newest tick at least 24 h older than that, and the volume
# of the 24 h up to the newest tick.  Each LATERAL is an index range scan on (coin, time).
SUMMARY_SQL = """
SELECT c.symbol, c.name, l.time, l.price,
       p.price AS price_24h_ago,
       v.volume AS volume_24h
FROM coins c
LEFT JOIN LATERAL (SELECT time, price FROM price_ticks t WHERE t.coin = c.symbol
                   ORDER BY time DESC LIMIT 1) l ON true
LEFT JOIN LATERAL (SELECT price FROM price_ticks t WHERE t.coin = c.symbol
                     AND t.time <= l.time - interval '24 hours'
                   ORDER BY time DESC LIMIT 1) p ON true
LEFT JOIN LATERAL (SELECT sum(volume) AS volume FROM price_ticks t WHERE t.coin = c.symbol
                     AND t.time > l.time - interval '24 hours') v ON true
ORDER BY c.symbol
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


def create(conn, coins) -> None:
    """Create the tables (if missing) and the coins (added if missing), in one transaction."""
    from psycopg2.extras import execute_values

    autocommit = conn.autocommit
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            cur.execute(DDL)
            execute_values(cur, "INSERT INTO coins (symbol, name) VALUES %s ON CONFLICT (symbol) DO NOTHING",
                           [(c.symbol, c.name) for c in coins])
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.autocommit = autocommit
