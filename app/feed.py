"""Writing market data to the primary: the schema, a back-fill with COPY, then live ticks.

    router = Router(settings)
    ensure_schema(router, coins)
    backfill(router, Simulator(coins, seed), days=7, step_s=60)   # once, or the gap since the last run
    run(settings, rounds=10)                                      # live ticks at settings.tick_rate
"""
from __future__ import annotations

import datetime as dt
import io
import logging
import threading
import time

from psycopg2.extras import execute_values

from . import schema
from .db import Router, Unavailable
from .market import Coin, LiveSource, LiveSourceError, Simulator, Source, Tick, select_coins
from .settings import Settings

log = logging.getLogger("app.feed")
UTC = dt.timezone.utc
BACKFILL_LOCK = 0x43525951


def ensure_schema(router: Router, coins) -> str:
    """Create the tables and coins on the primary if missing; the commit LSN."""
    def fn(cur):
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (schema.SCHEMA_LOCK,))
        cur.execute(schema.DDL)
        execute_values(cur, "INSERT INTO coins (symbol, name) VALUES %s ON CONFLICT (symbol) DO NOTHING",
                       [(c.symbol, c.name) for c in coins])
    return router.write(fn)[1]


def wait_for_schema(router: Router, coins, timeout: float = 30.0) -> "str | None":
    """ensure_schema(), retried while the primary is starting; None if it never answered."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return ensure_schema(router, coins)
        except Unavailable as e:
            if time.monotonic() >= deadline:
                log.warning("schema not checked, the primary did not answer in %.0fs: %s", timeout, e)
                return None
            time.sleep(min(0.5, router.settings.node_retry_s or 0.5))


def latest(cur, symbols) -> dict[str, tuple[dt.datetime, float]]:
    """The newest stored tick (time, price) of each coin that has one."""
    out = {}
    for s in symbols:
        cur.execute("SELECT time, price FROM price_ticks WHERE coin = %s ORDER BY time DESC LIMIT 1", (s,))
        row = cur.fetchone()
        if row:
            out[s] = row
    return out


def _floor(t: dt.datetime, step_s: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(t.timestamp()) // step_s * step_s, UTC)


def plan_backfill(sim: Simulator, last: dict, now: dt.datetime, days: float, step_s: int) -> list[Tick]:
    """The ticks a back-fill writes: ``days`` of history for a coin with none, else the gap
    between its newest stored tick and ``now``."""
    out: list[Tick] = []
    for coin in sim.coins:
        if coin.symbol in last:
            t0, p0 = last[coin.symbol]
            n = int((now - t0).total_seconds() // step_s)
            out += sim.history(coin, t0 + dt.timedelta(seconds=n * step_s), n, step_s, start_price=p0)
        else:
            n = int(days * 86400 // step_s) + 1 if days > 0 else 0
            out += sim.history(coin, _floor(now, step_s), n, step_s)
    return out


def copy_ticks(cur, ticks: list[Tick]) -> None:
    """COPY ``ticks`` into price_ticks (text format; times as ISO 8601 with offset)."""
    buf = io.StringIO()
    for t in ticks:
        buf.write(f"{t.coin}\t{t.time.isoformat()}\t{t.price!r}\t{t.volume!r}\n")
    buf.seek(0)
    cur.copy_expert("COPY price_ticks (coin, time, price, volume) FROM STDIN", buf)


def backfill(router: Router, sim: Simulator, days: float, step_s: int,
             now: "dt.datetime | None" = None) -> tuple[int, str]:
    """Back-fill history with COPY in one transaction; (rows written, commit LSN)."""
    now = now or dt.datetime.now(UTC)

    def fn(cur):
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (BACKFILL_LOCK,))  # two feeders: one fills
        ticks = plan_backfill(sim, latest(cur, [c.symbol for c in sim.coins]), now, days, step_s)
        copy_ticks(cur, ticks)
        return len(ticks)
    rows, lsn, _ = router.write(fn)
    if rows:  # fresh statistics for the planner (replicas get them through the WAL too)
        router.write(lambda cur: cur.execute("ANALYZE coins, price_ticks"))
    return rows, lsn


def dedupe(ticks) -> list:
    """The last tick of each (coin, time): one INSERT ... ON CONFLICT cannot touch a row twice."""
    return list({(t.coin, t.time): t for t in ticks}.values())


def write_ticks(router: Router, ticks: list[Tick]) -> tuple[int, str]:
    """INSERT (or update) ``ticks`` in one transaction on the primary; (rows, commit LSN)."""
    ticks = dedupe(ticks)

    def fn(cur):
        execute_values(cur, schema.INSERT_TICKS_SQL, [(t.coin, t.time, t.price, t.volume) for t in ticks],
                       page_size=max(1, len(ticks)))  # one statement: its coins' summary locks in one order
        return len(ticks)
    rows, lsn, _ = router.write(fn)
    return rows, lsn


def make_source(settings: Settings, coins: tuple[Coin, ...]) -> Source:
    if settings.source == "live":
        return LiveSource(settings.live_url, coins)
    return Simulator(coins, settings.seed)


class Feeder:
    """Back-fill, then one round of ticks every 1/tick_rate seconds until ``stop`` is set."""

    def __init__(self, settings: Settings, router: "Router | None" = None, source: "Source | None" = None):
        self.settings = settings
        self.coins = select_coins(settings.coins)
        self.router = router or Router(settings)
        self.source = source or make_source(settings, self.coins)
        self.sim = Simulator(self.coins, settings.seed)
        self.rounds = 0
        self.last_lsn: "str | None" = None

    def prepare(self) -> int:
        if wait_for_schema(self.router, self.coins) is None:
            raise Unavailable("the primary did not answer: cannot create the schema", 1)
        rows, self.last_lsn = backfill(self.router, self.sim, self.settings.history_days,
                                       self.settings.history_step_s)
        log.info("back-filled %d ticks (LSN %s)", rows, self.last_lsn)
        with self.router.primary.connection() as conn, conn.cursor() as cur:
            self.source.seed_last(latest(cur, [c.symbol for c in self.coins]))
        return rows

    def round(self) -> "str | None":
        """Write one round of ticks; the commit LSN (None if the source had nothing or the primary is down)."""
        try:
            ticks = self.source.ticks(dt.datetime.now(UTC))
        except LiveSourceError as e:
            log.warning("live source: %s (this round skipped)", e)
            return None
        if not ticks:
            return None
        try:
            _, self.last_lsn = write_ticks(self.router, ticks)
        except Unavailable as e:
            log.warning("ticks not written: %s", e)
            return None
        self.rounds += 1
        return self.last_lsn

    def run(self, stop: "threading.Event | None" = None, rounds: "int | None" = None) -> int:
        stop = stop or threading.Event()
        period = 1.0 / self.settings.tick_rate
        next_at = time.monotonic()
        done = 0
        while not stop.is_set() and (rounds is None or done < rounds):
            self.round()
            done += 1
            next_at += period
            stop.wait(max(0.0, next_at - time.monotonic()))
            if time.monotonic() - next_at > 5 * period:  # fell far behind (a failover): do not burst
                next_at = time.monotonic()
        return done
