"""pgAdmin 4's image for compose's ``pgadmin`` service where dpage/pgadmin4 cannot be pulled:
compose/pgadmin.Dockerfile on the lab's base, the same contract (variables, /pgadmin4/servers.json,
port 80) as the official image.  The compose tier sets ``LAB_PGADMIN_IMAGE`` to it.

As the app's image (app_image.py): the Python packages are built as wheels on the host and served
to the build on 127.0.0.1; the build runs with ``--network host`` for Debian's python3, and pip
inside it then needs no index, proxy or CA of its own.  The build context is compose/ (the
Dockerfile copies only its entrypoint from there).
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .engine import PrivateDockerd
from .host import DockerdError, docker_cli, say
from .images import BASE_IMAGE, base_key, cached_image, default_cache_dir, ensure_images, inputs_key, run_logged, serve_dir

PGADMIN_IMAGE = "pglab/pgadmin4:test"
PGADMIN_DOCKERFILE = "compose/pgadmin.Dockerfile"
PGADMIN_INPUTS = (PGADMIN_DOCKERFILE, "compose/pgadmin-entrypoint.sh")
PGADMIN_PYTHON = (3, 11)  # Debian bookworm's python3, which the image gets on the lab's base


def pgadmin_key(repo_root, base: str) -> str:
    """The pgAdmin image's key: its Dockerfile (which names the packages) and its entrypoint."""
    return inputs_key("pgadmin", repo_root, base, PGADMIN_INPUTS)


def pgadmin_packages(repo_root) -> "list[str]":
    """The requirements the Dockerfile installs: its ``ARG PGADMIN_PACKAGES="..."`` default."""
    text = (Path(repo_root) / PGADMIN_DOCKERFILE).read_text()
    m = re.search(r'^ARG PGADMIN_PACKAGES="([^"]+)"', text, re.M)
    if not m:
        raise DockerdError(f"{PGADMIN_DOCKERFILE} has no ARG PGADMIN_PACKAGES=\"...\" line")
    return m.group(1).split()


def _wheels(repo_root: Path, dest: Path, log_file: Path) -> None:
    """Wheels of pgAdmin 4 and gunicorn (and their dependencies) for the image's Python, by the
    host's pip (its index, proxy and certificates)."""
    reqs = pgadmin_packages(repo_root)
    if sys.version_info[:2] == PGADMIN_PYTHON:
        cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", dest, *reqs]
    else:  # binary wheels for the image's interpreter, not ours
        machine = os.uname().machine
        plats = [f"manylinux_2_{n}_{machine}" for n in range(17, 37)] + [f"manylinux2014_{machine}"]
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
               "--python-version", "%d.%d" % PGADMIN_PYTHON, *[a for pl in plats for a in ("--platform", pl)],
               "--dest", dest, *reqs]
    run_logged(cmd, log_file, "building pgAdmin's wheels on the host (pip)", 1800)


def build_pgadmin(engine: PrivateDockerd, repo_root: Path, base: str, key: str, image: str = PGADMIN_IMAGE,
                  log=say) -> None:
    """``docker build -f compose/pgadmin.Dockerfile --build-arg BASE_IMAGE=<base> --network host compose``,
    pip installing only from wheels built on the host (no index from inside the build)."""
    work = Path(tempfile.mkdtemp(prefix="pgadmin-build-", dir=engine.root))
    wheels, build_log = work / "wheels", work / "build.log"
    try:
        t = time.monotonic()
        log("building pgAdmin's Python wheels on the host")
        _wheels(repo_root, wheels, build_log)
        log(f"wheels ready in {time.monotonic() - t:.1f} s; building {image} from {PGADMIN_DOCKERFILE} on {base}")
        t = time.monotonic()
        with serve_dir(wheels) as url:
            run_logged([docker_cli() or "docker", "build", "-q", "--network", "host",
                        "-f", Path(repo_root) / PGADMIN_DOCKERFILE,
                        "--build-arg", f"BASE_IMAGE={base}",
                        "--build-arg", f"PIP_ARGS=--no-index --find-links {url}",
                        "--label", f"org.pglab.pgadmin.key={key}", "-t", image, Path(repo_root) / "compose"],
                       build_log, f"building {image}", 1800, env=dict(engine.env(), DOCKER_BUILDKIT="0"))
        log(f"built {image} in {time.monotonic() - t:.1f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ensure_pgadmin_image(engine: PrivateDockerd, repo_root, cache_dir=None, *, log=None) -> str:
    """pgAdmin's image in ``engine`` (built on the base of ``ensure_images``, which it calls
    first), from the cache when possible; returns its name (``PGADMIN_IMAGE``).

    Cache: ``pgadmin-<key>.tar`` beside the node images; the key hashes the base key,
    compose/pgadmin.Dockerfile and compose/pgadmin-entrypoint.sh.  The tar holds the pgAdmin
    image alone; ``docker load`` skips the base's layers, already loaded.
    """
    log = log or say
    repo_root = Path(repo_root).resolve()
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    engine.images = {**engine.images, **ensure_images(engine, repo_root, cache, log=log)}
    key = pgadmin_key(repo_root, base_key())
    cached_image(engine, cache, PGADMIN_IMAGE, "org.pglab.pgadmin.key", key, "pgadmin",
                 lambda stale: build_pgadmin(engine, repo_root, BASE_IMAGE, key, log=log), log)
    engine.images["pgadmin"] = PGADMIN_IMAGE
    return PGADMIN_IMAGE
