"""Chapter 08's HA image (compose/ha.Dockerfile: etcd, HAProxy, Patroni) on the node image.

Built like the app's image: Debian's packages by apt with ``--network host``, Patroni's Python
packages as wheels built on the host (its pip, index and certificates) and served to the build
on 127.0.0.1.  Cached as ``ha-<key>.tar`` beside the node images.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from .app_image import APP_PYTHON
from .engine import PrivateDockerd
from .host import docker_cli, say
from .images import (base_key, cached_image, default_cache_dir, ensure_images, inputs_key, node_key, run_logged,
                     serve_dir)

HA_IMAGE = "pglab/postgres-ha:test"
HA_INPUTS = ("compose/ha.Dockerfile", "compose/ha-requirements.txt", "compose/ha", ".dockerignore")


def ha_key(repo_root, node: str) -> str:
    """The HA image's key: the node image's key, its Dockerfile, requirements, compose/ha/ and
    .dockerignore (master/ and replica/ are in the node key)."""
    return inputs_key("ha", repo_root, node, HA_INPUTS)


def build_ha(engine: PrivateDockerd, repo_root: Path, node_image: str, key: str, image: str = HA_IMAGE,
             log=say) -> None:
    work = Path(tempfile.mkdtemp(prefix="ha-build-", dir=engine.root))
    wheels, build_log = work / "wheels", work / "build.log"
    try:
        t = time.monotonic()
        if sys.version_info[:2] != APP_PYTHON:
            raise RuntimeError(f"the HA image's wheels are built by this Python ({sys.version_info[:2]}), "
                               f"which must be the image's ({APP_PYTHON})")
        run_logged([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", wheels,
                    "-r", Path(repo_root) / "compose" / "ha-requirements.txt"],
                   build_log, "building Patroni's wheels on the host (pip)", 1800)
        log(f"Patroni's wheels ready in {time.monotonic() - t:.1f} s; building {image} from compose/ha.Dockerfile")
        t = time.monotonic()
        with serve_dir(wheels) as url:
            run_logged([docker_cli() or "docker", "build", "-q", "--network", "host",
                        "-f", Path(repo_root) / "compose" / "ha.Dockerfile",
                        "--build-arg", f"NODE_IMAGE={node_image}",
                        "--build-arg", f"PIP_ARGS=--no-index --find-links {url}",
                        "--label", f"org.pglab.ha.key={key}", "-t", image, repo_root],
                       build_log, f"building {image}", 1800, env=dict(engine.env(), DOCKER_BUILDKIT="0"))
        log(f"built {image} in {time.monotonic() - t:.1f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


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
