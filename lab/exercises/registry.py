"""The one registry of self-checks: ``@exercise`` adds one, ``check`` runs it, ``hint`` says how.

An exercise is a function ``(cluster[, what it needs][, answer]) -> (ok, message)`` whose docstring
is its hint.  What it needs before it can look (the main replica, running; the crypto app) is a
``Precondition``: it finds that thing in the cluster, or says in one line what is missing and how
to get it, and the student sees that line as the check's ❌ instead of the exercise running.

>>> @exercise("04.9", "replica1 answers", needs=RUNNING_REPLICA)           # doctest: +SKIP
... def _answers(cluster, replica):
...     '''Start replica1 and ask it SELECT 1.'''
...     return replica.scalar("SELECT 1") == 1, f"{replica.name} answers"
"""
from __future__ import annotations

import html
import inspect
import re
from dataclasses import dataclass
from typing import Callable

import pandas as pd

from ..errors import LabError, Text
from ..node import Node
from .progress import record

NOT_ANSWERED = ...


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


# --- preconditions --------------------------------------------------------------------------
class Unmet(Exception):
    """A precondition is not met; the message (what is missing, and how to get it) is the ❌ hint."""


@dataclass(frozen=True)
class Precondition:
    """What an exercise needs from the cluster before it can look.

    ``find(cluster)`` returns the thing (the exercise gets it after ``cluster``) or raises ``Unmet``
    with the line the student reads.
    """
    what: str
    find: Callable

    def __call__(self, cluster):
        return self.find(cluster)


NO_REPLICA = "this cluster has no replica: lab.up(replicas=1) adds one"


def stopped(node: Node) -> str:
    """The hint for a node an exercise needs running."""
    return f"{node.name} is stopped: start it with cluster.node({node.name!r}).start(), then check again"


def main_replica(cluster) -> "Node | None":
    """replica1 if there is one, else the first replica (the exercises speak of 'the replica')."""
    names = [r.name for r in cluster.replicas]
    if not names:
        return None
    return cluster.node("replica1" if "replica1" in names else names[0])


def _replica(cluster) -> Node:
    replica = main_replica(cluster)
    if replica is None:
        raise Unmet(NO_REPLICA)
    return replica


def _running_replica(cluster) -> Node:
    replica = _replica(cluster)
    if not replica.is_running:
        raise Unmet(stopped(replica))
    return replica


MAIN_REPLICA = Precondition("the main replica (replica1, else the first), running or not", _replica)
RUNNING_REPLICA = Precondition("the main replica (replica1, else the first), running", _running_replica)


# --- the registry ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Exercise:
    id: str
    title: str
    wants_answer: bool
    run: Callable  # (cluster[, needed][, answer]) -> (ok, message)
    hint: str
    needs: "Precondition | None" = None

    @property
    def chapter(self) -> str:
        return self.id.split(".")[0]

    def __call__(self, cluster, answer=NOT_ANSWERED) -> "tuple[bool, str]":
        args = [cluster]
        if self.needs is not None:
            args.append(self.needs(cluster))
        if self.wants_answer:
            args.append(answer)
        return self.run(*args)


_EXERCISES: "dict[str, Exercise]" = {}


def _hint_of(fn) -> str:
    """The first paragraph of a docstring, on one line."""
    doc = inspect.getdoc(fn) or ""
    return " ".join(doc.split("\n\n")[0].split())


def exercise(exercise_id: str, title: str, answer: bool = False, needs: "Precondition | None" = None):
    """Register a check: ``@exercise("02.1", "what it checks", answer=True)`` over a function
    ``(cluster[, needed][, answer]) -> (ok, message)`` whose docstring says how to do the exercise."""
    if not re.fullmatch(r"\d\d\.\d+", exercise_id):
        raise ValueError(f"exercise ids look like '01.2', not {exercise_id!r}")

    def register(fn):
        if exercise_id in _EXERCISES:
            raise ValueError(f"exercise {exercise_id} is registered twice")
        hint_text = _hint_of(fn)
        if not hint_text:
            raise ValueError(f"exercise {exercise_id}: its docstring is its hint, and it has none")
        _EXERCISES[exercise_id] = Exercise(exercise_id, title, answer, fn, hint_text, needs)
        return fn
    return register


def registered() -> "dict[str, Exercise]":
    """Every registered exercise by id, in order."""
    return dict(sorted(_EXERCISES.items()))


def exercises(chapter: "str | None" = None) -> pd.DataFrame:
    """The exercises (of one chapter, e.g. ``"01"``): id, title, whether it wants an answer."""
    rows = [dict(exercise=e.id, title=e.title, answer=e.wants_answer)
            for e in registered().values() if chapter is None or e.chapter == chapter]
    return pd.DataFrame(rows, columns=["exercise", "title", "answer"])


def _get(exercise_id: str) -> Exercise:
    ex = _EXERCISES.get(exercise_id)
    if ex is None:
        raise LabError(f"no exercise {exercise_id!r}: the exercises are {', '.join(registered())}")
    return ex


def hint(exercise_id: str) -> Text:
    """How to do exercise ``exercise_id``, before checking it.

    >>> lab.checks.hint("01.4")          # doctest: +SKIP
    """
    ex = _get(exercise_id)
    return Text(f"{ex.id} ({ex.title}): {ex.hint}")


def check(exercise_id: str, cluster, answer=NOT_ANSWERED) -> Result:
    """Check exercise ``exercise_id`` against the running ``cluster``.  The result is also written
    down in the student's lab home (``progress.py``), where the instructor's view reads it.

    >>> lab.checks.check("01.3", cluster, answer="replica1")   # doctest: +SKIP
    """
    ex = _get(exercise_id)
    call = f"lab.checks.check({exercise_id!r}, cluster"
    if not ex.wants_answer and answer is not NOT_ANSWERED:
        raise LabError(f"exercise {exercise_id} checks the cluster and takes no answer: {call})")
    if ex.wants_answer and answer is NOT_ANSWERED:
        result = Result(ex.id, ex.title, False, f"replace ... with your answer: {call}, answer=...)")
    else:
        try:
            ok, message = ex(cluster, answer)
        except Unmet as e:
            ok, message = False, str(e)
        except LabError as e:  # a stopped primary, a wiped cluster: the hint is the lab's own message
            ok, message = False, f"could not check: {e}"
        result = Result(ex.id, ex.title, bool(ok), message)
    record(cluster, result.exercise, result.ok, result.message)
    return result
