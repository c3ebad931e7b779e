"""``PYTHONPATH=tests python -m engine [--cold] [--reap] [--cache DIR]``: start an engine, make
the images ready, stop it, print the times (or only reap stale engines).

``PYTHONPATH=tests python -m engine --serve FILE``: start an engine with every image, write
``LAB_TEST_ENGINE_ROOT=<root>`` to FILE and keep it running for test sessions given that variable,
until SIGTERM or SIGINT (scripts/test-all.sh; tests/engine/shared.py)."""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .engine import PrivateDockerd, reap_stale
from .host import availability
from .images import ensure_images
from .shared import serve

REPO = Path(__file__).resolve().parents[2]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine", description=__doc__)
    p.add_argument("--reap", action="store_true", help="only tear down engines whose owner died")
    p.add_argument("--cold", action="store_true", help="ignore the image cache (uses a temporary one)")
    p.add_argument("--cache", help="image cache directory")
    p.add_argument("--repo", default=str(REPO))
    p.add_argument("--serve", metavar="FILE", help="keep an engine for test sessions; its root goes to FILE")
    args = p.parse_args(argv)
    if args.reap:
        print(f"reaped {len(reap_stale())} stale engine(s)")
        return 0
    ok, why = availability()
    if not ok:
        print(f"unavailable: {why}", file=sys.stderr)
        return 3 if args.serve else 1
    if args.serve:
        return serve(Path(args.serve).absolute(), args.repo)
    cold_dir = tempfile.mkdtemp(prefix="pglab-cold-cache-", dir="/var/tmp") if args.cold else None
    try:
        t0 = time.monotonic()
        eng = PrivateDockerd().start()
        t1 = time.monotonic()
        try:
            eng.images = ensure_images(eng, args.repo, cold_dir or args.cache)
            t2 = time.monotonic()
        finally:
            t3 = time.monotonic()
            eng.stop()
            t4 = time.monotonic()
        left = eng.leftovers()
        print(f"engine start {t1 - t0:.2f} s | images ready {t2 - t1:.1f} s | start+images {t2 - t0:.1f} s "
              f"| stop {t4 - t3:.2f} s | leftovers: {left or 'none'}")
        return 1 if left else 0
    finally:
        if cold_dir:
            shutil.rmtree(cold_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
