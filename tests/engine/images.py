"""The lab's images in an engine: base (debootstrap + postgresql in a chroot, no container
networking needed) and node (compose/Dockerfile on top), cached as ``docker save`` tars.

The data-root is wiped at every stop, so images survive only as tars (see ``ensure_images``):
a ``docker load`` of a few seconds per engine start, and no state kept between runs.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from lab.system.home import cache_dir

from .engine import PrivateDockerd
from .host import SYS_PATH, DockerdError, debian_mirror, docker_cli, say, which
from .sweep import mounts_under, unmount_all

SUITE = "bookworm"
PG_MAJOR = "15"
BASE_IMAGE = f"pglab/postgres-base:{SUITE}-{PG_MAJOR}"
NODE_IMAGE = "pglab/postgres-node:test"
NODE_INPUTS = ("compose/Dockerfile", ".dockerignore", "master", "replica")

# The chroot recipe.  Its text is part of the base image's cache key: change it and the base
# is built again.  Runs with $ROOTFS set, as root on the host.
_BASE_RECIPE = r"""
set -eu
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
printf '#!/bin/sh\nexit 101\n' > "$ROOTFS/usr/sbin/policy-rc.d"
chmod 0755 "$ROOTFS/usr/sbin/policy-rc.d"
mkdir -p "$ROOTFS/etc/postgresql-common/createcluster.d"
echo 'create_main_cluster = false' > "$ROOTFS/etc/postgresql-common/createcluster.d/00-pglab-no-main.conf"
mount -t proc proc "$ROOTFS/proc"
trap 'umount "$ROOTFS/proc" 2>/dev/null || umount -l "$ROOTFS/proc" 2>/dev/null || true' EXIT
chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 \
    sh -c "apt-get update -q && apt-get install -y -q --no-install-recommends postgresql-$PG_MAJOR && apt-get clean"
chroot "$ROOTFS" /usr/lib/postgresql/$PG_MAJOR/bin/postgres --version
chroot "$ROOTFS" id postgres
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb \
       "$ROOTFS"/var/log/apt/* "$ROOTFS"/var/log/dpkg.log "$ROOTFS"/etc/resolv.conf
"""


# --------------------------------------------------------------------------------------------
# Cache keys and the cache

def _sha(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def base_key() -> str:
    return _sha("base-v1", SUITE, PG_MAJOR, _BASE_RECIPE)


def inputs_key(kind: str, repo_root, base: str, inputs) -> str:
    """Hash of the base key and of every file (path, executable bits, bytes) under ``inputs``
    (paths relative to ``repo_root``) that an image of ``kind`` ("node", "app") is built from."""
    repo_root = Path(repo_root)
    parts = [f"{kind}-v1", base]
    for rel in inputs:
        p = repo_root / rel
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else ([p] if p.is_file() else [])
        for f in files:
            if "__pycache__" in f.parts or f.suffix == ".pyc":
                continue
            parts += [str(f.relative_to(repo_root)), oct(f.stat().st_mode & 0o111), f.read_bytes()]
    return _sha(*parts)


def node_key(repo_root, base: str) -> str:
    """The node image's key: compose/Dockerfile, .dockerignore, master/ and replica/."""
    return inputs_key("node", repo_root, base, NODE_INPUTS)


def default_cache_dir(repo_root: Path | None = None) -> Path:
    """Beside the template cache (``~/.cache/pglab``, ``LAB_CACHE``), so clones share it;
    ``LAB_DOCKER_IMAGE_CACHE`` overrides."""
    return Path(os.environ.get("LAB_DOCKER_IMAGE_CACHE") or cache_dir() / "docker-images")


class FileLock:
    """An exclusive flock on ``path`` (one build per cache at a time, across processes)."""

    def __init__(self, path: Path, log=say):
        self.path, self.log = path, log

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.log(f"waiting for another build that holds {self.path}")
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


def image_label(engine: PrivateDockerd, image: str, label: str) -> str | None:
    r = engine.docker("image", "inspect", "--format", f'{{{{index .Config.Labels "{label}"}}}}', image,
                      check=False, timeout=60)
    return r.stdout.strip() if r.returncode == 0 else None


def load(engine: PrivateDockerd, tar: Path, log=say) -> bool:
    """``docker load`` a cached tar; a tar that does not load is removed (it gets rebuilt)."""
    t = time.monotonic()
    r = engine.docker("load", "-q", "-i", tar, check=False, timeout=900)
    if r.returncode != 0:
        log(f"could not load {tar.name} ({r.stderr.strip()[-300:]}): removing it")
        tar.unlink(missing_ok=True)
        return False
    log(f"loaded {tar.name} in {time.monotonic() - t:.1f} s")
    return True


def save(engine: PrivateDockerd, tar: Path, *images: str, log=say, on: "tuple[str, ...]" = ()) -> None:
    """``docker save`` to a temporary name, then renamed: a tar in the cache is always whole.
    ``on``: images always loaded before this tar (the lab's base and node images); the layers the
    saved image shares with them are left out of the tar (``docker load`` skips a layer it has, and
    then needs no file for it), so the app's tar does not hold the base's 400 MiB again."""
    t = time.monotonic()
    tmp = tar.with_name(f".{tar.name}.{os.getpid()}.tmp")
    slim = tar.with_name(f".{tar.name}.{os.getpid()}.slim")
    try:
        engine.docker("save", "-o", tmp, *images, timeout=900)
        have = [layers_of(engine, image) for image in on]
        if have and strip_layers(tmp, slim, [h for h in have if h]):
            os.replace(slim, tmp)
        os.replace(tmp, tar)
    finally:
        tmp.unlink(missing_ok=True)
        slim.unlink(missing_ok=True)
    log(f"saved {tar.name} ({tar.stat().st_size / 2**20:.0f} MiB) in {time.monotonic() - t:.1f} s")


def layers_of(engine: PrivateDockerd, image: str) -> "list[str]":
    """The image's layers (diff IDs, bottom first), or [] when the engine does not have it."""
    r = engine.docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", image, check=False, timeout=60)
    return json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip().startswith("[") else []


def strip_layers(src: Path, dst: Path, loaded: "list[list[str]]") -> "set[str]":
    """Copy the ``docker save`` tar ``src`` to ``dst`` without the layers every image in it shares
    (as its bottom layers) with one of the ``loaded`` layer lists; returns the layer directories
    left out (none: ``dst`` is not written).  The manifest and configs stay whole: ``docker load``
    finds those layers in the engine by their chain, so the tar loads wherever they are loaded."""
    with tarfile.open(src) as t:
        manifest = json.load(t.extractfile("manifest.json"))
        drop, keep = set(), set()
        for img in manifest:
            diff_ids = json.load(t.extractfile(img["Config"]))["rootfs"]["diff_ids"]
            shared = max((_common_prefix(diff_ids, have) for have in loaded), default=0)
            dirs = [path.rsplit("/", 1)[0] if path.endswith("/layer.tar") else path for path in img["Layers"]]
            drop.update(dirs[:shared])
            keep.update(dirs[shared:])
        drop -= keep
        if not drop:
            return set()
        with tarfile.open(dst, "w") as out:
            for member in t:
                if member.name in drop or member.name.split("/", 1)[0] in drop:
                    continue
                out.addfile(member, t.extractfile(member) if member.isfile() else None)
    return drop


def _common_prefix(a: list, b: list) -> int:
    n = 0
    while n < len(a) and n < len(b) and a[n] == b[n]:
        n += 1
    return n


def cached_image(engine: PrivateDockerd, cache: Path, image: str, label: str, key: str, prefix: str, build,
                 log=say) -> None:
    """``image`` in ``engine`` with ``label`` = ``key``: there already, else loaded from the cache's
    ``<prefix>-<key>.tar``, else built by ``build(stale)`` and saved there, after which the other
    ``<prefix>-*.tar`` (``stale``, the tars of earlier keys, which a build may load to reuse
    their layers) are removed.  Under the cache's lock: one build per cache at a time.  The tar
    leaves out the layers of the base and node images (see ``save``): load those first
    (``ensure_images``), as every caller does."""
    tar = cache / f"{prefix}-{key}.tar"
    t0 = time.monotonic()

    def have():
        return image_label(engine, image, label) == key

    if have():
        return  # loaded already: no need to wait for another image's build holding the lock
    with FileLock(cache / ".lock", log):
        if have() or (tar.is_file() and load(engine, tar, log) and have()):
            return
        stale = [p for p in cache.glob(f"{prefix}-*.tar") if p != tar]
        build(stale)
        save(engine, tar, image, log=log, on=(NODE_IMAGE, BASE_IMAGE))
        for p in stale:
            p.unlink(missing_ok=True)
        log(f"{image} ready in {time.monotonic() - t0:.1f} s")


@contextlib.contextmanager
def serve_dir(path: Path, port: int = 0):
    """An HTTP server on 127.0.0.1 listing ``path`` (pip's --find-links inside a build): on ``port``
    if it is free, else on any free port."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    handler = functools.partial(Quiet, directory=str(path))
    try:
        srv = ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError:
        srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/"
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)


# --------------------------------------------------------------------------------------------
# Builds

def run_logged(cmd, logfile: Path, what: str, timeout: float, env=None) -> None:
    """Run ``cmd`` with its output appended to ``logfile``; DockerdError with the log's end."""
    with open(logfile, "ab") as f:
        f.write(f"\n$ {shlex.join(map(str, cmd))}\n".encode())
        f.flush()
        r = subprocess.run(list(map(str, cmd)), stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           timeout=timeout, env=env)
    if r.returncode != 0:
        try:
            tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-25:])
        except OSError:
            tail = ""
        raise DockerdError(f"{what} failed ({r.returncode}); the end of its output:\n{tail}")


def host_wheels(reqs, dest: Path, log_file: Path, python: "tuple[int, int]", what: str,
                binary_only_ok: bool = True) -> None:
    """Wheels of ``reqs`` (pip's requirement arguments: names, or ``"-r", file``) and of their
    dependencies for an image whose Python is ``python`` (major, minor), by the host's pip (its
    index, proxy and certificates).  Built by this interpreter when it is that Python; else binary
    wheels are downloaded for it, which needs every package to have one (``binary_only_ok=False``:
    refuse instead, for requirements with a source-only package)."""
    if sys.version_info[:2] == tuple(python):
        cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", dest, *reqs]
    elif not binary_only_ok:
        raise DockerdError(f"{what}'s wheels are built by this Python ({sys.version_info[0]}.{sys.version_info[1]}), "
                           f"which must be the image's ({python[0]}.{python[1]})")
    else:  # binary wheels for the image's interpreter, not ours
        machine = os.uname().machine
        plats = [f"manylinux_2_{n}_{machine}" for n in range(17, 37)] + [f"manylinux2014_{machine}"]
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
               "--python-version", "%d.%d" % tuple(python), *[a for pl in plats for a in ("--platform", pl)],
               "--dest", dest, *reqs]
    run_logged(cmd, log_file, f"building {what}'s wheels on the host (pip)", 1800)


def build_on_host_wheels(engine: PrivateDockerd, *, what: str, wheels, dockerfile: Path, context: Path,
                         build_args: dict, label: str, key: str, image: str, log=say) -> None:
    """``docker build -f <dockerfile> --network host <context>`` with ``build_args``, pip installing
    only from the wheels that ``wheels(dest, log_file)`` makes on the host, served to the build on
    127.0.0.1 (``PIP_ARGS``): the build runs with ``--network host`` for Debian's mirror, and pip
    inside it needs no index, proxy or CA of its own.  The image is labelled ``label=key``."""
    work = Path(tempfile.mkdtemp(prefix=f"{label.rsplit('.', 2)[-2]}-build-", dir=engine.root))
    wheel_dir, build_log = work / "wheels", work / "build.log"
    try:
        t = time.monotonic()
        log(f"building {what}'s Python wheels on the host")
        wheels(wheel_dir, build_log)
        log(f"wheels ready in {time.monotonic() - t:.1f} s; building {image} from {dockerfile.name}")
        t = time.monotonic()
        with serve_dir(wheel_dir) as url:
            args = [a for k, v in {**build_args, "PIP_ARGS": f"--no-index --find-links {url}"}.items()
                    for a in ("--build-arg", f"{k}={v}")]
            run_logged([docker_cli() or "docker", "build", "-q", "--network", "host", "-f", dockerfile, *args,
                        "--label", f"{label}={key}", "-t", image, context],
                       build_log, f"building {image}", 1800, env=dict(engine.env(), DOCKER_BUILDKIT="0"))
        log(f"built {image} in {time.monotonic() - t:.1f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build_base(engine: PrivateDockerd, key: str, image: str = BASE_IMAGE, log=say) -> None:
    """debootstrap --variant=minbase + postgresql-N in a chroot, then `docker import`.

    Built under the engine's root, so the engine's stop() also unmounts what an interrupted
    debootstrap or chroot left mounted (proc, sys) and deletes the tree."""
    mirror = debian_mirror()
    if not mirror:
        raise DockerdError("no Debian mirror in /etc/apt/sources.list*: set LAB_DEBIAN_MIRROR")
    debootstrap = which("debootstrap")
    if not debootstrap:
        raise DockerdError("debootstrap not found: apt-get install debootstrap")
    work = Path(tempfile.mkdtemp(prefix="build-", dir=engine.root))
    rootfs, build_log = work / "rootfs", work / "build.log"
    env = dict(os.environ, PATH=SYS_PATH, ROOTFS=str(rootfs), PG_MAJOR=PG_MAJOR, LANG="C.UTF-8")
    try:
        t = time.monotonic()
        log(f"building {image}: debootstrap --variant=minbase {SUITE} from {mirror} (about 30 s)")
        run_logged([debootstrap, "--variant=minbase", SUITE, rootfs, mirror], build_log, "debootstrap", 900, env)
        log(f"installing postgresql-{PG_MAJOR} in the chroot (debootstrap took {time.monotonic() - t:.0f} s)")
        t = time.monotonic()
        run_logged(["sh", "-c", _BASE_RECIPE], build_log, f"postgresql-{PG_MAJOR} in the chroot", 900, env)
        log(f"importing the root file system (the install took {time.monotonic() - t:.0f} s)")
        if mounts_under(rootfs):
            raise DockerdError(f"still mounted in the chroot: {mounts_under(rootfs)}")
        t = time.monotonic()
        tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", "-", "."],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        changes = [f"ENV PATH={SYS_PATH}", "ENV LANG=C.UTF-8", 'CMD ["bash"]',
                   f"LABEL org.pglab.base.key={key} org.pglab.base.recipe=debootstrap-{SUITE}-postgresql-{PG_MAJOR}"]
        args = [a for c in changes for a in ("--change", c)]
        imp = subprocess.run([docker_cli() or "docker", "import", *args, "-", image], stdin=tar.stdout,
                             env=engine.env(), capture_output=True, text=True, timeout=900)
        tar.stdout.close()
        tar_err = tar.stderr.read().decode(errors="replace")
        if tar.wait() != 0 or imp.returncode != 0:
            raise DockerdError(f"docker import failed: {tar_err.strip()[-500:]} {imp.stderr.strip()[-500:]}")
        log(f"imported {image} in {time.monotonic() - t:.1f} s")
    finally:
        unmount_all(work)
        if not mounts_under(work):
            subprocess.run(["rm", "-rf", "--one-file-system", str(work)], capture_output=True)


def build_node(engine: PrivateDockerd, repo_root: Path, base: str, key: str, image: str = NODE_IMAGE,
               network: str = "none", log=say) -> None:
    """``docker build -f compose/Dockerfile --build-arg BASE_IMAGE=<base>`` from the repo root.

    The legacy builder (no buildx on the host) and ``--network none``: the Dockerfile needs no
    network (the engine has no default bridge; pass network="host" if a RUN step needs apt)."""
    t = time.monotonic()
    log(f"building {image} from compose/Dockerfile on {base}")
    engine.docker("build", "-q", "--network", network, "-f", Path(repo_root) / "compose" / "Dockerfile",
                  "--build-arg", f"BASE_IMAGE={base}", "--label", f"org.pglab.node.key={key}",
                  "-t", image, repo_root, env=dict(engine.env(), DOCKER_BUILDKIT="0"), timeout=900)
    log(f"built {image} in {time.monotonic() - t:.1f} s")


def ensure_images(engine: PrivateDockerd, repo_root, cache_dir=None, *, log=None) -> dict:
    """The base and node images in ``engine``, from the cache when possible; returns their names.

    Cache (``cache_dir``, default ``~/.cache/pglab/docker-images`` beside the template cache, or
    ``LAB_DOCKER_IMAGE_CACHE``):
      ``images-<base key>-<node key>.tar``  base + node (the node's layers include the base's:
                                           one file, one load on a warm start);
      ``base-<base key>.tar``              the base alone, kept only until an images tar with the
                                           same base key exists (a failing node build does not
                                           cost another debootstrap).
    The base key hashes the chroot recipe; the node key hashes compose/Dockerfile, .dockerignore,
    master/ and replica/ (and the base key).  A change there rebuilds only the node image, from
    the base found in any tar with the same base key; stale tars are then removed.
    """
    log = log or say
    repo_root = Path(repo_root).resolve()
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    bkey = base_key()
    nkey = node_key(repo_root, bkey)
    images = {"base": BASE_IMAGE, "node": NODE_IMAGE}
    full = cache / f"images-{bkey}-{nkey}.tar"
    base_only = cache / f"base-{bkey}.tar"
    t0 = time.monotonic()

    def have(image, label, key):
        return image_label(engine, image, label) == key

    if have(NODE_IMAGE, "org.pglab.node.key", nkey) and have(BASE_IMAGE, "org.pglab.base.key", bkey):
        return images  # loaded already: no need to wait for another image's build holding the lock
    with FileLock(cache / ".lock", log):
        if have(NODE_IMAGE, "org.pglab.node.key", nkey) and have(BASE_IMAGE, "org.pglab.base.key", bkey):
            return images
        if full.is_file() and load(engine, full, log) and have(NODE_IMAGE, "org.pglab.node.key", nkey):
            log(f"images ready in {time.monotonic() - t0:.1f} s (cached)")
            return images
        if not have(BASE_IMAGE, "org.pglab.base.key", bkey):
            for tar in [base_only, *sorted(cache.glob(f"images-{bkey}-*.tar"))]:
                if tar.is_file() and load(engine, tar, log) and have(BASE_IMAGE, "org.pglab.base.key", bkey):
                    break
            else:
                build_base(engine, bkey, log=log)
                save(engine, base_only, BASE_IMAGE, log=log)
        build_node(engine, repo_root, BASE_IMAGE, nkey, log=log)
        save(engine, full, NODE_IMAGE, BASE_IMAGE, log=log)
        for stale in [*cache.glob("images-*.tar"), *cache.glob("base-*.tar")]:
            if stale != full:
                stale.unlink(missing_ok=True)
        log(f"images ready in {time.monotonic() - t0:.1f} s")
        return images
