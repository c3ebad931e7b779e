"""The public API against wrong arguments, property-based (hypothesis), on one real cluster.

For every function and method a notebook calls, one argument at a time gets a wrong value (None,
bools, negative / huge / NaN / infinite numbers, floats for whole numbers, strings for numbers,
lists, dicts, bytes, malformed LSNs, unknown node names, SQL that is not a string, parameters that
do not match the placeholders), the others keep a valid one.  Whatever is drawn, the call either
succeeds or raises a ``LabError`` (one line) — never another exception — and returns within
``BOUND`` seconds (a watchdog thread; a call that hangs fails the test, named).  Between examples
the cluster is put back the way the chapters leave it (nodes thawed and started, no proxy,
asynchronous replication, replay resumed, the original primary), in case a wrong value slipped
through a check and a destructive call ran.

PGLAB_FUZZ_EXAMPLES sets the examples per function (default 5: a few minutes in all).  The wrong
values, the strategies, the targets and the watchdog are in labtest/fuzz.py (chapter 08's HA
cluster has its own module: test_public_api_ha.py).
"""
from __future__ import annotations

import math

import pandas as pd
import pytest
from hypothesis import strategies as st

import lab
from lab import (backups, consistency, conninfo, failover, faults, lag, lsn, plots, proxy, replication, slots,
                 standby, sync, wal, workload)
from labtest import fuzz
from labtest.fuzz import cluster_only as _cluster_only
from labtest.fuzz import node_only as _node_only
from labtest.fuzz import (BAD_PARAMS, NAN, NOT_CLUSTER, NOT_FRAME, NOT_INT, NOT_NAME_LIST, NOT_NODE_OBJECT, NOT_NUMBER,
                          NOT_PATH, NOT_SQL, NOT_TEXT, UNKNOWN_NAMES, Target, T, _in, k_bad_name, k_bool, k_choice,
                          k_int, k_lsn, k_name, k_num, k_of, k_text)

pytestmark = pytest.mark.integration

NODES = ("primary", "replica1", "replica2")


QUERY = "SELECT %s::text AS v"

TARGETS = [
    # --- Node (lab/node.py) ------------------------------------------------------------------
    T("Node.sql", "node", lambda c, s, query, params, dbname: c.primary.sql(query, params, dbname),
      dict(query=QUERY, params=("x",), dbname=None), query=st.sampled_from(NOT_SQL),
      params=st.sampled_from(BAD_PARAMS), dbname=k_text(ok=[None]) | st.sampled_from(["nodb", ""])),
    T("Node.execute", "node", lambda c, s, query, params: c.node("replica1").execute(query, params),
      dict(query=QUERY, params=("x",)), query=st.sampled_from(NOT_SQL), params=st.sampled_from(BAD_PARAMS)),
    T("Node.scalar", "node", lambda c, s, query, params: c.primary.scalar(query, params),
      dict(query=QUERY, params=("x",)), query=st.sampled_from(NOT_SQL), params=st.sampled_from(BAD_PARAMS)),
    T("Node.settings", "node", lambda c, s, names: c.primary.settings(*names), dict(names=["work_mem"]),
      names=k_of([], [None], [42], [[]], [b"x"], ["no_such_setting"], [""], [1.5])),
    T("Node.set", "node", lambda c, s, value: c.node("replica2").set(work_mem=value), dict(value="8MB"),
      value=k_of([], {}, b"8MB", NAN, -1, "abc", 1.5, "8 GB!", ("8MB",))),
    T("Node.set(name)", "node", lambda c, s, names: c.node("replica2").set(**{n: "on" for n in names}),
      dict(names=["log_checkpoints"]), names=k_of([], ["no_such_setting"], ["work mem"], [""])),
    T("Node.logs", "node", lambda c, s, tail: c.primary.logs(tail), dict(tail=5), tail=k_int(lo=1)),
    T("Node.pause", "node", lambda c, s, max_seconds: c.node("replica2").pause(max_seconds),
      dict(max_seconds=1), max_seconds=k_num(lo=0.001, hi=3600)),
    T("Node.stop", "node", lambda c, s, timeout: c.node("replica2").stop(timeout), dict(timeout=30),
      timeout=k_num(lo=0.001, hi=3600)),
    # --- Cluster (lab/cluster.py) ------------------------------------------------------------------
    T("Cluster.node", "cluster", lambda c, s, name: c.node(name), dict(name="replica1"), name=k_name()),
    T("Cluster.wait_replayed", "cluster", lambda c, s, lsn, timeout: c.wait_replayed(lsn, timeout),
      dict(lsn=None, timeout=10), lsn=k_lsn(), timeout=k_num(lo=0.001, hi=3600)),
    T("Cluster.wait_streaming", "cluster", lambda c, s, timeout, names: c.wait_streaming(timeout, names),
      dict(timeout=10, names=None), timeout=k_num(lo=0.001, hi=3600), names=st.sampled_from(NOT_NAME_LIST[1:])),
    T("Cluster.add_replica", "cluster",
      lambda c, s, name, quiet, from_backup: c.add_replica(name, quiet=quiet, from_backup=from_backup),
      dict(name="replica_fuzz", quiet=True, from_backup="/nonexistent/lab-fuzz"),
      name=k_bad_name() | st.sampled_from(["primary", "replica1"]), quiet=k_bool(),
      from_backup=st.sampled_from([42, [], {}, b"/tmp", "", "/etc/hostname", "a\x00b"])),
    T("Cluster.remove_replica", "cluster", lambda c, s, name: c.remove_replica(name), dict(name="replica9"),
      name=k_bad_name() | st.sampled_from(["primary", "replica9", None])),
    T("Cluster.switchover", "cluster", lambda c, s, name, timeout, quiet: c.switchover(name, timeout, quiet),
      dict(name="primary", timeout=30, quiet=True), name=k_bad_name() | st.sampled_from(["replica9", None]),
      timeout=k_num(lo=0.001, hi=3600), quiet=k_bool()),
    T("Cluster.rejoin", "cluster", lambda c, s, name, quiet: c.rejoin(name, quiet), dict(name="replica9", quiet=True),
      name=k_name(), quiet=k_bool()),
    T("Cluster.start", "cluster", lambda c, s, quiet: c.start(quiet), dict(quiet=True), quiet=k_bool()),
    # --- lab.lsn (the top-level lab.lsn_diff ...) --------------------------------------------------------
    T("lab.lsn_diff", "mine", lambda c, s, a, b: lab.lsn_diff(a, b), dict(a="0/3000060", b="0/3000000"),
      a=k_lsn(ok=[None]), b=k_lsn(ok=[None])),
    T("lab.parse_lsn", "mine", lambda c, s, text: lab.parse_lsn(text), dict(text="0/1"), text=k_lsn()),
    T("lab.format_lsn", "mine", lambda c, s, value: lab.format_lsn(value), dict(value=1), value=k_lsn()),
    T("lab.lsn.wal_segment_name", "mine", lambda c, s, lsn_, timeline, segment_size:
      lsn.wal_segment_name(lsn_, timeline, segment_size), dict(lsn_="0/3000060", timeline=1, segment_size=16 << 20),
      lsn_=k_lsn(), timeline=k_int(lo=1, hi=0xFFFFFFFF), segment_size=k_int(lo=1 << 20, hi=1 << 30) | k_of(3 << 20)),
    # --- lab.conninfo --------------------------------------------------------------------------------------
    T("conninfo.make", "mine", lambda c, s, dsn: conninfo.make(dsn, port=5432), dict(dsn=""),
      dsn=k_text(ok=[None]) | k_of("host", "x y z", "host='")),
    T("conninfo.parse", "mine", lambda c, s, dsn: conninfo.parse(dsn), dict(dsn="host=x"),
      dsn=k_text() | k_of("host", "postgresql://[", "a\x00=b")),
    T("conninfo.multi_host", "mine", lambda c, s, endpoints: conninfo.multi_host(endpoints), dict(endpoints=[("h", 1)]),
      endpoints=k_of(None, 42, "host", [], [("h",)], [("h", 1, 2)], [None], {}, b"x", [{"h": 1}])),
    # --- lab.wal -----------------------------------------------------------------------------------------------
    _cluster_only("wal", wal.position),
    _cluster_only("wal", wal.counters),
    _cluster_only("wal", wal.retention),
    _cluster_only("wal", wal.operation_panel),
    T("wal.walfile_names", "wal", lambda c, s, cluster, lsns: wal.walfile_names(cluster, lsns),
      dict(cluster="C", lsns=["0/3000000"]), cluster=k_of(*NOT_CLUSTER),
      lsns=k_of(None, "0/1", 42, [None], ["zz"], [[]], [b"0/1"], [-1], [2 ** 64], {}, [NAN])),
    T("wal.wal_files", "wal", lambda c, s, node: wal.wal_files(c, node), dict(node=None),
      node=k_name(ok=[None])),
    T("wal.waldump", "wal", lambda c, s, node, start, end, limit: wal.waldump(node, start, end, limit),
      dict(node="N:primary", start="S:here", end=None, limit=1), node=k_of(*NOT_NODE_OBJECT),
      start=k_lsn(), end=k_lsn(ok=[None]), limit=k_int(lo=1, ok=[None])),
    T("wal.summarize", "wal", lambda c, s, records: wal.summarize(records), dict(records=None),
      records=k_of(*NOT_FRAME)),
    T("wal.run_operation", "wal", lambda c, s, op, rows: wal.run_operation(c, op, rows),
      dict(op="INSERT", rows=10), op=k_choice("INSERT", "UPDATE"), rows=k_int(lo=1, hi=10 ** 6)),
    T("wal.wal_volume", "wal", lambda c, s, rows, operations: wal.wal_volume(c, rows, operations),
      dict(rows=10, operations=["INSERT"]), rows=k_int(lo=1, hi=10 ** 6),
      operations=k_of(42, "INSERT!", [42], ["nope"], {}, b"x", [[]])),
    T("wal.plot_volume", "wal", lambda c, s, volume: wal.plot_volume(volume), dict(volume=None),
      volume=k_of(*NOT_FRAME)),
    T("wal.full_page_writes", "wal", lambda c, s, attempts: wal.full_page_writes(c, attempts), dict(attempts=1),
      attempts=k_int(lo=1, hi=100)),
    T("wal.by_step", "wal", lambda c, s, records: wal.by_step(*records), dict(records=[]),
      records=k_of([None], [42], ["x"], [pd.DataFrame()], [pd.DataFrame({"x": [1]})], [])),
    T("wal.changes", "wal", lambda c, s, before, after: wal.changes(before, after),
      dict(before="S:counters", after="S:counters"), before=k_of(*NOT_FRAME), after=k_of(*NOT_FRAME)),
    T("wal.checkpoint_log", "wal", lambda c, s, last: wal.checkpoint_log(c, last), dict(last=3),
      last=k_int(lo=1, hi=10 ** 5)),
    T("wal.write_load", "wal", lambda c, s, rounds: wal.write_load(c, rounds), dict(rounds=1),
      rounds=k_int(lo=1, hi=100)),
    T("wal.describe", "wal", lambda c, s, result: wal.describe(result), dict(result=None),
      result=k_of(None, 42, "x", [], {}, {"records": 1}, {"records": pd.DataFrame()})),
    # --- lab.lag ----------------------------------------------------------------------------------------------
    T("lag.lag_under_latency", "lag",
      lambda c, s, replica, latencies, seconds, cut_seconds, rate, every, live, quiet:
      lag.lag_under_latency(c, replica, latencies, seconds, cut_seconds, rate, every, live, quiet),
      dict(replica="replica1", latencies=(0,), seconds=0.3, cut_seconds=0.3, rate=100, every=0.1, live=False,
           quiet=True),
      replica=k_name(), latencies=k_of(None, 42, "0", [-1], [NAN], ["x"], {}, [10 ** 9], b"x"),
      seconds=k_num(lo=0.01, hi=600), cut_seconds=k_num(lo=0, hi=600), rate=k_num(lo=0.001, hi=10 ** 6, ok=[None]),
      every=k_num(lo=0.001, hi=60), live=k_bool(), quiet=k_bool()),
    T("lag.phase_summary", "lag", lambda c, s, samples: lag.phase_summary(samples), dict(samples=None),
      samples=k_of(*NOT_FRAME)),
    T("lag.lag_figure", "lag", lambda c, s, samples: lag.lag_figure(samples), dict(samples=None),
      samples=k_of(*NOT_FRAME)),
    T("lag.link_action", "lag", lambda c, s, replica, action, latency_ms: lag.link_action(c, replica, action, latency_ms),
      dict(replica="replica1", action="direct", latency_ms=0), replica=k_name(),
      action=k_choice("direct", "latency", "cut", "heal"), latency_ms=k_num(lo=0, hi=10_000)),
    T("lag.link_panel", "lag", lambda c, s, replica: lag.link_panel(c, replica), dict(replica="replica1"),
      replica=k_name()),
    # --- lab.replication -----------------------------------------------------------------------------------------
    _cluster_only("replication", replication.stat_replication),
    _cluster_only("replication", replication.stat_wal_receiver),
    T("replication.time_to_replica", "replication", lambda c, s, replica, n, timeout:
      replication.time_to_replica(c, replica, n, timeout), dict(replica=None, n=2, timeout=5),
      replica=k_name(ok=[None]), n=k_int(lo=1, hi=10 ** 5), timeout=k_num(lo=0.001, hi=3600)),
    T("replication.delay_summary", "replication", lambda c, s, trials: replication.delay_summary(trials),
      dict(trials=None), trials=k_of(*NOT_FRAME)),
    T("replication.catch_up", "replication", lambda c, s, replica, rows, timeout:
      replication.catch_up(c, replica, rows, timeout), dict(replica="replica1", rows=10, timeout=30),
      replica=k_name(), rows=k_int(lo=1, hi=10 ** 7), timeout=k_num(lo=0.001, hi=3600)),
    # --- lab.failover -----------------------------------------------------------------------------------------------
    _cluster_only("failover", failover.timelines),
    _node_only("failover", failover.history),
    _node_only("failover", failover.timeline),
    T("failover.rewind_log", "failover", lambda c, s, node, tail: failover.rewind_log(node, tail),
      dict(node="N:primary", tail=5), node=k_of(*NOT_NODE_OBJECT), tail=k_int(lo=1)),
    T("failover.who_answers", "failover", lambda c, s, tsa, nodes: failover.who_answers(c, tsa, nodes),
      dict(tsa="read-write", nodes=None), tsa=k_choice("read-write", "any"),
      nodes=k_of(42, "primary", [42], ["replica9"], {}, b"x")),
    T("failover.set_mode", "failover", lambda c, s, mode: failover.set_mode(c, mode), dict(mode="async"),
      mode=k_choice("async", "on", "remote_apply")),
    T("failover.failover", "failover",
      lambda c, s, mode, fault, rate, before, after, latency_ms, fence_after, candidate, quiet:
      failover.failover(c, mode, fault, rate, before, after, latency_ms, fence_after, candidate, quiet),
      dict(mode="async", fault="crash", rate=100, before=0.3, after=0.2, latency_ms=0, fence_after=0.2,
           candidate=None, quiet=True),
      mode=k_choice("async", "on"), fault=k_choice("crash", "partition"), rate=k_num(lo=0.001, hi=10 ** 6),
      before=k_num(lo=0, hi=600), after=k_num(lo=0, hi=600), latency_ms=k_num(lo=0, hi=10_000),
      fence_after=k_num(lo=0, hi=600), candidate=k_name(ok=[None]) | k_of("primary"), quiet=k_bool()),
    T("failover.split_brain", "failover", lambda c, s, former: failover.split_brain(c, former),
      dict(former=None), former=k_name(ok=[None])),
    T("failover.survivors", "failover", lambda c, s, brain: failover.survivors(c, brain), dict(brain=None),
      brain=k_of(*NOT_FRAME)),
    T("failover.fence", "failover", lambda c, s, name, how: failover.fence(c, name, how),
      dict(name="replica2", how="stop"), name=k_name(), how=k_choice("stop", "standby")),
    T("failover.restore", "failover", lambda c, s, quiet: failover.restore(c, quiet), dict(quiet=True),
      quiet=k_bool()),
    T("failover.rpo_table", "failover", lambda c, s, rows: failover.rpo_table(rows), dict(rows=None),
      rows=k_of(None, 42, "x", [1], [{}], {}, [None], b"x")),
    T("failover.failover_action", "failover", lambda c, s, mode, fault, latency_ms, rows:
      failover.failover_action(c, mode, fault, latency_ms, rows),
      dict(mode="async", fault="crash", latency_ms=0, rows=None), mode=k_choice("async"),
      fault=k_choice("crash"), latency_ms=k_num(lo=0, hi=10_000), rows=k_of(42, "x", {}, b"x")),
    T("failover.switchover", "failover", lambda c, s, to, rate, seconds, quiet:
      failover.switchover(c, to, rate, seconds, quiet), dict(to="replica1", rate=100, seconds=0.3, quiet=True),
      to=k_name() | k_of("primary"), rate=k_num(lo=0.001, hi=10 ** 6), seconds=k_num(lo=0, hi=600),
      quiet=k_bool()),
    # --- lab.sync --------------------------------------------------------------------------------------------------
    _cluster_only("mine", sync.sync_table),
    _cluster_only("mine", sync.tidy),
    T("sync.set_synchronous", "mine", lambda c, s, cluster, names, timeout: sync.set_synchronous(cluster, names, timeout),
      dict(cluster="C", names="", timeout=15), cluster=k_of(*NOT_CLUSTER),
      names=k_text() | k_of("replica9", "ANY 1 (", "FIRST 0 (replica1)", "FIRST 3 (replica1, replica2)",
                            "replica1 replica2", "ANY 1 (nobody)", '"replica1', "ANY 1 (replica1,)", "(replica1)"),
      timeout=k_num(lo=0.1, hi=300)),
    T("sync.commit_cost", "mine", lambda c, s, modes, seconds, label, quiet: sync.commit_cost(c, modes, seconds, label, quiet),
      dict(modes=("local",), seconds=0.2, label="", quiet=True),
      modes=k_of(None, 42, [], [None], ["sometimes"], [["on"]], {}, b"on", "never"),
      seconds=k_num(lo=0.2, hi=10), label=k_text(), quiet=k_bool()),
    T("sync.cost_figure", "mine", lambda c, s, costs: sync.cost_figure(*costs), dict(costs=[]),
      costs=k_of([], [None], [42], ["x"], [pd.DataFrame()], [pd.DataFrame({"x": [1]})], [{}])),
    T("sync.cost_table", "mine", lambda c, s, costs: sync.cost_table(*costs), dict(costs=[]),
      costs=k_of([], [None], [42], ["x"], [pd.DataFrame()], [pd.DataFrame({"x": [1]})], [{}])),
    T("sync.blocked_commit", "mine", lambda c, s, replica, blocked_for, unblock, quiet:
      sync.blocked_commit(c, replica, blocked_for, unblock, quiet),
      dict(replica="replica1", blocked_for=0.3, unblock="async", quiet=True),
      replica=k_name() | k_of("primary"), blocked_for=k_num(lo=0.2, hi=30),
      unblock=k_choice("start", "async", "cancel"), quiet=k_bool()),
    T("sync.commits_while_down", "mine", lambda c, s, names, down, seconds, quiet:
      sync.commits_while_down(c, names, down, seconds, quiet),
      dict(names="ANY 1 (replica1, replica2)", down="replica2", seconds=0.3, quiet=True),
      names=k_text() | k_of("replica9", "ANY 1 (", ""), down=k_name() | k_of("primary"),
      seconds=k_num(lo=0.2, hi=30), quiet=k_bool()),
    T("sync.quorum", "mine", lambda c, s, replicas, seconds, quiet: sync.quorum(c, replicas, seconds, quiet),
      dict(replicas=("replica1", "replica2"), seconds=0.3, quiet=True),
      replicas=k_of(*NOT_NAME_LIST, ("replica1",), ("replica1", "replica1"), ("replica1", "primary"),
                    ("replica1", "replica2", "replica3")),
      seconds=k_num(lo=0.2, hi=30), quiet=k_bool()),
    T("sync.parse_standby_names", "mine", lambda c, s, text: sync.parse_standby_names(text), dict(text=""),
      text=k_text() | k_of("ANY", "FIRST 1", "1 (", "a,,b", '"', "ANY -1 (a)", "ANY 99999999999999999999 (a)")),
    # --- lab.consistency -----------------------------------------------------------------------------------------------
    T("consistency.read_your_writes", "mine", lambda c, s, replica, n, fix: consistency.read_your_writes(c, replica, n, fix),
      dict(replica="replica1", n=1, fix="none"), replica=k_name(), n=k_int(lo=1, hi=10_000),
      fix=k_choice("none", "wait_lsn", "remote_apply")),
    T("consistency.summarize", "mine", lambda c, s, trials, violation: consistency.summarize(trials, violation),
      dict(trials="S:ryw", violation="seen"), trials=k_of(*NOT_FRAME), violation=k_choice("seen", "went_back")),
    T("consistency.read_your_writes_compare", "mine", lambda c, s, replica, n, latency_ms, quiet:
      consistency.read_your_writes_compare(c, replica, n, latency_ms, quiet),
      dict(replica="replica1", n=1, latency_ms=0, quiet=True), replica=k_name() | k_of("primary"),
      n=k_int(lo=1, hi=10_000), latency_ms=k_num(lo=0, hi=1000), quiet=k_bool()),
    T("consistency.monotonic_reads", "mine", lambda c, s, replicas, n, mode, rate, every:
      consistency.monotonic_reads(c, replicas, n, mode, rate, every),
      dict(replicas=("replica1", "replica2"), n=1, mode="alternate", rate=100, every=0),
      replicas=k_of(*NOT_NAME_LIST, ()), n=k_int(lo=1, hi=10_000), mode=k_choice("alternate", "sticky"),
      rate=k_num(lo=1, hi=10_000), every=k_num(lo=0, hi=1)),
    T("consistency.monotonic_reads_compare", "mine", lambda c, s, replicas, n, delay_ms, quiet:
      consistency.monotonic_reads_compare(c, replicas, n, delay_ms, quiet),
      dict(replicas=("replica1", "replica2"), n=1, delay_ms=0, quiet=True),
      replicas=k_of(*NOT_NAME_LIST, ()), n=k_int(lo=1, hi=10_000), delay_ms=k_num(lo=0, hi=1000), quiet=k_bool()),
    # --- lab.workload ---------------------------------------------------------------------------------------------------
    T("workload.Writer", "mine",
      lambda c, s, target, rate, duration, max_rows, cluster, run, synchronous_commit, payload_bytes,
      retry_interval, log_path, create_table:
      workload.Writer(target, rate, duration, max_rows, cluster=cluster, run=run,
                      synchronous_commit=synchronous_commit, payload_bytes=payload_bytes,
                      retry_interval=retry_interval, log_path=log_path, create_table=create_table).run(),
      dict(target="N:primary", rate=None, duration=5, max_rows=1, cluster=None, run=None, synchronous_commit=None,
           payload_bytes=4, retry_interval=0.05, log_path=None, create_table=True),
      target=k_of(None, 42, "primary", "x=", "host", [], {}, b"x"), rate=k_num(lo=0.001, hi=100_000, ok=[None]),
      duration=k_num(lo=0.001, hi=600, ok=[None]), max_rows=k_int(lo=1, ok=[None]),
      cluster=k_of(*NOT_CLUSTER[1:]), run=k_text(ok=[None]), synchronous_commit=k_choice("on", "off", ok=[None]),
      payload_bytes=k_int(lo=0, hi=1_000_000), retry_interval=k_num(lo=0, hi=60), log_path=k_of(42, [], {}, 1.5),
      create_table=k_bool()),
    T("workload.Writer.wait", "mine", lambda c, s, timeout: workload.Writer(c.primary, max_rows=1).wait(timeout),
      dict(timeout=None), timeout=k_num(lo=0, hi=3600, ok=[None])),
    T("workload.Reader", "mine", lambda c, s, node, run, rate, duration, max_rows, retry_interval:
      workload.Reader(node, run, rate, duration, max_rows, retry_interval).run(),
      dict(node="N:replica1", run=None, rate=20, duration=5, max_rows=1, retry_interval=0.1),
      node=k_of(*NOT_NODE_OBJECT), run=k_text(ok=[None]), rate=k_num(lo=0.001, hi=100_000, ok=[None]),
      duration=k_num(lo=0.001, hi=600, ok=[None]), max_rows=k_int(lo=1, ok=[None]),
      retry_interval=k_num(lo=0, hi=60)),
    T("workload.audit", "mine", lambda c, s, source, node, run: workload.audit(source, node, run),
      dict(source="S:writer", node="N:primary", run=None), source=k_of(*NOT_FRAME[:-2], "/nonexistent/lab-fuzz"),
      node=k_of(*NOT_NODE_OBJECT), run=k_text(ok=[None])),
    T("workload.lost_writes", "mine", lambda c, s, source, node, run: workload.lost_writes(source, node, run),
      dict(source="S:writer", node="N:primary", run=None), source=k_of(*NOT_FRAME[:-2]),
      node=k_of(*NOT_NODE_OBJECT), run=k_text(ok=[None])),
    T("workload.outage", "mine", lambda c, s, log, after: workload.outage(log, after),
      dict(log="S:writer_log", after=None), log=k_of(*NOT_FRAME), after=k_num(ok=[None])),
    T("workload.summarize", "mine", lambda c, s, log, reconnects: workload.summarize(log, reconnects),
      dict(log="S:writer_log", reconnects=0), log=k_of(*NOT_FRAME), reconnects=k_int(lo=0)),
    T("workload.multi_host_dsn", "mine", lambda c, s, cluster, tsa, nodes, connect_timeout:
      workload.multi_host_dsn(cluster, tsa, nodes, connect_timeout),
      dict(cluster="C", tsa="read-write", nodes=None, connect_timeout=2), cluster=k_of(*NOT_CLUSTER),
      tsa=k_choice("read-write", "any"), nodes=k_of(42, "primary", [42], ["primary"], {}, b"x", []),
      connect_timeout=k_int(lo=1, hi=3600)),
    _node_only("mine", workload.node_dsn),
    _node_only("mine", workload.ensure_table),
    T("workload.read_log", "mine", lambda c, s, path: workload.read_log(path), dict(path=None),
      path=k_of(*NOT_PATH)),
    T("workload.replayed_at_least", "mine", lambda c, s, node, lsn_: workload.replayed_at_least(node, lsn_),
      dict(node="N:replica1", lsn_="0/1"), node=k_of(*NOT_NODE_OBJECT), lsn_=k_lsn()),
    T("workload.rows_on", "mine", lambda c, s, node, run: workload.rows_on(node, run),
      dict(node="N:replica1", run="fuzz"), node=k_of(*NOT_NODE_OBJECT), run=k_text()),
    # --- lab.faults -------------------------------------------------------------------------------------------------------
    _node_only("mine", faults.kill, node="replica2"),
    _node_only("mine", faults.is_paused),
    _node_only("mine", faults.resume),
    _cluster_only("mine", faults.resume_all),
    T("faults.pause", "mine", lambda c, s, node, max_seconds: faults.pause(node, max_seconds),
      dict(node="N:replica2", max_seconds=1), node=k_of(*NOT_NODE_OBJECT), max_seconds=k_num(lo=0.1, hi=3600)),
    T("faults.paused", "mine", lambda c, s, node, max_seconds: _enter(faults.paused(node, max_seconds)),
      dict(node="N:replica2", max_seconds=1), node=k_of(*NOT_NODE_OBJECT), max_seconds=k_num(lo=0.1, hi=3600)),
    T("faults.killed", "mine", lambda c, s, node, restart: _enter(faults.killed(node, restart)),
      dict(node="N:replica2", restart=True), node=k_of(*NOT_NODE_OBJECT), restart=k_bool()),
    T("faults.cut", "mine", lambda c, s, cluster, replica, hold: faults.cut(cluster, replica, hold),
      dict(cluster="C", replica="replica2", hold=False), cluster=k_of(*NOT_CLUSTER), replica=k_name() | k_of("primary"),
      hold=k_bool()),
    T("faults.heal", "mine", lambda c, s, cluster, replica: faults.heal(cluster, replica),
      dict(cluster="C", replica="replica2"), cluster=k_of(*NOT_CLUSTER), replica=k_name() | k_of("primary")),
    T("faults.is_cut", "mine", lambda c, s, cluster, replica: faults.is_cut(cluster, replica),
      dict(cluster="C", replica="replica2"), cluster=k_of(*NOT_CLUSTER), replica=k_name()),
    T("faults.partitioned", "mine", lambda c, s, replica, hold: _enter(faults.partitioned(c, replica, hold)),
      dict(replica="replica2", hold=False), replica=k_name(), hold=k_bool()),
    # --- lab.proxy -----------------------------------------------------------------------------------------------------------
    T("proxy.route", "mine", lambda c, s, cluster, replica, latency_ms, jitter_ms, timeout:
      proxy.route(cluster, replica, latency_ms, jitter_ms, timeout),
      dict(cluster="C", replica="replica2", latency_ms=0, jitter_ms=0, timeout=30), cluster=k_of(*NOT_CLUSTER),
      replica=k_name() | k_of("primary"), latency_ms=k_num(lo=0, hi=10_000), jitter_ms=k_num(lo=0, hi=10_000),
      timeout=k_num(lo=0.1, hi=600)),
    T("proxy.unroute", "mine", lambda c, s, replica, timeout, wait: proxy.unroute(c, replica, timeout, wait),
      dict(replica="replica2", timeout=30, wait=True), replica=k_name(), timeout=k_num(lo=0.1, hi=600),
      wait=k_bool()),
    T("proxy.unroute_all", "mine", lambda c, s, cluster, wait: proxy.unroute_all(cluster, wait),
      dict(cluster="C", wait=True), cluster=k_of(*NOT_CLUSTER), wait=k_bool()),
    T("proxy.link", "mine", lambda c, s, cluster, replica: proxy.link(cluster, replica),
      dict(cluster="C", replica="replica1"), cluster=k_of(*NOT_CLUSTER), replica=k_name()),
    # --- lab.slots ---------------------------------------------------------------------------------------------------------
    _cluster_only("mine", slots.slot_table),
    _cluster_only("mine", slots.inactive_slots),
    _cluster_only("mine", slots.wal_settings),
    _cluster_only("mine", slots.checkpoint),
    _cluster_only("mine", slots.slot_dashboard),
    _node_only("mine", slots.wal_dir),
    _node_only("mine", slots.slot_of, node="replica1"),
    T("slots.sample", "mine", lambda c, s, slot: slots.sample(c, slot), dict(slot=None), slot=k_text(ok=[None])),
    T("slots.create_slot", "mine", lambda c, s, name: slots.create_slot(c, name), dict(name=None),
      name=k_text() | k_of("", "Bad-Name!", "x" * 100)),
    T("slots.drop_slot", "mine", lambda c, s, name: slots.drop_slot(c, name), dict(name=None),
      name=k_text() | k_of("Bad-Name!", "x" * 100, "nope", "replica1")),
    T("slots.write_wal", "mine", lambda c, s, segments, checkpoint_each, quiet:
      slots.write_wal(c, segments, checkpoint_each, quiet), dict(segments=1, checkpoint_each=False, quiet=True),
      segments=k_int(lo=1, hi=64), checkpoint_each=k_bool(), quiet=k_bool()),
    T("slots.watch_slot", "mine", lambda c, s, slot, segments, phase, quiet, t0:
      slots.watch_slot(c, slot, segments, phase, quiet, t0),
      dict(slot=None, segments=1, phase="writing", quiet=True, t0=None), slot=k_text(ok=[None]),
      segments=k_int(lo=1, hi=64), phase=k_text(), quiet=k_bool(), t0=k_num(ok=[None])),
    T("slots.retention_while_stopped", "mine", lambda c, s, replica, segments, timeout, quiet:
      slots.retention_while_stopped(c, replica, segments, timeout, quiet),
      dict(replica="replica2", segments=1, timeout=60, quiet=True), replica=k_name() | k_of("primary"),
      segments=k_int(lo=1, hi=64), timeout=k_num(lo=1, hi=600), quiet=k_bool()),
    T("slots.start_and_read_error", "mine", lambda c, s, replica, timeout, tail:
      slots.start_and_read_error(c, replica, timeout, tail), dict(replica="replica2", timeout=0.2, tail=50),
      replica=k_name() | k_of("primary"), timeout=k_num(lo=0, hi=600), tail=k_int(lo=1, hi=100_000)),
    T("slots.lose_wal", "mine", lambda c, s, replica, segments, timeout, quiet:
      slots.lose_wal(c, replica, segments, timeout, quiet), dict(replica="replica2", segments=2, timeout=30, quiet=True),
      replica=k_name() | k_of("primary"), segments=k_int(lo=1, hi=64), timeout=k_num(lo=1, hi=600), quiet=k_bool()),
    T("slots.lose_slot", "mine", lambda c, s, replica, max_segments, quiet: slots.lose_slot(c, replica, max_segments, quiet),
      dict(replica="replica2", max_segments=2, quiet=True), replica=k_name() | k_of("primary"),
      max_segments=k_int(lo=1, hi=64), quiet=k_bool()),
    T("slots.log_lines", "mine", lambda c, s, node, text, last, tail: slots.log_lines(node, text, last, tail),
      dict(node="N:primary", text="checkpoint", last=2, tail=100), node=k_of(*NOT_NODE_OBJECT), text=k_text(),
      last=k_int(lo=1, hi=100_000), tail=k_int(lo=1, hi=100_000)),
    T("slots.plot_retention", "mine", lambda c, s, samples, title: slots.plot_retention(samples, title),
      dict(samples="S:retention", title=None), samples=k_of(*NOT_FRAME), title=k_text(ok=[None])),
    T("slots.lines_after", "mine", lambda c, s, log, marker: slots.lines_after(log, marker),
      dict(log="a\nb", marker=None), log=k_text(), marker=k_text(ok=[None])),
    T("slots.split_wal_files", "mine", lambda c, s, names, current_lsn, segment_size:
      slots.split_wal_files(names, current_lsn, segment_size),
      dict(names=["000000010000000000000002"], current_lsn="0/3000060", segment_size=16 << 20),
      names=k_of(42, "x", [42], [None], {}, b"x"), current_lsn=k_lsn(), segment_size=k_int(lo=1 << 20, hi=1 << 30)),
    # --- lab.backups -----------------------------------------------------------------------------------------------------
    _cluster_only("mine", backups.known_backups),
    _cluster_only("mine", backups.passfile_info),
    _cluster_only("mine", backups.backups_dir),
    T("backups.take_base_backup", "mine", lambda c, s, name, label, quiet: backups.take_base_backup(c, name, label, quiet),
      dict(name="fuzz", label="fuzz", quiet=True), name=k_text() | k_of("", ".x", "a/b", "x" * 100, "..", "a b"),
      label=k_text(), quiet=k_bool()),
    T("backups.backup_files", "mine", lambda c, s, path, everything: backups.backup_files(path, everything),
      dict(path="S:tmp", everything=False), path=k_of(*NOT_PATH), everything=k_bool()),
    T("backups.backup_label", "mine", lambda c, s, source: backups.backup_label(source), dict(source=None),
      source=k_of(*NOT_PATH)),
    T("backups.manifest", "mine", lambda c, s, path: backups.manifest(path), dict(path=None), path=k_of(*NOT_PATH)),
    T("backups.recovery_settings", "mine", lambda c, s, path: backups.recovery_settings(path), dict(path=None),
      path=k_of(*NOT_PATH)),
    T("backups.verify", "mine", lambda c, s, path: backups.verify(c, path), dict(path=None), path=k_of(*NOT_PATH)),
    T("backups.conninfo", "mine", lambda c, s, passfile: backups.conninfo(c, passfile), dict(passfile=None),
      passfile=k_text()),
    T("backups.parse_backup_label", "mine", lambda c, s, text: backups.parse_backup_label(text), dict(text=None),
      text=k_text()),
    T("backups.start_of", "mine", lambda c, s, label: backups.start_of(label), dict(label=None),
      label=k_of(None, 42, "x", [], b"x", {"START WAL LOCATION": 42}, {"START WAL LOCATION": None})),
    T("backups.summarise_manifest", "mine", lambda c, s, manifest: backups.summarise_manifest(manifest),
      dict(manifest=None), manifest=k_of(None, 42, "x", [], b"x", {"Files": 42}, {"Files": [1]}, {"WAL-Ranges": "x"})),
    T("backups.parse_auto_conf", "mine", lambda c, s, text: backups.parse_auto_conf(text), dict(text=None),
      text=k_text()),
    # --- lab.standby ------------------------------------------------------------------------------------------------------
    _cluster_only("mine", standby.in_recovery),
    _cluster_only("mine", standby.standby_settings),
    _cluster_only("mine", standby.lag_table),
    _cluster_only("mine", standby.replay_control),
    _cluster_only("mine", standby.delayed_replicas),
    _cluster_only("mine", standby.tidy),
    _node_only("mine", standby.conflicts, node="replica1"),
    _node_only("mine", standby.replay_pause_state, node="replica1"),
    T("standby.try_write", "mine", lambda c, s, node, sql, params: standby.try_write(node, sql, params),
      dict(node="N:replica1", sql=QUERY, params=("x",)), node=k_of(*NOT_NODE_OBJECT), sql=st.sampled_from(NOT_SQL),
      params=st.sampled_from(BAD_PARAMS)),
    T("standby.slot_xmin", "mine", lambda c, s, replica: standby.slot_xmin(c, replica), dict(replica="replica1"),
      replica=k_name()),
    T("standby.wait_replayed", "mine", lambda c, s, primary, replica, timeout, lsn_:
      standby.wait_replayed(primary, replica, timeout, lsn_),
      dict(primary="N:primary", replica="N:replica1", timeout=5, lsn_=None), primary=k_of(*NOT_NODE_OBJECT),
      replica=k_of(*NOT_NODE_OBJECT), timeout=k_num(lo=0, hi=600), lsn_=k_lsn()),
    T("standby.vacuum_verbose", "mine", lambda c, s, node, table: standby.vacuum_verbose(node, table),
      dict(node="N:primary", table="test_replication"), node=k_of(*NOT_NODE_OBJECT), table=k_text() | k_of("nope")),
    T("standby.query_conflict", "mine", lambda c, s, replica, seconds, rows, every, quiet:
      standby.query_conflict(c, replica, seconds, rows, every, quiet),
      dict(replica="replica1", seconds=0.5, rows=10, every=0.05, quiet=True), replica=k_name() | k_of("primary"),
      seconds=k_num(lo=0.5, hi=30), rows=k_int(lo=10, hi=1_000_000), every=k_num(lo=0.01, hi=1), quiet=k_bool()),
    T("standby.time_until_visible", "mine", lambda c, s, replicas, timeout, quiet:
      standby.time_until_visible(c, replicas, timeout, quiet), dict(replicas=["replica1"], timeout=2, quiet=True),
      replicas=k_of(*NOT_NAME_LIST[1:], ["primary"]), timeout=k_num(lo=0, hi=600), quiet=k_bool()),
    T("standby.recover_table", "mine", lambda c, s, source, table, lock_timeout:
      standby.recover_table(c, source, table, lock_timeout),
      dict(source="replica1", table="test_replication", lock_timeout=1), source=k_name() | k_of("primary"),
      table=k_text(), lock_timeout=k_num(lo=0.01, hi=60)),
    T("standby.replay_locks", "mine", lambda c, s, node, relation, timeout: standby.replay_locks(node, relation, timeout),
      dict(node="N:replica1", relation=None, timeout=0), node=k_of(*NOT_NODE_OBJECT), relation=k_text(ok=[None]),
      timeout=k_num(lo=0, hi=60)),
    T("standby.pause_timeline", "mine", lambda c, s, replica, before, paused, after, every, quiet:
      standby.pause_timeline(c, replica, before, paused, after, every, quiet),
      dict(replica="replica1", before=0, paused=0.2, after=0, every=0.1, quiet=True),
      replica=k_name() | k_of("primary"), before=k_num(lo=0, hi=60), paused=k_num(lo=0.001, hi=60),
      after=k_num(lo=0, hi=60), every=k_num(lo=0.001, hi=1), quiet=k_bool()),
    T("standby.lag_figure", "mine", lambda c, s, samples: standby.lag_figure(samples), dict(samples=None),
      samples=k_of(*NOT_FRAME)),
    T("standby.conflict_figure", "mine", lambda c, s, runs: standby.conflict_figure(runs), dict(runs=None),
      runs=k_of(None, 42, [], [1], "x", {}, b"x", [None])),
    T("standby.compare", "mine", lambda c, s, runs: standby.compare(runs), dict(runs=None),
      runs=k_of(None, 42, [1], "x", {}, b"x", [None])),
    T("standby.pause_replay", "mine", lambda c, s, name: standby.pause_replay(c, name), dict(name=None),
      name=k_name() | k_of("primary")),
    T("standby.resume_replay", "mine", lambda c, s, name: standby.resume_replay(c, name), dict(name=None),
      name=k_name() | k_of("primary")),
    T("standby.break_replica", "mine", lambda c, s, name: standby.break_replica(c, name), dict(name=None),
      name=k_name() | k_of("primary")),
    T("standby.parse_vacuum_verbose", "mine", lambda c, s, text: standby.parse_vacuum_verbose(text), dict(text=None),
      text=k_text() | k_of("nothing to read")),
    T("standby.LongQuery", "mine", lambda c, s, node, table, seconds: standby.LongQuery(node, table, seconds),
      dict(node="N:replica1", table="test_replication", seconds=1), node=k_of(*NOT_NODE_OBJECT), table=k_text(),
      seconds=k_num(lo=0, hi=600)),
    # --- lab.plots ----------------------------------------------------------------------------------------------------------
    T("plots.topology", "mine", lambda c, s, cluster, status: plots.topology(cluster, status),
      dict(cluster="C", status=None), cluster=k_of(*NOT_CLUSTER), status=k_of(*NOT_FRAME[1:])),
    T("plots.delays", "mine", lambda c, s, measurements, unit: plots.delays(measurements, unit),
      dict(measurements="S:delays", unit="ms"), measurements=k_of(*NOT_FRAME), unit=k_choice("s", "ms")),
    T("plots.human_bytes", "mine", lambda c, s, n: plots.human_bytes(n), dict(n=1), n=k_of(*NOT_TEXT[6:], "1", "")),
]


def _enter(cm):
    with cm:
        pass


# --- the cluster, its samples, and putting it back between examples ----------------------------------------
@pytest.fixture(scope="module")
def samples(two, tmp_path_factory) -> dict:
    """Valid values an argument can keep while another one gets a wrong value."""
    w = workload.Writer(two.primary, max_rows=3, duration=10).run()
    return {
        "S:here": two.primary.scalar("SELECT pg_current_wal_insert_lsn()::text"),
        "S:counters": wal.counters(two) if hasattr(wal, "counters") else None,
        "S:ryw": consistency.read_your_writes(two, "replica1", n=2),
        "S:writer": w,
        "S:writer_log": w.log(),
        "S:retention": slots.watch_slot(two, None, 1, quiet=True),
        "S:tmp": str(tmp_path_factory.mktemp("fuzz")),
        "S:delays": pd.DataFrame({"trial": [1, 2], "seconds": [0.001, 0.002], "replica": ["replica1"] * 2}),
    }


_LOOK_PRIMARY = """
SELECT current_setting('synchronous_standby_names') AS names,
       (SELECT array_agg(slot_name::text) FROM pg_replication_slots
         WHERE NOT active AND slot_name <> ALL(%s)) AS extra_slots"""
_LOOK_REPLICA = """
SELECT pg_is_wal_replay_paused() AS paused,
       (SELECT array_agg(name::text) FROM pg_settings
         WHERE sourcefile LIKE '%%postgresql.auto.conf' AND name IN ('work_mem', 'log_checkpoints',
               'recovery_min_apply_delay', 'hot_standby_feedback', 'max_standby_streaming_delay')) AS changed"""


def _heal(c) -> list:
    """The cluster as the chapters leave it; what had to be put back (nothing, usually)."""
    done = []
    if any(faults.is_paused(n) for n in c.nodes):
        done.append(f"resumed {faults.resume_all(c)}")
    if proxy.links():
        done.append(f"unrouted {proxy.unroute_all(c)}")
    if c.primary.name != "primary" or any(not n.is_running for n in c.nodes) \
            or sorted(n.name for n in c.nodes) != sorted(NODES):
        for n in c.nodes:
            if n.name not in NODES and n.name != c.primary.name:
                c.remove_replica(n.name)
                done.append(f"removed {n.name}")
        done += failover.tidy(c)
        if c.primary.name != "primary":
            c.switchover("primary")
            done.append("switched back to primary")
    # one query per node: what a wrong value let through (a setting, a paused replay, a slot)
    looked = c.primary.sql(_LOOK_PRIMARY, (list(NODES),), dbname="postgres").iloc[0]
    if looked["names"]:
        sync.set_synchronous(c, "")
        done.append("asynchronous again")
    for slot in looked["extra_slots"] or []:
        slots.drop_slot(c, slot)
        done.append(f"dropped slot {slot}")
    for r in c.replicas:
        got = r.sql(_LOOK_REPLICA, dbname="postgres").iloc[0]
        if got["changed"]:
            r.set(**{name: None for name in got["changed"]})
            done.append(f"{r.name}: reset {', '.join(got['changed'])}")
        if got["paused"]:
            r.execute("SELECT pg_wal_replay_resume()", dbname="postgres")
            done.append(f"{r.name}: replay resumed")
    return done


def _check(c, s, target: Target, data):
    fuzz.check(target, data, (c, s), lambda v: fuzz.resolve(c, s, v), lambda: _heal(c))


@pytest.mark.parametrize("target", TARGETS, ids=[f"{t.owner}:{t.id}" for t in TARGETS])
def test_a_wrong_argument_is_a_lab_error_never_a_crash_nor_a_hang(two, samples, target):
    assert target.wrong, target.id
    fuzz.examples(lambda data: _check(two, samples, target, data))


def test_the_wrong_values_are_wrong():
    """The strategies above never draw a value the functions must accept (a sanity check of the test)."""
    assert not _in(None, [v for v in NOT_INT if not _in(v, [None])])
    assert all(not (isinstance(v, float) and math.isfinite(v) and 0 < v < 1) for v in NOT_NUMBER)
    assert {"primary", "replica1", "replica2"}.isdisjoint(v for v in UNKNOWN_NAMES)
