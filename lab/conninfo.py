"""libpq connection strings, built and read by libpq's own helpers (one place for all of them).

>>> make(host="127.0.0.1", port=5432, user="admin", dbname="crypto_db")
'host=127.0.0.1 port=5432 user=admin dbname=crypto_db'
>>> parse(make(passfile="/my data/it's"))["passfile"]
"/my data/it's"
"""
from __future__ import annotations

from psycopg2.extensions import make_dsn, parse_dsn

from .errors import BadArgument, LabError, need_str
from .i18n import _


def make(dsn: str = "", **params) -> str:
    """A connection string: ``dsn`` (if any) with ``params`` added or replaced; values quoted by
    libpq's rules, None values left out."""
    if dsn is not None:
        need_str(dsn, _("dsn (a libpq connection string)"), empty=True, example="'host=127.0.0.1 port=5432'")
    clean = {k: (str(v) if not isinstance(v, str) else v) for k, v in params.items() if v is not None}
    try:
        return make_dsn(dsn or None, **clean)
    except Exception as e:  # psycopg2.ProgrammingError: a key libpq does not know, a malformed dsn
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LabError(_("not a valid libpq connection string: {error}").format(error=first)) from None


def parse(dsn: str) -> dict:
    """The parameters of a connection string (``key=value`` form or a ``postgresql://`` URI)."""
    if not isinstance(dsn, str):
        raise LabError(_("a connection string is text, not {type}").format(type=type(dsn).__name__))
    try:
        return parse_dsn(dsn)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LabError(_("not a valid libpq connection string: {error}").format(error=first)) from None


def multi_host(endpoints, **params) -> str:
    """One connection string naming several servers (``host=a,b port=1,2``): libpq tries them in
    order and keeps the first that matches ``target_session_attrs``.

    >>> multi_host([("127.0.0.1", 5432), ("127.0.0.1", 5433)], target_session_attrs="read-write")
    'host=127.0.0.1,127.0.0.1 port=5432,5433 target_session_attrs=read-write'
    """
    if isinstance(endpoints, (str, bytes)) or not hasattr(endpoints, "__iter__"):
        raise BadArgument(_("endpoints is a list of (host, port) pairs, not {type}").format(type=type(endpoints).__name__))
    endpoints = list(endpoints)
    for e in endpoints:
        if not isinstance(e, (tuple, list)) or len(e) != 2:
            raise BadArgument(_("endpoints is a list of (host, port) pairs, e.g. [('127.0.0.1', 5432)], not with {item!r}")
                              .format(item=e)[:200])
    if not endpoints:
        raise LabError(_("a multi-host connection string needs at least one (host, port)"))
    return make(host=",".join(str(h) for h, _p in endpoints), port=",".join(str(p) for _h, p in endpoints),
                **params)
