"""Chapter 10's self-checks (WAL archive, point-in-time recovery, cascading replicas);
``lab.checks.check("10.1", cluster)``."""
from __future__ import annotations

from ..archive import RESTORE_POINT, archive_command, archive_dir, sample, switch_wal
from ..errors import LabError
from ..i18n import N_, _, ngettext
from ..node import Node, Role
from ..standby import RECOVERY_TABLE
from .answers import as_count
from .registry import Precondition, Unmet, exercise, stopped


def _running_primary(cluster) -> Node:
    p = cluster.primary
    if not p.is_running:
        raise Unmet(_("the primary ({primary}) is stopped: start it with cluster.start(), then check again").format(
            primary=p.name))
    return p


RUNNING_PRIMARY = Precondition("the primary, running", _running_primary)


@exercise("10.1", N_("the primary archives every segment, and no copy fails"), needs=RUNNING_PRIMARY,
          hint=N_("Turn archiving on (lab.archive.enable(cluster, restart=True)) and keep its archive_command right: "
                  "the check closes a segment with pg_switch_wal() and wants it in the archive with failed_count not "
                  "growing."))
def _archiving_works(cluster, primary):
    if primary.scalar("SHOW archive_mode", dbname="postgres") == "off":
        return False, _("archive_mode is off on the primary: lab.archive.enable(cluster, restart=True) turns it on")
    if primary.scalar("SHOW archive_command", dbname="postgres") != archive_command(archive_dir(cluster)):
        return False, _("the primary's archive_command is not the one that copies into cluster.archive_dir(): "
                        "compare lab.archive.settings(cluster) with lab.archive.archive_command(cluster.archive_dir())")
    before = sample(cluster)
    try:
        arrived = switch_wal(cluster, timeout=10)
    except LabError as e:
        return False, _("a segment closed by pg_switch_wal() did not reach the archive: {error}").format(error=e)
    after = sample(cluster)
    if after["failed_count"] > before["failed_count"]:
        return False, _("failed_count grew from {before} to {after}: read lab.archive.failures(cluster)").format(
            before=before["failed_count"], after=after["failed_count"])
    if after["ready_files"]:
        return False, _("{count} segments still wait to be archived: see lab.archive.stats(cluster)").format(
            count=after["ready_files"])
    return True, _("{segment} reached the archive {seconds:.2f} s after its switch; "
                   "archived_count {archived}, failed_count {failed} (not growing)").format(
        segment=arrived["segment"], seconds=arrived["seconds_to_archive"], archived=after["archived_count"],
        failed=after["failed_count"])


@exercise("10.2", N_("your own point-in-time recovery, to the restore point, brought the table back"),
          hint=N_("Restore the backup to the named restore point into a node of your own, e.g. "
                  "lab.archive.restore(cluster, 'pitr_name', backup, mistake, by='name') (remove another restored "
                  "copy first if the cluster holds two): the check wants a standalone node, out of recovery, "
                  "recovered with recovery_target_name and holding the table wallets."))
def _restored_by_name(cluster):
    found = [n for n in cluster.nodes if n.role == Role.STANDALONE]
    if not found:
        return False, _("no restored node in this cluster: lab.archive.restore(cluster, 'pitr_name', backup, mistake, "
                        "by='name') makes one")
    seen = []
    for n in found:
        if not n.is_running:
            seen.append(_("{node} is stopped").format(node=n.name))
            continue
        target = n.scalar("SHOW recovery_target_name", dbname="postgres")
        if not target:
            seen.append(_("{node} was not recovered to a restore point (recovery_target_name is empty)").format(
                node=n.name))
            continue
        if n.scalar("SELECT pg_is_in_recovery()", dbname="postgres"):
            seen.append(_("{node} is still in recovery (paused at its target?): cluster.node({node!r}).promote()").format(
                node=n.name))
            continue
        if not n.scalar("SELECT to_regclass(%s) IS NOT NULL", (RECOVERY_TABLE,)):
            seen.append(_("{node} has no table {table}: its target was after the DROP").format(
                node=n.name, table=RECOVERY_TABLE))
            continue
        rows = n.scalar(f"SELECT count(*) FROM {RECOVERY_TABLE}")
        tli = n.scalar("SELECT timeline_id FROM pg_control_checkpoint()", dbname="postgres")
        if target == RESTORE_POINT:
            return True, _("{node} recovered to the chapter's restore point and holds {table} ({rows} rows); it left "
                           "recovery on a timeline of its own ({timeline}, after its next checkpoint)").format(
                node=n.name, table=RECOVERY_TABLE, rows=rows, timeline=tli)
        return True, _("{node} recovered to restore point {target!r} and holds {table} ({rows} rows); it left "
                       "recovery on a timeline of its own ({timeline}, after its next checkpoint)").format(
            node=n.name, target=target, table=RECOVERY_TABLE, rows=rows, timeline=tli)
    return False, "; ".join(seen)


def _cascade_from_replica1(cluster) -> Node:
    names = {n.name: n for n in cluster.nodes}
    if "replica1" not in names:
        raise Unmet(_("this cluster has no replica1: lab.up(replicas=1) makes it"))
    if not names["replica1"].is_running:
        raise Unmet(stopped(names["replica1"]))
    return names["replica1"]


@exercise("10.3", N_("a replica cascades from replica1"), needs=Precondition("replica1, running", _cascade_from_replica1),
          hint=N_("Add a replica of replica1, lab.archive.add_cascade(cluster, 'replica2', upstream='replica1'): the "
                  "check asks replica1 (not the primary) which standbys stream from it (pg_stat_replication)."))
def _cascade_streaming(cluster, replica1):
    streaming = replica1.sql("SELECT application_name, state FROM pg_stat_replication", dbname="postgres")
    if streaming.empty:
        return False, _("nothing streams from replica1: lab.archive.add_cascade(cluster, 'replica2', "
                        "upstream='replica1') adds a replica of it")
    ok = streaming[streaming["state"] == "streaming"]["application_name"].tolist()
    if not ok:
        return False, _("replica1 sends to {standbys}, but not streaming yet: check again").format(
            standbys=", ".join(streaming["application_name"]))
    return True, ngettext("{standbys} streams from replica1, which streams from the primary",
                          "{standbys} stream from replica1, which streams from the primary", len(ok)).format(
        standbys=", ".join(ok))


@exercise("10.4", N_("how many segments the replica without a slot fetched from the archive"), answer=True,
          hint=N_("After lab.archive.outrun(cluster), read the log of the replica without a slot "
                  "(cluster.node('no_slot').logs(200)) and count the lines 'restored log file ... from archive'; "
                  "answer with that number."))
def _segments_from_archive(cluster, answer):
    given = as_count(answer)
    if given is None:
        return False, _("answer with a whole number, e.g. answer=4 (not {answer!r})").format(answer=answer)
    names = {n.name: n for n in cluster.nodes}
    node = names.get("no_slot")
    if node is None:
        return False, _("there is no replica no_slot: lab.archive.replica_without_slot(cluster), then outrun(cluster)")
    count = sum("restored log file" in ln and "from archive" in ln for ln in node.logs(5000).splitlines())
    if count == 0:
        return False, _("no_slot has restored nothing from the archive yet: run lab.archive.outrun(cluster) first")
    if given == count:
        return True, _("right: no_slot restored {count} files from the archive (segments, and a timeline history "
                       "file if one was asked for) that the primary no longer had, then streamed again").format(
            count=count)
    return False, _("not what no_slot's log says: count its lines with 'restored log file' "
                    "(cluster.node('no_slot').logs(200))")
