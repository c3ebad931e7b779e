"""Where a backend runs the lab's apps (pgAdmin, the crypto app): part of the Backend contract.

``lab.services`` decides what an app runs and is given (pgAdmin's servers.json, the crypto
app's settings); a backend only says where it runs.  The compose backend runs pgAdmin as a
service of its compose project (``compose_apps.py``); a backend that has no place of its own
for an app (local, and compose for the crypto app) answers ``None`` and ``lab.services`` runs
it as a supervised process of this machine.  Nobody asks which backend it is.

The three methods below are written down once, in ``AppHost``; ``lab/backends/base.py``'s
Backend protocol extends it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

HOST = "127.0.0.1"


@dataclass(frozen=True)
class AppNode:
    """A node as an app run by this backend reaches it: the name it shows, host and port."""

    name: str
    host: str
    port: int


@dataclass(frozen=True)
class AppEndpoints:
    """Where a backend runs an app: its URLs (``{"pgadmin": url}``, ``{"api": url, "dashboard": url}``),
    the login it was given (``email``/``password``, or ``token``), its published ports, and a
    short note for a student on where it runs (its container and how to see its log)."""

    urls: dict
    login: dict = field(default_factory=dict, repr=False)
    ports: tuple = ()
    where: str = ""


class AppHost(Protocol):
    """The part of the Backend contract that places the lab's apps."""

    def app_node(self, spec: dict) -> AppNode:
        """How an app this backend runs reaches the node of ``spec`` (its state entry)."""
        ...

    def start_app(self, name: str, config: "dict | None" = None, quiet: bool = False) -> "AppEndpoints | None":
        """Start (or re-attach to) the app ``name`` ("pgadmin", "webapp") where this backend runs
        it, with ``config`` rendered by lab.services (pgadmin: ``{"servers": <servers.json>}``);
        ``None``: this backend has no place for it, run it as a local supervised process."""
        ...

    def stop_app(self, name: str) -> bool:
        """Stop the app ``name`` if this backend runs it; True if it ran (local: always False)."""
        ...


class LocalApps:
    """Mixed into backends whose apps run as local processes (lab.services supervises them)."""

    def app_node(self, spec: dict) -> AppNode:
        return AppNode(name=spec["name"], host=HOST, port=int(spec["port"]))

    def start_app(self, name: str, config: "dict | None" = None, quiet: bool = False) -> "AppEndpoints | None":
        return None

    def stop_app(self, name: str) -> bool:
        return False
