"""Compose backend bring-up benchmark, beside the local backend, in the same run.

    .venv/bin/python bench/compose.py [--runs 3]

Needs what the compose test tier needs (root, docker.io, docker-compose, debootstrap): it
starts a private Docker engine (tests/engine/) and loads the cached node image (building
it the first time).  Prints medians of --runs runs of
  lab.up(replicas=1, backend=...)  from nothing to the replica streaming
  down(wipe=True)                  (compose: down -v)
for the compose and the local backends, and their ratio.  Target (issue 3): compose up <= 8 s.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # lab, and the engine (tests/engine/)

import lab  # noqa: E402
from table import print_table  # noqa: E402 (bench/table.py)
from engine import PrivateDockerd, availability, ensure_images  # noqa: E402 (tests/engine/)


def one(backend: str) -> tuple[float, float]:
    home = Path(tempfile.mkdtemp(prefix="pglab-bench-compose-"))
    os.chmod(home, 0o755)
    try:
        t0 = time.perf_counter()
        c = lab.up(replicas=1, home=home / "lab", quiet=True, backend=backend)
        t_up = time.perf_counter() - t0
        t0 = time.perf_counter()
        c.down(wipe=True)
        return t_up, time.perf_counter() - t0
    finally:
        lab.down(wipe=True, home=home / "lab")
        shutil.rmtree(home, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    ok, why = availability()
    if not ok:
        print(f"compose benchmark skipped: {why}")
        return 0
    t0 = time.perf_counter()
    with PrivateDockerd() as engine:
        images = ensure_images(engine, REPO)
        t_engine = time.perf_counter() - t0
        os.environ.update(DOCKER_HOST=engine.host, LAB_NODE_IMAGE=images["node"])
        results = {"compose": ([], []), "local": ([], [])}
        one("compose")  # first container start warms the page cache; not counted
        for i in range(args.runs):
            for backend in ("compose", "local"):
                up, down = one(backend)
                results[backend][0].append(up)
                results[backend][1].append(down)
            print(f"  run {i + 1}: compose up {results['compose'][0][-1]:.2f}s down -v "
                  f"{results['compose'][1][-1]:.2f}s | local up {results['local'][0][-1]:.2f}s", flush=True)
    med = statistics.median
    cu, cd = med(results["compose"][0]), med(results["compose"][1])
    lu, ld = med(results["local"][0]), med(results["local"][1])
    rows = [
        ("engine start + images ready (not in the runs)", f"{t_engine:.1f} s", "", None),
        ("compose: up(replicas=1) -> streaming", f"{cu:.2f} s", "<= 8 s", cu <= 8),
        ("compose: down(wipe=True) (down -v)", f"{cd:.2f} s", "", None),
        ("local:   up(replicas=1) -> streaming", f"{lu:.2f} s", "reference", None),
        ("local:   down(wipe=True)", f"{ld:.2f} s", "", None),
        ("compose up / local up", f"{cu / lu:.1f}", "", None),
    ]
    print_table(rows, f'measure (median of {args.runs})')
    return 0


if __name__ == "__main__":
    sys.exit(main())
