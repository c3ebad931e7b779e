"""Chapter 03's self-checks: base backups and replication slots, checked against the real cluster.

>>> lab.checks.check("03.1", cluster, answer="000000010000000000000003")   # doctest: +SKIP
>>> lab.checks.exercises("03")                                             # doctest: +SKIP
"""
from __future__ import annotations

import re

from ..backups import known_backups
from ..errors import Timeout
from ..i18n import N_, _, ngettext
from ..slots import WAL_GONE, inactive_slots, slot_of, slot_table, wal_settings
from .memory import recall, remember
from .registry import NO_REPLICA, exercise

_WAL_FILE_RE = re.compile(r"^[0-9A-F]{24}$")
_LSN_RE = re.compile(r"^[0-9A-F]+/[0-9A-F]+$")


@exercise("03.1", N_("the WAL file a base backup starts in"), answer=True,
          hint=N_("Take a base backup with lab.backups.take_base_backup(cluster), read START WAL LOCATION in its "
                  "lab.backups.backup_label(path) and answer with the WAL file named in parentheses."))
def _backup_start(cluster, answer):
    if not isinstance(answer, str) or not answer.strip():
        return False, _("answer with a WAL file name (24 hex digits), e.g. answer='000000010000000000000003'")
    given = answer.strip().upper()
    backups = known_backups(cluster)
    if backups.empty:
        return False, _("this cluster holds no base backup yet: take one with lab.backups.take_base_backup(cluster)")
    hit = backups[backups["start_wal_file"] == given]
    if len(hit):
        row = hit.iloc[0]
        return True, _("right: the base backup in {where} starts at {lsn}, in WAL file {file} "
                       "(START WAL LOCATION in its backup_label)").format(
            where=row["where"], lsn=row["start_lsn"], file=given)
    if _LSN_RE.match(given):
        if given in set(backups["start_lsn"].str.upper()):
            return False, _("that is the LSN where it starts: the answer is the WAL file named in parentheses after it")
        return False, _("answer with the WAL file's name, not an LSN: it is in parentheses on START WAL LOCATION")
    if not _WAL_FILE_RE.match(given):
        return False, _("a WAL file name is 24 hex digits, like '000000010000000000000003', not {answer!r}").format(
            answer=answer)
    return False, _("no base backup in this cluster starts in that file: read START WAL LOCATION in "
                    "lab.backups.backup_label(path), or lab.backups.backup_label(cluster.node('replica1'))")


def _streaming(cluster) -> set:
    return set(cluster.primary.sql("SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'",
                                   dbname="postgres")["application_name"])


@exercise("03.2", N_("a replica that streams without a slot"),
          hint=N_("Take a base backup without -S, path = lab.backups.take_base_backup(cluster), and start a replica "
                  "from it with cluster.add_replica('replica_manual', from_backup=path): it streams with no slot."))
def _replica_without_slot(cluster):
    replicas = [r for r in cluster.replicas if r.is_running]
    if not replicas:
        return False, _("no replica runs: lab.up(replicas=1) starts replica1")
    streaming = _streaming(cluster)
    slotless = [r for r in replicas if not slot_of(r)]
    for r in slotless:
        if r.name in streaming:
            return True, _("{replica} streams from {primary} with no slot: nothing on the primary "
                           "keeps WAL for it while it is away").format(replica=r.name, primary=cluster.primary.name)
    if slotless:
        r = slotless[0]
        return False, _("{replica} has no slot but does not stream: see cluster.node({replica!r}).logs() "
                        "(if its WAL is gone, rebuild it: exercise 03.5)").format(replica=r.name)
    return False, _("every replica streams through a slot ({replicas}): take a base "
                    "backup without -S, path = lab.backups.take_base_backup(cluster), and start it with "
                    "cluster.add_replica('replica_manual', from_backup=path)").format(
        replicas=", ".join(r.name for r in replicas))


def _names(answer):
    if answer is None or (isinstance(answer, str) and answer.strip().lower() in ("", "none")):
        return set()
    items = [answer] if isinstance(answer, str) else answer
    if not isinstance(items, (list, tuple, set, frozenset)) or not all(isinstance(a, str) for a in items):
        return None
    return {a.strip() for a in items}


@exercise("03.3", N_("which slots have no consumer"), answer=True,
          hint=N_("Ask the primary SELECT slot_name FROM pg_replication_slots WHERE NOT active and answer with the "
                  "slot name(s), or [] for none."))
def _which_inactive(cluster, answer):
    given = _names(answer)
    if given is None:
        return False, _("answer with a slot name, a list of names, or [] for none (not {answer!r})").format(
            answer=answer)
    table = inactive_slots(cluster)
    _note_forgotten(cluster, table)
    inactive = set(table["slot_name"])
    if given == inactive:
        if not inactive:
            return True, _("right: every slot on the primary has a replica streaming through it")
        return True, ngettext("right: {slots} has no consumer and keep(s) WAL on the primary for nobody now",
                              "right: {slots} have no consumer and keep(s) WAL on the primary for nobody now",
                              len(inactive)).format(slots=", ".join(sorted(inactive)))
    slots = set(slot_table(cluster)["slot_name"])
    unknown = given - slots
    if unknown:
        if not slots:
            return False, _("no slot {unknown} on the primary: the slots are none").format(
                unknown=", ".join(sorted(unknown)))
        return False, _("no slot {unknown} on the primary: the slots are {slots}").format(
            unknown=", ".join(sorted(unknown)), slots=", ".join(sorted(slots)))
    return False, _("not what the primary says: SELECT slot_name FROM pg_replication_slots WHERE NOT active")


def _note_forgotten(cluster, inactive) -> set:
    """Write down the slots no replica owns in ``inactive`` (an inactive_slots table); every one seen so far."""
    seen = set(recall(cluster, "03.4").get("forgotten", []))
    now = set(inactive.loc[inactive["owner"].isna(), "slot_name"])
    if now - seen:
        seen |= now
        remember(cluster, "03.4", {"forgotten": sorted(seen)})
    return seen


@exercise("03.4", N_("your forgotten slot dropped, settings back to their defaults"),
          hint=N_("Create a slot of your own (lab.slots.create_slot(cluster, 'mine')) and check 03.3 while it exists; "
                  "then drop it and every other slot no replica uses (lab.slots.drop_slot), and reset what you set by "
                  "ALTER SYSTEM (lab.slots.wal_settings(cluster) shows it) with node.set(name=None)."))
def _tidy(cluster):
    inactive = inactive_slots(cluster)
    seen = _note_forgotten(cluster, inactive)
    forgotten = inactive[inactive["owner"].isna()]
    if len(forgotten):
        row = forgotten.iloc[0]
        return False, _("slot {slot!r} keeps {retained} for no replica of this cluster: "
                        "drop it with lab.slots.drop_slot(cluster, {slot!r})").format(
            slot=row["slot_name"], retained=row["retained"] or "WAL")
    settings = wal_settings(cluster)
    changed = settings[settings["set_by_alter_system"]]
    if len(changed):
        row = changed.iloc[0]
        if row["node"] != cluster.primary.name:
            return False, _("{setting} is still {value} on {node} (ALTER SYSTEM, in its postgresql.auto.conf): reset "
                            "it with cluster.node({node!r}).set({setting}=None); a replica copied it from the "
                            "primary's with its base backup: resetting the primary first and rebuilding the replica "
                            "works too").format(setting=row["setting"], value=row["value"], node=row["node"])
        return False, _("{setting} is still {value} on {node} (ALTER SYSTEM, in its postgresql.auto.conf): reset "
                        "it with cluster.node({node!r}).set({setting}=None)").format(
            setting=row["setting"], value=row["value"], node=row["node"])
    if not seen:
        return False, _("no slot of yours yet: create one with lab.slots.create_slot(cluster, 'mine'), check 03.3 "
                        "while it exists, then drop it and check again")
    now = settings[settings["node"] == cluster.primary.name]
    values = ", ".join(f"{r.setting} = {r.value}" for r in now.itertuples())
    return True, _("{slots} gone: every slot left belongs to a replica, and no node sets these by ALTER SYSTEM "
                   "({values} on the primary)").format(slots=", ".join(repr(n) for n in sorted(seen)), values=values)


@exercise("03.5", N_("a replica broken (its WAL gone) and repaired"),
          hint=N_("With a replica without a slot and cluster.primary.set(wal_keep_size=0): stop it, "
                  "lab.slots.write_wal(cluster, 4), lab.slots.checkpoint(cluster), start it and check (❌: its WAL is "
                  "gone); rebuild it (cluster.remove_replica, then cluster.add_replica from a fresh base backup) and "
                  "check again until every replica streams."))
def _broken_and_repaired(cluster):
    replicas = cluster.replicas
    if not replicas:
        return False, _(NO_REPLICA)
    seen = recall(cluster, "03.5")
    broken, repaired = dict(seen.get("broken", {})), set(seen.get("repaired", []))
    stopped = [r.name for r in replicas if not r.is_running]
    if stopped:
        return False, _("{replica} is stopped: start it with cluster.node({replica!r}).start()").format(
            replica=stopped[0])
    streaming = _streaming(cluster)
    behind = [r for r in replicas if r.name not in streaming and WAL_GONE not in r.logs(50)]
    if behind:  # just started, perhaps: give it a moment to reach 'streaming'
        try:
            cluster.wait_streaming(timeout=5, names=[r.name for r in behind])
        except Timeout:
            pass
        streaming = _streaming(cluster)
    for r in replicas:
        if r.name in streaming:
            continue
        if WAL_GONE in r.logs(50):
            slot = slot_of(r)
            if r.name not in broken or r.name in repaired:
                broken[r.name] = {"slot": bool(slot)}
                repaired.discard(r.name)
                remember(cluster, "03.5", {"broken": broken, "repaired": sorted(repaired)})
            if slot:
                return False, _("broken: the primary no longer has the WAL {replica} needs (see its logs). Repair it, "
                                "then check again: cluster.remove_replica({replica!r}), then a fresh base backup: "
                                "cluster.add_replica({replica!r})").format(replica=r.name)
            return False, _("broken: the primary no longer has the WAL {replica} needs (see its logs). Repair it, "
                            "then check again: cluster.remove_replica({replica!r}), "
                            "path = lab.backups.take_base_backup(cluster), "
                            "cluster.add_replica({replica!r}, from_backup=path)").format(replica=r.name)
        return False, _("{replica} runs but does not stream: see cluster.node({replica!r}).logs()").format(
            replica=r.name)
    lost = slot_table(cluster)
    lost = lost[lost["wal_status"] == "lost"]
    if len(lost):
        name = lost.iloc[0]["slot_name"]
        return False, _("slot {slot!r} is lost (the primary gave up its WAL): drop it with "
                        "lab.slots.drop_slot(cluster, {slot!r}), or rebuild its replica").format(slot=name)
    back = {name for name in broken if name in streaming} - repaired
    if back:
        repaired |= back
        remember(cluster, "03.5", {"broken": broken, "repaired": sorted(repaired)})
    names = ", ".join(r.name for r in replicas)
    if repaired:
        fixed = ", ".join(sorted(repaired))
        if len(repaired) == 1:
            return True, ngettext("{fixed} lost its WAL and streamed again once rebuilt; now {replicas} streams from "
                                  "{primary}, and no slot is lost",
                                  "{fixed} lost its WAL and streamed again once rebuilt; now {replicas} stream from "
                                  "{primary}, and no slot is lost",
                                  len(replicas)).format(fixed=fixed, replicas=names, primary=cluster.primary.name)
        return True, ngettext("{fixed} lost their WAL and streamed again once rebuilt; now {replicas} streams from "
                              "{primary}, and no slot is lost",
                              "{fixed} lost their WAL and streamed again once rebuilt; now {replicas} stream from "
                              "{primary}, and no slot is lost",
                              len(replicas)).format(fixed=fixed, replicas=names, primary=cluster.primary.name)
    if broken:
        gone = ", ".join(sorted(broken))
        return False, _("{replicas} lost its WAL and was removed before it streamed again: rebuild it under the same "
                        "name (a fresh base backup), check until ✅, then remove it").format(replicas=gone)
    return False, _("nothing broken yet: make a replica without a slot (as in 03.2), "
                    "cluster.primary.set(wal_keep_size=0), stop it, lab.slots.write_wal(cluster, 4), "
                    "lab.slots.checkpoint(cluster), start it, and check: ❌ with the way to repair it")
