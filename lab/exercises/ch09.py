"""Chapter 09's self-checks (logical replication and change data capture);
``lab.checks.check("09.1", cluster)``."""
from __future__ import annotations

import time

import pandas as pd

from .. import logical
from ..errors import LabError, SQLError
from .registry import Precondition, Unmet, exercise


def _analytics(cluster):
    if logical.ANALYTICS not in {n.name for n in cluster.standalones}:
        raise Unmet("there is no analytics server: lab.logical.setup(cluster) makes it")
    node = cluster.node(logical.ANALYTICS)
    if not node.is_running:
        raise Unmet(f"{node.name} is stopped: start it with cluster.node({node.name!r}).start(), then check again")
    if not cluster.primary.is_running:
        raise Unmet(f"the primary ({cluster.primary.name}) is stopped: lab.up() starts it")
    return node


ANALYTICS = Precondition("the analytics server and the primary, running", _analytics)


def _streaming(cluster, node) -> "str | None":
    """Why the subscription does not stream (None when it does)."""
    st = logical.subscription_status(cluster)
    row = st[st["subname"] == logical.SUBSCRIPTION]
    if row.empty:
        return f"{node.name} has no subscription {logical.SUBSCRIPTION}: lab.logical.subscribe(cluster)"
    r = row.iloc[0]
    if not r["enabled"]:
        return f"the subscription is disabled: ALTER SUBSCRIPTION {logical.SUBSCRIPTION} ENABLE on {node.name}"
    active = r.get("slot_active")
    if active is None or pd.isna(active) or not bool(active):
        return (f"{cluster.primary.name} has no active slot {logical.SUBSCRIPTION}: the apply worker does not "
                f"stream (its error is in cluster.node({node.name!r}).logs())")
    return None


@exercise("09.1", "the analytics server's subscription streams from the primary", needs=ANALYTICS)
def _subscription_streams(cluster, node):
    """The analytics server subscribes to the primary's publication and its apply worker streams: a slot
    named after the subscription is active on the current primary (lab.logical.subscription_status).
    After a failover, lab.logical.repair_after_failover(cluster) subscribes to the new primary."""
    why = _streaming(cluster, node)
    if why:
        return False, why
    t = logical.stream_one(cluster, rows=1)["visible_after_ms"].iloc[0]
    return True, (f"{node.name} streams from {cluster.primary.name} through slot {logical.SUBSCRIPTION}: "
                  f"a new row was visible there after {t:.0f} ms")


@exercise("09.2", "your own publication with a row filter that keeps UPDATEs working")
def _own_filtered_publication(cluster):
    """On the primary, create a publication of your own (not one of the chapter's) for precios with a row
    filter, e.g. CREATE PUBLICATION solo_btc FOR TABLE precios WHERE (moneda = 'BTC'). A publication that
    carries UPDATE/DELETE may filter only on replica-identity columns (the key: moneda, registrado_en),
    or UPDATEs of the table fail on the primary."""
    p = cluster.primary
    if not p.is_running:
        return False, f"the primary ({p.name}) is stopped: lab.up() starts it"
    df = logical.publication_tables(cluster)
    mine = df[~df["pubname"].isin(logical.CHAPTER_PUBLICATIONS) & df["rowfilter"].notna()]
    if mine.empty:
        return False, ("no publication of yours with a row filter on the primary: CREATE PUBLICATION <name> FOR "
                       "TABLE precios WHERE (...) (lab.logical.publication_tables(cluster) lists them)")
    broken = []
    for r in mine.itertuples():
        try:
            # a modification of no row: PostgreSQL checks the replica identity when the UPDATE starts
            p.execute(f'UPDATE "{r.tablename}" SET {_first_column(cluster, r.tablename)} = '
                      f'{_first_column(cluster, r.tablename)} WHERE false')
        except SQLError:
            broken.append(f"{r.pubname} ({r.tablename} WHERE {r.rowfilter})")
    if broken:
        return False, (f"{', '.join(broken)}: UPDATEs of the table now fail on the primary, as the filter uses a "
                       "column outside the replica identity; filter on the key, or WITH (publish = 'insert')")
    r = mine.iloc[0]
    return True, (f"{r['pubname']} carries only the rows of {r['tablename']} where {r['rowfilter']}: "
                  "compare with lab.logical.carried(cluster, " + repr(r["pubname"]) + ")")


def _first_column(cluster, table: str) -> str:
    return cluster.primary.scalar("SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = %s::regclass "
                                  "AND attnum > 0 AND NOT attisdropped ORDER BY attnum LIMIT 1", (table,))


@exercise("09.3", "the subscriber's copy of precios is complete: nothing skipped, nothing missed",
          needs=ANALYTICS)
def _copy_complete(cluster, node):
    """Every row of precios on the primary is on the analytics server and no other. A skipped transaction
    (ALTER SUBSCRIPTION ... SKIP) or a failover leaves rows out: the subscription made again from a
    consistent copy (lab.logical.repair_after_failover(cluster)) puts them back."""
    why = _streaming(cluster, node)
    if why:
        return False, why
    try:
        logical.stream_one(cluster, rows=1, timeout=15)  # everything before this row has been applied
    except LabError as e:
        return False, f"the subscriber does not apply new rows: {e}"
    time.sleep(0.2)
    m = logical.missed(cluster)
    if m["missing_on_subscriber"] or m["only_on_subscriber"]:
        return False, (f"{m['missing_on_subscriber']} row(s) of the primary are missing on {node.name}, "
                       f"{m['only_on_subscriber']} are there only: lab.logical.missed(cluster)")
    return True, f"{m['rows_on_subscriber']} rows on both sides, the same keys"


@exercise("09.4", "no forgotten logical slot on the primary")
def _no_forgotten_slot(cluster):
    """Every logical slot on the primary has a consumer reading it (active). A slot nobody reads keeps WAL
    (and old row versions of the catalog) forever: drop it with lab.slots.drop_slot(cluster, name) or
    lab.logical.drop_forgotten(cluster)."""
    p = cluster.primary
    if not p.is_running:
        return False, f"the primary ({p.name}) is stopped: lab.up() starts it"
    df = p.sql("SELECT slot_name, active, pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)) AS held "
               "FROM pg_replication_slots WHERE slot_type = 'logical'", dbname="postgres")
    idle = df[~df["active"].astype(bool)]
    if len(idle):
        return False, ("nobody reads " + ", ".join(f"{r.slot_name} (it keeps {r.held} of WAL)" for r in idle.itertuples())
                       + ": drop it, e.g. lab.slots.drop_slot(cluster, " + repr(idle['slot_name'].iloc[0]) + ")")
    return True, (f"{len(df)} logical slot(s) on {p.name}, each read by a consumer" if len(df)
                  else f"no logical slot on {p.name}")
