"""What a self-check has seen on earlier runs, for exercises whose evidence PostgreSQL does not keep.

A slot created and dropped leaves no trace in the server (no WAL, no log line), and a replica rebuilt
from a fresh backup has no memory of having lost its WAL.  The checks of such exercises write down
what they saw in ``<lab home>/exercises.json`` (mode 0600), per cluster (the time it was created,
from its state: a wiped and recreated cluster starts with nothing seen), and read it back.  Not the
primary's ``system_identifier``: every cluster is copied from one cached initdb template.

``read_json`` / ``write_json`` are the exercises' one way to keep a JSON file in the lab home; the
record of every check's result (``progress.py``) uses them too.
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


def read_json(path: Path) -> dict:
    """A JSON object written by ``write_json`` ({} when the file is missing, unreadable or not an object)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: dict) -> None:
    """Replace ``path`` with ``data`` at once (mode 0600): a reader sees the old file or the new one,
    never half of one.  The temporary name carries the pid, so two kernels writing at once do not
    write into each other's file.  Root writing in someone else's lab home (a student's, on a hub)
    leaves the file to the directory's owner, never a root-owned file they cannot replace."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.chmod(tmp, 0o600)  # an old temporary file keeps its mode through O_CREAT
        if os.geteuid() == 0:
            owner = path.parent.stat()
            if owner.st_uid != 0:
                os.chown(tmp, owner.st_uid, owner.st_gid)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def recall(cluster, exercise_id: str) -> dict:
    """What the check of ``exercise_id`` wrote down for this cluster ({} if nothing)."""
    seen = read_json(_path(cluster)).get(_cluster_id(cluster), {}).get(exercise_id, {})
    return seen if isinstance(seen, dict) else {}


def remember(cluster, exercise_id: str, seen: dict) -> None:
    """Write down ``seen`` (JSON-able) as what the check of ``exercise_id`` knows about this cluster."""
    path = _path(cluster)
    data = read_json(path)
    data.setdefault(_cluster_id(cluster), {})[exercise_id] = seen
    write_json(path, data)
