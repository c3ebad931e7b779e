"""Failover benchmark and reliability check: N kill -9 failovers under write load per mode.

    .venv/bin/python bench/failover.py [--runs 20] [--modes async,on,remote_apply] [--rate 300]
                                       [--latency-ms 0] [--ref-runs 5]

For each mode (async / on / remote_apply), one lab cluster (a primary + 1 replica) is failed over
--runs times, ping-pong: a writer commits --rate rows/s through a libpq multi-host string
(target_session_attrs=read-write); the primary is SIGKILLed; the replica is promoted
(``Node.promote``: pg_ctl promote plus the lab's bookkeeping); the writer reconnects by itself;
then the old primary is rewound (pg_rewind) into the new primary's replica for the next run.
Per mode it prints:
  outage p50 / p99     from the kill to the first write the new primary acknowledged (s)
  lost                 acknowledged writes missing on the new primary, summed over the runs
  promote p50          Node.promote(), against a raw `pg_ctl promote -w` of a replica whose
                       primary was just killed under the same load (--ref-runs times per mode,
                       in this process, same binaries): the reference and the ratio.
Targets (issue 5): on / remote_apply lose 0 acknowledged writes in 100 failovers; outage p50
<= 1 s; promote <= 2x the raw reference.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lab  # noqa: E402
from lab import failover, workload  # noqa: E402
from lab.system import binaries  # noqa: E402
from lab.system.osuser import server_user  # noqa: E402
from bringup import scratch  # noqa: E402 (bench/bringup.py: a temp dir the server user can reach)
from table import print_table  # noqa: E402 (bench/table.py)


def p99(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.99 * (len(xs) - 1))))]


def raw_promote(rate: float) -> float:
    """A replica's primary SIGKILLed under the writer's load, then `pg_ctl promote -w` alone, timed."""
    home = scratch("pglab-bench-fo-ref-")
    try:
        c = lab.up(replicas=1, home=home / "lab", quiet=True)
        replica = c.node("replica1")
        w = workload.Writer(workload.multi_host_dsn(c, connect_timeout=1), rate=rate, duration=30, cluster=c)
        w.start()
        try:
            time.sleep(0.3)
            c.primary.kill()
            t0 = time.perf_counter()
            replica.tool("pg_ctl", "promote", "-D", replica.pgdata, "-w", "-t", 60, "-s", timeout=70)
            elapsed = time.perf_counter() - t0
        finally:
            w.stop()
    finally:
        lab.down(wipe=True, home=home / "lab")
        shutil.rmtree(home, ignore_errors=True)
    return elapsed


def bench_mode(mode: str, runs: int, rate: float, latency_ms: float, ref_runs: int) -> dict:
    home = scratch(f"pglab-bench-fo-{mode}-")
    out = dict(mode=mode, outage=[], lost=[], unknown=[], acked=[], promote=[], ref=[], restore=[])
    c = None
    try:
        c = lab.up(replicas=1, home=home / "lab", quiet=True)
        ref_every = max(1, runs // max(1, ref_runs))
        for i in range(runs):
            run = failover.failover(c, mode=mode, fault="crash", rate=rate, before=0.3, after=0.05,
                                    latency_ms=latency_ms, quiet=True)
            s = run.summary().iloc[0]
            out["outage"].append(float(s["outage_s"]))
            out["lost"].append(int(s["lost"]))
            out["unknown"].append(int(s["unknown"]))
            out["acked"].append(int(s["acknowledged"]))
            out["promote"].append(run.promote_s)
            t0 = time.perf_counter()
            failover.restore(c)
            out["restore"].append(time.perf_counter() - t0)
            if i % ref_every == 0 and len(out["ref"]) < ref_runs:
                out["ref"].append(raw_promote(rate))
            if (i + 1) % 10 == 0 or i + 1 == runs:
                print(f"  {mode}: {i + 1}/{runs} failovers, lost so far {sum(out['lost'])}, "
                      f"outage median {statistics.median(out['outage']):.3f} s", flush=True)
    finally:
        if c is not None:
            lab.down(wipe=True, home=home / "lab")
        shutil.rmtree(home, ignore_errors=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="failovers per mode (the issue's check: 100)")
    ap.add_argument("--modes", default="async,on,remote_apply")
    ap.add_argument("--rate", type=float, default=300, help="writer's rows per second")
    ap.add_argument("--latency-ms", type=float, default=0, help="one-way latency added on the replica's link")
    ap.add_argument("--ref-runs", type=int, default=5, help="raw pg_ctl promote references per mode")
    args = ap.parse_args()
    # a kill (SIGTERM) unwinds like Ctrl-C, so every cluster of the bench is wiped on the way out
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bins = binaries.find()
    print(f"PostgreSQL {bins.version} ({bins.bindir}), {os.cpu_count()} cores, server user {server_user().name}; "
          f"{args.runs} kill -9 failovers per mode at {args.rate:g} rows/s, latency {args.latency_ms:g} ms",
          flush=True)
    med = statistics.median
    rows = []
    t_all = time.perf_counter()
    for mode in modes:
        r = bench_mode(mode, args.runs, args.rate, args.latency_ms, args.ref_runs)
        lost, n = sum(r["lost"]), len(r["outage"])
        sync = mode != "async"
        ratio = med(r["promote"]) / med(r["ref"])
        rows += [
            (f"{mode}: failovers", f"{n}", "", None),
            (f"{mode}: acknowledged writes", f"{sum(r['acked'])}", "", None),
            (f"{mode}: acknowledged writes lost", f"{lost}", "0" if sync else "", (lost == 0) if sync else None),
            (f"{mode}: runs that lost any", f"{sum(1 for x in r['lost'] if x)}", "", None),
            (f"{mode}: unknown outcome (in flight)", f"{sum(r['unknown'])}", "", None),
            (f"{mode}: outage p50", f"{med(r['outage']):.3f} s", "<= 1 s", med(r["outage"]) <= 1),
            (f"{mode}: outage p99", f"{p99(r['outage']):.3f} s", "", None),
            (f"{mode}: promote p50 (Node.promote)", f"{med(r['promote']):.3f} s", "", None),
            (f"{mode}: raw pg_ctl promote p50 ({len(r['ref'])})", f"{med(r['ref']):.3f} s", "reference", None),
            (f"{mode}: promote / raw", f"{ratio:.2f}", "<= 2", ratio <= 2),
            (f"{mode}: rejoin (pg_rewind) p50", f"{med(r['restore']):.2f} s", "", None),
        ]
    print_table(rows, f"measure ({time.perf_counter() - t_all:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
