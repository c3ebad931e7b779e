"""Chapter 04's self-checks (hot standby); ``lab.checks.check("04.1", cluster, answer=...)``."""
from __future__ import annotations

import time

from ..errors import LabError, Timeout
from ..i18n import N_, _, ngettext
from ..standby import lag_table, replay_pause_state, slot_xmin, wait_replayed
from .answers import as_count
from .registry import RUNNING_REPLICA, exercise


@exercise("04.1", N_("how many replica queries a conflict cancelled"), answer=True, needs=RUNNING_REPLICA,
          hint=N_("Ask the replica (not the primary) for confl_snapshot in pg_stat_database_conflicts, on the row of "
                  "this database (current_database()), and answer with that number."))
def _snapshot_conflicts(cluster, replica, answer):
    given = as_count(answer)
    if given is None:
        return False, _("answer with a whole number, e.g. answer=7 (not {answer!r})").format(answer=answer)
    count = int(replica.scalar("SELECT confl_snapshot FROM pg_stat_database_conflicts "
                               "WHERE datname = current_database()"))
    if given == count:
        return True, ngettext("right: {count} query on {replica} were cancelled because replay had to remove rows "
                              "their snapshot could still see",
                              "right: {count} queries on {replica} were cancelled because replay had to remove rows "
                              "their snapshot could still see", count).format(count=count, replica=replica.name)
    return False, _("not what {replica} says: ask it (not the primary) for confl_snapshot in "
                    "pg_stat_database_conflicts, on the row of this database (current_database())").format(
        replica=replica.name)


@exercise("04.2", N_("hot_standby_feedback holds back the primary's VACUUM"), needs=RUNNING_REPLICA,
          hint=N_("Turn hot_standby_feedback on on the replica, cluster.node('replica1').set(hot_standby_feedback=True): "
                  "the primary then keeps an xmin for it (pg_replication_slots.xmin)."))
def _feedback_holds_horizon(cluster, replica):
    setting = replica.scalar("SELECT current_setting('hot_standby_feedback')")
    if setting != "on":
        return False, _("hot_standby_feedback is {setting} on {replica}: turn it on with "
                        "cluster.node({replica!r}).set(hot_standby_feedback=True)").format(
            setting=setting, replica=replica.name)
    deadline = time.monotonic() + 3  # the replica reports every wal_receiver_status_interval
    xmin = slot_xmin(cluster, replica)
    while xmin is None and time.monotonic() < deadline:
        time.sleep(0.1)
        xmin = slot_xmin(cluster, replica)
    if xmin is None:
        return False, _("hot_standby_feedback is on, but the primary keeps no xmin for {replica}: "
                        "is it streaming? see lab.replication.stat_replication(cluster)").format(replica=replica.name)
    return True, _("the primary keeps xmin {xmin} for {replica} (pg_replication_slots.xmin): VACUUM "
                   "there cannot remove rows deleted after it. Now turn it off again: "
                   "cluster.node({replica!r}).set(hot_standby_feedback=None)").format(xmin=xmin, replica=replica.name)


@exercise("04.3", N_("a paused replica still receives WAL"), needs=RUNNING_REPLICA,
          hint=N_("Pause the replica's replay with lab.standby.pause_replay(cluster, 'replica1'), then INSERT a row "
                  "on the primary: the replica receives its WAL but does not apply it."))
def _paused_still_receives(cluster, replica):
    row = lag_table(cluster).set_index("node").loc[replica.name]
    if row["replay"] == "not paused":
        return False, _("{replica}'s replay is not paused: pause it with "
                        "lab.standby.pause_replay(cluster, {replica!r}), then write a row on the primary").format(
            replica=replica.name)
    if not row["unreplayed_bytes"]:
        return False, _("{replica} is paused and has applied all it received: now INSERT a row on the "
                        "primary and check again").format(replica=replica.name)
    try:
        seen = replica.scalar("SELECT max(id) FROM test_replication")
        newest = cluster.primary.scalar("SELECT max(id) FROM test_replication")
    except LabError as e:
        return False, _("could not compare the rows: {error}").format(error=e)
    if seen == newest:
        return True, _("{replica} is paused and has received {bytes} bytes of WAL it has not applied. "
                       "Now resume it: lab.standby.resume_replay(cluster, {replica!r})").format(
            replica=replica.name, bytes=row["unreplayed_bytes"])
    return True, _("{replica} is paused and has received {bytes} bytes of WAL it has not applied (its newest "
                   "test_replication row is id {seen}, the primary's {newest}). "
                   "Now resume it: lab.standby.resume_replay(cluster, {replica!r})").format(
        replica=replica.name, bytes=row["unreplayed_bytes"], seen=seen, newest=newest)


@exercise("04.4", N_("replica1 applies WAL again"), needs=RUNNING_REPLICA,
          hint=N_("Resume the replica's replay, lab.standby.resume_replay(cluster, 'replica1'), and reset the setting "
                  "that delays it (lab.standby.standby_settings(cluster) shows it)."))
def _replica_applies_again(cluster, replica):
    state = replay_pause_state(replica)
    if state != "not paused":
        return False, _("{replica}'s replay is {state}: who pauses it, resumes it "
                        "(lab.standby.resume_replay(cluster, {replica!r}))").format(replica=replica.name, state=state)
    delay = replica.scalar("SELECT current_setting('recovery_min_apply_delay')")
    if delay not in ("0", "0ms"):
        return False, _("{replica} receives WAL but holds each COMMIT back: look at "
                        "lab.standby.standby_settings(cluster) for the setting that delays replay").format(
            replica=replica.name)
    try:
        lsn = wait_replayed(cluster.primary, replica, timeout=5)
    except Timeout:
        row = lag_table(cluster).set_index("node").loc[replica.name]
        return False, _("{replica} is {bytes} bytes behind and not catching up: see "
                        "lab.standby.lag_table(cluster) and cluster.node({replica!r}).logs()").format(
            replica=replica.name, bytes=row["lag_bytes"])
    return True, _("{replica} replays without pause or delay: it has applied the primary's WAL up to {lsn}").format(
        replica=replica.name, lsn=lsn)
