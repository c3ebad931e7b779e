"""The one registry of self-checks: ``@exercise`` adds one, ``check`` runs it, ``hint`` says how.

An exercise is a function ``(cluster[, what it needs][, answer]) -> (ok, message)``; its hint, how to
do it, is ``hint=N_("...")``.  Titles, hints and messages are English in the code and shown in the
student's language (``lab/i18n.py``): a title and a hint are looked up when shown, ``_(ex.title)``.
What it needs before it can look (the main replica, running; the crypto app) is a ``Precondition``:
it finds that thing in the cluster, or says in one line what is missing and how to get it, and the
student sees that line as the check's ❌ instead of the exercise running.

>>> @exercise("04.9", N_("replica1 answers"), needs=RUNNING_REPLICA,       # doctest: +SKIP
...           hint=N_("Start replica1 and ask it SELECT 1."))
... def _answers(cluster, replica):
...     return replica.scalar("SELECT 1") == 1, _("{name} answers").format(name=replica.name)
"""
from __future__ import annotations

import html
import inspect
import re
from dataclasses import dataclass
from typing import Callable

import pandas as pd

from ..errors import LabError, Text
from ..i18n import N_, _
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


NO_REPLICA = N_("this cluster has no replica: lab.up(replicas=1) adds one")  # shown as _(NO_REPLICA)


def stopped(node: Node) -> str:
    """The hint for a node an exercise needs running."""
    return _("{name} is stopped: start it with cluster.node({name!r}).start(), then check again").format(name=node.name)


def main_replica(cluster) -> "Node | None":
    """replica1 if there is one, else the first replica (the exercises speak of 'the replica')."""
    names = [r.name for r in cluster.replicas]
    if not names:
        return None
    return cluster.node("replica1" if "replica1" in names else names[0])


def _replica(cluster) -> Node:
    replica = main_replica(cluster)
    if replica is None:
        raise Unmet(_(NO_REPLICA))
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
    title: str  # English, N_()-marked: shown as _(title)
    wants_answer: bool
    run: Callable  # (cluster[, needed][, answer]) -> (ok, message)
    hint: str  # English, N_()-marked: shown as _(hint)
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


def exercise(exercise_id: str, title: str, answer: bool = False, needs: "Precondition | None" = None,
             hint: "str | None" = None):
    """Register a check: ``@exercise("02.1", N_("what it checks"), answer=True, hint=N_("how to do it"))``
    over a function ``(cluster[, needed][, answer]) -> (ok, message)``.  Without ``hint`` the function's
    docstring is the hint (in English only: a docstring is not in the catalog)."""
    if not re.fullmatch(r"\d\d\.\d+", exercise_id):
        raise ValueError(f"exercise ids look like '01.2', not {exercise_id!r}")

    def register(fn):
        if exercise_id in _EXERCISES:
            raise ValueError(f"exercise {exercise_id} is registered twice")
        hint_text = hint or _hint_of(fn)  # as written: _(hint) looks it up
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
    rows = [dict(exercise=e.id, title=_(e.title), answer=e.wants_answer)
            for e in registered().values() if chapter is None or e.chapter == chapter]
    return pd.DataFrame(rows, columns=["exercise", "title", "answer"])


def _get(exercise_id: str) -> Exercise:
    ex = _EXERCISES.get(exercise_id)
    if ex is None:
        raise LabError(_("no exercise {exercise!r}: the exercises are {exercises}").format(
            exercise=exercise_id, exercises=", ".join(registered())))
    return ex


def hint(exercise_id: str) -> Text:
    """How to do exercise ``exercise_id``, before checking it.

    >>> lab.checks.hint("01.4")          # doctest: +SKIP
    """
    ex = _get(exercise_id)
    return Text(f"{ex.id} ({_(ex.title)}): {_(ex.hint)}")


def check(exercise_id: str, cluster, answer=NOT_ANSWERED) -> Result:
    """Check exercise ``exercise_id`` against the running ``cluster``.  The result is also written
    down in the student's lab home (``progress.py``), where the instructor's view reads it.

    >>> lab.checks.check("01.3", cluster, answer="replica1")   # doctest: +SKIP
    """
    ex = _get(exercise_id)
    call = f"lab.checks.check({exercise_id!r}, cluster"
    if not ex.wants_answer and answer is not NOT_ANSWERED:
        raise LabError(_("exercise {exercise} checks the cluster and takes no answer: {call})").format(
            exercise=exercise_id, call=call))
    title = _(ex.title)
    if ex.wants_answer and answer is NOT_ANSWERED:
        result = Result(ex.id, title, False, _("replace ... with your answer: {call}, answer=...)").format(call=call))
    else:
        try:
            ok, message = ex(cluster, answer)
        except Unmet as e:
            ok, message = False, str(e)
        except LabError as e:  # a stopped primary, a wiped cluster: the hint is the lab's own message
            ok, message = False, _("could not check: {error}").format(error=e)
        result = Result(ex.id, title, bool(ok), message)
    record(cluster, result.exercise, result.ok, result.message)
    return result
