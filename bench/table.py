"""The benchmarks' output formats: a table of (measure, value, target, met?), and a wide grid."""
from __future__ import annotations


def print_table(rows, heading: str = "measure") -> None:
    """``rows``: (name, value text, target text, True/False/None for no target)."""
    w = max(len(heading), *(len(r[0]) for r in rows))
    print(f"\n{heading:<{w}}  {'value':>9}  {'target':<10} ok")
    print("-" * (w + 27))
    for name, val, target, ok in rows:
        print(f"{name:<{w}}  {val:>9}  {target:<10} {'' if ok is None else ('yes' if ok else 'NO')}")


def fmt(x, spec=".1f", none="—"):
    """``x`` formatted by ``spec``; ``none`` for no value."""
    return none if x is None else format(x, spec)


def print_grid(header, rows) -> None:
    """A wide table: first column left-aligned, the others right-aligned."""
    cells = [list(header)] + [[str(c) for c in r] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(r):
        return "  ".join(c.ljust(w[0]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r))

    print()
    print(line(cells[0]))
    print("-" * (sum(w) + 2 * (len(w) - 1)))
    for r in cells[1:]:
        print(line(r))
