"""The core (lab/cluster.py, lab/node.py) on bad arguments, half-way failures and a cluster left
in another layout: the lab's records follow what the servers are, every wrong argument is one
BadArgument line, and lab.up(replicas=N) puts back the layout a chapter expects."""
from __future__ import annotations

import pytest

import lab
from lab.errors import BadArgument, LabError, NotRunning

from labtest.helpers import insert, rows_with

integration = pytest.mark.integration


def roles_match_servers(c) -> dict:
    """Each running node's recorded role against pg_is_in_recovery(); the recorded roles."""
    c = lab.attach(c.home.path)  # what the state file says, as a restarted kernel reads it
    seen = {}
    for n in c.nodes:
        if n.is_running:
            in_recovery = n.scalar("SELECT pg_is_in_recovery()", dbname="postgres")
            assert (n.role == "replica") == in_recovery, f"{n.name}: recorded {n.role}, in recovery {in_recovery}"
        seen[n.name] = n.role.value
    return seen


def streaming_from_primary(c) -> set:
    return set(c.primary.sql("SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'",
                             dbname="postgres")["application_name"])


def one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert text and "\n" not in text, text
    return text


# --- arguments refused before anything runs (no server) ----------------------------------------
@pytest.mark.parametrize("call, match", [
    (lambda h: lab.up(replicas=-1, home=h), "replicas must be a whole number"),
    (lambda h: lab.up(home=5), "home is the lab home's directory"),
    (lambda h: lab.up(home="", quiet=True), "home is the lab home's directory"),
    (lambda h: lab.up(home=h, quiet="no"), "quiet is True or False"),
    (lambda h: lab.up(home=h, backend="podman"), "backend is one of 'local', 'compose'"),
    (lambda h: lab.up(home=h, backend=3), "backend is one of"),
    (lambda h: lab.attach(home=3.5), "home is the lab home's directory"),
    (lambda h: lab.down(wipe="yes", home=h), "wipe is True or False"),
    (lambda h: lab.down(home=["x"]), "home is the lab home's directory"),
])
def test_module_functions_refuse_bad_arguments_before_doing_anything(tmp_path, call, match):
    home = tmp_path / "lab"
    with pytest.raises(BadArgument, match=match) as e:
        call(home)
    one_line(e)
    assert not (home / "state.json").exists()


# --- the shared cluster: arguments of Node and Cluster -------------------------------------------
BAD_NODE_CALLS = [
    # query and parameters
    (lambda n: n.sql(123), "the query is SQL as a string"),
    (lambda n: n.sql(None), "the query is SQL as a string"),
    (lambda n: n.sql("   "), "empty query"),
    (lambda n: n.sql("SELECT 1\x00"), "NUL"),
    (lambda n: n.sql("SELECT %s"), None),  # no params: psycopg2 leaves %s alone; PostgreSQL refuses it
    (lambda n: n.sql("SELECT %s, %s", (1,)), "fewer values than %s placeholders"),
    (lambda n: n.sql("SELECT %s", (1, 2)), "placeholders do not match params"),
    (lambda n: n.sql("SELECT %(a)s", {"b": 1}), r"no value for the placeholder %\(a\)s"),
    (lambda n: n.sql("SELECT '50%'", (1,)), "placeholders do not match params"),
    (lambda n: n.sql("SELECT %s", "x"), "params is a tuple or list"),
    (lambda n: n.sql("SELECT %s", 5), "params is a tuple or list"),
    (lambda n: n.sql("SELECT %s", ("a\x00b",)), "a value in params holds a NUL character"),
    (lambda n: n.execute(b"SELECT 1"), "the query is SQL as a string"),
    (lambda n: n.execute("SELECT %s", [1, 2]), "placeholders do not match params"),
    (lambda n: n.scalar(["SELECT 1"]), "the query is SQL as a string"),
    (lambda n: n.scalar("SELECT %(x)s", (1,)), "placeholders do not match params"),
    (lambda n: n.scalar("SELECT 1", dbname=5), "dbname is a non-empty string"),
    (lambda n: n.sql("SELECT 1", dbname=""), "dbname is a non-empty string"),
    # connections, settings, lifecycle
    (lambda n: n.connect(dbname=7), "dbname is a non-empty string"),
    (lambda n: n.connect(autocommit="yes"), "autocommit is True or False"),
    (lambda n: n.connect(connect_timeout=-1), "connect_timeout"),
    (lambda n: n.connect(host="elsewhere"), "connect\\(\\) sets host itself"),
    (lambda n: n.connect(no_such_libpq_option=1), "cannot connect with"),
    (lambda n: n.settings(), "name the settings"),
    (lambda n: n.settings(5), "name the settings"),
    (lambda n: n.set(), "name at least one setting"),
    (lambda n: n.set(work_mem=["8MB"]), "work_mem is set to a string, a number"),
    (lambda n: n.set(work_mem=float("nan")), "work_mem is set to a string, a number"),
    (lambda n: n.stop(timeout=-1), "timeout is a number"),
    (lambda n: n.stop(timeout=float("nan")), "timeout is a number"),
    (lambda n: n.stop(timeout=True), "timeout is a number"),
    (lambda n: n.stop(timeout="5"), "timeout is a number"),
    (lambda n: n.pause(max_seconds=0), "max_seconds"),
    (lambda n: n.pause(max_seconds=float("nan")), "max_seconds"),
    (lambda n: n.pause(max_seconds=False), "max_seconds"),
    (lambda n: n.tool(), "tool\\(\\) takes the command"),
    (lambda n: n.tool("pg_controldata", None), "tool\\(\\) takes the command"),
    (lambda n: n.tool("true", check="no"), "check is True or False"),
    (lambda n: n.tool("true", timeout=0), "timeout is a number"),
    (lambda n: n.tool("true", env={"A": 1}), "env is a dict of environment variables"),
    (lambda n: n.tool("true", env="A=1"), "env is a dict of environment variables"),
    (lambda n: n.logs(-5), "tail"),
    (lambda n: n.logs(2.5), "tail"),
    (lambda n: n.logs("5"), "tail"),
    (lambda n: n.logs(True), "tail"),
]


@integration
@pytest.mark.parametrize("call, match", BAD_NODE_CALLS)
def test_node_methods_refuse_bad_arguments_in_one_line(cluster, call, match):
    with pytest.raises(LabError, match=match) as e:
        call(cluster.primary)
    one_line(e)
    if match is not None:
        assert isinstance(e.value, BadArgument)
    assert cluster.primary.is_running and cluster.node("replica1").is_running  # nothing was stopped


BAD_CLUSTER_CALLS = [
    (lambda c: c.node(5), "name is a non-empty string"),
    (lambda c: c.node(None), "name is a non-empty string"),
    (lambda c: c.node(""), "name is a non-empty string"),
    (lambda c: c.wait_replayed(lsn="not an lsn"), "lsn is an LSN like"),
    (lambda c: c.wait_replayed(lsn="0/ZZ"), "lsn is an LSN like"),
    (lambda c: c.wait_replayed(lsn=True), "lsn is an LSN like"),
    (lambda c: c.wait_replayed(lsn=-1), "lsn is an LSN like"),
    (lambda c: c.wait_replayed(lsn=1 << 64), "lsn is an LSN like"),
    (lambda c: c.wait_replayed(lsn=["0/1"]), "lsn is an LSN like"),
    (lambda c: c.wait_replayed(timeout=-1), "timeout is a number"),
    (lambda c: c.wait_replayed(timeout=float("nan")), "timeout is a number"),
    (lambda c: c.wait_replayed(timeout=True), "timeout is a number"),
    (lambda c: c.wait_streaming(timeout="10"), "timeout is a number"),
    (lambda c: c.wait_streaming(names="replica1"), "names is a list of node names"),
    (lambda c: c.wait_streaming(names=[3]), "name is a non-empty string"),
    (lambda c: c.add_replica(name=5), "name is a non-empty string"),
    (lambda c: c.add_replica(name="Bad Name"), "bad replica name"),
    (lambda c: c.add_replica(quiet=None), "quiet is True or False"),
    (lambda c: c.add_replica("replica9", from_backup=42), "from_backup is the directory"),
    (lambda c: c.add_replica("replica1", from_backup="a\x00b"), "from_backup is the directory"),
    (lambda c: c.add_replica("replica9", from_backup=""), "from_backup is the directory"),
    (lambda c: c.remove_replica(3), "name is a non-empty string"),
    (lambda c: c.switchover(None), "name is a non-empty string"),
    (lambda c: c.switchover("replica1", timeout=-3), "timeout is a number"),
    (lambda c: c.switchover("replica1", quiet="no"), "quiet is True or False"),
    (lambda c: c.rejoin(["primary"]), "name is a non-empty string"),
    (lambda c: c.rejoin("primary", quiet=0), "quiet is True or False"),
    (lambda c: c.start(quiet="no"), "quiet is True or False"),
    (lambda c: c.down(wipe="yes"), "wipe is True or False"),
    (lambda c: c.down(timeout=float("inf")), "timeout is a number"),
]


@integration
@pytest.mark.parametrize("call, match", BAD_CLUSTER_CALLS)
def test_cluster_methods_refuse_bad_arguments_in_one_line(cluster, call, match):
    with pytest.raises(BadArgument, match=match) as e:
        call(cluster)
    one_line(e)
    assert [n.name for n in cluster.nodes] == ["primary", "replica1"]
    assert cluster.primary.is_running and cluster.node("replica1").is_running


@integration
def test_good_arguments_still_work(cluster):
    p = cluster.primary
    assert p.scalar("SELECT '50%'") == "50%"  # no params: a % is just a character
    assert p.scalar("SELECT %s || '%%'", ("50",)) == "50%"
    assert p.scalar("SELECT %(a)s::int + %(b)s::int", {"a": 1, "b": 2}) == 3
    assert p.sql("SELECT %s AS x", [7])["x"].tolist() == [7]
    lsn = cluster.wait_replayed(timeout=10)
    assert cluster.wait_replayed(lab.parse_lsn(lsn), timeout=10) == lsn  # an int LSN is accepted too
    assert p.logs(0) == ""
    assert 1 <= len(p.logs(3).splitlines()) <= 3
    conn = p.connect(dbname="postgres", connect_timeout=3, options="-c work_mem=7MB")
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW work_mem")
            assert cur.fetchone()[0] == "7MB"
    finally:
        conn.close()


@integration
def test_kill_of_a_stopped_node_says_to_start_it(cluster):
    replica = cluster.node("replica1")
    replica.stop()
    try:
        with pytest.raises(NotRunning, match=r"replica1 is stopped already: nothing to kill; start it with "
                                             r"cluster.node\('replica1'\).start\(\)") as e:
            replica.kill()
        one_line(e)
        with pytest.raises(NotRunning, match="replica1 is stopped already"):
            lab.faults.kill(replica)  # the same behaviour through lab.faults
    finally:
        replica.start()


@integration
def test_add_replica_with_an_existing_name_gives_that_replica_back(cluster, capsys):
    before = [n.name for n in cluster.nodes]
    r = cluster.add_replica("replica1")
    assert r.name == "replica1" and r.is_running
    out = capsys.readouterr().out.strip()
    assert out == "replica1: exists already, a replica of primary (nothing added)"
    assert [n.name for n in cluster.nodes] == before
    cluster.node("replica1").stop()
    r = cluster.add_replica("replica1", quiet=False)
    assert r.is_running
    assert "replica1: exists already, a replica of primary (nothing added, started)" in capsys.readouterr().out
    cluster.wait_streaming(names=["replica1"])
    with pytest.raises(LabError, match="primary is this cluster's primary: give the new replica another name") as e:
        cluster.add_replica("primary")
    one_line(e)
    assert [n.name for n in cluster.nodes] == before


# --- half-way failures: the lab's records follow the servers ------------------------------------
@integration
def test_a_promotion_that_raises_after_the_signal_still_records_the_new_primary(tmp_path, monkeypatch):
    """What os.chown raised when the server consumed the promote file first (FileNotFoundError),
    simulated after a real promotion: the server is promoted, so the lab records it and finishes."""
    home = tmp_path / "lab"
    c = lab.up(replicas=2, home=home, quiet=True)
    try:
        insert(c.primary, "before the promotion")
        c.wait_replayed()
        c.primary.stop()
        real = c.backend.promote

        def promote_then_fail(spec, timeout=60):
            real(spec, timeout)
            raise FileNotFoundError(2, "No such file or directory", spec["pgdata"] + "/promote")

        monkeypatch.setattr(c.backend, "promote", promote_then_fail)
        with pytest.raises(FileNotFoundError):
            c.node("replica1").promote()
        monkeypatch.undo()
        roles = roles_match_servers(c)
        assert roles == {"replica1": "primary", "primary": "former primary", "replica2": "replica"}
        assert c.primary.name == "replica1"
        leftovers = c.primary.tool("ls", "-A", c.primary.pgdata).stdout.split()
        assert not [f for f in leftovers if f.startswith(".promote") or f == "promote"]  # renamed in, consumed
        # the rest of the promotion was finished: no standby settings, replica2 follows
        assert c.primary.scalar("SHOW primary_conninfo", dbname="postgres") == ""
        c.wait_streaming(names=["replica2"], timeout=20)
        assert insert(c.primary, "after the promotion") == 1
        c.wait_replayed(timeout=20)
        assert rows_with(c.node("replica2"), "after the promotion") == 1
    finally:
        lab.down(wipe=True, home=home)


@integration
def test_failover_then_up_restores_the_chapters_layout(tmp_path, monkeypatch, capsys):
    """A promotion whose retargeting raises (replica2 is left pointing at the stopped old primary),
    then a restarted kernel's lab.up(replicas=2): 3 nodes, `primary` the primary again, both others
    streaming from it; a second up() is quiet."""
    home = tmp_path / "lab"
    c = lab.up(replicas=2, home=home, quiet=True)
    try:
        insert(c.primary, "timeline 1")
        c.wait_replayed()
        c.primary.stop()

        def follow_fails(spec, primary_spec):
            raise LabError("the network is down")

        monkeypatch.setattr(c.backend, "follow", follow_fails)
        with pytest.raises(LabError, match="the network is down"):
            c.node("replica1").promote()
        monkeypatch.undo()
        assert roles_match_servers(c)["replica1"] == "primary"
        insert(c.primary, "written on replica1")
        capsys.readouterr()

        again = lab.up(replicas=2, home=home)  # a fresh Cluster, as after a kernel restart
        out = capsys.readouterr().out
        assert sorted(n.name for n in again.nodes) == ["primary", "replica1", "replica2"]
        assert again.primary.name == "primary"
        assert roles_match_servers(again) == {"primary": "primary", "replica1": "replica", "replica2": "replica"}
        assert streaming_from_primary(again) == {"replica1", "replica2"}
        assert "primary: the primary again (a switchover from replica1" in out
        assert "replica2: pointed at 127.0.0.1:" in out
        assert "primary: a former primary, rewound (pg_rewind)" in out
        # chapter 01's "a replica is read-only" holds again, and nothing written was lost
        refused = lab.attempt(again.node("replica1").execute, "INSERT INTO test_replication (mensaje) VALUES ('x')")
        assert refused.startswith("ReadOnlyError: replica1")
        assert rows_with(again.primary, "written on replica1") == 1
        assert rows_with(again.primary, "timeline 1") == 1

        lab.up(replicas=2, home=home)
        out = capsys.readouterr().out.strip().splitlines()
        assert len(out) == 1 and out[0].startswith("re-attached to the running cluster"), out
    finally:
        lab.down(wipe=True, home=home)


@integration
def test_up_puts_back_what_a_chapter_left(tmp_path, capsys):
    """A synchronous standby stopped (every COMMIT would wait), a paused replica routed at a proxy
    that is gone: up() resets, starts, resumes and retargets, one line each."""
    home = tmp_path / "lab"
    c = lab.up(replicas=2, home=home, quiet=True)
    try:
        c.primary.set(synchronous_standby_names="replica1")
        c.node("replica1").stop()
        r2 = c.node("replica2")
        c.backend.retarget(r2.spec, "127.0.0.1", 1)  # what a proxy of a dead kernel leaves: a closed port
        r2.pause(max_seconds=120)
        capsys.readouterr()

        again = lab.up(replicas=2, home=home)
        out = capsys.readouterr().out
        assert "primary: synchronous_standby_names was 'replica1': reset" in out
        assert "replica1: started, a replica" in out
        assert "replica2: resumed (it was paused)" in out
        assert "replica2: pointed at 127.0.0.1:1 " in out
        assert again.primary.scalar("SHOW synchronous_standby_names") == ""
        assert all(n.is_running for n in again.nodes) and not again.backend.is_paused(r2.spec)
        assert streaming_from_primary(again) == {"replica1", "replica2"}
        assert again.backend.upstream(r2.spec) == again.backend.primary_address()
        insert(again.primary, "after up")
        again.wait_replayed(timeout=20)
        assert rows_with(again.node("replica2"), "after up") == 1
        assert len(again.nodes) == 3  # nothing added, nothing removed
    finally:
        lab.down(wipe=True, home=home)
