"""One supervisor for the background processes a lab home runs (pgAdmin, the crypto app).

A service lives in ``<lab home>/<name>/`` (mode 0700):

    <state file>    what it started and how to reach it: pids, ports, URLs, secrets (mode 0600)
    <process>.log   one log per process, this start's output
    lock            an flock: two kernels starting or stopping it wait for each other

Each process runs in a session of its own and carries ``LAB_SERVICE=<name>:<lab home>`` in its
environment, inherited by its children: that mark, not a pid alone (pids are recycled), says a
process is ours, so a restarted kernel re-attaches from the state file and ``stop()`` finds
every child too.  Readiness is an HTTP answer polled with a deadline; when the process exits or
the deadline passes first, the error carries the last lines of its log.

>>> svc = Service(LabHome(tmp), "demo")                        # doctest: +SKIP
>>> with svc.locked(), svc.starting() as run:                  # doctest: +SKIP
...     port, = run.claim_ports(1)
...     proc = run.spawn("http", [sys.executable, "-m", "http.server", str(port)])
...     run.wait_ready("http", proc, f"http://127.0.0.1:{port}/")
...     svc.write_state({"port": port, "pids": run.pids})
>>> svc.stop()                                                 # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import psutil

from ..i18n import _
from ..errors import LabError, LabHomeError
from ..system import ports
from ..system.home import LabHome
from ..system.process import pid_alive, spawn_detached, terminate_tree, wait_gone

MARK = "LAB_SERVICE"
HOST = "127.0.0.1"
STOP_TIMEOUT = 10.0


def home_of(where) -> LabHome:
    """The lab home of ``where``: a LabHome, anything with a ``.home`` (a Cluster), a path, or None."""
    if isinstance(where, LabHome):
        return where
    home = getattr(where, "home", None)
    if isinstance(home, LabHome):
        return home
    return LabHome(where)


def mark(name: str, home: LabHome) -> str:
    """The value of ``LAB_SERVICE`` in the environment of every process of this service."""
    return f"{name}:{home.path}"


def marked_pids(value: "str | None" = None, match: "Callable[[list], bool] | None" = None) -> "list[int]":
    """Live processes of this machine whose ``LAB_SERVICE`` is ``value`` (any, if None) or whose
    command line satisfies ``match``; sorted."""
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if match is not None and match(p.cmdline()):
                out.append(p.pid)
                continue
            got = p.environ().get(MARK)
        except (psutil.Error, OSError):
            continue
        if got is not None and (value is None or got == value) and pid_alive(p.pid):
            out.append(p.pid)
    return sorted(out)


def answers(url: str, body: "bytes | None" = None) -> bool:
    """Does ``url`` answer 200 (and, if given, begin its body with ``body``)?"""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200 and (body is None or r.read(len(body) + 8).strip().startswith(body))
    except (OSError, ValueError):
        return False


def wait_answer(url: "str | None", timeout: float, body: "bytes | None" = None) -> bool:
    """Poll ``url`` until it answers or ``timeout`` passes; True if it answered."""
    deadline = time.monotonic() + timeout
    while url and not answers(url, body):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return bool(url)


def tail(path: Path, n: int = 12, offset: int = 0, noise: Iterable[str] = ()) -> str:
    """The last ``n`` non-empty lines of ``path`` after byte ``offset`` (lines holding ``noise`` left out)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(offset, f.tell() - 64 * 1024))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return "\n".join([ln for ln in lines if ln.strip() and not any(x in ln for x in noise)][-n:])


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only (mode 0600), atomically."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


@contextlib.contextmanager
def flock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` between processes (created 0600)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class Service:
    """The files, processes and ports of one background service of one lab home."""

    def __init__(self, where, name: str, state_name: "str | None" = None, title: "str | None" = None):
        self.home = home_of(where)
        self.name = name
        self.title = title or name
        self.dir = self.home.path / name
        self.state_file = self.dir / (state_name or f"{name}.json")
        self.lock_file = self.dir / "lock"
        self.mark = mark(name, self.home)

    def __repr__(self):
        return f"Service({self.name!r}, {str(self.dir)!r})"

    # --- files ---------------------------------------------------------------------------
    def ensure_dir(self) -> None:
        self.home.ensure()
        self.dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.dir, 0o700)

    def exists(self) -> bool:
        return self.dir.is_dir()

    def log(self, process: str) -> Path:
        return self.dir / f"{process}.log"

    def read_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def write_state(self, state: dict) -> None:
        write_private(self.state_file, json.dumps(state, indent=2, sort_keys=True) + "\n")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Two kernels starting or stopping this service wait for each other."""
        self.ensure_dir()
        with flock(self.lock_file):
            yield

    # --- processes -----------------------------------------------------------------------
    def ours(self, pid) -> bool:
        """Is ``pid`` alive and a process of this service (its mark), not a recycled pid?"""
        if not pid or not pid_alive(pid):
            return False
        try:
            return psutil.Process(int(pid)).environ().get(MARK) == self.mark
        except psutil.AccessDenied:
            return True  # alive, and its environment is not ours to read (macOS): the best we know
        except (psutil.Error, OSError, ValueError):
            return False

    def running(self, pids: dict, needed: "Iterable[str] | None" = None) -> bool:
        """Are the processes ``needed`` (all recorded, by default) of ``pids`` alive and ours?"""
        names = list(needed) if needed is not None else list(pids)
        return bool(names) and all(self.ours(pids.get(n)) for n in names)

    def pids(self) -> "list[int]":
        """Every live process of this machine that carries this service's mark."""
        return marked_pids(self.mark)

    def spawn(self, process: str, argv: list, env: "dict | None" = None, cwd: "Path | None" = None,
              drop: Iterable[str] = ()) -> subprocess.Popen:
        """Start ``argv`` in a session of its own, output to ``<process>.log``, marked as ours."""
        self.ensure_dir()
        child_env = {k: v for k, v in os.environ.items() if k not in set(drop)}
        child_env.update(env or {})
        child_env.update({MARK: self.mark, "PYTHONUNBUFFERED": "1"})
        child_env.setdefault("HOME", str(self.dir))
        os.close(os.open(self.log(process), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))  # this start's output
        return spawn_detached(argv, self.log(process), child_env, cwd=cwd or self.dir)

    def wait_ready(self, process: str, proc: subprocess.Popen, url: str, timeout: float,
                   body: "bytes | None" = None, logs: "Callable[[], str] | None" = None) -> None:
        """Poll ``url`` until it answers; a LabError with the log's last lines if ``proc`` exits
        or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while not answers(url, body):
            if proc.poll() is not None:
                raise LabError(_("{who} exited (code {code}) before answering on "
                                 "{url}; its last lines:\n{log_lines}").format(
                    who=self._who(process), code=proc.returncode, url=url, log_lines=(logs or self._logs(process))()))
            if time.monotonic() > deadline:
                raise LabError(_("{who} did not answer on {url} within {timeout:.0f} s; "
                                 "its last lines:\n{log_lines}").format(
                    who=self._who(process), url=url, timeout=timeout, log_lines=(logs or self._logs(process))()))
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _who(self, process: str) -> str:
        return _(self.title) if process == self.name else _("{title}'s {process}").format(
            title=_(self.title), process=process)

    def _logs(self, process: str) -> Callable[[], str]:
        return lambda: tail(self.log(process)) or _("(nothing in {log})").format(log=self.log(process))

    def terminate(self, pids: Iterable, timeout: float = STOP_TIMEOUT) -> "list[int]":
        """SIGTERM each of ``pids`` that is ours and its process tree, SIGKILL after ``timeout``;
        then whatever else still carries the mark (a child that left the tree).  The pids ended."""
        ended = []
        for pid in [p for p in pids if self.ours(p)]:
            if not terminate_tree(pid, timeout):
                raise LabError(_("{title} (pid {pid}) outlived SIGKILL: stop it by hand (kill -9 {pid})").format(
                    title=_(self.title), pid=pid))
            wait_gone(pid, 5)
            ended.append(pid)
        for pid in self.pids():  # orphans re-parented away from the tree, same mark
            terminate_tree(pid, timeout)
            ended.append(pid)
        return ended

    # --- ports -----------------------------------------------------------------------------
    def claim_ports(self, n: int, avoid: Iterable[int] = (), preferred: Iterable = ()) -> "list[int]":
        """``n`` free ports claimed for this lab home: the ``preferred`` ones (a stable URL) if still
        free, never one of ``avoid`` (the nodes' ports, even a stopped node's: it takes its port
        back at its next start, and a claim of the same home would not keep it from doing so)."""
        avoid = set(avoid)
        want = [p for p in preferred if p and p not in avoid]
        owner = self.home.owner
        for _attempt in range(20):
            got = ports.claim_free_ports(n, owner, preferred=want)
            if not set(got) & avoid and all(ports.port_is_free(p) for p in got):
                return got
            ports.release(got, owner)  # a fresh claim next time (random picks skip ports the home holds)
            want = []
        raise LabError(_("found no {n} free port(s) for {title} on 127.0.0.1: stop other servers, then retry").format(
            n=n, title=_(self.title)))

    def claim_again(self, held: Iterable) -> None:
        """A running service keeps its claims (``lab.down()`` releases every claim of the home)."""
        for p in held:
            if p:
                with contextlib.suppress(LabError):
                    ports.claim(p, self.home.owner)

    def release_ports(self, held: Iterable) -> None:
        """Release ``held``, except a port a node of this home's cluster has now (its claim too)."""
        nodes = self._node_ports()
        ports.release([p for p in held if p and p not in nodes], self.home.owner)

    def _node_ports(self) -> set:
        try:
            state = self.home.load() or {}
        except LabHomeError:
            return set()
        return {spec.get("port") for spec in state.get("nodes", {}).values()}

    # --- start and stop ----------------------------------------------------------------------
    @contextlib.contextmanager
    def starting(self, keep: Iterable[str] = ()) -> Iterator["Start"]:
        """A start: if it fails half-way, every process it spawned is ended, every port it claimed
        released and the state file cut down to the keys ``keep`` before the error leaves."""
        run = Start(self)
        try:
            yield run
        except BaseException:
            try:
                run.undo()
            finally:
                state = self.read_state()
                if state:
                    self.write_state({k: state[k] for k in keep if k in state})
            raise

    def stop(self, timeout: float = STOP_TIMEOUT, keep: Iterable[str] = ()) -> bool:
        """End every process of this service and release its ports; the state file keeps only the
        keys ``keep`` (a login, a token).  Call it holding ``locked()``.  True if one ran."""
        state = self.read_state()
        was = bool(self.terminate(state.get("pids", {}).values(), timeout))
        self.release_ports(state.get("ports", []))
        if state:
            self.write_state({k: state[k] for k in keep if k in state})
        return was

    def wipe(self) -> None:
        """Remove the service's directory (stop it first)."""
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Start:
    """What one start has done so far: processes spawned, ports claimed."""

    service: Service
    pids: dict = field(default_factory=dict)
    ports: list = field(default_factory=list)

    def claim_ports(self, n: int, avoid: Iterable[int] = (), preferred: Iterable = ()) -> "list[int]":
        got = self.service.claim_ports(n, avoid, preferred)
        self.ports += got
        return got

    def spawn(self, process: str, argv: list, **kw) -> subprocess.Popen:
        proc = self.service.spawn(process, argv, **kw)
        self.pids[process] = proc.pid
        return proc

    def wait_ready(self, process: str, proc: subprocess.Popen, url: str, timeout: float, **kw) -> None:
        self.service.wait_ready(process, proc, url, timeout, **kw)

    def undo(self) -> None:
        try:
            self.service.terminate(self.pids.values(), timeout=5)
        finally:
            self.service.release_ports(self.ports)
