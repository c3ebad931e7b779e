"""The lab home: where a cluster's state lives on disk (not in the kernel).

    <home>/state.json   ports, pids, data directories, generated passwords (mode 0600)
    <home>/lock         serialises reads and writes of state.json between processes (short)
    <home>/operation    the lab's lock: held by the process (a notebook's kernel) that is changing
                        the cluster, for the whole operation; names that process for the others
    <home>/kernels/     one file per process that uses this lab (a second notebook is told)

The home is private (mode 0700 when the lab creates it): state.json holds the passwords.

Default home: ``.lab/`` in the repository; ``LAB_HOME`` overrides.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import stat
import sys
import tempfile
import threading
import time
from pathlib import Path

from ..i18n import _
from ..errors import LabBusy, LabHomeError
from .paths import REPO
from .process import pid_alive

STATE_VERSION = 1


def default_home() -> Path:
    env = os.environ.get("LAB_HOME")
    if env:
        return Path(env).expanduser().absolute()
    # The repository's .lab/ whatever the working directory (a kernel runs in its notebook's folder,
    # notebooks/ or notebooks/es/; `make down` in the repository): one cluster for all of them.
    if (REPO / "pyproject.toml").exists() and os.access(REPO, os.W_OK):
        return REPO / ".lab"
    return Path.cwd().absolute() / ".lab"


def cache_dir() -> Path:
    env = os.environ.get("LAB_CACHE")
    if env:
        return Path(env).expanduser().absolute()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pglab"


class LabHome:
    def __init__(self, path: "str | Path | None" = None):
        self.path = Path(path).expanduser().absolute() if path else default_home()
        self._local = threading.local()

    def __repr__(self):
        return f"LabHome({str(self.path)!r})"

    @property
    def owner(self) -> str:
        """The string that marks this home's port claims."""
        return str(self.path)

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    def ensure(self) -> None:
        """Create the home (mode 0700) or check it: writable, and not readable by other users."""
        try:
            if not self.path.exists():
                self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
                os.chmod(self.path, 0o700)  # whatever the umask
            else:
                self._make_private()
            probe = self.path / f".write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise LabHomeError(
                _("lab home {home} is not writable ({strerror}): set LAB_HOME to a writable directory").format(
                    home=self.path, strerror=e.strerror)
            ) from None

    def _make_private(self) -> None:
        """An existing home that others may list or write loses those bits (said once).  The
        execute bits stay: a server run as another user may reach its data through the home."""
        try:
            st = self.path.stat()
        except OSError:
            return
        mode = stat.S_IMODE(st.st_mode)
        if not mode & 0o066 or getattr(self._local, "warned", False):
            return
        self._local.warned = True
        new = mode & ~0o066
        try:
            os.chmod(self.path, new)
            print(_("lab home {home} was readable by other users (mode {mode:o}); it is {new:o} now "
                    "(its state.json holds this cluster's passwords)").format(
                home=self.path, mode=mode, new=new), file=sys.stderr)
        except OSError:
            print(_("lab home {home} is readable by other users (mode {mode:o}) and not yours to change: "
                    "chmod go-rw {home} (its state.json holds this cluster's passwords)").format(
                home=self.path, mode=mode), file=sys.stderr)

    def default_data_root(self, reachable) -> Path:
        """``<home>/data`` if the server user can reach it, else a directory in the system temp dir."""
        if reachable(self.path):
            return self.path / "data"
        digest = hashlib.sha1(str(self.path).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"pglab-data-{digest}"

    # --- state -----------------------------------------------------------------
    def load(self) -> "dict | None":
        try:
            text = self.state_file.read_text()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise LabHomeError(_("cannot read {state_file} ({strerror}): check its permissions").format(
                state_file=self.state_file, strerror=e.strerror)) from None
        try:
            state = json.loads(text)
        except json.JSONDecodeError:
            raise LabHomeError(
                _("{state_file} is corrupt: stop any servers of this lab by hand, then remove {home}").format(
                    state_file=self.state_file, home=self.path)
            ) from None
        if state.get("version") != STATE_VERSION:
            raise LabHomeError(_("{state_file} was written by another version of the lab: remove {home}").format(
                state_file=self.state_file, home=self.path))
        return state

    def save(self, state: dict) -> None:
        self.ensure()
        state["version"] = STATE_VERSION
        tmp = self.state_file.with_suffix(f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(state, f, indent=2, sort_keys=True)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.state_file)

    def forget(self) -> None:
        self.state_file.unlink(missing_ok=True)

    # --- lock ------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self):
        """An exclusive lock between processes; re-entrant within one thread.  Taken inside the
        lab's operation lock (always in that order: no two processes wait for each other)."""
        with self.operation():
            with self._state_lock():
                yield

    def operation(self, what: str = "", wait: "float | None" = None):
        """The lab's lock (see ``_operation`` below): ``with home.operation("failover"): ...``."""
        return contextlib.contextmanager(_operation)(self, what, wait)

    def in_operation(self) -> bool:
        """Whether this process holds the lab's lock already (a lab call inside another one)."""
        with _held_guard:
            return str(self.path) in _held

    @contextlib.contextmanager
    def _state_lock(self):
        depth = getattr(self._local, "depth", 0)
        if depth:
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        self.ensure()
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._local.depth = 1
            try:
                yield
            finally:
                self._local.depth = 0
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


# --- the lab's lock: one process at a time changes a lab's cluster ----------------------------
LOCK_WAIT = float(os.environ.get("LAB_LOCK_WAIT", "120"))  # seconds a second notebook waits
_held: dict = {}                # home path -> {"depth": n, "fd": fd}, in this process (any thread)
_held_guard = threading.Lock()


def who_am_i() -> str:
    """This process as a student would recognise it: the notebook of a Jupyter kernel, else its command."""
    name = os.environ.get("JPY_SESSION_NAME")  # set by Jupyter Server for a notebook's kernel
    if name:
        return _("notebook {notebook} (pid {pid})").format(notebook=Path(name).name, pid=os.getpid())
    if "ipykernel" in sys.modules:
        return _("a Jupyter kernel (pid {pid})").format(pid=os.getpid())
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    cmd = " ".join([prog, *sys.argv[1:]]) if prog and not prog.startswith("-") else "python"
    return f"{cmd[:60]} (pid {os.getpid()})"


def _holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, ValueError):
        return {}


def _holder_line(h: dict) -> str:
    if not h:
        return _("another process")
    since = time.time() - h.get("since", time.time())
    who = h.get('who', 'pid ' + str(h.get('pid', '?')))
    if h.get("what"):
        return _("{who}, in {what} for {seconds:.0f} s,").format(who=who, what=h['what'], seconds=since)
    return _("{who}, for {seconds:.0f} s,").format(who=who, seconds=since)


def _operation(self: "LabHome", what: str, wait: "float | None"):
    """The lab's lock, held while the cluster is being changed (an up, a failover, a stop ...).
    Re-entrant within the process, whatever the thread (a lab call may wait for its own threads).
    Another process waits for it, saying once for whom, up to ``wait`` seconds (LAB_LOCK_WAIT,
    120 by default), then raises LabBusy naming the process that holds it."""
    key = str(self.path)
    with _held_guard:
        entry = _held.get(key)
        if entry is not None:
            entry["depth"] += 1
    if entry is not None:
        try:
            yield
        finally:
            with _held_guard:
                entry["depth"] -= 1
        return
    self.ensure()
    fd = os.open(self.path / "operation", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _acquire(fd, what, LOCK_WAIT if wait is None else wait)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "who": who_am_i(), "what": what,
                                      "since": time.time()}).encode(), 0)
            with _held_guard:
                _held[key] = {"depth": 1, "fd": fd}
            try:
                yield
            finally:
                with _held_guard:
                    _held.pop(key, None)
                os.ftruncate(fd, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, what: str, wait: float) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    holder = _holder(fd)
    print(_("waiting: {holder} is changing this lab's cluster; "
            "{what} goes on when it is done").format(
        holder=_holder_line(holder), what=what or _("this call")), file=sys.stderr, flush=True)
    deadline = time.monotonic() + wait
    while True:
        time.sleep(0.05)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise LabBusy(_("{holder} is still changing this lab's cluster after {wait:g} s: "
                                "let it finish, or shut that kernel down (Kernel › Shut Down Kernel), then run "
                                "this cell again").format(holder=_holder_line(_holder(fd)), wait=wait)) from None


# --- who else uses this lab: one file per process under <home>/kernels ------------------------
def register_user(home: LabHome) -> "list[str]":
    """Note that this process uses ``home``; the other live processes that do (a second notebook's
    kernel), as lines a student recognises."""
    d = home.path / "kernels"
    try:
        d.mkdir(mode=0o700, exist_ok=True)
        (d / str(os.getpid())).write_text(json.dumps({"who": who_am_i(), "since": time.time()}))
    except OSError:
        return []
    others = []
    for f in d.iterdir():
        if not f.name.isdigit() or int(f.name) == os.getpid():
            continue
        if not pid_alive(int(f.name)):
            f.unlink(missing_ok=True)
            continue
        try:
            others.append(json.loads(f.read_text()).get("who") or f"pid {f.name}")
        except (OSError, ValueError):
            others.append(f"pid {f.name}")
    return others

