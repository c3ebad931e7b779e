"""Every self-check's result, recorded in the student's lab home for the instructor.

``check`` records each result it returns in ``<lab home>/progress.json`` (mode 0600, replaced at once
by ``memory.write_json``): per exercise the last answer (``ok``, ``message``, ``time``), how many
times it was checked (``attempts``) and when it first passed (``passed``, kept once set: a chapter
done stays done when a later chapter changes the cluster).  The instructor's tool reads the file
as root on the hub host (``lab.classroom``), without opening a student's notebook.  Chapter 08's
cluster lives in ``<lab home>/ha``: its results go to the lab home above it, with the others.

The record is a side note: a home that cannot be written (read-only, full, another owner's) loses
the note, never the check's answer.  Wiping the cluster (``down(wipe=True)``) keeps the file.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from ..ha import HACluster
from .memory import read_json, write_json

FILE = "progress.json"
VERSION = 1
MESSAGE_LIMIT = 300  # characters of a check's message kept: enough for the hint, not for a table


def lab_home_of(cluster) -> "Path | None":
    """The student's lab home of ``cluster`` (None for something that is not a lab's cluster)."""
    path = getattr(getattr(cluster, "home", None), "path", None)
    if not isinstance(path, Path):
        return None
    return path.parent if isinstance(cluster, HACluster) else path


@contextlib.contextmanager
def _locked(home: Path):
    """Two kernels checking at once each add their attempt: the read-change-write runs under an
    flock on the lab home directory itself (no lock file to leave behind)."""
    fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def record(cluster, exercise_id: str, ok: bool, message: str) -> None:
    """Add one result of ``exercise_id`` to the student's record; never raises."""
    try:
        home = lab_home_of(cluster)
        if home is None or not home.is_dir():
            return
        now = time.time()
        with _locked(home):
            data = read_json(home / FILE)
            exercises = data.get("exercises") if isinstance(data.get("exercises"), dict) else {}
            old = exercises.get(exercise_id) if isinstance(exercises.get(exercise_id), dict) else {}
            attempts = old.get("attempts") if isinstance(old.get("attempts"), int) else 0
            entry = {"ok": bool(ok), "message": str(message)[:MESSAGE_LIMIT], "time": now,
                     "attempts": attempts + 1, "passed": old.get("passed")}
            if ok and not entry["passed"]:
                entry["passed"] = now
            exercises[exercise_id] = entry
            write_json(home / FILE, {"version": VERSION, "exercises": exercises})
    except Exception:  # noqa: BLE001 (the record is a side note: the student still gets the answer)
        return


def results(home) -> "dict[str, dict]":
    """What ``record`` wrote in lab home ``home``: exercise id -> its entry ({} when nothing)."""
    exercises = read_json(Path(home) / FILE).get("exercises")
    if not isinstance(exercises, dict):
        return {}
    return {k: v for k, v in exercises.items() if isinstance(v, dict)}
