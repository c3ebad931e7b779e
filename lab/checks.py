"""Self-check exercises: each looks at the real cluster and says ✅, or ❌ with a hint.

>>> lab.checks.check("01.2", cluster, answer=1)     # doctest: +SKIP
✅ 01.2 (how many replicas stream): right: 1 replica streams from the primary (replica1)
>>> lab.checks.exercises("01")                      # doctest: +SKIP

A wrong answer, or a cluster in the wrong state, is a ❌ with a hint, never an exception (the
notebooks run end to end in CI with the exercises unanswered).  Exercises that want an answer
take ``...`` (Ellipsis) as "not answered yet".  Chapters add theirs with ``@exercise("02.1", ...)``.
"""
from __future__ import annotations

import datetime as dt
import html
import numbers
import re
from dataclasses import dataclass
from typing import Callable

import pandas as pd

from .errors import LabError, Timeout
from .node import Node

NOT_ANSWERED = ...
# The original course's container names, which students may answer with.
_ORIGINAL_NAMES = {"pg-master": "primary", "pg-replica": "replica1"}


@dataclass(frozen=True)
class Result:
    """What ``check`` returns: ``ok`` and a one-line ``message`` (a hint when not ok)."""
    exercise: str
    title: str
    ok: bool
    message: str

    def __bool__(self):
        return self.ok

    def __repr__(self):
        return f"{'✅' if self.ok else '❌'} {self.exercise} ({self.title}): {self.message}"

    def _repr_html_(self):
        colour = "#1a7f37" if self.ok else "#b3261e"
        return (f'<div style="border-left:4px solid {colour};padding:2px 8px">'
                f'{"✅" if self.ok else "❌"} <b>{html.escape(self.exercise)}</b> '
                f'<i>{html.escape(self.title)}</i>: {html.escape(self.message)}</div>')


@dataclass(frozen=True)
class Exercise:
    id: str
    title: str
    wants_answer: bool
    run: Callable  # (cluster) or (cluster, answer) -> (ok, message)


_EXERCISES: dict = {}


def exercise(exercise_id: str, title: str, answer: bool = False):
    """Register a check: ``@exercise("02.1", "what it checks", answer=True)`` over a function
    ``(cluster[, answer]) -> (ok, message)``."""
    if not re.fullmatch(r"\d\d\.\d+", exercise_id):
        raise ValueError(f"exercise ids look like '01.2', not {exercise_id!r}")

    def register(fn):
        if exercise_id in _EXERCISES:
            raise ValueError(f"exercise {exercise_id} is registered twice")
        _EXERCISES[exercise_id] = Exercise(exercise_id, title, answer, fn)
        return fn
    return register


def exercises(chapter: "str | None" = None) -> pd.DataFrame:
    """The exercises (of one chapter, e.g. ``"01"``): id, title, whether it wants an answer."""
    _load_chapter(chapter)
    rows = [dict(exercise=e.id, title=e.title, answer=e.wants_answer)
            for e in sorted(_EXERCISES.values(), key=lambda e: e.id)
            if chapter is None or e.id.split(".")[0] == chapter]
    return pd.DataFrame(rows, columns=["exercise", "title", "answer"])


def check(exercise_id: str, cluster, answer=NOT_ANSWERED) -> Result:
    """Check exercise ``exercise_id`` against the running ``cluster``.

    >>> lab.checks.check("01.3", cluster, answer="replica1")   # doctest: +SKIP
    """
    ex = _EXERCISES.get(exercise_id) or _load_chapter(exercise_id.split(".")[0]).get(exercise_id)
    if ex is None:
        _load_chapter(None)
        known = ", ".join(sorted(_EXERCISES))
        raise LabError(f"no exercise {exercise_id!r}: the exercises are {known}")
    call = f"lab.checks.check({exercise_id!r}, cluster"
    if not ex.wants_answer and answer is not NOT_ANSWERED:
        raise LabError(f"exercise {exercise_id} checks the cluster and takes no answer: {call})")
    if ex.wants_answer and answer is NOT_ANSWERED:
        return Result(ex.id, ex.title, False, f"replace ... with your answer: {call}, answer=...)")
    try:
        ok, message = ex.run(cluster, answer) if ex.wants_answer else ex.run(cluster)
    except LabError as e:  # a stopped primary, a wiped cluster: the hint is the lab's own message
        ok, message = False, f"could not check: {e}"
    return Result(ex.id, ex.title, bool(ok), message)


def _load_chapter(chapter: "str | None") -> dict:
    """Chapter NN's exercises live in ``lab/exercises_NN.py`` (imported on first use);
    ``None`` loads every chapter's."""
    import importlib
    import pkgutil
    from pathlib import Path
    names = [m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
             if m.name.startswith("exercises_") and (chapter is None or m.name == f"exercises_{chapter}")]
    for name in names:
        importlib.import_module(f"lab.{name}")
    return _EXERCISES


# --- helpers ------------------------------------------------------------------------------
def _main_replica(cluster) -> "Node | None":
    """replica1 if there is one, else the first replica (the exercises speak of 'the replica')."""
    names = [r.name for r in cluster.replicas]
    if not names:
        return None
    return cluster.node("replica1" if "replica1" in names else names[0])


_NO_REPLICA = "this cluster has no replica: lab.up(replicas=1) adds one"


def _stopped(node: Node) -> str:
    return f"{node.name} is stopped: start it with cluster.node({node.name!r}).start(), then check again"


def _as_count(answer) -> "int | None":
    if isinstance(answer, bool):
        return None
    if isinstance(answer, numbers.Integral):
        return int(answer)
    if isinstance(answer, str) and answer.strip().isdigit():
        return int(answer.strip())
    return None


def _log_time(line: str) -> "dt.datetime | None":
    """The time at the start of a server log line (log_line_prefix '%m ...', log_timezone UTC)."""
    m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) (UTC|GMT) ", line)
    if not m:
        return None
    return dt.datetime.fromisoformat(m.group(1)).replace(tzinfo=dt.timezone.utc)


def stopped_intervals(log_text: str) -> list:
    """(stopped, started) times of each clean stop in a server log: from "database system is shut
    down" to the next "starting PostgreSQL" (``started`` is None while it is still stopped).
    A crash (kill) logs no stop time, so it is not counted.
    """
    intervals, down_at = [], None
    for line in log_text.splitlines():
        if "database system is shut down" in line:
            down_at = _log_time(line)
        elif "starting PostgreSQL" in line and down_at is not None:
            intervals.append((down_at, _log_time(line)))
            down_at = None
    if down_at is not None:
        intervals.append((down_at, None))
    return intervals


# --- chapter 00 -----------------------------------------------------------------------------
@exercise("00.1", "which PostgreSQL runs the lab", answer=True)
def _pg_major(cluster, answer):
    major = int(cluster.primary.scalar("SHOW server_version_num", dbname="postgres")) // 10000
    given = _as_count(answer)
    if given is None and isinstance(answer, str) and re.fullmatch(r"\s*\d+(\.\d+)*\s*", answer):
        given = int(answer.split(".")[0])
    if given is None:
        return False, f"answer with the major version as a number, e.g. answer=12 (not {answer!r})"
    if given == major:
        return True, f"right: the lab runs PostgreSQL {major}"
    return False, ("that is not the version the primary reports: ask it with "
                   "cluster.primary.scalar('SHOW server_version')")


# --- chapter 01 -----------------------------------------------------------------------------
HOLA = "hola de "


@exercise("01.1", "a row of yours reaches the replica")
def _row_reaches_replica(cluster):
    replica = _main_replica(cluster)
    if replica is None:
        return False, _NO_REPLICA
    query = "SELECT id, mensaje FROM test_replication WHERE mensaje ILIKE %s ORDER BY id"
    mine = cluster.primary.sql(query, (HOLA + "_%",))
    if mine.empty:
        return False, (f"no row of test_replication starts with {HOLA!r} on the primary yet: INSERT one there "
                       f"with cluster.primary.execute(...), e.g. mensaje = '{HOLA}<your name>'")
    if not replica.is_running:
        return False, f"your row is on the primary, but {_stopped(replica)}"
    if replica.sql(query, (HOLA + "_%",)).empty:
        try:  # asynchronous: give the replica a moment to replay it
            cluster.wait_replayed(timeout=3)
        except Timeout:
            pass
    seen = replica.sql(query, (HOLA + "_%",))
    if seen.empty:
        return False, (f"your row is on the primary but not on {replica.name}: is it streaming? "
                       "see lab.replication.stat_replication(cluster)")
    row = seen.iloc[-1]
    return True, f"{row['mensaje']!r} (id {row['id']}) was written on the primary and is on {replica.name}"


@exercise("01.2", "how many replicas stream", answer=True)
def _how_many_stream(cluster, answer):
    given = _as_count(answer)
    if given is None:
        return False, f"answer with a whole number, e.g. answer=3 (not {answer!r})"
    names = cluster.primary.sql("SELECT application_name FROM pg_stat_replication WHERE state = 'streaming' "
                                "ORDER BY 1", dbname="postgres")["application_name"].tolist()
    if given == len(names):
        return True, (f"right: {len(names)} replica{'' if len(names) == 1 else 's'} "
                      f"stream{'s' if len(names) == 1 else ''} from the primary ({', '.join(names) or 'none'})")
    return False, ("not what the primary says: on the primary, count the rows of pg_stat_replication "
                   "whose state is 'streaming'")


@exercise("01.3", "which node is in recovery", answer=True)
def _in_recovery(cluster, answer):
    items = [answer] if isinstance(answer, (str, Node)) else answer
    if not isinstance(items, (list, tuple, set, frozenset)) or not items:
        return False, f"answer with a node name, e.g. answer='primary', or a list of names (not {answer!r})"
    given = set()
    for a in items:
        name = a.name if isinstance(a, Node) else str(a).strip().lower()
        if name in _ORIGINAL_NAMES:
            return False, f"{name} was the original course's container; here it is {_ORIGINAL_NAMES[name]!r}"
        if name not in {n.name for n in cluster.nodes}:
            return False, f"no node {name!r} in this cluster: the nodes are {', '.join(n.name for n in cluster.nodes)}"
        given.add(name)
    in_recovery = {n.name for n in cluster.nodes
                   if n.is_running and n.scalar("SELECT pg_is_in_recovery()", dbname="postgres")}
    if given == in_recovery:
        return True, (f"right: {', '.join(sorted(in_recovery))} replay{'s' if len(in_recovery) == 1 else ''} "
                      "the primary's WAL, so pg_is_in_recovery() is true there")
    return False, "not what the nodes say: ask each running node SELECT pg_is_in_recovery()"


MIENTRAS = "mientras "


@exercise("01.4", "a stopped replica catches up")
def _stopped_replica_catches_up(cluster):
    replica = _main_replica(cluster)
    if replica is None:
        return False, _NO_REPLICA
    how = (f"stop {replica.name}, INSERT a row whose mensaje starts with {MIENTRAS!r} on the primary, "
           f"then start {replica.name} again")
    stops = stopped_intervals(replica.logs(tail=5000))
    if not stops:
        return False, f"{replica.name} has not been stopped yet: {how}"
    rows = cluster.primary.sql("SELECT id, mensaje, creado_en FROM test_replication WHERE mensaje ILIKE %s "
                               "ORDER BY id", (MIENTRAS + "%",))
    missed = [r for r in rows.itertuples()
              if any(down < pd.Timestamp(r.creado_en) and (up is None or pd.Timestamp(r.creado_en) < up)
                     for down, up in stops)]
    if not replica.is_running:
        if missed:
            return False, (f"{len(missed)} row(s) written while {replica.name} is stopped: now start it with "
                          f"cluster.node({replica.name!r}).start() and check again")
        return False, f"{replica.name} is stopped: write a row starting with {MIENTRAS!r} on the primary now"
    if not missed:
        return False, f"no row starting with {MIENTRAS!r} was written while {replica.name} was stopped: {how}"
    try:
        lsn = cluster.wait_replayed(timeout=5)
    except Timeout:
        return False, (f"{replica.name} runs again but has not caught up with the primary: "
                       f"see lab.replication.stat_wal_receiver(cluster) and cluster.node({replica.name!r}).logs()")
    ids = [int(r.id) for r in missed]
    found = replica.scalar("SELECT count(*) FROM test_replication WHERE id = ANY(%s)", (ids,))
    if found != len(ids):
        return False, f"{replica.name} has replayed {lsn} but lacks rows written while it was stopped"
    return True, (f"{replica.name} missed {len(ids)} row(s) while it was stopped, caught up after its start "
                  f"and has replayed the primary's WAL up to {lsn}")


@exercise("01.5", "down() and up() keep the data")
def _down_up_keeps_data(cluster):
    replica = _main_replica(cluster)
    query = "SELECT id, mensaje, creado_en FROM test_replication WHERE mensaje ILIKE %s ORDER BY id LIMIT 1"
    first = cluster.primary.sql(query, (HOLA + "_%",))
    if first.empty:
        return False, f"do exercise 01.1 first: this one checks that its {HOLA!r} row survives a restart"
    row = first.iloc[0]
    started = cluster.primary.scalar("SELECT pg_postmaster_start_time()")
    if started < row["creado_en"]:
        return False, (f"the primary has not been restarted since {row['mensaje']!r} was written: "
                       "run cluster.down(), then cluster = lab.up(replicas=1), and check again")
    if replica is not None:
        if not replica.is_running:
            return False, _stopped(replica)
        cluster.wait_replayed(timeout=5)
        if replica.scalar("SELECT count(*) FROM test_replication WHERE id = %s", (int(row["id"]),)) != 1:
            return False, f"{row['mensaje']!r} is on the primary but not on {replica.name}: see cluster.status()"
    where = "primary" + (f" and {replica.name}" if replica is not None else "")
    return True, (f"{row['mensaje']!r} was written before the primary's last start "
                  f"({started:%H:%M:%S}) and is still on the {where}")
