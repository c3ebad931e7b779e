"""A node of the cluster: a PostgreSQL server with a name, a role and a port.

>>> cluster = lab.up()                                        # doctest: +SKIP
>>> cluster.primary.execute("INSERT INTO test_replication (mensaje) VALUES ('hi')")  # doctest: +SKIP
1
>>> cluster.node("replica1").sql("SELECT count(*) FROM test_replication")  # doctest: +SKIP
"""
from __future__ import annotations

import enum
import math
import os
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import quote

import pandas as pd
import psycopg2
import psycopg2.extensions
from psycopg2 import sql as pgsql

from . import commands, conninfo
from .errors import (BadArgument, LabError, NotRunning, ReadOnlyError, SQLError, Text,  # noqa: F401 (Text: lab.node.Text)
                     need_bool, need_int, need_number, need_str)
from .i18n import N_, _
from .system.operations import changes_cluster

if TYPE_CHECKING:
    from .cluster import Cluster

HOST = "127.0.0.1"
MAX_PAUSE_SECONDS = 60  # how long a paused node stays frozen unless resumed earlier


class Role(str, enum.Enum):
    PRIMARY = "primary"
    REPLICA = "replica"
    FORMER_PRIMARY = "former primary"  # was the primary before a promotion elsewhere
    STANDALONE = "standalone"  # a server of the lab outside the physical cluster: streams from nobody, nobody from it

    def __str__(self):
        return self.value


_STATE_LABELS = {"running": N_("running"), "stopped": N_("stopped")}


class State(str, enum.Enum):
    RUNNING = "running"
    STOPPED = "stopped"

    def __str__(self):
        return self.value

    @property
    def label(self) -> str:
        """The state in the lab's language, for a sentence ("en marcha"); ``value`` stays the identifier
        tables and code compare ("running")."""
        return _(_STATE_LABELS[self.value])


class Node:
    def __init__(self, cluster: "Cluster", name: str):
        self._cluster = cluster
        self.name = name

    # --- identity ---------------------------------------------------------------------
    @property
    def spec(self) -> dict:
        try:
            return self._cluster._state["nodes"][self.name]
        except KeyError:
            raise LabError(_("{name} is no longer in this cluster (removed?): its nodes are {nodes}").format(
                name=self.name, nodes=", ".join(self._cluster._state["nodes"]))) from None

    @property
    def role(self) -> Role:
        return Role(self.spec["role"])

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        return self.spec["port"]

    @property
    def pid(self) -> "int | None":
        return self._cluster.backend.pid(self.spec)

    @property
    def state(self) -> State:
        return State.RUNNING if self.pid else State.STOPPED

    @property
    def is_running(self) -> bool:
        return self.pid is not None

    def _params(self, dbname=None) -> dict:
        st = self._cluster._state
        return dict(host=HOST, port=self.port, user=st["superuser"], password=st["password"],
                    dbname=dbname or st["app_db"])

    @property
    def dsn(self) -> str:
        """A libpq connection string (it holds this cluster's generated password), quoted by libpq's rules."""
        return conninfo.make(**self._params())

    @property
    def url(self) -> str:
        """A SQLAlchemy URL: ``sqlalchemy.create_engine(node.url)`` or ``pd.read_sql(q, node.url)``."""
        p = self._params()
        user, password, db = (quote(str(p[k]), safe="") for k in ("user", "password", "dbname"))
        return f"postgresql+psycopg2://{user}:{password}@{p['host']}:{p['port']}/{db}"

    def __repr__(self):
        return f"<Node {self.name}: {self.role}, {self.state}, {HOST}:{self.port}>"

    # --- SQL ----------------------------------------------------------------------------
    def connect(self, dbname=None, autocommit=True, connect_timeout=5, **kwargs):
        """A psycopg2 connection to this node (autocommit by default).  Close it when done.
        ``kwargs``: more libpq connection parameters (``options="-c work_mem=8MB"``)."""
        dbname = _need_dbname(dbname)
        need_bool(autocommit, "autocommit")
        need_int(connect_timeout, _("connect_timeout (seconds)"), lo=1, hi=3600)
        taken = sorted(set(kwargs) & {"host", "port", "user", "password", "dbname", "application_name",
                                      "connection_factory", "cursor_factory", "dsn"})
        if taken:
            raise BadArgument(_("connect() sets {parameters} itself: pass other libpq parameters only").format(
                parameters=", ".join(taken)))
        try:
            conn = psycopg2.connect(**self._params(dbname), connect_timeout=connect_timeout,
                                    application_name="lab", **kwargs)
        except psycopg2.OperationalError as e:
            if not self.is_running:
                raise NotRunning(_("{name} is stopped: start it with cluster.node({name!r}).start()").format(
                    name=self.name)) from None
            first = str(e).strip().splitlines()[0] if str(e).strip() else _("connection failed")
            raise NotRunning(_("{name} ({host}:{port}) refused the connection: {error}").format(
                name=self.name, host=HOST, port=self.port, error=first)) from None
        except (psycopg2.Error, TypeError, ValueError) as e:  # an unknown or malformed libpq parameter
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BadArgument(_("{name}: cannot connect with {parameters}: {error}").format(
                name=self.name, parameters=sorted(kwargs), error=first)) from None
        conn.autocommit = autocommit
        return conn

    def _error(self, e: psycopg2.Error, query) -> SQLError:
        text = (e.pgerror or str(e)).strip()
        lines = [ln for ln in text.splitlines() if ln.strip()]
        first = re.sub(r"^(ERROR|FATAL|PANIC):\s+", "", lines[0]) if lines else type(e).__name__
        if e.pgcode == "25006":  # read_only_sql_transaction
            return ReadOnlyError(_("{name}: {error} — {name} is a read-only hot standby; "
                                   "send writes to cluster.primary").format(name=self.name, error=first),
                                 node=self.name, sqlstate=e.pgcode)
        return SQLError(f"{self.name}: {first}", node=self.name, sqlstate=e.pgcode)

    def _run(self, query, params, dbname, fetch):
        _need_query(query, params)
        dbname = _need_dbname(dbname)
        conn = self.connect(dbname)
        try:
            with conn.cursor() as cur:
                try:
                    cur.execute(query, params)
                except psycopg2.Error as e:
                    raise self._error(e, query) from None
                except (IndexError, KeyError, TypeError, ValueError) as e:  # psycopg2 merging the parameters
                    raise _bad_params(e, params) from None
                _record(self.name, cur)
                return fetch(cur)
        finally:
            conn.close()

    def sql(self, query, params=None, dbname=None) -> pd.DataFrame:
        """Run a query; its rows as a DataFrame (empty if the statement returns none)."""
        def fetch(cur):
            if cur.description is None:
                return pd.DataFrame()
            cols = [d.name for d in cur.description]
            return pd.DataFrame(cur.fetchall(), columns=cols)
        return self._run(query, params, dbname, fetch)

    def execute(self, query, params=None, dbname=None) -> int:
        """Run a statement (autocommit); the number of rows it touched (-1 if not applicable)."""
        return self._run(query, params, dbname, lambda cur: cur.rowcount)

    def scalar(self, query, params=None, dbname=None):
        """The first column of the first row (or None)."""
        def fetch(cur):
            row = cur.fetchone() if cur.description else None
            return row[0] if row else None
        return self._run(query, params, dbname, fetch)

    def settings(self, *names: str) -> pd.DataFrame:
        """The named settings as this server sees them: one row each with ``name``, ``setting``
        (the raw value), ``unit``, ``value`` (as ``SHOW`` prints it), ``source`` and
        ``set_by_alter_system`` (``postgresql.auto.conf``: ``ALTER SYSTEM`` or ``node.set``).

        >>> cluster.primary.settings("wal_keep_size", "max_slot_wal_keep_size")   # doctest: +SKIP
        """
        if not names or not all(isinstance(n, str) and n.strip() for n in names):
            raise BadArgument(_("name the settings to read as strings, e.g. node.settings('wal_keep_size')"))
        return self.sql("SELECT name, setting, unit, current_setting(name) AS value, source, "
                        "coalesce(sourcefile LIKE '%%postgresql.auto.conf', false) AS set_by_alter_system "
                        "FROM pg_settings WHERE name = ANY(%s) ORDER BY name", (list(names),), dbname="postgres")

    @changes_cluster("node.set")
    def set(self, **settings) -> pd.DataFrame:
        """``ALTER SYSTEM SET`` each setting, then reload; None resets one to its default.

        Returns the settings as the server now sees them; prints which need a restart.
        >>> cluster.primary.set(wal_keep_size="256MB", log_checkpoints=True)  # doctest: +SKIP
        """
        if not settings:
            raise BadArgument(_("name at least one setting, e.g. node.set(work_mem='8MB')"))
        for name, value in settings.items():
            if value is not None and (not isinstance(value, (str, int, float)) or
                                      (isinstance(value, float) and not math.isfinite(value))):
                raise BadArgument(_("{setting} is set to a string, a number, True/False, or None (its default), "
                                    "not {value!r:.60}").format(setting=name, value=value))
        known = set(self.sql("SELECT name FROM pg_settings")["name"])
        unknown = [k for k in settings if k not in known]
        if unknown:
            raise LabError(_("{name}: unknown setting(s) {settings}: see SELECT name FROM pg_settings").format(
                name=self.name, settings=", ".join(unknown)))
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_conf_load_time()")
                loaded_before = cur.fetchone()[0]
                for name, value in settings.items():
                    if value is None:
                        q = pgsql.SQL("ALTER SYSTEM RESET {}").format(pgsql.SQL(name))  # a name from pg_settings
                    else:
                        if isinstance(value, bool):
                            value = "on" if value else "off"
                        q = pgsql.SQL("ALTER SYSTEM SET {} = {}").format(pgsql.SQL(name),
                                                                       pgsql.Literal(str(value)))
                    try:
                        cur.execute(q)
                    except psycopg2.Error as e:
                        raise self._error(e, q) from None
                    _record(self.name, cur)
                cur.execute("SELECT pg_reload_conf()")
                _record(self.name, cur)
        finally:
            conn.close()
        # pg_reload_conf() only signals the postmaster: wait until new sessions see the reload
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self.scalar("SELECT pg_conf_load_time()") <= loaded_before:
            time.sleep(0.01)
        result = self.sql("SELECT name, setting, unit, context, pending_restart FROM pg_settings "
                          "WHERE name = ANY(%s) ORDER BY name", (list(settings),))
        restart = result.loc[result["pending_restart"], "name"].tolist()
        if restart:
            print(_("{name}: {settings} take(s) effect after a restart: cluster.node({name!r}).restart()").format(
                name=self.name, settings=", ".join(restart)))
        return result

    # --- lifecycle ----------------------------------------------------------------------
    @changes_cluster("node.start")
    def start(self) -> "Node":
        self._cluster._start_node(self.name)
        return self

    @changes_cluster("node.stop")
    def stop(self, timeout: float = 30) -> "Node":
        """Fast shutdown (like ``pg_ctl stop -m fast``); SIGKILL after ``timeout`` seconds."""
        timeout = need_number(timeout, "timeout", lo=0, hi=3600, unit="seconds")
        self._cluster._stop_node(self.name, timeout)
        return self

    def restart(self) -> "Node":
        self.stop()
        return self.start()

    @changes_cluster("node.kill")
    def kill(self) -> "Node":
        """SIGKILL the postmaster: a crash, for experiments.  ``start()`` recovers it.  A stopped
        node raises NotRunning (as ``lab.faults.kill`` does)."""
        if self._cluster.backend.kill(self.spec) is None:
            raise NotRunning(_("{name} is stopped already: nothing to kill; start it with "
                               "cluster.node({name!r}).start()").format(name=self.name))
        return self

    @changes_cluster("node.pause")
    def pause(self, max_seconds: float = MAX_PAUSE_SECONDS) -> str:
        """Freeze this node (SIGSTOP of its processes / ``docker pause``): frozen, not stopped, its
        port still accepts TCP connections but nothing answers.  Locally a watchdog resumes it after
        ``max_seconds`` even if this kernel dies.  Returns a one-line account."""
        if isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float)) \
                or not 0 < max_seconds <= 3600:  # NaN fails the range test too
            raise BadArgument(_("max_seconds is how long the node may stay frozen, more than 0 and at most "
                                "3600 s, not {value!r:.60}").format(value=max_seconds))
        if not self.is_running:
            raise NotRunning(_("{name} is stopped: start it before pausing it").format(name=self.name))
        backend = self._cluster.backend
        if backend.is_paused(self.spec):
            return _("{name}: paused already").format(name=self.name)
        return _("{name}: paused ({how})").format(name=self.name, how=backend.pause(self.spec, max_seconds))

    @changes_cluster("node.resume")
    def resume(self) -> str:
        """Thaw a paused node (SIGCONT / ``docker unpause``); a no-op if it is not paused.
        Returns a one-line account."""
        return f"{self.name}: {self._cluster.backend.resume(self.spec)}"

    @changes_cluster("node.promote")
    def promote(self) -> "Node":
        """Make this replica a primary (a promote signal, like ``pg_ctl promote``); the other
        replicas follow it; the cluster now writes here."""
        self._cluster._promote(self.name)
        return self

    @property
    def pgdata(self) -> str:
        """This node's data directory (inside its container with the compose backend)."""
        return self.spec["pgdata"]

    def tool(self, *args, check: bool = True, timeout: float = 120, env: "dict | None" = None):
        """Run a command where this node's data is, as the server user; a CompletedProcess.
        ``env`` adds environment variables (e.g. PGPASSWORD for pg_basebackup).

        >>> cluster.primary.tool("pg_controldata", cluster.primary.pgdata).stdout   # doctest: +SKIP
        """
        if not args or not all(isinstance(a, (str, os.PathLike, int)) and not isinstance(a, bool) for a in args):
            raise BadArgument(_("tool() takes the command and its arguments as strings, e.g. "
                                "node.tool('pg_controldata', node.pgdata)"))
        if any("\0" in str(a) for a in args):
            raise BadArgument(_("an argument of tool() holds a NUL character"))
        need_bool(check, "check")
        timeout = need_number(timeout, "timeout", lo=0.001, hi=86400, unit="seconds")
        if env is not None and (not isinstance(env, Mapping) or not all(
                isinstance(k, str) and k and "=" not in k and "\0" not in k and isinstance(v, str) and "\0" not in v
                for k, v in env.items())):
            raise BadArgument(_("env is a dict of environment variables (str: str), e.g. {{'PGPASSWORD': '...'}}, "
                                "not {value!r:.60}").format(value=env))
        return self._cluster.backend.tool(self.spec, args, check=check, timeout=timeout, env=env)

    def logs(self, tail: int = 50) -> Text:
        """The last ``tail`` lines of this node's server log."""
        tail = need_int(tail, _("tail (how many of the last lines)"), lo=0)
        if tail == 0:
            return Text("")
        return Text(commands.entrypoint_says(commands.mask_log(self._cluster.backend.logs(self.spec, tail))))


_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


def valid_node_name(name: str) -> bool:
    return isinstance(name, str) and bool(_NAME_RE.match(name))


def need_node_name(name, what: str = "name") -> str:
    """``name`` if it is a string; BadArgument otherwise (whether such a node exists is the caller's to say)."""
    return need_str(name, what, example="'replica1'")


def _need_dbname(dbname) -> "str | None":
    if dbname is None:
        return None
    need_str(dbname, "dbname", example="'postgres'")
    if "\0" in dbname:
        raise BadArgument(_("dbname holds a NUL character"))
    return dbname


def _need_query(query, params) -> None:
    """The query is SQL text (or a psycopg2.sql object); params a tuple/list for %s, a dict for %(name)s."""
    if isinstance(query, pgsql.Composable):
        pass
    elif not isinstance(query, str):
        raise BadArgument(_("the query is SQL as a string, e.g. \"SELECT 1\", not {value!r:.60}").format(value=query))
    elif not query.strip():
        raise BadArgument(_("empty query: pass the SQL to run as a string"))
    elif "\0" in query:
        raise BadArgument(_("the query holds a NUL character, which PostgreSQL does not accept"))
    if params is not None and (isinstance(params, (str, bytes)) or not isinstance(params, (tuple, list, Mapping))):
        raise BadArgument(_("params is a tuple or list (for %s placeholders) or a dict (for %(name)s), "
                            "e.g. ('x',) — not {value!r:.60}").format(value=params))


def _bad_params(e: Exception, params) -> BadArgument:
    """psycopg2's IndexError/KeyError/TypeError/ValueError while merging ``params`` into the query."""
    if isinstance(e, KeyError):
        why = (_("no value for the placeholder %({key})s").format(key=e.args[0]) if e.args
               else _("a named placeholder has no value"))
    elif isinstance(e, IndexError):
        why = _("fewer values than %s placeholders")
    elif "NUL" in str(e):
        return BadArgument(_("a value in params holds a NUL character, which PostgreSQL does not accept"))
    else:
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return BadArgument(_("the query's placeholders do not match params ({why}): one %s per value of a tuple, "
                         "%(name)s per key of a dict, and %% for a literal %").format(why=why))


def _record(name: str, cur) -> None:
    """The statement ``cur`` just ran, for lab.transcript() if it changes the server."""
    text = cur.query.decode("utf-8", "replace") if isinstance(cur.query, bytes) else str(cur.query or "")
    if text and commands.changes_a_server(text):
        commands.sql(name, text)
