"""``PrivateDockerd``: start a dockerd of our own, stop it leaving nothing, reap a dead owner's.

The engine has its own root directory (``/var/tmp/pglab-dockerd/<pid>-<random>``,
``LAB_DOCKERD_ROOT`` moves the parent) holding its socket, data-root, exec-root, pidfile, config
file and log.  It runs with ``--iptables=false --ip-forward=false --bridge=none``: no firewall
rule or sysctl of the host changes (docs/docker-engine-findings.md).  Ports published on
127.0.0.1 still work (through docker-proxy), and so do containers reaching each other by name on
a user-defined network.  There is no default ``bridge`` network: a container started without
``--network`` has no network at all (and its ``-p`` publishes nothing).

``stop()`` removes every container and network, stops dockerd (SIGTERM, then SIGKILL) and the
containerd it spawned, kills any shim or container process still in the engine's own cgroup,
unmounts whatever is left under the root, removes the cgroups, the bridges and the host paths
the engine created (``/run/docker``, ``/run/containerd``, ...) and deletes the root.  A root
whose owner died without ``stop()`` (SIGKILL, power loss) is reaped by the next ``start()``.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from lab.system.process import pid_alive, process_tree

from . import sweep
from .api import TRANSPORT_ERRORS, api, ping
from .host import SYS_PATH, DockerdError, docker_cli, say, which

ROOT_PARENT = Path(os.environ.get("LAB_DOCKERD_ROOT", "/var/tmp/pglab-dockerd"))
# No firewall rule, no sysctl, no default bridge: nothing on the host changes.
NETWORK_FLAGS = ("--iptables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0

# Host paths dockerd/containerd create outside their root, whatever the flags (findings §2).
# Removed at stop if they did not exist before start and no other Docker engine runs.
_HOST_PATHS = ("/etc/docker/key.json", "/run/docker/plugins", "/run/docker", "/run/containerd/s",
               "/run/containerd")


def _read(path, mode="r"):
    try:
        with open(path, mode) as f:
            return f.read()
    except OSError:
        return None


def net_links() -> set[str]:
    try:
        return set(os.listdir("/sys/class/net"))
    except OSError:
        return set()


def _del_link(name: str) -> None:
    ip = which("ip")
    if ip and name in net_links():
        subprocess.run([ip, "link", "delete", name], capture_output=True, timeout=10)


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
        self._state = "new"  # new -> running -> stopped; or "borrowed" (attach: another process's)
        self.timings: dict[str, float] = {}  # seconds: "start" (until it answers), "stop"
        self._mutex = threading.RLock()

    @classmethod
    def attach(cls, root: Path | str) -> "PrivateDockerd":
        """A running engine that another process started and owns (``python -m engine --serve``):
        usable like one's own, but ``stop()`` leaves it running and ``leftovers()`` is its
        owner's business.  DockerdError if nothing answers at ``root``."""
        eng = cls(root=root)
        if not eng.ping():
            raise DockerdError(f"no engine answers at {eng.socket} (its owner has stopped it?)")
        pid = _read(eng.pidfile)
        eng._pid = int(pid) if pid and pid.strip().isdigit() else None
        eng._state = "borrowed"
        return eng

    @property
    def borrowed(self) -> bool:
        """Started and owned by another process (``attach``)."""
        return self._state == "borrowed"

    def objects(self) -> "list[dict]":
        """Every container, network (but the predefined ones) and volume in the engine:
        ``{"kind", "id", "name", "labels"}``."""
        out = []
        for c in self.api("GET", "/containers/json?all=1"):
            out.append({"kind": "container", "id": c["Id"], "name": (c.get("Names") or ["?"])[0].lstrip("/"),
                        "labels": c.get("Labels") or {}})
        for n in self.api("GET", "/networks"):
            if n.get("Name") not in ("bridge", "host", "none"):
                out.append({"kind": "network", "id": n["Id"], "name": n.get("Name"), "labels": n.get("Labels") or {}})
        for v in self.api("GET", "/volumes").get("Volumes") or []:
            out.append({"kind": "volume", "id": v["Name"], "name": v["Name"], "labels": v.get("Labels") or {}})
        return out

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
        import docker  # lazy: the SDK takes ~0.5 s to import; most users of the engine never ask
        return docker.DockerClient(base_url=self.host)

    def api(self, method: str, path: str, timeout: float = 10.0):
        return api(self.socket, method, path, timeout)

    def ping(self) -> bool:
        return ping(self.socket)

    @property
    def pid(self) -> int | None:
        return self._pid

    def log_tail(self, lines: int = 30) -> str:
        text = _read(self.log_file) or ""
        return "\n".join(text.splitlines()[-lines:])

    # ---- start
    def start(self) -> "PrivateDockerd":
        with self._mutex:
            if self._state in ("running", "borrowed"):
                return self
            if self._state == "stopped":
                raise DockerdError("this engine was stopped; make a new PrivateDockerd")
            dockerd = which("dockerd")
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
                self._launch(dockerd)
                self.timings["start"] = time.monotonic() - t0
            except BaseException as e:
                tail = self.log_tail()
                self.stop()
                if isinstance(e, DockerdError):
                    raise DockerdError(f"{e}; the end of its log:\n{tail}") from None
                raise
            return self

    def _launch(self, dockerd: str) -> None:
        """Run dockerd under the root's lock and wait until it answers."""
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
        env["PATH"] = os.pathsep.join([SYS_PATH, env.get("PATH", "")])
        with open(self.log_file, "ab") as log:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                          env=env, cwd=self.root, start_new_session=True,
                                          preexec_fn=_die_with_parent if self.die_with_parent else None)
        self._pid = self._proc.pid
        deadline = time.monotonic() + START_TIMEOUT
        while not ping(self.socket, timeout=1.0):
            if self._proc.poll() is not None:
                raise DockerdError(f"dockerd exited with {self._proc.returncode}")
            if time.monotonic() > deadline:
                raise DockerdError(f"dockerd did not answer within {START_TIMEOUT:.0f} s")
            time.sleep(0.05)

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
        return {p for p in out if sweep.names_root(p, self.root)}

    def _remove_containers_and_networks(self) -> None:
        try:
            for c in api(self.socket, "GET", "/containers/json?all=1", 10):
                with contextlib.suppress(DockerdError, *TRANSPORT_ERRORS):
                    api(self.socket, "DELETE", f"/containers/{c['Id']}?force=1&v=1", 60)
            for n in api(self.socket, "GET", "/networks", 10):
                if n.get("Name") in ("bridge", "host", "none"):
                    continue
                if n.get("Driver") == "bridge":
                    self._bridges.add((n.get("Options") or {}).get("com.docker.network.bridge.name")
                                      or f"br-{n['Id'][:12]}")
                with contextlib.suppress(DockerdError, *TRANSPORT_ERRORS):
                    api(self.socket, "DELETE", f"/networks/{n['Id']}", 30)
        except (DockerdError, *TRANSPORT_ERRORS, ValueError, TypeError):
            pass  # the engine is not answering: the process sweep in stop() does the work

    def _stop_processes(self) -> list[str]:
        """dockerd (SIGTERM, it stops its containerd), then containerd, shims and containers."""
        problems = []
        helpers = set()
        if self._pid and pid_alive(self._pid) and sweep.names_root(self._pid, self.root):
            helpers = set(process_tree(self._pid)[1:]) | self._containerd_pids()
            if sweep.kill_and_wait([self._pid], signal.SIGTERM, STOP_TIMEOUT):
                problems.append(f"dockerd {self._pid} ignored SIGTERM for {STOP_TIMEOUT:.0f} s: killed")
                sweep.kill_and_wait([self._pid], signal.SIGKILL, 5)
        if self._proc is not None:
            with contextlib.suppress(Exception):
                self._proc.wait(timeout=5)
        helpers |= self._containerd_pids()
        if sweep.kill_and_wait(helpers, signal.SIGTERM, 10):
            sweep.kill_and_wait(helpers, signal.SIGKILL, 5)
        # Shims (re-parented to init) and container processes: by command line and cgroup.
        for _ in range(3):
            left = sweep.processes_of(self.root, self.cgroup)
            if not left:
                break
            sweep.kill_and_wait(left, signal.SIGKILL, 5)
        left = sweep.processes_of(self.root, self.cgroup)
        return problems + ([f"processes still running: {left}"] if left else [])

    def _remove_host_paths(self) -> None:
        """The host paths this engine created, when no other engine runs."""
        if sweep.other_engines(self.root):
            return
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

    def stop(self) -> None:
        with self._mutex:
            if self._state != "running" or os.getpid() != self._owner:
                return
            self._state = "stopped"
            t0 = time.monotonic()
            with contextlib.suppress(Exception):
                atexit.unregister(self.stop)
            if self._pid and pid_alive(self._pid) and ping(self.socket):
                self._remove_containers_and_networks()
            problems = self._stop_processes()
            still = sweep.unmount_all(self.root)
            if still:
                problems.append(f"still mounted: {still}")
            problems += [f"cgroup left: {c}" for c in sweep.remove_cgroups(self.cgroup)]
            # Bridges of networks that were not removed (the engine did not answer): their
            # names are br-<network id>, and the ids are in the engine's own network database.
            ids = re.findall(rb"[0-9a-f]{64}", _read(self.data_root / "network/files/local-kv.db", "rb") or b"")
            self._bridges |= {f"br-{i[:12].decode()}" for i in ids} & net_links()
            for b in self._bridges:
                _del_link(b)
            self._remove_host_paths()
            if not sweep.mounts_under(self.root):
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
        out = [f"process {p}: {c}" for p, c in sweep.processes_of(self.root, self.cgroup).items()]
        out += [f"mount {m}" for m in sweep.mounts_under(self.root)]
        out += [f"cgroup {c}" for c in sweep.cgroup_dirs(self.cgroup)]
        out += [f"bridge {b}" for b in self._bridges if b in net_links()]
        if self.root.exists():
            out.append(f"directory {self.root}")
        if not sweep.other_engines(None):
            out += [f"host path {p}" for p in _HOST_PATHS
                    if not self._host_paths_before.get(p, True) and os.path.lexists(p)]
        return out
