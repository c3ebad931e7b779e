"""A private Docker engine for the compose test tier and for benchmarks (Linux, root).

    with PrivateDockerd() as engine:            # its own dockerd + containerd, nothing shared
        engine.images = ensure_images(engine, repo_root)
        subprocess.run(["docker-compose", ...], env=engine.env())

The engine never touches the host's Docker (if any): it has its own root directory
(``/var/tmp/pglab-dockerd/<pid>-<random>``, ``LAB_DOCKERD_ROOT`` moves the parent) holding its
socket, data-root, exec-root, pidfile, config file and log.  It runs with
``--iptables=false --ip-forward=false --bridge=none``: no firewall rule or sysctl of the host
changes (see docs/docker-engine-findings.md).  Ports published on 127.0.0.1 still work (through
docker-proxy), and so do containers reaching each other by name on a user-defined network.
Containers have no way out to the internet, which the tests do not need.  There is no default
``bridge`` network: a container started without ``--network`` has no network at all (and its
``-p`` publishes nothing), so put containers on a user-defined network, as compose does.

The data-root is wiped at every stop.  Images survive as ``docker save`` tars (see
``ensure_images``), which costs a ``docker load`` of a few seconds per engine start, but keeps
no state between runs: no overlay mount, network database (``local-kv.db``, which remembers
bridges) or half-removed container of a crashed run can leak into the next one, and two test
sessions never share a data-root.  A root whose owner died without ``stop()`` (SIGKILL, power
loss) is reaped by the next ``start()``, or by ``python -m lab.dockerd --reap``.

``stop()`` removes every container and network, stops dockerd (SIGTERM, then SIGKILL) and the
containerd it spawned, kills any shim or container process still in the engine's own cgroup,
unmounts whatever is left under the root, removes the cgroups, the bridges and the host paths
the engine created (``/run/docker``, ``/run/containerd``, ...) and deletes the root.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import fcntl
import hashlib
import http.client
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .system.process import pid_alive

ROOT_PARENT = Path(os.environ.get("LAB_DOCKERD_ROOT", "/var/tmp/pglab-dockerd"))
# No firewall rule, no sysctl, no default bridge: nothing on the host changes.
NETWORK_FLAGS = ("--iptables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
SUITE = "bookworm"
PG_MAJOR = "15"
BASE_IMAGE = f"pglab/postgres-base:{SUITE}-{PG_MAJOR}"
NODE_IMAGE = "pglab/postgres-node:test"
NODE_INPUTS = ("compose/Dockerfile", ".dockerignore", "master", "replica")

# Host paths dockerd/containerd create outside their root, whatever the flags (FINDINGS.md §2).
# Removed at stop if they did not exist before start and no other Docker engine runs.
_HOST_PATHS = ("/etc/docker/key.json", "/run/docker/plugins", "/run/docker", "/run/containerd/s",
               "/run/containerd")

_SYS_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_APT_PACKAGES = {"dockerd": "docker.io", "docker": "docker.io", "containerd": "containerd",
                 "runc": "runc", "docker-proxy": "docker.io", "docker-compose": "docker-compose",
                 "debootstrap": "debootstrap"}


class DockerdError(RuntimeError):
    """The private engine could not start, stop cleanly, or build/load its images."""


def say(msg: str) -> None:
    print(f"pglab-dockerd: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Where things are

def _which(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), _SYS_PATH]))


def docker_cli() -> str | None:
    """The docker CLI: ``LAB_DOCKER_CLI``, else the one shipped with dockerd (docker.io's
    /usr/bin/docker, same API version), else the first on PATH."""
    env = os.environ.get("LAB_DOCKER_CLI")
    if env:
        return env
    dockerd = _which("dockerd")
    if dockerd:
        sibling = Path(dockerd).resolve().parent.parent / "bin" / "docker"
        if sibling.is_file() and os.access(sibling, os.X_OK):
            return str(sibling)
    return _which("docker")


def compose_command() -> list[str] | None:
    """``docker-compose`` (v1.29, Debian's package) or ``docker compose`` (v2 plugin)."""
    v1 = _which("docker-compose")
    if v1:
        return [v1]
    cli = docker_cli()
    if cli and subprocess.run([cli, "compose", "version"], capture_output=True).returncode == 0:
        return [cli, "compose"]
    return None


def _os_release() -> dict:
    out = {}
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            k, sep, v = line.partition("=")
            if sep:
                out[k.strip()] = v.strip().strip('"')
    return out


_DEBIAN_SUITES = {"buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
                  "stable", "testing", "unstable", "oldstable"}


def _apt_source_entries(etc_apt: Path = Path("/etc/apt")) -> list[dict]:
    """(types, uris, suites, components) of every entry in /etc/apt/sources.list{,.d/*}:
    one-line ``.list`` files and deb822 ``.sources`` files."""
    entries = []
    files = [etc_apt / "sources.list"]
    d = etc_apt / "sources.list.d"
    if d.is_dir():
        files += sorted(d.iterdir())
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        if f.suffix == ".sources":
            for para in re.split(r"\n\s*\n", text):
                fields, key = {}, None
                for line in para.splitlines():
                    if line.startswith("#") or not line.strip():
                        continue
                    if line[0].isspace() and key:
                        fields[key] += " " + line.strip()
                        continue
                    key, _, val = line.partition(":")
                    key = key.strip().lower()
                    fields[key] = val.strip()
                if fields.get("enabled", "yes").lower() == "no" or "uris" not in fields:
                    continue
                entries.append({"types": fields.get("types", "").split(),
                                "uris": fields["uris"].split(),
                                "suites": fields.get("suites", "").split(),
                                "components": fields.get("components", "").split()})
        elif f.name == "sources.list" or f.suffix == ".list":
            for line in text.splitlines():
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                words = re.sub(r"\[[^\]]*\]", " ", line).split()  # drop [arch=... signed-by=...]
                if len(words) >= 3 and words[0] in ("deb", "deb-src"):
                    entries.append({"types": [words[0]], "uris": [words[1]], "suites": [words[2]],
                                    "components": words[3:]})
    return entries


def debian_mirror(etc_apt: Path = Path("/etc/apt")) -> str | None:
    """The Debian archive the host's apt uses (``LAB_DEBIAN_MIRROR`` overrides): the first
    ``deb`` entry whose suite is a Debian release name, e.g. http://deb.debian.org/debian.
    Ubuntu's archive has no bookworm: there, set LAB_DEBIAN_MIRROR."""
    env = os.environ.get("LAB_DEBIAN_MIRROR")
    if env:
        return env
    for e in _apt_source_entries(etc_apt):
        if "deb" in e["types"] and "main" in e["components"] and set(e["suites"]) & _DEBIAN_SUITES:
            for uri in e["uris"]:
                if uri.startswith(("http://", "https://", "file:/")):
                    return uri
    return None


def availability() -> tuple[bool, str]:
    """Can the compose tier run here?  (True, what it will use) or (False, why not)."""
    if not sys.platform.startswith("linux"):
        return False, f"a private dockerd needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return False, "a private dockerd needs root (run the tests as root, e.g. in CI)"
    osr = _os_release()
    family = {osr.get("ID", "")} | set(osr.get("ID_LIKE", "").split())
    if not family & {"debian", "ubuntu"}:
        return False, (f"the image build needs Debian or Ubuntu (apt, debootstrap); this is "
                       f"{osr.get('PRETTY_NAME') or 'an unknown system'}")
    missing = [n for n in ("dockerd", "containerd", "runc", "docker-proxy", "debootstrap")
               if not _which(n)]
    if not docker_cli():
        missing.append("docker")
    if not compose_command():
        missing.append("docker-compose")
    if missing:
        pkgs = sorted({_APT_PACKAGES[m] for m in missing})
        return False, (f"missing {', '.join(missing)}: `apt-get install --no-install-recommends "
                       f"{' '.join(pkgs)}` (or run scripts/ensure-docker.sh as root)")
    if not Path("/usr/share/keyrings/debian-archive-keyring.gpg").is_file():
        return False, "debootstrap needs Debian's archive key: `apt-get install debian-archive-keyring`"
    mirror = debian_mirror()
    if not mirror:
        return False, ("no Debian mirror in /etc/apt/sources.list* to debootstrap the image from: "
                       "set LAB_DEBIAN_MIRROR (e.g. to your Debian mirror's /debian URL)")
    if not cgroup_mounts():
        return False, "no cgroup file system is mounted (containers need one)"
    return True, f"private dockerd ({_which('dockerd')}), images from {mirror}"


# --------------------------------------------------------------------------------------------
# Processes, mounts, cgroups

def _read(path, mode="r"):
    try:
        with open(path, mode) as f:
            return f.read()
    except OSError:
        return None


def _cmdline(pid: int) -> list[str]:
    raw = _read(f"/proc/{pid}/cmdline", "rb")
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a] if raw else []


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _ppid(pid: int) -> int | None:
    stat = _read(f"/proc/{pid}/stat")
    try:
        return int(stat.rsplit(")", 1)[1].split()[1]) if stat else None
    except (IndexError, ValueError):
        return None


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for p in _pids():
        pp = _ppid(p)
        if pp:
            children.setdefault(pp, []).append(p)
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def processes_of(root: Path, cgroup: str | None = None) -> dict[int, str]:
    """pid -> command of every live process of the engine at ``root``: the command line names
    the root (dockerd, containerd, shims), or the process sits in the engine's cgroup
    (containers' processes)."""
    out = {}
    marker = str(root)
    me = os.getpid()
    for pid in _pids():
        if pid == me or not pid_alive(pid):
            continue
        cmd = _cmdline(pid)
        hit = any(marker in a for a in cmd)
        if not hit and cgroup:
            cg = _read(f"/proc/{pid}/cgroup") or ""
            hit = f"/{cgroup}/" in cg or cg.rstrip().endswith(f"/{cgroup}")
        if hit:
            out[pid] = " ".join(cmd)[:200]
    return out


def _other_engines(root: Path | None) -> list[int]:
    """Docker engines running on the host that are not the one at ``root``."""
    out = []
    for pid in _pids():
        cmd = _cmdline(pid)
        if cmd and os.path.basename(cmd[0]) in ("dockerd", "containerd") and pid_alive(pid):
            if root is None or not any(str(root) in a for a in cmd):
                out.append(pid)
    return out


def _unescape_mount(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def _mountinfo() -> list[tuple[str, str]]:
    """(mount point, fstype) of every mount in our mount namespace."""
    out = []
    for line in (_read("/proc/self/mountinfo") or "").splitlines():
        left, _, right = line.partition(" - ")
        parts = left.split()
        if len(parts) >= 5:
            out.append((_unescape_mount(parts[4]), right.split()[0] if right else "?"))
    return out


def mounts_under(root: Path) -> list[str]:
    r = str(root).rstrip("/")
    return [m for m, _ in _mountinfo() if m == r or m.startswith(r + "/")]


def cgroup_mounts() -> list[str]:
    return [m for m, fs in _mountinfo() if fs in ("cgroup", "cgroup2")]


def cgroup_dirs(name: str) -> list[Path]:
    """Every cgroup directory called ``name``, in every hierarchy.  A relative --cgroup-parent
    sits under dockerd's own cgroup of each hierarchy, which need not be the root (here the
    memory hierarchy puts each command under /process_api/<id>/): search a few levels down."""
    out = []
    for m in cgroup_mounts():
        for dirpath, dirnames, _ in os.walk(m):
            if os.path.basename(dirpath) == name:
                out.append(Path(dirpath))
                dirnames[:] = []
            elif dirpath[len(m):].count("/") >= 4:
                dirnames[:] = []
    return out


_libc = None


def _umount(path: str) -> bool:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    for flags in (0, 2):  # then MNT_DETACH
        if _libc.umount2(path.encode(), flags) == 0:
            return True
        if ctypes.get_errno() in (errno.EINVAL, errno.ENOENT):  # not a mount (any more)
            return True
    return False


def unmount_all(root: Path) -> list[str]:
    """Unmount everything at or under ``root``, deepest first; returns what is still mounted."""
    for _ in range(5):
        left = mounts_under(root)
        if not left:
            return []
        for m in sorted(left, key=lambda p: (p.count("/"), len(p)), reverse=True):
            _umount(m)
    return mounts_under(root)


def _remove_cgroups(name: str) -> list[str]:
    """rmdir the engine's cgroup (children first) in every hierarchy; returns what is left."""
    left = []
    for top in cgroup_dirs(name):
        for dirpath, dirnames, _ in sorted(os.walk(top), key=lambda t: -t[0].count("/")):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
        if top.exists():
            left.append(str(top))
    return left


def _kill_and_wait(pids, sig, timeout) -> set[int]:
    pids = {p for p in pids if pid_alive(p)}
    for p in pids:
        with contextlib.suppress(OSError):
            os.kill(p, sig)
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = {p for p in pids if pid_alive(p)}
        if pids:
            time.sleep(0.05)
    return pids


def _net_links() -> set[str]:
    try:
        return set(os.listdir("/sys/class/net"))
    except OSError:
        return set()


def _del_link(name: str) -> None:
    ip = _which("ip")
    if ip and name in _net_links():
        subprocess.run([ip, "link", "delete", name], capture_output=True, timeout=10)


# --------------------------------------------------------------------------------------------
# The Docker API over the engine's unix socket (no SDK needed to start/stop)

class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


def _api(sock: Path, method: str, path: str, timeout: float = 10.0):
    conn = _UnixHTTPConnection(str(sock), timeout)
    try:
        conn.request(method, path, headers={"Host": "docker"})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status >= 400:
        raise DockerdError(f"{method} {path}: {resp.status} {body[:300].decode(errors='replace')}")
    return json.loads(body) if body and resp.getheader("Content-Type", "").startswith("application/json") else body


def _ping(sock: Path, timeout: float = 1.0) -> bool:
    try:
        return _api(sock, "GET", "/_ping", timeout) == b"OK"
    except (OSError, http.client.HTTPException, DockerdError):
        return False


# --------------------------------------------------------------------------------------------
# The engine

def _die_with_parent() -> None:  # in the child, before exec
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def _lock_is_free(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def reap_stale(parent: Path = ROOT_PARENT) -> list[Path]:
    """Tear down engine roots whose owner is gone (it died without ``stop()``).  The owner holds
    ``<root>/lock`` for the engine's whole life; a root is stale when that lock is free and the
    owner pid (in the root's name) is dead, or the root is over a minute old (pid reused)."""
    reaped = []
    if not parent.is_dir():
        return reaped
    for root in sorted(parent.iterdir()):
        m = re.fullmatch(r"(\d+)-([0-9a-f]+)", root.name)
        if not m or not root.is_dir() or not _lock_is_free(root / "lock"):
            continue
        try:
            age = time.time() - root.stat().st_mtime
        except OSError:
            continue
        if pid_alive(int(m.group(1))) and age < 60:
            continue
        say(f"reaping a stale engine left by pid {m.group(1)}: {root}")
        eng = PrivateDockerd(root=root)
        eng._adopt()
        eng.stop()
        reaped.append(root)
    return reaped


class PrivateDockerd:
    """A dockerd of our own: own root, socket, data-root, exec-root, pidfile, config, cgroup.

    ``start()`` returns when the engine answers (or raises ``DockerdError`` with the tail of its
    log, leaving nothing behind); ``stop()`` is idempotent and also runs at interpreter exit.
    ``images`` is filled by the caller, e.g. ``engine.images = ensure_images(engine, repo)``.
    """

    def __init__(self, root: Path | str | None = None, extra_flags=(), die_with_parent: bool = True):
        if root is None:
            root = ROOT_PARENT / f"{os.getpid()}-{secrets.token_hex(3)}"
        self.root = Path(root)
        self.socket = self.root / "docker.sock"  # unix socket paths must stay < 108 bytes
        self.data_root = self.root / "data"
        self.exec_root = self.root / "exec"
        self.pidfile = self.root / "dockerd.pid"
        self.config_file = self.root / "daemon.json"
        self.log_file = self.root / "dockerd.log"
        self.cgroup = f"pglab-dockerd-{self.root.name}"
        self.extra_flags = tuple(extra_flags)
        # dockerd gets SIGTERM when the thread that started it dies, even by SIGKILL: it then
        # stops its containers and containerd itself; the next start() reaps the rest.  Start
        # the engine from a thread that lives as long as it (pytest's and scripts' main thread).
        self.die_with_parent = die_with_parent
        self.images: dict = {}
        self.host = f"unix://{self.socket}"
        self._proc: subprocess.Popen | None = None
        self._pid: int | None = None
        self._lock_fd: int | None = None
        self._owner = os.getpid()
        self._host_paths_before: dict[str, bool] = {}
        self._bridges: set[str] = set()
        self._state = "new"  # new -> running -> stopped
        self.timings: dict[str, float] = {}  # seconds: "start" (until it answers), "stop"
        self._mutex = threading.RLock()

    # ---- context manager
    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return f"<PrivateDockerd {self.host} pid={self._pid} {self._state}>"

    # ---- what callers use
    def env(self) -> dict:
        """os.environ for clients of this engine: DOCKER_HOST set, other engines' settings gone."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")}
        env["DOCKER_HOST"] = self.host
        return env

    def docker(self, *args, check=True, timeout=300, capture=True, env=None, **kw) -> subprocess.CompletedProcess:
        """Run the docker CLI against this engine; raises DockerdError with its stderr."""
        cmd = [docker_cli() or "docker", *map(str, args)]
        r = subprocess.run(cmd, env=env or self.env(), timeout=timeout, text=True,
                           capture_output=capture, **kw)
        if check and r.returncode != 0:
            raise DockerdError(f"{shlex.join(cmd)} failed ({r.returncode}): {(r.stderr or '').strip()[-2000:]}")
        return r

    def client(self):
        """A docker SDK client for this engine."""
        import docker
        return docker.DockerClient(base_url=self.host)

    def api(self, method: str, path: str, timeout: float = 10.0):
        return _api(self.socket, method, path, timeout)

    def ping(self) -> bool:
        return _ping(self.socket)

    @property
    def pid(self) -> int | None:
        return self._pid

    def log_tail(self, lines: int = 30) -> str:
        text = _read(self.log_file) or ""
        return "\n".join(text.splitlines()[-lines:])

    # ---- start
    def start(self) -> "PrivateDockerd":
        with self._mutex:
            if self._state == "running":
                return self
            if self._state == "stopped":
                raise DockerdError("this engine was stopped; make a new PrivateDockerd")
            dockerd = _which("dockerd")
            if not dockerd:
                raise DockerdError("dockerd not found: apt-get install docker.io")
            reap_stale(self.root.parent)
            for attempt in range(3):  # another engine's stop() may remove an empty parent meanwhile
                try:
                    self.root.parent.mkdir(parents=True, exist_ok=True)
                    self.root.mkdir(mode=0o711)
                    break
                except FileNotFoundError:
                    if attempt == 2:
                        raise
            self._state = "running"  # from here on, stop() has something to clean
            atexit.register(self.stop)
            t0 = time.monotonic()
            try:
                self._lock_fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
                self._host_paths_before = {p: os.path.lexists(p) for p in _HOST_PATHS}
                # The config file replaces /etc/docker/daemon.json (never read).  Its only setting,
                # deprecated-key-path, keeps dockerd 20.10's libtrust key out of /etc/docker/key.json.
                # --cgroup-parent is relative: the containers' cgroups sit under dockerd's own (the
                # sandbox's accounting still applies), named after the root so stop() finds them.
                self.config_file.write_text(json.dumps({"deprecated-key-path": str(self.root / "key.json")}) + "\n")
                cmd = [dockerd, "--config-file", str(self.config_file), "-H", self.host,
                       "--data-root", str(self.data_root), "--exec-root", str(self.exec_root),
                       "--pidfile", str(self.pidfile), "--cgroup-parent", self.cgroup,
                       *NETWORK_FLAGS, *self.extra_flags]
                env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "DOCKER_HOST")}
                env["PATH"] = os.pathsep.join([_SYS_PATH, env.get("PATH", "")])
                with open(self.log_file, "ab") as log:
                    self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                                  env=env, cwd=self.root, start_new_session=True,
                                                  preexec_fn=_die_with_parent if self.die_with_parent else None)
                self._pid = self._proc.pid
                deadline = time.monotonic() + START_TIMEOUT
                while not _ping(self.socket, timeout=1.0):
                    if self._proc.poll() is not None:
                        raise DockerdError(f"dockerd exited with {self._proc.returncode}")
                    if time.monotonic() > deadline:
                        raise DockerdError(f"dockerd did not answer within {START_TIMEOUT:.0f} s")
                    time.sleep(0.05)
                self.timings["start"] = time.monotonic() - t0
            except BaseException as e:
                tail = self.log_tail()
                self.stop()
                if isinstance(e, DockerdError):
                    raise DockerdError(f"{e}; the end of its log:\n{tail}") from None
                raise
            return self

    def _adopt(self) -> None:
        """Take over a stale root (its owner is gone), so that stop() cleans it."""
        self._state = "running"
        pid = _read(self.pidfile)
        self._pid = int(pid) if pid and pid.strip().isdigit() else None
        # What existed before that engine started is unknown: keep the host paths (another
        # engine might use them) unless no engine runs at all (checked in stop()).
        self._host_paths_before = {p: False for p in _HOST_PATHS}

    # ---- stop
    def _containerd_pids(self) -> set[int]:
        out = set()
        for m in re.finditer(r"started new containerd process.*?pid=(\d+)", _read(self.log_file) or ""):
            out.add(int(m.group(1)))
        return {p for p in out if any(str(self.root) in a for a in _cmdline(p))}

    def _remove_containers_and_networks(self) -> None:
        try:
            for c in _api(self.socket, "GET", "/containers/json?all=1", 10):
                with contextlib.suppress(DockerdError, OSError, http.client.HTTPException):
                    _api(self.socket, "DELETE", f"/containers/{c['Id']}?force=1&v=1", 60)
            for n in _api(self.socket, "GET", "/networks", 10):
                if n.get("Name") in ("bridge", "host", "none"):
                    continue
                if n.get("Driver") == "bridge":
                    self._bridges.add((n.get("Options") or {}).get("com.docker.network.bridge.name")
                                      or f"br-{n['Id'][:12]}")
                with contextlib.suppress(DockerdError, OSError, http.client.HTTPException):
                    _api(self.socket, "DELETE", f"/networks/{n['Id']}", 30)
        except (DockerdError, OSError, http.client.HTTPException, ValueError, TypeError):
            pass  # the engine is not answering: the process sweep below does the work

    def stop(self) -> None:
        with self._mutex:
            if self._state != "running" or os.getpid() != self._owner:
                return
            self._state = "stopped"
            t0 = time.monotonic()
            with contextlib.suppress(Exception):
                atexit.unregister(self.stop)
            problems = []
            if self._pid and pid_alive(self._pid) and _ping(self.socket):
                self._remove_containers_and_networks()
            helpers = set()
            if self._pid and pid_alive(self._pid) and any(str(self.root) in a for a in _cmdline(self._pid)):
                helpers = _descendants(self._pid) | self._containerd_pids()
                if _kill_and_wait([self._pid], signal.SIGTERM, STOP_TIMEOUT):
                    problems.append(f"dockerd {self._pid} ignored SIGTERM for {STOP_TIMEOUT:.0f} s: killed")
                    _kill_and_wait([self._pid], signal.SIGKILL, 5)
            if self._proc is not None:
                with contextlib.suppress(Exception):
                    self._proc.wait(timeout=5)
            helpers |= self._containerd_pids()
            if _kill_and_wait(helpers, signal.SIGTERM, 10):
                _kill_and_wait(helpers, signal.SIGKILL, 5)
            # Shims (re-parented to init) and container processes: by command line and cgroup.
            for _ in range(3):
                left = processes_of(self.root, self.cgroup)
                if not left:
                    break
                _kill_and_wait(left, signal.SIGKILL, 5)
            left = processes_of(self.root, self.cgroup)
            if left:
                problems.append(f"processes still running: {left}")
            still = unmount_all(self.root)
            if still:
                problems.append(f"still mounted: {still}")
            problems += [f"cgroup left: {c}" for c in _remove_cgroups(self.cgroup)]
            # Bridges of networks that were not removed (the engine did not answer): their
            # names are br-<network id>, and the ids are in the engine's own network database.
            ids = re.findall(rb"[0-9a-f]{64}", _read(self.data_root / "network/files/local-kv.db", "rb") or b"")
            self._bridges |= {f"br-{i[:12].decode()}" for i in ids} & _net_links()
            for b in self._bridges:
                _del_link(b)
            if not _other_engines(self.root):
                for p in _HOST_PATHS:  # files first, then emptied dirs (order of _HOST_PATHS)
                    if self._host_paths_before.get(p, True) or not os.path.lexists(p):
                        continue
                    if os.path.isdir(p) and not os.path.islink(p):
                        if p == "/run/containerd/s":  # shim sockets of dead shims
                            shutil.rmtree(p, ignore_errors=True)
                        else:
                            with contextlib.suppress(OSError):
                                os.rmdir(p)
                    else:
                        with contextlib.suppress(OSError):
                            os.unlink(p)
            if not mounts_under(self.root):
                # --one-file-system: never delete through a mount we failed to remove.
                subprocess.run(["rm", "-rf", "--one-file-system", str(self.root)], capture_output=True)
                with contextlib.suppress(OSError):
                    self.root.parent.rmdir()  # only when empty
            if self._lock_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._lock_fd)
                self._lock_fd = None
            self.timings["stop"] = time.monotonic() - t0
            if problems:
                say("stop: " + "; ".join(problems))

    def leftovers(self) -> list[str]:
        """What of this engine is still on the host (empty after a clean stop)."""
        out = [f"process {p}: {c}" for p, c in processes_of(self.root, self.cgroup).items()]
        out += [f"mount {m}" for m in mounts_under(self.root)]
        out += [f"cgroup {c}" for c in cgroup_dirs(self.cgroup)]
        out += [f"bridge {b}" for b in self._bridges if b in _net_links()]
        if self.root.exists():
            out.append(f"directory {self.root}")
        if not _other_engines(None):
            out += [f"host path {p}" for p in _HOST_PATHS
                    if not self._host_paths_before.get(p, True) and os.path.lexists(p)]
        return out


# --------------------------------------------------------------------------------------------
# Images: base (debootstrap + postgresql in a chroot, no container networking needed) and node
# (compose/Dockerfile on top), cached as `docker save` tars.

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


def _sha(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def base_key() -> str:
    return _sha("base-v1", SUITE, PG_MAJOR, _BASE_RECIPE)


def node_key(repo_root: Path, base: str) -> str:
    """Hash of the base key and of every file the node image is built from."""
    parts = ["node-v1", base]
    for rel in NODE_INPUTS:
        p = repo_root / rel
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else ([p] if p.is_file() else [])
        for f in files:
            if "__pycache__" in f.parts:
                continue
            parts += [str(f.relative_to(repo_root)), oct(f.stat().st_mode & 0o111), f.read_bytes()]
    return _sha(*parts)


def default_cache_dir(repo_root: Path) -> Path:
    """Beside the template cache (``~/.cache/pglab``, ``LAB_CACHE``), so clones share it."""
    from .system.home import cache_dir
    return Path(os.environ.get("LAB_DOCKER_IMAGE_CACHE") or cache_dir() / "docker-images")


def _image_label(engine: PrivateDockerd, image: str, label: str) -> str | None:
    r = engine.docker("image", "inspect", "--format", f'{{{{index .Config.Labels "{label}"}}}}', image,
                      check=False, timeout=60)
    return r.stdout.strip() if r.returncode == 0 else None


def _load(engine: PrivateDockerd, tar: Path, log=say) -> bool:
    t = time.monotonic()
    r = engine.docker("load", "-q", "-i", tar, check=False, timeout=900)
    if r.returncode != 0:
        log(f"could not load {tar.name} ({r.stderr.strip()[-300:]}): removing it")
        tar.unlink(missing_ok=True)
        return False
    log(f"loaded {tar.name} in {time.monotonic() - t:.1f} s")
    return True


def _save(engine: PrivateDockerd, tar: Path, *images: str, log=say) -> None:
    t = time.monotonic()
    tmp = tar.with_name(f".{tar.name}.{os.getpid()}.tmp")
    try:
        engine.docker("save", "-o", tmp, *images, timeout=900)
        os.replace(tmp, tar)
    finally:
        tmp.unlink(missing_ok=True)
    log(f"saved {tar.name} ({tar.stat().st_size / 2**20:.0f} MiB) in {time.monotonic() - t:.1f} s")


def _run_logged(cmd, logfile: Path, what: str, timeout: float, env=None) -> None:
    with open(logfile, "ab") as f:
        f.write(f"\n$ {shlex.join(map(str, cmd))}\n".encode())
        f.flush()
        r = subprocess.run(list(map(str, cmd)), stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           timeout=timeout, env=env)
    if r.returncode != 0:
        tail = "\n".join((_read(logfile) or "").splitlines()[-25:])
        raise DockerdError(f"{what} failed ({r.returncode}); the end of its output:\n{tail}")


def build_base(engine: PrivateDockerd, key: str, image: str = BASE_IMAGE, log=say) -> None:
    """debootstrap --variant=minbase + postgresql-N in a chroot, then `docker import`.

    Built under the engine's root, so the engine's stop() also unmounts what an interrupted
    debootstrap or chroot left mounted (proc, sys) and deletes the tree."""
    mirror = debian_mirror()
    if not mirror:
        raise DockerdError("no Debian mirror in /etc/apt/sources.list*: set LAB_DEBIAN_MIRROR")
    debootstrap = _which("debootstrap")
    if not debootstrap:
        raise DockerdError("debootstrap not found: apt-get install debootstrap")
    work = Path(tempfile.mkdtemp(prefix="build-", dir=engine.root))
    rootfs, build_log = work / "rootfs", work / "build.log"
    env = dict(os.environ, PATH=_SYS_PATH, ROOTFS=str(rootfs), PG_MAJOR=PG_MAJOR, LANG="C.UTF-8")
    try:
        t = time.monotonic()
        log(f"building {image}: debootstrap --variant=minbase {SUITE} from {mirror} (about 30 s)")
        _run_logged([debootstrap, "--variant=minbase", SUITE, rootfs, mirror], build_log, "debootstrap", 900, env)
        log(f"installing postgresql-{PG_MAJOR} in the chroot (debootstrap took {time.monotonic() - t:.0f} s)")
        t = time.monotonic()
        _run_logged(["sh", "-c", _BASE_RECIPE], build_log, f"postgresql-{PG_MAJOR} in the chroot", 900, env)
        log(f"importing the root file system (the install took {time.monotonic() - t:.0f} s)")
        if mounts_under(rootfs):
            raise DockerdError(f"still mounted in the chroot: {mounts_under(rootfs)}")
        t = time.monotonic()
        tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", "-", "."],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        changes = [f"ENV PATH={_SYS_PATH}", "ENV LANG=C.UTF-8", 'CMD ["bash"]',
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


class _FileLock:
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


def ensure_images(engine: PrivateDockerd, repo_root, cache_dir=None, *, log=None) -> dict:
    """The base and node images in ``engine``, from the cache when possible; returns their names.

    Cache (``cache_dir``, default ``~/.cache/pglab/docker-images`` beside the template cache, or ``LAB_DOCKER_IMAGE_CACHE``):
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
    cache = Path(cache_dir) if cache_dir else default_cache_dir(repo_root)
    cache.mkdir(parents=True, exist_ok=True)
    bkey = base_key()
    nkey = node_key(repo_root, bkey)
    images = {"base": BASE_IMAGE, "node": NODE_IMAGE}
    full = cache / f"images-{bkey}-{nkey}.tar"
    base_only = cache / f"base-{bkey}.tar"
    t0 = time.monotonic()
    with _FileLock(cache / ".lock", log):
        def have(image, label, key):
            return _image_label(engine, image, label) == key

        if have(NODE_IMAGE, "org.pglab.node.key", nkey) and have(BASE_IMAGE, "org.pglab.base.key", bkey):
            return images
        if full.is_file() and _load(engine, full, log) and have(NODE_IMAGE, "org.pglab.node.key", nkey):
            log(f"images ready in {time.monotonic() - t0:.1f} s (cached)")
            return images
        if not have(BASE_IMAGE, "org.pglab.base.key", bkey):
            for tar in [base_only, *sorted(cache.glob(f"images-{bkey}-*.tar"))]:
                if tar.is_file() and _load(engine, tar, log) and have(BASE_IMAGE, "org.pglab.base.key", bkey):
                    break
            else:
                build_base(engine, bkey, log=log)
                _save(engine, base_only, BASE_IMAGE, log=log)
        build_node(engine, repo_root, BASE_IMAGE, nkey, log=log)
        _save(engine, full, NODE_IMAGE, BASE_IMAGE, log=log)
        for stale in [*cache.glob("images-*.tar"), *cache.glob("base-*.tar")]:
            if stale != full:
                stale.unlink(missing_ok=True)
        log(f"images ready in {time.monotonic() - t0:.1f} s")
        return images



# --------------------------------------------------------------------------------------------
# The crypto app's image (compose's web-app): compose/app.Dockerfile on the lab's base, with the
# Python packages built as wheels on the host and served to the build on 127.0.0.1 (the build
# runs with --network host for Debian's python3; pip inside it then needs no index, proxy or CA).

APP_IMAGE = "pglab/crypto-app:test"
APP_INPUTS = ("compose/app.Dockerfile", "compose/app-requirements.txt", "compose/app-entrypoint.sh",
              ".dockerignore", "app")
APP_PYTHON = (3, 11)  # Debian bookworm's python3, which the image gets on the lab's base


def app_key(repo_root: Path, base: str) -> str:
    """Hash of the base key and of every file the app image is built from."""
    parts = ["app-v1", base]
    for rel in APP_INPUTS:
        p = Path(repo_root) / rel
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else ([p] if p.is_file() else [])
        for f in files:
            if "__pycache__" in f.parts or f.suffix == ".pyc":
                continue
            parts += [str(f.relative_to(repo_root)), oct(f.stat().st_mode & 0o111), f.read_bytes()]
    return _sha(*parts)


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
    _run_logged(cmd, log_file, "building the app's wheels on the host (pip)", 1800)


@contextlib.contextmanager
def _serve_dir(path: Path):
    """An HTTP server on 127.0.0.1 (a free port) listing ``path``: pip's --find-links."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(path)))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/"
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)


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
        with _serve_dir(wheels) as url:
            _run_logged([docker_cli() or "docker", "build", "-q", "--network", "host",
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
    cache = Path(cache_dir) if cache_dir else default_cache_dir(repo_root)
    engine.images = {**engine.images, **ensure_images(engine, repo_root, cache, log=log)}
    key = app_key(repo_root, base_key())
    tar = cache / f"app-{key}.tar"
    t0 = time.monotonic()
    with _FileLock(cache / ".lock", log):
        def have():
            return _image_label(engine, APP_IMAGE, "org.pglab.app.key") == key

        if not have() and not (tar.is_file() and _load(engine, tar, log) and have()):
            build_app(engine, repo_root, BASE_IMAGE, key, log=log)
            _save(engine, tar, APP_IMAGE, log=log)
            for stale in cache.glob("app-*.tar"):
                if stale != tar:
                    stale.unlink(missing_ok=True)
            log(f"app image ready in {time.monotonic() - t0:.1f} s")
    engine.images["app"] = APP_IMAGE
    return APP_IMAGE

# --------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    """``python -m lab.dockerd [--cold] [--reap] [--cache DIR]``: start an engine, make the images
    ready, stop it, print the times (or only reap stale engines)."""
    import argparse
    p = argparse.ArgumentParser(prog="python -m lab.dockerd", description=main.__doc__)
    p.add_argument("--reap", action="store_true", help="only tear down engines whose owner died")
    p.add_argument("--cold", action="store_true", help="ignore the image cache (uses a temporary one)")
    p.add_argument("--cache", help="image cache directory")
    p.add_argument("--repo", default=str(Path(__file__).resolve().parent.parent))
    args = p.parse_args(argv)
    if args.reap:
        print(f"reaped {len(reap_stale())} stale engine(s)")
        return 0
    ok, why = availability()
    if not ok:
        print(f"unavailable: {why}", file=sys.stderr)
        return 1
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
