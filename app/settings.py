"""The app's settings: one validated object, read from the environment.

    APP_PRIMARY_DSN      libpq string or URL of the primary (required)           writes go here
    APP_REPLICA_DSNS     replicas' DSNs, separated by ";" (or a JSON list)       reads go here
    APP_READ_FROM        replicas (default) | primary   where reads go first
    APP_API_HOST         127.0.0.1          APP_API_PORT        8000
    APP_DASHBOARD_PORT   8501               APP_API_URL         http://<API host>:<API port>
    APP_API_TOKEN        the token POST /ticks needs (>= 16 characters; never a known default)
    APP_API_WORKERS      uvicorn worker processes (default 1)
    APP_POOL_SIZE        connections per node and worker process (default 8)
    APP_CONNECT_TIMEOUT  seconds a connection attempt may take (default 2)
    APP_NODE_RETRY_S     a node that failed is skipped for this long (default 1.0)
    APP_TICK_RATE        live ticks per second, one row per coin each (default 1.0)
    APP_SEED             the simulator's seed (default 42)
    APP_COINS            symbols to simulate, e.g. BTC,ETH,SOL (default: all known)
    APP_HISTORY_DAYS     days of history back-filled on an empty table (default 7)
    APP_HISTORY_STEP_S   seconds between back-filled ticks (default 60)
    APP_SOURCE           simulator (default) | live
    APP_LIVE_URL         the price API of the live source (CoinGecko's simple/price shape)
    APP_REFRESH_S        the dashboard's auto-refresh period (default 5; 0 turns it off)
    APP_API_ROOT_PATH    the path a reverse proxy strips before it passes a browser's request to the
                         API, e.g. /user/alice/proxy/8000 (uvicorn's root path; default: none):
                         /docs then loads the OpenAPI document from under it
    APP_API_PUBLIC_URL   where a browser reaches the API (the dashboard links its /docs): an http(s)
                         URL or a path such as /user/alice/proxy/8000 (default: APP_API_URL)
    APP_DASHBOARD_BASE_PATH  the path the dashboard answers under (Streamlit's server.baseUrlPath),
                         e.g. /user/alice/proxy/absolute/8501 (default: none, at the root)

>>> s = Settings.from_env({"APP_PRIMARY_DSN": "host=127.0.0.1 port=5432 dbname=crypto_db"})
>>> s.api_port, s.read_from
(8000, 'replicas')
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, fields, replace
from typing import Mapping

import psycopg2.extensions


class SettingsError(ValueError):
    """A setting has a bad value; the message names the variable and says what it should be."""


# Tokens that are someone's default somewhere: refused even in a lab.
_WEAK_TOKENS = {"changeme", "change-me", "secret", "password", "token", "admin", "test", "development",
                "dev", "default", "letmein", "apitoken", "api-token", "api_token", "0123456789abcdef"}
_SYMBOL = re.compile(r"^[A-Z0-9]{2,10}$")
# what a URL path may hold unescaped (RFC 3986 pchar and "/", "%" for escapes); no query, no fragment
_PATH = re.compile(r"^(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+$")
DEFAULT_LIVE_URL = "https://api.coingecko.com/api/v3/simple/price"


def parse_dsn(text: str, var: str) -> dict:
    """A libpq connection string or URL as a dict of parameters (a SettingsError if malformed)."""
    try:
        params = psycopg2.extensions.parse_dsn(text)
    except psycopg2.ProgrammingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "malformed"
        raise SettingsError(f"{var}: not a libpq connection string or URL ({first})") from None
    if not params:
        raise SettingsError(f"{var} is empty: give a libpq string like 'host=127.0.0.1 port=5432 dbname=crypto_db'")
    return params


def _split_dsns(text: str, var: str) -> tuple[str, ...]:
    text = text.strip()
    if not text:
        return ()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise SettingsError(f"{var}: not a JSON list of DSNs ({e.msg})") from None
        if not all(isinstance(i, str) for i in items):
            raise SettingsError(f"{var}: a JSON list of DSN strings, e.g. [\"host=... port=...\"]")
    else:
        items = text.split(";")
    dsns = tuple(i.strip() for i in items if i.strip())
    for d in dsns:
        parse_dsn(d, var)
    return dsns


def _int(env, var, default, lo, hi) -> int:
    raw = env.get(var, "").strip()
    if not raw:
        return default
    try:
        v = int(raw)
    except ValueError:
        raise SettingsError(f"{var}={raw!r}: not a whole number (expected {lo}..{hi})") from None
    if not lo <= v <= hi:
        raise SettingsError(f"{var}={v}: out of range (expected {lo}..{hi})")
    return v


def _float(env, var, default, lo, hi) -> float:
    raw = env.get(var, "").strip()
    if not raw:
        return default
    try:
        v = float(raw)
    except ValueError:
        raise SettingsError(f"{var}={raw!r}: not a number (expected {lo}..{hi})") from None
    if not lo <= v <= hi or v != v:
        raise SettingsError(f"{var}={raw}: out of range (expected {lo}..{hi})")
    return v


def _choice(env, var, default, choices) -> str:
    raw = env.get(var, "").strip().lower() or default
    if raw not in choices:
        raise SettingsError(f"{var}={raw!r}: expected one of {', '.join(choices)}")
    return raw


def url_path(env, var) -> str:
    """A path prefix such as /user/alice/proxy/absolute/8000, without its trailing "/"; "" when unset or "/"."""
    raw = env.get(var, "").strip()
    path = raw.rstrip("/")
    if not path:
        return ""
    example = "e.g. /user/alice/proxy/absolute/8000"
    if not path.startswith("/") or path.startswith("//"):
        raise SettingsError(f"{var}={raw!r}: a path that starts with one '/' ({example}), not a URL")
    if not _PATH.match(path) or any(seg in (".", "..") for seg in path.split("/")):
        raise SettingsError(f"{var}={raw!r}: not a plain URL path (no spaces, '?', '#', '//' or '..'; {example})")
    return path


def check_token(token: str, var: str = "APP_API_TOKEN") -> str:
    if len(token) < 16:
        raise SettingsError(f"{var} is too short ({len(token)} characters): use at least 16, e.g. "
                            "python -c 'import secrets; print(secrets.token_urlsafe(24))'")
    if token.lower() in _WEAK_TOKENS or len(set(token)) < 6:
        raise SettingsError(f"{var} is a well-known or trivial value: generate one, e.g. "
                            "python -c 'import secrets; print(secrets.token_urlsafe(24))'")
    return token


@dataclass(frozen=True)
class Settings:
    primary_dsn: str
    replica_dsns: tuple[str, ...] = ()
    read_from: str = "replicas"
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    dashboard_port: int = 8501
    api_url: str = ""
    api_token: "str | None" = field(default=None, repr=False)
    api_workers: int = 1
    pool_size: int = 8
    connect_timeout: int = 2
    node_retry_s: float = 1.0
    tick_rate: float = 1.0
    seed: int = 42
    coins: tuple[str, ...] = ()
    history_days: float = 7.0
    history_step_s: int = 60
    source: str = "simulator"
    live_url: str = DEFAULT_LIVE_URL
    refresh_s: float = 5.0
    api_root_path: str = ""
    dashboard_base_path: str = ""

    @classmethod
    def from_env(cls, env: "Mapping[str, str] | None" = None) -> "Settings":
        """Read and check every APP_* variable; a SettingsError names the first bad one."""
        env = os.environ if env is None else env
        primary = env.get("APP_PRIMARY_DSN", "").strip()
        if not primary:
            raise SettingsError("APP_PRIMARY_DSN is not set: give the primary's libpq connection string "
                                "(from a notebook, lab starts the app with it)")
        parse_dsn(primary, "APP_PRIMARY_DSN")
        host = env.get("APP_API_HOST", "").strip() or "127.0.0.1"
        port = _int(env, "APP_API_PORT", 8000, 1, 65535)
        api_url = env.get("APP_API_URL", "").strip().rstrip("/")
        if api_url and not re.match(r"^https?://[^/\s]+", api_url):
            raise SettingsError(f"APP_API_URL={api_url!r}: expected http://host:port")
        token = env.get("APP_API_TOKEN", "").strip() or None
        if token is not None:
            check_token(token)
        coins = tuple(c.strip().upper() for c in env.get("APP_COINS", "").split(",") if c.strip())
        bad = [c for c in coins if not _SYMBOL.match(c)]
        if bad:
            raise SettingsError(f"APP_COINS: {', '.join(bad)} is not a symbol (2-10 letters or digits)")
        live_url = env.get("APP_LIVE_URL", "").strip() or DEFAULT_LIVE_URL
        if not re.match(r"^https?://[^/\s]+", live_url):
            raise SettingsError(f"APP_LIVE_URL={live_url!r}: expected an http(s) URL")
        return cls(
            primary_dsn=primary,
            replica_dsns=_split_dsns(env.get("APP_REPLICA_DSNS", ""), "APP_REPLICA_DSNS"),
            read_from=_choice(env, "APP_READ_FROM", "replicas", ("replicas", "primary")),
            api_host=host,
            api_port=port,
            dashboard_port=_int(env, "APP_DASHBOARD_PORT", 8501, 1, 65535),
            api_url=api_url or f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}",
            api_token=token,
            api_workers=_int(env, "APP_API_WORKERS", 1, 1, 16),
            pool_size=_int(env, "APP_POOL_SIZE", 8, 1, 64),
            connect_timeout=_int(env, "APP_CONNECT_TIMEOUT", 2, 1, 60),
            node_retry_s=_float(env, "APP_NODE_RETRY_S", 1.0, 0.0, 600.0),
            tick_rate=_float(env, "APP_TICK_RATE", 1.0, 0.01, 100.0),
            seed=_int(env, "APP_SEED", 42, 0, 2**63 - 1),
            coins=coins,
            history_days=_float(env, "APP_HISTORY_DAYS", 7.0, 0.0, 366.0),
            history_step_s=_int(env, "APP_HISTORY_STEP_S", 60, 1, 86400),
            source=_choice(env, "APP_SOURCE", "simulator", ("simulator", "live")),
            live_url=live_url,
            refresh_s=_float(env, "APP_REFRESH_S", 5.0, 0.0, 3600.0),
            api_root_path=url_path(env, "APP_API_ROOT_PATH"),
            dashboard_base_path=url_path(env, "APP_DASHBOARD_BASE_PATH"),
        )

    def require_token(self) -> str:
        if not self.api_token:
            raise SettingsError("APP_API_TOKEN is not set: POST /ticks needs a token of at least 16 characters, "
                                "e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))'")
        return self.api_token

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes)

    def to_env(self) -> dict:
        """The APP_* variables that give back these settings (to start another process with)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            key = "APP_" + f.name.upper()
            if f.name == "replica_dsns":
                out[key] = json.dumps(list(v))
            elif f.name == "coins":
                out[key] = ",".join(v)
            else:
                out[key] = str(v)
        return out
