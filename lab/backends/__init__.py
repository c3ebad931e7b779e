"""Where a cluster's servers run: the Backend protocol (``base.py``) and its implementations.

``local``   PostgreSQL server processes of this machine (``local.py``)
``compose`` the original course's containers, run by Docker Compose (``compose.py``)
``patroni`` PostgreSQL processes run by Patroni over etcd, behind HAProxy (``patroni.py``, chapter 08)
``patroni-compose`` the same as containers (``patroni_compose.py``, compose/docker-compose.ha.yml)

Everything that differs between them is a backend method; no module outside this package
asks which backend it has.  Imports only ``lab.system`` and the foundation below it.
"""
from __future__ import annotations

import os

from ..i18n import _
from ..errors import LabError
from .base import Backend
from .compose import ComposeBackend, compose_available
from .local import LocalBackend
from .patroni import PatroniBackend
from .patroni_compose import PatroniComposeBackend

CLASSES = {"local": LocalBackend, "compose": ComposeBackend, "patroni": PatroniBackend,
           "patroni-compose": PatroniComposeBackend}
NAMES = ("local", "compose")  # what lab.up(backend=...) takes; the "patroni*" clusters are made by lab.ha.up()

__all__ = ["Backend", "LocalBackend", "ComposeBackend", "PatroniBackend", "PatroniComposeBackend", "CLASSES", "NAMES", "backend_class", "make_backend",
           "choose_backend"]


def backend_class(name: str) -> "type[Backend]":
    """The class of the backend called ``name``."""
    try:
        return CLASSES[name]
    except (KeyError, TypeError):
        raise LabError(_("unknown backend {name!r}: use 'local' (processes) or 'compose' (Docker containers)").format(
            name=name)) from None


def make_backend(home, state: dict) -> Backend:
    """The backend object of a cluster's state (its ``backend`` key; "local" for old states)."""
    return backend_class(state.get("backend", "local"))(home, state)


def choose_backend(backend: "str | None") -> str:
    """An explicit choice, else LAB_BACKEND, else compose where a Docker daemon answers."""
    name = backend or os.environ.get("LAB_BACKEND")
    if name:
        backend_class(name)
        return name
    return "compose" if compose_available()[0] else "local"
