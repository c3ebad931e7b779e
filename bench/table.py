"""The benchmarks' one output format: a table of (measure, value, target, met?)."""
from __future__ import annotations


def print_table(rows, heading: str = "measure") -> None:
    """``rows``: (name, value text, target text, True/False/None for no target)."""
    w = max(len(heading), *(len(r[0]) for r in rows))
    print(f"\n{heading:<{w}}  {'value':>9}  {'target':<10} ok")
    print("-" * (w + 27))
    for name, val, target, ok in rows:
        print(f"{name:<{w}}  {val:>9}  {target:<10} {'' if ok is None else ('yes' if ok else 'NO')}")
