"""Where a cluster's servers run: the Backend protocol (``base.py``) and its implementations.

``local``   PostgreSQL server processes of this machine (``local.py``)
``compose`` the original course's containers, run by Docker Compose (``compose.py``)

Everything that differs between them is a backend method; no module outside this package
asks which backend it has.  Imports only ``lab.system`` and the foundation below it.
"""
from __future__ import annotations

import os

from ..errors import LabError

NAMES = ("local", "compose")


def backend_class(name: str):
    """The class of the backend called ``name`` (imported on first use: compose needs docker)."""
    if name == "local":
        from .local import LocalBackend
        return LocalBackend
    if name == "compose":
        from .compose import ComposeBackend
        return ComposeBackend
    raise LabError(f"unknown backend {name!r}: use 'local' (processes) or 'compose' (Docker containers)")


def make_backend(home, state: dict):
    """The backend object of a cluster's state (its ``backend`` key; "local" for old states)."""
    return backend_class(state.get("backend", "local"))(home, state)


def choose_backend(backend: "str | None") -> str:
    """An explicit choice, else LAB_BACKEND, else compose where a Docker daemon answers."""
    name = backend or os.environ.get("LAB_BACKEND")
    if name:
        backend_class(name)
        return name
    from .compose import compose_available
    return "compose" if compose_available()[0] else "local"
