"""A small client of the API that remembers which node served each read (the dashboard's data layer).

    api = ApiClient("http://127.0.0.1:8000")
    api.summary()            # a DataFrame
    api.reads                # [Read(path, status, node, role, lag_ms, fallback, ms), ...]
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
import pandas as pd


class ApiError(Exception):
    """The API did not answer, or answered with an error: one line saying which."""


@dataclass(frozen=True)
class Read:
    path: str
    status: int
    node: str
    role: str
    lag_ms: "float | None"
    fallback: str
    ms: float


class ApiClient:
    def __init__(self, base_url: str, timeout: float = 10.0, token: "str | None" = None,
                 transport: "httpx.BaseTransport | None" = None):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)
        self.reads: list[Read] = []

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _get(self, path: str, **params):
        params = {k: v for k, v in params.items() if v is not None}
        t0 = time.perf_counter()
        try:
            r = self._http.get(path, params=params)
        except httpx.HTTPError as e:
            raise ApiError(f"the API at {self.base_url} did not answer {path}: {e}") from None
        lag = r.headers.get("X-Replica-Lag-Ms")
        self.reads.append(Read(path, r.status_code, r.headers.get("X-Served-By", "?"),
                               r.headers.get("X-Served-Role", "?"), float(lag) if lag else None,
                               r.headers.get("X-Read-Fallback", ""), (time.perf_counter() - t0) * 1000))
        if r.status_code != 200:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text[:200]
            raise ApiError(f"GET {path}: {r.status_code} {detail}")
        return r.json()

    # --- reads -----------------------------------------------------------------------------
    def coins(self) -> pd.DataFrame:
        return pd.DataFrame(self._get("/coins"), columns=["symbol", "name"])

    def summary(self) -> pd.DataFrame:
        cols = ["symbol", "name", "time", "price", "change_24h_pct", "volume_24h"]
        df = pd.DataFrame(self._get("/market/summary"), columns=cols)
        df["time"] = pd.to_datetime(df["time"], utc=True, format="ISO8601")
        return df

    def prices(self, symbol: str, start=None, end=None, limit: int = 1000) -> pd.DataFrame:
        data = self._get(f"/prices/{symbol}", start=_iso(start), end=_iso(end), limit=limit)
        df = pd.DataFrame(data["prices"], columns=["time", "price", "volume"])
        df["time"] = pd.to_datetime(df["time"], utc=True, format="ISO8601")
        return df

    def candles(self, symbol: str, interval: str = "1h", start=None, end=None, limit: int = 200) -> pd.DataFrame:
        data = self._get(f"/candles/{symbol}", interval=interval, start=_iso(start), end=_iso(end), limit=limit)
        df = pd.DataFrame(data["candles"], columns=["time", "open", "high", "low", "close", "volume", "ticks"])
        df["time"] = pd.to_datetime(df["time"], utc=True, format="ISO8601")
        return df

    def cluster(self) -> pd.DataFrame:
        cols = ["node", "role", "reachable", "lag_ms", "lsn", "reads_served", "host", "port", "configured_as", "error"]
        return pd.DataFrame(self._get("/cluster")["nodes"], columns=cols)

    # --- the one write ---------------------------------------------------------------------
    def post_ticks(self, ticks: list[dict]) -> dict:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            r = self._http.post("/ticks", json={"ticks": ticks}, headers=headers)
        except httpx.HTTPError as e:
            raise ApiError(f"the API at {self.base_url} did not answer POST /ticks: {e}") from None
        if r.status_code != 201:
            raise ApiError(f"POST /ticks: {r.status_code} {r.text[:200]}")
        return r.json()

    def reads_table(self) -> pd.DataFrame:
        """Which node served each read so far (the replication panel's table)."""
        return pd.DataFrame([r.__dict__ for r in self.reads],
                            columns=["path", "status", "node", "role", "lag_ms", "fallback", "ms"])


def _iso(t) -> "str | None":
    if t is None:
        return None
    t = pd.Timestamp(t)
    return (t.tz_localize("UTC") if t.tzinfo is None else t).isoformat()  # the API wants an offset; naive is UTC
