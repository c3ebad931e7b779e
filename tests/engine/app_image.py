"""The crypto app's image (compose's web-app): compose/app.Dockerfile on the lab's base.

Its Python packages are built as wheels on the host and served to the build on 127.0.0.1: the
build runs with ``--network host`` for Debian's python3, and pip inside it then needs no index,
proxy or CA of its own.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .engine import PrivateDockerd
from .host import docker_cli, say
from .images import BASE_IMAGE, base_key, cached_image, default_cache_dir, ensure_images, inputs_key, run_logged, serve_dir

APP_IMAGE = "pglab/crypto-app:test"
APP_INPUTS = ("compose/app.Dockerfile", "compose/app-requirements.txt", "compose/app-entrypoint.sh",
              ".dockerignore", "app")
APP_PYTHON = (3, 11)  # Debian bookworm's python3, which the image gets on the lab's base


def app_key(repo_root, base: str) -> str:
    """The app image's key: its Dockerfile, requirements, entrypoint, .dockerignore and app/."""
    return inputs_key("app", repo_root, base, APP_INPUTS)


def _wheels(repo_root: Path, dest: Path, log_file: Path) -> None:
    """Wheels of compose/app-requirements.txt (and their dependencies) for the image's Python,
    by the host's pip (its index, proxy and certificates)."""
    req = Path(repo_root) / "compose" / "app-requirements.txt"
    if sys.version_info[:2] == APP_PYTHON:
        cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", dest, "-r", req]
    else:  # binary wheels for the image's interpreter, not ours
        machine = os.uname().machine
        plats = [f"manylinux_2_{n}_{machine}" for n in range(17, 37)] + [f"manylinux2014_{machine}"]
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
               "--python-version", "%d.%d" % APP_PYTHON, *[a for pl in plats for a in ("--platform", pl)],
               "--dest", dest, "-r", req]
    run_logged(cmd, log_file, "building the app's wheels on the host (pip)", 1800)


def build_app(engine: PrivateDockerd, repo_root: Path, base: str, key: str, image: str = APP_IMAGE,
              log=say) -> None:
    """``docker build -f compose/app.Dockerfile --build-arg BASE_IMAGE=<base> --network host``,
    pip installing only from wheels built on the host (no index from inside the build)."""
    work = Path(tempfile.mkdtemp(prefix="app-build-", dir=engine.root))
    wheels, build_log = work / "wheels", work / "build.log"
    try:
        t = time.monotonic()
        log("building the app's Python wheels on the host")
        _wheels(repo_root, wheels, build_log)
        log(f"wheels ready in {time.monotonic() - t:.1f} s; building {image} from compose/app.Dockerfile on {base}")
        t = time.monotonic()
        with serve_dir(wheels) as url:
            run_logged([docker_cli() or "docker", "build", "-q", "--network", "host",
                        "-f", Path(repo_root) / "compose" / "app.Dockerfile",
                        "--build-arg", f"BASE_IMAGE={base}",
                        "--build-arg", f"PIP_ARGS=--no-index --find-links {url}",
                        "--label", f"org.pglab.app.key={key}", "-t", image, repo_root],
                       build_log, f"building {image}", 1800, env=dict(engine.env(), DOCKER_BUILDKIT="0"))
        log(f"built {image} in {time.monotonic() - t:.1f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ensure_app_image(engine: PrivateDockerd, repo_root, cache_dir=None, *, log=None) -> str:
    """The crypto app's image in ``engine`` (built on the base of ``ensure_images``, which it
    calls first), from the cache when possible; returns its name (``APP_IMAGE``).

    Cache: ``app-<app key>.tar`` beside the node images; the key hashes the base key,
    compose/app.Dockerfile, app-requirements.txt, app-entrypoint.sh, .dockerignore and app/.
    The tar holds the app image alone; ``docker load`` skips the base's layers, already loaded.
    """
    log = log or say
    repo_root = Path(repo_root).resolve()
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    engine.images = {**engine.images, **ensure_images(engine, repo_root, cache, log=log)}
    key = app_key(repo_root, base_key())
    cached_image(engine, cache, APP_IMAGE, "org.pglab.app.key", key, "app",
                 lambda stale: build_app(engine, repo_root, BASE_IMAGE, key, log=log), log)
    engine.images["app"] = APP_IMAGE
    return APP_IMAGE
