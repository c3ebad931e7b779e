"""Chapter 08's cluster on real processes: three etcd members, PostgreSQL run by Patroni (each
Patroni reaching etcd through its relay), HAProxy in front.  One HA cluster for the module, in a
temp lab home of its own, wiped at the end; the tests run in file order (the last ones stop it,
start it again and wipe it).  Only the processes carrying this cluster's mark (``LAB_HA=<its
home>``) are looked at: another HA cluster may run on this machine meanwhile.

Costs: one ``lab.ha.up`` (~20 s), a switchover (seconds), one partition of the leader from etcd
(~20 s: Patroni's minimum ttl), a full stop and start (~20 s)."""
from __future__ import annotations

import base64
import os
import signal
import stat
import time
from pathlib import Path

import psutil
import psycopg2
import pytest

import lab
import lab.autofailover
import lab.ha
from lab import workload
from lab.backends.patroni import ETCD_MEMBERS, MARK, http
from lab.errors import BadArgument, LabError
from lab.system import ports
from lab.system.process import wait_gone
from labtest import helpers

pytestmark = pytest.mark.integration

_MISSING = lab.ha.available()
if _MISSING:
    pytest.skip(f"chapter 08's tools are missing here: {_MISSING}", allow_module_level=True)


# --- the module's cluster ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def parent_home(tmp_path_factory):
    """The lab home whose ``ha/`` holds the module's HA cluster; stopped and wiped at the end."""
    home = tmp_path_factory.mktemp("labha")
    lab.ha.up(replicas=2, home=home, quiet=True)
    yield home
    try:
        lab.ha.down(home=home, wipe=True)
    finally:
        # whatever a failing test left of this cluster's processes (its mark, never a name)
        for pid in _marked(lab.ha.home_of(home).path):
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass


@pytest.fixture
def cluster(parent_home) -> lab.ha.HACluster:
    """The module's HA cluster, re-attached (nothing started)."""
    return lab.ha.attach(parent_home)


# --- helpers -------------------------------------------------------------------------------------
def _marked(ha_path) -> "list[int]":
    """Live processes carrying the mark of the HA cluster in ``ha_path`` (without a backend)."""
    entry = f"{MARK}={ha_path}".encode()
    return sorted(pid for pid in helpers._pids() if entry in helpers.environ(pid) and psutil.pid_exists(pid))


def _pids(c) -> dict:
    """What runs for this cluster, by role: etcd members, relays, Patronis, postmasters, HAProxy."""
    b = c.backend
    out = {m: b.process_pid(m) for m in ETCD_MEMBERS}
    out["haproxy"] = b.process_pid("haproxy")
    for n, spec in c._state["nodes"].items():
        out[f"relay-{n}"] = b.process_pid(f"relay-{n}")
        out[f"patroni-{n}"] = b.patroni_pid(spec)
        out[f"postgres-{n}"] = b.pid(spec)
    return out


def _in_recovery(dsn: str) -> "tuple[bool, int]":
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_is_in_recovery(), inet_server_port()")
            return cur.fetchone()
    finally:
        conn.close()


def _wait_healthy(c, timeout: float = 90) -> "dict[str, tuple]":
    """Until Patroni reports one leader running and every other member streaming; name -> (role, state)."""
    deadline = time.monotonic() + timeout
    while True:
        m = c.members()
        view = {r.member: (r.role, r.state) for r in m.itertuples()}
        roles = [r for r, _ in view.values()]
        if roles.count("leader") == 1 and all(
                (r == "leader" and s == "running") or (r in ("replica", "sync_standby") and s == "streaming")
                for r, s in view.values()):
            return view
        if time.monotonic() > deadline:
            pytest.fail(f"the HA cluster is not healthy after {timeout:g} s: {view}")
        time.sleep(0.2)


def _postmasters_in(root: Path) -> "dict[int, str]":
    return {pid: d for pid, d in helpers.postmasters().items() if Path(d).is_relative_to(root)}


# --- 8. a tool missing (no cluster needed: first, so nothing of the module's is in the way) ------------
def test_missing_etcd_says_what_to_install_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_ETCD", "/nonexistent")
    home = tmp_path / "lab"
    h = lab.ha.home_of(home)
    with pytest.raises(LabError) as e:
        lab.ha.up(home=home, quiet=True)
    msg = str(e.value)
    assert "\n" not in msg, msg
    assert "etcd" in msg and "install" in msg and "LAB_ETCD" in msg, msg
    assert not h.state_file.exists()
    assert ports.claims_of(h.owner) == []
    assert _marked(h.path) == []
    for reachable in (True, False):  # the data root either way the lab would have chosen it
        assert not h.default_data_root(lambda p, r=reachable: r).exists()
    assert not (h.path / "pids.json").exists()


# --- 1. up ---------------------------------------------------------------------------------------------
def test_three_etcd_members_healthy_and_agree_on_a_raft_leader(cluster):
    df = cluster.etcd()
    assert sorted(df["member"]) == sorted(ETCD_MEMBERS)
    assert df["running"].all() and df["answers"].all(), df.to_string()
    assert df["is_leader"].sum() == 1, df.to_string()
    leader = df[df["is_leader"]]["member"].iloc[0]
    assert (df["leader"] == leader).all(), df.to_string()
    assert df["raft_term"].nunique() == 1, df.to_string()
    assert cluster.etcd_leader() == leader


def test_one_patroni_leader_and_streaming_replicas(cluster):
    view = _wait_healthy(cluster)
    assert sorted(view) == ["pg1", "pg2", "pg3"]
    m = cluster.members().set_index("member")
    leader = cluster.leader
    assert m.loc[leader, "role"] == "leader" and m.loc[leader, "state"] == "running"
    assert cluster.primary.name == leader
    assert sorted(n.name for n in cluster.replicas) == sorted(set(view) - {leader})
    assert m["patroni_pid"].notna().all() and m["postgres_pid"].notna().all(), m.to_string()
    assert m["timeline"].nunique() == 1
    # the leader key in etcd says the same
    assert cluster.leader_key()["holder"] == leader


def test_haproxy_read_write_port_reaches_the_leader_and_read_only_a_replica(cluster):
    _wait_healthy(cluster)
    ports_of = {n: s["port"] for n, s in cluster._state["nodes"].items()}
    leader = cluster.leader
    # HAProxy marks a server up after one good check (rise 1, inter 500 ms): wait for it, not a timing
    deadline = time.monotonic() + 30
    while True:
        up = {(r.port, r.node) for r in cluster.haproxy().itertuples() if r.status == "UP"}
        if ("primary", leader) in up and sum(p == "replicas" for p, _ in up) == 2:
            break
        assert time.monotonic() < deadline, cluster.haproxy().to_string()
        time.sleep(0.2)
    in_recovery, port = _in_recovery(cluster.rw_dsn)
    assert in_recovery is False and port == ports_of[leader]
    seen = set()
    for _ in range(4):  # round robin over the two replicas
        in_recovery, port = _in_recovery(cluster.ro_dsn)
        assert in_recovery is True and port != ports_of[leader]
        seen.add(port)
    assert seen == {p for n, p in ports_of.items() if n != leader}


def test_every_listening_socket_is_on_localhost(cluster):
    b = cluster.backend
    pids = b.marked()
    assert pids, "no process carries the cluster's mark"
    listening = {}
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections("inet")
        except psutil.NoSuchProcess:  # a backend that just ended
            continue
        for cn in conns:
            if cn.status == psutil.CONN_LISTEN:
                listening[(cn.laddr.ip, cn.laddr.port)] = pid
    assert listening
    wide = {a: pid for a, pid in listening.items() if a[0] != "127.0.0.1"}
    assert not wide, f"listening beyond 127.0.0.1: {wide}"
    # and the marked processes are the ones holding every port of the layout (etcd, relays,
    # Patroni's REST APIs, PostgreSQL, HAProxy): the mark finds them all
    assert set(b.all_ports()) <= {p for _, p in listening}


def test_secrets_are_private(cluster):
    st = cluster._state
    secrets = {"password": st["password"], "replication_password": st["replication_password"],
               "rest_password": st["ha"]["rest_password"]}
    assert all(len(s) >= 16 for s in secrets.values())
    assert len(set(secrets.values())) == 3
    for path in [cluster.home.state_file, *(s["config"] for s in st["nodes"].values()), st["ha"]["ctl_config"]]:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    found, readable = [], []
    for root in (cluster.home.path, Path(st["data_root"])):
        for dirpath, _, files in os.walk(root):
            for f in files:
                p = Path(dirpath) / f
                try:
                    if p.is_symlink() or not p.is_file() or p.stat().st_size > 64 * 2 ** 20:
                        continue
                    data = p.read_bytes()
                except OSError:
                    continue
                which = [k for k, s in secrets.items() if s.encode() in data]
                if which:
                    found.append(p)
                    if stat.S_IMODE(p.stat().st_mode) & 0o077:
                        readable.append(f"{p} ({oct(stat.S_IMODE(p.stat().st_mode))}: {', '.join(which)})")
    assert cluster.home.state_file in found  # the scan saw the secrets where they must be
    assert not readable, "secrets in files others may read: " + "; ".join(readable)
    # nor on a command line (anyone may read /proc/<pid>/cmdline)
    for pid in cluster.backend.marked():
        cmd = helpers.command(pid)
        assert not any(s in cmd for s in secrets.values()), f"a secret on the command line of {pid}"


def test_etcd_refuses_writes_without_credentials(cluster):
    """Patroni's REST API refuses a change of the dynamic configuration without the generated
    password (401); the same configuration lives in etcd (``/service/lab/config``: ttl, and
    ``postgresql.parameters`` Patroni applies to every server), so etcd must refuse a client
    without credentials too, or any user of this machine (127.0.0.1 is theirs as well) rewrites
    it, or deletes the leader key, around the password."""
    b = cluster.backend
    code, _ = http("PATCH", b.rest_url(cluster._state["nodes"][cluster.leader], "config"), {"ttl": 30})
    assert code == 401  # the REST API: a password
    key = base64.b64encode(f"/service/lab/probe-{os.getpid()}".encode()).decode()
    code, body = http("POST", b.etcd_url(ETCD_MEMBERS[0], "v3/kv/put"),
                      {"key": key, "value": base64.b64encode(b"written without credentials").decode()})
    if code == 200:
        http("POST", b.etcd_url(ETCD_MEMBERS[0], "v3/kv/deleterange"), {"key": key})
    assert code != 200, f"etcd took a write from a client without credentials: {code} {body}"


def test_pg_hba_asks_scram_sha_256_everywhere(cluster):
    for node in cluster.nodes:
        rules = node.sql("SELECT type, database, user_name, address, auth_method, error FROM pg_hba_file_rules",
                         dbname="postgres")
        assert len(rules), node.name
        assert rules["error"].isna().all(), rules.to_string()
        assert set(rules["auth_method"]) == {"scram-sha-256"}, rules.to_string()
        assert set(rules["address"].dropna()) <= {"127.0.0.1"}, rules.to_string()
    n = cluster.primary
    assert n.scalar("SHOW password_encryption", dbname="postgres") == "scram-sha-256"
    assert n.scalar("SELECT count(*) FROM pg_authid WHERE rolcanlogin AND rolpassword IS NOT NULL "
                    "AND rolpassword NOT LIKE 'SCRAM-SHA-256$%%'", dbname="postgres") == 0
    assert n.scalar("SELECT count(*) FROM pg_authid WHERE rolname IN (%s, %s) AND rolpassword LIKE "
                    "'SCRAM-SHA-256$%%'", (cluster._state["superuser"], cluster._state["replication_user"]),
                    dbname="postgres") == 2


# --- 2. re-attach ----------------------------------------------------------------------------------------
def test_attach_and_up_on_a_running_cluster_start_nothing(cluster, parent_home, capsys):
    before = _pids(cluster)
    assert all(before.values()), before
    assert set(ports.claims_of(cluster.home.owner)) == set(cluster.backend.all_ports())
    again = lab.ha.attach(parent_home)
    assert _pids(again) == before
    capsys.readouterr()
    up = lab.ha.up(home=parent_home, quiet=False)
    out = capsys.readouterr().out
    assert "started:" not in out, out
    assert "HA cluster ready" in out, out
    assert _pids(up) == before
    assert up.leader == cluster.leader


def test_up_after_one_etcd_member_is_killed_starts_only_that_member(cluster, parent_home, capsys):
    _wait_healthy(cluster)
    before = _pids(cluster)
    victim = next(m for m in ETCD_MEMBERS if m != cluster.etcd_leader())  # a follower: no Raft election
    assert cluster.stop_etcd(victim, kill=True) == before[victim]
    assert cluster.backend.process_pid(victim) is None
    assert not psutil.pid_exists(before[victim]) or psutil.Process(before[victim]).status() == psutil.STATUS_ZOMBIE
    capsys.readouterr()
    c = lab.ha.up(home=parent_home, quiet=False)
    out = capsys.readouterr().out
    assert f"started: {victim}\n" in out, out
    after = _pids(c)
    assert after[victim] and after[victim] != before[victim]
    assert {k: v for k, v in after.items() if k != victim} == {k: v for k, v in before.items() if k != victim}
    df = c.etcd()
    assert df["answers"].all() and df["is_leader"].sum() == 1, df.to_string()


def test_up_returns_only_when_haproxy_routes_writes_to_the_leader_alone(cluster, parent_home):
    """HAProxy starts every server UP and marks one DOWN after two failed checks: up() must not
    hand back the cluster in that window, where a write through the read-write port can reach a
    replica."""
    _wait_healthy(cluster)
    before = _pids(cluster)
    os.kill(before["haproxy"], signal.SIGKILL)
    assert wait_gone(before["haproxy"], 10)
    c = lab.ha.up(home=parent_home, quiet=True)
    rows = c.haproxy()  # at once, no waiting here
    rw_up = rows[(rows["port"] == "primary") & rows["status"].str.startswith("UP")]["node"].tolist()
    assert rw_up == [c.leader], rows.to_string()
    in_recovery, port = _in_recovery(c.rw_dsn)
    assert in_recovery is False and port == c._state["nodes"][c.leader]["port"]
    after = _pids(c)
    assert after["haproxy"] != before["haproxy"]
    assert {k: v for k, v in after.items() if k != "haproxy"} == {k: v for k, v in before.items() if k != "haproxy"}


def test_up_heals_a_cut_link_and_starts_nothing(cluster, parent_home, capsys):
    _wait_healthy(cluster)
    replica = next(n for n in cluster._state["nodes"] if n != cluster.leader)  # a replica: no failover
    before = _pids(cluster)
    cluster.cut_from_etcd(replica)
    assert cluster.links().set_index("node").loc[replica, "cut"]
    capsys.readouterr()
    c = lab.ha.up(home=parent_home, quiet=False)
    out = capsys.readouterr().out
    assert f"{replica}'s link to etcd healed" in out, out
    assert not c.links()["cut"].any()
    assert _pids(c) == before
    _wait_healthy(c)


# --- 4. patronictl ---------------------------------------------------------------------------------------------
def test_patronictl_list_names_every_member(cluster):
    out = str(cluster.patronictl("list"))
    for n in cluster._state["nodes"]:
        assert n in out, out
    assert "Leader" in out and "Replica" in out, out


def test_patronictl_with_bad_arguments_is_one_line(cluster):
    with pytest.raises(LabError) as e:
        cluster.patronictl("no-such-command")
    assert "\n" not in str(e.value) and "patronictl no-such-command failed" in str(e.value)
    with pytest.raises(LabError) as e:
        cluster.patronictl("switchover", "--candidate", "nope", "--force")
    assert "\n" not in str(e.value)
    for bad in ((), (1,), ("",), ("list\0",)):
        with pytest.raises(BadArgument):
            cluster.patronictl(*bad)


# --- 3. switchover -------------------------------------------------------------------------------------------
def test_switchover_to_a_named_replica_loses_no_acknowledged_write(cluster):
    _wait_healthy(cluster)
    old = cluster.leader
    target = sorted(n for n in cluster._state["nodes"] if n != old)[-1]
    w = workload.Writer(cluster.rw_dsn, rate=50, duration=120, cluster=cluster, retry_interval=0.05)
    w.start()
    try:
        deadline = time.monotonic() + 30
        while sum(x.outcome == "acknowledged" for x in w.writes) < 20:
            assert w.running and time.monotonic() < deadline, f"the writer wrote nothing: {w.error}"
            time.sleep(0.05)
        new = cluster.switchover(target)
        assert new.name == target
        # the writer reaches the new leader through HAProxy by itself
        deadline = time.monotonic() + 60
        while sum(x.outcome == "acknowledged" and x.node == target for x in w.writes) < 20:
            assert w.running and time.monotonic() < deadline, \
                f"no writes on {target} through HAProxy: {w.log().tail(5).to_string()}"
            time.sleep(0.05)
    finally:
        w.stop()
    assert cluster.leader == target and cluster.primary.name == target
    log = w.log()
    ack = log[log["outcome"] == "acknowledged"]
    assert {old, target} <= set(ack["node"]), set(ack["node"])
    lost = workload.lost_writes(w, cluster.node(target))
    assert lost.empty, lost.to_string()
    assert _in_recovery(cluster.rw_dsn)[1] == cluster._state["nodes"][target]["port"]
    # the old leader follows the new one
    view = _wait_healthy(cluster)
    assert view[old] == ("replica", "streaming")


# --- 6. bad arguments ------------------------------------------------------------------------------------------
def test_bad_arguments_are_refused_in_one_line(cluster, tmp_path):
    with pytest.raises(BadArgument):
        cluster.set_config(ttl=5)
    cfg = cluster.config()
    assert cfg["ttl"] == 20
    with pytest.raises(BadArgument) as e:
        cluster.set_config(loop_wait=10, retry_timeout=10)
    assert "loop_wait" in str(e.value)
    with pytest.raises(BadArgument):
        cluster.set_config(nope=1)
    assert {k: cluster.config()[k] for k in ("ttl", "loop_wait", "retry_timeout")} == \
        {k: cfg[k] for k in ("ttl", "loop_wait", "retry_timeout")}
    with pytest.raises(BadArgument):
        lab.autofailover.crash(cluster, "meteor")
    for other in (None, "pg1", {"nodes": {}}, cluster.node("pg1")):
        with pytest.raises(BadArgument):
            lab.autofailover.crash(other)
    fresh = tmp_path / "never"
    for replicas in (0, 9, "2", True, 2.0):
        with pytest.raises(BadArgument):
            lab.ha.up(replicas=replicas, home=fresh, quiet=True)
    assert not fresh.exists()
    with pytest.raises(LabError) as e:
        cluster.node("nope")
    assert "\n" not in str(e.value)
    with pytest.raises(LabError):
        lab.ha.attach(tmp_path / "nothing-here")
    for bad in (cluster.add_replica, lambda: cluster.remove_replica("pg2")):
        with pytest.raises(LabError):
            bad()


# --- 5. partition ------------------------------------------------------------------------------------------------
def test_partition_of_the_leader_from_etcd_elects_another_and_no_second_primary(cluster):
    r = lab.autofailover.crash(cluster, "partition")
    s = r.summary().iloc[0]
    assert r.new is not None and r.new != r.old, r.events.to_string()
    assert s["acked_by_old_after_expiry"] == 0, r.events.to_string()
    assert s["two_primaries_s"] == 0, r.events.to_string()
    assert s["lost_acknowledged"] == 0, r.lost.to_string()
    assert s["rto_s"] is not None and s["rto_s"] > 0
    events = set(r.events["event"])
    assert {"fault", "new leader elected", "old primary read-only"} <= events, r.events.to_string()
    # put back: every link healed, every member running or streaming
    view = _wait_healthy(cluster)
    assert view[r.old][0] == "replica"
    assert not cluster.links()["cut"].any()
    assert cluster.config()["ttl"] == 20


# --- 7. nothing left behind ---------------------------------------------------------------------------------------
def test_down_leaves_nothing_and_up_brings_the_data_back(cluster, parent_home):
    _wait_healthy(cluster)
    token = f"ha-{time.time_ns()}"
    cluster.primary.execute("CREATE TABLE IF NOT EXISTS ha_probe (t text)")
    cluster.primary.execute("INSERT INTO ha_probe VALUES (%s)", (token,))
    cluster.wait_replayed(timeout=30)
    b = cluster.backend
    data_root = Path(cluster._state["data_root"])
    assert _postmasters_in(data_root)
    lab.ha.down(home=parent_home, wipe=False)
    assert b.marked() == []
    assert _postmasters_in(data_root) == {}
    assert ports.claims_of(cluster.home.owner) == []
    assert cluster.home.state_file.exists() and all(Path(s["pgdata"]).is_dir()
                                                    for s in cluster._state["nodes"].values())
    c = lab.ha.up(home=parent_home, quiet=True)
    assert all(_pids(c).values()), _pids(c)
    assert c.primary.scalar("SELECT count(*) FROM ha_probe WHERE t = %s", (token,)) == 1
    conn = psycopg2.connect(c.rw_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM ha_probe WHERE t = %s", (token,))
            assert cur.fetchone()[0] == 1
    finally:
        conn.close()


def test_a_restarted_cluster_claims_its_ports_again(cluster, tmp_path):
    """lab.ha.down released every port claim of the cluster; the lab.ha.up that started it again
    must claim them back, or another lab home may be handed a port this cluster listens on (the
    moment one of its processes restarts: a member Patroni restarts, an etcd member, a relay)."""
    assert all(_pids(cluster).values())  # running again (the test above)
    held = set(ports.claims_of(cluster.home.owner))
    # what the claims are for: while one of its processes is down (here an etcd member, stopped
    # cleanly and started again), no other lab home may be given its port
    m = next(x for x in ETCD_MEMBERS if x != cluster.etcd_leader())
    port = cluster.backend.ha["etcd"][m]["client"]
    other = str(tmp_path / "another-lab-home")
    cluster.stop_etcd(m, kill=False)
    try:
        taken = ports.claim(port, other)
        if taken:
            ports.release([port], other)
    finally:
        cluster.start_etcd(m)
    assert not taken, f"another lab home was given port {port}, {m}'s client port, while {m} was stopped"
    assert held == set(cluster.backend.all_ports()), \
        f"{len(held)} of the cluster's {len(cluster.backend.all_ports())} ports claimed after a restart"


def test_package_level_down_stops_the_ha_cluster_under_the_home(cluster, parent_home):
    b = cluster.backend
    assert b.marked()
    lab.down(home=parent_home)
    assert b.marked() == []
    assert _postmasters_in(Path(cluster._state["data_root"])) == {}
    assert ports.claims_of(cluster.home.owner) == []
    assert ports.claims_of(str(Path(parent_home).absolute())) == []
    assert cluster.home.state_file.exists()


def test_down_wipe_removes_the_data_and_the_state(cluster, parent_home):
    data_root = Path(cluster._state["data_root"])
    assert data_root.exists()
    lab.ha.down(home=parent_home, wipe=True)
    assert not data_root.exists()
    assert not cluster.home.state_file.exists()
    assert _marked(cluster.home.path) == []
    assert ports.claims_of(cluster.home.owner) == []
    with pytest.raises(LabError):
        lab.ha.attach(parent_home)
    lab.ha.down(home=parent_home, wipe=True)  # again: nothing to do, no error
