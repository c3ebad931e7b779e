"""Chapter 06 on real servers: a crash and a partition under write load, the writer following the
primary through a multi-host string, lost writes audited against the new timeline, split brain,
fencing, pg_rewind, a planned switchover, and the chapter's self-checks."""
from __future__ import annotations

import pytest

import lab
from lab import checks, failover, workload
from lab.errors import Interrupted, LabError
from lab.lsn import parse_lsn

pytestmark = pytest.mark.integration
TIDY = failover.tidy  # what the shared `two` fixture (tests/labtest/clusters.py) puts back at the end


@pytest.fixture
def cluster(two):
    failover.tidy(two)
    return two


def test_chapter_06_registers_its_exercises():
    assert list(checks.exercises("06")["exercise"]) == ["06.1", "06.2", "06.3", "06.4"]


def test_async_crash_loses_exactly_the_writes_past_the_fork(cluster):
    before = failover.timeline(cluster.primary)["timeline"]
    run = failover.failover(cluster, mode="async", fault="crash", rate=500, before=0.8, after=0.3,
                            latency_ms=20, quiet=True)
    s = run.summary().iloc[0]
    assert run.new != run.old and cluster.primary.name == run.new
    assert cluster.node(run.old).role == "former primary" and not cluster.node(run.old).is_running
    # the writer reached the new primary by itself (multi-host string, read-write)
    assert s["outage_s"] is not None and s["outage_s"] > 0
    # 20 ms of WAL in flight was on the links the crash took down: acknowledged, then lost
    assert s["lost"] >= 1
    audit = run.audit.set_index("outcome")
    assert audit.loc["acknowledged", "missing"] == s["lost"]
    # the new timeline forked where the promoted replica's WAL ended: exactly the acknowledged writes
    # whose commit is past that point are missing
    hist = failover.history(cluster.primary)
    assert hist["timeline"].max() == before + 1
    switchpoint = parse_lsn(hist[hist["timeline"] == before + 1]["switchpoint"].iloc[-1])
    assert all(parse_lsn(lsn) > switchpoint for lsn in run.lost["lsn"])
    present = workload.rows_on(cluster.primary, run.writer.run_id)
    ack = run.writer.acknowledged()
    assert set(ack["seq"]) - present == set(run.lost["seq"])
    fig = run.figure()
    assert f"{s['lost']} acknowledged writes lost" in fig.axes[0].get_title()
    assert "acknowledged, then LOST" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    tl = failover.timelines(cluster).set_index("node")
    assert tl.loc[run.new, "timeline"] == before + 1 and not tl.loc[run.new, "in_recovery"]
    # the replica that was not promoted followed the new primary onto its timeline without a restart
    other = [r for r in cluster.replicas if r.is_running][0]
    assert failover.follows(cluster, other)
    # against the fork, by node: the old primary's writes before it all there, past it all lost; the
    # new primary's own writes are past it too, on the new timeline
    fork = run.against_fork().set_index(["acknowledged_by", "commit_lsn", "on_new_primary"])["writes"]
    old, new = f"{run.old} (old primary)", f"{run.new} (new primary)"
    assert fork.get((old, "past the switchpoint", False)) == s["lost"]
    assert (old, "past the switchpoint", True) not in fork and (old, "before the switchpoint", False) not in fork
    assert fork.get((new, "past the switchpoint", True), 0) >= 1 and (new, "before the switchpoint", True) not in fork
    # run again at once (the cell re-run): refused, the new primary is not crashed too
    with pytest.raises(LabError, match=f"a failover happened already: {run.old} .*restore"):
        failover.failover(cluster, mode="async", quiet=True)
    assert cluster.primary.name == run.new and cluster.primary.is_running
    assert checks.check("06.1", cluster, answer=before + 1)
    assert not checks.check("06.1", cluster, answer=before)
    assert not checks.check("06.3", cluster)  # the former primary is not back yet
    done = failover.restore(cluster)
    assert any(f"rewound {run.old}" in d for d in done)
    assert checks.check("06.3", cluster)


def test_split_brain_fencing_and_rejoin(cluster):
    run = failover.failover(cluster, mode="async", rate=200, before=0.3, after=0.2, quiet=True)
    brain = failover.split_brain(cluster).set_index("node")
    assert brain["accepts_writes"].all()                        # two writable primaries
    assert brain.loc[run.old, "timeline"] < brain.loc[run.new, "timeline"]
    mine_old, mine_new = brain.loc[run.old, "rows_it_has"], brain.loc[run.new, "rows_it_has"]
    assert len(mine_old) == 1 and mine_old[0].startswith(failover.SPLIT.format(node=run.old, time=""))
    assert len(mine_new) == 1 and run.new in mine_new[0]         # divergent: each has only its own
    # a client whose host list starts with the old primary writes there
    assert brain.loc[run.old, "client_listing_it_first_reaches"] == run.old
    assert not checks.check("06.2", cluster)
    # only the node writing beside the primary can be fenced: a read-only replica is refused, by name
    other = next(n.name for n in cluster.replicas if n.name != run.new)
    with pytest.raises(LabError, match=f"{other} is read-only .*the node writing beside {run.new} is {run.old}"):
        failover.fence(cluster, other)
    fenced = failover.fence(cluster, run.old, how="standby").set_index("node")
    assert fenced["accepts_writes"].sum() == 1 and not fenced.loc[run.old, "accepts_writes"]
    assert checks.check("06.2", cluster)
    with pytest.raises(LabError):
        cluster.node(run.old).execute("INSERT INTO test_replication (mensaje) VALUES ('fenced')")
    cluster.rejoin(run.old)
    old = cluster.node(run.old)
    assert old.role == "replica"
    assert "pg_rewind done" in old.logs(400)
    cluster.wait_replayed(timeout=30)
    # the rows the old primary wrote in the split brain were discarded by the rewind
    alive = failover.survivors(cluster, brain.reset_index()).set_index("written_on")
    assert not alive.loc[run.old, f"on {run.old}"] and not alive.loc[run.old, f"on {run.new}"]
    assert alive.loc[run.new, f"on {run.old}"] and alive.loc[run.new, f"on {run.new}"]
    assert checks.check("06.3", cluster)


def test_rejoined_node_keeps_its_own_port(cluster):
    run = failover.failover(cluster, mode="async", rate=100, before=0.2, after=0.1, quiet=True)
    port = cluster.node(run.old).port
    cluster.rejoin(run.old)
    node = cluster.node(run.old)
    assert node.port == port and node.is_running
    assert node.scalar("SHOW port", dbname="postgres") == str(port)


@pytest.mark.parametrize("mode", ["on", "remote_apply"])
def test_synchronous_crash_loses_no_acknowledged_write(cluster, mode):
    run = failover.failover(cluster, mode=mode, fault="crash", rate=300, before=0.6, after=0.2,
                            latency_ms=10, quiet=True)
    s = run.summary().iloc[0]
    assert s["acknowledged"] > 0 and s["lost"] == 0
    assert run.audit.set_index("outcome").loc["acknowledged", "missing"] == 0
    # each COMMIT on the old primary waited for a standby 10 ms away each way: at least that round trip
    assert s["commit_ms_old"] >= 20


def test_partition_async_loses_what_the_old_primary_acknowledged_alone(cluster):
    run = failover.failover(cluster, mode="async", fault="partition", rate=300, before=0.4, after=0.2,
                            fence_after=0.4, quiet=True)
    s = run.summary().iloc[0]
    # every write the old primary acknowledged after its links were down is lost (and a few
    # acknowledged while the cut was under way may be too); all lost ones were the old primary's
    assert s["acked_by_old_after_fault"] > 0
    assert s["lost"] >= s["acked_by_old_after_fault"]
    assert set(run.lost["node"]) == {run.old}
    # decided from the WAL: each commit the old primary acknowledged alone lies past what any
    # standby held at the cut, so the promoted one lacks it
    alone = run.acknowledged_alone()
    assert set(alone["seq"]) <= set(run.lost["seq"])
    assert all(parse_lsn(lsn) > parse_lsn(run.standby_flushed) for lsn in alone["lsn"])
    assert parse_lsn(run.standby_flushed) >= parse_lsn(run.against_fork().attrs["switchpoint"])
    assert run.t_fenced is not None and not cluster.node(run.old).is_running


def test_partition_sync_blocks_instead_of_losing(cluster):
    df = failover.rpo_rto(cluster, modes=("on",), faults_=("partition",), before=0.4, after=0.2, quiet=True)
    row = df.iloc[0]
    assert row["lost"] == 0 and row["acked_by_old_after_fault"] == 0 and row["outage_s"] > 0
    assert row["unknown"] >= 1  # the COMMIT that waited for an unreachable standby, ended by the fencing
    assert checks.check("06.3", cluster)  # rpo_rto restores after each run
    assert cluster.primary.scalar("SHOW synchronous_standby_names") == ""


def test_partition_sync_old_primary_acknowledged_only_what_a_standby_had(cluster):
    run = failover.failover(cluster, mode="on", fault="partition", rate=300, before=0.4, after=0.2,
                            latency_ms=10, fence_after=0.4, quiet=True)
    ack = run.writer.acknowledged()
    assert (ack["node"] == run.old).sum() > 0
    # every commit the old primary acknowledged, before the cut or (its standby's reply already
    # in) just after it, lies at or before what a standby had flushed: none acknowledged alone
    assert run.acknowledged_alone().empty and run.lost.empty
    assert run.summary().iloc[0]["acked_by_old_after_fault"] == 0


def test_a_cancelled_synchronous_wait_loses_an_acknowledged_write(cluster):
    steps = failover.cancelled_wait(cluster, quiet=True)
    returned = steps[steps["step"].str.startswith("the waiting session cancelled")].iloc[0]
    assert returned["acknowledged"] == 1 and "committed locally" in returned["warning"]
    assert steps[steps["step"].str.startswith("the row, read on")]["rows_visible"].iloc[0] == 1
    assert steps["lost"].dropna().iloc[-1] == 1


def test_switchover_loses_nothing_and_swaps_roles(cluster):
    old = cluster.primary.name
    to = cluster.replicas[0].name
    df = failover.switchover(cluster, to, rate=300, seconds=0.6, quiet=True)
    row = df.iloc[0]
    assert row["lost"] == 0 and row["acknowledged"] > 0
    assert cluster.primary.name == to and cluster.node(old).role == "replica"
    assert failover.follows(cluster, cluster.node(old))
    assert checks.check("06.2", cluster) and checks.check("06.3", cluster)


def test_zero_loss_setting_check(cluster):
    assert not checks.check("06.4", cluster)
    failover.set_mode(cluster, "on")
    try:
        assert checks.check("06.4", cluster)
    finally:
        failover.set_mode(cluster, "async")


def test_failover_panel_callback_builds_the_table(cluster):
    rows = []
    msg = failover.failover_action(cluster, "remote_apply", "crash", 5, rows)
    assert msg.startswith("remote_apply × crash: 0 of ") and "is the primary now" in msg
    table = failover.rpo_table(rows)
    assert table[["mode", "fault", "latency_ms", "lost"]].values.tolist() == [["remote_apply", "crash", 5, 0]]
    assert checks.check("06.3", cluster)  # restored after the failover
    assert failover.failover_action(cluster, "quorum", "crash", 5, rows).startswith("quorum × crash: could not")
    assert len(rows) == 1
    panel = failover.failover_panel(cluster, rows)
    assert panel.children[0].children[3].description == "fail over"


def test_an_interrupted_failover_ends_in_one_line_and_its_old_result_is_refused(cluster, monkeypatch):
    first = failover.failover(cluster, mode="async", rate=200, before=0.2, after=0.1, quiet=True)
    failover.restore(cluster)
    first.summary()  # a finished run's results are fine

    def interrupt(_cluster):  # Kernel › Interrupt while the replicas' positions are read, after the kill
        raise KeyboardInterrupt
    monkeypatch.setattr(failover, "received", interrupt)
    with pytest.raises(Interrupted) as e:
        failover.failover(cluster, mode="async", rate=200, before=0.2, after=0.1, latency_ms=5, quiet=True)
    msg = str(e.value)
    assert msg.startswith("failover interrupted after") and "put back:" in msg and "\n" not in msg
    monkeypatch.undo()
    # put back: the primary runs, every other node streams from it, no proxy, no former primary
    assert cluster.primary.is_running
    assert all(n.role == "replica" and n.is_running and failover.follows(cluster, n) for n in cluster.replicas)
    assert not failover._not_rejoined(cluster)
    assert all(lab.proxy.link(cluster, n.name) is None for n in cluster.nodes)
    # `crash` still holds the first run: never taken for the interrupted one
    with pytest.raises(LabError, match="was interrupted and left none"):
        first.summary()


def test_a_failover_by_hand_with_pg_promote_then_refresh_roles(cluster):
    t = lab.transcript_mark()
    old = cluster.primary.name
    cluster.primary.kill()
    new = failover.best_candidate(cluster)
    assert "SELECT pg_promote();" in failover.promote_commands(cluster, new.name)
    assert new.sql("SELECT pg_promote()").iloc[0, 0]
    assert cluster.primary.name == old  # PostgreSQL promoted it; the lab has not been told yet
    said = cluster.refresh_roles(quiet=True)
    assert said and cluster.primary.name == new.name and cluster.node(old).role == "former primary"
    for n in cluster.nodes:  # every record agrees with its server
        if n.is_running:
            assert (n.role == "replica") == n.scalar("SELECT pg_is_in_recovery()")
    other = next(r for r in cluster.replicas if r.is_running)
    assert failover.follows(cluster, other, timeout=10)
    assert failover.who_answers(cluster)["answered_by"] == new.name
    text = str(lab.transcript(since=t))
    assert "kill -KILL" in text and f"{new.name}=# SELECT pg_promote();" in text
    assert cluster.refresh_roles(quiet=True) == []   # nothing left to change
    failover.restore(cluster)
    assert checks.check("06.3", cluster)


def test_errors_a_student_can_meet(cluster):
    with pytest.raises(LabError, match="rate is a number"):
        failover.failover(cluster, rate="fast")
    with pytest.raises(LabError, match="latency_ms is a number"):
        failover.failover(cluster, latency_ms=float("nan"))
    with pytest.raises(LabError, match="how is one of"):
        failover.fence(cluster, "replica1", how="shoot")
    with pytest.raises(LabError, match="is the primary: switch over to a running replica"):
        failover.switchover(cluster, to=cluster.primary.name)
    with pytest.raises(LabError, match="mode is one of"):
        failover.failover(cluster, mode="sync")
    with pytest.raises(LabError, match="fault is one of"):
        failover.failover(cluster, fault="fire")
    with pytest.raises(LabError, match="current primary"):
        cluster.rejoin(cluster.primary.name)
    with pytest.raises(LabError, match="fence the OLD one"):
        failover.fence(cluster, cluster.primary.name)
    with pytest.raises(LabError, match="switch over to a replica"):
        cluster.switchover(cluster.primary.name)


# --- the compose backend: the same chapter on containers ----------------------------------------
def test_a_standalone_server_is_no_split_brain_and_restore_leaves_it_alone(cluster):
    """Chapters 09-10 add a writable server outside the physical cluster: chapter 06's view of writers,
    its self-checks and restore() look at the physical cluster only."""
    extra = cluster.add_standalone("bystander")
    try:
        assert extra.role == lab.Role.STANDALONE and extra.scalar("SELECT NOT pg_is_in_recovery()")
        assert list(failover.writable(cluster)["node"]) == [n.name for n in cluster.nodes
                                                          if n.role != lab.Role.STANDALONE]
        assert failover.writable(cluster)["accepts_writes"].sum() == 1
        assert checks.check("06.2", cluster) and checks.check("06.3", cluster)
        assert failover.restore(cluster) == []
        assert extra.is_running and extra.role == lab.Role.STANDALONE
    finally:
        cluster.remove_node("bystander")
    assert "bystander" not in {n.name for n in cluster.nodes}


def test_an_object_made_before_another_notebook_switched_over_acts_on_the_roles_now(cluster):
    """Two notebooks on one cluster: the other one switches over; this one's next lab call (restore)
    re-reads the cluster's state first, so it sees the new primary instead of rewinding it."""
    other = lab.cluster.attach(cluster.home.path)
    was, to = cluster.primary.name, cluster.replicas[0].name
    other.switchover(to)
    try:
        assert failover.restore(cluster) == []
        assert cluster.primary.name == to and cluster.node(was).role == "replica"
    finally:
        other.switchover(was)
    assert failover.restore(cluster) == [] and cluster.primary.name == was
    # each replica was retargeted twice: its server logged its new primary_conninfo, which node.logs() masks
    logs = "\n".join(str(n.logs(400)) for n in cluster.nodes)
    assert "password=****" in logs and cluster._state["replication_password"] not in logs


@pytest.fixture(scope="module")
def on_compose(request, tmp_path_factory):
    """Two replicas as containers (pg-master, pg-replica, pg-replica2) on the private engine."""
    from docker_fixtures import compose_env
    engine = request.getfixturevalue("docker_engine")
    home = tmp_path_factory.mktemp("lab")
    with compose_env(engine):
        c = lab.up(replicas=2, home=home, quiet=True, backend="compose")
        try:
            yield c
        finally:
            try:
                failover.tidy(c)
            finally:
                lab.down(wipe=True, home=home)


@pytest.fixture
def ccluster(on_compose):
    failover.tidy(on_compose)
    return on_compose


def role_file(cluster, name) -> dict:
    """The role file in a node's volume (what its entrypoint reads at the next start)."""
    import io
    import tarfile
    from lab.backends.compose import ROLE_FILE
    c = cluster.backend.container(cluster.node(name).spec)
    stream, _ = c.get_archive(ROLE_FILE)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        text = tar.extractfile(tar.getmembers()[0]).read().decode()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


@pytest.mark.compose
def test_compose_crash_with_latency_then_the_former_primary_rejoins(ccluster):
    """A kill -9 under load with 20 ms on every replica's link (the proxy on the network's gateway);
    the writer follows; the other replica is retargeted to the new primary's service; pg-master's
    container, restarted with ROLE=replica in its role file, rewinds itself into a replica."""
    c = ccluster
    run = failover.failover(c, mode="async", fault="crash", rate=300, before=0.6, after=0.3, latency_ms=20,
                            quiet=True)
    s = run.summary().iloc[0]
    assert s["outage_s"] is not None and s["lost"] == run.audit.set_index("outcome").loc["acknowledged", "missing"]
    assert all(parse_lsn(lsn) > parse_lsn(run.against_fork().attrs["switchpoint"]) for lsn in run.lost["lsn"])
    new = c.node(run.new)
    assert role_file(c, run.new)["ROLE"] == "primary"
    other = [r for r in c.replicas if r.name != run.new][0]
    assert failover.follows(c, other, timeout=30)
    assert other.scalar("SELECT sender_host FROM pg_stat_wal_receiver", dbname="postgres") == new.spec["service"]
    assert role_file(c, other.name)["PRIMARY_HOST"] == new.spec["service"]
    done = failover.restore(c)
    assert any(f"rewound {run.old}" in d for d in done)
    old = c.node(run.old)
    assert old.role == "replica"
    assert "pg_rewind done" in old.logs(400), failover.rewind_log(old)
    rf = role_file(c, run.old)
    assert (rf["ROLE"], rf["PRIMARY_HOST"], rf["REPLICA_REJOIN"]) == ("replica", new.spec["service"], "0")
    assert old.scalar("SELECT sender_host FROM pg_stat_wal_receiver", dbname="postgres") == new.spec["service"]
    c.wait_replayed(timeout=30)
    assert checks.check("06.3", c)


@pytest.mark.compose
def test_compose_containers_restart_in_their_new_roles(ccluster):
    """After a failover: the promoted replica's container (replica/entrypoint.sh) restarts as the
    primary; a replica's container restarted streams from the new primary's service; a replica added
    now (a new container) takes its base backup from it (PG_PRIMARY_HOST)."""
    c = ccluster
    to = next(r.name for r in c.replicas if r.spec["service"] != "pg-master")  # runs replica/entrypoint.sh
    run = failover.failover(c, mode="on", fault="crash", rate=100, before=0.3, after=0.2, candidate=to, quiet=True)
    assert run.summary().iloc[0]["lost"] == 0
    failover.restore(c)
    new = c.node(run.new)
    new.restart()
    assert c.primary.name == run.new and not failover.timeline(new)["in_recovery"]
    assert "this node is a primary (promoted)" in new.logs(50)
    c.wait_streaming(timeout=60)
    for r in c.replicas:
        r.restart()
    c.wait_streaming(timeout=60)
    assert all(failover.follows(c, r, timeout=30) for r in c.replicas)
    extra = c.add_replica()
    try:
        assert extra.spec["service"] == "pg-replica3"
        assert extra.scalar("SELECT sender_host FROM pg_stat_wal_receiver", dbname="postgres") == new.spec["service"]
    finally:
        c.remove_replica(extra.name)


@pytest.mark.compose
def test_compose_partition_split_brain_fence_and_switchover(ccluster):
    c = ccluster
    run = failover.failover(c, mode="async", fault="partition", rate=300, before=0.4, after=0.2,
                            fence_after=0.4, quiet=True)
    s = run.summary().iloc[0]
    assert s["acked_by_old_after_fault"] > 0 and s["lost"] >= s["acked_by_old_after_fault"]
    assert set(run.lost["node"]) == {run.old} and not c.node(run.old).is_running
    brain = failover.split_brain(c).set_index("node")
    assert brain["accepts_writes"].all()
    fenced = failover.fence(c, run.old, how="standby").set_index("node")  # standby.signal into a stopped container
    assert fenced["accepts_writes"].sum() == 1 and not fenced.loc[run.old, "accepts_writes"]
    c.rejoin(run.old)
    assert c.node(run.old).role == "replica" and checks.check("06.3", c)
    df = failover.switchover(c, run.old, rate=200, seconds=0.6, quiet=True)
    assert df.iloc[0]["lost"] == 0 and df.iloc[0]["acknowledged"] > 0
    assert c.primary.name == run.old and c.node(run.new).role == "replica"
    assert failover.follows(c, c.node(run.new), timeout=30)
    assert checks.check("06.2", c) and checks.check("06.3", c)


@pytest.mark.compose
def test_compose_after_a_failover_survives_compose_restart_and_down_up(ccluster):
    """The primary living in pg-replica's container: `docker compose restart` of every service keeps the
    roles (each entrypoint reads its role file); lab.down() then lab.up() on the same home brings back
    the standard layout (the node called primary, in pg-master, the primary again), losing no row."""
    c = ccluster
    if c.primary.spec["service"] == "pg-replica":  # an earlier test left the primary there: move it first
        failover.switchover(c, c.replicas[0].name, rate=50, seconds=0.3, quiet=True)
    to = next(r.name for r in c.replicas if r.spec["service"] == "pg-replica")
    run = failover.failover(c, mode="on", fault="crash", rate=100, before=0.3, after=0.2, candidate=to, quiet=True)
    failover.restore(c)
    assert c.primary.name == to and c.node(run.old).role == "replica"
    services = [n.spec["service"] for n in c.nodes]
    profiles = [a for n in c.nodes for a in c.backend._profile(n.spec)]
    c.backend.compose(*profiles, "restart", "-t", "20", *services, timeout=300)
    for n in c.nodes:
        c.backend.wait_ready(n.spec)
    c.wait_streaming(timeout=60)
    assert not c.primary.scalar("SELECT pg_is_in_recovery()", dbname="postgres")
    assert all(failover.follows(c, r, timeout=30) for r in c.replicas)
    assert c.node(run.old).scalar("SELECT sender_host FROM pg_stat_wal_receiver", dbname="postgres") == "pg-replica"

    before = c.primary.scalar("INSERT INTO test_replication (mensaje) VALUES ('antes de down/up') RETURNING id")
    c.wait_replayed(timeout=30)
    home = c.home.path
    lab.down(home=home)
    assert not any(n.is_running for n in lab.cluster.attach(home).nodes)
    again = lab.up(replicas=2, home=home, quiet=True, backend="compose")
    assert again.primary.name == "primary" and again.primary.spec["service"] == "pg-master"
    assert {r.name for r in again.replicas} == {n.name for n in c.nodes} - {"primary"}
    again.wait_streaming(timeout=60)
    assert again.primary.scalar(f"SELECT count(*) FROM test_replication WHERE id = {int(before)}") == 1
    row = again.primary.scalar("INSERT INTO test_replication (mensaje) VALUES ('tras down/up') RETURNING id")
    again.wait_replayed(timeout=30)
    for r in again.replicas:
        assert r.scalar(f"SELECT count(*) FROM test_replication WHERE id = {int(row)}") == 1
    assert checks.check("06.2", again) and checks.check("06.3", again)
