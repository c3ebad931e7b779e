"""lab.checks and its registry (lab.exercises): every exercise registered once with a hint, then
chapters 00–01 against a real cluster: each exercise passes when done, and hints when not."""
from __future__ import annotations

import pytest

import lab
from lab import checks, exercises
from lab.checks import check

integration = pytest.mark.integration

EVERY_EXERCISE = ["00.1", "01.1", "01.2", "01.3", "01.4", "01.5", "02.1", "02.2", "02.3", "02.4",
                  "03.1", "03.2", "03.3", "03.4", "03.5", "04.1", "04.2", "04.3", "04.4",
                  "05.1", "05.2", "05.3", "05.4", "06.1", "06.2", "06.3", "06.4", "07.1", "07.2", "07.3", "07.4",
                  "08.1", "08.2", "08.3", "08.4", "09.1", "09.2", "09.3", "09.4", "10.1", "10.2", "10.3", "10.4"]
# the exercises that look at "the replica" (replica1, else the first one) and need it
NEED_A_REPLICA = {"01.1": exercises.MAIN_REPLICA, "01.4": exercises.MAIN_REPLICA,
                  "04.1": exercises.RUNNING_REPLICA, "04.2": exercises.RUNNING_REPLICA,
                  "04.3": exercises.RUNNING_REPLICA, "04.4": exercises.RUNNING_REPLICA,
                  "05.1": exercises.RUNNING_REPLICA, "05.3": exercises.RUNNING_REPLICA}


# --- the registry ------------------------------------------------------------------------------
def test_every_exercise_is_registered_once_in_its_chapter():
    assert list(exercises.registered()) == EVERY_EXERCISE
    assert checks.exercises()["exercise"].tolist() == EVERY_EXERCISE
    for chapter in {e.split(".")[0] for e in EVERY_EXERCISE}:
        module = getattr(exercises, f"ch{chapter}")
        own = [e.id for e in exercises.registered().values() if e.run.__module__ == module.__name__]
        assert own == [e for e in EVERY_EXERCISE if e.startswith(chapter + ".")]
    with pytest.raises(ValueError, match="registered twice"):
        exercises.exercise("01.1", "again")(lambda cluster: (True, "never"))
    with pytest.raises(ValueError, match="look like"):
        exercises.exercise("1.1", "a bad id")
    assert list(exercises.registered()) == EVERY_EXERCISE


def test_every_exercise_has_a_hint():
    for exercise_id, ex in exercises.registered().items():
        assert len(ex.hint) > 30 and "\n" not in ex.hint, exercise_id
        said = checks.hint(exercise_id)
        assert said == f"{exercise_id} ({ex.title}): {ex.hint}"
    with pytest.raises(lab.LabError, match="no exercise '99.8'"):
        checks.hint("99.8")
    with pytest.raises(ValueError, match="its docstring is its hint"):
        exercises.exercise("99.1", "no hint")(lambda cluster: (True, "never"))


def test_which_exercises_need_the_replica():
    needs = {e.id: e.needs for e in exercises.registered().values() if e.needs in NEED_A_REPLICA.values()}
    assert needs == NEED_A_REPLICA


@integration
def test_unknown_exercise_is_a_lab_error(cluster):
    with pytest.raises(lab.LabError, match="no exercise '99.9'"):
        check("99.9", cluster)


@integration
def test_an_answer_to_an_exercise_that_takes_none_is_a_lab_error(cluster):
    with pytest.raises(lab.LabError, match="takes no answer"):
        check("01.1", cluster, answer="replica1")


@integration
@pytest.mark.parametrize("exercise", ["00.1", "01.2", "01.3"])
def test_ellipsis_means_not_answered_yet(cluster, exercise):
    r = check(exercise, cluster, answer=...)
    assert not r.ok and not r
    assert "replace ... with your answer" in r.message
    assert check(exercise, cluster).message == r.message  # ... is the default


def test_result_shows_as_text_and_html():
    ok = checks.Result("01.2", "how many <replicas>", True, "right: 1 & only")
    bad = checks.Result("01.2", "t", False, "hint")
    assert repr(ok).startswith("✅ 01.2") and repr(bad).startswith("❌ 01.2")
    html = ok._repr_html_()
    assert "✅" in html and "&lt;replicas&gt;" in html and "1 &amp; only" in html


def test_exercises_lists_each_chapter():
    df = checks.exercises("01")
    assert df["exercise"].tolist() == ["01.1", "01.2", "01.3", "01.4", "01.5"]
    assert df.set_index("exercise")["answer"].to_dict() == {
        "01.1": False, "01.2": True, "01.3": True, "01.4": False, "01.5": False}
    assert "00.1" in checks.exercises()["exercise"].tolist()


@integration
def test_00_1_postgres_major_version(cluster):
    major = int(cluster.primary.scalar("SHOW server_version_num")) // 10000
    assert check("00.1", cluster, answer=major).ok
    assert check("00.1", cluster, answer=f"{major}.3").ok
    wrong = check("00.1", cluster, answer=major - 1)
    assert not wrong.ok and "SHOW server_version" in wrong.message
    assert "a number" in check("00.1", cluster, answer="fifteen").message


@integration
def test_01_1_a_row_reaches_the_replica(cluster):
    before = check("01.1", cluster)
    assert not before.ok and "INSERT" in before.message
    replica = cluster.node("replica1")
    replica.stop()
    cluster.primary.execute("INSERT INTO test_replication (mensaje) VALUES ('hola de Ada')")
    stopped = check("01.1", cluster)
    assert not stopped.ok and "replica1 is stopped" in stopped.message
    replica.start()
    done = check("01.1", cluster)
    assert done.ok, done.message
    assert "'hola de Ada'" in done.message
    assert replica.scalar("SELECT count(*) FROM test_replication WHERE mensaje = 'hola de Ada'") == 1


@integration
def test_01_2_how_many_replicas_stream(cluster):
    streaming = cluster.primary.scalar("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
    assert streaming == 1
    assert check("01.2", cluster, answer=1).ok
    assert check("01.2", cluster, answer="1").ok
    wrong = check("01.2", cluster, answer=2)
    assert not wrong.ok and "pg_stat_replication" in wrong.message
    assert not check("01.2", cluster, answer=True).ok  # a bool is not a count
    cluster.node("replica1").stop()
    assert check("01.2", cluster, answer=0).ok


@integration
def test_01_3_which_node_is_in_recovery(cluster):
    assert cluster.node("replica1").scalar("SELECT pg_is_in_recovery()") is True
    assert check("01.3", cluster, answer="replica1").ok
    assert check("01.3", cluster, answer=["replica1"]).ok
    assert check("01.3", cluster, answer=cluster.node("replica1")).ok
    wrong = check("01.3", cluster, answer="primary")
    assert not wrong.ok and "pg_is_in_recovery()" in wrong.message
    assert not check("01.3", cluster, answer=["primary", "replica1"]).ok
    assert "no node 'replica7'" in check("01.3", cluster, answer="replica7").message
    assert "'replica1'" in check("01.3", cluster, answer="pg-replica").message


@integration
def test_01_4_a_stopped_replica_catches_up(cluster):
    replica = cluster.node("replica1")
    # stopped and started with nothing written in between: not yet
    replica.stop()
    replica.start()
    r = check("01.4", cluster)
    assert not r.ok and "no row starting with 'mientras '" in r.message
    replica.stop()
    r = check("01.4", cluster)
    assert not r.ok and "write a row" in r.message
    cluster.primary.execute("INSERT INTO test_replication (mensaje) VALUES ('mientras replica1 dormía')")
    r = check("01.4", cluster)
    assert not r.ok and "now start it" in r.message
    replica.start()
    r = check("01.4", cluster)
    assert r.ok, r.message
    assert replica.scalar("SELECT count(*) FROM test_replication WHERE mensaje LIKE 'mientras %'") == 1
    # a row written while it ran does not count
    cluster.primary.execute("INSERT INTO test_replication (mensaje) VALUES ('mientras tanto')")
    assert "missed 1 row(s)" in check("01.4", cluster).message


def test_01_4_stopped_intervals_from_a_log():
    log = "\n".join([
        "2026-01-01 10:00:00.000 UTC [1] LOG:  starting PostgreSQL 15.1",
        "2026-01-01 10:00:05.250 UTC [1] LOG:  database system is shut down",
        "entrypoint[replica1]: existing standby data found",
        "2026-01-01 10:00:07.500 UTC [2] LOG:  starting PostgreSQL 15.1",
        "2026-01-01 10:00:09.000 UTC [2] LOG:  database system is shut down",
    ])
    (d1, u1), (d2, u2) = checks.stopped_intervals(log)
    assert (d1.second, d1.microsecond, u1.second) == (5, 250000, 7)
    assert d2.second == 9 and u2 is None  # still stopped
    assert checks.stopped_intervals("2026-01-01 10:00:00.000 UTC [1] LOG:  starting PostgreSQL 15.1") == []


@integration
def test_01_5_down_and_up_keep_the_data(cluster, lab_home):
    cluster.primary.execute("INSERT INTO test_replication (mensaje) SELECT 'hola de Grace' "
                            "WHERE NOT EXISTS (SELECT 1 FROM test_replication WHERE mensaje ILIKE 'hola de %')")
    r = check("01.5", cluster)
    assert not r.ok and "cluster.down()" in r.message
    cluster.down()
    again = lab.up(replicas=1, home=lab_home, quiet=True)
    r = check("01.5", again)
    assert r.ok, r.message
    assert again.node("replica1").scalar("SELECT count(*) FROM test_replication WHERE mensaje ILIKE 'hola de %'") >= 1


@integration
def test_a_stopped_primary_gives_a_hint_not_an_exception(cluster):
    cluster.primary.stop()
    for exercise, answer in [("00.1", 15), ("01.1", ...), ("01.2", 1), ("01.5", ...)]:
        r = check(exercise, cluster, answer=answer)
        assert not r.ok
        assert r.message.startswith("could not check:") and "primary" in r.message, r.message
    cluster.primary.start()


@integration
def test_without_the_replica_the_exercises_that_need_it_say_so(fresh_cluster):
    replica = fresh_cluster.node("replica1")
    replica.stop()
    for exercise_id, needs in NEED_A_REPLICA.items():
        r = check(exercise_id, fresh_cluster, answer=0 if exercises.registered()[exercise_id].wants_answer else ...)
        if needs is exercises.RUNNING_REPLICA:
            assert not r.ok and r.message == exercises.stopped(replica), (exercise_id, r.message)
    fresh_cluster.remove_replica("replica1")
    assert fresh_cluster.replicas == []
    for exercise_id in NEED_A_REPLICA:
        r = check(exercise_id, fresh_cluster, answer=0 if exercises.registered()[exercise_id].wants_answer else ...)
        assert not r.ok and r.message == "this cluster has no replica: lab.up(replicas=1) adds one", exercise_id
    assert check("01.5", fresh_cluster).message.startswith("do exercise 01.1 first")  # 01.5 does without one
