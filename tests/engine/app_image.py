"""The crypto app's image (compose's web-app): compose/app.Dockerfile on the lab's base.

Its Python packages are built as wheels on the host and served to the build on 127.0.0.1: the
build runs with ``--network host`` for Debian's python3, and pip inside it then needs no index,
proxy or CA of its own.
"""
from __future__ import annotations

from pathlib import Path

from .engine import PrivateDockerd
from .host import say
from .images import (BASE_IMAGE, base_key, build_on_host_wheels, cached_image, default_cache_dir, ensure_images,
                     host_wheels, inputs_key)

APP_IMAGE = "pglab/crypto-app:test"
APP_INPUTS = ("compose/app.Dockerfile", "compose/app-requirements.txt", "compose/app-entrypoint.sh",
              ".dockerignore", "app")
APP_PYTHON = (3, 11)  # Debian bookworm's python3, which the image gets on the lab's base


def app_key(repo_root, base: str) -> str:
    """The app image's key: its Dockerfile, requirements, entrypoint, .dockerignore and app/."""
    return inputs_key("app", repo_root, base, APP_INPUTS)


def build_app(engine: PrivateDockerd, repo_root: Path, base: str, key: str, image: str = APP_IMAGE,
              log=say) -> None:
    """``docker build -f compose/app.Dockerfile --build-arg BASE_IMAGE=<base> --network host``,
    pip installing only from wheels of compose/app-requirements.txt built on the host."""
    req = Path(repo_root) / "compose" / "app-requirements.txt"
    build_on_host_wheels(engine, what="the app", wheels=lambda dest, f: host_wheels(["-r", req], dest, f, APP_PYTHON,
                                                                                   "the app"),
                         dockerfile=Path(repo_root) / "compose" / "app.Dockerfile", context=Path(repo_root),
                         build_args={"BASE_IMAGE": base}, label="org.pglab.app.key", key=key, image=image, log=log)


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
