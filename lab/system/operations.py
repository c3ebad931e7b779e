"""Lab calls that change a cluster: one process at a time (the lab's lock), an interruption that
ends in one line, and results that are never taken from a run that did not finish.

    @changes_cluster("lag_under_latency", tidy=tidy)
    def lag_under_latency(cluster, ...): ...

- **The lab's lock** (``LabHome.operation``): held for the whole call, so a second notebook's kernel
  that tries to change the same cluster meanwhile waits, told for whom, instead of measuring a
  cluster the other one is changing.
- **The cluster as it is now**: the outermost call first re-reads the cluster's state file, so an
  object made before another notebook changed the cluster (a failover there, ``lab.up()``'s
  switchover back) acts on the roles as they are, not as they were when it was made.
- **Kernel › Interrupt**: the call's own ``finally`` blocks put back what they changed; then the
  chapter's ``tidy(cluster)`` (if given) puts back anything left, and the call ends with one line
  (``Interrupted``) saying what was put back: no traceback through the lab's internals.
- **Stale results**: a DataFrame a call returns carries which call made it and when
  (``attrs["lab_call"]``); ``check_fresh(result)`` (called by the functions that summarise
  results) refuses a result when a later run of the same call was interrupted: the student's
  variable still holds the previous run's data.
"""
from __future__ import annotations

import functools
import time

from ..i18n import N_, _
from ..errors import Interrupted, LabError
from .home import LabHome

_interrupted: dict = {}   # call label -> time.time() of its last interrupted run, in this process


def changes_cluster(what: "str | None" = None, tidy=None):
    """Decorator of a lab call that changes a cluster (its first argument: a Cluster, or a Node)."""
    def deco(fn):
        label = what or fn.__name__

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            home = _home_of(args[0]) if args else None
            started = time.time()
            try:
                if home is None:
                    result = fn(*args, **kwargs)
                else:
                    outermost = not home.in_operation()
                    with home.operation(label):
                        if outermost:
                            _refresh(args[0])
                        result = fn(*args, **kwargs)
            except KeyboardInterrupt:
                _interrupted[label] = started
                raise _interruption(label, started, tidy, args) from None
            _stamp(result, label, started)
            return result
        wrapper.lab_call = label
        return wrapper
    return deco


def _refresh(obj) -> None:
    """Re-read the state of the cluster ``obj`` is (or whose node it is), when it has one to read."""
    cluster = obj if hasattr(obj, "_reload") else getattr(obj, "_cluster", None)
    reload = getattr(cluster, "_reload", None)
    if callable(reload):
        try:
            reload()
        except LabError:  # gone (down(wipe=True)): the call itself says so, in its own words
            pass


def _interruption(label: str, started: float, tidy, args) -> Interrupted:
    put_back = []
    if tidy is not None and args:
        try:
            done = tidy(args[0]) or []
            put_back = [str(done)] if isinstance(done, str) else [str(x) for x in done]
        except KeyboardInterrupt:
            put_back = [_("(interrupted again while tidying: run the chapter's tidy cell)")]
        except LabError as e:
            put_back = [_("(tidying failed: {error})").format(error=e)]
    if tidy is None:
        said = _("what it had changed (its own clean-up ran)")
    else:
        said = "; ".join(put_back) if put_back else _("nothing else was left to put back")
    return Interrupted(_("{call} interrupted after {seconds:.1f} s, no result kept; put back: {put_back}").format(
        call=label, seconds=time.time() - started, put_back=said))


def _stamp(result, label: str, started: float) -> None:
    attrs = getattr(result, "attrs", None)
    if isinstance(attrs, dict):
        attrs["lab_call"] = {"call": label, "started": started, "finished": time.time()}


def check_fresh(result, what: str = N_("these results")) -> None:
    """Refuse a result of a call whose later run was interrupted (the variable still holds the
    previous run's data)."""
    attrs = getattr(result, "attrs", None)
    stamp = attrs.get("lab_call") if isinstance(attrs, dict) else None
    if not stamp:
        return
    cut = _interrupted.get(stamp["call"])
    if cut is not None and cut > stamp["started"]:
        raise LabError(_("{what} come from the {call} that finished at {finished}; the run started at "
                         "{started} was interrupted and left none: run that cell again").format(
            what=_(what), call=stamp['call'], finished=time.strftime('%H:%M:%S', time.localtime(stamp['finished'])),
            started=time.strftime('%H:%M:%S', time.localtime(cut))))


def _home_of(obj) -> "LabHome | None":
    home = getattr(obj, "home", None)
    if isinstance(home, LabHome):
        return home
    home = getattr(getattr(obj, "_cluster", None), "home", None)
    return home if isinstance(home, LabHome) else None
