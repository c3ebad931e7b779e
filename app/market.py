"""Market data with no internet: a deterministic simulator, and an optional live source.

    sim = Simulator(seed=42)
    sim.history(COINS_BY_SYMBOL["BTC"], end=now, n=1440, step_s=60)   # same seed, same prices
    sim.ticks(now)                                                      # one live tick per coin

Prices follow a geometric Brownian motion per coin (its own yearly drift and volatility);
history is generated so that it *ends* at the coin's realistic price, and every random stream
is seeded by (seed, symbol, where it starts), so a seed gives the same market every time.
The live source (``LiveSource``) asks a public price API of CoinGecko's ``simple/price`` shape
and is never needed: tests serve it from a local fake server.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import math
import random
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Iterable, Protocol

log = logging.getLogger("app.market")
UTC = dt.timezone.utc
YEAR_S = 365.0 * 86400


@dataclass(frozen=True)
class Coin:
    symbol: str
    name: str
    price: float        # a realistic price in USD, where history ends
    drift: float        # yearly drift of the log price
    volatility: float   # yearly volatility
    volume_usd_h: float  # typical traded volume per hour, USD
    gecko_id: str       # the live source's id


COINS = (
    Coin("BTC", "Bitcoin", 65_000.0, 0.30, 0.55, 1.2e9, "bitcoin"),
    Coin("ETH", "Ethereum", 3_400.0, 0.30, 0.70, 6.0e8, "ethereum"),
    Coin("SOL", "Solana", 150.0, 0.40, 0.95, 1.5e8, "solana"),
    Coin("BNB", "BNB", 580.0, 0.20, 0.60, 8.0e7, "binancecoin"),
    Coin("XRP", "XRP", 0.55, 0.10, 0.80, 6.0e7, "ripple"),
    Coin("ADA", "Cardano", 0.45, 0.10, 0.85, 2.0e7, "cardano"),
    Coin("DOGE", "Dogecoin", 0.14, 0.20, 1.10, 4.0e7, "dogecoin"),
    Coin("DOT", "Polkadot", 6.5, 0.10, 0.85, 1.0e7, "polkadot"),
)
COINS_BY_SYMBOL = {c.symbol: c for c in COINS}


def select_coins(symbols=()) -> tuple[Coin, ...]:
    """The known coins named in ``symbols`` (all of them when empty); ValueError for an unknown one."""
    if not symbols:
        return COINS
    unknown = [s for s in symbols if s not in COINS_BY_SYMBOL]
    if unknown:
        raise ValueError(f"unknown coin(s) {', '.join(unknown)}: the simulator knows {', '.join(COINS_BY_SYMBOL)}")
    return tuple(COINS_BY_SYMBOL[s] for s in symbols)


@dataclass(frozen=True)
class Tick:
    coin: str
    time: dt.datetime
    price: float
    volume: float


class Source(Protocol):
    """Where live ticks come from: the simulator, or a live price API."""

    coins: tuple[Coin, ...]

    def ticks(self, now: dt.datetime) -> list[Tick]:
        ...

    def seed_last(self, last: dict[str, tuple[dt.datetime, float]]) -> None:
        """Continue from the newest tick of each coin already stored."""


def _rng(seed: int, *parts) -> random.Random:
    return random.Random(":".join(map(str, (seed, *parts))))  # str seeds hash with SHA-512: stable


def _step(rng: random.Random, coin: Coin, price: float, seconds: float) -> tuple[float, float]:
    """One GBM step of ``seconds``; (new price, volume traded in the step)."""
    t = max(seconds, 1e-3) / YEAR_S
    z = rng.gauss(0.0, 1.0)
    price *= math.exp((coin.drift - coin.volatility ** 2 / 2) * t + coin.volatility * math.sqrt(t) * z)
    volume = coin.volume_usd_h * seconds / 3600 * rng.lognormvariate(0.0, 0.5)
    return price, volume


class Simulator:
    """A seeded random walk per coin.  ``history()`` back-fills, ``ticks()`` goes on live."""

    def __init__(self, coins: Iterable[Coin] = COINS, seed: int = 42):
        self.coins = tuple(coins)
        self.seed = seed
        self._last: dict[str, tuple[dt.datetime, float]] = {}
        self._live: dict[str, random.Random] = {}

    def history(self, coin: Coin, end: dt.datetime, n: int, step_s: int,
                start_price: "float | None" = None) -> list[Tick]:
        """``n`` ticks ``step_s`` apart, the last at ``end``.

        Without ``start_price`` the path ends at the coin's realistic price (a fresh table);
        with it, the path starts from ``start_price`` (filling a gap after a stored tick).
        """
        if n <= 0:
            return []
        start = end - dt.timedelta(seconds=step_s * (n - 1))
        rng = _rng(self.seed, coin.symbol, int(start.timestamp()), step_s)
        prices, volumes, p = [], [], 1.0
        for _ in range(n):
            p, v = _step(rng, coin, p, step_s)
            prices.append(p)
            volumes.append(v)
        # the walk starts at 1.0 one step before ``start``: scale it to where it must begin or end
        scale = start_price if start_price else coin.price / prices[-1]
        return [Tick(coin.symbol, start + dt.timedelta(seconds=step_s * i), prices[i] * scale, volumes[i])
                for i in range(n)]

    def seed_last(self, last: dict[str, tuple[dt.datetime, float]]) -> None:
        self._last.update(last)

    def ticks(self, now: dt.datetime) -> list[Tick]:
        out = []
        for coin in self.coins:
            t0, p0 = self._last.get(coin.symbol, (now - dt.timedelta(seconds=1), coin.price))
            if now <= t0:
                continue
            rng = self._live.get(coin.symbol)
            if rng is None:
                rng = self._live[coin.symbol] = _rng(self.seed, coin.symbol, "live", int(t0.timestamp()))
            p, v = _step(rng, coin, p0, (now - t0).total_seconds())
            self._last[coin.symbol] = (now, p)
            out.append(Tick(coin.symbol, now, p, v))
        return out


class LiveSourceError(Exception):
    pass


class LiveSource:
    """Prices from a public API of CoinGecko's ``simple/price`` shape:
    ``GET <url>?ids=bitcoin,ethereum&vs_currencies=usd&include_24hr_vol=true`` answers
    ``{"bitcoin": {"usd": 67187.1, "usd_24h_vol": 3.1e10}, ...}``.
    A coin missing from the answer, or with a bad price, is skipped for that round."""

    def __init__(self, url: str, coins: Iterable[Coin] = COINS, timeout: float = 5.0):
        self.url = url
        self.coins = tuple(coins)
        self.timeout = timeout
        self._last: dict[str, tuple[dt.datetime, float]] = {}

    def seed_last(self, last) -> None:
        self._last.update(last)

    def fetch(self) -> dict:
        query = urllib.parse.urlencode({"ids": ",".join(c.gecko_id for c in self.coins),
                                        "vs_currencies": "usd", "include_24hr_vol": "true"})
        req = urllib.request.Request(f"{self.url}?{query}", headers={"Accept": "application/json",
                                                                      "User-Agent": "crypto-app (replication lab)"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = resp.read(1_000_000)
        except urllib.error.HTTPError as e:
            raise LiveSourceError(f"{self.url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise LiveSourceError(f"{self.url}: {getattr(e, 'reason', e)}") from None
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise LiveSourceError(f"{self.url}: the answer is not JSON") from None
        if not isinstance(data, dict):
            raise LiveSourceError(f"{self.url}: expected a JSON object of coins")
        return data

    def ticks(self, now: dt.datetime) -> list[Tick]:
        data = self.fetch()
        out = []
        for coin in self.coins:
            item = data.get(coin.gecko_id)
            if not isinstance(item, dict):
                continue
            price, vol24 = item.get("usd"), item.get("usd_24h_vol", 0.0)
            if not _finite_positive(price) or not (_finite_positive(vol24) or vol24 == 0):
                continue
            t0, _ = self._last.get(coin.symbol, (now - dt.timedelta(seconds=1), 0.0))
            if now <= t0:
                continue
            volume = float(vol24) / 86400 * (now - t0).total_seconds()
            self._last[coin.symbol] = (now, float(price))
            out.append(Tick(coin.symbol, now, float(price), volume))
        return out


def _finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0
