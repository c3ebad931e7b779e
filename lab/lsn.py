"""Log sequence numbers: small pure functions.

An LSN is a 64-bit byte position in the WAL, printed by PostgreSQL as two hex
numbers ``hi/lo``:

>>> parse_lsn("0/3000060")
50331744
>>> format_lsn(50331744)
'0/3000060'
>>> lsn_diff("0/3000060", "0/3000000")
96
"""
from __future__ import annotations

import re

_LSN_RE = re.compile(r"^\s*([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})\s*$")


def parse_lsn(text: "str | int | None") -> "int | None":
    """``'16/B374D848'`` -> int; ints pass through; ``None`` stays ``None``."""
    if text is None:
        return None
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"an LSN cannot be negative: {text}")
        return text
    m = _LSN_RE.match(str(text))
    if not m:
        raise ValueError(f"not an LSN: {text!r} (expected two hex numbers like '0/3000060')")
    return (int(m.group(1), 16) << 32) | int(m.group(2), 16)


def format_lsn(value: "int | str | None") -> "str | None":
    """int -> ``'hi/lo'`` as PostgreSQL prints it."""
    if value is None:
        return None
    v = parse_lsn(value)
    return f"{v >> 32:X}/{v & 0xFFFFFFFF:X}"


def lsn_diff(a, b) -> "int | None":
    """Bytes from ``b`` to ``a`` (like ``pg_wal_lsn_diff(a, b)``); ``None`` if either is unknown."""
    if a is None or b is None:
        return None
    return parse_lsn(a) - parse_lsn(b)


def wal_segment_name(lsn, timeline: int = 1, segment_size: int = 16 * 1024 * 1024) -> str:
    """The WAL file holding the byte *at* ``lsn``.

    ``pg_walfile_name`` names the file of the byte *before* the LSN (where the record that
    ended there was written), so at an exact segment boundary it gives the previous file.

    >>> wal_segment_name("0/3000060")
    '000000010000000000000003'
    """
    v = parse_lsn(lsn)
    segno = v // segment_size
    per_xlogid = 0x100000000 // segment_size
    return f"{timeline:08X}{segno // per_xlogid:08X}{segno % per_xlogid:08X}"
