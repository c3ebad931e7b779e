"""Chapter 09's self-checks (logical replication and change data capture);
``lab.checks.check("09.1", cluster)``."""
from __future__ import annotations

import time

import pandas as pd

from .. import logical
from ..errors import LabError, SQLError
from ..i18n import N_, _
from .registry import Precondition, Unmet, exercise, stopped


def _analytics(cluster):
    if logical.ANALYTICS not in {n.name for n in cluster.standalones}:
        raise Unmet(_("there is no analytics server: lab.logical.setup(cluster) makes it"))
    node = cluster.node(logical.ANALYTICS)
    if not node.is_running:
        raise Unmet(stopped(node))
    if not cluster.primary.is_running:
        raise Unmet(_("the primary ({name}) is stopped: lab.up() starts it").format(name=cluster.primary.name))
    return node


ANALYTICS = Precondition("the analytics server and the primary, running", _analytics)


def _streaming(cluster, node) -> "str | None":
    """Why the subscription does not stream (None when it does)."""
    st = logical.subscription_status(cluster)
    row = st[st["subname"] == logical.SUBSCRIPTION]
    if row.empty:
        return _("{node} has no subscription {subscription}: lab.logical.subscribe(cluster)").format(
            node=node.name, subscription=logical.SUBSCRIPTION)
    r = row.iloc[0]
    if not r["enabled"]:
        return _("the subscription is disabled: ALTER SUBSCRIPTION {subscription} ENABLE on {node}").format(
            subscription=logical.SUBSCRIPTION, node=node.name)
    active = r.get("slot_active")
    if active is None or pd.isna(active) or not bool(active):
        return _("{primary} has no active slot {subscription}: the apply worker does not "
                 "stream (its error is in cluster.node({node!r}).logs())").format(
            primary=cluster.primary.name, subscription=logical.SUBSCRIPTION, node=node.name)
    return None


@exercise("09.1", N_("the analytics server's subscription streams from the primary"), needs=ANALYTICS,
          hint=N_("The analytics server subscribes to the primary's publication and its apply worker streams: a slot "
                  "named after the subscription is active on the current primary (lab.logical.subscription_status). "
                  "After a failover, lab.logical.repair_after_failover(cluster) subscribes to the new primary."))
def _subscription_streams(cluster, node):
    why = _streaming(cluster, node)
    if why:
        return False, why
    t = logical.stream_one(cluster, rows=1)["visible_after_ms"].iloc[0]
    return True, _("{node} streams from {primary} through slot {subscription}: "
                   "a new row was visible there after {ms:.0f} ms").format(
        node=node.name, primary=cluster.primary.name, subscription=logical.SUBSCRIPTION, ms=t)


@exercise("09.2", N_("your own publication with a row filter that keeps UPDATEs working"),
          hint=N_("On the primary, create a publication of your own (not one of the chapter's) for precios with a "
                  "row filter, e.g. CREATE PUBLICATION solo_btc FOR TABLE precios WHERE (moneda = 'BTC'). A "
                  "publication that carries UPDATE/DELETE may filter only on replica-identity columns (the key: "
                  "moneda, registrado_en), or UPDATEs of the table fail on the primary."))
def _own_filtered_publication(cluster):
    p = cluster.primary
    if not p.is_running:
        return False, _("the primary ({name}) is stopped: lab.up() starts it").format(name=p.name)
    df = logical.publication_tables(cluster)
    mine = df[~df["pubname"].isin(logical.CHAPTER_PUBLICATIONS) & df["rowfilter"].notna()]
    if mine.empty:
        return False, _("no publication of yours with a row filter on the primary: CREATE PUBLICATION <name> FOR "
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
        return False, _("{publications}: UPDATEs of the table now fail on the primary, as the filter uses a "
                        "column outside the replica identity; filter on the key, or WITH (publish = 'insert')").format(
            publications=", ".join(broken))
    r = mine.iloc[0]
    return True, _("{publication} carries only the rows of {table} where {rowfilter}: "
                   "compare with lab.logical.carried(cluster, {publication!r})").format(
        publication=r["pubname"], table=r["tablename"], rowfilter=r["rowfilter"])


def _first_column(cluster, table: str) -> str:
    return cluster.primary.scalar("SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = %s::regclass "
                                  "AND attnum > 0 AND NOT attisdropped ORDER BY attnum LIMIT 1", (table,))


@exercise("09.3", N_("the subscriber's copy of precios is complete: nothing skipped, nothing missed"),
          needs=ANALYTICS,
          hint=N_("Every row of precios on the primary is on the analytics server and no other. A skipped transaction "
                  "(ALTER SUBSCRIPTION ... SKIP) or a failover leaves rows out: the subscription made again from a "
                  "consistent copy (lab.logical.repair_after_failover(cluster)) puts them back."))
def _copy_complete(cluster, node):
    why = _streaming(cluster, node)
    if why:
        return False, why
    try:
        logical.stream_one(cluster, rows=1, timeout=15)  # everything before this row has been applied
    except LabError as e:
        return False, _("the subscriber does not apply new rows: {error}").format(error=e)
    time.sleep(0.2)
    m = logical.missed(cluster)
    if m["missing_on_subscriber"] or m["only_on_subscriber"]:
        return False, _("{missing} row(s) of the primary are missing on {node}, "
                        "{extra} are there only: lab.logical.missed(cluster)").format(
            missing=m["missing_on_subscriber"], node=node.name, extra=m["only_on_subscriber"])
    return True, _("{rows} rows on both sides, the same keys").format(rows=m["rows_on_subscriber"])


@exercise("09.4", N_("no forgotten logical slot on the primary"),
          hint=N_("Every logical slot on the primary has a consumer reading it (active). A slot nobody reads keeps WAL "
                  "(and old row versions of the catalog) forever: drop it with lab.slots.drop_slot(cluster, name) or "
                  "lab.logical.drop_forgotten(cluster)."))
def _no_forgotten_slot(cluster):
    p = cluster.primary
    if not p.is_running:
        return False, _("the primary ({name}) is stopped: lab.up() starts it").format(name=p.name)
    df = p.sql("SELECT slot_name, active, pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)) AS held "
               "FROM pg_replication_slots WHERE slot_type = 'logical'", dbname="postgres")
    idle = df[~df["active"].astype(bool)]
    if len(idle):
        slots = ", ".join(_("{slot} (it keeps {size} of WAL)").format(slot=r.slot_name, size=r.held)
                          for r in idle.itertuples())
        return False, _("nobody reads {slots}: drop it, e.g. lab.slots.drop_slot(cluster, {slot!r})").format(
            slots=slots, slot=idle["slot_name"].iloc[0])
    if len(df):
        return True, _("{count} logical slot(s) on {node}, each read by a consumer").format(count=len(df), node=p.name)
    return True, _("no logical slot on {node}").format(node=p.name)
