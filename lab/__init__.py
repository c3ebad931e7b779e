"""PostgreSQL Replication Lab: a primary and hot-standby replicas, from Python.

>>> import lab
>>> cluster = lab.up(replicas=1)     # doctest: +SKIP
>>> cluster.status()                 # doctest: +SKIP
"""
import importlib

from .cluster import Cluster, attach, down as _down, up
from .commands import mark as transcript_mark, show_commands, transcript
from .doctor import Doctor, report as _report
from .errors import BadArgument, LabError, NotRunning, ReadOnlyError, SQLError, Timeout, attempt
from . import i18n as _i18n
from .lsn import format_lsn, lsn_diff, parse_lsn
from .node import Node, Role, State

__all__ = ["up", "attach", "down", "Cluster", "Node", "Role", "State", "LabError", "SQLError",
           "ReadOnlyError", "NotRunning", "Timeout", "attempt", "parse_lsn", "format_lsn", "lsn_diff", "doctor",
           "transcript", "transcript_mark", "show_commands", "set_language", "language"]
__version__ = "0.1.0"

# Chapter modules load on first use (``lab.checks.check(...)``): matplotlib and ipywidgets are
# slow to import and ``python -m lab down`` needs neither.
_SUBMODULES = ("archive", "autofailover", "backups", "checks", "consistency", "failover", "faults", "ha", "lag", "logical",
               "pgadmin", "plots", "proxy", "replication", "slots", "standby", "sync", "wal", "webapp", "widgets", "workload")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'lab' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES))


def down(wipe: bool = False, home=None) -> None:
    """Stop this lab home's clusters, chapter 08's too (``wipe=True``: also remove their data)."""
    from . import ha  # lazy: chapter modules load on first use (pandas, matplotlib)
    ha.down(wipe=wipe, home=home)
    _down(wipe=wipe, home=home)


def doctor(home=None):
    """What this machine has for the lab (binaries, Docker, lab home, ports; etcd, HAProxy and Patroni for
    chapter 08) and what to do."""
    return Doctor(_report(home))


def set_language(language: "str | None") -> str:
    """Speak ``language`` from now on in this kernel: "es" (español) or "en" (English); None goes back
    to the default (``LAB_LANG``, else the notebook's folder, ``notebooks/es/``, else English).

    >>> lab.set_language("es")             # doctest: +SKIP
    'es'
    """
    try:
        return _i18n.set_language(language)
    except LookupError as e:
        raise BadArgument(str(e)) from None


def language() -> str:
    """The language the lab speaks now: "en" or "es"."""
    return _i18n.current()
