"""What a self-check has seen on earlier runs, for exercises whose evidence PostgreSQL does not keep.

A slot created and dropped leaves no trace in the server (no WAL, no log line), and a replica rebuilt
from a fresh backup has no memory of having lost its WAL.  The checks of such exercises write down
what they saw in ``<lab home>/exercises.json`` (mode 0600), per cluster (the time it was created,
from its state: a wiped and recreated cluster starts with nothing seen), and read it back.  Not the
primary's ``system_identifier``: every cluster is copied from one cached initdb template.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

FILE = "exercises.json"


def _path(cluster) -> Path:
    return Path(cluster.home.path) / FILE


def _cluster_id(cluster) -> str:
    state = cluster._state  # the lab's own record of this cluster
    return f"created {state.get('created') or state.get('data_root')}"


def _load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def recall(cluster, exercise_id: str) -> dict:
    """What the check of ``exercise_id`` wrote down for this cluster ({} if nothing)."""
    seen = _load(_path(cluster)).get(_cluster_id(cluster), {}).get(exercise_id, {})
    return seen if isinstance(seen, dict) else {}


def remember(cluster, exercise_id: str, seen: dict) -> None:
    """Write down ``seen`` (JSON-able) as what the check of ``exercise_id`` knows about this cluster."""
    path = _path(cluster)
    data = _load(path)
    data.setdefault(_cluster_id(cluster), {})[exercise_id] = seen
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
