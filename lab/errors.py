"""Errors a student can meet: one or two lines that say what happened and what to do."""
from __future__ import annotations

from .i18n import N_, _


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


class LabBusy(LabError):
    """Another process (a second notebook's kernel) is changing this lab's cluster."""


class Interrupted(LabError):
    """A lab call stopped by Kernel > Interrupt: one line, what it put back, no traceback."""


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


# --- argument checks: every public function a notebook calls checks what it was given and raises
# one line that says what it expected (never a TypeError/ValueError from deep inside the lab) -----
class BadArgument(LabError):
    """An argument of the wrong type or out of range; the message names it and what it should be."""


def _shown(value) -> str:
    """``value`` for a one-line message: its repr (a table's is several lines: its type instead),
    at most 60 characters."""
    text = repr(value)
    if "\n" in text.strip():
        text = _("a {type}").format(type=type(value).__name__)
    return text if len(text) <= 60 else text[:57] + "..."


# need_int's and need_number's sentences, by which bounds there are: (lo given, hi given).  Whole
# sentences, one per case, so that a translator sees each as it is shown.
_WHOLE_NUMBER = {(True, True): N_("{what} is a whole number from {lo} to {hi}, not {value}"),
                 (True, False): N_("{what} is a whole number >= {lo}, not {value}"),
                 (False, True): N_("{what} is a whole number <= {hi}, not {value}"),
                 (False, False): N_("{what} is a whole number, not {value}")}
_NUMBER_OF_UNIT = {(True, True): N_("{what} is a number of {unit} from {lo} to {hi}, not {value}"),
                   (True, False): N_("{what} is a number of {unit} >= {lo}, not {value}"),
                   (False, True): N_("{what} is a number of {unit} <= {hi}, not {value}"),
                   (False, False): N_("{what} is a number of {unit}, not {value}")}
_NUMBER = {(True, True): N_("{what} is a number from {lo} to {hi}, not {value}"),
           (True, False): N_("{what} is a number >= {lo}, not {value}"),
           (False, True): N_("{what} is a number <= {hi}, not {value}"),
           (False, False): N_("{what} is a number, not {value}")}


def _out_of_range(sentences: dict, what: str, value, lo, hi, unit: str = "") -> "BadArgument":
    """The BadArgument for ``value``, in the sentence of ``sentences`` that fits the bounds given."""
    sentence = _(sentences[(lo is not None, hi is not None)])
    return BadArgument(sentence.format(what=what, value=_shown(value), unit=unit,
                                       lo=_num(lo) if lo is not None else "", hi=_num(hi) if hi is not None else ""))


def need_int(value, what: str, lo: "int | None" = None, hi: "int | None" = None) -> int:
    """``value`` as an int in [lo, hi] (bools and floats refused), else BadArgument naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or (lo is not None and value < lo) \
            or (hi is not None and value > hi):
        raise _out_of_range(_WHOLE_NUMBER, what, value, lo, hi)
    return value


def _unit(unit: str) -> str:
    """The units the lab's functions name (need_number's ``unit``), in the current language."""
    known = {"seconds": _("seconds"), "milliseconds": _("milliseconds"), "rows per second": _("rows per second"),
             "ticks per second": _("ticks per second"),
             "seconds since the epoch (lab.transcript_mark())": _("seconds since the epoch (lab.transcript_mark())")}
    return known.get(unit, unit)


def need_number(value, what: str, lo: "float | None" = None, hi: "float | None" = None,
                unit: str = "") -> float:
    """``value`` as a float in [lo, hi] (an int or float; bools, NaN and infinities refused)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    if ok:
        f = float(value)
        ok = f == f and f not in (float("inf"), float("-inf")) and (lo is None or f >= lo) \
            and (hi is None or f <= hi)
    if not ok:
        if unit:
            raise _out_of_range(_NUMBER_OF_UNIT, what, value, lo, hi, unit=_unit(unit))
        raise _out_of_range(_NUMBER, what, value, lo, hi)
    return float(value)


def need_str(value, what: str, empty: bool = False, example: str = "") -> str:
    """``value`` as a str (non-empty unless ``empty``)."""
    if not isinstance(value, str) or (not empty and not value.strip()):
        shown = _shown(value)
        if empty and example:
            msg = _("{what} is a string, e.g. {example}, not {value}").format(what=what, example=example, value=shown)
        elif empty:
            msg = _("{what} is a string, not {value}").format(what=what, value=shown)
        elif example:
            msg = _("{what} is a non-empty string, e.g. {example}, not {value}").format(
                what=what, example=example, value=shown)
        else:
            msg = _("{what} is a non-empty string, not {value}").format(what=what, value=shown)
        raise BadArgument(msg)
    return value


def need_choice(value, what: str, choices) -> str:
    """``value`` if it is one of ``choices``."""
    choices = tuple(choices)
    try:
        ok = value in choices
    except TypeError:  # unhashable in a set/dict of choices
        ok = False
    if not ok:
        raise BadArgument(_("{what} is one of {choices}, not {value}").format(
            what=what, choices=", ".join(repr(c) for c in choices), value=_shown(value)))
    return value


def need_bool(value, what: str) -> bool:
    if not isinstance(value, bool):
        raise BadArgument(_("{what} is True or False, not {value}").format(what=what, value=_shown(value)))
    return value


def _num(v) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"  # 1000000, not 1e+06
