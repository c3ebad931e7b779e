"""Command line: ``python -m app api | dashboard | simulate | schema``.

    APP_PRIMARY_DSN='host=127.0.0.1 port=5432 dbname=crypto_db user=admin password=...' \\
    APP_REPLICA_DSNS='host=127.0.0.1 port=5433 ...;host=127.0.0.1 port=5434 ...' \\
    APP_API_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(24))') \\
    python -m app api

Every setting is an APP_* variable (app/settings.py); the options below override a few.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from .settings import Settings, SettingsError, _int, url_path

PAGE = Path(__file__).resolve().parent / "dashboard_page.py"


def _settings(overrides: dict) -> Settings:
    env = dict(os.environ)
    env.update({k: str(v) for k, v in overrides.items() if v is not None})
    os.environ.update({k: str(v) for k, v in overrides.items() if v is not None})  # uvicorn workers read them
    return Settings.from_env(env)


def cmd_api(args) -> int:
    s = _settings({"APP_API_HOST": args.host, "APP_API_PORT": args.port, "APP_API_WORKERS": args.workers})
    s.require_token()
    import uvicorn

    print(f"crypto app API on http://{s.api_host}:{s.api_port} (docs: {s.api_root_path}/docs), reads from {s.read_from}, "
          f"{len(s.replica_dsns)} replica(s), {s.api_workers} worker(s)", flush=True)
    # root_path (APP_API_ROOT_PATH): behind a proxy that strips it, /docs asks for <root path>/openapi.json
    # and the document names that path as its server
    uvicorn.run("app.api:create_app", factory=True, host=s.api_host, port=s.api_port, workers=s.api_workers,
                root_path=s.api_root_path,
                log_level=args.log_level, access_log=False, loop="auto", http="auto")
    return 0


def cmd_dashboard(args) -> int:
    # the dashboard talks to the API only: it needs no database settings
    for k, v in {"APP_DASHBOARD_PORT": args.port, "APP_API_URL": args.api_url}.items():
        if v is not None:
            os.environ[k] = str(v)
    from .dashboard import api_url, refresh_seconds

    url, port = api_url(), _int(os.environ, "APP_DASHBOARD_PORT", 8501, 1, 65535)
    base = url_path(os.environ, "APP_DASHBOARD_BASE_PATH")
    refresh_seconds()
    host = args.host or "127.0.0.1"
    print(f"crypto app dashboard on http://{host}:{port}{base}/ (API {url})", flush=True)
    argv = [sys.executable, "-m", "streamlit", "run", str(PAGE), "--server.address", host,
            "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
            "--client.toolbarMode", "viewer"]
    if base:  # behind a proxy that keeps the path: pages, assets and the websocket all live under it
        argv += ["--server.baseUrlPath", base]
    os.execv(sys.executable, argv)
    return 0  # not reached


def cmd_simulate(args) -> int:
    s = _settings({"APP_TICK_RATE": args.rate, "APP_SEED": args.seed})
    from .feed import Feeder

    feeder = Feeder(s)
    rows = feeder.prepare()
    print(f"schema ready; back-filled {rows} ticks (LSN {feeder.last_lsn})", flush=True)
    if args.backfill_only:
        return 0
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"writing {s.tick_rate:g} round(s) of ticks per second to the primary "
          f"({len(feeder.coins)} coins, source {s.source}); Ctrl-C stops", flush=True)
    n = feeder.run(stop, rounds=args.rounds)
    print(f"stopped after {n} rounds (last LSN {feeder.last_lsn})", flush=True)
    feeder.router.close()
    return 0


def cmd_schema(args) -> int:
    s = _settings({})
    from .db import Router
    from .feed import ensure_schema
    from .market import select_coins

    r = Router(s)
    try:
        print(f"schema ready (LSN {ensure_schema(r, select_coins(s.coins))})")
    finally:
        r.close()
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m app", description="The crypto app on a replicated PostgreSQL")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("api", help="the HTTP API (uvicorn)")
    a.add_argument("--host")
    a.add_argument("--port", type=int)
    a.add_argument("--workers", type=int)
    d = sub.add_parser("dashboard", help="the Streamlit dashboard")
    d.add_argument("--host")
    d.add_argument("--port", type=int)
    d.add_argument("--api-url")
    sm = sub.add_parser("simulate", help="create the schema, back-fill history, then write live ticks")
    sm.add_argument("--rate", type=float, help="rounds of ticks per second (APP_TICK_RATE)")
    sm.add_argument("--seed", type=int, help="APP_SEED")
    sm.add_argument("--rounds", type=int, help="stop after this many rounds")
    sm.add_argument("--backfill-only", action="store_true")
    sub.add_parser("schema", help="create the tables and coins on the primary (idempotent)")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return {"api": cmd_api, "dashboard": cmd_dashboard, "simulate": cmd_simulate, "schema": cmd_schema}[args.cmd](args)
    except SettingsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a database that does not answer, a port in use: one line, not a stack
        from .db import Unavailable
        if isinstance(e, (Unavailable, ValueError)):
            print(f"error: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
