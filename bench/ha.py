"""Automatic failover benchmark (chapter 08): N failovers by consensus per configuration, against
chapter 06's manual failover measured in the same process.

    make bench-ha
    .venv/bin/python bench/ha.py --runs 3 [--sync-runs N] [--partition-runs N] [--election-runs N]
                                 [--ref-runs N] [--rate 50] [--quick]

One HA cluster (``lab.ha.up(replicas=2)``: three etcd members, three PostgreSQL nodes run by
Patroni, HAProxy in front) in a scratch lab home under /var/tmp, never the student's.  Each run
is ``lab.autofailover.crash`` (two writers at --rate rows/s: the app through HAProxy and a stale
client on the old primary's port; a 50 ms monitor; the cluster put back and every acknowledged
write audited afterwards).  Configurations, interleaved run by run so drift hits them all:

  machine, async          crash(c, "machine") at ttl 20 (Patroni's minimum), loop_wait 2,
                          retry_timeout 5 (lab.ha's defaults)                      --runs
  machine, sync strict    the same with synchronous="strict"                        --sync-runs
  postgres, pst 0         crash(c, "postgres", primary_start_timeout=0, loop_wait=1) --runs
  partition from etcd     crash(c, "partition"): the primary's relay to etcd cut     --partition-runs
  etcd re-election        lab.autofailover.etcd_election: SIGKILL of etcd's Raft leader, time to
                          a new leader (in the RTO columns)                          --election-runs
  manual (ch. 06)         the reference: lab.failover.failover(mode="async", fault="crash") on an
                          ordinary cluster (lab.up(replicas=2), local backend, its own lab home),
                          then lab.failover.restore; its outage (kill -> first write on the new
                          primary) is the RTO reference                              --ref-runs

Columns: runs; RTO p50 / p99 (AutoFailover.rto_s: the fault -> the first write the app had
acknowledged after the outage); acknowledged writes lost (summed); writes the old primary
acknowledged after its lease expired (summed, acked_by_old_after_expiry); seconds with two
writable primaries (max); RTO p50 / the manual reference's outage p50.
Targets: 0 lost under synchronous strict; 0 acknowledged after expiry in the partition runs;
machine-crash RTO p50 <= ttl + 2 s; PostgreSQL-crash RTO p50 <= 3 s (primary_start_timeout 0,
loop_wait 1).  The issue's full check is 50 machine crashes under synchronous mode and 20
partitions (--sync-runs 50 --partition-runs 20, about 25-30 s each here): the bench prints how
long that would take from the per-run times it measured.  Everything it started is stopped and
wiped at the end (lab.ha.down / lab.down with wipe=True), also on Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lab  # noqa: E402
import lab.autofailover as af  # noqa: E402
import lab.failover as manual  # noqa: E402
import lab.ha  # noqa: E402
from lab.errors import LabError  # noqa: E402
from lab.system import binaries, hatools  # noqa: E402
from table import fmt as table_fmt, print_grid  # noqa: E402 (bench/table.py)

DCS = dict(ttl=20, loop_wait=2, retry_timeout=5)  # lab.ha's defaults, given explicitly
# (label, crash() arguments, which count option)
CONFIGS = [
    ("machine, async", dict(fault="machine", **DCS), "runs"),
    ("machine, sync strict", dict(fault="machine", synchronous="strict", **DCS), "sync_runs"),
    ("postgres, pst 0, loop 1", dict(fault="postgres", primary_start_timeout=0, loop_wait=1), "runs"),
    ("partition from etcd", dict(fault="partition", **DCS), "partition_runs"),
]
FULL = {"sync_runs": 50, "partition_runs": 20}  # the full check


def p99(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.99 * (len(xs) - 1))))]


def scratch() -> Path:
    """A directory under /var/tmp the server user can reach."""
    d = Path(tempfile.mkdtemp(prefix="pglab-bench-ha-", dir="/var/tmp"))
    os.chmod(d, 0o755)
    return d


def fmt(x, spec=".2f"):  # seconds to the hundredth unless told
    return table_fmt(x, spec)


# --- the reference: chapter 06's manual failover --------------------------------------------------
def reference(home: Path, runs: int, rate: float) -> dict:
    out = dict(outage=[], lost=[], wall=[], errors=[])
    c = lab.up(replicas=2, home=home, quiet=True, backend="local")
    for i in range(runs):
        t0 = time.perf_counter()
        try:
            run = manual.failover(c, mode="async", fault="crash", rate=rate, quiet=True)
            s = run.summary().iloc[0]
            manual.restore(c)
        except LabError as e:
            out["errors"].append(str(e).splitlines()[0][:160])
            print(f"  manual {i + 1}/{runs}: FAILED: {out['errors'][-1]}", flush=True)
            try:
                manual.restore(c)
            except LabError:
                pass
            continue
        out["wall"].append(time.perf_counter() - t0)
        if s["outage_s"] is not None and s["outage_s"] == s["outage_s"]:
            out["outage"].append(float(s["outage_s"]))
        out["lost"].append(int(s["lost"]))
        print(f"  manual {i + 1}/{runs}: outage {s['outage_s']} s, lost {s['lost']}, "
              f"{out['wall'][-1]:.1f} s with the rewind", flush=True)
    return out


# --- chapter 08 -----------------------------------------------------------------------------------
def one_crash(c, label: str, kwargs: dict, out: dict, i: int, n: int) -> None:
    t0 = time.perf_counter()
    try:
        r = af.crash(c, **kwargs)
        s = r.summary().iloc[0]
    except LabError as e:
        out["errors"].append(str(e).splitlines()[0][:160])
        print(f"  {label} {i}/{n}: FAILED after {time.perf_counter() - t0:.0f} s: {out['errors'][-1]}", flush=True)
        return
    out["wall"].append(time.perf_counter() - t0)
    out["ttl"] = s["ttl"]
    if r.rto_s is None:
        out["no_outage"] += 1
    else:
        out["rto"].append(float(r.rto_s))
    out["lost"].append(int(s["lost_acknowledged"]))
    late = s["acked_by_old_after_expiry"]
    if late is None or late != late:
        out["lease_kept"] += 1  # the lease never ended (a postgres crash Patroni restarted in place)
    else:
        out["late"].append(int(late))
    out["two"].append(float(s["two_primaries_s"]))
    print(f"  {label} {i}/{n}: RTO {r.rto_s} s ({s['old_leader']} -> {s['new_leader']}), lost "
          f"{s['lost_acknowledged']}, acked by old after expiry {late}, two primaries {s['two_primaries_s']} s, "
          f"{out['wall'][-1]:.0f} s in all", flush=True)


def one_election(c, out: dict, i: int, n: int) -> None:
    t0 = time.perf_counter()
    try:
        row = af.etcd_election(c).iloc[0]
    except LabError as e:
        out["errors"].append(str(e).splitlines()[0][:160])
        print(f"  etcd election {i}/{n}: FAILED: {out['errors'][-1]}", flush=True)
        return
    out["wall"].append(time.perf_counter() - t0)
    out["rto"].append(row["election_ms"] / 1000)
    if not row["answers_with_two"]:
        out["errors"].append("the store did not answer with two members")
    print(f"  etcd election {i}/{n}: {row['killed']} killed, {row['new_leader']} elected in {row['election_ms']} ms "
          f"(term {row['term_before']} -> {row['term_after']}), back in {row['killed_member_back_ms']} ms", flush=True)


def new_result() -> dict:
    return dict(rto=[], lost=[], late=[], two=[], wall=[], errors=[], no_outage=0, lease_kept=0, ttl=None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="machine crashes (async) and PostgreSQL crashes")
    ap.add_argument("--sync-runs", type=int, help="machine crashes under synchronous strict (default --runs; "
                                                  "the issue's check: 50)")
    ap.add_argument("--partition-runs", type=int, help="partitions from etcd (default --runs; the issue's check: 20)")
    ap.add_argument("--election-runs", type=int, help="etcd leader re-elections (default max(3, --runs))")
    ap.add_argument("--ref-runs", type=int, help="manual failovers, the reference (default max(3, --runs))")
    ap.add_argument("--rate", type=float, default=50, help="each writer's rows per second")
    ap.add_argument("--quick", action="store_true", help="one run of everything (a smoke test)")
    args = ap.parse_args()
    if args.quick:
        args.runs = args.sync_runs = args.partition_runs = args.election_runs = args.ref_runs = 1
    counts = dict(runs=args.runs, sync_runs=args.sync_runs if args.sync_runs is not None else args.runs,
                  partition_runs=args.partition_runs if args.partition_runs is not None else args.runs)
    n_elect = args.election_runs if args.election_runs is not None else max(3, args.runs)
    n_ref = args.ref_runs if args.ref_runs is not None else max(3, args.runs)
    if min(*counts.values(), n_elect) < 0 or n_ref < 1:
        ap.error("counts are whole numbers >= 0 (--ref-runs >= 1: the reference)")
    missing = lab.ha.available()
    if missing:
        print(f"chapter 08 cannot run here: {missing}", file=sys.stderr)
        return 2
    # a kill (SIGTERM) unwinds like Ctrl-C, so both clusters are wiped on the way out
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    bins = binaries.find()
    v = hatools.find().versions()
    print(f"PostgreSQL {bins.version}, Patroni {v.get('patroni', '?')}, etcd {v.get('etcd', '?')}, HAProxy "
          f"{v.get('haproxy', '?')}; {os.cpu_count()} cores; writers at {args.rate:g} rows/s; runs: "
          + ", ".join(f"{label} {counts[k]}" for label, _, k in CONFIGS)
          + f", etcd election {n_elect}, manual reference {n_ref}", flush=True)
    tmp = scratch()
    ha_home, ref_home = tmp / "ha", tmp / "ref"
    t_all = time.perf_counter()
    results = {label: new_result() for label, _, _ in CONFIGS}
    election = new_result()
    setup = {}
    try:
        # 1. the reference, alone on the machine (its cluster down before the HA one starts)
        print(f"manual failover (chapter 06), lab home {ref_home}", flush=True)
        t0 = time.perf_counter()
        try:
            ref = reference(ref_home, n_ref, args.rate)
        finally:
            lab.down(wipe=True, home=ref_home)
        setup["reference"] = time.perf_counter() - t0 - sum(ref["wall"])
        # 2. chapter 08
        print(f"HA cluster, lab home {ha_home}", flush=True)
        t0 = time.perf_counter()
        c = lab.ha.up(replicas=2, home=ha_home, quiet=True)
        setup["ha up"] = time.perf_counter() - t0
        print(f"  up in {setup['ha up']:.0f} s: {c.backend.describe()}", flush=True)
        for i in range(n_elect):
            one_election(c, election, i + 1, n_elect)
        for i in range(max(counts.values(), default=0)):
            for label, kwargs, key in CONFIGS:
                if i < counts[key]:
                    one_crash(c, label, kwargs, results[label], i + 1, counts[key])
    finally:
        t0 = time.perf_counter()
        for step in (lambda: lab.ha.down(wipe=True, home=ha_home), lambda: lab.down(wipe=True, home=ref_home)):
            try:
                step()
            except LabError as e:
                print(f"clean-up: {e}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
        setup["down"] = time.perf_counter() - t0
    total = time.perf_counter() - t_all

    med = statistics.median
    ref_p50 = med(ref["outage"]) if ref["outage"] else None
    header = ["configuration", "runs", "RTO p50 s", "RTO p99 s", "lost (sum)", "acked after expiry (sum)",
              "two primaries s (max)", "p50 / manual"]
    rows = []
    for label, _, _ in CONFIGS:
        r = results[label]
        n = len(r["wall"])
        runs = f"{n}" + (f" (+{len(r['errors'])} failed)" if r["errors"] else "")
        p50 = med(r["rto"]) if r["rto"] else None
        rows.append([label, runs, fmt(p50), fmt(p99(r["rto"]) if r["rto"] else None),
                     sum(r["lost"]) if n else "—", sum(r["late"]) if r["late"] else "—",
                     fmt(max(r["two"]) if r["two"] else None),
                     fmt(p50 / ref_p50 if p50 is not None and ref_p50 else None, ".1f")])
    e = election
    rows.append(["etcd re-election", f"{len(e['wall'])}" + (f" (+{len(e['errors'])} failed)" if e["errors"] else ""),
                 fmt(med(e["rto"]) if e["rto"] else None, ".3f"), fmt(p99(e["rto"]) if e["rto"] else None, ".3f"),
                 "—", "—", "—", "—"])
    rows.append(["manual (ch. 06), reference", f"{len(ref['wall'])}"
                 + (f" (+{len(ref['errors'])} failed)" if ref["errors"] else ""),
                 fmt(ref_p50, ".3f"), fmt(p99(ref["outage"]) if ref["outage"] else None, ".3f"),
                 sum(ref["lost"]) if ref["lost"] else "—", "—", "—", "1.0" if ref_p50 else "—"])
    print_grid(header, rows)
    print("  RTO: fault -> first write the app acknowledged after the outage (AutoFailover.rto_s); etcd "
          "re-election: kill of the Raft leader -> a new leader, in the RTO columns; manual: kill -> first "
          "write on the promoted replica (Failover.outage_s).")
    for label, _, _ in CONFIGS:
        r = results[label]
        notes = []
        if r["no_outage"]:
            notes.append(f"{r['no_outage']} run(s) with no outage seen (no RTO)")
        if r["lease_kept"] and label.startswith("partition"):
            notes.append(f"{r['lease_kept']} run(s) where the lease never ended")
        if notes:
            print(f"  {label}: " + "; ".join(notes))
        for err in r["errors"]:
            print(f"  {label}: failed run: {err}")
    for err in e["errors"] + ref["errors"]:
        print(f"  failed run: {err}")

    # targets
    def target(name, value, ok):
        print(f"  {'PASS' if ok else ('FAIL' if ok is not None else 'n/a ')}  {name}: {value}")
    print("\ntargets")
    strict = results["machine, sync strict"]
    target("0 acknowledged writes lost under synchronous strict",
           f"{sum(strict['lost'])} in {len(strict['lost'])} runs",
           (sum(strict["lost"]) == 0) if strict["lost"] else None)
    part = results["partition from etcd"]
    target("0 writes acknowledged by the old primary after its lease expired (partition)",
           f"{sum(part['late'])} in {len(part['late'])} runs", (sum(part["late"]) == 0) if part["late"] else None)
    for label in ("machine, async", "machine, sync strict"):
        r = results[label]
        ttl = r["ttl"] if r["ttl"] is not None else DCS["ttl"]
        p50 = med(r["rto"]) if r["rto"] else None
        target(f"{label}: RTO p50 <= ttl + 2 s = {ttl + 2:g} s", f"{fmt(p50)} s",
               (p50 <= ttl + 2) if p50 is not None else None)
    r = results["postgres, pst 0, loop 1"]
    p50 = med(r["rto"]) if r["rto"] else None
    target("PostgreSQL crash (primary_start_timeout 0, loop_wait 1): RTO p50 <= 3 s", f"{fmt(p50)} s",
           (p50 <= 3) if p50 is not None else None)

    # time
    per = {key: [] for key in counts}
    for label, _, key in CONFIGS:
        per[key] += results[label]["wall"]
    spent = {key: sum(per[key]) for key in per}
    mean = {key: (statistics.mean(per[key]) if per[key] else None) for key in per}
    print(f"\n{total / 60:.1f} min in all (manual reference {sum(ref['wall']):.0f} s, "
          f"HA up {setup.get('ha up', 0):.0f} s, etcd elections {sum(e['wall']):.0f} s, "
          f"crashes {sum(spent.values()):.0f} s, clean-up {setup['down']:.0f} s); "
          "per run: " + ", ".join(f"{label} {statistics.mean(results[label]['wall']):.0f} s"
                                  for label, _, _ in CONFIGS if results[label]["wall"]))
    if all(mean[k] is not None for k in FULL):
        full = total + sum(FULL[k] * mean[k] - spent[k] for k in FULL)
        print(f"the issue's full run (--sync-runs {FULL['sync_runs']} --partition-runs {FULL['partition_runs']}, the "
              f"rest as now) would take about {full / 60:.0f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
