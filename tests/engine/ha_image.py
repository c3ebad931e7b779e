"""Chapter 08's HA image (compose/ha.Dockerfile: etcd, HAProxy, Patroni) on the node image.

Built like the app's image: Debian's packages by apt with ``--network host``, Patroni's Python
packages as wheels built on the host (its pip, index and certificates) and served to the build
on 127.0.0.1.  Cached as ``ha-<key>.tar`` beside the node images.
"""
from __future__ import annotations

from pathlib import Path

from .app_image import APP_PYTHON
from .engine import PrivateDockerd
from .host import say
from .images import (base_key, build_on_host_wheels, cached_image, default_cache_dir, ensure_images, host_wheels,
                     inputs_key, node_key)

HA_IMAGE = "pglab/postgres-ha:test"
HA_INPUTS = ("compose/ha.Dockerfile", "compose/ha-requirements.txt", "compose/ha", ".dockerignore")


def ha_key(repo_root, node: str) -> str:
    """The HA image's key: the node image's key, its Dockerfile, requirements, compose/ha/ and
    .dockerignore (master/ and replica/ are in the node key)."""
    return inputs_key("ha", repo_root, node, HA_INPUTS)


def build_ha(engine: PrivateDockerd, repo_root: Path, node_image: str, key: str, image: str = HA_IMAGE,
             log=say) -> None:
    """``docker build -f compose/ha.Dockerfile --build-arg NODE_IMAGE=<node image> --network host``,
    pip installing only from wheels of compose/ha-requirements.txt built on the host by this Python,
    which must be the image's (some of Patroni's dependencies have no binary wheel to download)."""
    req = Path(repo_root) / "compose" / "ha-requirements.txt"
    build_on_host_wheels(engine, what="Patroni", wheels=lambda dest, f: host_wheels(["-r", req], dest, f, APP_PYTHON,
                                                                                   "Patroni", binary_only_ok=False),
                         dockerfile=Path(repo_root) / "compose" / "ha.Dockerfile", context=Path(repo_root),
                         build_args={"NODE_IMAGE": node_image}, label="org.pglab.ha.key", key=key, image=image,
                         log=log)


def ensure_ha_image(engine: PrivateDockerd, repo_root, cache_dir=None, *, log=None) -> str:
    """The HA image in ``engine`` (on the node image of ``ensure_images``, called first), from the
    cache when possible; returns its name (``HA_IMAGE``).  The tar holds the HA image alone."""
    log = log or say
    repo_root = Path(repo_root).resolve()
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    engine.images = {**engine.images, **ensure_images(engine, repo_root, cache, log=log)}
    key = ha_key(repo_root, node_key(repo_root, base_key()))
    cached_image(engine, cache, HA_IMAGE, "org.pglab.ha.key", key, "ha",
                 lambda stale: build_ha(engine, repo_root, engine.images["node"], key, log=log), log)
    engine.images["ha"] = HA_IMAGE
    return HA_IMAGE
