"""The class's single-user image (hub/Dockerfile) on the lab's base: what each student's Jupyter
server runs in under DockerSpawner (hub/docker_spawner.py).

Built like the app's image: Debian's packages by apt with ``--network host`` (the base's mirror),
the Python packages as wheels built on the host (its pip, index and certificates) and served to
the build on 127.0.0.1.  Cached as ``hub-<key>.tar`` beside the node images, and the wheels as
``hub-wheels-<hash of the requirements>/``.  The key hashes the base key, the hub's JupyterHub
version and every file the image is built from (the lab itself included: a change to lab/
builds it again).

A rebuild starts from the previous image (``--cache-from``, loaded from its stale tar), so a change
to lab/ alone reuses the apt and dependency layers; the wheels are then served on the same port
as before (``WHEELS_PORT``, when free), because the build argument naming it is part of the
layers' cache key.
"""
from __future__ import annotations

import email.parser
import shutil
import sys
import tempfile
import time
import zipfile
from importlib.metadata import version as dist_version
from pathlib import Path

from packaging.specifiers import SpecifierSet

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

from lab.serverhook import JUPYTERLAB_LANGUAGES

from .app_image import APP_PYTHON
from .engine import PrivateDockerd
from .host import docker_cli, say
from .images import (BASE_IMAGE, _sha, base_key, cached_image, default_cache_dir, ensure_images, image_label,
                     inputs_key, load, run_logged, serve_dir)

HUB_IMAGE = "pglab/singleuser:test"
HUB_INPUTS = ("hub/Dockerfile", "hub/singleuser-entrypoint.sh", "hub/singleuser", ".dockerignore", "pyproject.toml",
              "lab", "app", "master", "replica", "notebooks")
IMAGE_PYTHON = "3.11.2"  # Debian bookworm's python3
# Below the lab's port range (lab/system/ports.py) and the kernel's ephemeral one.
WHEELS_PORT = 19431


def jupyterhub_version() -> str:
    """The hub's version (this environment's jupyterhub): the image's jupyterhub-singleuser matches it."""
    return dist_version("jupyterhub")


def hub_key(repo_root, base: str) -> str:
    """The image's key: the base key, the JupyterHub version and hub/Dockerfile, its entrypoint,
    hub/singleuser/ (the server's configuration), .dockerignore, pyproject.toml, lab/, app/, master/, replica/ and notebooks/."""
    return inputs_key("hub", repo_root, f"{base}-jupyterhub-{jupyterhub_version()}", HUB_INPUTS)


def language_packs() -> list[str]:
    """JupyterLab's language packs the image installs (hub/Dockerfile's LANGUAGE_PACKS, which
    tests/test_hub_language.py keeps equal to these): lab/serverhook.py's, for LAB_LANG."""
    return [pack for _, pack in JUPYTERLAB_LANGUAGES.values()]


def requirements(repo_root: Path) -> list[str]:
    """What the image's pip installs: the lab's dependencies (pyproject.toml), jupyterhub and
    JupyterLab's language packs."""
    project = tomllib.loads((Path(repo_root) / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], f"jupyterhub=={jupyterhub_version()}", *language_packs()]


def _too_new(wheels: Path) -> "dict[str, str]":
    """The wheels in ``wheels`` whose Requires-Python excludes the image's Python: {name: version}."""
    found = {}
    for whl in wheels.glob("*.whl"):
        with zipfile.ZipFile(whl) as z:
            meta = next((n for n in z.namelist() if n.endswith(".dist-info/METADATA")), None)
            text = z.read(meta).decode(errors="replace") if meta else ""
        msg = email.parser.Parser().parsestr(text, headersonly=True)
        spec = msg.get("Requires-Python")
        if spec and IMAGE_PYTHON not in SpecifierSet(spec):
            found[msg["Name"]] = msg["Version"]
    return found


def _newest_for_image(name: str, work: Path, log_file: Path) -> str:
    """The newest version of ``name`` whose wheel the image's Python accepts (pip's own choice)."""
    dest = work / f"probe-{name}"
    run_logged([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                "--python-version", IMAGE_PYTHON, "--dest", dest, name],
               log_file, f"finding a version of {name} for Python {IMAGE_PYTHON}", 600)
    whl = next(dest.glob("*.whl"))
    return whl.name.split("-")[1]


def _wheels(req: Path, dest: Path, log_file: Path) -> None:
    """Wheels of ``req`` and their dependencies, built by the host's pip (its index, proxy and
    certificates; sdists such as python-etcd built here too).  The host's Python may be a later
    3.11 than the image's: a wheel whose Requires-Python leaves the image's out is pinned to the
    newest version that takes it, and the resolution done again."""
    constraints = req.with_name("constraints.txt")
    pinned: dict[str, str] = {}
    for _ in range(4):
        constraints.write_text("".join(f"{n}=={v}\n" for n, v in pinned.items()))
        shutil.rmtree(dest, ignore_errors=True)
        run_logged([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", dest, "-r", req, "-c", constraints],
                   log_file, "building the single-user image's wheels on the host (pip)", 1800)
        too_new = _too_new(dest)
        if not too_new:
            return
        for name in too_new:
            pinned[name] = _newest_for_image(name, req.parent, log_file)
    raise RuntimeError(f"no versions of {sorted(pinned)} for Python {IMAGE_PYTHON} (the image's): see {log_file}")


def wheels_dir(repo_root: Path, cache: Path, work: Path, log=say) -> Path:
    """The image's wheels, kept in the cache (``hub-wheels-<hash of the requirements>``) between
    builds: a change to lab/ alone needs no pip run on the host (minutes here)."""
    reqs = requirements(repo_root)
    dest = cache / f"hub-wheels-{_sha('hub-wheels-v1', IMAGE_PYTHON, *reqs)}"
    if (dest / ".complete").is_file():
        return dest
    t = time.monotonic()
    log("building the single-user image's Python wheels on the host")
    req = work / "requirements.txt"
    req.write_text("\n".join(reqs) + "\n")
    tmp = work / "wheels"
    _wheels(req, tmp, work / "build.log")
    (tmp / ".complete").write_text("")
    shutil.rmtree(dest, ignore_errors=True)
    shutil.move(str(tmp), dest)
    for stale in cache.glob("hub-wheels-*"):
        if stale != dest:
            shutil.rmtree(stale, ignore_errors=True)
    log(f"wheels ready in {time.monotonic() - t:.1f} s")
    return dest


def build_hub(engine: PrivateDockerd, repo_root: Path, base: str, key: str, image: str = HUB_IMAGE,
              cache_from: str | None = None, cache: Path | None = None, log=say) -> None:
    """``docker build -f hub/Dockerfile --network host`` on ``base``, pip installing only from
    wheels built on the host (no index from inside the build)."""
    if sys.version_info[:2] != APP_PYTHON:
        raise RuntimeError(f"the single-user image's wheels are built by this Python ({sys.version_info[:2]}), "
                           f"which must be the image's ({APP_PYTHON}, Debian bookworm's python3)")
    work = Path(tempfile.mkdtemp(prefix="hub-build-", dir=engine.root))
    build_log = work / "build.log"
    try:
        wheels = wheels_dir(repo_root, cache or default_cache_dir(), work, log)
        log(f"building {image} from hub/Dockerfile on {base}")
        t = time.monotonic()
        extra = ["--cache-from", cache_from] if cache_from else []
        with serve_dir(wheels, WHEELS_PORT) as url:
            run_logged([docker_cli() or "docker", "build", "-q", "--network", "host", *extra,
                        "-f", Path(repo_root) / "hub" / "Dockerfile",
                        "--build-arg", f"BASE_IMAGE={base}",
                        "--build-arg", f"JUPYTERHUB_VERSION={jupyterhub_version()}",
                        "--build-arg", f"PIP_ARGS=--no-index --find-links {url}",
                        "--label", f"org.pglab.hub.key={key}", "-t", image, repo_root],
                       build_log, f"building {image}", 1800, env=dict(engine.env(), DOCKER_BUILDKIT="0"))
        log(f"built {image} in {time.monotonic() - t:.1f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ensure_hub_image(engine: PrivateDockerd, repo_root, cache_dir=None, *, log=None) -> str:
    """The single-user image in ``engine`` (on the base of ``ensure_images``, called first), from
    the cache when possible; returns its name (``HUB_IMAGE``).  The tar holds this image alone."""
    log = log or say
    repo_root = Path(repo_root).resolve()
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    engine.images = {**engine.images, **ensure_images(engine, repo_root, cache, log=log)}
    key = hub_key(repo_root, base_key())

    def build(stale):
        # the previous image (in the engine, or loaded from the newest stale tar) gives its layers
        previous = HUB_IMAGE if image_label(engine, HUB_IMAGE, "org.pglab.hub.key") else None
        for p in sorted(stale, key=lambda p: p.stat().st_mtime, reverse=True):
            if previous:
                break
            if load(engine, p, log):
                previous = HUB_IMAGE
        build_hub(engine, repo_root, BASE_IMAGE, key, cache_from=previous, cache=cache, log=log)

    cached_image(engine, cache, HUB_IMAGE, "org.pglab.hub.key", key, "hub", build, log)
    engine.images["hub"] = HUB_IMAGE
    return HUB_IMAGE
