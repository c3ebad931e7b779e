"""Chapter 10's self-checks (WAL archive, point-in-time recovery, cascading replicas);
``lab.checks.check("10.1", cluster)``."""
from __future__ import annotations

from ..archive import RESTORE_POINT, archive_command, archive_dir, sample, switch_wal
from ..errors import LabError
from ..node import Node, Role
from ..standby import RECOVERY_TABLE
from .answers import as_count
from .registry import Precondition, Unmet, exercise


def _running_primary(cluster) -> Node:
    p = cluster.primary
    if not p.is_running:
        raise Unmet(f"the primary ({p.name}) is stopped: start it with cluster.start(), then check again")
    return p


RUNNING_PRIMARY = Precondition("the primary, running", _running_primary)


@exercise("10.1", "the primary archives every segment, and no copy fails", needs=RUNNING_PRIMARY)
def _archiving_works(cluster, primary):
    """Turn archiving on (lab.archive.enable(cluster, restart=True)) and keep its archive_command right: the
    check closes a segment with pg_switch_wal() and wants it in the archive with failed_count not growing."""
    if primary.scalar("SHOW archive_mode", dbname="postgres") == "off":
        return False, "archive_mode is off on the primary: lab.archive.enable(cluster, restart=True) turns it on"
    if primary.scalar("SHOW archive_command", dbname="postgres") != archive_command(archive_dir(cluster)):
        return False, ("the primary's archive_command is not the one that copies into cluster.archive_dir(): "
                       "compare lab.archive.settings(cluster) with lab.archive.archive_command(cluster.archive_dir())")
    before = sample(cluster)
    try:
        arrived = switch_wal(cluster, timeout=10)
    except LabError as e:
        return False, f"a segment closed by pg_switch_wal() did not reach the archive: {e}"
    after = sample(cluster)
    if after["failed_count"] > before["failed_count"]:
        return False, (f"failed_count grew from {before['failed_count']} to {after['failed_count']}: read "
                       "lab.archive.failures(cluster)")
    if after["ready_files"]:
        return False, f"{after['ready_files']} segments still wait to be archived: see lab.archive.stats(cluster)"
    return True, (f"{arrived['segment']} reached the archive {arrived['seconds_to_archive']:.2f} s after its switch; "
                  f"archived_count {after['archived_count']}, failed_count {after['failed_count']} (not growing)")


@exercise("10.2", "your own point-in-time recovery, to the restore point, brought the table back")
def _restored_by_name(cluster):
    """Restore the backup to the named restore point into a node of your own, e.g.
    lab.archive.restore(cluster, 'pitr_name', backup, mistake, by='name') (remove another restored copy first
    if the cluster holds two): the check wants a standalone node, out of recovery, recovered with
    recovery_target_name and holding the table wallets."""
    found = [n for n in cluster.nodes if n.role == Role.STANDALONE]
    if not found:
        return False, ("no restored node in this cluster: lab.archive.restore(cluster, 'pitr_name', backup, mistake, "
                       "by='name') makes one")
    seen = []
    for n in found:
        if not n.is_running:
            seen.append(f"{n.name} is stopped")
            continue
        target = n.scalar("SHOW recovery_target_name", dbname="postgres")
        if not target:
            seen.append(f"{n.name} was not recovered to a restore point (recovery_target_name is empty)")
            continue
        if n.scalar("SELECT pg_is_in_recovery()", dbname="postgres"):
            seen.append(f"{n.name} is still in recovery (paused at its target?): cluster.node({n.name!r}).promote()")
            continue
        if not n.scalar("SELECT to_regclass(%s) IS NOT NULL", (RECOVERY_TABLE,)):
            seen.append(f"{n.name} has no table {RECOVERY_TABLE}: its target was after the DROP")
            continue
        rows = n.scalar(f"SELECT count(*) FROM {RECOVERY_TABLE}")
        tli = n.scalar("SELECT timeline_id FROM pg_control_checkpoint()", dbname="postgres")
        where = "the chapter's restore point" if target == RESTORE_POINT else f"restore point {target!r}"
        return True, (f"{n.name} recovered to {where} and holds {RECOVERY_TABLE} ({rows} rows); it left recovery "
                      f"on a timeline of its own ({tli}, after its next checkpoint)")
    return False, "; ".join(seen)


def _cascade_from_replica1(cluster) -> Node:
    names = {n.name: n for n in cluster.nodes}
    if "replica1" not in names:
        raise Unmet("this cluster has no replica1: lab.up(replicas=1) makes it")
    if not names["replica1"].is_running:
        raise Unmet("replica1 is stopped: start it with cluster.node('replica1').start(), then check again")
    return names["replica1"]


@exercise("10.3", "a replica cascades from replica1", needs=Precondition("replica1, running", _cascade_from_replica1))
def _cascade_streaming(cluster, replica1):
    """Add a replica of replica1, lab.archive.add_cascade(cluster, 'replica2', upstream='replica1'): the check
    asks replica1 (not the primary) which standbys stream from it (pg_stat_replication)."""
    streaming = replica1.sql("SELECT application_name, state FROM pg_stat_replication", dbname="postgres")
    if streaming.empty:
        return False, ("nothing streams from replica1: lab.archive.add_cascade(cluster, 'replica2', "
                       "upstream='replica1') adds a replica of it")
    ok = streaming[streaming["state"] == "streaming"]["application_name"].tolist()
    if not ok:
        return False, f"replica1 sends to {', '.join(streaming['application_name'])}, but not streaming yet: check again"
    return True, f"{', '.join(ok)} stream{'s' if len(ok) == 1 else ''} from replica1, which streams from the primary"


@exercise("10.4", "how many segments the replica without a slot fetched from the archive", answer=True)
def _segments_from_archive(cluster, answer):
    """After lab.archive.outrun(cluster), read the log of the replica without a slot
    (cluster.node('no_slot').logs(200)) and count the lines 'restored log file ... from archive'; answer
    with that number."""
    given = as_count(answer)
    if given is None:
        return False, f"answer with a whole number, e.g. answer=4 (not {answer!r})"
    names = {n.name: n for n in cluster.nodes}
    node = names.get("no_slot")
    if node is None:
        return False, "there is no replica no_slot: lab.archive.replica_without_slot(cluster), then outrun(cluster)"
    count = sum("restored log file" in ln and "from archive" in ln for ln in node.logs(5000).splitlines())
    if count == 0:
        return False, "no_slot has restored nothing from the archive yet: run lab.archive.outrun(cluster) first"
    if given == count:
        return True, (f"right: no_slot restored {count} files from the archive (segments, and a timeline history "
                      "file if one was asked for) that the primary no longer had, then streamed again")
    return False, "not what no_slot's log says: count its lines with 'restored log file' (cluster.node('no_slot').logs(200))"
