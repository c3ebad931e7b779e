"""pgAdmin 4's image for compose's ``pgadmin`` service where dpage/pgadmin4 cannot be pulled:
compose/pgadmin.Dockerfile on the lab's base, the same contract (variables, /pgadmin4/servers.json,
port 80) as the official image.  The compose tier sets ``LAB_PGADMIN_IMAGE`` to it.

As the app's image (app_image.py): the Python packages are built as wheels on the host and served
to the build on 127.0.0.1; the build runs with ``--network host`` for Debian's python3, and pip
inside it then needs no index, proxy or CA of its own.  The build context is compose/ (the
Dockerfile copies only its entrypoint from there).
"""
from __future__ import annotations

import re
from pathlib import Path

from .engine import PrivateDockerd
from .host import DockerdError, say
from .images import (BASE_IMAGE, base_key, build_on_host_wheels, cached_image, default_cache_dir, ensure_images,
                     host_wheels, inputs_key)

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


def build_pgadmin(engine: PrivateDockerd, repo_root: Path, base: str, key: str, image: str = PGADMIN_IMAGE,
                  log=say) -> None:
    """``docker build -f compose/pgadmin.Dockerfile --build-arg BASE_IMAGE=<base> --network host compose``,
    pip installing only from wheels of pgAdmin 4 and gunicorn built on the host."""
    reqs = pgadmin_packages(repo_root)
    build_on_host_wheels(engine, what="pgAdmin", wheels=lambda dest, f: host_wheels(reqs, dest, f, PGADMIN_PYTHON,
                                                                                   "pgAdmin"),
                         dockerfile=Path(repo_root) / PGADMIN_DOCKERFILE, context=Path(repo_root) / "compose",
                         build_args={"BASE_IMAGE": base}, label="org.pglab.pgadmin.key", key=key, image=image,
                         log=log)


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
