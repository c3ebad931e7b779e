"""Reading what a student answers: the same answer given as ``3``, ``"3"`` or ``" 3 "``."""
from __future__ import annotations

import numbers


def as_count(answer) -> "int | None":
    """A whole number given as an int or a string of digits, else None (a bool is not a count).

    >>> as_count(3), as_count(" 3 "), as_count(True), as_count("three")
    (3, 3, None, None)
    """
    if isinstance(answer, bool):
        return None
    if isinstance(answer, numbers.Integral):
        return int(answer)
    if isinstance(answer, str) and answer.strip().isdigit():
        return int(answer.strip())
    return None
