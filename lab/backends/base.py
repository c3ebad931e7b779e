"""The Backend contract: every operation the cluster and the chapter modules ask of the place where
a cluster's servers run, written down once.

A backend is made with ``Backend(home, state)`` (``home``: the lab home; ``state``: the cluster's
state dict, shared with the Cluster, which reloads it and sets ``backend.state`` again).  A node is
described by its *spec*, the dict ``node_spec`` made and the state keeps (``name``, ``role``,
``port``, ``pgdata``, and whatever else the backend needs: a container name, a service).  Every
node is reached by its clients on ``127.0.0.1:spec["port"]`` with the state's superuser login.

Implementations: ``local.LocalBackend`` (processes of this machine), ``compose.ComposeBackend``
(containers of a compose project).  A third kind (servers run by an HA manager such as Patroni)
fits behind the same methods: it says where its nodes are, starts and stops them, and answers for
what differs.  Callers never ask which backend they have; tests/test_backends.py runs the same
checks against each, and checks that each class has every method below with its signature.
"""
from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from .apps import AppHost


@runtime_checkable
class Backend(AppHost, Protocol):
    """Where a cluster's servers run, and everything that differs between such places (the lab's
    apps too: ``app_node``, ``start_app``, ``stop_app``, written down in ``apps.AppHost``)."""

    name: ClassVar[str]
    """Short name, stored in the state (``"local"``, ``"compose"``): for display only."""
    max_replicas: ClassVar[int]
    """How many replicas this backend can run."""
    max_standalones: ClassVar[int]
    """How many standalone nodes (outside the physical cluster) this backend can run (0: none)."""
    state: dict
    """The cluster's state (nodes, ports, secrets), the same dict the Cluster keeps."""
    owner: str
    """The lab home's mark, on the ports it claims and the proxies it routes through."""

    # --- making a cluster -------------------------------------------------------------
    @staticmethod
    def prepare_state(home, state: dict) -> None:
        """Check that this backend can run here and record what it needs in a new cluster's state;
        raise a LabError that says what to do if it cannot."""

    def describe(self) -> str:
        """One line about where the servers run (version, image), for the start-up account."""

    def node_spec(self, name: str, role, port: int) -> dict:
        """The spec of a new node called ``name`` with ``role``, published on ``port``."""

    def create_primary(self, spec: dict, state: dict) -> None:
        """Make the primary's data (its database, roles, the course's objects) and start it."""

    def prepare_replica(self, spec: dict, state: dict, primary_spec: dict, wait_timeout: float = 60,
                        rejoin: bool = False) -> None:
        """Make ``spec`` ready to stream from ``primary_spec``: keep, repair or take a base backup of
        its data (``rejoin``: rewind a former primary's data onto the primary)."""

    def adopt(self, spec: dict, backup: Path) -> None:
        """Make a base backup on this host (taken with ``-R``) this new replica's data (it is moved)."""

    def create_standalone(self, spec: dict, state: dict) -> None:
        """Make a standalone node's data as the primary's was made (same configuration, roles and
        passwords, the course's objects) and start it."""

    def adopt_standalone(self, spec: dict, backup: Path, recovery: "dict | None" = None) -> None:
        """Make a plain base backup on this host (it is moved) a standalone node's data: its standby
        settings removed, ``recovery`` written to postgresql.auto.conf with a recovery.signal when
        given.  The node is not started."""

    # --- where things are ------------------------------------------------------------
    def storage_of(self, spec: dict) -> dict:
        """Where the node keeps its data: ``kind``, ``where``, ``exists``."""

    def pid(self, spec: dict) -> "int | None":
        """The pid of the node's server (its postmaster, or its container's main process) if it runs."""

    def logs(self, spec: dict, tail_lines: int = 50) -> str:
        """The last ``tail_lines`` lines of the node's server log."""

    def primary_address(self) -> "tuple[str, int]":
        """How a replica reaches the current primary directly: (host, port) as the replica sees it."""

    def address_of(self, spec: dict) -> "tuple[str, int]":
        """How another node of the cluster reaches this node: (host, port) as the nodes see it."""

    def archive_dir(self) -> str:
        """The cluster's WAL archive directory as the nodes see it, readable and writable by every
        node's server (created on first call, mode 0700, owned by the server user)."""

    def proxy_address(self) -> str:
        """The address of this host on which a proxy must listen for a replica to reach it."""

    def host_dir(self) -> Path:
        """A directory of this host beside the cluster's data where the lab keeps what it makes from
        the cluster (base backups taken by hand); the server user may read what is put there."""

    def tool(self, spec: dict, args, check: bool = True, timeout: float = 120,
             env: "dict | None" = None) -> subprocess.CompletedProcess:
        """Run a command beside the node's data as the server user (PostgreSQL's tools by name,
        ``LANG=C``); ``env`` adds variables.  A stopped node's data can be read too."""

    def server_file(self, spec: dict, name: str) -> str:
        """The path of a private file called ``name`` that the node's tools read (see ``tool``)."""

    def write_server_file(self, spec: dict, name: str, text: str) -> str:
        """Write ``server_file(spec, name)``: mode 0600, owned by the server user; its path."""

    def remove_server_file(self, spec: dict, name: str, what: str) -> str:
        """Remove ``server_file(spec, name)`` unless a node still needs it; a short account that
        calls the file ``what`` ("removed …", "no …", "kept …: why")."""

    def where(self, spec: dict, path: str) -> str:
        """How a person finds ``path`` of the node's tools (the path itself, or container:path)."""

    def give_to_server(self, path: Path) -> None:
        """Let the server user own ``path`` on this host, when the backend's servers read host files."""

    def directory_out(self, spec: dict, dest: Path) -> "contextlib.AbstractContextManager[str]":
        """A context manager: a directory (its path as the node's tools see it) for a tool to write
        into; when the block ends without an error, what was written is at ``dest`` on this host."""

    def directory_in(self, spec: dict, src: Path) -> "contextlib.AbstractContextManager[str]":
        """A context manager: the host directory ``src`` where the node's tools read it (a copy that
        is removed when the block ends, where they cannot read the host)."""

    # --- lifecycle --------------------------------------------------------------------
    def ensure_port(self, spec: dict) -> bool:
        """Re-claim the node's port, or move it to a free one; True if the port changed."""

    def start(self, spec: dict, state: "dict | None" = None, primary_spec: "dict | None" = None) -> int:
        """Start the node (a replica is prepared towards ``primary_spec`` first) and wait until it is
        ready; its pid.  A running node is left as it is."""

    def wait_ready(self, spec: dict, timeout: "float | None" = None) -> int:
        """Wait until the node's server is ready for connections (at most ``timeout`` seconds, by
        default the backend's own start timeout); its pid.  Raises if it stops first or the time
        passes, with what its log says."""

    def stop(self, spec: dict, timeout: float = 30) -> None:
        """Fast shutdown of the node; SIGKILL if it outlives ``timeout``.  A paused node is thawed first."""

    def stop_many(self, specs, timeout: float = 30) -> None:
        """``stop`` several nodes at once."""

    def kill(self, spec: dict) -> "int | None":
        """SIGKILL the node's server (a crash); the pid it had, None if it was not running."""

    def promote(self, spec: dict, timeout: float = 60) -> None:
        """Promote a running standby; returns once its control file says "in production"."""

    def retarget(self, spec: dict, host: str, port: int) -> None:
        """Point a replica's ``primary_conninfo`` at host:port (reloaded: its WAL receiver reconnects)."""

    def follow(self, spec: dict, primary_spec: dict) -> None:
        """After a promotion: make the replica stream from ``primary_spec``, now and after a restart."""

    def upstream(self, spec: dict) -> "tuple[str, int] | None":
        """Where the replica's ``primary_conninfo`` points: (host, port) as the replica sees it, to
        compare with ``primary_address()`` (a proxy's address differs); None if it cannot be read."""

    # --- faults -----------------------------------------------------------------------
    def pause(self, spec: dict, max_seconds: float) -> str:
        """Freeze a running node's server; it thaws by itself after ``max_seconds`` where the backend
        can arrange it.  A short account of what was done."""

    def resume(self, spec: dict) -> str:
        """Thaw the node (a no-op if it is not paused): "resumed …", "was not paused" or "not running"."""

    def is_paused(self, spec: dict) -> bool:
        """Is the node's server frozen?"""

    def cut(self, spec: dict, hold: bool = False) -> str:
        """Cut a replica off the primary (``hold``: keep its connections open and silent, where the
        backend can); a short account."""

    def heal(self, spec: dict) -> str:
        """Undo ``cut``; a short account."""

    def is_cut(self, spec: dict) -> bool:
        """Is the replica cut off the primary?"""

    # --- ending -----------------------------------------------------------------------
    def remove_data(self, spec: dict) -> None:
        """Remove a stopped node's data (refuses while it runs)."""

    def after_down(self) -> None:
        """Every node is stopped: release what else the backend holds (containers, networks)."""

    def wipe(self) -> None:
        """Remove everything of the cluster that is left once its nodes' data is gone (after a
        killed ``lab.up``, what is still working on it is ended first)."""


__all__ = ["Backend"]
