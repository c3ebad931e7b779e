"""Background services a lab starts next to its cluster (pgAdmin, the crypto app).

``supervisor.py`` runs, re-attaches to and stops their processes; ``pgadmin.py`` and
``webapp.py`` say what each runs and is given.  ``SERVICES`` is the registry ``down()`` goes
through: like ``docker compose down``, stopping a cluster stops its services too.

Nothing here imports the cluster or a chapter module: a start receives the cluster as an
argument; a stop needs only the lab home.
"""
from __future__ import annotations

from . import pgadmin, webapp
from .supervisor import Service, home_of

# in stopping order: the app (a client of the nodes) first
SERVICES = {webapp.NAME: webapp, pgadmin.NAME: pgadmin}

__all__ = ["SERVICES", "Service", "stop_all", "status_all", "pgadmin", "webapp"]


def stop_all(home, wipe: bool = False) -> "list[str]":
    """Stop every service of the lab home ``home`` (a LabHome, a path, or None for the default);
    ``wipe=True`` removes their files too.  The names of those that were running."""
    h = home_of(home)
    return [name for name, svc in SERVICES.items() if svc.stop(h, quiet=True, wipe=wipe)]


def status_all(home=None) -> dict:
    """Each service's status for the lab home ``home``."""
    h = home_of(home)
    return {name: svc.status(h) for name, svc in SERVICES.items()}
