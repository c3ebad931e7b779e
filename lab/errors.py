"""Errors a student can meet: one or two lines that say what happened and what to do."""
from __future__ import annotations


class Text(str):
    """A string that shows as plain lines in a notebook (logs, one-line accounts)."""

    def __repr__(self):
        return str(self)


class LabError(Exception):
    """Base error of the lab.  In Jupyter it renders as its message alone, no traceback.

    The message says what happened and what to do next; the cluster is left as it was.
    """

    def _render_traceback_(self):  # IPython hook: show the message, not a stack
        return [f"{type(self).__name__}: {self}"]


class BinariesNotFound(LabError):
    pass


class PostgresTooOld(LabError):
    pass


class PortUnavailable(LabError):
    pass


class LabHomeError(LabError):
    pass


class ServerStartError(LabError):
    pass


class SQLError(LabError):
    """A statement failed on a node; the message is PostgreSQL's own, with the node's name."""

    def __init__(self, message: str, *, node: str = "", sqlstate: str | None = None):
        super().__init__(message)
        self.node = node
        self.sqlstate = sqlstate


class ReadOnlyError(SQLError):
    """A write was sent to a hot standby."""


class NotRunning(LabError):
    pass


class Timeout(LabError):
    pass


def attempt(action, *args, **kwargs):
    """Run ``action(*args, **kwargs)``; if the lab raises, return its one-line message instead.

    For cells that show an error on purpose (a write sent to a replica, a stopped node):
    >>> lab.attempt(cluster.node("replica1").execute, "INSERT INTO t VALUES (1)")   # doctest: +SKIP
    ReadOnlyError: replica1: cannot execute INSERT in a read-only transaction — ...
    """
    try:
        return action(*args, **kwargs)
    except LabError as e:
        return Text(f"{type(e).__name__}: {e}")
