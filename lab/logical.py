"""Logical replication and change data capture: a publication on the primary, a subscription on an
"analytics" server outside the physical cluster, and the change stream itself.

>>> lab.logical.ensure_logical(cluster)                    # doctest: +SKIP
['primary: wal_level is logical already: nothing to do']
>>> lab.logical.setup(cluster)                             # doctest: +SKIP
>>> lab.logical.subscribe(cluster)                         # doctest: +SKIP
>>> lab.logical.decode(cluster)                            # doctest: +SKIP
>>> lab.logical.tidy(cluster)                              # doctest: +SKIP

Physical replication ships every byte of WAL; logical replication decodes the WAL on the primary
into row changes (INSERT/UPDATE/DELETE of the tables a *publication* names) and sends only those,
through a logical *slot*, to a *subscription* on any writable server.  The chapter's tables live
in ``crypto_db``: ``precios`` (one price tick per coin and instant; its key is ``(moneda,
registrado_en)``) and chapter 05's ``lab_writes``; DDL is not replicated, so the lab creates both
on the subscriber too.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import re
import struct
import time

import pandas as pd
from matplotlib.figure import Figure

from . import conninfo, failover, plots, slots, workload  # noqa: F401 (plots: Figures show as pictures)
from .errors import BadArgument, LabError, NotRunning, SQLError, Text, Timeout, _shown, need_bool, need_choice, \
    need_int, need_number, need_str
from .faults import need_cluster
from .i18n import N_, _, ngettext
from .lsn import format_lsn, parse_lsn
from .node import Node, Role
from .system.operations import changes_cluster

ANALYTICS = "analytics"          # the subscriber's node name
PUBLICATION = "analytics_pub"    # precios + lab_writes, everything
SUBSCRIPTION = "analytics_sub"   # on the subscriber; its slot on the primary has the same name
TABLE = "precios"
NO_KEY_TABLE = "eventos"         # a table without a primary key
LOCAL_TABLE = "notas_locales"    # written on the primary, in no publication
CDC_SLOT = "cdc_demo"            # a slot read with pg_logical_slot_get_changes
FORGOTTEN = "cdc_forgotten"      # a logical slot nobody reads
FILTERED = "precios_btc"         # a row filter and a column list
INSERTS_ONLY = "precios_altas"   # publish = 'insert'
NO_KEY_PUB = "eventos_pub"       # publishes eventos (UPDATE needs a replica identity)
CHAPTER_PUBLICATIONS = (PUBLICATION, FILTERED, INSERTS_ONLY, NO_KEY_PUB)
CHAPTER_SLOTS = (CDC_SLOT, FORGOTTEN, "carry_demo", "bytes_demo")
# values of the chapter's tables, shown in the language the lab speaks (_() where used)
REPLICA_KIND = N_("physical replica")
SUBSCRIBER_KIND = N_("logical subscriber")
ACCEPTED, REFUSED = N_("accepted"), N_("refused")
COINS = ("BTC", "ETH", "SOL", "ADA")
DB = "crypto_db"

CREATE_TABLES = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    moneda        text          NOT NULL,
    registrado_en timestamptz   NOT NULL,
    precio        numeric(18,2) NOT NULL,
    volumen       numeric(18,4) NOT NULL DEFAULT 0,
    PRIMARY KEY (moneda, registrado_en)
);
CREATE TABLE IF NOT EXISTS {NO_KEY_TABLE} (
    tipo    text        NOT NULL,
    detalle text,
    momento timestamptz NOT NULL DEFAULT clock_timestamp()
);
"""


def _say(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, flush=True)


def _wait(pred, timeout: float, what: str, step: float = 0.02):
    """Poll ``pred()`` until it returns something true; a Timeout naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise Timeout(_("{what} after {seconds:g} s").format(what=what, seconds=timeout))
        time.sleep(step)


def _primary(cluster) -> Node:
    p = need_cluster(cluster).primary
    if not p.is_running:
        raise NotRunning(_("the primary ({name}) is stopped: start it with cluster.start() or lab.up()").format(
            name=p.name))
    return p


def _timeout(timeout) -> float:
    return need_number(timeout, "timeout", lo=1, hi=600, unit=_("seconds"))


def _ident(name, what: str) -> str:
    """A simple SQL identifier (lower case letters, digits, underscores): it goes into DDL as is."""
    need_str(name, what, example="'mi_publicacion'")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise BadArgument(_("{what} is a simple lower-case name (letters, digits, _), not {value!r:.60}").format(
            what=what, value=name))
    return name


# --- wal_level -------------------------------------------------------------------------------
@changes_cluster()
def ensure_logical(cluster, quiet: bool = False) -> "list[str]":
    """The primary decodes WAL only with ``wal_level = logical``: set it if it is lower (``ALTER
    SYSTEM``, then a restart: it is read only at start) and wait for the replicas to stream again.
    Replicas need nothing: they replay the primary's WAL whatever their own setting.  What it did,
    one line each (or that nothing was needed)."""
    need_bool(quiet, "quiet")
    p = _primary(cluster)
    done = []
    level = p.scalar("SHOW wal_level", dbname="postgres")
    if level != "logical":
        p.set(wal_level="logical")
        p.restart()
        cluster.wait_streaming(timeout=60)
        done.append(_("{node}: wal_level was {level}; ALTER SYSTEM SET wal_level = logical and a restart "
                      "(the WAL now carries what logical decoding needs)").format(node=p.name, level=level))
    else:
        done.append(_("{node}: wal_level is logical already: nothing to do").format(node=p.name))
    for setting in ("max_replication_slots", "max_wal_senders"):
        have = int(p.scalar(f"SHOW {setting}", dbname="postgres"))
        if have < 8:
            done.append(_("{node}: {setting} = {have}, fewer than this chapter's slots need: "
                          "cluster.primary.set({setting}=10) and a restart").format(
                node=p.name, setting=setting, have=have))
    _say(quiet, "\n".join(done))
    return done


# --- the analytics server ---------------------------------------------------------------------
def _tables(node: Node) -> None:
    node.execute(CREATE_TABLES)
    workload.ensure_table(node)


def _fill(p: Node, rows: int) -> int:
    """Top ``precios`` up to ``rows`` rows (ticks one second apart, going back from a fixed day)."""
    have = int(p.scalar(f"SELECT count(*) FROM {TABLE}"))
    if have < rows:
        p.execute(f"INSERT INTO {TABLE} (moneda, registrado_en, precio, volumen) "
                  "SELECT (%s::text[])[1 + g %% 4], timestamptz '2026-01-01 00:00:00+00' - g * interval '1 second', "
                  "round((1000 + 100 * sin(g / 50.0))::numeric, 2), round((g %% 97)::numeric / 7, 4) "
                  "FROM generate_series(%s, %s) AS g ON CONFLICT DO NOTHING",
                  (list(COINS), have + 1, rows))
    return int(p.scalar(f"SELECT count(*) FROM {TABLE}"))


def analytics(cluster, name: str = ANALYTICS, quiet: bool = True) -> Node:
    """The subscriber: a standalone server outside the physical cluster (``cluster.add_standalone``),
    writable, with the chapter's tables created empty (DDL is not replicated) and logical
    replication workers allowed.  The same name again returns it (started if it was stopped)."""
    need_cluster(cluster)
    name = _ident(name, _("name (the subscriber's node name)"))
    need_bool(quiet, "quiet")
    if name in {n.name for n in cluster.standalones}:
        node = cluster.node(name)
    else:
        node = cluster.add_standalone(name=name, quiet=quiet)
    if not node.is_running:
        node.start()
    if int(node.scalar("SHOW max_logical_replication_workers", dbname="postgres")) == 0:
        node.set(max_logical_replication_workers=4)
        node.restart()
        _say(quiet, _("{node}: max_logical_replication_workers was 0; set to 4 and restarted").format(node=name))
    if node.scalar("SHOW wal_retrieve_retry_interval", dbname="postgres") != "1s":
        # how long an apply worker that failed waits before it tries again (5 s by default)
        node.set(wal_retrieve_retry_interval="1s")
    _tables(node)
    return node


def _subscriber(cluster, name: str = ANALYTICS) -> Node:
    need_cluster(cluster)
    _ident(name, _("subscriber (the analytics node's name)"))
    if name not in {n.name for n in cluster.standalones}:
        raise LabError(_("there is no {name!r} server yet: lab.logical.analytics(cluster) creates it").format(
            name=name))
    node = cluster.node(name)
    if not node.is_running:
        raise NotRunning(_("{name} is stopped: start it with cluster.node({name!r}).start()").format(name=name))
    return node


def publisher_conninfo(cluster, subscriber: str = ANALYTICS) -> str:
    """The connection string the subscriber's apply worker uses to reach the primary (with a
    password: it is stored in ``pg_subscription``, readable by superusers only)."""
    need_cluster(cluster)
    return cluster.conninfo_from(subscriber, to=cluster.primary.name, dbname=DB)


@changes_cluster()
def setup(cluster, rows: int = 20000, quiet: bool = False) -> pd.Series:
    """Everything the chapter starts from: ``wal_level = logical`` (``ensure_logical``), the tables on the
    primary with ``rows`` price ticks in ``precios``, the publication ``analytics_pub`` (``precios`` and
    ``lab_writes``), and the ``analytics`` server with the same tables, empty.  Safe to run again."""
    need_int(rows, _("rows (price ticks in precios)"), lo=1, hi=1_000_000)
    need_bool(quiet, "quiet")
    ensure_logical(cluster, quiet=quiet)
    p = _primary(cluster)
    _tables(p)
    have = _fill(p, rows)
    if not p.scalar("SELECT count(*) FROM pg_publication WHERE pubname = %s", (PUBLICATION,)):
        p.execute(f"CREATE PUBLICATION {PUBLICATION} FOR TABLE {TABLE}, {workload.TABLE}")
    node = analytics(cluster, quiet=quiet)
    out = pd.Series(dict(primary=p.name, rows_in_precios=have, publication=PUBLICATION,
                         tables=", ".join(publication_tables(cluster, PUBLICATION)["tablename"]),
                         subscriber=node.name, subscriber_port=node.port), name=_("setup"), dtype="object")
    _say(quiet, ngettext("{primary}: {n} row in {table}, publication {publication}; {subscriber} ready to subscribe",
                         "{primary}: {n} rows in {table}, publication {publication}; {subscriber} ready to subscribe",
                         have).format(primary=p.name, n=have, table=TABLE, publication=PUBLICATION,
                                      subscriber=node.name))
    return out


def publication_tables(cluster, publication: "str | None" = None) -> pd.DataFrame:
    """``pg_publication_tables`` on the primary: each publication's tables, the columns it carries
    (``attnames``: a column list, else every column) and its row filter (``rowfilter``)."""
    p = _primary(cluster)
    where, params = "", None
    if publication is not None:
        _ident(publication, "publication")
        where, params = "WHERE pt.pubname = %s", (publication,)
    return p.sql("SELECT pt.pubname, pt.tablename, pt.attnames::text AS attnames, pt.rowfilter, "
                 "p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate "
                 f"FROM pg_publication_tables pt JOIN pg_publication p USING (pubname) {where} "
                 "ORDER BY pt.pubname, pt.tablename", params)


# --- the subscription -------------------------------------------------------------------------
def _sub_state(node: Node) -> pd.DataFrame:
    return node.sql("SELECT c.relname AS tablename, r.srsubstate AS state "
                    "FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid "
                    "JOIN pg_class c ON c.oid = r.srrelid WHERE s.subname = %s", (SUBSCRIPTION,))


def _has_subscription(node: Node) -> bool:
    return bool(node.scalar("SELECT count(*) FROM pg_subscription WHERE subname = %s", (SUBSCRIPTION,)))


@changes_cluster()
def subscribe(cluster, timeout: float = 120, quiet: bool = False) -> pd.Series:
    """``CREATE SUBSCRIPTION analytics_sub CONNECTION '…' PUBLICATION analytics_pub`` on the analytics
    server: the primary makes a logical slot of that name, table-sync workers copy each table as it is
    now (``COPY``), then the apply worker streams every change after that copy.  Waits until every
    table is ready (``pg_subscription_rel.srsubstate = 'r'``); measures the initial copy.  The
    subscriber's copies of the tables are emptied first (``TRUNCATE``): the copy inserts every row,
    and one the subscriber has already would stop it with a duplicate key.

    An existing subscription is left as it is (its copy was measured when it was made)."""
    timeout = _timeout(timeout)
    need_bool(quiet, "quiet")
    p = _primary(cluster)
    node = _subscriber(cluster)
    rows_primary = int(p.scalar(f"SELECT count(*) FROM {TABLE}"))
    if _has_subscription(node):
        _say(quiet, _("{node}: subscription {subscription} exists already").format(node=node.name,
                                                                                   subscription=SUBSCRIPTION))
        created = False
        t0 = time.monotonic()
    else:
        created = True
        # the initial copy INSERTs every row: a row the subscriber has already would stop it
        # (duplicate key), so its copies start empty
        node.execute(f"TRUNCATE {TABLE}, {workload.TABLE}")
        t0 = time.monotonic()
        _create_subscription(cluster, node, copy_data=True)

    def copied():
        if node.scalar("SELECT sync_error_count FROM pg_stat_subscription_stats WHERE subname = %s",
                       (SUBSCRIPTION,)):
            raise LabError(_("{node}: the initial copy failed: {error}").format(
                node=node.name, error=slots.log_lines(node, 'ERROR', last=1).strip()))
        s = _sub_state(node)
        return not s.empty and (s["state"] == "r").all()
    _wait(copied, timeout, _("{node}: the initial copy has not finished (see cluster.node({node!r}).logs())").format(
        node=node.name))
    copy_s = time.monotonic() - t0
    copied = int(node.scalar(f"SELECT count(*) FROM {TABLE}"))
    out = pd.Series(dict(subscription=SUBSCRIPTION, publication=PUBLICATION, slot_on_primary=SUBSCRIPTION,
                         rows_on_primary=rows_primary, rows_copied=copied,
                         copy_s=round(copy_s, 3) if created else None,
                         rows_per_s=round(copied / copy_s) if created and copy_s > 0 else None),
                    name=_("initial copy"), dtype="object")
    if created:
        _say(quiet, ngettext("{node}: {n} row of {table} copied in {seconds:.2f} s, now streaming",
                             "{node}: {n} rows of {table} copied in {seconds:.2f} s, now streaming",
                             copied).format(node=node.name, n=copied, table=TABLE, seconds=copy_s))
    return out


def _create_subscription(cluster, node: Node, copy_data: bool) -> None:
    dsn = publisher_conninfo(cluster, node.name).replace("'", "''")
    node.execute(f"CREATE SUBSCRIPTION {SUBSCRIPTION} CONNECTION '{dsn}' PUBLICATION {PUBLICATION} "
                 f"WITH (copy_data = {'true' if copy_data else 'false'})")


def subscription_status(cluster, subscriber: str = ANALYTICS) -> pd.DataFrame:
    """The subscription as both ends see it: on the subscriber ``pg_stat_subscription`` (the apply
    worker's pid, ``received_lsn``, ``latest_end_lsn``) and ``pg_stat_subscription_stats`` (errors);
    on the primary its slot (``active``, ``confirmed_flush_lsn``) and the primary's current LSN."""
    node = _subscriber(cluster, subscriber)
    p = cluster.primary
    sub = node.sql("SELECT s.subname, s.subenabled AS enabled, w.pid AS apply_pid, w.received_lsn::text, "
                   "w.latest_end_lsn::text, w.latest_end_time, st.apply_error_count, st.sync_error_count "
                   "FROM pg_subscription s LEFT JOIN pg_stat_subscription w ON w.subid = s.oid AND w.relid IS NULL "
                   "LEFT JOIN pg_stat_subscription_stats st ON st.subid = s.oid ORDER BY s.subname")
    if p.is_running:
        sl = p.sql("SELECT slot_name AS subname, active AS slot_active, confirmed_flush_lsn::text, "
                   "pg_current_wal_lsn()::text AS primary_lsn FROM pg_replication_slots WHERE slot_type = 'logical'",
                   dbname=DB)
        sub = sub.merge(sl, on="subname", how="left")
    for c in ("apply_pid", "apply_error_count", "sync_error_count"):
        sub[c] = sub[c].astype("Int64")
    return sub


def _probe(p: Node, node: Node, coin: str, timeout: float) -> float:
    """Insert one tick on the primary; seconds until the subscriber shows it."""
    at = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    p.execute(f"INSERT INTO {TABLE} (moneda, registrado_en, precio) VALUES (%s, %s, 1)", (coin, at))
    _wait(lambda: node.scalar(f"SELECT count(*) FROM {TABLE} WHERE moneda = %s AND registrado_en = %s",
                              (coin, at)), timeout,
          _("{node} does not show the new row: is the subscription streaming? "
            "lab.logical.subscription_status(cluster)").format(node=node.name), step=0.002)
    return time.monotonic() - t0


def stream_one(cluster, rows: int = 5, timeout: float = 30) -> pd.DataFrame:
    """Insert ``rows`` ticks on the primary, one at a time; for each, the milliseconds until the
    analytics server shows it (the whole path: WAL, decoding, the network, the apply worker)."""
    need_int(rows, "rows", lo=1, hi=100)
    timeout = _timeout(timeout)
    p, node = _primary(cluster), _subscriber(cluster)
    out = [dict(row=i, visible_after_ms=round(_probe(p, node, "STR", timeout) * 1000, 2)) for i in range(1, rows + 1)]
    return pd.DataFrame(out)


def writable_side_by_side(cluster, replica: str = "replica1") -> pd.DataFrame:
    """One INSERT into ``precios`` on the analytics server and one on a physical replica: the subscriber
    takes it (it is an ordinary server), the replica refuses it (it replays the primary's WAL and
    nothing else).  The row written on the subscriber is deleted again."""
    node = _subscriber(cluster)
    rep = cluster.node(replica) if isinstance(replica, str) else replica
    if not isinstance(rep, Node) or rep.role != Role.REPLICA:
        raise BadArgument(_("replica is a physical replica's name, e.g. 'replica1', not {value}").format(
            value=_shown(replica)))
    rows = []
    sql = f"INSERT INTO {TABLE} (moneda, registrado_en, precio) VALUES ('LOCAL', now(), 1)"
    for n, kind in ((node, _(SUBSCRIBER_KIND)), (rep, _(REPLICA_KIND))):
        try:
            n.execute(sql)
            rows.append(dict(node=n.name, kind=kind, insert=_(ACCEPTED), message="INSERT 0 1"))
        except SQLError as e:
            rows.append(dict(node=n.name, kind=kind, insert=_(REFUSED), message=str(e)))
    node.execute(f"DELETE FROM {TABLE} WHERE moneda = 'LOCAL'")
    return pd.DataFrame(rows)


# --- what a publication carries ----------------------------------------------------------------
def _pgoutput_changes(p: Node, slot: str, publication: str) -> pd.DataFrame:
    df = p.sql("SELECT lsn::text, xid::text::bigint AS xid, data FROM pg_logical_slot_peek_binary_changes("
               "%s, NULL, NULL, 'proto_version', '1', 'publication_names', %s)", (slot, publication))
    return parse_pgoutput(df)


def parse_pgoutput(changes: pd.DataFrame) -> pd.DataFrame:
    """pgoutput's binary messages (``pg_logical_slot_peek_binary_changes``: lsn, xid, data) in words:
    one row per message with its kind (BEGIN, RELATION, INSERT, UPDATE, DELETE, COMMIT …), the table,
    and the columns and values it carries (text form, ``None`` for NULL)."""
    if not isinstance(changes, pd.DataFrame) or not {"lsn", "data"} <= set(changes):
        raise BadArgument(_("parse_pgoutput() reads what pg_logical_slot_peek_binary_changes returns (lsn, xid, data)"))
    relations: dict = {}
    rows = []
    for r in changes.itertuples():
        rows.append(dict(lsn=r.lsn, **_message(bytes(r.data), relations)))
    return pd.DataFrame(rows, columns=["lsn", "message", "table", "columns", "values", "bytes"])


_KINDS = {"B": "BEGIN", "C": "COMMIT", "R": "RELATION", "I": "INSERT", "U": "UPDATE", "D": "DELETE",
          "T": "TRUNCATE", "Y": "TYPE", "O": "ORIGIN", "M": "MESSAGE"}


_TUPLES = {"N": N_("new: {values}"), "K": N_("key: {values}"), "O": N_("old: {values}")}


def _message(b: bytes, relations: dict) -> dict:
    """One pgoutput (protocol 1) message; ``relations`` remembers each RELATION's columns."""
    kind = chr(b[0])
    out = dict(message=_KINDS.get(kind, kind), table=None, columns=None, values=None, bytes=len(b))
    pos = 1

    def string():
        nonlocal pos
        end = b.index(0, pos)
        s = b[pos:end].decode()
        pos = end + 1
        return s

    def tuple_data():
        nonlocal pos
        (n,) = struct.unpack_from("!h", b, pos)
        pos += 2
        vals = []
        for _i in range(n):
            t = chr(b[pos])
            pos += 1
            if t == "t":
                (ln,) = struct.unpack_from("!i", b, pos)
                vals.append(b[pos + 4:pos + 4 + ln].decode())
                pos += 4 + ln
            else:
                vals.append(None if t == "n" else _("(unchanged)"))
        return vals

    if kind == "R":
        (relid,) = struct.unpack_from("!I", b, pos)
        pos += 4
        ns, name = string(), string()
        pos += 1  # replica identity
        (ncols,) = struct.unpack_from("!h", b, pos)
        pos += 2
        cols = []
        for _i in range(ncols):
            pos += 1
            cols.append(string())
            pos += 8
        relations[relid] = (f"{ns}.{name}", cols)
        out.update(table=f"{ns}.{name}", columns=", ".join(cols))
    elif kind in "IUD":
        (relid,) = struct.unpack_from("!I", b, pos)
        pos += 4
        table, cols = relations.get(relid, (str(relid), []))
        out["table"] = table
        parts = []
        while pos < len(b):
            part = chr(b[pos])
            pos += 1
            vals = tuple_data()
            parts.append((part, vals))
        # the columns a DELETE's key tuple names are the key's: NULLs stand for the others
        shown = []
        for part, vals in parts:
            pairs = ", ".join(f"{c}={v}" for c, v in zip(cols, vals) if v is not None)
            label = _TUPLES.get(part)  # the new row, the old row's key, or the whole old row
            shown.append(_(label).format(values=pairs) if label else f"{part}: {pairs}")
        out.update(columns=", ".join(cols), values=" | ".join(shown))
    return out


@changes_cluster()
def carried(cluster, publication: str, quiet: bool = True) -> pd.DataFrame:
    """What a publication sends for a set of changes on ``precios``: a temporary pgoutput slot is made,
    an INSERT of a BTC and of an ETH tick, an UPDATE of the BTC tick's price and a DELETE of both are
    run, and the slot's messages for this publication are decoded (``parse_pgoutput``).  The slot is
    dropped and the rows are gone afterwards.  Compare publications: a row filter drops the ETH row, a
    column list drops columns from RELATION and the rows, ``publish = 'insert'`` drops UPDATE/DELETE."""
    _ident(publication, "publication")
    p = _primary(cluster)
    if not p.scalar("SELECT count(*) FROM pg_publication WHERE pubname = %s", (publication,)):
        raise LabError(_("no publication {publication!r} on {node}: "
                         "see lab.logical.publication_tables(cluster)").format(publication=publication, node=p.name))
    slot = "carry_demo"
    _drop_slot_quietly(p, slot)
    p.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    try:
        at = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
        p.execute(f"INSERT INTO {TABLE} (moneda, registrado_en, precio, volumen) VALUES "
                  "('BTC', %s, 64000, 1.5)", (at,))
        p.execute(f"INSERT INTO {TABLE} (moneda, registrado_en, precio, volumen) VALUES "
                  "('ETH', %s, 3000, 20)", (at,))
        p.execute(f"UPDATE {TABLE} SET precio = 64100 WHERE moneda = 'BTC' AND registrado_en = %s", (at,))
        p.execute(f"DELETE FROM {TABLE} WHERE registrado_en = %s", (at,))
        df = _pgoutput_changes(p, slot, publication)
    finally:
        _drop_slot_quietly(p, slot)
    df = df[df["message"].isin(["RELATION", "INSERT", "UPDATE", "DELETE"])].reset_index(drop=True)
    df.attrs["publication"] = publication
    return df[["message", "table", "columns", "values", "bytes"]]


def _drop_slot_quietly(p: Node, slot: str) -> bool:
    if p.scalar("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s AND NOT active", (slot,)):
        p.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        return True
    return False


@changes_cluster()
def demo_publications(cluster) -> pd.DataFrame:
    """Two more publications of ``precios`` to compare with ``analytics_pub``: ``precios_btc`` with a row
    filter and a column list (``FOR TABLE precios (moneda, registrado_en, precio) WHERE (moneda =
    'BTC')``) and ``precios_altas`` with ``publish = 'insert'``.  Made once; their
    ``publication_tables`` rows.  A row filter of a publication that carries UPDATE/DELETE may use
    only replica-identity columns (here the key): PostgreSQL refuses the UPDATE otherwise."""
    p = _primary(cluster)
    have = set(p.sql("SELECT pubname FROM pg_publication")["pubname"])
    if FILTERED not in have:
        p.execute(f"CREATE PUBLICATION {FILTERED} FOR TABLE {TABLE} (moneda, registrado_en, precio) "
                  "WHERE (moneda = 'BTC')")
    if INSERTS_ONLY not in have:
        p.execute(f"CREATE PUBLICATION {INSERTS_ONLY} FOR TABLE {TABLE} WITH (publish = 'insert')")
    df = publication_tables(cluster)
    return df[df["pubname"].isin([PUBLICATION, FILTERED, INSERTS_ONLY])].reset_index(drop=True)


def compare_carried(cluster, publications=(PUBLICATION, FILTERED, INSERTS_ONLY)) -> pd.DataFrame:
    """``carried`` for each publication, counted: messages of each kind and the bytes they take."""
    if isinstance(publications, str) or not isinstance(publications, (list, tuple)) or not publications:
        raise BadArgument(_("publications is a list of publication names, e.g. ['analytics_pub', 'precios_btc']"))
    rows = []
    for pub in publications:
        df = carried(cluster, pub)
        counts = df["message"].value_counts()
        rel = df[df["message"] == "RELATION"]
        rows.append(dict(publication=pub, columns=rel["columns"].iloc[0] if len(rel) else None,
                         INSERT=int(counts.get("INSERT", 0)), UPDATE=int(counts.get("UPDATE", 0)),
                         DELETE=int(counts.get("DELETE", 0)),
                         bytes=int(df.loc[df["message"] != "RELATION", "bytes"].sum())))
    return pd.DataFrame(rows)


@changes_cluster()
def update_without_key(cluster) -> pd.Series:
    """Publish ``eventos`` (a table with no primary key) with the default ``publish`` (UPDATE and DELETE
    too), then UPDATE a row on the primary: PostgreSQL refuses it, as it could not tell a subscriber
    which row changed.  The error, as a Series; the table's replica identity.  ``eventos`` is made
    afresh each time (without a key, whatever ``repair_identity`` gave it before)."""
    p = _primary(cluster)
    p.execute(f"DROP PUBLICATION IF EXISTS {NO_KEY_PUB}")
    p.execute(f"DROP TABLE IF EXISTS {NO_KEY_TABLE}")
    p.execute(CREATE_TABLES)
    p.execute(f"INSERT INTO {NO_KEY_TABLE} (tipo, detalle) VALUES ('alta', 'primera')")
    p.execute(f"CREATE PUBLICATION {NO_KEY_PUB} FOR TABLE {NO_KEY_TABLE}")
    try:
        p.execute(f"UPDATE {NO_KEY_TABLE} SET detalle = 'cambiada' WHERE tipo = 'alta'")
        error = None
    except SQLError as e:
        error = str(e)
    return pd.Series(dict(table=NO_KEY_TABLE, replica_identity=replica_identity(cluster), update=_(REFUSED) if error
                          else _(ACCEPTED), error=error), name=_("UPDATE on the publisher"), dtype="object")


def replica_identity(cluster, table: str = NO_KEY_TABLE) -> str:
    """``pg_class.relreplident`` in words: default (the primary key), full (the whole old row),
    index (a unique index), nothing."""
    _ident(table, "table")
    code = _primary(cluster).scalar("SELECT relreplident FROM pg_class WHERE oid = %s::regclass", (table,))
    # "default", "full", "index", "nothing": REPLICA IDENTITY's own words, kept in every language
    return {"d": _("default (the primary key)"), "f": _("full (the whole old row)"), "i": "index",
            "n": "nothing"}.get(code, str(code))


@changes_cluster()
def repair_identity(cluster, how: str = "full") -> pd.Series:
    """Give ``eventos`` a replica identity, then run the refused UPDATE again: ``how='full'``
    (``ALTER TABLE … REPLICA IDENTITY FULL``: the whole old row identifies it, every column is
    logged with each UPDATE/DELETE) or ``how='key'`` (a primary key column added)."""
    need_choice(how, "how", ("full", "key"))
    p = _primary(cluster)
    if how == "full":
        p.execute(f"ALTER TABLE {NO_KEY_TABLE} REPLICA IDENTITY FULL")
    else:
        p.execute(f"ALTER TABLE {NO_KEY_TABLE} ADD COLUMN IF NOT EXISTS id bigint GENERATED ALWAYS AS IDENTITY")
        if not p.scalar(f"SELECT count(*) FROM pg_index WHERE indrelid = '{NO_KEY_TABLE}'::regclass AND indisprimary"):
            p.execute(f"ALTER TABLE {NO_KEY_TABLE} ADD PRIMARY KEY (id)")
        p.execute(f"ALTER TABLE {NO_KEY_TABLE} REPLICA IDENTITY DEFAULT")
    n = p.execute(f"UPDATE {NO_KEY_TABLE} SET detalle = 'cambiada' WHERE tipo = 'alta'")
    return pd.Series(dict(table=NO_KEY_TABLE, replica_identity=replica_identity(cluster), update=_(ACCEPTED),
                          rows_updated=n), name=_("after REPLICA IDENTITY ({how})").format(how=how), dtype="object")


# --- a conflict ----------------------------------------------------------------------------
@dataclasses.dataclass
class Conflict:
    """A transaction the subscriber cannot apply: its first row's key exists there already."""
    key: tuple                 # (moneda, registrado_en) of the clash
    rows: list                 # the keys the transaction inserted on the primary
    error: str                 # the subscriber's log line (ERROR: duplicate key …)
    context: str               # the CONTEXT line: "... in transaction N finished at X/Y"
    finish_lsn: str
    apply_error_count: int

    def summary(self) -> pd.Series:
        return pd.Series(dict(error=_message_of(self.error), context=_message_of(self.context),
                              finish_lsn=self.finish_lsn, apply_error_count=self.apply_error_count,
                              rows_in_transaction=len(self.rows)), name=_("conflict"), dtype="object")


def _message_of(line: str) -> str:
    m = re.search(r"\b(LOG|FATAL|ERROR|WARNING|CONTEXT|DETAIL):\s", line)
    return line[m.start():] if m else line


def _error_count(node: Node) -> int:
    v = node.scalar("SELECT apply_error_count FROM pg_stat_subscription_stats WHERE subname = %s", (SUBSCRIPTION,))
    return int(v or 0)


def _caught_up(cluster, node: Node, timeout: float) -> None:
    """Wait until the subscriber has applied everything the primary has written so far."""
    p = cluster.primary
    target = parse_lsn(p.scalar("SELECT pg_current_wal_lsn()::text"))

    def done():
        v = p.scalar("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                     (SUBSCRIPTION,))
        return v is not None and parse_lsn(v) >= target
    _wait(done, timeout, _("{node} has not caught up with {primary} (lab.logical.subscription_status(cluster))").format(
        node=node.name, primary=p.name))


@changes_cluster()
def make_conflict(cluster, timeout: float = 60, quiet: bool = False) -> Conflict:
    """Insert a tick on the analytics server, then the same key on the primary in a transaction of three
    rows: the apply worker fails on it (duplicate key), exits, and is restarted to fail again, every
    ``wal_retrieve_retry_interval``.  Waits for the error in the subscriber's log and in
    ``pg_stat_subscription_stats.apply_error_count``; what it found."""
    timeout = _timeout(timeout)
    need_bool(quiet, "quiet")
    p, node = _primary(cluster), _subscriber(cluster)
    if not _has_subscription(node):
        raise LabError(_("{node} has no subscription: lab.logical.subscribe(cluster) first").format(node=node.name))
    _caught_up(cluster, node, timeout)
    before = node.logs(2000).splitlines()
    marker = before[-1] if before else None
    errors0 = _error_count(node)
    at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    keys = [("ETH", at + dt.timedelta(milliseconds=i)) for i in range(3)]
    node.execute(f"INSERT INTO {TABLE} (moneda, registrado_en, precio) VALUES (%s, %s, 1)", keys[0])
    conn = p.connect(dbname=DB, autocommit=False)
    try:
        with conn.cursor() as cur:
            for i, k in enumerate(keys):
                cur.execute(f"INSERT INTO {TABLE} (moneda, registrado_en, precio) VALUES (%s, %s, %s)",
                            (*k, 3000 + i))
        conn.commit()
    finally:
        conn.close()
    _say(quiet, _("{node} had ETH at {at:%H:%M:%S} already; "
                  "{primary} committed a transaction of 3 rows with it").format(node=node.name, at=at, primary=p.name))

    def found():
        lines = slots.lines_after(node.logs(2000), marker)
        for i, ln in enumerate(lines):
            if "duplicate key value" in ln:
                ctx = next((x for x in lines[i + 1:i + 4] if "finished at" in x), None)
                if ctx:
                    return ln, ctx
        return None
    error, context = _wait(found, timeout, _("no duplicate-key error in {node}'s log").format(node=node.name))
    count = _wait(lambda: _error_count(node) > errors0 and _error_count(node), timeout,
                  _("pg_stat_subscription_stats shows no apply error"))
    lsn = re.search(r"finished at ([0-9A-F]+/[0-9A-F]+)", context).group(1)
    return Conflict(key=keys[0], rows=keys, error=error, context=context, finish_lsn=lsn, apply_error_count=count)


def _need_conflict(conflict) -> Conflict:
    if not isinstance(conflict, Conflict):
        raise BadArgument(_("conflict is what lab.logical.make_conflict(cluster) returns, not {value}").format(
            value=_shown(conflict)))
    return conflict


def transaction_rows(cluster, conflict: Conflict) -> pd.DataFrame:
    """The conflicting transaction's rows: their price on the primary and on the subscriber (None where
    the subscriber lacks the row)."""
    _need_conflict(conflict)
    p, node = _primary(cluster), _subscriber(cluster)
    rows = []
    for coin, at in conflict.rows:
        q = f"SELECT precio FROM {TABLE} WHERE moneda = %s AND registrado_en = %s"
        a, b = p.scalar(q, (coin, at)), node.scalar(q, (coin, at))
        rows.append(dict(moneda=coin, registrado_en=at, on_primary=None if a is None else float(a),
                         on_subscriber=None if b is None else float(b)))
    return pd.DataFrame(rows)


@changes_cluster()
def repair_conflict(cluster, conflict: Conflict, how: str = "delete", timeout: float = 60) -> pd.DataFrame:
    """Let the apply worker past the conflict, and wait until it has applied everything since:

    - ``how='delete'``: delete the subscriber's own row; the worker's next try applies the whole
      transaction, so the subscriber ends with the primary's three rows;
    - ``how='skip'``: ``ALTER SUBSCRIPTION analytics_sub SKIP (lsn = '<finished at>')``: the worker
      skips that whole transaction, so its other rows never arrive (the subscriber keeps its own).

    The transaction's rows on both sides afterwards (``transaction_rows``), with the seconds it took."""
    _need_conflict(conflict)
    need_choice(how, "how", ("delete", "skip"))
    timeout = _timeout(timeout)
    node = _subscriber(cluster)
    t0 = time.monotonic()
    if how == "delete":
        node.execute(f"DELETE FROM {TABLE} WHERE moneda = %s AND registrado_en = %s AND precio = 1", conflict.key)
    else:
        if node.scalar("SELECT count(*) FROM pg_subscription WHERE subname = %s AND subskiplsn <> '0/0'",
                       (SUBSCRIPTION,)) == 0:
            node.execute(f"ALTER SUBSCRIPTION {SUBSCRIPTION} SKIP (lsn = '{format_lsn(conflict.finish_lsn)}')")
    _caught_up(cluster, node, timeout)
    df = transaction_rows(cluster, conflict)
    df.attrs["repaired_s"] = round(time.monotonic() - t0, 2)
    df.attrs["how"] = how
    return df


# --- the change stream ----------------------------------------------------------------------------
def _changes(p: Node) -> None:
    """The CDC demo's changes: an INSERT, an UPDATE, a DELETE, then one transaction of three statements."""
    at = dt.datetime(2031, 1, 1, tzinfo=dt.timezone.utc)
    p.execute(f"INSERT INTO {TABLE} (moneda, registrado_en, precio) VALUES ('BTC', %s, 70000)", (at,))
    p.execute(f"UPDATE {TABLE} SET precio = 70500 WHERE moneda = 'BTC' AND registrado_en = %s", (at,))
    p.execute(f"DELETE FROM {TABLE} WHERE moneda = 'BTC' AND registrado_en = %s", (at,))
    conn = p.connect(dbname=DB, autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute(f"INSERT INTO {TABLE} (moneda, registrado_en, precio) VALUES ('SOL', %s, 150)", (at,))
            cur.execute(f"INSERT INTO {TABLE} (moneda, registrado_en, precio) VALUES ('ADA', %s, 0.5)", (at,))
            cur.execute(f"DELETE FROM {TABLE} WHERE moneda IN ('SOL', 'ADA') AND registrado_en = %s", (at,))
        conn.commit()
    finally:
        conn.close()


@changes_cluster()
def decode(cluster, plugin: str = "test_decoding") -> pd.DataFrame:
    """What a change-data-capture consumer reads: a logical slot (``cdc_demo``) made with ``plugin``,
    then an INSERT, an UPDATE and a DELETE of one tick, and a transaction of three statements; the
    slot's changes since it was made.

    - ``test_decoding``: ``pg_logical_slot_get_changes`` (text: ``BEGIN``, ``table …: INSERT: …``,
      ``COMMIT``); reading *consumes* them: the slot moves past.
    - ``pgoutput``: ``pg_logical_slot_peek_binary_changes`` (what a subscription receives), read
      without consuming and put into words by ``parse_pgoutput``.
    The slot is dropped afterwards."""
    need_choice(plugin, "plugin", ("test_decoding", "pgoutput"))
    p = _primary(cluster)
    _drop_slot_quietly(p, CDC_SLOT)
    p.execute("SELECT pg_create_logical_replication_slot(%s, %s)", (CDC_SLOT, plugin))
    try:
        _changes(p)
        if plugin == "test_decoding":
            df = p.sql("SELECT lsn::text, xid::text::bigint AS xid, data FROM pg_logical_slot_get_changes("
                       "%s, NULL, NULL, 'include-xids', '1', 'skip-empty-xacts', '1')", (CDC_SLOT,))
            df["xid"] = df["xid"].astype("int64")
        else:
            df = _pgoutput_changes(p, CDC_SLOT, PUBLICATION)
            df = df[df["message"] != "RELATION"].reset_index(drop=True)
    finally:
        _drop_slot_quietly(p, CDC_SLOT)
    return df


def recvlogical(cluster, seconds: float = 2.0) -> Text:
    """``pg_recvlogical``, the command-line consumer: a slot (``cdc_demo``, test_decoding), the CDC
    demo's changes, then ``pg_recvlogical --start --endpos=<the primary's LSN> -f -`` prints them as it
    receives them over the replication protocol and stops there.  The slot is dropped afterwards."""
    need_number(seconds, "seconds", lo=0.1, hi=60)
    p = _primary(cluster)
    host, port = cluster.backend.primary_address()  # as a program beside the primary's data reaches it
    cred = cluster.credentials
    dsn = conninfo.make(host=host, port=port, user=cred["user"], dbname=DB)
    env = {"PGPASSWORD": cred["password"]}
    _drop_slot_quietly(p, CDC_SLOT)
    p.tool("pg_recvlogical", "-d", dsn, "--slot", CDC_SLOT, "--create-slot", "-P", "test_decoding", env=env)
    try:
        _changes(p)
        end = p.scalar("SELECT pg_current_wal_lsn()::text")
        r = p.tool("pg_recvlogical", "-d", dsn, "--slot", CDC_SLOT, "--start", "--endpos", end, "-f", "-",
                   "--no-loop", env=env, timeout=30 + seconds, check=False)
        if r.returncode != 0:
            raise LabError(_("pg_recvlogical failed: {error}").format(error=(r.stderr or '').strip().splitlines()[-1:]))
    finally:
        _drop_slot_quietly(p, CDC_SLOT)
    return Text(r.stdout.rstrip())


@changes_cluster()
def forgotten_slot(cluster, segments: int = 4, quiet: bool = False) -> pd.DataFrame:
    """A logical slot nobody reads (``cdc_forgotten``): made, then ``segments`` WAL segments written
    with a CHECKPOINT after each (``lab.slots.watch_slot``); the WAL it retains grows with every one,
    as a physical slot's does for a stopped replica.  ``drop_forgotten`` drops it."""
    need_int(segments, "segments", lo=1, hi=32)
    p = _primary(cluster)
    if not p.scalar("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (FORGOTTEN,)):
        p.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (FORGOTTEN,))
    return slots.watch_slot(cluster, FORGOTTEN, segments, phase=_("nobody reads the slot"), quiet=quiet)


@changes_cluster()
def drop_forgotten(cluster) -> str:
    """Drop the forgotten logical slot (``lab.slots.drop_slot``); a one-line message."""
    return slots.drop_slot(cluster, FORGOTTEN)


# --- measured: apply lag, physical vs logical ----------------------------------------------------
_LAGS = """
SELECT application_name, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS lag_bytes
  FROM pg_stat_replication
"""


@changes_cluster()
def apply_lag(cluster, rate: float = 300, seconds: float = 5, replica: str = "replica1",
              sample_every: float = 0.1) -> pd.DataFrame:
    """Chapter 05's writer on the primary (``lab_writes`` is in the publication) at ``rate`` rows per
    second; every ``sample_every`` s the lag in bytes of the physical replica and of the subscription
    (``pg_stat_replication``: the primary's LSN minus what each has replayed / applied), and the newest
    row each shows.  ``visibility`` then gives each write's time to visibility on both."""
    need_number(rate, _("rate (rows per second)"), lo=1, hi=5000)
    need_number(seconds, "seconds", lo=0.5, hi=120)
    need_number(sample_every, _("sample_every (seconds)"), lo=0.01, hi=5)
    p, node = _primary(cluster), _subscriber(cluster)
    rep = cluster.node(replica)
    if rep.role != Role.REPLICA or not rep.is_running:
        raise LabError(_("{replica} is not a running replica: pick one of {replicas}").format(
            replica=replica, replicas=", ".join(r.name for r in cluster.replicas if r.is_running) or _("(none)")))
    _caught_up(cluster, node, 30)
    w = workload.Writer(p, rate=rate, duration=seconds)
    q = f"SELECT coalesce(max(seq), 0) FROM {workload.TABLE} WHERE run = %s"
    rows = []
    with w:
        t0 = time.time()
        while w.running or time.time() - t0 < seconds + 0.5:
            lags = dict(p.sql(_LAGS, dbname="postgres").itertuples(index=False))
            now = time.time()
            rows.append(dict(t=now, physical_lag_bytes=lags.get(rep.name), logical_lag_bytes=lags.get(SUBSCRIPTION),
                             seq_on_replica=int(rep.scalar(q, (w.run_id,))),
                             seq_on_subscriber=int(node.scalar(q, (w.run_id,)))))
            time.sleep(sample_every)
    last = int(w.acknowledged()["seq"].max()) if len(w.acknowledged()) else 0
    deadline = time.time() + 30
    while time.time() < deadline:
        now = time.time()
        a, b = int(rep.scalar(q, (w.run_id,))), int(node.scalar(q, (w.run_id,)))
        lags = dict(p.sql(_LAGS, dbname="postgres").itertuples(index=False))
        rows.append(dict(t=now, physical_lag_bytes=lags.get(rep.name), logical_lag_bytes=lags.get(SUBSCRIPTION),
                         seq_on_replica=a, seq_on_subscriber=b))
        if a >= last and b >= last:
            break
        time.sleep(sample_every)
    df = pd.DataFrame(rows)
    df.insert(0, "t_s", (df.pop("t") - t0).round(3))
    for c in ("physical_lag_bytes", "logical_lag_bytes"):
        df[c] = df[c].astype("Int64")
    df.attrs.update(writes=w.acknowledged()[["seq", "done_at"]].assign(done_s=lambda d: d["done_at"] - t0),
                    replica=rep.name, subscriber=node.name, rate=rate)
    return df


def visibility(samples: pd.DataFrame) -> pd.DataFrame:
    """From ``apply_lag``'s samples: for every acknowledged write, when it was first seen on the replica
    and on the subscriber minus when its COMMIT returned; the median, 95th percentile and maximum in ms
    (bounded below by the sampling interval)."""
    if not isinstance(samples, pd.DataFrame) or "writes" not in samples.attrs:
        raise BadArgument(_("visibility() reads what lab.logical.apply_lag(cluster) returns"))
    writes = samples.attrs["writes"]
    out = []
    for col, who in (("seq_on_replica", _(REPLICA_KIND)), ("seq_on_subscriber", _(SUBSCRIBER_KIND))):
        seen = samples[["t_s", col]].sort_values("t_s")
        delays = []
        for seq, done in zip(writes["seq"], writes["done_s"]):
            hit = seen[seen[col] >= seq]
            if len(hit):
                delays.append(max(0.0, float(hit["t_s"].iloc[0]) - done) * 1000)
        s = pd.Series(delays, dtype=float)
        lag = samples["physical_lag_bytes" if col == "seq_on_replica" else "logical_lag_bytes"].dropna()
        out.append(dict(kind=who, writes=len(writes), seen=len(s), visible_ms_median=round(s.median(), 1),
                        visible_ms_p95=round(s.quantile(0.95), 1), visible_ms_max=round(s.max(), 1),
                        lag_bytes_median=int(lag.median()) if len(lag) else None,
                        lag_bytes_max=int(lag.max()) if len(lag) else None))
    return pd.DataFrame(out)


def plot_lag(samples: pd.DataFrame):
    """``apply_lag``'s samples as a picture: the lag in bytes of the physical replica and of the
    subscription over the writer's seconds."""
    if not isinstance(samples, pd.DataFrame) or not {"t_s", "physical_lag_bytes", "logical_lag_bytes"} <= set(samples):
        raise BadArgument(_("plot_lag() plots what lab.logical.apply_lag(cluster) returns"))
    fig = Figure(figsize=(8.5, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    for col, label, style in (("physical_lag_bytes", _("physical replica ({name})").format(
                                  name=samples.attrs.get('replica', '?')), "o-"),
                              ("logical_lag_bytes", _("subscription ({name})").format(name=SUBSCRIPTION), "s--")):
        y = samples[col].astype("Float64").to_numpy(dtype=float, na_value=float("nan")) / 1024
        ax.plot(samples["t_s"], y, style, ms=3, label=label)
    ax.set_xlabel(_("seconds since the writer started"))
    ax.set_ylabel(_("lag (kB of WAL)"))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(_("Lag under the writer ({rate} rows/s)").format(rate=samples.attrs.get('rate', '?')), fontsize=10)
    fig.tight_layout()
    return fig


@changes_cluster()
def bytes_compared(cluster, rows: int = 2000) -> pd.DataFrame:
    """What each kind ships for ``rows`` price ticks in ``precios`` (published) and ``rows`` notes in
    ``notas_locales`` (in no publication), one transaction each: physical replication ships the WAL
    (``pg_wal_lsn_diff`` across the writes); logical replication ships pgoutput's messages for the
    publication, measured as the bytes ``pg_logical_slot_peek_binary_changes`` returns on a slot made
    just before (the protocol's framing aside)."""
    need_int(rows, "rows", lo=1, hi=100_000)
    p = _primary(cluster)
    p.execute(f"CREATE TABLE IF NOT EXISTS {LOCAL_TABLE} (id bigserial PRIMARY KEY, nota text NOT NULL)")
    slot = "bytes_demo"
    out = []
    for table, sql in ((TABLE, f"INSERT INTO {TABLE} (moneda, registrado_en, precio, volumen) "
                               "SELECT 'BYTES', timestamptz '2032-01-01' + g * interval '1 ms', 1000 + g, g "
                               "FROM generate_series(1, %s) AS g"),
                       (LOCAL_TABLE, f"INSERT INTO {LOCAL_TABLE} (nota) SELECT 'nota ' || g FROM generate_series(1, %s) AS g")):
        _drop_slot_quietly(p, slot)
        p.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        try:
            before = p.scalar("SELECT pg_current_wal_insert_lsn()::text")
            p.execute(sql, (rows,))
            after = p.scalar("SELECT pg_current_wal_insert_lsn()::text")
            logical = p.scalar("SELECT coalesce(sum(octet_length(data)), 0) FROM pg_logical_slot_peek_binary_changes("
                               "%s, NULL, NULL, 'proto_version', '1', 'publication_names', %s)", (slot, PUBLICATION))
        finally:
            _drop_slot_quietly(p, slot)
        wal = parse_lsn(after) - parse_lsn(before)
        out.append(dict(table=table, published=table == TABLE, rows=rows, physical_bytes=wal,
                        logical_bytes=int(logical), physical_per_row=round(wal / rows, 1),
                        logical_per_row=round(int(logical) / rows, 1)))
    p.execute(f"DELETE FROM {TABLE} WHERE moneda = 'BYTES'")
    p.execute(f"TRUNCATE {LOCAL_TABLE}")
    return pd.DataFrame(out)


@changes_cluster()
def capabilities(cluster, replica: str = "replica1", timeout: float = 30) -> pd.DataFrame:
    """What each kind can and cannot do, each line tried on this cluster: a write on the copy, a new
    table (DDL) on the primary, a row in a table no publication names, a sequence's value."""
    timeout = _timeout(timeout)
    p, node = _primary(cluster), _subscriber(cluster)
    rep = cluster.node(replica)
    side = writable_side_by_side(cluster, replica).set_index("node")["insert"]
    p.execute("DROP TABLE IF EXISTS ddl_demo")
    p.execute("CREATE TABLE ddl_demo (id int)")
    p.execute(f"CREATE TABLE IF NOT EXISTS {LOCAL_TABLE} (id bigserial PRIMARY KEY, nota text NOT NULL)")
    p.execute(f"INSERT INTO {LOCAL_TABLE} (nota) VALUES ('solo en el primario')")
    p.execute("CREATE SEQUENCE IF NOT EXISTS ticket_seq")
    value = int(p.scalar("SELECT nextval('ticket_seq')"))
    cluster.wait_replayed(timeout=timeout)
    _caught_up(cluster, node, timeout)

    def has(n: Node, q: str):
        try:
            return n.scalar(q)
        except SQLError:
            return None
    rows = []
    for n, kind in ((rep, REPLICA_KIND), (node, SUBSCRIBER_KIND)):
        local = has(n, f"SELECT count(*) FROM {LOCAL_TABLE}")
        seq = has(n, "SELECT last_value FROM ticket_seq")
        # the capabilities are the columns' names: labels to read, in the language the lab speaks
        rows.append({"kind": _(kind), "node": n.name,
                     _("accepts writes"): side[n.name] == _(ACCEPTED),
                     _("new table (DDL) arrives"): bool(has(n, "SELECT to_regclass('ddl_demo') IS NOT NULL")),
                     _("unpublished table's rows arrive"): bool(local),
                     _("sequence value arrives"): seq is not None and int(seq) >= value,
                     _("chooses tables and rows"): kind == SUBSCRIBER_KIND})
    p.execute("DROP TABLE IF EXISTS ddl_demo")
    p.execute(f"TRUNCATE {LOCAL_TABLE}")
    return pd.DataFrame(rows)


# --- across a failover ------------------------------------------------------------------------------
def _keys(node: Node) -> set:
    df = node.sql(f"SELECT moneda, registrado_en FROM {TABLE}")
    return set(zip(df["moneda"], df["registrado_en"]))


def _write_ticks(node: Node, coin: str, rows: int) -> None:
    node.execute(f"INSERT INTO {TABLE} (moneda, registrado_en, precio) "
                 "SELECT %s, clock_timestamp() + g * interval '1 us', 100 FROM generate_series(1, %s) AS g",
                 (coin, rows))


def missed(cluster, subscriber: str = ANALYTICS) -> pd.Series:
    """Rows of ``precios`` on the primary that the subscriber lacks (and the other way round)."""
    p, node = _primary(cluster), _subscriber(cluster, subscriber)
    a, b = _keys(p), _keys(node)
    return pd.Series(dict(primary=p.name, rows_on_primary=len(a), rows_on_subscriber=len(b),
                          missing_on_subscriber=len(a - b), only_on_subscriber=len(b - a)),
                     name=_("missed"), dtype="object")


@changes_cluster()
def break_by_failover(cluster, rows: int = 500, timeout: float = 30, quiet: bool = False) -> pd.Series:
    """Chapter 06's crash under a subscription: ``rows`` ticks written and streamed, the primary killed
    (SIGKILL), the replica with the most WAL promoted (``lab.failover.best_candidate``), ``rows`` more
    ticks on the new primary.  In PostgreSQL 15 the logical slot lived only on the old primary: the new
    one has the publication (a catalog row, copied by physical replication) but no slot, and the
    subscription still points at the dead server.  What it found."""
    need_int(rows, "rows", lo=1, hi=100_000)
    timeout = _timeout(timeout)
    need_bool(quiet, "quiet")
    p, node = _primary(cluster), _subscriber(cluster)
    if not _has_subscription(node):
        raise LabError(_("{node} has no subscription: lab.logical.subscribe(cluster) first").format(node=node.name))
    if not any(r.is_running for r in cluster.replicas):
        raise LabError(_("no running replica to promote: lab.up(replicas=1)"))
    _write_ticks(p, "PRE", rows)
    cluster.wait_replayed(timeout=timeout)
    _caught_up(cluster, node, timeout)
    before = missed(cluster)["missing_on_subscriber"]  # e.g. the rows a skipped transaction held
    old = p.name
    p.kill()
    new = failover.best_candidate(cluster)
    new.promote()
    _say(quiet, _("{old} killed; {new} promoted").format(old=old, new=new.name))
    _write_ticks(new, "POST", rows)
    time.sleep(2)  # the apply worker's tries to reach the dead primary, for its log
    slot = new.scalar("SELECT slot_name FROM pg_replication_slots WHERE slot_type = 'logical' AND slot_name = %s",
                      (SUBSCRIPTION,))
    pub = new.scalar("SELECT count(*) FROM pg_publication WHERE pubname = %s", (PUBLICATION,))
    # a worker that is only trying to connect has a pid too: streaming means it has received WAL
    worker = node.scalar("SELECT pid FROM pg_stat_subscription WHERE subname = %s AND relid IS NULL "
                         "AND received_lsn IS NOT NULL", (SUBSCRIPTION,))
    errors = [ln for ln in node.logs(300).splitlines() if "could not connect to the publisher" in ln]
    m = missed(cluster)
    return pd.Series(dict(old_primary=old, new_primary=new.name, publication_on_new_primary=bool(pub),
                          slot_on_new_primary=slot, apply_worker_streaming=worker is not None,
                          subscriber_log=_message_of(errors[-1]) if errors else None,
                          rows_on_new_primary=m["rows_on_primary"], rows_on_subscriber=m["rows_on_subscriber"],
                          missing_before_failover=before, missing_on_subscriber=m["missing_on_subscriber"],
                          missed_by_failover=m["missing_on_subscriber"] - before),
                     name=_("after the failover"), dtype="object")


@changes_cluster()
def rejoin_old_primary(cluster, quiet: bool = False) -> "list[str]":
    """Chapter 06's repair of the physical cluster after ``break_by_failover``: every node of it that is
    not a streaming replica of the new primary (the old primary) rewound into one with ``pg_rewind``
    (``cluster.rejoin``).  The analytics server is outside the physical cluster: left alone."""
    need_cluster(cluster)
    need_bool(quiet, "quiet")
    _primary(cluster)
    done = []
    for n in cluster.nodes:
        if n.name == cluster.primary.name or n.role == Role.STANDALONE:
            continue
        if n.role == Role.REPLICA and not n.is_running:
            n.start()
            done.append(_("started {node}").format(node=n.name))
        if n.role == Role.REPLICA and failover.follows(cluster, n):
            continue
        t0 = time.monotonic()
        cluster.rejoin(n.name)
        done.append(_("rewound {node} into a replica of {primary} ({seconds:.1f} s)").format(
            node=n.name, primary=cluster.primary.name, seconds=time.monotonic() - t0))
    _say(quiet, "\n".join(done) or _("every node of the physical cluster streams from {primary}").format(
        primary=cluster.primary.name))
    return done


@changes_cluster()
def drop_subscription(cluster, subscriber: str = ANALYTICS) -> "list[str]":
    """Drop the subscription so that it never waits on a publisher: ``DISABLE``, ``SET (slot_name =
    NONE)`` (DROP then leaves the slot alone), ``DROP SUBSCRIPTION``; then its slot on the primary,
    if the primary has one.  What it did."""
    need_cluster(cluster)
    done = []
    if subscriber in {n.name for n in cluster.standalones}:
        node = cluster.node(subscriber)
        if node.is_running and _has_subscription(node):
            node.execute(f"ALTER SUBSCRIPTION {SUBSCRIPTION} DISABLE")
            node.execute(f"ALTER SUBSCRIPTION {SUBSCRIPTION} SET (slot_name = NONE)")
            node.execute(f"DROP SUBSCRIPTION {SUBSCRIPTION}")
            done.append(_("{node}: dropped subscription {subscription}").format(node=subscriber,
                                                                                 subscription=SUBSCRIPTION))
    p = cluster.primary
    if p.is_running:
        # a walsender still attached to the slot lets go a moment after the subscription is gone
        for _i in range(100):
            if not p.scalar("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s AND active",
                            (SUBSCRIPTION,)):
                break
            time.sleep(0.05)
        if _drop_slot_quietly(p, SUBSCRIPTION):
            done.append(_("{node}: dropped slot {slot}").format(node=p.name, slot=SUBSCRIPTION))
    return done


@changes_cluster()
def repair_after_failover(cluster, timeout: float = 120, quiet: bool = False) -> pd.Series:
    """The subscription made again against the new primary, from a consistent copy: drop it
    (``drop_subscription``), ``TRUNCATE`` the subscriber's copies of the published tables, and
    ``CREATE SUBSCRIPTION`` (a new slot on the new primary, then a fresh initial copy).  Rows the
    subscriber wrote itself are gone with the TRUNCATE: the price of a consistent copy."""
    timeout = _timeout(timeout)
    need_bool(quiet, "quiet")
    _primary(cluster)
    node = _subscriber(cluster)
    t0 = time.monotonic()
    drop_subscription(cluster)
    copy = subscribe(cluster, timeout=timeout, quiet=True)
    m = missed(cluster)
    out = pd.Series(dict(publisher=cluster.primary.name, rows_copied=copy["rows_copied"],
                         repair_s=round(time.monotonic() - t0, 2), missing_on_subscriber=m["missing_on_subscriber"],
                         slot_on_primary=cluster.primary.scalar(
                             "SELECT slot_name FROM pg_replication_slots WHERE slot_name = %s", (SUBSCRIPTION,))),
                    name=_("repaired"), dtype="object")
    _say(quiet, ngettext("{node} subscribes to {primary} again: {n} row copied",
                         "{node} subscribes to {primary} again: {n} rows copied", copy["rows_copied"]).format(
        node=node.name, primary=cluster.primary.name, n=copy["rows_copied"]))
    return out


# --- tidy -------------------------------------------------------------------------------------
@changes_cluster()
def tidy(cluster, remove: bool = True) -> "list[str]":
    """Put back what this chapter changes, in the order that leaves nothing waiting: the subscription
    first (it holds a slot on the primary), then the primary's logical slots of this chapter, then its
    publications; with ``remove=True`` the analytics server is removed (``cluster.remove_node``): it
    holds only copies that ``setup``/``subscribe`` make again in seconds, and a stopped one would
    still take disk and a port claim.  Safe to run again; what it did, one line each."""
    need_cluster(cluster)
    need_bool(remove, "remove")
    done = drop_subscription(cluster)
    p = cluster.primary
    # a logical slot stays behind in the data of a primary that became a replica (a switchover back,
    # or a rewind), where it would keep WAL forever: look on every running node of the physical cluster
    for n in cluster.nodes:
        if n.role == Role.STANDALONE or not n.is_running:
            continue
        for slot in (SUBSCRIPTION, *CHAPTER_SLOTS):
            if _drop_slot_quietly(n, slot):
                done.append(_("{node}: dropped slot {slot}").format(node=n.name, slot=slot))
    if p.is_running:
        have = set(p.sql("SELECT pubname FROM pg_publication")["pubname"])
        for pub in CHAPTER_PUBLICATIONS:
            if pub in have:
                p.execute(f"DROP PUBLICATION {pub}")
                done.append(_("{node}: dropped publication {publication}").format(node=p.name, publication=pub))
    if remove and ANALYTICS in {n.name for n in cluster.standalones}:
        cluster.remove_node(ANALYTICS)
        done.append(_("removed the {node} server (its data was a copy)").format(node=ANALYTICS))
    return done or [_("nothing to tidy")]
