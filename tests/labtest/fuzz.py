"""The machinery of the property-based tests of the public API (tests/test_public_api*.py).

For every function a notebook calls, one argument at a time gets a wrong value, the others keep a
valid one; whatever is drawn, the call either succeeds or raises a ``LabError`` whose message is
one line — never another exception — and returns within ``BOUND`` seconds (a watchdog thread).

    wrong values   NOT_TEXT, NOT_INT, NOT_NUMBER, NOT_BOOL, BAD_LSN, ... by what the argument should be
    strategies     k_int, k_num, k_bool, k_choice, k_text, k_name, k_bad_name, k_lsn, k_of
    targets        Target / T: the call, a valid value for every argument, the wrong ones;
                   cluster_only / node_only: a function whose one argument is the cluster / a node
    the property   check(target, data, ...): draws the argument and its wrong value, runs the call
                   under the watchdog (run), judges what came out, then puts the cluster back
    examples       examples(body): runs ``body(data)`` for PGLAB_FUZZ_EXAMPLES examples (default 5)
"""
from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field

import pandas as pd
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from lab.errors import LabError

BOUND = 60          # seconds a call may take, wrong argument or not
EXAMPLES = int(os.environ.get("PGLAB_FUZZ_EXAMPLES", "5"))
NAN, INF = float("nan"), float("inf")


# --- wrong values, by what the argument should be -------------------------------------------------
NOT_TEXT = [None, 0, 42, -1, 1.5, NAN, True, False, [], ["replica1"], {}, {"a": 1}, b"replica1", ("replica1",)]
NOT_INT = [None, True, False, 1.5, 2.0, NAN, INF, -INF, "3", "", "many", [], [1], {}, {"n": 1}, b"1"]
NOT_NUMBER = [None, True, False, NAN, INF, -INF, "1", "0.5", "", [], [1.0], {}, {"s": 1}, b"1"]
NOT_BOOL = [None, 0, 1, 1.0, "yes", "False", "", [], {}, b"1"]
BAD_LSN = ["0/ZZ", "zz", "1/2/3", "0/", "/1", "", " ", "0x10/0", "123456789/0", -1, 2 ** 64, 1.5, NAN, True,
           [], ["0/1"], {}, b"0/1"]
NOT_SQL = [None, 42, 1.5, True, [], ["SELECT 1"], {}, {"q": "SELECT 1"}, b"SELECT 1", ""]
# for "SELECT %s::text": the one placeholder gets none, two, a name, or something psycopg2 cannot send
BAD_PARAMS = [(), [], (1, 2), ["a", "b"], {"a": 1}, 42, 1.5, b"x", ((1, [2]),), (object(),), {1, 2}]
NOT_FRAME = [None, 42, "df", [], [1, 2], {}, {"a": [1]}, b"x", pd.DataFrame(), pd.DataFrame({"x": [1, 2]})]
NOT_PATH = [None, 42, 1.5, [], {}, b"/tmp", "", "/nonexistent/lab-fuzz", "/etc/hostname", "a\x00b"]
NOT_NODE_OBJECT = [None, "primary", "replica1", 42, 1.5, [], {}, b"primary", True]
NOT_CLUSTER = [None, "cluster", 42, [], {}, b"x", True]
UNKNOWN_NAMES = ["", " ", "replica9", "REPLICA1", "replica1 ", "prim\x00ary", "réplica", "x" * 300]
NOT_NAME_LIST = [None, 42, {}, b"x", [None], [42], ["replica9"], [[]], [b"replica1"], "nobody"]


def _below(lo):
    return st.integers(max_value=lo - 1, min_value=lo - 10 ** 20) if lo is not None else st.nothing()


def _above(hi):
    return st.integers(min_value=hi + 1, max_value=hi + 10 ** 20) if hi is not None else st.nothing()


def k_int(lo=None, hi=None, ok=()):
    return st.one_of(st.sampled_from([v for v in NOT_INT if not _in(v, ok)]), _below(lo), _above(hi))


def k_num(lo=None, hi=None, ok=()):
    below = st.floats(max_value=lo, exclude_max=True, allow_nan=False, allow_infinity=False,
                      min_value=lo - 1e12) if lo is not None else st.nothing()
    above = st.floats(min_value=hi, exclude_min=True, allow_nan=False, allow_infinity=False,
                      max_value=hi + 1e12) if hi is not None else st.nothing()
    return st.one_of(st.sampled_from([v for v in NOT_NUMBER if not _in(v, ok)]), below, above)


def k_bool():
    return st.sampled_from(NOT_BOOL)


def k_choice(*choices, ok=()):
    wrong = [None, 0, 1.5, True, "", "nope", [], {}, b"x"] + [str(c).upper() + "!" for c in choices]
    return st.sampled_from([v for v in wrong if not _in(v, ok)])


def k_text(ok=()):
    return st.sampled_from([v for v in NOT_TEXT if not _in(v, ok)])


def k_name(ok=()):
    """A node's name that no node has, or no name at all."""
    return st.sampled_from([v for v in NOT_TEXT + UNKNOWN_NAMES if not _in(v, ok)])


def k_bad_name():
    """Names no new node may take (for add_replica, switchover, remove_replica: never a valid free one)."""
    return st.sampled_from([0, 42, 1.5, True, [], {}, b"replica3", "", "Bad Name!", "x" * 300, "1abc", "prim\x00ary"])


def k_lsn(ok=()):
    return st.sampled_from([v for v in BAD_LSN if not _in(v, ok)])


def k_of(*values):
    return st.sampled_from(list(values))


def _in(v, values) -> bool:
    return any(v is x or (type(v) is type(x) and v == x) for x in values)


# --- what is called ---------------------------------------------------------------------------------
@dataclass
class Target:
    id: str
    owner: str                      # whose module: the report lists failures by owner
    call: object                    # call(*context, **kwargs): context is what the test module passes (its cluster, ...)
    valid: dict                     # a valid value for every argument
    wrong: dict = field(default_factory=dict)   # argument -> strategy of wrong values
    changes: bool = False           # may change the cluster even when it refuses: put it back after each example


def T(id, owner, call, valid=None, **wrong):
    return Target(id, owner, call, valid or {}, wrong)


def cluster_only(owner, fn, id=None):
    """A target for ``fn(cluster)``: its one argument, the cluster (valid value "C"), gets the wrong ones."""
    return T(id or f"{fn.__module__}.{fn.__name__}", owner, lambda c, s, cluster: fn(cluster),
             {"cluster": "C"}, cluster=st.sampled_from(NOT_CLUSTER))


def node_only(owner, fn, node="primary", id=None):
    """A target for ``fn(node)``: its one argument, a node (valid value "N:<node>"), gets the wrong ones."""
    return T(id or f"{fn.__module__}.{fn.__name__}", owner, lambda c, s, node: fn(node),
             {"node": f"N:{node}"}, node=st.sampled_from(NOT_NODE_OBJECT))


def resolve(c, s, v):
    """A target's valid value as the call takes it: "C" the cluster ``c``, "N:<name>" its node, "S:<key>"
    the sample ``s[key]`` made once for the module; anything else as it is."""
    if isinstance(v, str) and v == "C":
        return c
    if isinstance(v, str) and v.startswith("N:"):
        return c.node(v[2:])
    if isinstance(v, str) and v.startswith("S:"):
        return s[v]
    return v


# --- the property -----------------------------------------------------------------------------------------
def run(target: Target, context: tuple, kwargs: dict, guard=contextlib.nullcontext):
    """target(*context, **kwargs) in a thread, inside ``guard()``: ('ok', result) / ('raised', exception) /
    ('hung', None) if it did not return within BOUND seconds."""
    box = {}

    def body():
        try:
            box["ok"] = target.call(*context, **kwargs)
        except BaseException as e:  # noqa: BLE001 — the test's point: which exception came out
            box["raised"] = e

    t = threading.Thread(target=body, name=f"fuzz {target.id}", daemon=True)
    with guard():
        t.start()
        t.join(BOUND)
    if t.is_alive():
        return "hung", None
    return ("raised", box["raised"]) if "raised" in box else ("ok", box.get("ok"))


def shown(kwargs) -> str:
    return ", ".join(f"{k}={v!r}"[:80] for k, v in kwargs.items())


def check(target: Target, data, context: tuple, resolve, heal, guard=contextlib.nullcontext) -> None:
    """One example: draw the argument and its wrong value (the others keep ``resolve(valid value)``),
    call, judge; then ``heal()`` (what it put back, noted) unless the call hung."""
    param = data.draw(st.sampled_from(sorted(target.wrong)), label="argument")
    bad = data.draw(target.wrong[param], label=param)
    kwargs = {k: resolve(v) for k, v in target.valid.items()}
    kwargs[param] = bad
    call = f"{target.id}({shown(kwargs)})"
    note(call)
    outcome, what = run(target, context, kwargs, guard)
    try:
        assert outcome != "hung", f"{call} did not return within {BOUND} s"
        if outcome == "raised":
            assert isinstance(what, LabError), f"{call} raised {type(what).__name__}: {what}"
            text = str(what).strip()
            assert text and "\n" not in text, f"{call}: a LabError of more than one line: {text[:300]!r}"
    finally:
        if outcome != "hung":
            healed = heal()
            if healed:
                note(f"put back after {call}: {healed}")


def examples(body) -> None:
    """``body(data)`` for EXAMPLES examples (hypothesis: no database, no deadline, no health checks)."""
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check_one(data):
        body(data)

    check_one()
