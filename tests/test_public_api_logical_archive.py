"""Chapters 09 and 10's public API (lab.logical; lab.archive: the archive, PITR, cascading) against
wrong arguments, property-based (hypothesis), on one real cluster of its own: a primary and
``replica1``, archiving into ``cluster.archive_dir()`` (turned on once, with a restart), ``wal_level
= logical``, chapter 09's publications and the ``analytics`` subscriber streaming from them, and
chapter 10's ``wallets`` table, a base backup and a recorded mistake.  It lives in a temp lab home,
wiped at the end.

The same property as test_public_api.py (its machinery: labtest/fuzz.py): for every function a
notebook of chapters 09 and 10 calls, one argument at a time gets a wrong value, the others keep a
valid one; the call succeeds or raises a ``LabError`` of one line, never another exception, and
returns within ``fuzz.BOUND`` seconds.

The valid values are chosen so that a call that gets past its checks is cheap, or changes nothing
(``add_cascade`` asks for ``replica1`` again, ``outrun`` names a replica with a slot, which it
refuses, ``tidy`` keeps the archive and the subscriber).  Between examples ``_heal`` puts the cluster
back the way the fixture left it, if a look (one query per node) finds it changed: the nodes, the
primary, archiving, ``wallets``, the subscription and the publications, the chapters' slots.

PGLAB_FUZZ_EXAMPLES sets the examples per target (default 5).
"""
from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

import lab
from lab import archive, failover, logical, standby
from lab.errors import LabError
from labtest import fuzz
from labtest.fuzz import (NOT_CLUSTER, NOT_FRAME, NOT_PATH, T, Target, cluster_only, k_bad_name,
                          k_bool, k_choice, k_int, k_name, k_num, k_of, k_text, node_only)

pytestmark = pytest.mark.integration

NODES = ("primary", "replica1")
ANALYTICS = logical.ANALYTICS
ROWS = 300                                  # precios on the primary: the subscription's copy is quick
PUBLICATIONS = (logical.PUBLICATION, logical.FILTERED, logical.INSERTS_ONLY)
BACKUP = "fuzz_base"                        # not "pitr": archive.tidy() removes that one
NOT_NAMES = k_of(None, 42, "replica1", [], ["replica9"], [None], [42], [[]], {}, b"x", ("primary",), ["analytics"])
NOT_PUBLICATIONS = k_of(None, 42, "analytics_pub", [], [None], [42], ["nope"], ["Bad-Name!"], {}, b"x", [[]])
NOT_SERIES = [None, 42, "x", [], {}, b"x", pd.Series(dtype=object), pd.DataFrame({"a": [1, 2]}),
              pd.Series({"table": "wallets"})]

TARGETS = [
    # --- lab.logical (chapter 09) -----------------------------------------------------------------------------
    T("logical.tidy", "logical", lambda c, s, cluster, remove: logical.tidy(cluster, remove),
      dict(cluster="C", remove=False), cluster=k_of(*NOT_CLUSTER), remove=k_bool()),
    T("logical.ensure_logical", "logical", lambda c, s, cluster, quiet: logical.ensure_logical(cluster, quiet),
      dict(cluster="C", quiet=True), cluster=k_of(*NOT_CLUSTER), quiet=k_bool()),
    T("logical.setup", "logical", lambda c, s, cluster, rows, quiet: logical.setup(cluster, rows, quiet),
      dict(cluster="C", rows=ROWS, quiet=True), cluster=k_of(*NOT_CLUSTER), rows=k_int(lo=1, hi=1_000_000),
      quiet=k_bool()),
    T("logical.publication_tables", "logical", lambda c, s, cluster, publication:
      logical.publication_tables(cluster, publication), dict(cluster="C", publication=None),
      cluster=k_of(*NOT_CLUSTER), publication=k_text(ok=[None]) | k_of("", "Bad-Name!", "x" * 100, "nope")),
    T("logical.subscribe", "logical", lambda c, s, cluster, timeout, quiet: logical.subscribe(cluster, timeout, quiet),
      dict(cluster="C", timeout=30, quiet=True), cluster=k_of(*NOT_CLUSTER), timeout=k_num(lo=1, hi=600),
      quiet=k_bool()),
    T("logical.stream_one", "logical", lambda c, s, cluster, rows, timeout: logical.stream_one(cluster, rows, timeout),
      dict(cluster="C", rows=1, timeout=10), cluster=k_of(*NOT_CLUSTER), rows=k_int(lo=1, hi=100),
      timeout=k_num(lo=1, hi=600)),
    T("logical.subscription_status", "logical", lambda c, s, cluster, subscriber:
      logical.subscription_status(cluster, subscriber), dict(cluster="C", subscriber=ANALYTICS),
      cluster=k_of(*NOT_CLUSTER), subscriber=k_name() | k_of("primary", "replica1")),
    T("logical.writable_side_by_side", "logical", lambda c, s, cluster, replica:
      logical.writable_side_by_side(cluster, replica), dict(cluster="C", replica="replica1"),
      cluster=k_of(*NOT_CLUSTER), replica=k_name() | k_of("primary", ANALYTICS)),
    cluster_only("logical", logical.demo_publications),
    T("logical.carried", "logical", lambda c, s, cluster, publication, quiet: logical.carried(cluster, publication, quiet),
      dict(cluster="C", publication=logical.PUBLICATION, quiet=True), cluster=k_of(*NOT_CLUSTER),
      publication=k_text() | k_of("", "nope", "Bad-Name!", "x" * 100), quiet=k_bool()),
    T("logical.compare_carried", "logical", lambda c, s, cluster, publications:
      logical.compare_carried(cluster, publications), dict(cluster="C", publications=(logical.PUBLICATION,)),
      cluster=k_of(*NOT_CLUSTER), publications=NOT_PUBLICATIONS),
    cluster_only("logical", logical.update_without_key),
    T("logical.repair_identity", "logical", lambda c, s, cluster, how: logical.repair_identity(cluster, how),
      dict(cluster="C", how="full"), cluster=k_of(*NOT_CLUSTER), how=k_choice("full", "key")),
    T("logical.make_conflict", "logical", lambda c, s, cluster, timeout, quiet:
      logical.make_conflict(cluster, timeout, quiet), dict(cluster="C", timeout=10, quiet=True),
      cluster=k_of(*NOT_CLUSTER), timeout=k_num(lo=1, hi=600), quiet=k_bool()),
    T("logical.transaction_rows", "logical", lambda c, s, cluster, conflict: logical.transaction_rows(cluster, conflict),
      dict(cluster="C", conflict="S:conflict"), cluster=k_of(*NOT_CLUSTER), conflict=k_of(*NOT_SERIES)),
    T("logical.repair_conflict", "logical", lambda c, s, cluster, conflict, how, timeout:
      logical.repair_conflict(cluster, conflict, how, timeout),
      dict(cluster="C", conflict="S:conflict", how="delete", timeout=10), cluster=k_of(*NOT_CLUSTER),
      conflict=k_of(*NOT_SERIES), how=k_choice("delete", "skip"), timeout=k_num(lo=1, hi=600)),
    T("logical.decode", "logical", lambda c, s, cluster, plugin: logical.decode(cluster, plugin),
      dict(cluster="C", plugin="test_decoding"), cluster=k_of(*NOT_CLUSTER),
      plugin=k_choice("test_decoding", "pgoutput") | k_of("wal2json")),
    T("logical.recvlogical", "logical", lambda c, s, cluster, seconds: logical.recvlogical(cluster, seconds),
      dict(cluster="C", seconds=1), cluster=k_of(*NOT_CLUSTER), seconds=k_num(lo=0.1, hi=60)),
    T("logical.forgotten_slot", "logical", lambda c, s, cluster, segments, quiet:
      logical.forgotten_slot(cluster, segments, quiet), dict(cluster="C", segments=1, quiet=True),
      cluster=k_of(*NOT_CLUSTER), segments=k_int(lo=1, hi=32), quiet=k_bool()),
    cluster_only("logical", logical.drop_forgotten),
    T("logical.apply_lag", "logical", lambda c, s, cluster, rate, seconds, replica, sample_every:
      logical.apply_lag(cluster, rate, seconds, replica, sample_every),
      dict(cluster="C", rate=100, seconds=0.5, replica="replica1", sample_every=0.1), cluster=k_of(*NOT_CLUSTER),
      rate=k_num(lo=1, hi=5000), seconds=k_num(lo=0.5, hi=120), replica=k_name() | k_of("primary", ANALYTICS),
      sample_every=k_num(lo=0.01, hi=5)),
    T("logical.plot_lag", "logical", lambda c, s, samples: logical.plot_lag(samples), dict(samples="S:lag"),
      samples=k_of(*NOT_FRAME)),
    T("logical.visibility", "logical", lambda c, s, samples: logical.visibility(samples), dict(samples="S:lag"),
      samples=k_of(*NOT_FRAME)),
    T("logical.bytes_compared", "logical", lambda c, s, cluster, rows: logical.bytes_compared(cluster, rows),
      dict(cluster="C", rows=10), cluster=k_of(*NOT_CLUSTER), rows=k_int(lo=1, hi=100_000)),
    T("logical.capabilities", "logical", lambda c, s, cluster, replica, timeout:
      logical.capabilities(cluster, replica, timeout), dict(cluster="C", replica="replica1", timeout=10),
      cluster=k_of(*NOT_CLUSTER), replica=k_name() | k_of("primary", ANALYTICS), timeout=k_num(lo=1, hi=600)),
    T("logical.break_by_failover", "logical", lambda c, s, cluster, rows, timeout, quiet:
      logical.break_by_failover(cluster, rows, timeout, quiet), dict(cluster="C", rows=10, timeout=10, quiet=True),
      cluster=k_of(*NOT_CLUSTER), rows=k_int(lo=1, hi=100_000), timeout=k_num(lo=1, hi=600), quiet=k_bool()),
    T("logical.repair_after_failover", "logical", lambda c, s, cluster, timeout, quiet:
      logical.repair_after_failover(cluster, timeout, quiet), dict(cluster="C", timeout=30, quiet=True),
      cluster=k_of(*NOT_CLUSTER), timeout=k_num(lo=1, hi=600), quiet=k_bool()),
    T("logical.rejoin_old_primary", "logical", lambda c, s, cluster, quiet: logical.rejoin_old_primary(cluster, quiet),
      dict(cluster="C", quiet=True), cluster=k_of(*NOT_CLUSTER), quiet=k_bool()),
    # --- lab.archive (chapter 10) ---------------------------------------------------------------------------------
    T("archive.tidy", "archive", lambda c, s, cluster, archiving, quiet: archive.tidy(cluster, archiving, quiet),
      dict(cluster="C", archiving=True, quiet=True), cluster=k_of(*NOT_CLUSTER), archiving=k_bool(),
      quiet=k_bool()),
    cluster_only("archive", archive.basic_archive_available),
    T("archive.enable", "archive", lambda c, s, cluster, restart, quiet: archive.enable(cluster, restart, quiet),
      dict(cluster="C", restart=False, quiet=True), cluster=k_of(*NOT_CLUSTER), restart=k_bool(), quiet=k_bool()),
    T("archive.restart_pending", "archive", lambda c, s, cluster, quiet, timeout:
      archive.restart_pending(cluster, quiet, timeout), dict(cluster="C", quiet=True, timeout=30),
      cluster=k_of(*NOT_CLUSTER), quiet=k_bool(), timeout=k_num(lo=1, hi=600)),
    T("archive.switch_wal", "archive", lambda c, s, cluster, timeout: archive.switch_wal(cluster, timeout),
      dict(cluster="C", timeout=10), cluster=k_of(*NOT_CLUSTER), timeout=k_num(lo=0.1, hi=600)),
    cluster_only("archive", archive.stats),
    T("archive.contents", "archive", lambda c, s, cluster, kind: archive.contents(cluster, kind),
      dict(cluster="C", kind=None), cluster=k_of(*NOT_CLUSTER),
      kind=k_choice("segment", "timeline history", ok=[None])),
    T("archive.break_archiving", "archive", lambda c, s, cluster, timeout: archive.break_archiving(cluster, timeout),
      dict(cluster="C", timeout=10), cluster=k_of(*NOT_CLUSTER), timeout=k_num(lo=1, hi=600)),
    T("archive.watch_backlog", "archive", lambda c, s, cluster, segments, phase, quiet:
      archive.watch_backlog(cluster, segments, phase, quiet), dict(cluster="C", segments=1, phase=None, quiet=True),
      cluster=k_of(*NOT_CLUSTER), segments=k_int(lo=1, hi=32), phase=k_text(ok=[None]), quiet=k_bool()),
    T("archive.failures", "archive", lambda c, s, cluster, last: archive.failures(cluster, last),
      dict(cluster="C", last=2), cluster=k_of(*NOT_CLUSTER), last=k_int(lo=1, hi=100)),
    cluster_only("archive", archive.settings),
    T("archive.repair", "archive", lambda c, s, cluster, timeout, quiet: archive.repair(cluster, timeout, quiet),
      dict(cluster="C", timeout=10, quiet=True), cluster=k_of(*NOT_CLUSTER), timeout=k_num(lo=1, hi=600),
      quiet=k_bool()),
    T("archive.take_backup", "archive", lambda c, s, cluster, name, quiet: archive.take_backup(cluster, name, quiet),
      dict(cluster="C", name="fuzz_take", quiet=True), cluster=k_of(*NOT_CLUSTER),
      name=k_text() | k_of("", ".x", "a/b", "..", "x" * 300), quiet=k_bool()),
    T("archive.make_mistake", "archive", lambda c, s, cluster, table, timeout: archive.make_mistake(cluster, table, timeout),
      dict(cluster="C", table="wallets", timeout=10), cluster=k_of(*NOT_CLUSTER),
      table=k_text() | k_of("", "nope", "a\x00b", "x" * 300), timeout=k_num(lo=1, hi=600)),
    T("archive.restore", "archive", lambda c, s, cluster, name, backup, mistake, by, table, quiet:
      archive.restore(cluster, name, backup, mistake, by, table, quiet),
      dict(cluster="C", name="pitr_fuzz", backup="S:backup", mistake="S:mistake", by="lsn", table=None, quiet=True),
      cluster=k_of(*NOT_CLUSTER), name=k_bad_name() | k_of("primary", "replica1", "a/b", ".."),
      backup=k_of(*NOT_PATH), mistake=k_of(*NOT_SERIES), by=k_choice("lsn", "time", "name"),
      table=k_text(ok=[None]) | k_of(""), quiet=k_bool()),
    node_only("archive", archive.timeline),
    T("archive.copy_back", "archive", lambda c, s, cluster, source, table: archive.copy_back(cluster, source, table),
      dict(cluster="C", source="replica1", table="wallets"), cluster=k_of(*NOT_CLUSTER),
      source=k_name() | k_of("primary"), table=k_text() | k_of("", "nope")),
    T("archive.compare_with_delayed", "archive", lambda c, s, cluster, backup, restores, copied:
      archive.compare_with_delayed(cluster, backup, restores, copied),
      dict(cluster="C", backup="S:backup", restores="S:restores", copied=None), cluster=k_of(*NOT_CLUSTER),
      backup=k_of(*NOT_PATH), restores=k_of(*NOT_SERIES, [pd.Series(dtype=object)], [{"seconds_to_writable": 1}]),
      copied=k_of(42, "x", [], {}, b"x", pd.DataFrame(), pd.DataFrame({"seconds": ["x"]}))),
    T("archive.archive_lag", "archive", lambda c, s, cluster, timeout, archive_timeout, retry, name, quiet:
      archive.archive_lag(cluster, timeout, archive_timeout, retry, name, quiet),
      dict(cluster="C", timeout=1, archive_timeout="1s", retry="1s", name="from_archive", quiet=True),
      cluster=k_of(*NOT_CLUSTER), timeout=k_num(lo=1, hi=120), archive_timeout=k_text() | k_of("", "nope"),
      retry=k_text() | k_of("", "nope"), name=k_bad_name() | k_of("primary", "replica1", ANALYTICS),
      quiet=k_bool()),
    T("archive.replica_without_slot", "archive", lambda c, s, cluster, name, quiet:
      archive.replica_without_slot(cluster, name, quiet), dict(cluster="C", name="replica1", quiet=True),
      cluster=k_of(*NOT_CLUSTER), name=k_bad_name() | k_of("primary", ANALYTICS), quiet=k_bool()),
    T("archive.outrun", "archive", lambda c, s, cluster, replica, segments, timeout, quiet:
      archive.outrun(cluster, replica, segments, timeout, quiet),
      dict(cluster="C", replica="replica1", segments=2, timeout=10, quiet=True), cluster=k_of(*NOT_CLUSTER),
      replica=k_name() | k_of("primary", ANALYTICS), segments=k_int(lo=2, hi=32), timeout=k_num(lo=1, hi=600),
      quiet=k_bool()),
    T("archive.add_cascade", "archive", lambda c, s, cluster, name, upstream, quiet:
      archive.add_cascade(cluster, name, upstream, quiet), dict(cluster="C", name="replica1", upstream="replica1",
                                                              quiet=True),
      cluster=k_of(*NOT_CLUSTER), name=k_bad_name() | k_of("primary", ANALYTICS),
      upstream=k_name() | k_of(ANALYTICS), quiet=k_bool()),
    cluster_only("archive", archive.cascade),
    T("archive.hop_lag", "archive", lambda c, s, cluster, hops, samples, timeout:
      archive.hop_lag(cluster, hops, samples, timeout), dict(cluster="C", hops=["replica1"], samples=1, timeout=1),
      cluster=k_of(*NOT_CLUSTER), hops=NOT_NAMES, samples=k_int(lo=1, hi=500), timeout=k_num(lo=0.1, hi=60)),
    T("archive.hop_summary", "archive", lambda c, s, samples: archive.hop_summary(samples), dict(samples="S:hops"),
      samples=k_of(*NOT_FRAME)),
    T("archive.visible_on", "archive", lambda c, s, cluster, nodes, timeout: archive.visible_on(cluster, nodes, timeout),
      dict(cluster="C", nodes=["replica1"], timeout=1), cluster=k_of(*NOT_CLUSTER), nodes=NOT_NAMES,
      timeout=k_num(lo=0.1, hi=60)),
    T("archive.stream_from_primary", "archive", lambda c, s, cluster, name: archive.stream_from_primary(cluster, name),
      dict(cluster="C", name="primary"), cluster=k_of(*NOT_CLUSTER), name=k_name() | k_of(ANALYTICS)),
]


# --- the cluster, its samples, and putting it back between examples ----------------------------------------
@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """The module's lab home: chapter 10's archive on (one restart), chapter 09's subscriber streaming."""
    home = tmp_path_factory.mktemp("lab-fuzz-0910")
    c = lab.up(replicas=1, home=home, quiet=True)
    try:
        archive.enable(c, restart=True, quiet=True)
        logical.setup(c, rows=ROWS, quiet=True)
        logical.subscribe(c, quiet=True)
        logical.demo_publications(c)
        for r in c.replicas:
            STREAMING[r.name] = tuple(r.sql(_LOOK_REPLICA, dbname="postgres").iloc[0][
                ["primary_conninfo", "primary_slot_name"]])
        yield home
    finally:
        lab.down(wipe=True, home=home)


@pytest.fixture(scope="module")
def cl(home):
    return lab.up(replicas=1, home=home, quiet=True)


@pytest.fixture(scope="module")
def samples(cl) -> dict:
    """Valid values an argument can keep while another one gets a wrong value."""
    standby.make_wallets(cl)
    backup = archive.take_backup(cl, BACKUP, quiet=True)
    mistake = archive.make_mistake(cl)
    standby.make_wallets(cl)
    at = dt.datetime(2040, 1, 1, tzinfo=dt.timezone.utc)  # no row has it: repairing it changes nothing
    conflict = logical.Conflict(key=("ETH", at), rows=[("ETH", at)], error="ERROR: duplicate key value",
                                context="CONTEXT: ... finished at 0/1", finish_lsn="0/1", apply_error_count=1)
    restored = pd.Series(dict(node="pitr_lsn", target="recovery_target_lsn", value=mistake["target_lsn"],
                              seconds_to_writable=1.5, timeline=2, table="wallets", rows=5, in_recovery=False))
    return {
        "S:backup": str(backup),
        "S:mistake": mistake,
        "S:conflict": conflict,
        "S:restores": [restored],
        "S:lag": logical.apply_lag(cl, rate=100, seconds=0.5),
        "S:hops": archive.hop_lag(cl, ["replica1"], samples=2, timeout=1),
    }


_LOOK_PRIMARY = """
SELECT current_setting('archive_mode') AS archive_mode, current_setting('archive_command') AS archive_command,
       (SELECT array_agg(name::text) FROM pg_settings WHERE sourcefile LIKE '%%postgresql.auto.conf'
           AND name IN ('archive_timeout', 'wal_keep_size')) AS changed,
       (SELECT array_agg(slot_name::text) FROM pg_replication_slots
         WHERE slot_name <> ALL(%(keep)s)) AS extra_slots,
       (SELECT array_agg(pubname::text) FROM pg_publication) AS publications,
       to_regclass('wallets') IS NOT NULL AS wallets"""
_LOOK_REPLICA = """
SELECT pg_is_wal_replay_paused() AS paused,
       (SELECT status FROM pg_stat_wal_receiver) AS receiver,
       current_setting('primary_conninfo') AS primary_conninfo,
       current_setting('primary_slot_name') AS primary_slot_name,
       (SELECT array_agg(name::text) FROM pg_settings WHERE sourcefile LIKE '%%postgresql.auto.conf'
           AND name IN ('wal_retrieve_retry_interval', 'recovery_min_apply_delay')) AS changed"""
STREAMING = {}  # each replica's primary_conninfo and primary_slot_name as the fixture left them
_LOOK_SUBSCRIBER = """
SELECT (SELECT count(*) FROM pg_subscription WHERE subname = %s AND subenabled) AS subscribed,
       (SELECT count(*) FROM precios WHERE moneda = 'ETH' AND precio = 1) AS conflicting"""


def _heal(c, home) -> list:
    """The cluster as the fixture left it; what had to be put back (nothing, usually)."""
    done = []
    names = {n.name for n in c.nodes}
    if c.primary.name != "primary" or not all(c.node(n).is_running for n in NODES if n in names) \
            or not set(NODES) <= names:
        done += failover.tidy(c)
        if c.primary.name != "primary":
            c.switchover("primary")
            done.append("switched back to primary")
        lab.up(replicas=1, home=home, quiet=True)
        done.append("lab.up()")
    for n in list(c.nodes):
        if n.name not in (*NODES, ANALYTICS):
            c.remove_node(n.name)
            done.append(f"removed {n.name}")
    p = c.primary
    looked = p.sql(_LOOK_PRIMARY, {"keep": [logical.SUBSCRIPTION, *NODES]}).iloc[0]  # crypto_db: wallets
    if looked["archive_mode"] != "on":
        archive.enable(c, restart=True, quiet=True)
        done.append("archiving on again")
    elif looked["archive_command"] != archive.archive_command(c.archive_dir()):
        archive.repair(c, quiet=True)
        done.append("archive_command repaired")
    if looked["changed"]:
        p.set(**{name: None for name in looked["changed"]})
        done.append(f"primary: reset {', '.join(looked['changed'])}")
    for slot in looked["extra_slots"] or []:
        p.execute("SELECT pg_drop_replication_slot(%s)", (slot,), dbname="postgres")
        done.append(f"dropped slot {slot}")
    if not looked["wallets"]:
        standby.make_wallets(c)
        done.append("wallets made again")
    for r in c.replicas:
        got = r.sql(_LOOK_REPLICA, dbname="postgres").iloc[0]
        if got["changed"]:
            r.set(**{name: None for name in got["changed"]})
            done.append(f"{r.name}: reset {', '.join(got['changed'])}")
        was = STREAMING.get(r.name)
        if was and (got["primary_conninfo"], got["primary_slot_name"]) != was:
            r.set(primary_conninfo=was[0], primary_slot_name=was[1])
            done.append(f"{r.name}: streams from its slot on the primary again")
        if got["paused"]:
            r.execute("SELECT pg_wal_replay_resume()", dbname="postgres")
            done.append(f"{r.name}: replay resumed")
    sub = c.node(ANALYTICS) if ANALYTICS in {n.name for n in c.nodes} else None
    got = sub.sql(_LOOK_SUBSCRIBER, (logical.SUBSCRIPTION,), dbname=logical.DB).iloc[0] \
        if sub is not None and sub.is_running else None
    if got is not None and got["conflicting"]:
        sub.execute("DELETE FROM precios WHERE moneda = 'ETH' AND precio = 1")
        done.append("the subscriber's conflicting rows deleted")
    if got is None or not got["subscribed"] or not set(PUBLICATIONS) <= set(looked["publications"] or []):
        logical.drop_subscription(c)
        logical.setup(c, rows=ROWS, quiet=True)
        logical.subscribe(c, quiet=True)
        logical.demo_publications(c)
        done.append("subscribed again")
    return done


def _check(c, s, home, target: Target, data):
    fuzz.check(target, data, (c, s), lambda v: fuzz.resolve(c, s, v), lambda: _heal(c, home))


def test_the_samples_are_valid(cl, home, samples):
    """The valid values work: every target with them alone succeeds or refuses in one line."""
    assert archive.is_archiving(cl) and len(archive.backup_label(samples["S:backup"]))
    assert logical.transaction_rows(cl, samples["S:conflict"])["on_primary"].isna().all()
    assert len(archive.compare_with_delayed(cl, samples["S:backup"], samples["S:restores"])) == 2
    assert len(logical.visibility(samples["S:lag"])) == 2 and len(archive.hop_summary(samples["S:hops"])) == 1
    assert archive.add_cascade(cl, "replica1", "replica1", quiet=True).name == "replica1"
    assert _heal(cl, home) == []


def _one_line_lab_error(call, *args, **kwargs) -> str:
    with pytest.raises(LabError) as e:
        call(*args, **kwargs)
    text = str(e.value).strip()
    assert text and "\n" not in text, text
    return text


def test_what_the_fuzz_found_stays_fixed(cl, home, samples):
    """The calls that broke the property before lab/logical.py and lab/archive.py were fixed."""
    frame = pd.DataFrame({"a": [1, 2]})
    _one_line_lab_error(logical.transaction_rows, cl, frame)           # was a LabError of three lines
    _one_line_lab_error(logical.writable_side_by_side, cl, frame)      # the same message, the same repr
    backup, mistake = samples["S:backup"], samples["S:mistake"]
    assert "backup" in _one_line_lab_error(archive.restore, cl, "pitr_fuzz", None, mistake)  # was a TypeError
    # a backup given as a string (its path) was an AttributeError
    assert len(archive.compare_with_delayed(cl, backup, samples["S:restores"])) == 2
    _one_line_lab_error(archive.compare_with_delayed, cl, backup, samples["S:restores"], 42)
    # archive_lag removed any node of the name it was given (replica1, the subscriber) to make its replica
    assert "replica1" in _one_line_lab_error(archive.archive_lag, cl, name="replica1", quiet=True)
    _one_line_lab_error(archive.archive_lag, cl, name=ANALYTICS, quiet=True)
    assert {"replica1", ANALYTICS} <= {n.name for n in cl.nodes}
    assert _heal(cl, home) == []


def test_heal_puts_back_what_the_chapters_change(cl, home, samples):
    """What a call that got past its checks could leave, put back by ``_heal`` (then nothing more to do)."""
    archive.break_archiving(cl)
    logical.make_conflict(cl, quiet=True)
    logical.forgotten_slot(cl, segments=1, quiet=True)
    cl.primary.set(archive_timeout="5s")
    cl.add_standalone("pitr_fuzz", quiet=True)
    cl.primary.execute("DROP TABLE wallets")
    done = _heal(cl, home)
    assert any("archive_command" in d for d in done) and any("conflicting" in d for d in done), done
    assert any("cdc_forgotten" in d for d in done) and "removed pitr_fuzz" in done, done
    assert "wallets made again" in done and any("archive_timeout" in d for d in done), done
    assert _heal(cl, home) == []
    assert len(logical.stream_one(cl, rows=1)) == 1 and archive.switch_wal(cl)["in_archive"]


@pytest.mark.parametrize("target", TARGETS, ids=[f"{t.owner}:{t.id}" for t in TARGETS])
def test_a_wrong_argument_is_a_lab_error_never_a_crash_nor_a_hang(cl, home, samples, target):
    assert target.wrong, target.id
    fuzz.examples(lambda data: _check(cl, samples, home, target, data))
