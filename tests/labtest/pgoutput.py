"""pgoutput messages as bytes, made by hand (what pg_logical_slot_get_binary_changes returns for the
table precios(moneda text, precio numeric)), for the tests of lab.logical.parse_pgoutput."""
from __future__ import annotations

import struct


def _cstr(s: str) -> bytes:
    return s.encode() + b"\0"


def _text(value: str) -> bytes:
    return b"t" + struct.pack("!i", len(value)) + value.encode()


RELATION = (b"R" + struct.pack("!I", 16400) + _cstr("public") + _cstr("precios") + b"d" + struct.pack("!h", 2)
            + b"\1" + _cstr("moneda") + struct.pack("!Ii", 25, -1)
            + b"\0" + _cstr("precio") + struct.pack("!Ii", 1700, -1))
INSERT_BTC = b"I" + struct.pack("!I", 16400) + b"N" + struct.pack("!h", 2) + _text("BTC") + b"n"
UPDATE_SOL = (b"U" + struct.pack("!I", 16400) + b"O" + struct.pack("!h", 2) + _text("SOL") + _text("1")
              + b"N" + struct.pack("!h", 2) + _text("SOL") + b"u")  # precio unchanged (a TOASTed value)
DELETE_ETH = b"D" + struct.pack("!I", 16400) + b"K" + struct.pack("!h", 2) + _text("ETH") + b"n"
