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

import numbers
import re

from .errors import BadArgument, need_int
from .i18n import _

_LSN_RE = re.compile(r"^\s*([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})\s*$")
MAX_LSN = (1 << 64) - 1


class BadLSN(BadArgument, ValueError):
    """Not an LSN: a LabError (one line in a notebook), and a ValueError for code that catches those."""


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_lsn(text: "str | int | None") -> "int | None":
    """``'16/B374D848'`` -> int; ints (0 to 2**64 - 1) pass through; ``None`` stays ``None``.
    Anything else is a ``BadLSN`` (a LabError and a ValueError)."""
    if text is None:
        return None
    if isinstance(text, numbers.Integral) and not isinstance(text, bool):
        if not 0 <= int(text) <= MAX_LSN:
            raise BadLSN(_("an LSN is a byte position from 0 to 2**64 - 1, not {value}").format(value=_shown(text)))
        return int(text)
    m = _LSN_RE.match(text) if isinstance(text, str) else None
    if not m:
        raise BadLSN(_("not an LSN: {value} (an LSN is two hex numbers like '0/3000060', "
                       "as pg_current_wal_lsn() shows it)").format(value=_shown(text)))
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


def record_end(lsn, block_size: int = 8192, segment_size: int = 16 * 1024 * 1024) -> int:
    """``pg_current_wal_insert_lsn()`` (or a commit's LSN taken from it) as the end of the record
    before it, as an int.  When that record ends exactly at a page boundary, the insert position
    points past the next page's header (24 bytes; 40 on a segment's first page), while the
    record's end — what a standby flushes and replays, what a synchronous COMMIT waits for — is
    the boundary itself: waiting for a replica to replay the insert position would then wait for
    WAL nobody has written yet.

    >>> format_lsn(record_end("0/4118018"))
    '0/4118000'
    >>> format_lsn(record_end("0/4118060"))
    '0/4118060'
    """
    v = parse_lsn(lsn)
    if v % segment_size == 40:
        return v - 40
    if v % block_size == 24:
        return v - 24
    return v


def wal_segment_name(lsn, timeline: int = 1, segment_size: int = 16 * 1024 * 1024) -> str:
    """The WAL file holding the byte *at* ``lsn``.

    ``pg_walfile_name`` names the file of the byte *before* the LSN (where the record that
    ended there was written), so at an exact segment boundary it gives the previous file.

    >>> wal_segment_name("0/3000060")
    '000000010000000000000003'
    """
    v = parse_lsn(lsn)
    if v is None:
        raise BadLSN(_("not an LSN: None (an LSN is two hex numbers like '0/3000060')"))
    need_int(timeline, "timeline", lo=1, hi=0xFFFFFFFF)
    need_int(segment_size, _("segment_size (bytes)"), lo=1 << 20, hi=1 << 30)
    if segment_size & (segment_size - 1):
        raise BadArgument(_("segment_size is a power of 2 from 1 MB to 1 GB, not {value}").format(value=segment_size))
    segno = v // segment_size
    per_xlogid = 0x100000000 // segment_size
    return f"{timeline:08X}{segno // per_xlogid:08X}{segno % per_xlogid:08X}"
