"""Chapter 08's cluster: PostgreSQL nodes run by Patroni over a three-member etcd cluster, behind
HAProxy — automatic failover by consensus.

>>> cluster = lab.ha.up(replicas=2)       # doctest: +SKIP
>>> cluster.members()                     # Patroni's view: leader, replicas, timeline, lag
>>> cluster.etcd()                        # the consensus store: members, Raft leader, term, index
>>> cluster.patronictl("list")            # the same as `patronictl -c … list` in a terminal

It is an ordinary ``lab.Cluster`` (``status()``, ``node(...).sql()``, ``kill()``, ``logs()``,
``dsn``; the writer and the lost-write audit of chapters 05–06 work on it), except that Patroni,
not the lab, decides who is primary: ``cluster.primary`` is whoever holds the leader key now.  It
lives in its own lab home (``<lab home>/ha``), beside the cluster of chapters 00–07, which it
leaves alone; ``lab.down()`` stops both.
"""
from __future__ import annotations

import base64
import secrets
import subprocess
import time
from pathlib import Path

import pandas as pd

from . import commands, conninfo
from .backends import backend_class, choose_backend
from .backends.patroni import DEFAULT_DCS, ETCD_MEMBERS, NAMESPACE, SCOPE, PatroniBackend, http
from .cluster import Cluster, _say
from .errors import Text
from .errors import (BadArgument, LabError, NotRunning, Timeout, need_bool, need_choice, need_int, need_number,
                     need_str)
from .i18n import _
from .node import Node, Role, need_node_name
from .services import stop_all as stop_services
from .system import hatools, ports
from .system.home import LabHome, register_user

MAX_REPLICAS = PatroniBackend.max_replicas
# lab.up's backend names -> the HA cluster's backend
HA_BACKENDS = {"local": "patroni", "compose": "patroni-compose"}
DCS_KEYS = ("ttl", "loop_wait", "retry_timeout", "maximum_lag_on_failover", "primary_start_timeout",
            "synchronous_mode", "synchronous_mode_strict", "failsafe_mode")
# What lab.ha.up() puts back on a running cluster: the chapter's starting layout.
STANDARD_DCS = dict(DEFAULT_DCS, synchronous_mode=False, synchronous_mode_strict=False, failsafe_mode=False)


def home_of(home=None) -> LabHome:
    """The HA cluster's lab home: ``ha/`` inside the lab home (``LAB_HOME`` or ``.lab``)."""
    if home is not None and (not isinstance(home, (str, Path)) or not str(home).strip() or "\0" in str(home)):
        raise BadArgument(_("home is the lab home's directory (a path), or None for the default, not {value!r:.60}")
                          .format(value=home))
    return LabHome(LabHome(home).path / "ha")


class HACluster(Cluster):
    """A cluster whose nodes Patroni runs: the lab observes, breaks and asks; Patroni decides."""

    backend: PatroniBackend

    # --- who is who, as Patroni says ----------------------------------------------------------
    def cluster_view(self, timeout: float = 1) -> "dict | None":
        """Patroni's ``GET /cluster`` from the first member that answers (None if none does)."""
        for spec in self._state["nodes"].values():
            code, body = http("GET", self.backend.rest_url(spec, "cluster"), timeout=timeout)
            if code == 200 and isinstance(body, dict):
                return body
        return None

    @property
    def leader(self) -> "str | None":
        """The member holding the leader key now (None while there is none)."""
        view = self.cluster_view()
        if view is None:
            return None
        return next((m["name"] for m in view.get("members", []) if m.get("role") in ("leader", "standby_leader")),
                    None)

    def _refresh(self) -> None:
        view = self.cluster_view()
        if view is None:
            return
        leader = next((m["name"] for m in view.get("members", []) if m.get("role") == "leader"), None)
        changed = False
        for name, spec in self._state["nodes"].items():
            role = Role.PRIMARY.value if name == leader else Role.REPLICA.value
            if leader and spec["role"] != role:
                spec["role"] = role
                changed = True
        if leader and self._state["primary"] != leader:
            self._state["primary"] = leader
            changed = True
        if changed:
            with self.home.locked():
                self._save()

    @property
    def nodes(self) -> "list[Node]":
        self._refresh()
        return super().nodes

    @property
    def primary(self) -> Node:
        self._refresh()
        return Node(self, self._state["primary"])

    @property
    def replicas(self) -> "list[Node]":
        return [n for n in self.nodes if n.role == Role.REPLICA]

    def members(self) -> pd.DataFrame:
        """Patroni's own table (what ``patronictl list`` prints): member, role, state, timeline, lag."""
        view = self.cluster_view()
        cols = ["member", "role", "state", "timeline", "lag_mb", "port", "rest", "patroni_pid", "postgres_pid"]
        rows = []
        by_name = {m["name"]: m for m in (view or {}).get("members", [])}
        for name, spec in self._state["nodes"].items():
            m = by_name.get(name, {})
            lag = m.get("lag")
            rows.append(dict(member=name, role=m.get("role", "—"), state=m.get("state", _("no Patroni")),
                             timeline=m.get("timeline"),
                             lag_mb=round(lag / 2 ** 20, 2) if isinstance(lag, (int, float)) else None,
                             port=spec["port"], rest=spec["rest"], patroni_pid=self.backend.patroni_pid(spec),
                             postgres_pid=self.backend.pid(spec)))
        df = pd.DataFrame(rows, columns=cols)
        for c in ("timeline", "patroni_pid", "postgres_pid"):
            df[c] = df[c].astype("Int64")
        return df

    # --- the consensus store -----------------------------------------------------------------------
    def etcd(self) -> pd.DataFrame:
        """The three etcd members as each says (v3 API): running, Raft leader, term, applied index."""
        rows = []
        statuses = {m: self.backend.etcd_status(m) for m in ETCD_MEMBERS}
        ids = {}
        for m, s in statuses.items():
            if s:
                ids[str(s["header"]["member_id"])] = m
        for m, s in statuses.items():
            spec = self.backend.ha["etcd"][m]
            rows.append(dict(member=m, client=f"127.0.0.1:{spec['client']}", running=bool(self.backend.process_pid(m)),
                             answers=s is not None,
                             is_leader=bool(s) and str(s.get("leader")) == str(s["header"]["member_id"]),
                             leader=ids.get(str(s.get("leader")), "?") if s else None,
                             raft_term=int(s["raftTerm"]) if s and "raftTerm" in s else None,
                             raft_index=int(s["raftIndex"]) if s and "raftIndex" in s else None))
        df = pd.DataFrame(rows)
        for c in ("raft_term", "raft_index"):
            df[c] = df[c].astype("Int64")
        return df

    def etcd_leader(self) -> "str | None":
        """The etcd member that is Raft leader now, as the members that answer agree (None: none)."""
        df = self.etcd()
        leaders = df[df["is_leader"]]["member"].tolist()
        return leaders[0] if len(leaders) == 1 else None

    def _etcd_any(self, timeout: float = 0.5) -> "str | None":
        """The first etcd member that answers within ``timeout`` (on a busy machine, a second round
        waits up to 2 s)."""
        for wait in (timeout, max(timeout, 2.0)):
            for m in ETCD_MEMBERS:
                if self.backend.etcd_status(m, timeout=wait):
                    return m
        return None

    def etcd_get(self, key: str, timeout: float = 3) -> "dict | None":
        """One key of etcd (v3 JSON gateway): value, lease, versions; None if it is not there (or
        no member could answer within ``timeout``: without a quorum, a read waits)."""
        key = need_str(key, "key", example="'/service/lab/leader'")
        timeout = need_number(timeout, "timeout", lo=0.1, hi=600, unit="seconds")
        m = self._etcd_any(min(timeout, 0.5))
        if m is None:
            raise NotRunning(_("no etcd member answers: start them with lab.ha.up()"))
        code, body = self.backend.etcd_call(m, "v3/kv/range", {"key": base64.b64encode(key.encode()).decode()},
                                            timeout=timeout)
        kvs = body.get("kvs") if code == 200 and isinstance(body, dict) else None
        if not kvs:
            return None
        kv = kvs[0]
        return {"key": key, "value": base64.b64decode(kv.get("value", "")).decode(errors="replace"),
                "lease": kv.get("lease"), "create_revision": int(kv.get("create_revision", 0)),
                "mod_revision": int(kv.get("mod_revision", 0)), "version": int(kv.get("version", 0))}

    def leader_key(self, record: bool = True, timeout: float = 3) -> dict:
        """Patroni's leader key in etcd: who holds it, its lease, the lease's TTL and time left
        (``record=False``: not in the transcript, for a loop that asks every 50 ms)."""
        need_bool(record, "record")
        timeout = need_number(timeout, "timeout", lo=0.1, hi=600, unit="seconds")
        key = f"{NAMESPACE}/{SCOPE}/leader"
        kv = self.etcd_get(key, timeout=timeout)
        out = {"key": key, "holder": None, "lease": None, "ttl_s": None, "left_s": None, "mod_revision": None}
        if kv is None:
            return out
        out.update(holder=kv["value"], lease=kv["lease"], mod_revision=kv["mod_revision"])
        if kv["lease"]:
            m = self._etcd_any(min(timeout, 0.5))
            code, body = (self.backend.etcd_call(m, "v3/lease/timetolive", {"ID": kv["lease"]}, timeout=timeout)
                          if m else (0, None))
            if code == 200 and isinstance(body, dict):
                out.update(ttl_s=int(body.get("grantedTTL", 0)), left_s=int(body.get("TTL", 0)))
        if record:
            commands.shell("etcd", ["etcdctl", f"--endpoints={self.backend.etcd_hosts()[0]}", "--user=root", "get", key])
        return out

    def keys(self) -> pd.DataFrame:
        """Every key Patroni keeps in etcd for this cluster, and its value (shortened)."""
        m = self._etcd_any()
        if m is None:
            raise NotRunning(_("no etcd member answers: start them with lab.ha.up()"))
        prefix = f"{NAMESPACE}/{SCOPE}/"
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        code, body = self.backend.etcd_call(m, "v3/kv/range",
                          {"key": base64.b64encode(prefix.encode()).decode(),
                           "range_end": base64.b64encode(end.encode()).decode()})
        rows = []
        for kv in (body.get("kvs") or []) if isinstance(body, dict) else []:
            k = base64.b64decode(kv["key"]).decode()
            v = base64.b64decode(kv.get("value", "")).decode(errors="replace")
            rows.append(dict(key=k, value=v if len(v) <= 80 else v[:77] + "...", lease=kv.get("lease"),
                             mod_revision=int(kv.get("mod_revision", 0))))
        commands.shell("etcd", ["etcdctl", f"--endpoints={self.backend.etcd_hosts()[0]}", "--user=root", "get", "--prefix", prefix])
        return pd.DataFrame(rows, columns=["key", "value", "lease", "mod_revision"])

    def stop_etcd(self, member: str, kill: bool = True) -> "int | None":
        """SIGKILL (``kill=False``: SIGTERM) one etcd member; its pid, None if it was not running."""
        need_choice(member, "member", ETCD_MEMBERS)
        need_bool(kill, "kill")
        return self.backend.stop_etcd(member, kill=kill)

    def start_etcd(self, member: str, wait: bool = True) -> int:
        """Start one etcd member again (it rejoins with its data); with ``wait``, until it is healthy."""
        need_choice(member, "member", ETCD_MEMBERS)
        pid = self.backend.start_etcd(member)
        if wait:
            self.backend.wait_etcd([member])
        return pid

    # --- Patroni's dynamic configuration --------------------------------------------------------------
    def config(self) -> dict:
        """The dynamic configuration Patroni keeps in etcd (``GET /config``): ttl, loop_wait, …"""
        for spec in self._state["nodes"].values():
            code, body = http("GET", self.backend.rest_url(spec, "config"))
            if code == 200 and isinstance(body, dict):
                return body
        raise NotRunning(_("no Patroni answers: start the cluster with lab.ha.up()"))

    def set_config(self, **settings) -> dict:
        """Change the dynamic configuration (``PATCH /config``, what ``patronictl edit-config --set``
        does): every member applies it at its next loop.  The settings now.

        >>> cluster.set_config(ttl=30, loop_wait=3)   # doctest: +SKIP
        """
        for k, v in settings.items():
            if k not in DCS_KEYS:
                raise BadArgument(_("set_config takes {settings}, not {name!r}").format(
                    settings=", ".join(DCS_KEYS), name=k))
            if k in ("synchronous_mode", "synchronous_mode_strict", "failsafe_mode"):
                need_bool(v, k)
            elif k == "ttl":
                need_int(v, _("ttl (seconds; Patroni's minimum is 20)"), lo=20, hi=3600)
            else:
                need_int(v, f"{k}", lo=0, hi=10 ** 9)
        cur = {**self.config(), **settings}
        ttl, loop, retry = cur.get("ttl", 30), cur.get("loop_wait", 10), cur.get("retry_timeout", 10)
        if loop + 2 * retry > ttl:
            raise BadArgument(_("Patroni needs loop_wait + 2 × retry_timeout ≤ ttl: {loop_wait} + 2 × {retry_timeout} > {ttl}")
                              .format(loop_wait=loop, retry_timeout=retry, ttl=ttl))
        commands.shell("patroni", self.backend.patronictl_shown("edit-config", "--force",
                                                                *[f"--set={k}={_yaml(v)}" for k, v in settings.items()]))
        body = self._rest("PATCH", "config", settings)
        return {k: body.get(k) for k in DCS_KEYS if k in body} if isinstance(body, dict) else {}

    def _rest(self, method: str, path: str, body=None, node: "str | None" = None, ok=(200,)):
        specs = [self._state["nodes"][node]] if node else list(self._state["nodes"].values())
        last = None
        for spec in specs:
            code, answer = http(method, self.backend.rest_url(spec, path), body, auth=self.backend.rest_auth,
                                timeout=30)
            if code in ok:
                return answer
            last = (spec["name"], code, answer)
            if code != 0:
                break
        raise LabError(_("Patroni ({node}) refused {method} /{path}: {code} {answer}").format(
            node=last[0], method=method, path=path, code=last[1] or _("no answer"), answer=str(last[2]).strip()[:200]))

    def patronictl(self, *args: str, timeout: float = 60) -> Text:
        """Run ``patronictl`` on this cluster (its output): ``cluster.patronictl("list")``,
        ``("history")``, ``("show-config")``.  The same command works in a terminal (printed by
        ``lab.transcript()``)."""
        if not args or not all(isinstance(a, str) and a and "\0" not in a and "\n" not in a for a in args):
            raise BadArgument(_("patronictl takes its arguments as strings (one line each), e.g. "
                                "cluster.patronictl('list')"))
        timeout = need_number(timeout, "timeout", lo=1, hi=3600, unit="seconds")
        commands.shell("patroni", self.backend.patronictl_shown(*args))
        try:
            r = self.backend.run_patronictl(args, timeout)
        except subprocess.TimeoutExpired:
            raise Timeout(_("patronictl {arguments} did not finish within {seconds:g} s").format(
                arguments=" ".join(args), seconds=timeout)) from None
        out = (r.stdout + r.stderr).strip()
        if r.returncode != 0:
            raise LabError(_("patronictl {arguments} failed: {last_line}").format(
                arguments=" ".join(args), last_line=out.splitlines()[-1] if out else r.returncode))
        return Text(out)

    # --- planned changes -------------------------------------------------------------------------------------
    def switchover(self, name: "str | None" = None, timeout: float = 60, quiet: bool = True) -> Node:
        """A planned change of primary through Patroni (``POST /switchover``): the leader stops
        cleanly, ``name`` (by default the healthiest replica) takes the leader key, the old leader
        follows it.  No acknowledged write is lost."""
        need_bool(quiet, "quiet")
        timeout = need_number(timeout, "timeout", lo=1, hi=600, unit="seconds")
        leader = self.leader
        if leader is None:
            raise LabError(_("there is no leader to switch over from: wait for Patroni to elect one (cluster.members())"))
        if name is not None:
            need_node_name(name)
            self.node(name)
            if name == leader:
                raise LabError(_("{name} is the leader already").format(name=name))
        body = {"leader": leader, **({"candidate": name} if name else {})}
        commands.shell("patroni", self.backend.patronictl_shown("switchover", "--force", "--leader", leader,
                                                                *(["--candidate", name] if name else [])))
        self._rest("POST", "switchover", body, ok=(200, 202))
        new = self.wait_leader(exclude=leader, timeout=timeout)
        _say(quiet, _("switchover: {old} → {new}").format(old=leader, new=new))
        return self.node(new)

    def failover(self, name: str, timeout: float = 60, quiet: bool = True) -> Node:
        """Make ``name`` the leader now (``POST /failover``), even if the leader is healthy: what
        an operator does when Patroni will not (``patronictl failover``)."""
        need_node_name(name)
        timeout = need_number(timeout, "timeout", lo=1, hi=600, unit="seconds")
        need_bool(quiet, "quiet")
        self.node(name)
        old = self.leader
        if name == old:
            raise LabError(_("{name} is the leader already").format(name=name))
        commands.shell("patroni", self.backend.patronictl_shown("failover", "--force", "--candidate", name))
        self._rest("POST", "failover", {"candidate": name}, ok=(200, 202))
        new = self.wait_leader(exclude=old, timeout=timeout)
        _say(quiet, _("failover: {old} → {new}").format(old=old or _("(none)"), new=new))
        return self.node(new)

    def _promote(self, name: str) -> None:
        self.failover(name)

    def rejoin(self, name: str, quiet: bool = True) -> Node:
        """Patroni rejoins a former leader by itself (pg_rewind) once its Patroni runs: start it."""
        node = self.node(name)
        if not node.is_running or not self.backend.patroni_pid(node.spec):
            self._start_node(name)
        return node

    def wait_leader(self, exclude: "str | None" = None, timeout: float = 60, writable: bool = True) -> str:
        """Until a member other than ``exclude`` holds the leader key (and, with ``writable``,
        accepts writes); its name."""
        timeout = need_number(timeout, "timeout", lo=0, hi=3600, unit="seconds")
        need_bool(writable, "writable")
        deadline = time.monotonic() + timeout
        while True:
            leader = self.leader
            if leader and leader != exclude:
                if not writable or self._writable(leader):
                    return leader
            if time.monotonic() > deadline:
                raise Timeout(_("no new leader within {seconds:g} s: see cluster.members() and cluster.logs")
                              .format(seconds=timeout))
            time.sleep(0.05)

    def _writable(self, name: str) -> bool:
        try:
            return self.node(name).scalar("SELECT NOT pg_is_in_recovery()", dbname="postgres") is True
        except LabError:
            return False

    # --- routing -------------------------------------------------------------------------------------------
    def haproxy_dsn(self, port: str = "rw", **extra) -> str:
        """A libpq string through HAProxy: ``rw`` (the primary, whichever it is) or ``ro`` (replicas)."""
        need_choice(port, "port", ("rw", "ro"))
        st = self._state
        return conninfo.make(host="127.0.0.1", port=self.backend.ha["haproxy"][port], user=st["superuser"],
                             password=st["password"], dbname=st["app_db"], **extra)

    @property
    def rw_dsn(self) -> str:
        """Through HAProxy's read-write port: the primary, whichever node it is now."""
        return self.haproxy_dsn("rw", connect_timeout=2)

    @property
    def ro_dsn(self) -> str:
        """Through HAProxy's read-only port: the replicas, in turn."""
        return self.haproxy_dsn("ro", connect_timeout=2)

    def haproxy(self) -> pd.DataFrame:
        """HAProxy's health checks: for the read-write and read-only ports, each node UP or DOWN."""
        return pd.DataFrame(self.backend.haproxy_servers(), columns=["port", "node", "status", "sessions"])

    def wait_router(self, timeout: float = 15) -> "HACluster":
        """Wait until HAProxy routes as Patroni says: on the read-write port the leader, and only
        the leader, is UP.  HAProxy starts every server UP and marks one DOWN after two failed
        checks (0.5 s here): until then a write through it could reach a replica."""
        timeout = need_number(timeout, "timeout", lo=0, hi=3600, unit="seconds")
        deadline = time.monotonic() + timeout
        while True:
            leader = self.leader
            rw = [r["node"] for r in self.backend.haproxy_servers()
                  if r["port"] == "primary" and str(r["status"]).startswith("UP")]
            if leader and rw == [leader]:
                return self
            if time.monotonic() >= deadline:
                raise Timeout(_("HAProxy's read-write port routes to {nodes} (Patroni's leader: {leader}) after "
                                "{seconds:.0f} s: see cluster.haproxy()").format(
                    nodes=", ".join(rw) or _("no node"), leader=leader or _("none"), seconds=timeout))
            time.sleep(0.1)

    # --- faults ----------------------------------------------------------------------------------------------
    def kill_postgres(self, name: str) -> Node:
        """SIGKILL only this node's PostgreSQL: its Patroni lives on and acts (restart, or failover)."""
        node = self.node(need_node_name(name))
        if self.backend.kill_postgres(node.spec) is None:
            raise NotRunning(_("{name}'s PostgreSQL is not running: nothing to kill").format(name=name))
        return node

    def kill_patroni(self, name: str) -> Node:
        """SIGKILL only this node's Patroni: its PostgreSQL runs on, managed by nobody."""
        node = self.node(need_node_name(name))
        if self.backend.kill_patroni(node.spec) is None:
            raise NotRunning(_("{name}'s Patroni is not running: nothing to kill").format(name=name))
        return node

    def cut_from_etcd(self, name: str, hold: bool = False) -> str:
        """Partition ``name`` from the consensus store (its relay refuses every connection;
        ``hold``: keeps them open and silent).  PostgreSQL replication is not touched."""
        node = self.node(need_node_name(name))
        need_bool(hold, "hold")
        return f"{name}: {self.backend.cut(node.spec, hold=hold)}"

    def heal_etcd(self, name: "str | None" = None) -> str:
        """Undo ``cut_from_etcd`` and any latency (one node, or every node)."""
        names = [need_node_name(name)] if name else list(self._state["nodes"])
        for n in names:
            self.backend.set_link(self.node(n).spec, cut=False, hold=False, latency_ms=0, jitter_ms=0)
        return _("{nodes}: link to etcd healed").format(nodes=", ".join(names))

    def etcd_latency(self, name: str, latency_ms: float, jitter_ms: float = 0) -> str:
        """Slow ``name``'s link to etcd by ``latency_ms`` each way (± ``jitter_ms``)."""
        node = self.node(need_node_name(name))
        latency_ms = need_number(latency_ms, "latency_ms", lo=0, hi=10_000, unit="milliseconds")
        jitter_ms = need_number(jitter_ms, "jitter_ms", lo=0, hi=10_000, unit="milliseconds")
        why = self.link_shaping() if latency_ms or jitter_ms else None
        if why:
            raise LabError(why)
        self.backend.set_link(node.spec, latency_ms=latency_ms, jitter_ms=jitter_ms)
        return _("{name}: {latency_ms:g} ms each way to etcd").format(name=name, latency_ms=latency_ms)

    def link_shaping(self) -> "str | None":
        """None if the lab can slow (``etcd_latency``) or silence (``cut_from_etcd(hold=True)``) a
        node's link to etcd on this cluster, else one line saying why not."""
        return self.backend.link_shaping()

    def links(self) -> pd.DataFrame:
        """Each node's link to etcd: cut or not, latency."""
        return pd.DataFrame([dict(node=n, **self.backend.link_state(s)) for n, s in self._state["nodes"].items()])

    def patroni_log(self, name: str, tail_lines: int = 30) -> Text:
        """The last lines of ``name``'s Patroni log (what it decided, loop by loop)."""
        node = self.node(need_node_name(name))
        need_int(tail_lines, "tail_lines", lo=0)
        return Text(self.backend.patroni_log(node.spec, tail_lines))

    # --- lifecycle ---------------------------------------------------------------------------------------------
    def _start_node(self, name: str) -> None:
        with self.home.locked():
            self._reload()
            spec = self._state["nodes"][name]
            self.backend.start(spec)

    def start(self, quiet: bool = True) -> "HACluster":
        """Start whatever is stopped: etcd, each node's relay and Patroni, HAProxy."""
        need_bool(quiet, "quiet")
        with self.home.locked():
            self._reload()
            _start_all(self, quiet)
        return self

    def add_replica(self, name=None, quiet=True, from_backup=None):
        raise LabError(_("this HA cluster has its members fixed at creation: lab.ha.down(wipe=True), then "
                         "lab.ha.up(replicas=N) (N up to {most})").format(most=MAX_REPLICAS))

    def remove_replica(self, name: str) -> None:
        raise LabError(_("Patroni's members stay; stop one with cluster.node(name).stop()"))

    def down(self, wipe: bool = False, timeout: float = 30) -> None:
        """Stop every node (replicas first, so no failover happens on the way), HAProxy, the relays
        and etcd; ``wipe=True`` also removes the data."""
        need_bool(wipe, "wipe")
        timeout = need_number(timeout, "timeout", lo=0, hi=3600, unit="seconds")
        with self.home.locked():
            self._reload()
            stop_services(self.home, wipe=wipe)  # the crypto app or pgAdmin started on this cluster
            leader = self.leader
            specs = sorted(self._state["nodes"].values(), key=lambda s: s["name"] == leader)
            self.backend.stop_many([s for s in specs if s["name"] != leader], timeout)
            self.backend.stop_many([s for s in specs if s["name"] == leader], timeout)
            self.backend.after_down()
            ports.release_all(self.home.owner)
            if wipe:
                for s in specs:
                    self.backend.remove_data(s)
                self.backend.wipe()
                self.home.forget()

    def __repr__(self):
        return _("<HACluster PostgreSQL {version} run by Patroni in {home}: {nodes}>").format(
            version=self._state.get("pg_version"), home=self.home.path,
            nodes=", ".join(f"{n} :{s['port']}" for n, s in self._state["nodes"].items()))


def _yaml(v) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def _start_all(cluster: HACluster, quiet: bool) -> "list[str]":
    """Start what is not running, in order; one line per thing started."""
    said = cluster.backend.start_all()
    if said:
        _say(quiet, _("started: {what}").format(what=", ".join(said)))
    return said


# --- module-level entry points ---------------------------------------------------------------
def attach(home=None) -> HACluster:
    """Re-attach to the HA cluster (running or not) without starting anything."""
    h = home_of(home)
    state = h.load()
    if state is None:
        raise LabError(_("no HA cluster in {home}: create one with lab.ha.up()").format(home=h.path))
    return HACluster(h, state)


def up(replicas: int = 2, home=None, quiet: bool = False, backend: "str | None" = None) -> HACluster:
    """Bring chapter 08's cluster up: three etcd members, ``1 + replicas`` PostgreSQL nodes each
    run by Patroni, HAProxy in front.  ``backend``: "local" (processes of this machine) or
    "compose" (containers, compose/docker-compose.ha.yml); by default as ``lab.up``: ``LAB_BACKEND``,
    else compose where Docker answers.  Re-attaches to a running one (whatever ``backend`` says:
    a cluster keeps its backend) and puts back the chapter's starting point: everything started,
    links to etcd healed, the dynamic configuration back to the lab's (ttl 20 s, loop_wait 2 s,
    retry_timeout 5 s, asynchronous)."""
    if backend is not None:
        need_choice(backend, "backend", tuple(HA_BACKENDS))
    most = max(backend_class(b).max_replicas for b in HA_BACKENDS.values())
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= most:
        raise BadArgument(_("replicas is a whole number from 1 to {most}, not {value!r:.60}").format(
            most=most, value=replicas))
    need_bool(quiet, "quiet")
    h = home_of(home)
    h.ensure()
    register_user(h)
    with h.locked():
        state = h.load()
        if state is not None and state.get("ready") is False:
            _say(quiet, _("a previous lab.ha.up() was interrupted while creating the cluster: starting over"))
            _teardown(HACluster(h, state))
            state = None
        if state is None:
            kind = HA_BACKENDS[choose_backend(backend)]
            if replicas > backend_class(kind).max_replicas:
                raise BadArgument(_("replicas is at most {most} on the {backend} backend, not {value}").format(
                    most=backend_class(kind).max_replicas, backend=choose_backend(backend), value=replicas))
            return _create(h, replicas, quiet, kind)
        cluster = HACluster(h, state)
        if len(state["nodes"]) < replicas + 1:
            _say(quiet, _("this HA cluster has {nodes} nodes (made with fewer replicas than {replicas}): "
                          "lab.ha.down(wipe=True) then lab.ha.up(replicas={replicas}) for more").format(
                nodes=len(state["nodes"]), replicas=replicas))
        t0 = time.monotonic()
        _start_all(cluster, quiet)
        cfg = cluster.config()
        back = {k: v for k, v in STANDARD_DCS.items() if cfg.get(k, v if k not in cfg else None) != v}
        if back:
            cluster.set_config(**back)
            _say(quiet, _("dynamic configuration put back: {settings}").format(
                settings=", ".join(f"{k}={_yaml(v)}" for k, v in back.items())))
        cluster.wait_leader(timeout=120)
        cluster.wait_router()
        _say(quiet, _("HA cluster ready in {home} ({seconds:.1f} s): leader {leader}; "
                      "HAProxy read-write :{rw_port}, read-only :{ro_port}").format(
            home=h.path, seconds=time.monotonic() - t0, leader=cluster.leader,
            rw_port=state["ha"]["haproxy"]["rw"], ro_port=state["ha"]["haproxy"]["ro"]))
        return cluster


def _create(h: LabHome, replicas: int, quiet: bool, backend: str) -> HACluster:
    t0 = time.monotonic()
    state = {"backend": backend, "created": time.time(), "ready": False,
             "superuser": "admin", "password": secrets.token_urlsafe(18),
             "replication_user": "replicator", "replication_password": secrets.token_urlsafe(18),
             "app_db": "crypto_db", "primary": "pg1", "nodes": {}}
    cls = backend_class(backend)
    cls.prepare_state(h, state)
    cls(h, state).plan(1 + replicas)
    h.save(state)
    cluster = HACluster(h, state)
    try:
        b = cluster.backend
        b.create_all(cluster, lambda line: _say(quiet, line))
        cluster.wait_streaming(timeout=60)
        cluster.wait_router()
        state["ready"] = True
        cluster._save()
    except BaseException:
        _teardown(cluster)
        raise
    _say(quiet, _("HA cluster up in {seconds:.1f} s: {description}; HAProxy read-write :{rw_port}, "
                  "read-only :{ro_port}").format(
        seconds=time.monotonic() - t0, description=b.describe(),
        rw_port=state["ha"]["haproxy"]["rw"], ro_port=state["ha"]["haproxy"]["ro"]))
    return cluster


def _teardown(cluster: HACluster) -> None:
    b = cluster.backend
    failure = None
    steps = [lambda: b.stop_many(list(cluster._state["nodes"].values()), timeout=10), b.stop_services,
             *[lambda s=s: b.remove_data(s) for s in cluster._state["nodes"].values()], b.wipe,
             lambda: ports.release_all(cluster.home.owner), cluster.home.forget]
    for step in steps:
        try:
            step()
        except LabError:
            pass
        except BaseException as e:
            failure = failure or e
    if failure is not None:
        raise failure


def down(wipe: bool = False, home=None) -> None:
    """Stop the HA cluster if there is one (``wipe=True``: also remove its data)."""
    need_bool(wipe, "wipe")
    h = home_of(home)
    state = h.load() if h.path.exists() else None
    if state is None:
        if h.path.exists():
            ports.release_all(h.owner)
        return
    HACluster(h, state).down(wipe=wipe)


def available() -> "str | None":
    """None if chapter 08 can run here, else one line saying what to install."""
    lacking = hatools.missing()
    return "; ".join(lacking) if lacking else None
