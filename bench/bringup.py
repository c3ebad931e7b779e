"""Bring-up benchmark: how long lab.up() takes, against a bare reference, and what it costs in memory.

    .venv/bin/python bench/bringup.py [--runs 5]

Prints one table (medians of --runs runs, all measured in this process, same binaries):
  (a)  lab.up(replicas=1) from nothing to every replica streaming (template cached)
  (a0) the same with an empty template cache (pays initdb, as a first run does)
  (b)  a bare reference: initdb -> pg_ctl start -> pg_basebackup -R -X stream -> pg_ctl start
       -> streaming, with the same binaries, as the same server user
  a/b, down() time, and the memory of a running primary + 2 replicas (RSS summed over
  every server process, and PSS, which counts shared buffers once).
Targets (issue 2): a/b <= 1.2; median (a) <= 1.5 s; primary + 2 replicas <= 200 MB RSS.
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg2  # noqa: E402

import lab  # noqa: E402
from table import print_table  # noqa: E402 (bench/table.py)
from lab.system import binaries, ports  # noqa: E402
from lab.backends.local import postmaster_pid  # noqa: E402
from lab.system.osuser import server_user  # noqa: E402


def scratch(prefix: str) -> Path:
    """A directory the server user can reach (pytest-style /tmp/… 0700 dirs would not do)."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(d, 0o755)
    return d


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_lab(cold: bool) -> tuple[float, float]:
    home = scratch("pglab-bench-")
    env_cache = os.environ.get("LAB_CACHE")
    if cold:
        os.environ["LAB_CACHE"] = str(home / "cache")
    try:
        t_up = timed(lambda: lab.up(replicas=1, home=home / "lab", quiet=True))
        c = lab.attach(home / "lab")
        t_down = timed(c.down)
        c.down(wipe=True)
    finally:
        if cold:
            if env_cache is None:
                os.environ.pop("LAB_CACHE", None)
            else:
                os.environ["LAB_CACHE"] = env_cache
        shutil.rmtree(home, ignore_errors=True)
    return t_up, t_down


def run_reference() -> float:
    """initdb -> start -> pg_basebackup -> start -> streaming, nothing else."""
    bins, user = binaries.find(), server_user()
    root = scratch("pglab-bench-ref-")
    user.chown(root, recursive=False)
    pw = secrets.token_urlsafe(12)
    pwfile = root / "pw"
    pwfile.write_text(pw + "\n")
    user.chown(pwfile, recursive=False)
    p1, p2 = ports.claim_free_ports(2, str(root))
    env = bins.env()
    env.update(PGPASSWORD=pw, HOME="/tmp")
    kw = dict(env=env, check=True, capture_output=True, **user.run_kwargs())
    primary, replica = root / "p", root / "r"
    opts = "-c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c port={}"
    t0 = time.perf_counter()
    try:
        subprocess.run(bins.cmd("initdb", "-D", primary, "-U", "admin", "--auth=scram-sha-256",
                                f"--pwfile={pwfile}", "-E", "UTF8", "--no-locale", "--no-sync"), **kw)
        subprocess.run(bins.cmd("pg_ctl", "start", "-D", primary, "-l", root / "p.log", "-w", "-s",
                                "-o", opts.format(p1)), **kw)
        subprocess.run(bins.cmd("pg_basebackup", "-D", replica, "-R", "-X", "stream", "--checkpoint=fast",
                                "-h", "127.0.0.1", "-p", p1, "-U", "admin", "-d", "application_name=r"), **kw)
        subprocess.run(bins.cmd("pg_ctl", "start", "-D", replica, "-l", root / "r.log", "-w", "-s",
                                "-o", opts.format(p2)), **kw)
        conn = psycopg2.connect(host="127.0.0.1", port=p1, user="admin", password=pw, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            while True:
                cur.execute("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
                if cur.fetchone()[0] == 1:
                    break
                time.sleep(0.005)
        conn.close()
        elapsed = time.perf_counter() - t0
    finally:
        for d in (replica, primary):
            if (d / "postmaster.pid").exists():
                subprocess.run(bins.cmd("pg_ctl", "stop", "-D", d, "-m", "immediate", "-s"),
                               env=env, capture_output=True, **user.run_kwargs())
        ports.release([p1, p2], str(root))
        shutil.rmtree(root, ignore_errors=True)
    return elapsed


def tree_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes of a postmaster and all its children (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    rss = pss = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
        except OSError:
            pass
    return rss, pss


def memory_of_three() -> tuple[float, float]:
    home = scratch("pglab-bench-mem-")
    try:
        c = lab.up(replicas=2, home=home / "lab", quiet=True)
        c.primary.execute("INSERT INTO test_replication (mensaje) SELECT 'x' FROM generate_series(1, 1000)")
        c.wait_replayed()
        time.sleep(0.5)
        rss = pss = 0
        for n in c.nodes:
            r, p = tree_memory(postmaster_pid(n.spec["pgdata"]))
            rss, pss = rss + r, pss + p
        c.down(wipe=True)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return rss / 2**20, pss / 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    bins = binaries.find()
    print(f"PostgreSQL {bins.version} ({bins.bindir}), {os.cpu_count()} cores, {args.runs} runs each, "
          f"server user {server_user().name}", flush=True)
    lab.up  # noqa: B018 (import check)
    run_lab(cold=False)  # make sure the template exists before timing the warm runs
    a, a0, b, downs = [], [], [], []
    for i in range(args.runs):  # interleaved, so drift in the machine hits all alike
        t_up, t_down = run_lab(cold=False)
        a.append(t_up)
        downs.append(t_down)
        a0.append(run_lab(cold=True)[0])
        b.append(run_reference())
        print(f"  run {i + 1}: a={t_up:.2f}s a0={a0[-1]:.2f}s b={b[-1]:.2f}s down={t_down:.3f}s", flush=True)
    rss, pss = memory_of_three()
    med = statistics.median
    rows = [
        ("(a)  lab.up(replicas=1) -> streaming", f"{med(a):.2f} s", "<= 1.5 s", med(a) <= 1.5),
        ("(a0) same, empty template cache", f"{med(a0):.2f} s", "", None),
        ("(b)  bare initdb/start/basebackup/start", f"{med(b):.2f} s", "reference", None),
        ("a / b", f"{med(a) / med(b):.2f}", "<= 1.2", med(a) / med(b) <= 1.2),
        ("a0 / b", f"{med(a0) / med(b):.2f}", "", None),
        ("down() of primary + 1 replica", f"{med(downs):.3f} s", "", None),
        ("RSS, primary + 2 replicas (sum)", f"{rss:.0f} MB", "<= 200 MB", rss <= 200),
        ("PSS, primary + 2 replicas", f"{pss:.0f} MB", "", None),
    ]
    print_table(rows, "measure (median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
