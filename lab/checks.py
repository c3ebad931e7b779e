"""Self-check exercises: each looks at the real cluster and says ✅, or ❌ with a hint.

>>> lab.checks.check("01.2", cluster, answer=1)     # doctest: +SKIP
✅ 01.2 (how many replicas stream): right: 1 replica streams from the primary (replica1)
>>> lab.checks.exercises("01")                      # doctest: +SKIP
>>> lab.checks.hint("01.4")                         # doctest: +SKIP

A wrong answer, or a cluster in the wrong state, is a ❌ with a hint, never an exception (the
notebooks run end to end in CI with the exercises unanswered).  Exercises that want an answer
take ``...`` (Ellipsis) as "not answered yet".  This module is what students type; the exercises
themselves live in ``lab/exercises/``, one module per chapter, behind one registry.
"""
from __future__ import annotations

from .exercises import NOT_ANSWERED, Result, check, exercise, exercises, hint
from .exercises.ch01 import stopped_intervals

__all__ = ["check", "hint", "exercises", "Result", "NOT_ANSWERED", "exercise", "stopped_intervals"]
