"""lab.transcript (lab/commands.py): what the lab ran, as a student would type it, passwords masked (unit: no
server; the commands of real operations are checked in the chapters' tests)."""
from __future__ import annotations

import pytest

from lab import commands as tr
from lab.errors import LabError


def test_passwords_are_masked_in_every_form():
    assert tr.mask("host=pg user=r password=s3cr3t port=5") == "host=pg user=r password=**** port=5"
    assert tr.mask("password='a b\\'c' x") == "password=**** x"
    assert tr.mask("ALTER ROLE replicator PASSWORD 'it''s'") == "ALTER ROLE replicator PASSWORD '****'"
    assert tr.mask("PGPASSWORD=abc pg_basebackup") == "PGPASSWORD=**** pg_basebackup"
    assert tr.mask("postgresql://admin:pw@127.0.0.1:5432/db") == "postgresql://admin:****@127.0.0.1:5432/db"


def test_sql_shows_at_psqls_prompt_and_programs_at_a_shells(capsys):
    t = tr.mark()
    tr.sql("replica1", "SELECT pg_promote()")
    tr.shell("primary", ["pg_basebackup", "-d", "host=127.0.0.1 password=x", "-R"], env={"PGPASSWORD": "y"})
    lines = str(tr.transcript(since=t)).splitlines()
    assert lines[0].endswith("replica1=# SELECT pg_promote();")
    assert lines[1].endswith("primary$ PGPASSWORD=**** pg_basebackup -d 'host=127.0.0.1 password=****' -R")
    assert str(tr.transcript(since=t, node="replica1")).count("\n") == 0
    assert capsys.readouterr().out == ""          # recorded, not printed
    with tr.show_commands():
        tr.sql("primary", "ALTER SYSTEM SET work_mem = '8MB'")
    assert capsys.readouterr().out.strip().endswith("primary=# ALTER SYSTEM SET work_mem = '8MB';")


def test_bad_arguments_are_one_line():
    with pytest.raises(LabError, match="last is a whole number"):
        tr.transcript(last=0)
    with pytest.raises(LabError, match="since is a number"):
        tr.transcript(since="yesterday")
    with pytest.raises(LabError, match="node is a non-empty string"):
        tr.transcript(node=3)


# --- on real servers: what the lab's own calls record --------------------------------------------
@pytest.mark.integration
def test_a_cluster_records_the_commands_a_student_would_type(cluster):
    import lab
    t = lab.transcript_mark()
    cluster.primary.set(work_mem="8MB")
    cluster.primary.sql("SELECT count(*) FROM test_replication")        # a read: not recorded
    replica = cluster.node("replica1")
    replica.stop()
    replica.start()
    cluster.add_replica("extra")
    try:
        text = str(lab.transcript(since=t))
        lines = text.splitlines()
        assert any(ln.endswith("primary=# ALTER SYSTEM SET work_mem = '8MB';") for ln in lines), text
        assert any(ln.endswith("primary=# SELECT pg_reload_conf();") for ln in lines)
        assert not any("count(*)" in ln for ln in lines)
        assert any("replica1$ pg_ctl stop -m fast -D " in ln for ln in lines)
        assert any("replica1$ pg_ctl start -D " in ln for ln in lines)
        assert any("extra$ pg_basebackup -D " in ln and "-R -X stream --slot=extra" in ln for ln in lines), text
        for secret in (cluster.credentials["password"], cluster.credentials["replication_password"]):
            assert secret and secret not in text
        assert str(lab.transcript(since=t, node="extra")).count("extra") >= 1
    finally:
        cluster.remove_replica("extra")
        cluster.primary.set(work_mem=None)
