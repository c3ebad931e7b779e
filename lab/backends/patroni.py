"""Nodes run by an HA manager: PostgreSQL servers started and stopped by Patroni, over a
three-member etcd cluster, behind HAProxy (chapter 08).

Everything runs as processes of this machine, under the HA lab home (``<lab home>/ha``):

    <data_root>/etcd1..3/        each etcd member's data (its Raft log and snapshot)
    <data_root>/<node>/          pgdata/, server.log (PostgreSQL's), patroni.yml (0600), patroni.log,
                                 relay.json (the node's link to etcd)
    <data_root>/haproxy.cfg      the router: one read-write port (Patroni's /primary check), one
                                 read-only port (/replica), a stats page
    <data_root>/patronictl.yml   what ``patronictl -c`` reads (from a cell or a terminal)

Each Patroni reaches etcd only through its *relay* (``relay.py``, the lab's proxy as a process):
cutting it partitions that node from the consensus store, its latency slows that node's view of
etcd.  Processes run in sessions of their own, so the cluster outlives the kernel (like the
servers of the other chapters) and carry ``LAB_HA=<lab home>`` in their environment: that mark,
not a pid alone, says a process is ours.  The servers run as the server user (PostgreSQL refuses
root), and every address is 127.0.0.1.

The PostgreSQL settings are the primary's ``master/postgresql.conf`` (one source for every
backend), handed to Patroni, which writes the servers' configuration itself.
"""
from __future__ import annotations

import base64
import fcntl
import importlib.util
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from .. import commands
from ..i18n import _, ngettext
from ..errors import LabError, NotRunning, Timeout
from ..system import hatools, ports
from ..system.osuser import server_user
from ..system.paths import MASTER_DIR
from ..system.process import pid_alive, spawn_detached, terminate_tree, wait_gone
from . import relay
from .local import LocalBackend, postmaster_pid, tail

MARK = "LAB_HA"
ETCD_MEMBERS = ("etcd1", "etcd2", "etcd3")
NODE_NAMES = ("pg1", "pg2", "pg3", "pg4", "pg5")
SCOPE = "lab"
NAMESPACE = "/service"
START_TIMEOUT = 90


def _load_generator():
    """``master/patroni-config.py``: the one Patroni configuration generator, which the containers
    run as a script (DESIGN decision 2: one set of scripts)."""
    spec = importlib.util.spec_from_file_location("lab_patroni_config", MASTER_DIR / "patroni-config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generator = _load_generator()
# Patroni refuses a ttl under 20 s; loop_wait + 2 * retry_timeout must stay under ttl.
DEFAULT_DCS = dict(generator.DCS)


def master_parameters() -> dict:
    """``master/postgresql.conf`` as a dict (name: value as written, quotes removed), without what
    Patroni sets itself."""
    return generator.master_parameters(MASTER_DIR / "postgresql.conf")


def http(method: str, url: str, body: "dict | None" = None, auth: "tuple | None" = None,
         timeout: float = 3, token: "str | None" = None) -> "tuple[int, object]":
    """One HTTP call to a Patroni REST API (``auth``: its login) or etcd's JSON gateway (``token``:
    an etcd auth token): (status, parsed JSON or text).  (0, reason) when nothing answers."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", token)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except (OSError, ValueError) as e:
        return 0, str(getattr(e, "reason", e))
    text = raw.decode(errors="replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


class PatroniControl:
    """What the lab asks of an HA cluster over the network, whatever runs it (processes of this
    machine: PatroniBackend; containers: lab/backends/patroni_compose.py): Patroni's REST API,
    etcd's v3 JSON gateway and HAProxy's stats, all on 127.0.0.1.  The backend provides ``state``,
    ``process_pid(what)``, ``etcd_log``, ``patroni_running``, ``patroni_log`` and ``patronictl_argv``."""

    max_standalones = 0  # Patroni manages every server it runs: a node outside its cluster is not its to run

    def create_standalone(self, spec: dict, state: dict) -> None:
        raise LabError(_("a cluster run by Patroni has no standalone nodes: use a cluster of the local or "
                         "compose backend (lab.up(backend='local')) for chapters 09 and 10"))

    def adopt_standalone(self, spec: dict, backup, recovery: "dict | None" = None) -> None:
        self.create_standalone(spec, self.state)

    @property
    def ha(self) -> dict:
        return self.state["ha"]

    def etcd_hosts(self) -> "list[str]":
        return [f"127.0.0.1:{m['client']}" for m in self.ha["etcd"].values()]

    def rest_url(self, spec: dict, path: str = "") -> str:
        return f"http://127.0.0.1:{spec['rest']}/{path.lstrip('/')}"

    @property
    def rest_auth(self) -> tuple:
        return self.ha["rest_user"], self.ha["rest_password"]

    def etcd_url(self, member: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ha['etcd'][member]['client']}/{path.lstrip('/')}"

    def wait_etcd(self, members=None, timeout: float = 30) -> None:
        """Until each of ``members`` (all, by default) says it is healthy (it sees a leader)."""
        members = list(members or self.ha["etcd"])
        deadline = time.monotonic() + timeout
        while True:
            bad = [m for m in members if http("GET", self.etcd_url(m, "health"), timeout=1)[1] != {"health": "true"}]
            if not bad:
                return
            for m in bad:
                if not self.process_pid(m):
                    raise NotRunning(_("etcd member {member} is not running; its log:\n{log_lines}").format(
                        member=m, log_lines=self.etcd_log(m, 8)))
            if time.monotonic() > deadline:
                raise Timeout(_("etcd members {members} not healthy within {timeout:g} s; "
                                "{member}'s log:\n{log_lines}").format(
                    members=', '.join(bad), timeout=timeout, member=bad[0], log_lines=self.etcd_log(bad[0], 8)))
            time.sleep(0.05)

    def etcd_status(self, member: str, timeout: float = 1) -> "dict | None":
        """etcd's own status of one member (v3 API, JSON gateway): leader id, Raft term and index."""
        code, body = self.etcd_call(member, "v3/maintenance/status", {}, timeout=timeout)
        return body if code == 200 and isinstance(body, dict) else None

    # etcd's client port is open to every user of this machine: auth is on (a generated root password,
    # in the state and the 0600 configurations); a call carries a token from /v3/auth/authenticate.
    # Simple tokens are kept by the member that issued them: one per member.
    _tokens: "dict | None" = None

    def etcd_call(self, member: str, path: str, body: dict, timeout: float = 3) -> "tuple[int, object]":
        """A v3 JSON-gateway call to ``member`` as the lab's etcd user (a token fetched, and fetched
        again when etcd says it is no longer valid)."""
        if self._tokens is None:
            self._tokens = {}
        for attempt in range(2):
            token = self._tokens.get(member)
            if token is None and self.ha.get("etcd_auth"):
                code, answer = http("POST", self.etcd_url(member, "v3/auth/authenticate"),
                                    {"name": self.ha["etcd_user"], "password": self.ha["etcd_password"]},
                                    timeout=timeout)
                if code != 200 or not isinstance(answer, dict) or "token" not in answer:
                    return code, answer
                token = self._tokens[member] = answer["token"]
            code, answer = http("POST", self.etcd_url(member, path), body, timeout=timeout, token=token)
            if code in (401, 400) and token and "token" in str(answer):  # expired or unknown: ask again
                self._tokens.pop(member, None)
                continue
            return code, answer
        return code, answer

    def haproxy_servers(self) -> "list[dict]":
        """HAProxy's view (its stats CSV): for each of its two ports, each server's status (UP/DOWN)."""
        code, body = http("GET", f"http://127.0.0.1:{self.ha['haproxy']['stats']}/;csv", timeout=2)
        if code != 200 or not isinstance(body, str):
            return []
        lines = body.lstrip("# ").splitlines()
        head = lines[0].split(",")
        out = []
        for line in lines[1:]:
            row = dict(zip(head, line.split(",")))
            if row.get("svname") not in ("FRONTEND", "BACKEND") and row.get("pxname") in ("primary", "replicas"):
                out.append({"port": row["pxname"], "node": row["svname"], "status": row.get("status"),
                            "sessions": int(row.get("scur") or 0)})
        return out

    def member(self, spec: dict, timeout: float = 1) -> "dict | None":
        """Patroni's own account of this node (``GET /patroni``), None if its REST API is silent."""
        code, body = http("GET", self.rest_url(spec, "patroni"), timeout=timeout)
        return body if code in (200, 503) and isinstance(body, dict) else None

    def wait_member(self, spec: dict, states=("running", "streaming"), timeout: float = START_TIMEOUT) -> dict:
        """Until Patroni says this node's PostgreSQL is running (a leader) or streaming (a replica)."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.member(spec)
            if m and m.get("state") in states and (m.get("role") in ("primary", "master")
                                                   or m.get("replication_state", "streaming") == "streaming"
                                                   or "streaming" not in states):
                return m
            if not self.patroni_running(spec):
                raise NotRunning(_("Patroni of {node} exited; its log:\n{log_lines}").format(
                    node=spec['name'], log_lines=self.patroni_log(spec, 10)))
            if time.monotonic() > deadline:
                raise Timeout(_("{node} not {states} under Patroni within {timeout:g} s "
                                "(Patroni says {state}); its log:\n{log_lines}").format(
                    node=spec['name'], states=' or '.join(states), timeout=timeout, state=m and m.get('state'),
                    log_lines=self.patroni_log(spec, 10)))
            time.sleep(0.1)

    def patronictl_shown(self, *args: str) -> "list[str]":
        """``patronictl`` with ``args`` as a person would type it (for the transcript)."""
        return self.patronictl_argv(*args, shown=True)


class PatroniBackend(PatroniControl, LocalBackend):
    """PostgreSQL nodes run by Patroni (processes of this machine), over etcd, behind HAProxy."""

    name = "patroni"
    max_replicas = len(NODE_NAMES) - 1

    @staticmethod
    def prepare_state(home, state: dict) -> None:
        tools = hatools.find()  # HAToolMissing says what to install
        LocalBackend.prepare_state(home, state)
        python, python_env = hatools.server_python(server_user().run_kwargs())
        state["ha"] = {"python": python, "python_env": python_env,"tools": {k: getattr(tools, k) for k in ("etcd", "haproxy", "patroni", "patronictl")},
                       "rest_user": "patroni", "rest_password": secrets.token_urlsafe(18),
                       "etcd_user": "root", "etcd_password": secrets.token_urlsafe(18),
                       "token": secrets.token_hex(6), "versions": tools.versions()}

    def __init__(self, home, state: dict):
        super().__init__(home, state)
        self.home = home
        self.mark = str(home.path)

    def describe(self) -> str:
        v = self.ha.get("versions") or {}
        return _("PostgreSQL {version} run by Patroni {patroni} over etcd {etcd}, behind HAProxy {haproxy}").format(
            version=self.bins.version, patroni=v.get('patroni', '?'), etcd=v.get('etcd', '?'),
            haproxy=v.get('haproxy', '?'))

    # --- layout --------------------------------------------------------------------------
    def node_spec(self, name: str, role, port: int) -> dict:
        """A node's spec; ``plan`` adds its REST API port (``rest``) and its relay's ports."""
        d = self.data_root / name
        return {"name": name, "role": str(role), "port": port, "pgdata": str(d / "pgdata"),
                "log": str(d / "server.log"), "listen": "127.0.0.1", "dir": str(d), "rest": 0,
                "relay_ports": [], "config": str(d / "patroni.yml"),
                "patroni_log": str(d / "patroni.log"), "relay_control": str(d / "relay.json")}

    def plan(self, n_nodes: int) -> None:
        """Claim every port of a new HA cluster and record its layout: etcd members, nodes, HAProxy."""
        need = len(ETCD_MEMBERS) * 2 + n_nodes * (2 + len(ETCD_MEMBERS)) + 3
        got = ports.claim_free_ports(need, self.owner)
        it = iter(got)
        self.ha["etcd"] = {m: {"client": next(it), "peer": next(it), "dir": str(self.data_root / m)}
                           for m in ETCD_MEMBERS}
        self.state["nodes"] = {}
        for i in range(n_nodes):
            name = NODE_NAMES[i]
            port, rest = next(it), next(it)
            relay = [next(it) for _member in ETCD_MEMBERS]
            self.state["nodes"][name] = dict(self.node_spec(name, "replica", port), rest=rest, relay_ports=relay)
        self.ha["haproxy"] = {"rw": next(it), "ro": next(it), "stats": next(it),
                              "config": str(self.data_root / "haproxy.cfg")}
        self.ha["ctl_config"] = str(self.data_root / "patronictl.yml")

    def all_ports(self) -> "list[int]":
        out = [p for m in self.ha.get("etcd", {}).values() for p in (m["client"], m["peer"])]
        for s in self.state["nodes"].values():
            out += [s["port"], s["rest"], *s["relay_ports"]]
        out += [self.ha.get("haproxy", {}).get(k) for k in ("rw", "ro", "stats")]
        return [p for p in out if p]

    def claim_ports(self) -> None:
        """Claim this cluster's ports again (``down`` released them; a restart keeps every port:
        etcd keeps its peers' addresses in its data).  A port held by another program: one LabError."""
        mine = None
        taken = []
        for p in self.all_ports():
            if ports.claim(p, self.owner, keep=True):
                continue
            c = ports.read_claim(p)
            if c is not None and c.get("lab_home") == self.owner:
                continue
            if mine is None:  # a process of ours listens there already (a running cluster)
                mine = set()
                for pid in self.marked():
                    try:
                        mine |= {c.laddr.port for c in psutil.Process(pid).net_connections(kind="tcp")
                                 if c.status == psutil.CONN_LISTEN}
                    except psutil.Error:
                        continue
            if p not in mine:
                taken.append(p)
        if taken:
            raise LabError(ngettext("port {ports} of the HA cluster are taken by another program: stop it, or "
                                    "lab.ha.down(wipe=True) then lab.ha.up() for new ports",
                                    "ports {ports} of the HA cluster are taken by another program: stop it, or "
                                    "lab.ha.down(wipe=True) then lab.ha.up() for new ports", len(taken)).format(
                ports=', '.join(map(str, taken))))

    # --- processes ------------------------------------------------------------------------
    def _pids_file(self) -> Path:
        return self.home.path / "pids.json"

    def _pids(self) -> dict:
        try:
            return json.loads(self._pids_file().read_text())
        except (OSError, ValueError):
            return {}

    def _set_pid(self, what: str, pid: "int | None") -> None:
        with open(self.home.path / "pids.lock", "a") as lock:  # one writer at a time (threads, kernels)
            fcntl.flock(lock, fcntl.LOCK_EX)
            pids = self._pids()
            if pid:
                pids[what] = pid
            else:
                pids.pop(what, None)
            tmp = self._pids_file().with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
            tmp.write_text(json.dumps(pids))
            os.replace(tmp, self._pids_file())

    def _signature(self, what: str) -> "list[str]":
        """What only ``what``'s command line holds (paths of this cluster): to find it without a record."""
        if what in self.ha.get("etcd", {}):
            return ["--name", what, str(Path(self.ha["etcd"][what]["dir"]) / "data")]
        if what == "haproxy":
            return [self.ha["haproxy"]["config"]]
        kind, _sep, node = what.partition("-")
        spec = self.state["nodes"].get(node)
        if spec is None:
            return []
        return ["lab.backends.reaper", spec["config"]] if kind == "patroni" else ["lab.backends.relay",
                                                                                   spec["relay_control"]]

    def _find(self, what: str) -> "int | None":
        """``what``'s pid by its command line (its record lost or stale), the topmost such process."""
        sig = self._signature(what)
        if not sig:
            return None
        found = []
        for p in psutil.process_iter(["pid", "ppid", "cmdline"]):
            cmd = p.info["cmdline"] or []
            if all(x in cmd for x in sig) and pid_alive(p.info["pid"]):
                found.append((p.info["pid"], p.info["ppid"]))
        pids = {pid for pid, _cmd in found}
        tops = [pid for pid, ppid in found if ppid not in pids]
        return tops[0] if tops else None

    def ours(self, pid) -> bool:
        """Is ``pid`` alive and one of this HA cluster's processes (its mark)?"""
        if not pid or not pid_alive(pid):
            return False
        try:
            return psutil.Process(int(pid)).environ().get(MARK) == self.mark
        except psutil.AccessDenied:
            return True  # alive, and its environment is not ours to read (macOS): the best we know
        except (psutil.Error, OSError, ValueError):
            return False

    def process_pid(self, what: str) -> "int | None":
        """The pid of ``what`` (``etcd1``, ``patroni-pg1``, ``relay-pg1``, ``haproxy``) if it runs."""
        pid = self._pids().get(what)
        if self.ours(pid):
            return pid
        pid = self._find(what)
        if pid and self.ours(pid):
            self._set_pid(what, pid)
            return pid
        return None

    def marked(self) -> "list[int]":
        """Every live process carrying this HA cluster's mark."""
        out = []
        for p in psutil.process_iter(["pid"]):
            try:
                if p.environ().get(MARK) == self.mark and pid_alive(p.pid):
                    out.append(p.pid)
            except (psutil.Error, OSError):
                continue
        return sorted(out)

    def _spawn(self, what: str, argv: list, log: str, as_server: bool, extra_env: "dict | None" = None):
        env = {"PATH": f"{self.bins.bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}", "LANG": "C.UTF-8",
               "LC_ALL": "C.UTF-8", MARK: self.mark, "PYTHONUNBUFFERED": "1",
               "HOME": str(Path(log).parent)}
        env.update(extra_env or {})
        kwargs = self.user.run_kwargs() if as_server else {}
        if not Path(log).exists():
            Path(log).touch(mode=0o600)
            if as_server:
                self.user.chown(Path(log), recursive=False)
        proc = spawn_detached(argv, log, env, cwd=str(Path(log).parent), run_kwargs=kwargs)
        self._set_pid(what, proc.pid)
        return proc

    def _end(self, what: str, sig=signal.SIGTERM, timeout: float = 30) -> "int | None":
        pid = self.process_pid(what)
        if pid:
            terminate_tree(pid, timeout, sig=sig)
            wait_gone(pid, 5)
        self._set_pid(what, None)
        return pid

    # --- etcd -------------------------------------------------------------------------------
    def start_etcd(self, member: str) -> int:
        pid = self.process_pid(member)
        if pid:
            return pid
        m = self.ha["etcd"][member]
        Path(m["dir"]).mkdir(parents=True, exist_ok=True, mode=0o700)
        self.user.chown(Path(m["dir"]), recursive=True)
        cluster = ",".join(f"{n}=http://127.0.0.1:{x['peer']}" for n, x in self.ha["etcd"].items())
        argv = [self.ha["tools"]["etcd"], "--name", member, "--data-dir", str(Path(m["dir"]) / "data"),
                "--listen-client-urls", f"http://127.0.0.1:{m['client']}",
                "--advertise-client-urls", f"http://127.0.0.1:{m['client']}",
                "--listen-peer-urls", f"http://127.0.0.1:{m['peer']}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{m['peer']}",
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", f"lab-{self.ha['token']}",
                "--heartbeat-interval", "100", "--election-timeout", "1000", "--logger", "zap",
                "--log-outputs", "stderr"]
        commands.note(member, " ".join(str(a) for a in argv[:3]) + " …   # " + _("an etcd member"))
        proc = self._spawn(member, argv, str(Path(m["dir"]) / "etcd.log"), as_server=True,
                           extra_env={"ETCD_UNSUPPORTED_ARCH": ""})
        return proc.pid

    def etcd_log(self, member: str, tail_lines: int = 30) -> str:
        return tail(Path(self.ha["etcd"][member]["dir"]) / "etcd.log", tail_lines)

    def stop_etcd(self, member: str, kill: bool = False) -> "int | None":
        if kill:  # a crash: SIGKILL, and gone once it is dead (a zombie waiting to be reaped counts as gone)
            pid = self.process_pid(member)
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                wait_gone(pid, 10)
            self._set_pid(member, None)
        else:
            pid = self._end(member, sig=signal.SIGTERM, timeout=10)
        if pid:
            commands.note(member, f"kill -{'KILL' if kill else 'TERM'} {pid}   # "
                          + _("etcd member {member}").format(member=member))
        return pid

    def enable_etcd_auth(self) -> None:
        """Create etcd's root user with the cluster's generated password and turn auth on."""
        m = next(iter(self.ha["etcd"]))
        steps = [("v3/auth/role/add", {"name": "root"}),
                 ("v3/auth/user/add", {"name": self.ha["etcd_user"], "password": self.ha["etcd_password"]}),
                 ("v3/auth/user/grant", {"user": self.ha["etcd_user"], "role": "root"}),
                 ("v3/auth/enable", {})]
        for path, body in steps:
            code, answer = http("POST", self.etcd_url(m, path), body, timeout=10)
            if code != 200 and "already exists" not in str(answer):
                raise LabError(_("etcd refused {path}: {code} {answer}").format(
                    path=path, code=code, answer=str(answer)[:200]))
        self.ha["etcd_auth"] = True

    # --- configuration files ------------------------------------------------------------------
    def patroni_config(self, spec: dict) -> dict:
        """This node's Patroni configuration, from ``master/patroni-config.py`` as the containers'
        is: on 127.0.0.1, the lab's ports, etcd only through this node's relay."""
        st = self.state
        local = {"unix_socket_directories": spec["dir"], "logging_collector": "on", "log_destination": "stderr",
                 "log_directory": spec["dir"], "log_filename": "server.log", "log_file_mode": "0600",
                 "log_rotation_age": "0", "log_rotation_size": "0", "cluster_name": spec["name"]}
        return generator.node_config(
            name=spec["name"], host="127.0.0.1", listen_host="127.0.0.1", pg_port=spec["port"],
            rest_port=spec["rest"], pgdata=spec["pgdata"], bin_dir=str(self.bins.bindir),
            pgpass=str(Path(spec["dir"]) / "pgpass"), clients="127.0.0.1/32",
            superuser=st["superuser"], superuser_password=st["password"],
            replication_user=st["replication_user"], replication_password=st["replication_password"],
            rest_user=self.ha["rest_user"], rest_password=self.ha["rest_password"],
            # use_proxies: the relays are the only way to etcd (no discovery of the members behind them)
            etcd_hosts=[f"127.0.0.1:{p}" for p in spec["relay_ports"]], use_proxies=True,
            etcd_user=self.ha["etcd_user"], etcd_password=self.ha["etcd_password"],
            parameters=local, dcs=self.ha.get("dcs", {}), scope=SCOPE, namespace=NAMESPACE,
            conf=MASTER_DIR / "postgresql.conf")

    def write_configs(self) -> None:
        for spec in self.state["nodes"].values():
            d = Path(spec["dir"])
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(d, 0o700)
            self.user.chown(d, recursive=False)
            self._write_private(Path(spec["config"]), json.dumps(self.patroni_config(spec), indent=2), server=True)
        ctl = {"scope": SCOPE, "namespace": NAMESPACE,
               "etcd3": {"hosts": self.etcd_hosts(), "username": self.ha["etcd_user"],
                         "password": self.ha["etcd_password"]},
               "restapi": {"authentication": {"username": self.ha["rest_user"], "password": self.ha["rest_password"]}},
               "ctl": {"authentication": {"username": self.ha["rest_user"], "password": self.ha["rest_password"]}}}
        self._write_private(Path(self.ha["ctl_config"]), json.dumps(ctl, indent=2), server=False)
        self._write_private(Path(self.ha["haproxy"]["config"]), self.haproxy_config(), server=False)

    def _write_private(self, path: Path, text: str, server: bool) -> None:
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text if text.endswith("\n") else text + "\n")
        if server:
            self.user.chown(tmp, recursive=False)
        os.replace(tmp, path)

    def haproxy_config(self) -> str:
        h = self.ha["haproxy"]

        def servers():
            return "".join(f"    server {s['name']} 127.0.0.1:{s['port']} maxconn 100 check port {s['rest']}\n"
                           for s in self.state["nodes"].values())
        return (
            "# Written by the lab (chapter 08): one read-write port, one read-only port, health checks on\n"
            "# each node's Patroni REST API (/primary answers 200 on the leader only, /replica on replicas).\n"
            "global\n    maxconn 200\n\n"
            "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30m\n    timeout server 30m\n"
            "    timeout check 1s\n    option httpchk\n"
            "    default-server inter 250ms fall 2 rise 1 on-marked-down shutdown-sessions\n\n"
            f"listen primary\n    bind 127.0.0.1:{h['rw']}\n    option httpchk OPTIONS /primary\n"
            f"    http-check expect status 200\n{servers()}\n"
            f"listen replicas\n    bind 127.0.0.1:{h['ro']}\n    balance roundrobin\n"
            f"    option httpchk OPTIONS /replica\n    http-check expect status 200\n{servers()}\n"
            f"listen stats\n    mode http\n    bind 127.0.0.1:{h['stats']}\n    stats enable\n    stats uri /\n"
            "    stats refresh 2s\n")

    # --- relays ------------------------------------------------------------------------------------
    def start_relay(self, spec: dict) -> int:
        what = f"relay-{spec['name']}"
        pid = self.process_pid(what)
        if pid:
            return pid
        control = relay.read_control(spec["relay_control"]) or {}
        control.update(owner=self.owner, name=spec["name"],
                       routes=[[p, m["client"]] for p, m in zip(spec["relay_ports"], self.ha["etcd"].values())],
                       generation=int(control.get("generation", 0)) + 1, cut=False, hold=False,
                       latency_ms=0, jitter_ms=0)
        relay.write_control(spec["relay_control"], control)
        proc = self._spawn(what, [sys.executable, "-m", "lab.backends.relay", spec["relay_control"]],
                           str(Path(spec["dir"]) / "relay.log"), as_server=False,
                           extra_env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])})
        deadline = time.monotonic() + 15
        while relay.applied(spec["relay_control"]) < control["generation"]:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(_("the relay of {node} did not start; its log:\n{log_lines}").format(
                    node=spec['name'], log_lines=tail(Path(spec['dir']) / 'relay.log', 8)))
            time.sleep(0.01)
        return proc.pid

    def set_link(self, spec: dict, **changes) -> dict:
        return relay.set_link(spec["relay_control"], **changes)

    def link_shaping(self) -> "str | None":
        """The relays slow or silence a link anywhere: None (nothing in the way)."""
        return None

    def link_state(self, spec: dict) -> dict:
        c = relay.read_control(spec["relay_control"])
        return {k: c.get(k) for k in ("cut", "hold", "latency_ms", "jitter_ms")}

    # --- HAProxy -----------------------------------------------------------------------------------
    def start_haproxy(self) -> int:
        pid = self.process_pid("haproxy")
        if pid:
            return pid
        h = self.ha["haproxy"]
        argv = [self.ha["tools"]["haproxy"], "-db", "-f", h["config"]]
        commands.note("haproxy", f"haproxy -db -f {h['config']}")
        proc = self._spawn("haproxy", argv, str(self.data_root / "haproxy.log"), as_server=False)
        deadline = time.monotonic() + 15
        while http("GET", f"http://127.0.0.1:{h['stats']}/;csv", timeout=1)[0] != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(_("HAProxy did not start; its log:\n{log_lines}").format(
                    log_lines=tail(self.data_root / 'haproxy.log', 8)))
            time.sleep(0.05)
        return proc.pid

    # --- Patroni ----------------------------------------------------------------------------------
    def start_patroni(self, spec: dict) -> int:
        what = f"patroni-{spec['name']}"
        pid = self.process_pid(what)
        if pid and self.patroni_pid(spec):
            return pid
        if pid:  # its subreaper, about to end: Patroni under it was killed a moment ago
            if not wait_gone(pid, 5):
                terminate_tree(pid, 5)
            self._set_pid(what, None)
        self.start_relay(spec)
        commands.shell(spec["name"], ["patroni", spec["config"]])
        # Under the lab's subreaper (reaper.py), run as the lab's user: Patroni itself runs as the
        # server user, and a killed postmaster is reaped at once, so Patroni sees it gone at once.
        user = ["--uid", str(self.user.uid), "--gid", str(self.user.gid)] if not self.user.is_me else []
        env = dict(self.ha.get("python_env") or {})
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[2]),
                                                        env.get("PYTHONPATH")) if p)
        proc = self._spawn(what, [sys.executable, "-m", "lab.backends.reaper", *user, "--",
                                  self.ha["python"], "-m", "patroni", spec["config"]],
                           spec["patroni_log"], as_server=False, extra_env=env)
        return proc.pid

    def patroni_pid(self, spec: dict) -> "int | None":
        """The pid of the node's Patroni (the child of its subreaper), None if it is not running."""
        reaper = self.process_pid(f"patroni-{spec['name']}")
        if not reaper:
            return None
        try:
            if "lab.backends.reaper" not in " ".join(psutil.Process(reaper).cmdline()):
                return reaper  # a Patroni started without the subreaper (by an earlier version of the lab)
            for child in psutil.Process(reaper).children():
                if "patroni" in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                    return child.pid
        except psutil.Error:
            pass
        return None

    # --- bringing it up ---------------------------------------------------------------------------
    def create_all(self, cluster, say) -> None:
        """A new cluster: etcd (auth on), pg1 bootstrapped by its Patroni and initialised by
        init-master.sh, the other nodes cloned by theirs, HAProxy."""
        t0 = time.monotonic()
        self.write_configs()
        for m in ETCD_MEMBERS:
            self.start_etcd(m)
        self.wait_etcd()
        self.enable_etcd_auth()
        cluster._save()
        self.write_configs()  # with etcd's login
        say(_("etcd: {n} members healthy, auth on ({seconds:.1f} s)").format(
            n=len(ETCD_MEMBERS), seconds=time.monotonic() - t0))
        first, *others = list(self.state["nodes"].values())
        self.start_patroni(first)
        self.wait_member(first, states=("running",))
        cluster.wait_leader(timeout=90)
        st = self.state
        env = self.bins.env()
        env.update(PGHOST="127.0.0.1", PGPORT=str(first["port"]), PGUSER=st["superuser"], PGPASSWORD=st["password"],
                   PGCONNECT_TIMEOUT="10", REPLICATION_USER=st["replication_user"],
                   REPLICATION_PASSWORD=st["replication_password"], APP_DB=st["app_db"])
        self._run(["sh", str(MASTER_DIR / "init-master.sh")], as_server=False, env=env, log=first["log"])
        say(_("{node}: leader, bootstrapped by Patroni ({seconds:.1f} s)").format(
            node=first['name'], seconds=time.monotonic() - t0))
        for s in others:
            self.start_patroni(s)
        for s in others:
            self.wait_member(s)
        say(_("{nodes}: replicas streaming ({seconds:.1f} s)").format(
            nodes=', '.join(s['name'] for s in others), seconds=time.monotonic() - t0))
        self.start_haproxy()

    def start_all(self) -> "list[str]":
        """Start what is not running, in order (etcd, relays, Patroni, HAProxy); links to etcd
        healed; what was started or healed."""
        said = []
        self.claim_ports()
        self.write_configs()  # as this version of the lab writes them (a running Patroni reads its own at its next start)
        for m in ETCD_MEMBERS:
            if not self.process_pid(m):
                self.start_etcd(m)
                said.append(m)
        self.wait_etcd()
        specs = list(self.state["nodes"].values())
        for s in specs:
            if not self.process_pid(f"relay-{s['name']}"):
                self.start_relay(s)
            elif self.link_state(s).get("cut") or self.link_state(s).get("latency_ms"):
                self.set_link(s, cut=False, hold=False, latency_ms=0, jitter_ms=0)
                said.append(_("{node}'s link to etcd healed").format(node=s['name']))
        for s in specs:
            self.resume(s)
            if not self.patroni_pid(s):
                self.start_patroni(s)
                said.append(s["name"])
        for s in specs:
            self.wait_member(s)
        if not self.process_pid("haproxy"):
            self.start_haproxy()
            said.append("haproxy")
        return said

    # --- the hooks of PatroniControl ---------------------------------------------------------------
    def patroni_running(self, spec: dict) -> bool:
        return bool(self.process_pid(f"patroni-{spec['name']}"))  # its subreaper ends when Patroni does

    def patroni_log(self, spec: dict, tail_lines: int = 30) -> str:
        return tail(spec["patroni_log"], tail_lines)

    def patronictl_argv(self, *args: str, shown: bool = False) -> "list[str]":
        tool = "patronictl" if shown else self.ha["tools"]["patronictl"]
        return [tool, "-c", self.ha["ctl_config"], *args]

    def run_patronictl(self, args, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(self.patronictl_argv(*args), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
                                                             "LC_ALL": "C.UTF-8", "HOME": str(self.home.path)})

    # --- the Backend contract, where it differs from local processes -------------------------
    def create_primary(self, spec, state) -> None:
        raise LabError(_("Patroni bootstraps the first node itself: lab.ha.up() makes an HA cluster"))

    def prepare_replica(self, spec, state, primary_spec, wait_timeout=60, rejoin=False) -> None:
        raise LabError(_("Patroni makes its replicas itself (pg_basebackup, pg_rewind): nothing to prepare"))

    def primary_address(self) -> "tuple[str, int]":
        return "127.0.0.1", self.state["nodes"][self.state["primary"]]["port"]

    def start(self, spec, state=None, primary_spec=None) -> int:
        """Start the node's Patroni (which starts PostgreSQL) and wait until PostgreSQL is up."""
        self.start_patroni(spec)
        self.wait_member(spec, states=("running", "streaming"))
        return self.pid(spec) or 0

    def wait_ready(self, spec, timeout=None) -> int:
        self.wait_member(spec, timeout=START_TIMEOUT if timeout is None else timeout)
        return self.pid(spec) or 0

    def stop(self, spec, timeout: float = 30) -> None:
        self.stop_many([spec], timeout)

    def stop_many(self, specs, timeout: float = 30) -> None:
        """SIGTERM each node's Patroni: it stops PostgreSQL (fast) and, on the leader, gives up the
        leader key (a planned change of leader, not a failure); then the PostgreSQL left, if any."""
        for s in specs:
            self.resume(s)
        for s in specs:
            pid = self.patroni_pid(s)
            if pid:
                commands.note(s["name"], f"kill -TERM {pid}   # "
                              + _("Patroni: stops PostgreSQL, releases the leader key"))
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for s in specs:
            pid = self._pids().get(f"patroni-{s['name']}")
            if pid and not wait_gone(pid, max(0.0, deadline - time.monotonic())):
                terminate_tree(pid, 5, sig=signal.SIGKILL)
            self._set_pid(f"patroni-{s['name']}", None)
            LocalBackend.stop_many(self, [s], timeout=max(1.0, deadline - time.monotonic()))

    def kill(self, spec) -> "int | None":
        """A machine crash: SIGKILL the node's Patroni and its PostgreSQL at the same moment."""
        self.resume(spec)
        ppid, pg = self.patroni_pid(spec), self.pid(spec)
        for pid in (ppid, pg):
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if ppid or pg:
            commands.note(spec["name"], f"kill -KILL {ppid or '-'} {pg or '-'}   # "
                          + _("Patroni and the postmaster: a machine crash"))
        for pid in (ppid, pg):
            if pid:
                wait_gone(pid, 10)
        self._set_pid(f"patroni-{spec['name']}", None)
        return pg or ppid

    def kill_postgres(self, spec) -> "int | None":
        """SIGKILL the postmaster only: Patroni lives on and decides."""
        return LocalBackend.kill(self, spec)

    def kill_patroni(self, spec) -> "int | None":
        """SIGKILL Patroni only: PostgreSQL lives on, unmanaged (what a watchdog exists for)."""
        reaper = self._pids().get(f"patroni-{spec['name']}")
        pid = self.patroni_pid(spec)
        if pid:
            os.kill(pid, signal.SIGKILL)
            commands.note(spec["name"], f"kill -KILL {pid}   # " + _("Patroni only; PostgreSQL keeps running"))
            wait_gone(pid, 10)
            if reaper and reaper != pid:
                wait_gone(reaper, 5)  # its subreaper ends with it (PostgreSQL was never its child)
        self._set_pid(f"patroni-{spec['name']}", None)
        return pid

    def promote(self, spec, timeout=60) -> None:
        raise LabError(_("Patroni decides who is primary: use cluster.switchover(...) or cluster.failover(...)"))

    def retarget(self, spec, host: str, port: int) -> None:
        raise LabError(_("Patroni points its replicas at the leader itself"))

    def follow(self, spec, primary_spec) -> None:
        """Patroni makes a replica follow the new leader by itself: nothing to do."""

    def cut(self, spec, hold: bool = False) -> str:
        self.set_link(spec, cut=True, hold=bool(hold))
        if hold:
            return _("cut off etcd (its relay, silent)")
        return _("cut off etcd (its relay)")

    def heal(self, spec) -> str:
        self.set_link(spec, cut=False, hold=False)
        return _("link to etcd healed")

    def is_cut(self, spec) -> bool:
        return bool(self.link_state(spec).get("cut"))

    def logs(self, spec, tail_lines=50) -> str:
        return tail(spec["log"], tail_lines)

    def after_down(self) -> None:
        """Every node is stopped: stop HAProxy, the relays and etcd too."""
        self.stop_services()

    def stop_services(self) -> None:
        self._end("haproxy", timeout=10)
        for spec in self.state["nodes"].values():
            self._end(f"relay-{spec['name']}", timeout=5)
        for m in self.ha.get("etcd", {}):
            self._end(m, timeout=10)
        for pid in self.marked():  # anything of ours that left its tree
            terminate_tree(pid, 5)

    def wipe(self) -> None:
        for pid in self.marked():
            terminate_tree(pid, 5, sig=signal.SIGKILL)
        super().wipe()
        self._pids_file().unlink(missing_ok=True)


def node_pid(spec: dict) -> "int | None":
    return postmaster_pid(spec["pgdata"])
