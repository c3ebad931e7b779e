"""Class load test: a real JupyterHub on this machine and N students running a chapter at once.

    make bench-classroom
    .venv/bin/python bench/classroom.py [--students 1,10,30] [--ch05-share 0.2] [--cell-timeout 300]

For each N, a hub of its own (tests/hub_fixtures.py: hub/jupyterhub_config.py on free 127.0.0.1
ports, the process spawner, the dummy login, a 1 GiB / 1 CPU limit per student, students as Unix
users of a prefix unique to the run).  All N students then at once, one thread each: log in through
the hub's API (a token from POST /hub/api/users/<name>/tokens with a name and password, as a
script would), start their server with that token, and run the code cells of
notebooks/01_primary_and_replica.ipynb in order in a kernel of their own, through the single-user
server's kernel API (REST + websocket, as JupyterLab does).  A share of them (--ch05-share, at
least one) then opens notebooks/05_lag_and_sync_commit.ipynb in a second kernel and runs it too;
the first kernel stays, as it does in JupyterLab.  Cells nbval would skip (tagged ``nbval-skip`` /
``skip-execution``, or ``# NBVAL_SKIP``) are skipped; a cell tagged ``raises-exception`` (or
``# NBVAL_RAISES_EXCEPTION``) must raise.  A student fails on the first cell that errs or runs
past --cell-timeout, and on a login or spawn that does not succeed.

When every student is done, with every cluster still up: the PSS (/proc/<pid>/smaps_rollup) of
each student's processes, found by their Unix user (their Jupyter server, kernels, PostgreSQL
servers and anything else of theirs), and of the hub's own (the hub, its proxy and services);
each student's cgroup's peak memory and CPU throttling.  Then the hub stops every server through
its API, and the bench looks for anything left: a process of a student's user, a port claim of a
student's lab home.  The hub's teardown (tests/hub_fixtures.py) then stops the hub and removes the
students' users and the class root, which is checked too.  Docker spawner: not measured here yet.

Per N: spawn time p50/p95 (POST .../server until the hub says ready), chapter time p50/p95,
failures, PSS per student (median and max), total PSS (students + hub), the machine's used memory
at its peak over the baseline, time to stop a server, and what was left.  Targets (issue #13):
N = 30 with 0 failures, <= 300 MB per student (every student: those with chapter 01's kernel, and
those with a second kernel for chapter 05 open too), nothing left after the stop.  The
knee: the smallest N whose chapter-01 median is more than twice N = 1's.  Other work on the
machine slows every number down: the load average before and after is printed with them.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import pwd
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import hub_fixtures as hf  # noqa: E402 (tests/hub_fixtures.py: the hub tier's start, stop and clean-up)
from table import fmt, print_grid, print_table  # noqa: E402 (bench/table.py)

CHAPTERS = {"01": ROOT / "notebooks" / "01_primary_and_replica.ipynb",
            "05": ROOT / "notebooks" / "05_lag_and_sync_commit.ipynb"}
SKIP_TAGS = {"nbval-skip", "skip-execution"}
MB = 1024 * 1024
TARGET_N, TARGET_MB = 30, 300


def cells(path: Path) -> "list[tuple[str, bool]]":
    """The code cells nbval would run: (source, must raise)."""
    out = []
    for c in json.loads(path.read_text())["cells"]:
        if c["cell_type"] != "code":
            continue
        src = "".join(c["source"])
        tags = set(c.get("metadata", {}).get("tags", []))
        first = src.lstrip().splitlines()[0].strip().upper() if src.strip() else ""
        if tags & SKIP_TAGS or first.startswith("# NBVAL_SKIP") or not src.strip():
            continue
        out.append((src, "raises-exception" in tags or first.startswith("# NBVAL_RAISES_EXCEPTION")))
    return out


def pct(xs, q):
    """The q-quantile (0..1) of xs by nearest rank; None for no data."""
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


def used_memory() -> int:
    """Bytes of memory in use on the machine (MemTotal - MemAvailable)."""
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        k, v = line.split(":", 1)
        info[k] = int(v.split()[0]) * 1024
    return info["MemTotal"] - info["MemAvailable"]


class Sampler(threading.Thread):
    """The machine's used memory every second: its peak while the class runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.done = used_memory(), threading.Event()

    def run(self):
        while not self.done.wait(1.0):
            self.peak = max(self.peak, used_memory())


def pss(p: psutil.Process) -> int:
    with contextlib.suppress(psutil.Error):
        return p.memory_full_info().pss
    return 0


def kind(p: psutil.Process) -> str:
    """Which part of a student's lab a process is."""
    with contextlib.suppress(psutil.Error):
        if p.name() == "postgres":
            return "postgres"
        cmd = " ".join(p.cmdline())
        if "jupyterhub.singleuser" in cmd:
            return "server"
        if "ipykernel" in cmd:
            return "kernel"
    return "other"


# --- one student ----------------------------------------------------------------------------------
def student(hub: hf.Hub, name: str, chapters: "list[str]", cell_timeout: float, go: threading.Barrier,
            out: dict) -> None:
    """Log in, start the server, run the chapters; what happened goes into ``out``."""
    out.update(name=name, chapters={}, cells={}, failed=None)
    step = "login"
    try:
        go.wait()
        t0 = time.monotonic()
        hub.login(name).close()  # the login form, as a browser does: the hub makes the user
        r = httpx.post(f"{hub.url}/hub/api/users/{name}/tokens", timeout=120,
                       json={"auth": {"username": name, "password": "any"}, "note": "class bench",
                             "expires_in": 7200})
        if r.status_code != 201:
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
        out["login_s"] = time.monotonic() - t0
        me = copy.copy(hub)  # the same hub, seen with the student's own token and kernels
        me.token, me._kernels = r.json()["token"], {}
        hub.students.add(name)  # the hub's teardown stops and removes them
        step = "spawn"
        out["spawn_s"] = me.start(name)
        for ch in chapters:
            me._kernels.pop(name, None)  # a new notebook, a new kernel; the last one keeps running
            t0 = time.monotonic()
            for i, (src, must_raise) in enumerate(cells(CHAPTERS[ch])):
                step = f"chapter {ch} cell {i}"
                t1 = time.monotonic()
                try:
                    me.run(name, src, timeout=cell_timeout)
                except AssertionError as e:
                    if not (must_raise and str(e).startswith(f"in {name}'s kernel")):
                        raise
                else:
                    if must_raise:
                        raise RuntimeError("the cell was tagged raises-exception and raised nothing")
                out["cells"][(ch, i)] = time.monotonic() - t1
            out["chapters"][ch] = time.monotonic() - t0
    except BaseException as e:  # noqa: BLE001 (every failure of a student is counted, whatever it is)
        last = [ln for ln in str(e).splitlines() if ln.strip()]
        out["failed"] = f"{step}: {type(e).__name__}: {last[-1][:200] if last else ''}"
        print(f"  {name}: FAILED at {out['failed']}", flush=True)
        return
    print(f"  {name}: spawn {out['spawn_s']:.1f} s, "
          + ", ".join(f"ch{c} {s:.0f} s" for c, s in out["chapters"].items()), flush=True)


# --- what the machine holds ------------------------------------------------------------------------
def memory(hub: hf.Hub, names: "list[str]") -> "tuple[dict, int]":
    """PSS per student by part (server, kernel, postgres, other), and the hub's own (the hub's
    process tree without the students' processes)."""
    per = {}
    uids = set()
    for name in names:
        parts = {"server": 0, "kernel": 0, "postgres": 0, "other": 0, "n": 0}
        with contextlib.suppress(KeyError):
            uids.add(hub.uid(name))
        for p in hub.processes(name):
            parts[kind(p)] += pss(p)
            parts["n"] += 1
        parts["total"] = sum(parts[k] for k in ("server", "kernel", "postgres", "other"))
        per[name] = parts
    own = 0
    with contextlib.suppress(psutil.Error):
        top = psutil.Process(hub.proc.pid)
        for p in [top, *top.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                if p.uids().real not in uids:
                    own += pss(p)
    with contextlib.suppress(OSError, ValueError, psutil.Error):  # the proxy, if it left the hub's tree
        chp = psutil.Process(int((hub.root / "hub" / "jupyterhub-proxy.pid").read_text()))
        if chp.ppid() != hub.proc.pid:
            own += pss(chp)
    return per, own


def cgroup_stats(hub: hf.Hub, name: str) -> dict:
    """The student's cgroup (v1) peak memory, times it hit its limit, and CPU throttling."""
    out = {}
    try:
        lines = Path(f"/proc/{hub.proc.pid}/cgroup").read_text().splitlines()
    except OSError:
        return out
    where = {ctl: path for _, ctls, path in (ln.split(":", 2) for ln in lines) for ctl in ctls.split(",")}
    leaf = f"pglab-{hub.unix(name)}"
    mem = Path("/sys/fs/cgroup/memory") / where.get("memory", "/").lstrip("/") / leaf
    cpu = Path("/sys/fs/cgroup/cpu") / where.get("cpu", "/").lstrip("/") / leaf
    with contextlib.suppress(OSError, ValueError):
        out["peak"] = int((mem / "memory.max_usage_in_bytes").read_text())
        out["failcnt"] = int((mem / "memory.failcnt").read_text())
    with contextlib.suppress(OSError, ValueError):
        stat = dict(ln.split() for ln in (cpu / "cpu.stat").read_text().splitlines())
        out["throttled_s"] = int(stat.get("throttled_time", 0)) / 1e9
    return out


def leftovers(hub: hf.Hub, names: "list[str]", uids: "dict[str, int]") -> "list[str]":
    """What a student still has on the machine: processes of their user, port claims of their lab
    home."""
    left = []
    by_uid = {u: n for n, u in uids.items()}
    for p in psutil.process_iter(["uids", "name"]):
        with contextlib.suppress(psutil.Error, TypeError):
            if p.info["uids"].real in by_uid:
                left.append(f"{by_uid[p.info['uids'].real]}: process {p.pid} {p.info['name']}")
    claims = Path(os.environ.get("LAB_PORT_CLAIMS") or hub.root / "port-claims")
    homes = {str(hub.lab_home(n)) for n in names}
    for f in sorted(claims.glob("*.json")) if claims.is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            owner = json.loads(f.read_text()).get("lab_home", "")
            if any(owner == h or owner.startswith(h + "/") for h in homes):
                left.append(f"port claim {f.name} of {owner}")
    return left


# --- one class of N -------------------------------------------------------------------------------
def one_class(n: int, ch05_share: float, cell_timeout: float) -> dict:
    root = Path(tempfile.mkdtemp(prefix="pglab-bench-class-", dir="/var/tmp"))
    (root / "hub-cwd").mkdir()
    prefix = f"pgb{uuid.uuid4().hex[:4]}-"
    names = [f"s{i:02d}" for i in range(1, n + 1)]
    n05 = max(1, math.ceil(n * ch05_share)) if ch05_share > 0 else 0
    res = {"n": n, "n05": n05, "load_before": os.getloadavg()[0]}
    base = used_memory()
    try:
        hub = hf._start_hub(root, prefix)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    sampler = Sampler()
    sampler.start()
    uids: "dict[str, int]" = {}
    try:
        print(f"\nN = {n}: hub at {hub.url}, class root {root}, {n05} of them also run chapter 05", flush=True)
        go = threading.Barrier(n)
        outs = [{} for _ in names]
        threads = [threading.Thread(target=student, daemon=True,
                                    args=(hub, name, ["01", "05"] if i < n05 else ["01"], cell_timeout, go, outs[i]))
                   for i, name in enumerate(names)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        res["wall_s"] = time.monotonic() - t0
        res["students"] = outs
        for name in names:
            with contextlib.suppress(KeyError):
                uids[name] = hub.uid(name)
        # every cluster still up: what each student holds
        res["per"], res["hub_pss"] = memory(hub, names)
        res["cgroups"] = {name: cgroup_stats(hub, name) for name in names}
        res["peak_used"] = sampler.peak - base
        res["load_after_run"] = os.getloadavg()[0]
        res["held"] = leftovers(hub, names, uids)  # what the check below sees while every cluster is up
        # the hub stops every server; then nothing of the students may be left
        stops = {}

        def stop(name):
            with contextlib.suppress(Exception):
                if hub.server(name) is not None:
                    stops[name] = hub.stop(name, timeout=180)

        ts = [threading.Thread(target=stop, args=(name,), daemon=True) for name in names]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        res["stop_s"] = list(stops.values())
        res["left"] = leftovers(hub, names, uids)
        if res["left"]:
            time.sleep(10)
            res["left_after_10s"] = leftovers(hub, names, uids)
    finally:
        sampler.done.set()
        hf._stop_hub(hub)
    # the teardown removed every student's user and the class root
    gone = []
    for name in names:
        with contextlib.suppress(KeyError):
            pwd.getpwnam(hub.unix(name))
            gone.append(f"user {hub.unix(name)}")
    if root.exists():
        gone.append(f"class root {root}")
    res["after_teardown"] = gone + leftovers(hub, names, uids)
    res["load_after"] = os.getloadavg()[0]
    return res


def summarize(r: dict) -> dict:
    st = r["students"]
    ok = [s for s in st if not s.get("failed")]
    spawn = [s["spawn_s"] for s in st if "spawn_s" in s]
    ch01 = [s["chapters"]["01"] for s in st if "01" in s.get("chapters", {})]
    ch05 = [s["chapters"]["05"] for s in st if "05" in s.get("chapters", {})]
    tot = [p["total"] / MB for p in r["per"].values()]
    only01 = [r["per"][s["name"]]["total"] / MB for s in ok if "05" not in s["chapters"]]
    with05 = [r["per"][s["name"]]["total"] / MB for s in ok if "05" in s["chapters"]]
    parts = {k: statistics.median([p[k] / MB for p in r["per"].values()]) for k in ("server", "kernel", "postgres",
                                                                                   "other")}
    cg = [c["peak"] / MB for c in r["cgroups"].values() if "peak" in c]
    return dict(
        n=r["n"], ok=len(ok), failed=len(st) - len(ok), spawn=spawn, ch01=ch01, ch05=ch05, tot=tot,
        only01=only01, with05=with05, parts=parts, cg=cg,
        failcnt=sum(c.get("failcnt", 0) for c in r["cgroups"].values()),
        throttled=sum(c.get("throttled_s", 0) for c in r["cgroups"].values()),
        total=(sum(tot) + r["hub_pss"] / MB), hub=r["hub_pss"] / MB, peak=r["peak_used"] / MB,
        stop=r["stop_s"], left=len(r["left"]),
        held=(sum(1 for x in r["held"] if ": process " in x), sum(1 for x in r["held"] if x.startswith("port claim"))),
        left10=len(r.get("left_after_10s", r["left"])),
        teardown=len(r["after_teardown"]), wall=r["wall_s"],
        load=(r["load_before"], r["load_after_run"], r["load_after"]),
        failures=[s["failed"] for s in st if s.get("failed")], left_list=r["left"] + r["after_teardown"],
        cells={k: statistics.median([s["cells"][k] for s in st if k in s.get("cells", {})])
               for k in {k for s in st for k in s.get("cells", {})}})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", default="1,10,30", help="class sizes, run one after the other")
    ap.add_argument("--ch05-share", type=float, default=0.2,
                    help="share of the students who also run chapter 05 (at least one; 0: none)")
    ap.add_argument("--cell-timeout", type=float, default=300, help="seconds a cell may run (nbval's, here 300)")
    args = ap.parse_args()
    try:
        sizes = [int(x) for x in args.students.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--students {args.students!r}: give class sizes as whole numbers, e.g. 1,10,30")
    if not sizes or min(sizes) < 1:
        ap.error("--students: give at least one class size of 1 or more, e.g. 1,10,30")
    why = hf.hub_unavailable()
    if why:
        print(f"bench/classroom.py cannot run here: {why}", file=sys.stderr)
        return 2
    # a kill (SIGTERM) unwinds like Ctrl-C, so the hub, the students' servers and users are removed
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    print(f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB; load average "
          f"{os.getloadavg()[0]:.2f}; chapter 01: {len(cells(CHAPTERS['01']))} cells, chapter 05: "
          f"{len(cells(CHAPTERS['05']))} cells; per student: 1 GiB / 1 CPU (the hub tier's limits)", flush=True)
    t_all = time.perf_counter()
    results = []
    for n in sizes:
        results.append(summarize(one_class(n, args.ch05_share, args.cell_timeout)))
        s = results[-1]
        for f in s["failures"]:
            print(f"  N={n} failure: {f}")
        for left in s["left_list"]:
            print(f"  N={n} left: {left}")

    rows = []
    for s in results:
        rows.append((s["n"], f"{s['failed']}", f"{fmt(pct(s['spawn'], .5))}/{fmt(pct(s['spawn'], .95))}",
                     f"{fmt(pct(s['ch01'], .5), '.0f')}/{fmt(pct(s['ch01'], .95), '.0f')}",
                     f"{fmt(pct(s['ch05'], .5), '.0f')}/{fmt(pct(s['ch05'], .95), '.0f')} ({len(s['ch05'])})",
                     f"{fmt(pct(s['tot'], .5), '.0f')}/{fmt(max(s['tot'], default=None), '.0f')}",
                     f"{s['total']:.0f}", f"{s['peak']:.0f}", f"{fmt(max(s['cg'], default=None), '.0f')}",
                     f"{fmt(pct(s['stop'], .5))}/{fmt(max(s['stop'], default=None))}",
                     f"{s['held'][0]}/{s['held'][1]}", f"{s['left']}", f"{s['wall']:.0f}",
                     "/".join(f"{x:.1f}" for x in s["load"])))
    print_grid(("N", "failed", "spawn s p50/p95", "ch01 s p50/p95", "ch05 s p50/p95 (n)", "PSS MB/student p50/max",
                "total PSS MB", "used +MB peak", "cgroup peak MB max", "stop s p50/max", "up: procs/claims", "left",
                "wall s", "load before/after run/end"), rows)
    print_grid(("N", "server MB", "kernel(s) MB", "postgres MB", "other MB", "01 only MB max", "01+05 MB max",
                "hub+proxy+services MB", "hit mem limit", "CPU throttled s"),
               [(s["n"], *(f"{s['parts'][k]:.0f}" for k in ("server", "kernel", "postgres", "other")),
                 fmt(max(s["only01"], default=None), ".0f"), fmt(max(s["with05"], default=None), ".0f"),
                 f"{s['hub']:.0f}", s["failcnt"], f"{s['throttled']:.1f}") for s in results])
    print("(per-part columns: medians over the students; PSS with every student's cluster up after the "
          "chapter; 'left': processes or port claims of a student right after the hub stopped every server; "
          "'up': what the same check saw with every cluster up)")

    # where the time goes: the slowest cells of the largest class, against the smallest's
    small, large = results[0], results[-1]
    if len(results) > 1 and large["cells"]:
        top = sorted(large["cells"], key=large["cells"].get, reverse=True)[:8]
        print_grid(("cell (median s)", f"N={small['n']}", f"N={large['n']}", "ratio", "code"),
                   [(f"ch{ch} #{i}", fmt(small["cells"].get((ch, i))), fmt(large["cells"][(ch, i)]),
                     fmt(large["cells"][(ch, i)] / small["cells"][(ch, i)] if small["cells"].get((ch, i)) else None),
                     cells(CHAPTERS[ch])[i][0].strip().splitlines()[0][:60]) for ch, i in top])

    # the knee: the first N whose chapter-01 median is more than twice that of the smallest class
    ref = results[0]
    knee = None
    if pct(ref["ch01"], .5):
        for s in results[1:]:
            if pct(s["ch01"], .5) is None or pct(s["ch01"], .5) > 2 * pct(ref["ch01"], .5):
                knee = s["n"]
                break
    target = next((s for s in results if s["n"] == TARGET_N), None)
    big = target or results[-1]
    one, two = max(big["only01"], default=None), max(big["with05"], default=None)
    table = [
        (f"class size measured (target N={TARGET_N})", f"{big['n']}", f"{TARGET_N}", big["n"] >= TARGET_N),
        (f"N={big['n']}: failures", f"{big['failed']}", "0", big["failed"] == 0),
        (f"N={big['n']}: PSS per student, one kernel (01), max", f"{fmt(one)} MB", f"<= {TARGET_MB} MB",
         one is not None and one <= TARGET_MB),
        (f"N={big['n']}: PSS per student, two kernels (01+05), max", f"{fmt(two)} MB",
         f"<= {TARGET_MB} MB", None if two is None else two <= TARGET_MB),
        (f"N={big['n']}: left after the hub stopped every server", f"{big['left']}", "0", big["left"] == 0),
        (f"N={big['n']}: left after the teardown", f"{big['teardown']}", "0", big["teardown"] == 0),
    ]
    for s in results:
        if pct(s["ch01"], .5) and pct(ref["ch01"], .5):
            table.append((f"N={s['n']}: ch01 p50 / N={ref['n']}'s", f"{pct(s['ch01'], .5) / pct(ref['ch01'], .5):.2f}",
                          "", None))
    table.append(("knee (first N with ch01 p50 > 2x)", "none" if knee is None else f"N={knee}", "", None))
    print_table(table, f"measure ({time.perf_counter() - t_all:.0f} s in all)")
    return 0 if all(ok for *_, ok in table if ok is not None) else 1


if __name__ == "__main__":
    sys.exit(main())
