"""Chapter 04's self-checks (hot standby); ``lab.checks.check("04.1", cluster, answer=...)``."""
from __future__ import annotations

import time

from ..errors import LabError, Timeout
from ..standby import lag_table, replay_pause_state, slot_xmin, wait_replayed
from .answers import as_count
from .registry import RUNNING_REPLICA, exercise


@exercise("04.1", "how many replica queries a conflict cancelled", answer=True, needs=RUNNING_REPLICA)
def _snapshot_conflicts(cluster, replica, answer):
    """Ask the replica (not the primary) for confl_snapshot in pg_stat_database_conflicts, on the row of this
    database (current_database()), and answer with that number."""
    given = as_count(answer)
    if given is None:
        return False, f"answer with a whole number, e.g. answer=7 (not {answer!r})"
    count = int(replica.scalar("SELECT confl_snapshot FROM pg_stat_database_conflicts "
                               "WHERE datname = current_database()"))
    if given == count:
        return True, (f"right: {count} quer{'y' if count == 1 else 'ies'} on {replica.name} "
                      "were cancelled because replay had to remove rows their snapshot could still see")
    return False, (f"not what {replica.name} says: ask it (not the primary) for confl_snapshot in "
                   "pg_stat_database_conflicts, on the row of this database (current_database())")


@exercise("04.2", "hot_standby_feedback holds back the primary's VACUUM", needs=RUNNING_REPLICA)
def _feedback_holds_horizon(cluster, replica):
    """Turn hot_standby_feedback on on the replica, cluster.node('replica1').set(hot_standby_feedback=True):
    the primary then keeps an xmin for it (pg_replication_slots.xmin)."""
    setting = replica.scalar("SELECT current_setting('hot_standby_feedback')")
    if setting != "on":
        return False, (f"hot_standby_feedback is {setting} on {replica.name}: turn it on with "
                       f"cluster.node({replica.name!r}).set(hot_standby_feedback=True)")
    deadline = time.monotonic() + 3  # the replica reports every wal_receiver_status_interval
    xmin = slot_xmin(cluster, replica)
    while xmin is None and time.monotonic() < deadline:
        time.sleep(0.1)
        xmin = slot_xmin(cluster, replica)
    if xmin is None:
        return False, (f"hot_standby_feedback is on, but the primary keeps no xmin for {replica.name}: "
                       "is it streaming? see lab.replication.stat_replication(cluster)")
    return True, (f"the primary keeps xmin {xmin} for {replica.name} (pg_replication_slots.xmin): VACUUM "
                  "there cannot remove rows deleted after it. Now turn it off again: "
                  f"cluster.node({replica.name!r}).set(hot_standby_feedback=None)")


@exercise("04.3", "a paused replica still receives WAL", needs=RUNNING_REPLICA)
def _paused_still_receives(cluster, replica):
    """Pause the replica's replay with lab.standby.pause_replay(cluster, 'replica1'), then INSERT a row on the
    primary: the replica receives its WAL but does not apply it."""
    row = lag_table(cluster).set_index("node").loc[replica.name]
    if row["replay"] == "not paused":
        return False, (f"{replica.name}'s replay is not paused: pause it with "
                       f"lab.standby.pause_replay(cluster, {replica.name!r}), then write a row on the primary")
    if not row["unreplayed_bytes"]:
        return False, (f"{replica.name} is paused and has applied all it received: now INSERT a row on the "
                       "primary and check again")
    try:
        seen = replica.scalar("SELECT max(id) FROM test_replication")
        newest = cluster.primary.scalar("SELECT max(id) FROM test_replication")
    except LabError as e:
        return False, f"could not compare the rows: {e}"
    stale = "" if seen == newest else f" (its newest test_replication row is id {seen}, the primary's {newest})"
    return True, (f"{replica.name} is paused and has received {row['unreplayed_bytes']} bytes of WAL it has not "
                  f"applied{stale}. Now resume it: lab.standby.resume_replay(cluster, {replica.name!r})")


@exercise("04.4", "replica1 applies WAL again", needs=RUNNING_REPLICA)
def _replica_applies_again(cluster, replica):
    """Resume the replica's replay, lab.standby.resume_replay(cluster, 'replica1'), and reset the setting that
    delays it (lab.standby.standby_settings(cluster) shows it)."""
    state = replay_pause_state(replica)
    if state != "not paused":
        return False, (f"{replica.name}'s replay is {state}: who pauses it, resumes it "
                       f"(lab.standby.resume_replay(cluster, {replica.name!r}))")
    delay = replica.scalar("SELECT current_setting('recovery_min_apply_delay')")
    if delay not in ("0", "0ms"):
        return False, (f"{replica.name} receives WAL but holds each COMMIT back: look at "
                       "lab.standby.standby_settings(cluster) for the setting that delays replay")
    try:
        lsn = wait_replayed(cluster.primary, replica, timeout=5)
    except Timeout:
        row = lag_table(cluster).set_index("node").loc[replica.name]
        return False, (f"{replica.name} is {row['lag_bytes']} bytes behind and not catching up: see "
                       f"lab.standby.lag_table(cluster) and cluster.node({replica.name!r}).logs()")
    return True, f"{replica.name} replays without pause or delay: it has applied the primary's WAL up to {lsn}"
