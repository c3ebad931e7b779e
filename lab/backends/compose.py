"""The compose backend: the cluster as containers, the original course's way.

Services ``pg-master``, ``pg-replica`` (``pg-replica2``, ``pg-replica3`` behind profiles)
from ``compose/docker-compose.yml``, run by the Compose CLI (``docker compose`` v2 or
``docker-compose`` v1.29) for up/down, and by the docker SDK for everything that is
about one container: state, logs, stop/start, SIGKILL, pause, network cuts.

The lab writes the secrets and ports into ``<lab home>/compose.env`` (mode 0600) and
passes it with ``--env-file``; the compose project is named after the lab home, so two
labs run side by side.  The default lab home keeps the original container names
(``docker exec -it pg-master psql ...`` works as in the course); others prefix them.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg2

from .. import conninfo
from .. import commands
from ..i18n import _
from .. import i18n
from ..errors import LabError, NotRunning, ServerStartError, Timeout
from ..system import ports
from ..system.paths import COMPOSE_DIR, REPO
from .compose_apps import DEFAULT_APP_IMAGE, PGADMIN_EMAIL, ComposeApps, pgadmin_image
from .pgconf import standalone_auto_conf
from .sql import connect, query

COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
DEFAULT_IMAGE = "pglab/postgres-node:15"
PGDATA = "/var/lib/postgresql/data/pgdata"
# Each node's current role, beside its data in its volume (the entrypoints read it first; see
# compose/docker-compose.yml): a container keeps the environment it was created with, the role
# moves with failovers.
ROLE_FILE = "/var/lib/postgresql/data/lab-role.env"
SERVICES = {"primary": "pg-master", "replica1": "pg-replica", "replica2": "pg-replica2", "replica3": "pg-replica3"}
REPLICA_SERVICES = ("pg-replica", "pg-replica2", "pg-replica3")
STANDALONE_SERVICES = ("pg-standalone1", "pg-standalone2")  # nodes outside the physical cluster
PORT_VARS = {"pg-master": "PG_MASTER_PORT", "pg-replica": "PG_REPLICA_PORT",
             "pg-replica2": "PG_REPLICA2_PORT", "pg-replica3": "PG_REPLICA3_PORT",
             "pg-standalone1": "PG_STANDALONE1_PORT", "pg-standalone2": "PG_STANDALONE2_PORT"}
PROFILES = ["replica2", "replica3", "standalone1", "standalone2", "app", "pgadmin"]
# the cluster's WAL archive: the volume pg-archive, mounted here in every node's container
ARCHIVE_DIR = "/var/lib/postgresql/archive"
READY_TIMEOUT = 90
# the server user's home in a node's container: where its private files go (outside the data volume)
CONTAINER_HOME = "/var/lib/postgresql"
# where tools in a container write or read a copy of a host directory for a while (removed after)
SCRATCH = f"{CONTAINER_HOME}/base-backups"


def compose_cli() -> "list[str] | None":
    """``docker compose`` (v2) if it works, else ``docker-compose`` (v1), else None."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    v1 = shutil.which("docker-compose")
    return [v1] if v1 else None


def _client(timeout: int = 30):
    try:
        import docker  # lazy: the docker SDK takes ~0.3 s to import; only the compose backend needs it
    except ImportError:
        raise LabError(_("the docker Python package is missing: pip install docker")) from None
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as e:  # docker raises several kinds; all mean "no usable daemon"
        text = str(e)
        if "Permission denied" in text or "PermissionError" in text:
            raise LabError(_("a Docker daemon runs but you may not use it: add yourself to the docker group "
                             "(then log in again), or use lab.up(backend='local')")) from None
        raise LabError(_("no Docker daemon answers (start Docker, or set DOCKER_HOST): "
                         "or use lab.up(backend='local'), which needs no Docker")) from None
    return client


def compose_available() -> "tuple[bool, str]":
    """Whether the compose backend can run here, and if not why."""
    if not compose_cli():
        return False, _("no Compose CLI: install Docker Compose (docker compose v2 or docker-compose)")
    try:
        _client(timeout=3).close()
    except LabError as e:
        return False, str(e)
    return True, _("a Docker daemon answers and Compose is installed")


class ComposeBackend(ComposeApps):
    """Nodes as containers of one compose project; the same interface as LocalBackend."""

    name = "compose"
    max_replicas = 3
    max_standalones = 2

    @staticmethod
    def prepare_state(home, state: dict) -> None:
        cli = compose_cli()
        if not cli:
            raise LabError(_("the compose backend needs Docker Compose: install it (docker compose v2 or "
                             "docker-compose), or use lab.up(backend='local')"))
        _client(timeout=5).close()
        digest = hashlib.sha1(str(home.path).encode()).hexdigest()[:8]
        default_home = home.path == REPO / ".lab"
        state.update(compose={
            "project": f"pglab-{digest}",
            "prefix": "" if default_home else f"pglab-{digest}-",
            "env_file": str(home.path / "compose.env"),
            "image": os.environ.get("LAB_NODE_IMAGE", DEFAULT_IMAGE),
            "base_image": os.environ.get("LAB_BASE_IMAGE", "postgres:15-bookworm"),
            "pgadmin_password": secrets.token_urlsafe(12),
        })

    def __init__(self, home, state: dict):
        self.home = home
        self.state = state
        self.owner = home.owner
        self.cfg = state["compose"]
        self._docker = None
        self._ids = None  # uid, gid of the image's postgres user

    @property
    def client(self):
        if self._docker is None:
            self._docker = _client()
        return self._docker

    def describe(self) -> str:
        return _("container {container} ({image})").format(container=f"{self.cfg['prefix']}pg-master",
                                                           image=self.cfg['image'])

    def node_spec(self, name: str, role, port: int) -> dict:
        """A node runs in one of the compose file's services: its own (primary -> pg-master,
        replicaN -> pg-replicaN) when free, else the first free replica service; the node's
        name is its application_name and slot there (PG_REPLICA*_NAME / _SLOT)."""
        taken = {s["service"] for n, s in self.state["nodes"].items() if n != name}
        if str(role) == "standalone":
            free = [s for s in STANDALONE_SERVICES if s not in taken]
            if not free:
                raise LabError(_("the compose file has services for {n} standalone nodes "
                                 "({services}), all in use: remove one first").format(
                    n=len(STANDALONE_SERVICES), services=', '.join(STANDALONE_SERVICES)))
            return {"name": name, "role": str(role), "port": port, "service": free[0],
                    "container": self.cfg["prefix"] + free[0], "app_name": name, "pgdata": PGDATA}
        service = SERVICES.get(name)
        if service is None or service in taken:
            free = [s for s in REPLICA_SERVICES if s not in taken]
            if service == SERVICES["primary"] or not free:
                raise LabError(_("the compose file has services for a primary and {n} replicas "
                                 "({services}), all in use: remove a replica first").format(
                    n=len(REPLICA_SERVICES), services=', '.join(REPLICA_SERVICES)))
            service = free[0]
        return {"name": name, "role": str(role), "port": port, "service": service,
                "container": self.cfg["prefix"] + service, "app_name": name, "pgdata": PGDATA}

    # --- the compose CLI ------------------------------------------------------------
    def write_env(self) -> None:
        nodes = self.state["nodes"]
        env = {
            "POSTGRES_PASSWORD": self.state["password"],
            "REPLICATION_PASSWORD": self.state["replication_password"],
            "PGADMIN_PASSWORD": self.cfg["pgadmin_password"],
            "LAB_NODE_IMAGE": self.cfg["image"],
            "LAB_BASE_IMAGE": self.cfg["base_image"],
            "LAB_CONTAINER_PREFIX": self.cfg["prefix"],
            "PG_REPLICA_PORT": "0",
        }
        for spec in nodes.values():
            var = PORT_VARS[spec["service"]]
            env[var] = str(spec["port"])
            if spec["service"] in REPLICA_SERVICES:  # PG_REPLICA2_PORT -> PG_REPLICA2_NAME / _SLOT
                env[var[:-len("PORT")] + "NAME"] = spec.get("app_name", spec["name"])
                env[var[:-len("PORT")] + "SLOT"] = spec["name"]
            # PG_MASTER_NAME, PG_STANDALONE1_NAME: its cluster_name (the app's X-Served-By names the node)
            if spec["service"] in STANDALONE_SERVICES or spec["service"] == "pg-master":
                env[var[:-len("PORT")] + "NAME"] = spec["name"]
        env["LAB_PGADMIN_IMAGE"] = pgadmin_image()  # the official image, or compose/pgadmin.Dockerfile's
        if self.cfg.get("pgadmin_port"):
            env.update(PGADMIN_PORT=str(self.cfg["pgadmin_port"]), PGADMIN_EMAIL=PGADMIN_EMAIL,
                       PGADMIN_SERVERS_JSON=str(self.pgadmin_servers_file))
        # web-app (the crypto app): its token, image, ports, and the nodes by service name inside
        # the network (the password reaches it as PGPASSWORD, from POSTGRES_PASSWORD above)
        env["APP_API_TOKEN"] = self.cfg.setdefault("app_token", secrets.token_urlsafe(24))
        env["LAB_APP_IMAGE"] = self.cfg.get("app_image") or os.environ.get("LAB_APP_IMAGE", DEFAULT_APP_IMAGE)
        env["APP_LANG"] = i18n.current()  # the dashboard's labels in the student's language (app/i18n.py)
        primary = nodes.get(self.state.get("primary"))
        if primary:  # what a replica container created now streams from (its role file may say more)
            env["PG_PRIMARY_HOST"] = primary["service"]
            env["APP_PRIMARY_DSN"] = f"host={primary['service']} port=5432"
            env["APP_REPLICA_DSNS"] = ";".join(f"host={n['service']} port=5432" for n in nodes.values()
                                               if n is not primary and n["role"] != "standalone")
        if self.cfg.get("app_ports"):
            env["APP_API_PORT"], env["APP_DASHBOARD_PORT"] = map(str, self.cfg["app_ports"])
        path = Path(self.cfg["env_file"])
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("# Generated by the lab for compose/docker-compose.yml: secrets, never commit.\n")
            f.writelines(f"{k}={v}\n" for k, v in env.items())
        os.chmod(path, 0o600)

    def compose(self, *args, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [*compose_cli(), "--env-file", self.cfg["env_file"], "-f", str(COMPOSE_FILE),
               "-p", self.cfg["project"], *args]
        if not {"ps", "config", "version", "images"} & set(args):
            commands.shell("host", [*compose_cli(), "-p", self.cfg["project"], *args])
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=COMPOSE_DIR)
        except subprocess.TimeoutExpired:
            raise Timeout(_("`{compose} {command}` did not finish within {timeout:.0f} s").format(
                compose=' '.join(cmd[:2]), command=args[0], timeout=timeout)) from None
        if check and r.returncode != 0:
            raise LabError(self._explain(r.stderr or r.stdout))
        return r

    @staticmethod
    def _explain(output: str) -> str:
        lines = [ln for ln in output.strip().splitlines() if ln.strip()]
        text = " ".join(lines[-3:])
        if "port is already allocated" in text or "address already in use" in text:
            return _("a port on 127.0.0.1 is already taken by another program: {last_line}").format(
                last_line=lines[-1])
        return _("docker compose failed: {last_line}").format(last_line=lines[-1] if lines else _("no output"))

    def _ensure_image(self) -> None:
        """Build the node image from compose/Dockerfile if it is not there yet."""
        import docker.errors  # lazy: the docker SDK (see _client)
        try:
            self.client.images.get(self.cfg["image"])
            return
        except docker.errors.ImageNotFound:
            pass
        self.write_env()
        r = self.compose("build", "pg-master", check=False, timeout=1800)
        if r.returncode != 0:
            tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-8:])
            raise ServerStartError(_("building the node image {image} failed; last lines:\n{log_lines}").format(
                image=self.cfg['image'], log_lines=tail))

    # --- containers ----------------------------------------------------------------
    def container(self, spec):
        """The node's container (docker SDK object), or None."""
        import docker.errors  # lazy: the docker SDK (see _client)
        try:
            return self.client.containers.get(spec["container"])
        except docker.errors.NotFound:
            return None

    def pid(self, spec) -> "int | None":
        c = self.container(spec)
        if c is None or c.status != "running":
            return None
        return c.attrs["State"].get("Pid") or None

    def logs(self, spec, tail_lines: int = 50) -> str:
        c = self.container(spec)
        return c.logs(tail=tail_lines).decode("utf-8", "replace") if c else ""

    def ensure_port(self, spec) -> bool:
        port = ports.claim_one(spec["port"], self.owner)
        changed = port != spec["port"]
        spec["port"] = port
        return changed

    def primary_address(self) -> "tuple[str, int]":
        """The primary's service name and PostgreSQL's port inside the compose network."""
        return self.state["nodes"][self.state["primary"]]["service"], 5432

    def address_of(self, spec) -> "tuple[str, int]":
        """The node's service name and PostgreSQL's port inside the compose network."""
        return spec["service"], 5432

    def archive_dir(self) -> str:
        """The volume pg-archive where every node mounts it; its owner and mode are set through the
        primary's container (as root: an image built before the mount point existed leaves it root's)."""
        primary = self.state["nodes"][self.state["primary"]]
        c = self.container(primary)
        if c is None or c.status != "running":
            raise NotRunning(_("the primary ({primary}) is stopped: start it before using the archive").format(
                primary=primary['name']))
        code, out = c.exec_run(["sh", "-c", f"mkdir -p {ARCHIVE_DIR} && chown postgres:postgres {ARCHIVE_DIR} "
                                            f"&& chmod 0700 {ARCHIVE_DIR}"], user="root")
        if code != 0:
            raise LabError(_("could not prepare {archive_dir} in {container}: {output}").format(
                archive_dir=ARCHIVE_DIR, container=primary['container'],
                output=out.decode(errors='replace').strip()[:200]))
        return ARCHIVE_DIR

    def proxy_address(self) -> str:
        """The host's address on the compose network (its gateway): a container cannot reach the
        host's 127.0.0.1, and only that network's containers and the host reach the gateway."""
        try:
            return self._network().attrs["IPAM"]["Config"][0]["Gateway"]
        except (KeyError, IndexError, TypeError):
            raise LabError(_("the compose network has no gateway address for a proxy on this host: "
                             "use lab.faults.cut(cluster, replica) (a network disconnect) instead")) from None

    def host_dir(self) -> Path:
        return Path(self.home.path)

    def retarget(self, spec, host: str, port: int) -> None:
        """ALTER SYSTEM SET primary_conninfo through the replica's server, then a reload (a stopped
        container keeps what it has: its start points it at its primary again)."""
        if self.pid(spec):
            self._point_at(spec, host, port)

    def follow(self, spec, primary_spec) -> None:
        """After a promotion: record the replica's new primary in its role file (read by its
        entrypoint when the container starts again), and point a running replica's
        ``primary_conninfo`` at the new primary's service (ALTER SYSTEM + reload, inside the network)."""
        if self.container(spec) is not None:
            self._write_role(spec)
        if not self.pid(spec):
            return
        self._point_at(spec, primary_spec["service"], 5432)

    def _point_at(self, spec, host: str, port: int) -> None:
        conn = connect(self.state, spec)
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW primary_conninfo")
                info = cur.fetchone()[0] or ""
                value = conninfo.make(info, host=host, port=port)
                if conninfo.parse(value) != conninfo.parse(info):
                    cur.execute("ALTER SYSTEM SET primary_conninfo = %s", (value,))
                    cur.execute("SELECT pg_reload_conf()")
        finally:
            conn.close()

    def upstream(self, spec) -> "tuple[str, int] | None":
        """host and port of the running replica's ``primary_conninfo`` (SHOW: as its server uses it)."""
        if not self.pid(spec):
            return None
        try:
            info = conninfo.parse(query(self.state, spec, "SHOW primary_conninfo")[0] or "")
            host = info.get("host") or info.get("hostaddr")
            return (host, int(info.get("port") or 5432)) if host else None
        except (psycopg2.Error, LabError, ValueError):
            return None

    def _conninfo_host(self, spec) -> "str | None":
        info = query(self.state, spec, "SHOW primary_conninfo")[0] or ""
        return conninfo.parse(info).get("host")

    # --- the role file (ROLE_FILE) ------------------------------------------------------
    def _role_text(self, spec) -> str:
        """What a node's role file says, from the lab's state: the primary (and a former primary,
        which starts as it was: a primary, as on the local backend) ``ROLE=primary``; a replica
        its primary's service, its name and slot, and ``REPLICA_REJOIN=1`` while it rejoins."""
        head = "# Generated by the lab: this node's current role (read by its container's entrypoint).\n"
        if spec["role"] == "standalone":  # never a replica: initialised like the primary, or started as it is
            return head + "ROLE=standalone\n"
        if spec["role"] != "replica" or spec["name"] == self.state.get("primary"):
            return head + "ROLE=primary\n"
        primary = self._source(spec)  # a cascade's upstream replica, or the primary
        return head + (f"ROLE=replica\nPRIMARY_HOST={primary['service']}\nPRIMARY_PORT=5432\n"
                       f"REPLICA_NAME={spec.get('app_name', spec['name'])}\nSLOT_NAME={spec['name']}\n"
                       f"REPLICA_REJOIN={1 if spec.get('rejoin') else 0}\n")

    def _source(self, spec) -> dict:
        """The spec of the node a replica streams from: its recorded upstream (a cascade) while that
        is a standby or the primary of this cluster, else the primary (as Cluster._upstream_spec)."""
        nodes = self.state["nodes"]
        up = spec.get("upstream")
        if up and up in nodes and up != spec["name"] and nodes[up]["role"] in ("replica", "primary"):
            return nodes[up]
        return nodes[self.state["primary"]]

    def _write_role(self, spec, text: "str | None" = None) -> None:
        """Write the node's role file into its volume (put_archive: also into a stopped container)."""
        uid, gid = self._server_ids(spec)
        with tempfile.TemporaryDirectory() as d:
            f = Path(d) / "role"
            f.write_text(text if text is not None else self._role_text(spec))
            self._copy_in(spec, f, str(Path(ROLE_FILE).parent), arcname=Path(ROLE_FILE).name, uid=uid, gid=gid,
                         mode=0o600)

    def _server_ids(self, spec) -> "tuple[int, int]":
        """uid and gid of the image's ``postgres`` user, from its /etc/passwd (no exec: the
        container may be stopped)."""
        if self._ids is None:
            c = self.container(spec)
            if c is None:
                raise NotRunning(_("{node} has no container: start it first").format(node=spec['name']))
            stream, _stat = c.get_archive("/etc/passwd")
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream)), mode="r") as tar:
                text = tar.extractfile(tar.getmembers()[0]).read().decode()
            fields = next(ln.split(":") for ln in text.splitlines() if ln.startswith("postgres:"))
            self._ids = (int(fields[2]), int(fields[3]))
        return self._ids

    def prepare_replica(self, spec, state, primary_spec, wait_timeout=60, rejoin=False) -> None:
        """Containers prepare themselves (replica/entrypoint.sh at start, towards the primary in the
        role file): ``rejoin`` marks the node so that its next start rewinds a former primary."""
        if rejoin:
            spec["rejoin"] = True

    def create_standalone(self, spec, state) -> None:
        """Its container's entrypoint (master/entrypoint.sh) initialises it as pg-master's did."""
        self._ensure_image()
        self.start(spec, state)

    def adopt_standalone(self, spec, backup, recovery: "dict | None" = None) -> None:
        """The backup's standby settings out and ``recovery`` in (on the host), then into the
        container's volume as ``adopt`` does; marked initialised, so the entrypoint starts it as it is."""
        backup = Path(backup)
        if not (backup / "PG_VERSION").is_file():
            raise LabError(_("{backup} is not a base backup (no PG_VERSION): pass what "
                             "lab.backups.take_base_backup(cluster) returned").format(backup=backup))
        auto = backup / "postgresql.auto.conf"
        text = standalone_auto_conf(auto.read_text() if auto.exists() else "", recovery)
        (backup / "standby.signal").unlink(missing_ok=True)
        (backup / "recovery.signal").unlink(missing_ok=True)
        auto.write_text(text)
        if recovery:
            (backup / "recovery.signal").touch()
        (backup / "lab-initialised").touch()
        self.adopt(spec, backup)

    def create_primary(self, spec, state) -> None:
        self._ensure_image()
        self.start(spec, state)

    def start(self, spec, state=None, primary_spec=None) -> int:
        """Start the node's container (created first if missing or its port moved; its volume keeps
        the data), its role file written from the lab's state before it starts."""
        if self.pid(spec):
            return self.pid(spec)
        self.write_env()
        c = self.container(spec)
        published = None
        if c is not None:
            bindings = (c.attrs.get("HostConfig", {}).get("PortBindings") or {}).get("5432/tcp") or [{}]
            published = bindings[0].get("HostPort")
        if c is None or published != str(spec["port"]):
            self.compose(*self._profile(spec), "up", "--no-start", "--no-deps", "--no-build", spec["service"])
            c = self.container(spec)
            if c is None:
                raise ServerStartError(_("compose did not create {container}: see `docker compose ps`").format(
                    container=spec['container']))
        self._write_role(spec)
        t_start = int(time.time()) - 1
        commands.shell(spec["name"], ["docker", "start", spec["container"]])
        c.start()
        pid = self.wait_ready(spec)
        try:
            commands.from_entrypoint(spec["name"], c.logs(since=t_start).decode("utf-8", "replace"))
        except Exception:  # the transcript is a courtesy: a log that cannot be read changes nothing
            pass
        if spec.pop("rejoin", None):  # rewound: later starts just continue replicating
            self._write_role(spec)
        elif spec["role"] == "replica" and spec["name"] != self.state.get("primary"):
            # stopped during a failover, it still names an old primary's service (a proxy's address is left)
            primary = self._source(spec)
            host = self._conninfo_host(spec)
            if host in SERVICES.values() and host != primary["service"]:
                self._point_at(spec, primary["service"], 5432)
        return pid

    def wait_ready(self, spec, timeout: "float | None" = None) -> int:
        """Until PostgreSQL in the container accepts a login through the published port."""
        timeout = READY_TIMEOUT if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            c = self.container(spec)
            if c is None or c.status in ("exited", "dead"):
                tail = self.logs(spec, 8).strip()
                raise ServerStartError(_("{node} ({container}) stopped while starting; "
                                         "last log lines:\n{log_lines}").format(
                    node=spec['name'], container=spec['container'], log_lines=tail))
            try:
                connect(self.state, spec, timeout=2).close()
                return self.pid(spec)
            except psycopg2.OperationalError:
                pass
            if time.monotonic() > deadline:
                raise Timeout(_("{node} ({container}) did not accept connections within "
                                "{timeout:.0f} s: see cluster.node({node!r}).logs()").format(
                    node=spec['name'], container=spec['container'], timeout=timeout))
            time.sleep(0.05)

    def stop(self, spec, timeout: float = 30) -> None:
        self.stop_many([spec], timeout)

    def stop_many(self, specs, timeout: float = 30) -> None:
        """``docker stop`` (SIGINT: fast shutdown, SIGKILL after ``timeout``), all at once."""
        def one(spec):
            c = self.container(spec)
            if c is not None and c.status in ("running", "paused", "restarting"):
                if c.status == "paused":
                    c.unpause()
                commands.shell(spec["name"], ["docker", "stop", "-t", str(int(timeout)), spec["container"]])
                c.stop(timeout=int(timeout))
        with ThreadPoolExecutor(max(1, len(specs))) as pool:
            list(pool.map(one, specs))

    def kill(self, spec) -> "int | None":
        c = self.container(spec)
        if c is not None and c.status == "paused":  # thawed first, as on the local backend
            c.unpause()
            c.reload()
        if c is None or c.status != "running":
            return None
        pid = self.pid(spec)
        commands.shell(spec["name"], ["docker", "kill", "--signal=KILL", spec["container"]])
        c.kill(signal="SIGKILL")
        c.wait(timeout=30)
        return pid

    def promote(self, spec, timeout: float = 60) -> None:
        c = self.container(spec)
        if c is None or c.status != "running":
            raise NotRunning(_("{node} is stopped: start it before promoting it").format(node=spec['name']))
        import docker.errors  # lazy: the docker SDK (see _client)
        # pg_ctl writes the promote file as the server user (nothing is done to it after the signal,
        # so the server may consume it at once); -w waits for "in production" in the control file.
        # Whatever raises after the signal, Cluster._promote records what the server then is.
        commands.shell(spec["name"], ["docker", "exec", "-u", "postgres", spec["container"],
                                      "pg_ctl", "promote", "-D", PGDATA, "-w"])
        try:
            code, out = c.exec_run(["pg_ctl", "promote", "-D", PGDATA, "-w", "-t", str(max(1, int(timeout))), "-s"],
                                   user="postgres")
        except docker.errors.APIError as e:
            raise LabError(_("pg_ctl promote could not run in {container}: {reason}").format(
                container=spec['container'], reason=e.explanation or e)) from None
        if code != 0:
            raise LabError(_("pg_ctl promote failed on {container}: {output}").format(
                container=spec['container'], output=out.decode(errors='replace').strip()))
        # restarted, this container runs its data as the primary it now is
        try:
            self._write_role(spec, self._role_text(dict(spec, role="primary")))
        except docker.errors.APIError as e:
            raise LabError(_("{node} is promoted, but its role file could not be written "
                             "({reason}): start it with the lab, not by hand, until it is").format(
                node=spec['name'], reason=e.explanation or e)) from None

    def adopt(self, spec, backup) -> None:
        """Make a base backup on the host (``lab.backups`` copies one out of the primary's
        container) this replica's data: its container is created, not started, and the backup
        is copied into its volume, owned by the server user.  Like the local backend, the backup
        is moved: the host copy is removed once it is in."""
        backup = Path(backup)
        if not (backup / "PG_VERSION").is_file():
            raise LabError(_("{backup} is not a base backup (no PG_VERSION): pass what "
                             "lab.backups.take_base_backup(cluster) returned").format(backup=backup))
        self.write_env()
        self.compose(*self._profile(spec), "up", "--no-start", "--no-deps", "--no-build", spec["service"])
        c = self.container(spec)
        if c is None:
            raise LabError(_("compose did not create {container}: see `docker-compose ps`").format(
                container=spec['container']))
        primary = self.state["nodes"][self.state["primary"]]
        uid, gid = (int(self.tool(primary, ["id", flag]).stdout) for flag in ("-u", "-g"))
        self._copy_in(spec, backup, str(Path(PGDATA).parent), arcname=Path(PGDATA).name, uid=uid, gid=gid)
        shutil.rmtree(backup)

    @staticmethod
    def _profile(spec) -> list:
        return [] if spec["service"] in ("pg-master", "pg-replica") else ["--profile", spec["service"][3:]]

    # --- files in and out of containers (the docker archive API: works on stopped ones) -----
    def _copy_out(self, spec, path: str, dest: Path) -> None:
        """Copy a directory of a node's container to ``dest`` on the host (created; modes kept)."""
        c = self.container(spec)
        if c is None:
            raise NotRunning(_("{node} has no container: start it first").format(node=spec['name']))
        stream, _stat = c.get_archive(path)
        dest = Path(dest)
        dest.mkdir(mode=0o700, parents=True)
        with tarfile.open(fileobj=_ChunkReader(stream), mode="r|") as tar:
            for m in tar:
                parts = Path(m.name).parts[1:]  # the archive's top entry is the directory itself
                if not parts:
                    continue
                if ".." in parts or Path(m.name).is_absolute() or not (m.isfile() or m.isdir()):
                    continue  # a data directory holds only files and directories
                m.name = str(Path(*parts))
                m.uid = m.gid = os.getuid()
                m.uname = m.gname = ""
                tar.extract(m, dest, set_attrs=True, **_TRUSTED)

    def _copy_in(self, spec, src: Path, dest_dir: str, arcname: str, uid: int, gid: int, mode=None) -> None:
        """Copy ``src`` (a host file or directory) into a node's container as
        ``dest_dir/arcname``, owned by uid:gid (``mode`` for a single file)."""
        c = self.container(spec)
        if c is None:
            raise NotRunning(_("{node} has no container: start it first").format(node=spec['name']))

        def owned(info):
            info.uid, info.gid, info.uname, info.gname = uid, gid, "", ""
            if mode is not None and info.isfile():
                info.mode = mode
            return info
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(str(src), arcname=arcname, filter=owned)
        if not c.put_archive(dest_dir, buf.getvalue()):
            raise LabError(_("could not copy {src} into {container}:{dest_dir}").format(
                src=src, container=spec['container'], dest_dir=dest_dir))

    def _write_file(self, spec, path: str, text: str, mode: int = 0o600) -> None:
        """Write a small file into a node's container, owned by the server user (put_archive:
        the content never appears on a command line or in an environment)."""
        uid, gid = self._server_ids(spec)
        with tempfile.TemporaryDirectory() as d:
            f = Path(d) / "f"
            f.write_text(text)
            self._copy_in(spec, f, str(Path(path).parent), arcname=Path(path).name, uid=uid, gid=gid, mode=mode)

    def tool(self, spec, args, check=True, timeout=120, env=None) -> subprocess.CompletedProcess:
        """Run a command in this node's container as postgres (LANG=C); in a stopped container, in a
        throwaway one of the same image with its volume (pg_controldata after a clean shutdown, a
        standby.signal written to fence it), as the local backend runs tools beside stopped data."""
        c = self.container(spec)
        if c is None or c.status not in ("running", "exited", "created"):
            raise NotRunning(_("{node} is not running: start it first").format(node=spec['name']))
        if commands.worth_showing([str(a) for a in args]):
            commands.shell(spec["name"], ["docker", "exec", "-u", "postgres", spec["container"], *map(str, args)])
        env = {"LANG": "C", **(env or {})}
        if c.status == "running":
            code, (out, err) = c.exec_run([str(a) for a in args], user="postgres", environment=env, demux=True)
        else:
            code, out, err = self._run_beside(c, [str(a) for a in args], env, timeout)
        r = subprocess.CompletedProcess(args, code, (out or b"").decode("utf-8", "replace"),
                                        (err or b"").decode("utf-8", "replace"))
        if check and code != 0:
            last = (r.stderr or r.stdout).strip().splitlines()
            raise LabError(_("{program} failed in {container}: {reason}").format(
                program=Path(str(args[0])).name, container=spec['container'],
                reason=last[-1] if last else 'exit ' + str(code)))
        return r

    def _run_beside(self, c, args: list, env: dict, timeout: float):
        """``args`` in a new container of ``c``'s image with ``c``'s volumes, no network; removed after."""
        one = self.client.containers.create(c.image.id, entrypoint=args[:1], command=args[1:], user="postgres",
                                            environment=env, volumes_from=[c.id], network_disabled=True,
                                            labels={"pglab.tool-of": c.name})
        try:
            one.start()
            code = one.wait(timeout=timeout)["StatusCode"]
            return code, one.logs(stdout=True, stderr=False), one.logs(stdout=False, stderr=True)
        finally:
            one.remove(force=True)

    # --- faults -----------------------------------------------------------------------
    def pause(self, spec, max_seconds: float) -> str:
        """``docker pause`` (the cgroup freezer); no watchdog: ``resume``, ``stop`` and ``down`` thaw it."""
        c = self.container(spec)
        if c is None or c.status != "running":
            raise NotRunning(_("{node} is stopped: start it before pausing it").format(node=spec['name']))
        commands.shell(spec["name"], ["docker", "pause", spec["container"]])
        c.pause()
        return "docker pause"

    def resume(self, spec) -> str:
        was = self.is_paused(spec)
        if was:
            commands.shell(spec["name"], ["docker", "unpause", spec["container"]])
            self.container(spec).unpause()
        return _("resumed (docker unpause)") if was else _("was not paused")

    def is_paused(self, spec) -> bool:
        c = self.container(spec)
        return c is not None and c.status == "paused"

    def _network(self):
        return self.client.networks.get(f"{self.cfg['project']}_distribuidos-net")

    def cut(self, spec, hold: bool = False) -> str:
        """``docker network disconnect``: the replica loses every network link, clients' too
        (``hold`` cannot be had: the kernel resets the connections)."""
        self._network().disconnect(spec["container"])
        return _("disconnected from the compose network")

    def heal(self, spec) -> str:
        import docker.errors  # lazy: the docker SDK (see _client)
        try:
            self._network().connect(spec["container"], aliases=[spec["service"]])
        except docker.errors.APIError as e:  # docker says so when it is connected already
            if "already exists" not in str(e):
                raise
        return _("reconnected to the compose network")

    def is_cut(self, spec) -> bool:
        """Is the node's container disconnected from the compose network?  Asked of the container
        (its endpoints are kept while it is stopped); a node without a container (after ``down``,
        which removes them) is not cut."""
        c = self.container(spec)
        if c is None:
            return False
        return self._network().name not in (c.attrs.get("NetworkSettings", {}).get("Networks") or {})

    # --- files beside a node's data ---------------------------------------------------
    def server_file(self, spec, name: str) -> str:
        """``/var/lib/postgresql/<name>`` in the node's container (the server user's home)."""
        return f"{CONTAINER_HOME}/{name}"

    def write_server_file(self, spec, name: str, text: str) -> str:
        path = self.server_file(spec, name)
        self._write_file(spec, path, text, mode=0o600)
        return path

    def remove_server_file(self, spec, name: str, what: str) -> str:
        """Only the tools in that container read it (a replica container has its password in its
        environment); in a stopped container it is out of reach (it is not in the data volume)."""
        path = self.server_file(spec, name)
        if not self.pid(spec):
            return _("{name} kept in {container} (stopped): run clean again once it runs").format(
                name=name, container=spec['container'])
        had = self.tool(spec, ["test", "-e", path], check=False).returncode == 0
        self.tool(spec, ["rm", "-rf", path, SCRATCH], check=False)
        if had:
            return _("removed {name} (in {container})").format(name=name, container=spec['container'])
        return _("no {what} (in {container})").format(what=what, container=spec['container'])

    def where(self, spec, path: str) -> str:
        return f"{spec['container']}:{path}"

    def give_to_server(self, path: Path) -> None:
        """Files on the host stay the host user's: the containers get copies."""

    @contextlib.contextmanager
    def directory_out(self, spec, dest: Path):
        """The tools write in the container (``SCRATCH/<name>``); the result is copied out to ``dest``."""
        target = f"{SCRATCH}/{Path(dest).name}"
        self.tool(spec, ["rm", "-rf", target])
        try:
            yield target
            self._copy_out(spec, target, dest)
        finally:
            self.tool(spec, ["rm", "-rf", target], check=False)
            self.tool(spec, ["rmdir", SCRATCH], check=False)

    @contextlib.contextmanager
    def directory_in(self, spec, src: Path):
        """A copy of ``src`` in the container, owned by the server user, removed afterwards."""
        where = f"{SCRATCH}/.copy-of-{Path(src).name}"
        uid, gid = self._server_ids(spec)
        self.tool(spec, ["mkdir", "-p", SCRATCH])
        self.tool(spec, ["rm", "-rf", where])
        try:
            self._copy_in(spec, src, SCRATCH, arcname=Path(where).name, uid=uid, gid=gid)
            yield where
        finally:
            self.tool(spec, ["rm", "-rf", where], check=False)
            self.tool(spec, ["rmdir", SCRATCH], check=False)

    def remove_data(self, spec) -> None:
        import docker.errors  # lazy: the docker SDK (see _client)
        c = self.container(spec)
        if c is not None:
            c.remove(force=True, v=False)
        try:
            self.client.volumes.get(f"{self.cfg['project']}_{spec['service']}-data").remove(force=True)
        except docker.errors.NotFound:
            pass

    def storage_of(self, spec) -> dict:
        import docker.errors  # lazy: the docker SDK (see _client)
        name = f"{self.cfg['project']}_{spec['service']}-data"
        try:
            self.client.volumes.get(name)
            exists = True
        except docker.errors.NotFound:
            exists = False
        return {"kind": "docker volume", "where": name, "exists": exists}

    def after_down(self) -> None:
        """Like ``docker compose down``: remove the stopped containers and the network; volumes stay."""
        if Path(self.cfg["env_file"]).exists():
            self.write_env()  # an env file of an older lab may lack a variable the compose file requires
            self.compose(*sum((["--profile", p] for p in PROFILES), []), "down", "--remove-orphans",
                         check=False, timeout=120)

    def wipe(self) -> None:
        if Path(self.cfg["env_file"]).exists():
            self.write_env()
            self.compose(*sum((["--profile", p] for p in PROFILES), []), "down", "-v", "--remove-orphans",
                         check=False, timeout=120)
        Path(self.cfg["env_file"]).unlink(missing_ok=True)
        if self._docker is not None:
            self._docker.close()
            self._docker = None


# our own container's archive, names checked above (Python >= 3.12 warns without a filter)
_TRUSTED = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}


class _ChunkReader:
    """A file-like reader over the byte chunks the docker SDK streams (for tarfile's "r|")."""

    def __init__(self, chunks):
        self._chunks = iter(chunks)
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            try:
                self._buf += next(self._chunks)
            except StopIteration:
                break
        if n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out
