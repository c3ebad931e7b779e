"""The cluster: a primary and its hot-standby replicas, with its state on disk.

>>> import lab
>>> cluster = lab.up(replicas=1)      # doctest: +SKIP
>>> cluster.status()                  # doctest: +SKIP
>>> cluster.down()                    # doctest: +SKIP
"""
from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import pandas as pd

from . import conninfo
from .backends import NAMES as BACKEND_NAMES, backend_class, choose_backend, links, make_backend
from .backends.pgconf import RECOVERY_SETTINGS
from .errors import BadArgument, LabError, NotRunning, Timeout, need_bool, need_choice, need_number, need_str
from .i18n import N_, _
from .lsn import format_lsn, lsn_diff, parse_lsn, record_end
from .node import Node, Role, need_node_name, valid_node_name
from .services import stop_all as stop_services
from .system import ports
from .system.home import LabHome, register_user

MAX_REPLICAS = 5
MAX_STANDALONES = 2  # nodes outside the physical cluster (a subscriber, a copy restored to a point in time)
_STORAGE_KINDS = {"directory": N_("directory"), "volume": N_("Docker volume")}  # cluster.storage()'s kind
RECOVERY_TIMEOUT = 300  # how long a standalone node made from a backup may take to reach its recovery target


def _say(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, flush=True)


def _role_name(role) -> str:
    """A node's role (a Role, or its value) in words of the current language, for a sentence."""
    value = getattr(role, "value", role)
    names = {"primary": _("primary"), "replica": _("replica"), "former primary": _("former primary"),
             "standalone": _("standalone")}
    return names.get(value, str(value))


def _need_backup_dir(from_backup) -> None:
    """``from_backup`` of add_replica/add_standalone: None, or a path (a directory's name)."""
    if from_backup is not None and (not isinstance(from_backup, (str, os.PathLike))
                                    or not str(os.fspath(from_backup)).strip()
                                    or "\0" in str(os.fspath(from_backup))):
        raise BadArgument(_("from_backup is the directory of a base backup (a path), not {value!r:.60}").format(
            value=from_backup))


class Cluster:
    """One primary and its replicas, as recorded in a lab home's state file."""

    def __init__(self, home: LabHome, state: dict):
        self.home = home
        self._state = state
        self.backend = make_backend(home, state)

    # --- nodes ----------------------------------------------------------------------
    def _reload(self) -> None:
        st = self.home.load()
        if st is None:
            raise LabError(_("the cluster in {path} is gone (down(wipe=True)?): start one with lab.up()").format(
                path=self.home.path))
        self._state = st
        self.backend.state = st  # the backend reads ports and secrets from the same state

    def _save(self) -> None:
        self.home.save(self._state)

    @property
    def nodes(self) -> list[Node]:
        names = sorted(self._state["nodes"], key=lambda n: (n != self._state["primary"], n))
        return [Node(self, n) for n in names]

    def node(self, name: str) -> Node:
        need_node_name(name)
        if name not in self._state["nodes"]:
            raise LabError(_("no node {name!r} in this cluster: nodes are {nodes}").format(
                name=name, nodes=", ".join(self._state["nodes"])))
        return Node(self, name)

    @property
    def primary(self) -> Node:
        return Node(self, self._state["primary"])

    @property
    def replicas(self) -> list[Node]:
        """The physical standbys (cascading ones included), never a standalone node."""
        return [n for n in self.nodes if n.role == Role.REPLICA]

    @property
    def standalones(self) -> list[Node]:
        """The nodes outside the physical cluster (``add_standalone``): writable, streaming from nobody."""
        return [n for n in self.nodes if n.role == Role.STANDALONE]

    def _physical_count(self) -> int:
        """Nodes besides the primary that count towards the replica limit (a former primary does)."""
        return sum(1 for s in self._state["nodes"].values()
                   if s["name"] != self._state["primary"] and s["role"] != Role.STANDALONE)

    def _upstream_spec(self, spec: dict) -> dict:
        """The node a replica streams from: its recorded upstream (a cascade) if it is still a
        standby of this cluster or the primary, else the primary."""
        up = spec.get("upstream")
        nodes = self._state["nodes"]
        if up and up in nodes and up != spec["name"] and nodes[up]["role"] in (Role.REPLICA, Role.PRIMARY):
            return nodes[up]
        return nodes[self._state["primary"]]

    @property
    def pg_version(self) -> str:
        """The server's version (asked once from the primary when the backend did not record it)."""
        v = self._state.get("pg_version")
        if v is None and self.primary.is_running:
            v = self.primary.scalar("SHOW server_version", dbname="postgres").split()[0]
            self._state["pg_version"] = v
            self._save()
        return v or "?"

    @property
    def data_root(self) -> "Path | None":
        """Where the local backend keeps the data directories (None for containers)."""
        return Path(self._state["data_root"]) if self._state.get("data_root") else None

    def storage(self) -> pd.DataFrame:
        """Where each node keeps its data (a directory, or a Docker volume) and whether it exists."""
        rows = [dict(node=spec["name"], **self.backend.storage_of(spec)) for spec in self._state["nodes"].values()]
        for row in rows:  # the backends' words for it, in the lab's language
            kind = _STORAGE_KINDS.get(row["kind"])
            row["kind"] = _(kind) if kind else row["kind"]
        return pd.DataFrame(rows, columns=["node", "kind", "where", "exists"])

    @property
    def credentials(self) -> dict:
        """The generated logins of this cluster (keep them out of anything you share)."""
        st = self._state
        return {"user": st["superuser"], "password": st["password"], "database": st["app_db"],
                "replication_user": st["replication_user"], "replication_password": st["replication_password"]}

    @property
    def backend_name(self) -> str:
        """The backend's name, for display ("local", "compose")."""
        return self.backend.name

    def __repr__(self):
        parts = ", ".join(f"{n.name} ({n.role}, {n.state}, :{n.port})" for n in self.nodes)
        return f"<Cluster PostgreSQL {self.pg_version} in {self.home.path}: {parts}>"

    # --- lifecycle of nodes -----------------------------------------------------------
    def _start_node(self, name: str) -> None:
        with self.home.locked():
            self._reload()
            spec = self._state["nodes"][name]
            if self.backend.pid(spec):
                return
            port_before = spec["port"]
            self.backend.ensure_port(spec)
            self._save()
            primary_spec = None
            if spec["role"] == Role.REPLICA:
                primary_spec = self._upstream_spec(spec)
            self.backend.start(spec, self._state, primary_spec)  # may move it too (its port taken meanwhile)
            if spec["port"] != port_before:  # whoever streams from this node must find it on its new port
                for r in self.replicas:
                    if self._upstream_spec(r.spec)["name"] == name:
                        self.backend.retarget(r.spec, *self.backend.address_of(spec))
            self._save()

    def _stop_node(self, name: str, timeout: float = 30) -> None:
        self.backend.stop(self._state["nodes"][name], timeout)

    def _promote(self, name: str) -> None:
        with self.home.locked():
            self._reload()
            spec = self._state["nodes"][name]
            if spec["role"] == Role.STANDALONE:
                self._end_recovery(name)
                return
            if spec["role"] != Role.REPLICA:
                raise LabError(_("{name} is not a replica (it is {role}): only a replica can be promoted").format(
                    name=name, role=_role_name(spec["role"])))
            if not self.backend.pid(spec):
                raise NotRunning(_("{name} is stopped: start it before promoting it").format(name=name))
            old = self._state["primary"]
            try:
                self.backend.promote(spec)
                self._wait_writable(name)
                self._record_promotion(name, old)
                self._drop_standby_settings(name)
                self._checkpoint_new_timeline(name)
                self._follow_primary()
            except BaseException:
                # the server may be promoted although a step raised: the lab's records follow what
                # the servers are, and what can still be done is done, before the error goes on
                self._settle_promotion(name, old)
                raise

    def _end_recovery(self, name: str) -> None:
        """``promote()`` of a standalone node paused at its recovery target: ``pg_promote()`` ends the
        pause and the recovery; it stays a standalone node (the cluster's primary does not change)."""
        node = Node(self, name)
        if not node.is_running:
            raise NotRunning(_("{name} is stopped: start it before promoting it").format(name=name))
        if node.scalar("SELECT pg_is_in_recovery()", dbname="postgres"):
            node.scalar("SELECT pg_promote(true, 60)", dbname="postgres")
        self._wait_writable(name)

    def _record_promotion(self, name: str, old: str) -> None:
        if old != name and old in self._state["nodes"]:
            self._state["nodes"][old]["role"] = Role.FORMER_PRIMARY.value
        self._state["nodes"][name]["role"] = Role.PRIMARY.value
        self._state["nodes"][name].pop("upstream", None)
        self._state["primary"] = name
        self._save()

    def _drop_standby_settings(self, name: str) -> None:
        """A primary keeps no standby settings: a base backup (or pg_rewind) of it would copy them,
        and a replica made from it would ask for this node's old slot."""
        node = Node(self, name)
        node.execute("ALTER SYSTEM RESET primary_conninfo", dbname="postgres")
        node.execute("ALTER SYSTEM RESET primary_slot_name", dbname="postgres")
        node.execute("SELECT pg_reload_conf()", dbname="postgres")

    def _checkpoint_new_timeline(self, name: str) -> None:
        """CHECKPOINT on a node just promoted.  After a promotion the end-of-recovery checkpoint runs
        in the background, and until it ends pg_control still names the old timeline: a pg_rewind
        from this node in that window (a replica that follows it, a former primary rejoining) can
        fail half-way ("source system was in unexpected state at end of rewind").  PostgreSQL's own
        pg_rewind tests checkpoint after promoting, and so does Patroni."""
        Node(self, name).execute("CHECKPOINT", dbname="postgres")

    def _settle_promotion(self, name: str, old: str) -> None:
        """After a promotion that raised half-way: if ``name`` left recovery, record it as the primary
        (``old`` as a former primary) and finish what can be finished; the caller re-raises."""
        try:
            if self._state["primary"] != name:
                if not self._left_recovery(name):
                    return
                self._record_promotion(name, old)
        except Exception:  # noqa: BLE001 (the original error is the one to raise)
            return
        for step in (lambda: self._drop_standby_settings(name), lambda: self._checkpoint_new_timeline(name),
                     self._follow_primary):
            try:
                step()
            except Exception:  # noqa: BLE001 (up() finishes it later; the original error goes on)
                pass

    def _left_recovery(self, name: str) -> bool:
        """Has this node's server left recovery (or is it leaving it: its control file says "in
        production" a moment before its sessions do)?"""
        node = Node(self, name)
        if not node.is_running:
            return False
        try:
            if node.scalar("SELECT pg_is_in_recovery()", dbname="postgres") is False:
                return True
            control = node.tool("pg_controldata", node.pgdata, check=False).stdout
        except LabError:
            return False
        if "in production" not in control:
            return False
        try:
            self._wait_writable(name)
        except LabError:
            return False
        return True

    def _wait_writable(self, name: str, timeout: float = 30) -> None:
        """Until a promoted node accepts writes (its control file says "in production" a moment
        before its sessions leave recovery)."""
        conn = Node(self, name).connect(dbname="postgres")
        try:
            deadline = time.monotonic() + timeout
            with conn.cursor() as cur:
                while True:
                    cur.execute("SELECT pg_is_in_recovery()")
                    if not cur.fetchone()[0]:
                        return
                    if time.monotonic() > deadline:
                        raise Timeout(_("{name} is still in recovery {seconds:g} s after its promotion: see its "
                                        "logs()").format(name=name, seconds=timeout))
                    time.sleep(0.002)
        finally:
            conn.close()

    def _follow_primary(self) -> None:
        """Point every replica at the current primary (after a promotion): its slot is created
        there, its primary_conninfo retargeted and reloaded.  A replica that had not gone past
        the fork switches to the new timeline by itself (recovery_target_timeline = 'latest'); one
        that had (it received WAL the new primary never got) is rewound at its next start.  A
        cascading replica whose upstream is still a standby (or is the promoted node itself) keeps
        following it, as PostgreSQL's own cascade does across a timeline switch; one whose upstream
        is a former primary now becomes an ordinary replica of the primary (its upstream forgotten)."""
        primary = self.primary
        failure = None
        for r in self.replicas:  # each one, even if one before it failed (the first failure is raised)
            if r.name == primary.name:
                continue
            if self._upstream_spec(r.spec)["name"] != primary.name:
                continue  # a cascade: its upstream, a standby, follows the primary for it
            if r.spec.pop("upstream", None) not in (None, primary.name):
                self._save()  # its upstream is no standby any more (a former primary): the primary's now
            try:
                if primary.is_running:
                    self._ensure_slot(r.name)
                self.backend.follow(r.spec, primary.spec)
            except Exception as e:  # noqa: BLE001 (re-raised below)
                failure = failure or e
        if failure is not None:
            raise failure

    def rejoin(self, name: str, quiet: bool = True) -> Node:
        """Make a former primary (or any node off the current timeline) a replica of the current
        primary: it is stopped if it runs (fenced), the primary checkpoints (so pg_rewind sees its
        new timeline), then ``replica/entrypoint.sh`` with REPLICA_REJOIN=1 rewinds it with
        pg_rewind and gives it its own slot; it starts on its own port (pg_rewind copied the
        primary's configuration; node.conf is rewritten at start).  Whatever it wrote after the
        fork is discarded: that is the point.  On compose the node's container does the same at its
        start: its role file says ``ROLE=replica`` with ``REPLICA_REJOIN=1`` (``master/entrypoint.sh``
        hands over to ``replica/entrypoint.sh``).

        >>> cluster.rejoin("primary")          # doctest: +SKIP
        """
        need_node_name(name)
        need_bool(quiet, "quiet")
        t0 = time.monotonic()
        with self.home.locked():
            self._reload()
            node = self.node(name)
            if name == self._state["primary"]:
                raise LabError(_("{name} is the current primary: rejoin a former primary, or switchover() "
                                 "first").format(name=name))
            if node.role == Role.STANDALONE:
                raise LabError(_("{name} is a standalone node, outside the physical cluster: it cannot rejoin; "
                                 "cluster.remove_node({name!r}) removes it, cluster.add_replica() adds a "
                                 "replica").format(name=name))
            primary = self.primary
            if not primary.is_running:
                raise NotRunning(_("the primary ({primary}) is stopped: start it before rejoining {name}").format(
                    primary=primary.name, name=name))
            spec = node.spec
            self.backend.stop(spec)
            primary.execute("CHECKPOINT", dbname="postgres")
            self.backend.ensure_port(spec)
            self._save()
            self.backend.prepare_replica(spec, self._state, primary.spec, rejoin=True)
            spec["role"] = Role.REPLICA.value
            spec.pop("upstream", None)  # rewound onto the primary: it streams from the primary
            self._save()
            self.backend.start(spec, self._state)
            self._save()
            # pg_rewind copies no replication slots: replicas cascading from this node get theirs back
            for r in self.replicas:
                if r.spec.get("upstream") == name:
                    self._ensure_slot(r.name, node=Node(self, name))
        self.wait_streaming(names=[name])
        _say(quiet, _("{name}: rewound and streaming from {primary} ({seconds:.1f} s)").format(
            name=name, primary=primary.name, seconds=time.monotonic() - t0))
        return Node(self, name)

    def switchover(self, name: str, timeout: float = 30, quiet: bool = True) -> Node:
        """A planned change of primary that loses no acknowledged write: the primary shuts down
        cleanly (its WAL senders first send every record, the shutdown checkpoint included, to the
        replicas), replica ``name`` replays all of it and is promoted, the other replicas follow
        it, and the old primary rejoins as its replica.  Clients are cut for the time it takes.

        >>> cluster.switchover("replica1")     # doctest: +SKIP
        """
        need_node_name(name)
        timeout = need_number(timeout, "timeout", lo=0, unit="seconds")
        need_bool(quiet, "quiet")
        t0 = time.monotonic()
        with self.home.locked():
            self._reload()
            target = self.node(name)
            old = self.primary
            if target.role != Role.REPLICA:
                raise LabError(_("{name} is the {role}: switch over to a replica").format(
                    name=name, role=_role_name(target.role)))
            if not target.is_running or not old.is_running:
                raise NotRunning(_("switchover needs the primary and {name} running: cluster.start() first").format(
                    name=name))
            self.wait_streaming(names=[name])
            old.stop()
            control = old.tool("pg_controldata", old.pgdata).stdout
            last = next(line.split(":", 1)[1].strip() for line in control.splitlines()
                        if line.startswith("Latest checkpoint location:"))
            deadline = time.monotonic() + timeout
            while True:
                replayed = target.scalar("SELECT pg_last_wal_replay_lsn()", dbname="postgres")
                if replayed and parse_lsn(replayed) > parse_lsn(last):
                    break
                if time.monotonic() > deadline:
                    old.start()
                    raise Timeout(_("{name} did not replay the old primary's shutdown checkpoint ({lsn}) within "
                                    "{seconds:g} s: nothing changed, {old} is the primary again").format(
                                        name=name, lsn=last, seconds=timeout, old=old.name))
                time.sleep(0.005)
            self._promote(name)
            self.rejoin(old.name)
            self.wait_streaming()  # the other replicas too (each one's WAL receiver reconnects)
        _say(quiet, _("switchover: {name} is the primary, {old} its replica ({seconds:.1f} s)").format(
            name=name, old=old.name, seconds=time.monotonic() - t0))
        return Node(self, name)

    def start(self, quiet: bool = True) -> "Cluster":
        """Start every stopped node (the primary first); data is kept."""
        need_bool(quiet, "quiet")
        with self.home.locked():
            self._reload()
            for n in self.nodes:
                if not n.is_running and n.role != Role.FORMER_PRIMARY:
                    t0 = time.monotonic()
                    n.start()
                    _say(quiet, _("{name}: started on 127.0.0.1:{port} ({seconds:.1f} s)").format(
                        name=n.name, port=n.port, seconds=time.monotonic() - t0))
        return self

    def down(self, wipe: bool = False, timeout: float = 30) -> None:
        """Stop every server (data kept, like ``docker compose down``); ``wipe=True`` also removes the data."""
        need_bool(wipe, "wipe")
        timeout = need_number(timeout, "timeout", lo=0, hi=3600, unit="seconds")
        with self.home.locked():
            self._reload()
            specs = list(self._state["nodes"].values())
            # replicas first, so none logs a lost primary on its way out
            specs.sort(key=lambda s: s["role"] == Role.PRIMARY)
            stop_services(self.home, wipe=wipe)  # like docker compose down: pgAdmin and the app go too
            self.backend.stop_many(specs, timeout)
            self.backend.after_down()
            ports.release_all(self.home.owner)
            if wipe:
                for s in specs:
                    self.backend.remove_data(s)
                self.backend.wipe()
                self.home.forget()

    # --- replicas --------------------------------------------------------------------
    def add_replica(self, name: "str | None" = None, quiet: bool = True, from_backup=None,
                    upstream: "str | None" = None) -> Node:
        """A new hot standby from a base backup of the primary, with its own slot.

        ``from_backup``: a base backup you took yourself (``pg_basebackup -R``) becomes the
        replica's data directory instead (it is moved, not copied; local backend).

        ``upstream``: the name of a running replica to cascade from: the base backup is taken from
        that standby, the new replica streams from it through a slot (named after the new replica)
        created on it, and the cluster records it.  After a failover it keeps following its
        upstream (which follows the new primary, or is it).

        A ``name`` that is already a replica of this cluster gives that replica back (started if it
        was stopped), with one line saying so: a cell that adds a named replica can run again.
        """
        if name is not None:
            need_str(name, "name", example="'replica3'")
            if not valid_node_name(name):
                raise BadArgument(_("bad replica name {name!r:.60}: use lowercase letters, digits and '_', "
                                    "starting with a letter (e.g. 'replica3')").format(name=name))
        need_bool(quiet, "quiet")
        _need_backup_dir(from_backup)
        if upstream is not None:
            need_str(upstream, "upstream", example="'replica1'")
        with self.home.locked():
            self._reload()
            if upstream is not None:
                up = self._state["nodes"].get(upstream)
                if up is None or up["role"] not in (Role.REPLICA, Role.PRIMARY):
                    names = ", ".join(r.name for r in self.replicas) or _("none: add one first")
                    raise LabError(_("upstream {upstream!r:.40} is not a replica of this cluster (replicas: {replicas}): "
                                     "a cascading replica streams from a standby").format(
                                         upstream=upstream, replicas=names))
                if upstream == self._state["primary"]:
                    upstream = None  # streaming from the primary is an ordinary replica
                elif not self.backend.pid(up):
                    raise NotRunning(_("{upstream} is stopped: start it before cascading a replica from it").format(
                        upstream=upstream))
            if name is None:
                i = 1
                while f"replica{i}" in self._state["nodes"]:
                    i += 1
                name = f"replica{i}"
            if name in self._state["nodes"]:
                return self._existing_replica(name, from_backup)
            limit = min(MAX_REPLICAS, self.backend.max_replicas)
            if self._physical_count() >= limit:  # every node but the primary (a former primary too)
                raise LabError(_("this cluster runs at most {limit} replicas ({backend} backend): "
                                 "remove one first").format(limit=limit, backend=self.backend_name))
            if not self.primary.is_running:
                raise NotRunning(_("the primary ({primary}) is stopped: start it before adding a replica").format(
                    primary=self.primary.name))
            port = ports.claim_free_ports(1, self.home.owner)[0]
            spec = self.backend.node_spec(name, Role.REPLICA, port)
            if upstream is not None:
                spec["upstream"] = upstream
            self._state["nodes"][name] = spec
            self._save()
            t0 = time.monotonic()
            try:
                if from_backup is not None:
                    self.backend.adopt(spec, Path(from_backup))
                self.backend.start(spec, self._state, self._upstream_spec(spec))
                self._save()
                self.wait_streaming(names=[name])
            except BaseException:
                self._discard_replica(name)
                raise
            _say(quiet, _("{name}: streaming from {upstream} on 127.0.0.1:{port} ({seconds:.1f} s)").format(
                name=name, upstream=self._upstream_spec(spec)["name"], port=port, seconds=time.monotonic() - t0))
            return Node(self, name)

    def _existing_replica(self, name: str, from_backup) -> Node:
        """add_replica(name) for a name this cluster has: that replica, as it is (started if stopped)."""
        node = Node(self, name)
        if name == self._state["primary"]:
            raise LabError(_("{name} is this cluster's primary: give the new replica another name, "
                             "e.g. cluster.add_replica('replica3')").format(name=name))
        if node.role == Role.STANDALONE:
            raise LabError(_("{name} is a standalone node of this cluster: give the new replica another name, "
                             "e.g. cluster.add_replica('replica3')").format(name=name))
        if node.role != Role.REPLICA:
            raise LabError(_("{name} exists already, as a {role}: cluster.rejoin({name!r}) makes it a replica "
                             "again, or give the new replica another name").format(name=name, role=_role_name(node.role)))
        print(_("{name}: exists already, a replica of {upstream} {given_back}").format(
            name=name, upstream=self._upstream_spec(node.spec)["name"], given_back=_given_back(node, from_backup)),
            flush=True)
        return node

    def remove_replica(self, name: str) -> None:
        """Stop a replica, remove its data and drop its replication slot on the primary (on its
        upstream for a cascading one).  Replicas cascading from it are pointed at the primary
        first (one line each says so).  A standalone node is removed as ``remove_node`` does."""
        need_node_name(name)
        with self.home.locked():
            self._reload()
            node = self.node(name)
            if node.role == Role.PRIMARY:
                raise LabError(_("{name} is the primary: promote a replica before removing it").format(name=name))
            self._repoint_children(name)
            self._discard_replica(name)

    def remove_node(self, name: str) -> None:
        """Stop a standalone node (or a replica: as ``remove_replica``), remove its data and free its port.

        >>> cluster.remove_node("analytics")     # doctest: +SKIP
        """
        self.remove_replica(name)

    # --- standalone nodes ------------------------------------------------------------------
    def add_standalone(self, name: str = "analytics", from_backup=None, recovery: "dict | None" = None,
                       quiet: bool = True) -> Node:
        """A server of the lab outside the physical cluster: writable, streaming from nobody, and
        nobody streams from it (chapter 09's subscriber, chapter 10's copy restored to a point in time).

        Without ``from_backup`` it is made as the primary was (its configuration, roles, passwords,
        ``crypto_db`` and the course's objects).  ``from_backup``: the directory of a plain base
        backup on this host (``lab.backups.take_base_backup``) becomes its data (it is moved); its
        standby settings are removed, and ``recovery`` (``restore_command``, ``recovery_target_lsn``
        / ``_time`` / ``_name``, ``recovery_target_action`` ...) is written to its
        postgresql.auto.conf with a recovery.signal.  It returns once the node accepts connections:
        out of recovery, or paused at its target (``recovery_target_action='pause'``: read-only
        until ``node.promote()``).  If recovery fails, the LabError quotes the server's FATAL line
        and the node is kept, stopped, for ``node.logs()`` (``remove_node`` removes it).

        The same ``name`` again gives the existing standalone node back (started if stopped).

        >>> sub = cluster.add_standalone("analytics")                       # doctest: +SKIP
        >>> pitr = cluster.add_standalone("pitr", from_backup=backup_dir,
        ...     recovery={"restore_command": "cp /archive/%f %p", "recovery_target_lsn": "0/5000060",
        ...               "recovery_target_action": "promote"})             # doctest: +SKIP
        """
        need_str(name, "name", example="'analytics'")
        if not valid_node_name(name):
            raise BadArgument(_("bad node name {name!r:.60}: use lowercase letters, digits and '_', "
                                "starting with a letter (e.g. 'analytics')").format(name=name))
        need_bool(quiet, "quiet")
        _need_backup_dir(from_backup)
        recovery = _check_recovery(recovery, from_backup)
        with self.home.locked():
            self._reload()
            if name in self._state["nodes"]:
                return self._existing_standalone(name, from_backup)
            limit = min(MAX_STANDALONES, self.backend.max_standalones)
            if limit == 0:
                raise LabError(_("the {backend} backend runs no standalone nodes: use a cluster of "
                                 "the local or compose backend").format(backend=self.backend_name))
            if len(self.standalones) >= limit:
                raise LabError(_("this cluster runs at most {limit} standalone nodes ({backend} backend), "
                                 "here {nodes}: remove one first with cluster.remove_node(name)").format(
                                     limit=limit, backend=self.backend_name,
                                     nodes=", ".join(n.name for n in self.standalones)))
            if from_backup is not None and not Path(from_backup).is_dir():
                raise LabError(_("{path} is not a directory: pass the directory of a base backup "
                                 "(lab.backups.take_base_backup(cluster) returns one)").format(path=from_backup))
            port = ports.claim_free_ports(1, self.home.owner)[0]
            spec = self.backend.node_spec(name, Role.STANDALONE, port)
            if recovery:
                spec["recovery"] = dict(recovery)  # how it was recovered: lab.archive.restore knows its own copies
            self._state["nodes"][name] = spec
            self._save()
            t0 = time.monotonic()
            try:
                if from_backup is None:
                    self.backend.create_standalone(spec, self._state)
                else:
                    self.backend.adopt_standalone(spec, Path(from_backup), recovery)
            except BaseException:
                self._discard_replica(name)
                raise
            self._save()
            how = _("initialised like the primary")
            if from_backup is not None:
                how = self._recover_standalone(name, recovery)
            _say(quiet, _("{name}: standalone node on 127.0.0.1:{port}, {how} ({seconds:.1f} s)").format(
                name=name, port=spec["port"], how=how, seconds=time.monotonic() - t0))
            return Node(self, name)

    def _existing_standalone(self, name: str, from_backup) -> Node:
        """add_standalone(name) for a name this cluster has: that standalone node, as it is."""
        node = Node(self, name)
        if node.role != Role.STANDALONE:
            raise LabError(_("{name} is this cluster's {role}, not a standalone node: give the standalone "
                             "node another name, e.g. cluster.add_standalone('analytics')").format(
                                 name=name, role=_role_name(node.role)))
        print(_("{name}: exists already, a standalone node on 127.0.0.1:{port} {given_back}").format(
            name=name, port=node.port, given_back=_given_back(node, from_backup)), flush=True)
        return node

    def _recover_standalone(self, name: str, recovery: "dict | None", timeout: float = RECOVERY_TIMEOUT) -> str:
        """Start a standalone node made from a backup and wait until it left recovery or paused at its
        target; how it ended, in a few words.  A failed recovery raises with the server's FATAL line
        and leaves the node recorded and stopped."""
        spec = self._state["nodes"][name]
        node = Node(self, name)
        try:
            self.backend.start(spec, self._state)
            self._save()
            deadline = time.monotonic() + timeout
            while True:
                if not self.backend.pid(spec):
                    raise NotRunning(_("{name} stopped during recovery").format(name=name))
                try:
                    row = node.sql("SELECT pg_is_in_recovery() AS rec, CASE WHEN pg_is_in_recovery() "
                                   "THEN pg_get_wal_replay_pause_state() END AS pause, "
                                   "pg_last_wal_replay_lsn()::text AS lsn", dbname="postgres").iloc[0]
                except LabError:
                    row = None  # not accepting connections yet (still starting, or stopping)
                if row is not None and not row["rec"]:
                    return _("recovered and out of recovery (writable)")
                if row is not None and row["pause"] == "paused":
                    return _("paused at its recovery target ({lsn}, read-only): "
                             "cluster.node({name!r}).promote() ends recovery").format(lsn=row["lsn"], name=name)
                if time.monotonic() > deadline:
                    raise Timeout(_("{name} is still in recovery after {seconds:g} s").format(name=name, seconds=timeout))
                time.sleep(0.05)
        except LabError as e:
            try:
                self.backend.stop(spec)
            except LabError:
                pass
            fatal = _fatal_line(self.backend.logs(spec, 200)) or str(e).strip().splitlines()[0]
            raise LabError(_("{name}: recovery failed: {fatal}\n{name} is kept, stopped: read "
                             "cluster.node({name!r}).logs(), then cluster.remove_node({name!r})").format(
                                 name=name, fatal=fatal)) from None

    def conninfo_from(self, node_name: str, to: str = "primary", dbname: str = "crypto_db") -> str:
        """A libpq connection string with which node ``node_name``'s server reaches node ``to``
        (``"primary"``: the current primary), as the superuser (who may replicate): what
        ``CREATE SUBSCRIPTION ... CONNECTION`` needs.  It holds the cluster's password.

        >>> sub.execute(f"CREATE SUBSCRIPTION s CONNECTION '{cluster.conninfo_from('analytics')}' "
        ...             "PUBLICATION p")                                   # doctest: +SKIP
        """
        need_node_name(node_name, "node_name")
        need_str(to, "to", example="'primary'")
        need_str(dbname, "dbname", example="'crypto_db'")
        self.node(node_name)
        target = self.primary if to == "primary" else self.node(to)
        host, port = self.backend.address_of(target.spec)
        st = self._state
        return conninfo.make(host=host, port=port, user=st["superuser"], password=st["password"], dbname=dbname)

    def archive_dir(self) -> str:
        """The cluster's WAL archive directory as its nodes see it: what to put into
        ``archive_command`` / ``restore_command``.  Every node's server may read and write it
        (mode 0700, the server user's); ``down(wipe=True)`` removes it.

        >>> d = cluster.archive_dir()                                                # doctest: +SKIP
        >>> cluster.primary.set(archive_mode="on", archive_command=f"cp %p {d}/%f")  # doctest: +SKIP
        """
        return self.backend.archive_dir()

    def _repoint_children(self, name: str) -> None:
        """Replicas cascading from ``name`` (about to go) stream from the primary instead."""
        primary = self.primary
        for r in self.replicas:
            if r.spec.get("upstream") != name:
                continue
            r.spec.pop("upstream", None)
            self._save()
            if primary.is_running:
                self._ensure_slot(r.name)
            self.backend.follow(r.spec, primary.spec)
            print(_("{replica}: cascaded from {name}, which is being removed: now streams from {primary}").format(
                replica=r.name, name=name, primary=primary.name), flush=True)

    def _discard_replica(self, name: str) -> None:
        spec = self._state["nodes"][name]
        self.backend.stop(spec)
        self.backend.remove_data(spec)
        if spec["role"] != Role.STANDALONE:  # a standalone node has no slot anywhere
            source = Node(self, self._upstream_spec(spec)["name"])
            if source.is_running and source.name != name:
                self._drop_slot(name, node=source)
        ports.release([spec["port"]], self.home.owner)
        del self._state["nodes"][name]
        self._save()

    def _ensure_slot(self, slot: str, node: "Node | None" = None) -> None:
        """The replica's physical slot on the primary (or on ``node``, a cascade's upstream), created if missing."""
        (node or self.primary).execute("SELECT pg_create_physical_replication_slot(%s) WHERE NOT EXISTS "
                                       "(SELECT 1 FROM pg_replication_slots WHERE slot_name = %s)",
                                       (slot, slot), dbname="postgres")

    def _drop_slot(self, slot: str, timeout: float = 10, node: "Node | None" = None) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                (node or self.primary).execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                                               "WHERE slot_name = %s", (slot,), dbname="postgres")
                return
            except LabError as e:  # still active for a moment after the replica stops
                if "is active" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    # --- the standard layout (lab.up on an existing cluster) ---------------------------------
    def _sync_roles(self) -> list:
        """Record each running node's role as its server says (``pg_is_in_recovery()``): in recovery
        is a replica; out of it, the primary (the recorded one, or the only node out of recovery if
        the recorded one is not) or else a former primary.  One line per change."""
        live = {}
        for n in self.nodes:
            if n.role == Role.STANDALONE:
                continue  # out of recovery by design, and never part of the physical cluster
            if n.is_running:
                try:
                    live[n.name] = n.scalar("SELECT pg_is_in_recovery()", dbname="postgres")
                except LabError:
                    pass  # not answering: its record stays
        said = []
        writers = [n for n, rec in live.items() if rec is False]
        old = self._state["primary"]
        if old not in writers and len(writers) == 1:
            new = writers[0]
            said.append(_("{new}: its server is a primary (promoted outside the lab?): recorded as the primary, "
                          "{old} as a former primary").format(new=new, old=old))
            self._state["nodes"][old]["role"] = Role.FORMER_PRIMARY.value
            self._state["nodes"][new]["role"] = Role.PRIMARY.value
            self._state["primary"] = new
        primary = self._state["primary"]
        for name, in_recovery in live.items():
            if name == primary and in_recovery and not writers:
                continue  # no server writes at all: the recorded primary stays the one to fix
            spec = self._state["nodes"][name]
            role = (Role.REPLICA if in_recovery else Role.PRIMARY if name == primary else Role.FORMER_PRIMARY).value
            if spec["role"] != role:
                if in_recovery:
                    said.append(_("{name}: recorded as {recorded} but its server is in recovery: now recorded as "
                                  "{role}").format(name=name, recorded=_role_name(spec["role"]), role=_role_name(role)))
                else:
                    said.append(_("{name}: recorded as {recorded} but its server is a primary: now recorded as "
                                  "{role}").format(name=name, recorded=_role_name(spec["role"]), role=_role_name(role)))
                spec["role"] = role
        if said:
            self._save()
        return said

    def _reset_sync(self, say) -> None:
        """ALTER SYSTEM RESET synchronous_standby_names on the primary if it was set there (a
        chapter's leftover): with a synchronous standby stopped, every COMMIT would wait."""
        p = self.primary
        if not p.is_running:
            return
        left = p.scalar("SELECT setting FROM pg_file_settings WHERE name = 'synchronous_standby_names' "
                        "AND sourcefile LIKE '%postgresql.auto.conf' ORDER BY seqno DESC LIMIT 1", dbname="postgres")
        if not left:
            return
        p.set(synchronous_standby_names=None)
        say(_("{name}: synchronous_standby_names was {value!r}: reset (commits wait for no standby)").format(
            name=p.name, value=left))

    def _restore_layout(self, replicas: int, say) -> None:
        """What lab.up() does to an existing cluster, each change said in one line through ``say``:
        every node thawed and started, roles as the servers say, a former primary (or a replica that
        cannot follow) rejoined, the node called ``primary`` the primary again, at least ``replicas``
        nodes besides the primary, no replica routed through a proxy of an earlier kernel,
        synchronous_standby_names reset."""
        with self.home.locked():
            self._reload()
            for n in self.nodes:
                if self.backend.is_paused(n.spec):
                    self.backend.resume(n.spec)
                    say(_("{name}: resumed (it was paused)").format(name=n.name))
            for line in self._sync_roles():
                say(line)
            primary = self.primary
            if not primary.is_running:
                t0 = time.monotonic()
                primary.start()
                say(_("{name}: started, the primary, on 127.0.0.1:{port} ({seconds:.1f} s)").format(
                    name=primary.name, port=primary.port, seconds=time.monotonic() - t0))
            self._reset_sync(say)  # before anything waits on a commit there
            for n in self.nodes:
                if n.role == Role.REPLICA and not n.is_running:
                    t0 = time.monotonic()
                    try:
                        n.start()
                    except LabError:
                        continue  # rejoined below
                    say(_("{name}: started, a replica, on 127.0.0.1:{port} ({seconds:.1f} s)").format(
                        name=n.name, port=n.port, seconds=time.monotonic() - t0))
            for n in self.standalones:  # kept as they are: started, never counted as replicas
                if not n.is_running:
                    t0 = time.monotonic()
                    try:
                        n.start()
                    except LabError as e:
                        say(_("{name}: a standalone node that does not start ({error}): "
                              "see cluster.node({name!r}).logs(), or cluster.remove_node({name!r})").format(
                                  name=n.name, error=str(e).splitlines()[0][:120]))
                        continue
                    say(_("{name}: started, a standalone node, on 127.0.0.1:{port} ({seconds:.1f} s)").format(
                        name=n.name, port=n.port, seconds=time.monotonic() - t0))
            for r in self.replicas:
                if not r.is_running or self._linked(r):
                    continue
                source = self._upstream_spec(r.spec)  # a cascade's upstream, or the primary
                direct = (self.backend.primary_address() if source["name"] == self._state["primary"]
                          else self.backend.address_of(source))
                where = self.backend.upstream(r.spec)
                if where is not None and (str(where[0]), int(where[1])) != (str(direct[0]), int(direct[1])):
                    self._ensure_slot(r.name, node=Node(self, source["name"]))
                    self.backend.retarget(r.spec, *direct)
                    say(_("{name}: pointed at {host}:{port} (a proxy of an earlier kernel, or an old "
                          "primary), not at {source}: streams from {source} directly again").format(
                              name=r.name, host=where[0], port=where[1], source=source["name"]))
            for n in self.nodes:
                if n.name == self._state["primary"] or self._linked(n) or n.role == Role.STANDALONE:
                    continue
                if n.role == Role.REPLICA and n.is_running and self._streams(n):
                    continue
                was_replica = n.role == Role.REPLICA
                t0 = time.monotonic()
                self.rejoin(n.name)
                if was_replica:
                    say(_("{name}: a replica that did not stream from the primary, rewound (pg_rewind) and "
                          "streaming from {primary} ({seconds:.1f} s)").format(
                              name=n.name, primary=self.primary.name, seconds=time.monotonic() - t0))
                else:
                    say(_("{name}: a former primary, rewound (pg_rewind) and streaming from {primary} "
                          "({seconds:.1f} s)").format(name=n.name, primary=self.primary.name,
                                                      seconds=time.monotonic() - t0))
            if self._state["primary"] != "primary" and "primary" in self._state["nodes"] \
                    and self.node("primary").role == Role.REPLICA:
                t0, was = time.monotonic(), self._state["primary"]
                try:
                    self.switchover("primary")
                except Timeout:
                    self._reload()
                    if self._state["primary"] != "primary":
                        raise
                    # primary is the primary again; a replica did not follow it in time: rejoined below
                say(_("{name}: the primary again (a switchover from {old}, now its replica; {seconds:.1f} s)").format(
                    name="primary", old=was, seconds=time.monotonic() - t0))
                for n in self.replicas:  # a replica that could not follow onto primary's timeline
                    if n.is_running and not self._linked(n) and not self._streams(n):
                        t1 = time.monotonic()
                        self.rejoin(n.name)
                        say(_("{name}: a replica that did not follow the switchover, rewound (pg_rewind) and "
                              "streaming from {primary} ({seconds:.1f} s)").format(
                                  name=n.name, primary=self.primary.name, seconds=time.monotonic() - t1))
            for _missing in range(replicas - self._physical_count()):
                t0 = time.monotonic()
                r = self.add_replica()
                say(_("{name}: added, streaming from {primary} on 127.0.0.1:{port} ({seconds:.1f} s)").format(
                    name=r.name, primary=self.primary.name, port=r.port, seconds=time.monotonic() - t0))
            self._reset_sync(say)  # a switchover may have changed the primary
            self.wait_streaming()

    def _linked(self, node: Node) -> bool:
        """Is this replica's link to the primary this process's on purpose (a proxy, a cut)?"""
        return links.link(self.backend.owner, node.name) is not None or self.backend.is_cut(node.spec)

    def _streams(self, node: Node, timeout: float = 10) -> bool:
        try:
            self.wait_streaming(timeout=timeout, names=[node.name])
        except LabError:
            return False
        return True

    # --- observing ---------------------------------------------------------------------
    def wait_streaming(self, timeout: float = 30, names=None) -> None:
        """Wait until every running replica (or those named) streams from the primary."""
        timeout = need_number(timeout, "timeout", lo=0, unit="seconds")
        if names is not None:
            if isinstance(names, str) or not isinstance(names, (list, tuple, set)):
                raise BadArgument(_("names is a list of node names, e.g. ['replica1'], not {value!r:.60}").format(
                    value=names))
            for n in names:
                self.node(n)
        names = list(names) if names is not None else [r.name for r in self.replicas if r.is_running]
        names = [n for n in names if self._state["nodes"][n]["role"] != Role.STANDALONE]
        # each replica is looked for in its source's pg_stat_replication: the primary, or a cascade's upstream
        sources: dict = {}
        for n in names:
            sources.setdefault(self._upstream_spec(self._state["nodes"][n])["name"], []).append(n)
        deadline = time.monotonic() + timeout
        for source, group in sources.items():
            want = {self._state["nodes"][n].get("app_name", n) for n in group}
            while True:
                df = Node(self, source).sql("SELECT application_name FROM pg_stat_replication "
                                            "WHERE state = 'streaming'", dbname="postgres")
                missing = want - set(df["application_name"])
                if not missing:
                    break
                if time.monotonic() > deadline:
                    name = next(n for n in group if self._state["nodes"][n].get("app_name", n) in missing)
                    said = self._last_complaint(name)
                    if said:
                        raise Timeout(_("{name} is not streaming from {source} after {seconds:.0f} s (its log: "
                                        "{log}): see cluster.node({name!r}).logs()").format(
                                            name=name, source=source, seconds=timeout, log=said))
                    raise Timeout(_("{name} is not streaming from {source} after {seconds:.0f} s: see "
                                    "cluster.node({name!r}).logs()").format(name=name, source=source, seconds=timeout))
                time.sleep(0.02)

    def _last_complaint(self, name: str) -> str:
        """The last FATAL, ERROR or WARNING line of a node's log (shortened), or ''."""
        try:
            lines = self.backend.logs(self._state["nodes"][name], 80).splitlines()
        except Exception:  # noqa: BLE001 (a message's detail; the log may be gone with its container)
            return ""
        for line in reversed(lines):
            for level in ("FATAL:", "ERROR:", "WARNING:"):
                if level in line:
                    text = line[line.index(level):].strip()
                    return text if len(text) <= 160 else text[:157] + "..."
        return ""

    def wait_replayed(self, lsn=None, timeout: float = 30) -> str:
        """Wait until every running replica has replayed ``lsn`` (default: the primary's current LSN).

        Returns the LSN waited for.
        """
        if lsn is not None:
            if isinstance(lsn, bool) or not isinstance(lsn, (str, int)):
                raise BadArgument(_("lsn is an LSN like '0/3000060' (or None: the primary's current one), "
                                    "not {value!r:.60}").format(value=lsn))
            try:
                value = parse_lsn(lsn)
            except ValueError:
                value = -1
            if not 0 <= value < 1 << 64:
                raise BadArgument(_("lsn is an LSN like '0/3000060' (two hex numbers), not {value!r:.60}").format(
                    value=lsn))
            lsn = format_lsn(value) if isinstance(lsn, int) else lsn
        timeout = need_number(timeout, "timeout", lo=0, unit="seconds")
        target = lsn if lsn is not None else self.primary.scalar("SELECT pg_current_wal_lsn()", dbname="postgres")
        target_i = record_end(target)  # an insert LSN past a page header nobody has filled: its boundary
        deadline = time.monotonic() + timeout
        pending = [r for r in self.replicas if r.is_running]
        while pending:
            still = []
            for r in pending:
                replayed = r.scalar("SELECT pg_last_wal_replay_lsn()", dbname="postgres")
                if replayed is None or parse_lsn(replayed) < target_i:
                    still.append((r, replayed))
            if not still:
                break
            if time.monotonic() > deadline:
                r, replayed = still[0]
                raise Timeout(_("{name} has not replayed {lsn} after {seconds:.0f} s (it is at {replayed}): "
                                "see cluster.status() and cluster.node({name!r}).logs()").format(
                                    name=r.name, lsn=target, seconds=timeout, replayed=replayed))
            pending = [r for r, _replayed in still]
            time.sleep(0.005)
        return target

    def refresh_roles(self, quiet: bool = False) -> "list[str]":
        """After a promotion done by hand (``SELECT pg_promote()`` in psql, ``pg_ctl promote``): record
        each node's role as its server says (``pg_is_in_recovery()``) and point the other replicas at
        the new primary, as the lab's own promotion does.  One line per change (none: nothing to do).

        >>> cluster.node("replica1").sql("SELECT pg_promote()")   # doctest: +SKIP
        >>> cluster.refresh_roles()                               # doctest: +SKIP
        """
        need_bool(quiet, "quiet")
        with self.home.locked():
            self._reload()
            before = self._state["primary"]
            said = self._sync_roles()
            if self._state["primary"] != before:
                p = self.primary
                for setting in ("primary_conninfo", "primary_slot_name"):  # a primary keeps no standby settings
                    p.execute(f"ALTER SYSTEM RESET {setting}", dbname="postgres")
                p.execute("SELECT pg_reload_conf()", dbname="postgres")
                self._follow_primary()
                others = [r.name for r in self.replicas if r.name != p.name]
                if others:
                    said.append(_("{replicas}: pointed at the new primary {primary}").format(
                        replicas=", ".join(others), primary=p.name))
        for line in said:
            _say(quiet, line)
        if not said:
            _say(quiet, _("every recorded role matches its server: nothing to change"))
        return said

    def status(self) -> pd.DataFrame:
        """One row per node: role, state, port, pid, LSNs and lag (bytes and seconds)."""
        rows, changed = [], False
        primary_lsn, lags = None, {}
        for n in self.nodes:
            upstream = self._upstream_spec(n.spec)["name"] if n.role == Role.REPLICA else None
            row = dict(node=n.name, role=n.role.value, state=n.state.value, host=n.host, port=n.port, pid=n.pid,
                       current_lsn=None, received_lsn=None, replayed_lsn=None, lag_bytes=None, lag_s=None,
                       upstream=upstream)
            if n.pid:
                try:
                    r = n.sql("SELECT pg_is_in_recovery() AS rec, "
                              "CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn() END AS cur, "
                              "pg_last_wal_receive_lsn() AS rcv, pg_last_wal_replay_lsn() AS rpl",
                              dbname="postgres").iloc[0]
                except LabError:
                    row["state"] = "not answering"
                else:
                    live_role = Role.REPLICA if r["rec"] else Role.PRIMARY
                    if n.role == Role.STANDALONE:  # out of recovery by design: never re-labelled
                        live_role = Role.STANDALONE
                    if live_role.value != n.spec["role"]:  # promoted by hand, or a former primary restarted
                        n.spec["role"] = live_role.value
                        changed = True
                    row["role"] = live_role.value
                    row.update(current_lsn=r["cur"], received_lsn=r["rcv"], replayed_lsn=r["rpl"])
                    if n.name == self._state["primary"] and r["cur"]:
                        primary_lsn = r["cur"]
                        lags = self._replay_lags(n)
            rows.append(row)
        for row in rows:
            if row["role"] == Role.REPLICA and row["replayed_lsn"] and primary_lsn:
                row["lag_bytes"] = max(0, lsn_diff(primary_lsn, row["replayed_lsn"]))
                app = self._state["nodes"][row["node"]].get("app_name", row["node"])
                row["lag_s"] = 0.0 if row["lag_bytes"] == 0 else lags.get(app)
            elif row["role"] == Role.PRIMARY and row["state"] == "running":
                row["lag_bytes"], row["lag_s"] = 0, 0.0
        if changed:
            self._save()
        df = pd.DataFrame(rows)
        df["pid"] = df["pid"].astype("Int64")
        df["lag_bytes"] = df["lag_bytes"].astype("Int64")
        df["lag_s"] = df["lag_s"].astype("float")
        return df

    def _replay_lags(self, primary: Node) -> dict:
        try:
            df = primary.sql("SELECT application_name, EXTRACT(epoch FROM replay_lag)::float8 AS lag "
                             "FROM pg_stat_replication", dbname="postgres")
        except LabError:
            return {}
        return {a: (float(l) if l is not None and pd.notna(l) else None)
                for a, l in zip(df["application_name"], df["lag"])}


def _check_recovery(recovery, from_backup) -> "dict | None":
    """The recovery settings of add_standalone: a dict of recovery_* / restore_command settings."""
    if recovery is None:
        return None
    if not isinstance(recovery, dict) or not all(isinstance(k, str) for k in recovery):
        raise BadArgument(_("recovery is a dict of settings, e.g. {{'recovery_target_lsn': '0/5000060'}}, "
                            "not {value!r:.60}").format(value=recovery))
    if from_backup is None:
        raise BadArgument(_("recovery settings apply to a node made from a base backup: pass from_backup too"))
    bad = [k for k in recovery if k not in RECOVERY_SETTINGS]
    if bad:
        raise BadArgument(_("{names}: not a recovery setting; allowed: {allowed}").format(
            names=", ".join(map(repr, bad))[:80], allowed=", ".join(RECOVERY_SETTINGS)))
    for k, v in recovery.items():
        if isinstance(v, float) or not isinstance(v, (str, int)) or "\0" in str(v) or "\n" in str(v):
            raise BadArgument(_("{setting} is a string (or a whole number, True/False), one line, not {value!r:.60}")
                              .format(setting=k, value=v))
    action = recovery.get("recovery_target_action")
    if action is not None and action not in ("promote", "pause"):
        raise BadArgument(_("recovery_target_action is 'promote' (leave recovery at the target) or 'pause' "
                            "(stay read-only there until node.promote()), not {value!r:.40}").format(value=action))
    return dict(recovery)


def _fatal_line(log: str) -> "str | None":
    """The last FATAL (or PANIC) line of a server log, from its severity on."""
    for line in reversed(log.splitlines()):
        for tag in ("FATAL:", "PANIC:"):
            if tag in line:
                return " ".join(line[line.index(tag):].split())
    return None


def _given_back(node: Node, from_backup) -> str:
    """An existing node asked for again (a cell run twice): started if stopped; the rest of the one line
    that says so ("(nothing added, started); the backup in … was not used")."""
    started = False
    if not node.is_running:
        node.start()
        started = True
    if from_backup is not None and Path(from_backup).exists():
        if started:
            return _("(nothing added, started); the backup in {path} was not used").format(path=from_backup)
        return _("(nothing added); the backup in {path} was not used").format(path=from_backup)
    return _("(nothing added, started)") if started else _("(nothing added)")


# --- module-level entry points ---------------------------------------------------------
def _check_replicas(replicas) -> int:
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 0 <= replicas <= MAX_REPLICAS:
        raise BadArgument(_("replicas must be a whole number from 0 to {most}, not {value!r:.60}").format(
            most=MAX_REPLICAS, value=replicas))
    return replicas


def _check_home(home):
    if home is not None and (not isinstance(home, (str, os.PathLike)) or not str(os.fspath(home)).strip()
                             or "\0" in str(os.fspath(home))):
        raise BadArgument(_("home is the lab home's directory (a path), or None for the default, "
                            "not {value!r:.60}").format(value=home))
    return home


def attach(home=None) -> Cluster:
    """Re-attach to this lab home's cluster (running or not) without starting anything."""
    h = LabHome(_check_home(home))
    state = h.load()
    if state is None:
        raise LabError(_("no cluster in {path}: create one with lab.up()").format(path=h.path))
    return Cluster(h, state)


def up(replicas: int = 1, home=None, quiet: bool = False, backend: "str | None" = None) -> Cluster:
    """Bring the cluster up in the layout a chapter expects: create it if there is none, else
    re-attach to it (a restarted kernel, a second notebook) and put back the standard layout,
    saying in one line each what it changed:

    - every node started (a paused one resumed); roles recorded as the servers say;
    - a former primary rejoined as a replica (``rejoin``, pg_rewind), and the node called
      ``primary`` the primary again (``switchover`` back, after a failover);
    - at least ``replicas`` replicas: nodes besides the primary, whatever their names; missing ones
      are added, none is ever removed (no data loss);
    - no replica routed through a proxy left by an earlier kernel; synchronous_standby_names reset.

    Quiet when nothing needed changing (one line: re-attached / started).  ``backend``: "local"
    (server processes) or "compose" (Docker containers); by default ``LAB_BACKEND``, else compose
    where a Docker daemon answers, else local.  An existing cluster keeps the backend it was made with.
    """
    _check_replicas(replicas)
    _check_home(home)
    need_bool(quiet, "quiet")
    if backend is not None:
        need_choice(backend, "backend", BACKEND_NAMES)
    h = LabHome(home)
    h.ensure()
    others = register_user(h)
    if others:
        _say(quiet, _("also using this lab: {others}. What one notebook changes (a stopped node, a proxy, "
                      "a setting) the other measures: shut down the kernels you are done with (Kernel › Shut Down "
                      "Kernel)").format(others="; ".join(others)))
    with h.locked():
        state = h.load()
        if state is not None and state.get("ready") is False:
            # We hold the lock, so the process that was creating this cluster is gone
            # (a killed kernel): nobody has used it yet, so start over from nothing.
            _say(quiet, _("a previous lab.up() was interrupted while creating the cluster: starting over"))
            _teardown(Cluster(h, state))
            state = None
        if state is None:
            return _create(h, replicas, quiet, choose_backend(backend))
        if backend and backend != state.get("backend", "local"):
            raise LabError(_("this lab home's cluster runs on the {backend} backend, "
                             "not {wanted}: use it as it is, or lab.down(wipe=True) first").format(
                                 backend=state.get("backend", "local"), wanted=backend))
        cluster = Cluster(h, state)
        was_running = all(n.is_running for n in cluster.nodes if n.role != Role.FORMER_PRIMARY)
        cluster._restore_layout(replicas, lambda line: _say(quiet, line))
        nodes = ", ".join(f"{n.name} :{n.port}" for n in cluster.nodes)
        if was_running:
            _say(quiet, _("re-attached to the running cluster in {path}: {nodes}").format(path=h.path, nodes=nodes))
        else:
            _say(quiet, _("cluster started, data intact in {path}: {nodes}").format(path=h.path, nodes=nodes))
        return cluster


def _create(h: LabHome, replicas: int, quiet: bool, backend: str) -> Cluster:
    t0 = time.monotonic()
    cls = backend_class(backend)
    if replicas > cls.max_replicas:
        raise LabError(_("the {backend} backend runs at most {most} replicas, not {replicas}").format(
            backend=backend, most=cls.max_replicas, replicas=replicas))
    state = {
        "backend": backend, "created": time.time(), "ready": False,
        "superuser": "admin", "password": secrets.token_urlsafe(18),
        "replication_user": "replicator", "replication_password": secrets.token_urlsafe(18),
        "app_db": "crypto_db", "primary": "primary", "nodes": {},
    }
    cls.prepare_state(h, state)  # checks what the backend needs; raises with what to do
    port_list = ports.claim_free_ports(1 + replicas, h.owner)
    try:
        backend_obj = cls(h, state)
        state["nodes"]["primary"] = backend_obj.node_spec("primary", Role.PRIMARY, port_list[0])
        h.save(state)
    except BaseException:
        ports.release(port_list, h.owner)
        raise
    cluster = Cluster(h, state)
    try:
        cluster.backend.create_primary(state["nodes"]["primary"], state)
        cluster._save()
        _say(quiet, _("{name}: {how} on 127.0.0.1:{port} ({seconds:.1f} s)").format(
            name="primary", how=cluster.backend.describe(), port=state["nodes"]["primary"]["port"],
            seconds=time.monotonic() - t0))
        for i, port in enumerate(port_list[1:], start=1):
            name = f"replica{i}"
            t1 = time.monotonic()
            spec = cluster.backend.node_spec(name, Role.REPLICA, port)
            state["nodes"][name] = spec
            cluster._save()
            cluster.backend.start(spec, state, state["nodes"]["primary"])
            cluster._save()
            _say(quiet, _("{name}: hot standby on 127.0.0.1:{port} ({seconds:.1f} s)").format(
                name=name, port=spec["port"], seconds=time.monotonic() - t1))
        cluster.wait_streaming()
        state["ready"] = True
        cluster._save()
    except BaseException:
        _teardown(cluster)
        raise
    _say(quiet, _("cluster up in {seconds:.1f} s (lab home {path})").format(seconds=time.monotonic() - t0, path=h.path))
    return cluster


def _teardown(cluster: Cluster) -> None:
    """Undo a half-made cluster: stop what started, remove its data, release its ports.  Every step
    runs even if one before it failed (the first failure is raised at the end); a node that still
    runs keeps remove_data from removing its data, and wipe() ends it."""
    specs = list(cluster._state["nodes"].values())
    backend = cluster.backend
    failure = None
    for step in [lambda: backend.stop_many(specs, timeout=10), *[lambda s=s: _remove_quietly(backend, s) for s in specs],
                 backend.wipe, lambda: ports.release_all(cluster.home.owner), cluster.home.forget]:
        try:
            step()
        except BaseException as e:
            failure = failure or e
    if failure is not None:
        raise failure


def _remove_quietly(backend, spec) -> None:
    try:
        backend.remove_data(spec)
    except LabError:
        pass


def down(wipe: bool = False, home=None) -> None:
    """Stop this lab home's cluster if there is one (``wipe=True``: also remove its data)."""
    need_bool(wipe, "wipe")
    h = LabHome(_check_home(home))
    if h.load() is None:
        stop_services(h, wipe=wipe)
        ports.release_all(h.owner)
        return
    attach(home).down(wipe=wipe)
