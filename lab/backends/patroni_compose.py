"""Chapter 08's cluster as containers: ``compose/docker-compose.ha.yml`` (profile ``ha``).

``etcd1..3`` (auth on, set by the one-shot ``etcd-auth``), ``pg-ha1..3`` (PostgreSQL run by
Patroni, members ``pg1..3``) and ``haproxy``, in the HA image (``compose/ha.Dockerfile``), on
``distribuidos-net`` (PostgreSQL, REST, HAProxy) and ``etcd-net`` (Patroni's way to etcd).  The
same ``PatroniControl`` as the local backend asks them over their ports published on 127.0.0.1;
what is about one container goes through the docker SDK, like the compose backend's:

  machine crash          ``docker kill`` of the node's container (Patroni and PostgreSQL at once)
  PostgreSQL crash       ``docker exec … kill -9`` of the postmaster (Patroni lives on)
  Patroni crash          ``docker exec … kill -9`` of Patroni (its entrypoint keeps the container,
                         and the PostgreSQL it left, running)
  partition from etcd    ``docker network disconnect`` from etcd-net (PostgreSQL untouched);
                         ``hold``: the link kept but silent (``tc netem loss 100%``)
  latency to etcd        ``tc netem delay`` on the node's etcd-net interface (``docker exec -u
                         root``: the node containers have NET_ADMIN for this)
  patronictl             ``docker exec -u postgres pg-haN patronictl -c /tmp/patroni.yml …``
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from datetime import datetime
from pathlib import Path

from .. import commands
from ..i18n import _, ngettext
from ..errors import LabError, NotRunning, ServerStartError, Timeout
from ..system import ports
from ..system.paths import COMPOSE_DIR, REPO
from .compose import PGDATA, ComposeBackend, compose_cli
from .patroni import ETCD_MEMBERS, PatroniControl

HA_FILE = COMPOSE_DIR / "docker-compose.ha.yml"
DEFAULT_HA_IMAGE = "pglab/postgres-ha:15"
NODE_SERVICES = ("pg-ha1", "pg-ha2", "pg-ha3")
NODE_NAMES = ("pg1", "pg2", "pg3")  # Patroni's member names (the compose file's NODE_NAME)
SECRETS = ("POSTGRES_PASSWORD", "REPLICATION_PASSWORD", "PATRONI_REST_PASSWORD", "ETCD_ROOT_PASSWORD")
PATRONI_CONFIG = "/tmp/patroni.yml"  # written by master/patroni-entrypoint.sh in each node
# a process whose command line matches this is Patroni (the brackets keep a shell looking for it
# from matching itself)
PATRONI_PATTERN = "/opt/patroni/bin/patron[i] "
START_TIMEOUT = 180


class PatroniComposeBackend(PatroniControl, ComposeBackend):
    """Chapter 08's nodes as containers of one compose project (compose/docker-compose.ha.yml)."""

    name = "patroni-compose"
    max_replicas = len(NODE_NAMES) - 1

    @staticmethod
    def prepare_state(home, state: dict) -> None:
        ComposeBackend.prepare_state(home, state)
        cfg = state["compose"]
        # the default lab home's HA cluster keeps the compose file's names (docker exec -it pg-ha1 …)
        if home.path == REPO / ".lab" / "ha":
            cfg["prefix"] = ""
        cfg["env_file"] = str(home.path / "compose-ha.env")
        cfg["ha_image"] = os.environ.get("LAB_HA_IMAGE", DEFAULT_HA_IMAGE)
        state["ha"] = {"rest_user": "patroni", "rest_password": secrets.token_urlsafe(18),
                       "etcd_user": "root", "etcd_password": secrets.token_urlsafe(18), "etcd_auth": True,
                       "token": secrets.token_hex(6)}

    def describe(self) -> str:
        return (_("containers {prefix}pg-ha1.. run by Patroni over {prefix}etcd1..3, "
                  "behind {prefix}haproxy ({image})").format(prefix=self.cfg['prefix'], image=self.cfg['ha_image']))

    # --- layout -------------------------------------------------------------------------------
    def node_spec(self, name: str, role, port: int) -> dict:
        service = NODE_SERVICES[NODE_NAMES.index(name)]
        return {"name": name, "role": str(role), "port": port, "rest": 0, "service": service,
                "container": self.cfg["prefix"] + service, "pgdata": PGDATA}

    def plan(self, n_nodes: int) -> None:
        """Claim the published ports of a new HA cluster: etcd's, each node's PostgreSQL and REST
        API, HAProxy's read-write, read-only and stats ports."""
        got = iter(ports.claim_free_ports(len(ETCD_MEMBERS) + 2 * n_nodes + 3, self.owner))
        self.ha["etcd"] = {m: {"client": next(got), "container": self.cfg["prefix"] + m} for m in ETCD_MEMBERS}
        self.state["nodes"] = {}
        for name in NODE_NAMES[:n_nodes]:
            port, rest = next(got), next(got)
            self.state["nodes"][name] = dict(self.node_spec(name, "replica", port), rest=rest)
        self.ha["haproxy"] = {"rw": next(got), "ro": next(got), "stats": next(got),
                              "container": self.cfg["prefix"] + "haproxy"}

    def all_ports(self) -> "list[int]":
        out = [m["client"] for m in self.ha.get("etcd", {}).values()]
        for s in self.state["nodes"].values():
            out += [s["port"], s["rest"]]
        out += [self.ha.get("haproxy", {}).get(k) for k in ("rw", "ro", "stats")]
        return [p for p in out if p]

    def claim_ports(self) -> None:
        """Claim the published ports again (``down`` released them; the containers publish the same)."""
        taken = [p for p in self.all_ports() if not ports.claim(p, self.owner, keep=True)
                 and (ports.read_claim(p) or {}).get("lab_home") != self.owner and not self._published(p)]
        if taken:
            raise LabError(ngettext("port {ports} of the HA cluster are taken by another program: stop it, or "
                                    "lab.ha.down(wipe=True) then lab.ha.up()",
                                    "ports {ports} of the HA cluster are taken by another program: stop it, or "
                                    "lab.ha.down(wipe=True) then lab.ha.up()", len(taken)).format(
                ports=', '.join(map(str, taken))))

    def _published(self, port: int) -> bool:
        """Does one of this project's containers publish ``port`` now?"""
        for c in self.client.containers.list(filters={"label": f"com.docker.compose.project={self.cfg['project']}"}):
            for binds in (c.attrs.get("HostConfig", {}).get("PortBindings") or {}).values():
                if any(str(b.get("HostPort")) == str(port) for b in binds or []):
                    return True
        return False

    # --- the compose CLI --------------------------------------------------------------------------
    def write_env(self) -> None:
        nodes = self.state["nodes"]
        env = {"POSTGRES_PASSWORD": self.state["password"], "REPLICATION_PASSWORD": self.state["replication_password"],
               "PATRONI_REST_PASSWORD": self.ha["rest_password"], "ETCD_ROOT_PASSWORD": self.ha["etcd_password"],
               "ETCD_CLUSTER_TOKEN": f"pglab-ha-{self.ha['token']}",
               "LAB_HA_IMAGE": self.cfg["ha_image"], "LAB_NODE_IMAGE": self.cfg["image"],
               "LAB_CONTAINER_PREFIX": self.cfg["prefix"]}
        for i, m in enumerate(ETCD_MEMBERS, 1):
            env[f"ETCD{i}_PORT"] = str(self.ha["etcd"][m]["client"])
        for i, name in enumerate(NODE_NAMES, 1):
            spec = nodes.get(name)
            # a service this cluster does not run still needs its variables (compose checks them all)
            env[f"PG_HA{i}_PORT"] = str(spec["port"]) if spec else "0"
            env[f"PG_HA{i}_REST_PORT"] = str(spec["rest"]) if spec else "0"
        h = self.ha["haproxy"]
        env.update(HAPROXY_RW_PORT=str(h["rw"]), HAPROXY_RO_PORT=str(h["ro"]), HAPROXY_STATS_PORT=str(h["stats"]))
        path = Path(self.cfg["env_file"])
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("# Generated by the lab for compose/docker-compose.ha.yml: secrets, never commit.\n")
            f.writelines(f"{k}={v}\n" for k, v in env.items())
        os.chmod(path, 0o600)

    def compose(self, *args, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [*compose_cli(), "--env-file", self.cfg["env_file"], "-f", str(HA_FILE), "-p", self.cfg["project"],
               "--profile", "ha", *args]
        if not {"ps", "config", "version", "images"} & set(args):
            commands.shell("host", [*compose_cli(), "-f", "compose/docker-compose.ha.yml", "-p", self.cfg["project"],
                                    "--profile", "ha", *args])
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=COMPOSE_DIR)
        except subprocess.TimeoutExpired:
            raise Timeout(_("`{compose} {command}` did not finish within {timeout:.0f} s").format(
                compose=' '.join(cmd[:2]), command=args[0], timeout=timeout)) from None
        if check and r.returncode != 0:
            lines = [ln for ln in (r.stderr or r.stdout).splitlines() if ln.strip()
                     and "Encountered errors while bringing up" not in ln]
            raise LabError(self._explain("\n".join(lines) or r.stderr or r.stdout))
        return r

    def services(self) -> "list[str]":
        return [*ETCD_MEMBERS, "etcd-auth", *(s["service"] for s in self.state["nodes"].values()), "haproxy"]

    def _ensure_image(self) -> None:
        """Build the HA image (and the node image under it) if it is not there yet: apt and pip need
        their registries, once."""
        import docker.errors  # lazy: the docker SDK (see compose._client)
        try:
            self.client.images.get(self.cfg["ha_image"])
            return
        except docker.errors.ImageNotFound:
            pass
        ComposeBackend._ensure_image(self)  # the node image, by the base compose file
        self.write_env()
        r = self.compose("build", "pg-ha1", check=False, timeout=1800)
        if r.returncode != 0:
            tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-8:])
            raise ServerStartError(_("building the HA image {image} failed; last lines:\n{log_lines}").format(
                image=self.cfg['ha_image'], log_lines=tail))

    # --- bringing it up ---------------------------------------------------------------------------
    def create_all(self, cluster, say) -> None:
        """A new cluster: every container created and started; Patroni bootstraps pg1 (its
        post_bootstrap runs init-master.sh), the others clone it."""
        t0 = time.monotonic()
        self._ensure_image()
        self.write_env()
        first, *others = list(self.state["nodes"].values())
        self.compose("up", "-d", "--no-build", *ETCD_MEMBERS, "etcd-auth", timeout=300)
        self.wait_etcd(timeout=60)
        self._wait_etcd_auth()
        say(_("etcd: {n} members healthy, auth on ({seconds:.1f} s)").format(
            n=len(ETCD_MEMBERS), seconds=time.monotonic() - t0))
        self.compose("up", "-d", "--no-build", "--no-deps", first["service"], timeout=300)
        self.wait_member(first, states=("running",), timeout=START_TIMEOUT)
        cluster.wait_leader(timeout=START_TIMEOUT)
        say(_("{node}: leader, bootstrapped by Patroni ({seconds:.1f} s)").format(
            node=first['name'], seconds=time.monotonic() - t0))
        self.compose("up", "-d", "--no-build", "--no-deps", *(s["service"] for s in others), "haproxy", timeout=300)
        for s in others:
            self.wait_member(s, timeout=START_TIMEOUT)
        say(_("{nodes}: replicas streaming ({seconds:.1f} s)").format(
            nodes=', '.join(s['name'] for s in others), seconds=time.monotonic() - t0))

    def _wait_etcd_auth(self, timeout: float = 60) -> None:
        c = self.client.containers.get(self.cfg["prefix"] + "etcd-auth")
        code = c.wait(timeout=timeout).get("StatusCode")
        if code != 0:
            raise ServerStartError(_("etcd-auth failed ({code}): {output}").format(
                code=code, output=c.logs(tail=5).decode(errors='replace').strip()))

    def start_all(self) -> "list[str]":
        """Start what is not running (containers kept their data); links to etcd healed."""
        said = []
        before = {n for n in self.services() if self._running(self.cfg["prefix"] + n)}
        for s in self.state["nodes"].values():  # first: compose refuses a container off its network
            state = self.link_state(s)
            if state.get("cut") or state.get("hold") or state.get("latency_ms") or not self._on_etcd_net(s):
                if self.container(s) is not None:
                    self.set_link(s, cut=False, hold=False, latency_ms=0, jitter_ms=0)
                    if state.get("cut") or state.get("hold") or state.get("latency_ms"):
                        said.append(_("{node}'s link to etcd healed").format(node=s['name']))
        self.write_env()
        # etcd-auth ran once, at creation (auth stays on in etcd's data): not again
        self.compose("up", "-d", "--no-build", "--no-recreate", "--no-deps",
                     *(n for n in self.services() if n != "etcd-auth"), timeout=300)
        self.wait_etcd(timeout=60)
        said[:0] = [n for n in self.services() if n != "etcd-auth" and n not in before]
        for s in self.state["nodes"].values():
            if self._patroni_lost(s):
                commands.shell(s["name"], ["docker", "restart", s["container"]])
                self.container(s).restart(timeout=30)
                said.append(s["name"])
        for s in self.state["nodes"].values():
            self.wait_member(s, timeout=START_TIMEOUT)
        return said

    # --- containers -------------------------------------------------------------------------------
    def _get(self, name: str):
        import docker.errors  # lazy: the docker SDK (see compose._client)
        try:
            return self.client.containers.get(name)
        except docker.errors.NotFound:
            return None

    def _running(self, name: str) -> bool:
        c = self._get(name)
        return c is not None and c.status == "running"

    def _top(self, spec) -> "list[tuple[int, str]]":
        """The node container's processes: (host pid, command line)."""
        c = self.container(spec)
        if c is None or c.status != "running":
            return []
        try:
            top = c.top(ps_args="-o pid,stat,args")
        except Exception:  # noqa: BLE001 (the container stopped in between)
            return []
        out = []
        for row in top.get("Processes") or []:
            pid, stat, args = row[0], row[1], " ".join(row[2:])
            if not stat.startswith("Z"):
                out.append((int(pid), args))
        return out

    def pid(self, spec) -> "int | None":
        """The postmaster's pid (as this machine sees it), None if PostgreSQL is not running."""
        for pid, args in self._top(spec):
            if "bin/postgres" in args and " -D " in args:
                return pid
        return None

    def patroni_pid(self, spec: dict) -> "int | None":
        for pid, args in self._top(spec):
            if "/opt/patroni/bin/patroni " in args + " ":
                return pid
        return None

    def patroni_running(self, spec: dict) -> bool:
        """Patroni runs in the node's container, or the container started less than 15 s ago (its
        entrypoint starts Patroni after writing the configuration)."""
        c = self.container(spec)
        if c is None or c.status in ("exited", "dead"):
            return False
        return c.status != "running" or self.patroni_pid(spec) is not None or _age(c) < 15

    def patroni_log(self, spec: dict, tail_lines: int = 30) -> str:
        return self.logs(spec, tail_lines)

    def process_pid(self, what: str) -> "int | None":
        """``etcd1..3``, ``haproxy``: its container's main pid if it runs; ``patroni-<node>``."""
        if what.startswith("patroni-"):
            spec = self.state["nodes"].get(what.partition("-")[2])
            return self.patroni_pid(spec) if spec else None
        name = (self.ha["etcd"][what]["container"] if what in self.ha.get("etcd", {})
                else self.ha["haproxy"]["container"] if what == "haproxy" else None)
        c = self._get(name) if name else None
        if c is None or c.status != "running":
            return None
        return c.attrs["State"].get("Pid") or None

    def etcd_log(self, member: str, tail_lines: int = 30) -> str:
        c = self._get(self.ha["etcd"][member]["container"])
        return c.logs(tail=tail_lines).decode("utf-8", "replace") if c else ""

    def start_etcd(self, member: str) -> int:
        c = self._get(self.ha["etcd"][member]["container"])
        if c is None:
            self.compose("up", "-d", "--no-build", "--no-deps", member)
        elif c.status != "running":
            commands.shell(member, ["docker", "start", c.name])
            c.start()
        return self.process_pid(member) or 0

    def stop_etcd(self, member: str, kill: bool = False) -> "int | None":
        c = self._get(self.ha["etcd"][member]["container"])
        if c is None or c.status != "running":
            return None
        pid = self.process_pid(member)
        if kill:
            commands.shell(member, ["docker", "kill", c.name])
            c.kill()
        else:
            commands.shell(member, ["docker", "stop", c.name])
            c.stop(timeout=10)
        c.wait(timeout=30)
        return pid

    def start(self, spec, state=None, primary_spec=None) -> int:
        """Start the node's container (Patroni starts PostgreSQL) and wait until PostgreSQL is up."""
        c = self.container(spec)
        if c is None:
            self.write_env()
            self.compose("up", "-d", "--no-build", "--no-deps", spec["service"])
        elif c.status == "paused":
            c.unpause()
        elif self._patroni_lost(spec):
            commands.shell(spec["name"], ["docker", "restart", spec["container"]])
            c.restart(timeout=30)
        elif c.status != "running":
            commands.shell(spec["name"], ["docker", "start", spec["container"]])
            c.start()
        self.wait_member(spec, timeout=START_TIMEOUT)
        return self.pid(spec) or 0

    def wait_ready(self, spec, timeout=None) -> int:
        self.wait_member(spec, timeout=START_TIMEOUT if timeout is None else timeout)
        return self.pid(spec) or 0

    def kill(self, spec) -> "int | None":
        """A machine crash: ``docker kill`` (Patroni and PostgreSQL die together); the postmaster's
        pid (or Patroni's, if PostgreSQL was not running)."""
        pg, patroni = self.pid(spec), self.patroni_pid(spec)
        if ComposeBackend.kill(self, spec) is None:
            return None
        return pg or patroni

    def _patroni_lost(self, spec) -> bool:
        """The container runs but its Patroni died (killed on purpose) a while ago: only a restart
        of the container brings Patroni back (its entrypoint is what starts it)."""
        c = self.container(spec)
        if c is None or c.status != "running" or self.patroni_pid(spec):
            return False
        return _age(c) > 5

    def _exec(self, spec, script: str, user: str = "postgres") -> "tuple[int, str]":
        c = self.container(spec)
        if c is None or c.status != "running":
            raise NotRunning(_("{node} ({container}) is not running").format(
                node=spec['name'], container=spec['container']))
        code, out = c.exec_run(["sh", "-c", script], user=user)
        return code, (out or b"").decode("utf-8", "replace").strip()

    def kill_postgres(self, spec) -> "int | None":
        """SIGKILL the postmaster only (``docker exec … kill -9``): Patroni lives on and decides."""
        pid = self.pid(spec)
        if pid is None:
            return None
        commands.shell(spec["name"], ["docker", "exec", spec["container"], "sh", "-c",
                                      'kill -9 "$(head -n 1 "$PGDATA/postmaster.pid")"'])
        self._exec(spec, 'kill -9 "$(head -n 1 "$PGDATA/postmaster.pid")"')
        self._wait_gone(spec, lambda: self.pid(spec) == pid)
        return pid

    def kill_patroni(self, spec) -> "int | None":
        """SIGKILL Patroni only: PostgreSQL lives on, unmanaged (the container too: its entrypoint
        waits for the PostgreSQL Patroni left)."""
        pid = self.patroni_pid(spec)
        if pid is None:
            return None
        script = ("for d in /proc/[0-9]*; do tr '\\000' ' ' < \"$d/cmdline\" 2>/dev/null | "
                  f"grep -q '{PATRONI_PATTERN}' && kill -9 \"${{d#/proc/}}\"; done; true")
        commands.shell(spec["name"], ["docker", "exec", spec["container"], "pkill", "-KILL", "-f", "bin/patroni"])
        self._exec(spec, script)
        self._wait_gone(spec, lambda: self.patroni_pid(spec) == pid)
        return pid

    @staticmethod
    def _wait_gone(spec, still, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while still():
            if time.monotonic() > deadline:
                raise Timeout(_("{node}: the process did not die within {timeout:g} s").format(
                    node=spec['name'], timeout=timeout))
            time.sleep(0.05)

    # --- patronictl ---------------------------------------------------------------------------------
    def _ctl_node(self) -> dict:
        for s in self.state["nodes"].values():
            if self.patroni_pid(s):
                return s
        raise NotRunning(_("no node's Patroni runs: start the cluster with lab.ha.up()"))

    def patronictl_argv(self, *args: str, shown: bool = False) -> "list[str]":
        spec = next(iter(self.state["nodes"].values())) if shown else self._ctl_node()
        return ["docker", "exec", "-u", "postgres", spec["container"], "patronictl", "-c", PATRONI_CONFIG, *args]

    def run_patronictl(self, args, timeout: float) -> subprocess.CompletedProcess:
        spec = self._ctl_node()
        c = self.container(spec)
        code, (out, err) = c.exec_run(["timeout", str(int(max(1, timeout))), "patronictl", "-c", PATRONI_CONFIG,
                                       *args], user="postgres", environment={"LANG": "C.UTF-8"}, demux=True)
        if code == 124:
            raise subprocess.TimeoutExpired(args, timeout)
        return subprocess.CompletedProcess(args, code, (out or b"").decode("utf-8", "replace"),
                                           (err or b"").decode("utf-8", "replace"))

    # --- links to etcd ------------------------------------------------------------------------------
    def _links_file(self) -> Path:
        return self.home.path / "links.json"

    def link_state(self, spec: dict) -> dict:
        try:
            saved = json.loads(self._links_file().read_text()).get(spec["name"], {})
        except (OSError, ValueError):
            saved = {}
        return {k: saved.get(k, False if k in ("cut", "hold") else 0) for k in ("cut", "hold", "latency_ms", "jitter_ms")}

    def _save_link(self, spec: dict, state: dict) -> None:
        try:
            links = json.loads(self._links_file().read_text())
        except (OSError, ValueError):
            links = {}
        links[spec["name"]] = state
        tmp = self._links_file().with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(links))
        os.replace(tmp, self._links_file())

    def _etcd_net(self):
        return self.client.networks.get(f"{self.cfg['project']}_etcd-net")

    def _on_etcd_net(self, spec) -> "str | None":
        """The node's address on etcd-net, None if it is disconnected."""
        c = self.container(spec)
        nets = (c.attrs.get("NetworkSettings", {}).get("Networks") or {}) if c else {}
        net = nets.get(f"{self.cfg['project']}_etcd-net")
        return net.get("IPAddress") if net else None

    def set_link(self, spec: dict, **changes) -> dict:
        """Cut (``docker network disconnect`` from etcd-net), hold (``tc netem loss 100%``: silent),
        or slow (``tc netem delay``) this node's link to etcd; the new state."""
        state = dict(self.link_state(spec), **changes)
        state["cut"], state["hold"] = bool(state["cut"]), bool(state["hold"]) and bool(state["cut"])
        disconnect = state["cut"] and not state["hold"]
        address = self._on_etcd_net(spec)
        if disconnect and address:
            commands.shell(spec["name"], ["docker", "network", "disconnect", f"{self.cfg['project']}_etcd-net",
                                          spec["container"]])
            self._etcd_net().disconnect(spec["container"], force=True)
        elif not disconnect and not address and self.container(spec) is not None:
            commands.shell(spec["name"], ["docker", "network", "connect", f"{self.cfg['project']}_etcd-net",
                                          spec["container"]])
            self._etcd_net().connect(spec["container"], aliases=[spec["service"]])
            address = self._on_etcd_net(spec)
        if not disconnect and address:
            self._netem(spec, address, loss=state["hold"], latency_ms=float(state["latency_ms"] or 0),
                        jitter_ms=float(state["jitter_ms"] or 0))
        self._save_link(spec, state)
        return state

    _shaping: "str | None | bool" = False  # not probed yet

    def link_shaping(self) -> "str | None":
        """None if this engine can slow or silence a node's link to etcd (netem in the Docker host's
        kernel), else one line saying why not (probed once, on a running node's loopback)."""
        if self._shaping is not False:
            return self._shaping
        spec = next((s for s in self.state["nodes"].values() if self._running(s["container"])), None)
        if spec is None:
            return _("no node container runs: start the cluster with lab.ha.up()")
        code, out = self._exec(spec, "tc qdisc replace dev lo root netem delay 1ms && tc qdisc del dev lo root",
                               user="root")
        if code == 0:
            self._shaping = None
        else:
            reason = (_("the Docker host's kernel has no netem (sch_netem)") if "unknown" in out
                      else _("tc refused: {output}").format(output=out[-120:]))
            self._shaping = _("{reason}: on containers here the lab cannot slow or silence a link to etcd (cutting "
                              "it works); the local backend can: lab.ha.up(backend='local')").format(reason=reason)
        return self._shaping

    def _netem(self, spec, address: str, loss: bool, latency_ms: float, jitter_ms: float) -> None:
        """netem on the node's etcd-net interface (its egress: a round trip to etcd gets the delay
        twice, so each way gets ``latency_ms`` as with the local backend's relays)."""
        find = f"ip -o -4 addr show | awk '$4 ~ /^{address}\\// {{print $2}}'"
        code, dev = self._exec(spec, find, user="root")
        if code != 0 or not dev:
            raise LabError(_("{node}: no interface with {address} (etcd-net) in its container").format(
                node=spec['name'], address=address))
        if not loss and not latency_ms:
            self._exec(spec, f"tc qdisc del dev {dev} root 2>/dev/null; true", user="root")
            return
        why = self.link_shaping()
        if why:
            raise LabError(why)
        rule = ["loss", "100%"] if loss else ["delay", f"{2 * latency_ms:g}ms", f"{2 * jitter_ms:g}ms"]
        cmd = f"tc qdisc replace dev {dev} root netem {' '.join(rule)}"
        commands.shell(spec["name"], ["docker", "exec", "-u", "root", spec["container"], *cmd.split()])
        code, out = self._exec(spec, cmd, user="root")
        if code != 0:
            raise LabError(_("{node}: tc refused ({reason}): the container "
                             "needs iproute2 (compose/ha.Dockerfile) and NET_ADMIN (docker-compose.ha.yml)").format(
                node=spec['name'], reason=out.splitlines()[-1] if out else code))

    def cut(self, spec, hold: bool = False) -> str:
        self.set_link(spec, cut=True, hold=bool(hold))
        return _("silent to etcd (tc netem loss 100%)") if hold else _("disconnected from etcd-net")

    def heal(self, spec) -> str:
        self.set_link(spec, cut=False, hold=False)
        return _("link to etcd healed")

    def is_cut(self, spec) -> bool:
        return bool(self.link_state(spec).get("cut"))

    # --- down --------------------------------------------------------------------------------------
    def stop_services(self) -> None:
        for name in (self.ha["haproxy"]["container"], *(m["container"] for m in self.ha["etcd"].values())):
            c = self._get(name)
            if c is not None and c.status == "running":
                c.stop(timeout=10)

    def after_down(self) -> None:
        """Every node is stopped: HAProxy and etcd too, then the containers and networks removed
        (``docker compose down``; the volumes stay)."""
        self._links_file().unlink(missing_ok=True)
        if Path(self.cfg["env_file"]).exists():
            self.write_env()
            self.compose("down", "--remove-orphans", "--timeout", "10", check=False, timeout=180)

    def remove_data(self, spec) -> None:
        """The volumes go with ``wipe`` (``docker compose down -v``)."""

    def wipe(self) -> None:
        self._links_file().unlink(missing_ok=True)
        if Path(self.cfg["env_file"]).exists():
            self.write_env()
            self.compose("down", "-v", "--remove-orphans", "--timeout", "10", check=False, timeout=180)
        Path(self.cfg["env_file"]).unlink(missing_ok=True)
        if self._docker is not None:
            self._docker.close()
            self._docker = None


def _age(container) -> float:
    """Seconds since the container (last) started."""
    container.reload()
    started = container.attrs.get("State", {}).get("StartedAt", "")
    try:
        return time.time() - datetime.fromisoformat(started[:26].rstrip("Z") + "+00:00").timestamp()
    except ValueError:
        return 3600.0
