"""A backend's own questions to one of its servers: the state's superuser login on 127.0.0.1 and the
node's published port, one statement, one connection (what ``Node`` offers students, without it)."""
from __future__ import annotations

import psycopg2

from .. import commands


def connect(state: dict, spec: dict, timeout: float = 5):
    """An autocommit connection to the node's ``postgres`` database (close it when done)."""
    conn = psycopg2.connect(host="127.0.0.1", port=spec["port"], user=state["superuser"],
                            password=state["password"], dbname="postgres", connect_timeout=max(1, int(timeout)))
    conn.autocommit = True
    return conn


def query(state: dict, spec: dict, sql: str, params=None, timeout: float = 5) -> "tuple | None":
    """The first row of ``sql`` on the node (None if it returns none); psycopg2 errors pass through."""
    conn = connect(state, spec, timeout)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            text = cur.query.decode("utf-8", "replace") if isinstance(cur.query, bytes) else str(cur.query or "")
            if commands.changes_a_server(text):
                commands.sql(spec["name"], text)
            return cur.fetchone() if cur.description else None
    finally:
        conn.close()
