"""Crypto app benchmark: the API under load, reads on the replicas vs on the primary only.

    .venv/bin/python bench/app.py [--runs 3] [--seconds 5] [--connections 4,8] [--workers 2] [--endpoints A,B]

In one run it brings up a primary + 2 replicas (a scratch lab home), back-fills 7 days of
ticks and keeps writing live ticks (1 round/s), then starts the API twice on 127.0.0.1 —
APP_READ_FROM=replicas and APP_READ_FROM=primary — and loads each endpoint from a second
process: a keep-alive HTTP/1.1 client on asyncio (``--connections`` concurrent requests,
closed loop, each level measured; or wrk with --wrk when it is installed, which cannot tell who
served a read).  In a closed loop, concurrency beyond what saturates the server only queues:
latency grows, req/s does not.
Runs are interleaved (replicas, primary, replicas, ...) so drift in the machine hits both.
Prints req/s and p50/p99 (medians over --runs), the share of reads each node served, and
replicas/primary ratios, and /market/summary against /prices/{symbol} (the reference: the
simplest read).  Target on 2 cores, for both endpoints (issues 6 and 16): >= 1000 req/s with
p99 <= 25 ms.  /market/summary reads the market_summary table, one row per coin, that the
triggers on price_ticks recount on the primary (app/schema.py); --endpoints /coins,/health shows
the ceiling (the HTTP stack and one round trip).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
# this file is bench/app.py: keep bench/ off the path, or it would shadow the app package
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != BENCH]

ENDPOINTS = ("/prices/BTC", "/market/summary")


# --- the load generator (runs in its own process: `bench/app.py --load ...`) --------------------
async def _one_connection(host, port, path, deadline, lat, served, statuses):
    reader, writer = await asyncio.open_connection(host, port)
    req = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    try:
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline:
                break
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            length, node = 0, "?"
            for ln in lines[1:]:
                k, _, v = ln.partition(":")
                k = k.lower()
                if k == "content-length":
                    length = int(v)
                elif k == "x-served-by":
                    node = v.strip()
            await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            served[node] += 1
            statuses[status] += 1
    finally:
        writer.close()


async def _load(host, port, path, seconds, connections):
    lat, served, statuses = [], collections.Counter(), collections.Counter()
    # warm-up: every connection opens, the pools fill
    await asyncio.gather(*[_one_connection(host, port, path, time.perf_counter() + 0.5, [], collections.Counter(),
                                           collections.Counter()) for _ in range(connections)])
    t0 = time.perf_counter()
    await asyncio.gather(*[_one_connection(host, port, path, t0 + seconds, lat, served, statuses)
                           for _ in range(connections)])
    elapsed = time.perf_counter() - t0
    lat.sort()
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")  # noqa: E731
    return {"requests": len(lat), "rps": len(lat) / elapsed, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "served": dict(served), "statuses": {str(k): v for k, v in statuses.items()}}


def load_main(args) -> int:
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(_load(args.host, args.port, args.path, args.seconds, int(args.connections)))))
    return 0


def run_load(port: int, path: str, seconds: float, connections: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--load", "--port", str(port), "--path", path,
                          "--seconds", str(seconds), "--connections", str(connections)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def run_wrk(port: int, path: str, seconds: float, connections: int) -> dict:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
                          f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout
    def ms(tok):
        v = float(tok.rstrip("usm"))
        return v / 1000 if tok.endswith("us") else v * 1000 if tok.endswith("s") and not tok.endswith("ms") else v
    rps = float(next(ln.split()[1] for ln in out.splitlines() if ln.startswith("Requests/sec")))
    p = {ln.split()[0]: ms(ln.split()[1]) for ln in out.splitlines() if ln.strip().startswith(("50%", "99%"))}
    return {"requests": 0, "rps": rps, "p50_ms": p.get("50%"), "p99_ms": p.get("99%"), "served": {}, "statuses": {}}


# --- the servers ---------------------------------------------------------------------------
class Api:
    """``python -m app api`` as a process of its own, stopped by its process group."""

    def __init__(self, env: dict, port: int, log: Path):
        self.port = port
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "app", "api"], cwd=ROOT, env=env,
                                     stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the API did not start: {log.read_text()[-800:]}")
            time.sleep(0.1)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--connections", default="4,8",
                    help="concurrent requests of the closed-loop client; a list measures each (default 4,8)")
    ap.add_argument("--workers", type=int, default=2, help="uvicorn worker processes per API")
    ap.add_argument("--pool-size", type=int, default=4, help="connections per node and worker")
    ap.add_argument("--endpoints", default=",".join(ENDPOINTS),
                    help=f"paths to load, the first is the reference (default {','.join(ENDPOINTS)}; "
                         "/health or /coins show the ceiling: the HTTP stack and one round trip)")
    ap.add_argument("--wrk", action="store_true", help="load with wrk (must be installed)")
    ap.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.load:
        return load_main(args)
    if args.wrk and not shutil.which("wrk"):
        ap.error("--wrk: wrk is not installed (apt-get install wrk)")

    import lab
    from lab.system import ports
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_table", BENCH / "table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)

    from app.feed import Feeder
    from app.settings import Settings

    home = Path(tempfile.mkdtemp(prefix="pglab-bench-app-"))
    os.chmod(home, 0o755)
    apis, stop, feeder_thread = [], threading.Event(), None
    claimed = []
    try:
        cluster = lab.up(replicas=2, home=home / "lab", quiet=True)
        token = secrets.token_urlsafe(24)
        base = {**os.environ, "APP_PRIMARY_DSN": cluster.primary.dsn,
                "APP_REPLICA_DSNS": json.dumps([r.dsn for r in cluster.replicas]),
                "APP_API_TOKEN": token, "APP_API_WORKERS": str(args.workers),
                "APP_POOL_SIZE": str(args.pool_size), "APP_HISTORY_DAYS": "7", "APP_HISTORY_STEP_S": "60",
                "APP_TICK_RATE": "1"}
        settings = Settings.from_env(base)
        feeder = Feeder(settings)
        t0 = time.perf_counter()
        rows = feeder.prepare()
        print(f"back-filled {rows} ticks with COPY in {time.perf_counter() - t0:.2f} s; live ticks at 1 round/s",
              flush=True)
        feeder_thread = threading.Thread(target=feeder.run, args=(stop,), daemon=True)
        feeder_thread.start()
        cluster.wait_replayed()
        claimed = ports.claim_free_ports(2, str(home))
        modes = {}
        for mode, port in zip(("replicas", "primary"), claimed):
            env = {**base, "APP_READ_FROM": mode, "APP_API_PORT": str(port)}
            apis.append(Api(env, port, home / f"api-{mode}.log"))
            modes[mode] = port
        print(f"load average before the runs: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
        levels = [int(c) for c in str(args.connections).split(",") if c.strip()]
        print(f"{os.cpu_count()} cores; API: {args.workers} uvicorn worker(s), pool {args.pool_size}/node/worker; "
              f"load: {'wrk' if args.wrk else 'asyncio keep-alive client'}, {levels} concurrent requests, "
              f"{args.seconds:g} s x {args.runs} runs per cell", flush=True)
        load = run_wrk if args.wrk else run_load
        endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
        cells = [(e, c) for e in endpoints for c in levels]
        results = {(e, c, m): [] for e, c in cells for m in modes}
        for i in range(args.runs):
            for endpoint, conc in cells:
                for mode, port in modes.items():
                    r = load(port, endpoint, args.seconds, conc)
                    results[(endpoint, conc, mode)].append(r)
                    bad = {k: v for k, v in r["statuses"].items() if k != "200"}
                    print(f"  run {i + 1} {endpoint:<16} c={conc:<3} reads on {mode:<8}: {r['rps']:7.0f} req/s  "
                          f"p50 {r['p50_ms']:5.1f} ms  p99 {r['p99_ms']:5.1f} ms  served {r['served']}"
                          + (f"  NON-200 {bad}" if bad else ""), flush=True)
        med = statistics.median
        rows = []
        for endpoint, conc in cells:
            rps_of = {}
            for mode in modes:
                rs = results[(endpoint, conc, mode)]
                rps, p50, p99 = med(r["rps"] for r in rs), med(r["p50_ms"] for r in rs), med(r["p99_ms"] for r in rs)
                served = collections.Counter()
                for r in rs:
                    served.update(r["served"])
                total = sum(served.values()) or 1
                share = ", ".join(f"{n} {100 * c / total:.0f}%" for n, c in sorted(served.items()))
                rps_of[mode] = rps
                name = f"{endpoint} c={conc} reads on {mode}"
                rows += [  # every endpoint measured has the same target
                    (f"{name}: req/s", f"{rps:.0f}", ">= 1000", rps >= 1000),
                    (f"{name}: p50", f"{p50:.1f} ms", "", None),
                    (f"{name}: p99", f"{p99:.1f} ms", "<= 25 ms", p99 <= 25),
                    (f"{name}: served by", share or "-", "", None),
                ]
            rows.append((f"{endpoint} c={conc}: req/s replicas / primary",
                         f"{rps_of['replicas'] / rps_of['primary']:.2f}", "", None))
            reference = results.get((endpoints[0], conc, "replicas"))
            if endpoint != endpoints[0] and reference:
                ref = med(r["rps"] for r in reference)
                rows.append((f"{endpoint} c={conc}: req/s / {endpoints[0]}'s (reads on replicas)",
                             f"{rps_of['replicas'] / ref:.2f}", "", None))
        table.print_table(rows, "measure (median of runs)")
        print(f"load average after the runs: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
              "(other work on the machine shows in p99 first)")
    finally:
        stop.set()
        if feeder_thread:
            feeder_thread.join(10)
        for a in apis:
            a.stop()
        if claimed:
            ports.release(claimed, str(home))
        lab.down(wipe=True, home=home / "lab")
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
