"""Self-check exercises: one registry (``registry``), one module per chapter (``ch00`` … ``ch10``).

Students call them through ``lab.checks``; a chapter module registers its exercises with
``@exercise(...)`` when it is imported, and the import list below is the list of chapters.
Chapter modules here may import the chapter topic modules (``lab.wal``, ``lab.slots``, …), which
never import this package back.
"""
from . import ch00, ch01, ch02, ch03, ch04, ch05, ch06, ch07, ch08, ch09, ch10  # noqa: F401 (each registers its chapter)
from .registry import (MAIN_REPLICA, NO_REPLICA, NOT_ANSWERED, RUNNING_REPLICA, Exercise, Precondition,
                       Result, Unmet, check, exercise, exercises, hint, main_replica, registered, stopped)

__all__ = ["check", "hint", "exercises", "exercise", "registered", "Result", "Exercise", "Precondition", "Unmet",
           "MAIN_REPLICA", "RUNNING_REPLICA", "NO_REPLICA", "NOT_ANSWERED", "main_replica", "stopped"]
