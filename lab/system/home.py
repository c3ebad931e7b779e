"""The lab home: where a cluster's state lives on disk (not in the kernel).

    <home>/state.json   ports, pids, data directories, generated passwords (mode 0600)
    <home>/lock         serialises up/down/add/remove between processes

Default home: ``.lab/`` in the repository; ``LAB_HOME`` overrides.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path

from ..errors import LabHomeError

STATE_VERSION = 1


def default_home() -> Path:
    env = os.environ.get("LAB_HOME")
    if env:
        return Path(env).expanduser().absolute()
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").exists() and os.access(repo, os.W_OK):
        return repo / ".lab"
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
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise LabHomeError(
                f"lab home {self.path} is not writable ({e.strerror}): set LAB_HOME to a writable directory"
            ) from None

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
            raise LabHomeError(f"cannot read {self.state_file} ({e.strerror}): check its permissions") from None
        try:
            state = json.loads(text)
        except json.JSONDecodeError:
            raise LabHomeError(
                f"{self.state_file} is corrupt: stop any servers of this lab by hand, then remove {self.path}"
            ) from None
        if state.get("version") != STATE_VERSION:
            raise LabHomeError(f"{self.state_file} was written by another version of the lab: remove {self.path}")
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
        """An exclusive lock between processes; re-entrant within one thread."""
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
