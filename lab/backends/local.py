"""The local backend: PostgreSQL servers as processes started from the installed binaries.

Each node lives in ``<data_root>/<name>/``: ``pgdata/`` (its data directory) and
``server.log``.  The primary is made from a cached template data directory (initdb
runs once per PostgreSQL version), ``master/postgresql.conf``, ``master/pg_hba.conf``
and ``master/init-master.sh``; replicas are made by ``replica/entrypoint.sh``.
Servers are started with ``pg_ctl`` and stopped by pid (SIGINT, then SIGKILL after a
timeout).
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..errors import LabError, ServerStartError, Timeout
from ..system import binaries, ports
from ..system.home import cache_dir
from ..system.osuser import server_user
from ..system.paths import MASTER_DIR, REPLICA_DIR
from ..system.process import pid_alive, process_tree, signal_tree, wait_gone
from .apps import LocalApps
from .pgconf import render_node_conf, retarget_conninfo

TEMPLATE_FORMAT = 1  # bump when initdb options change
START_TIMEOUT = 60


# --- processes --------------------------------------------------------------------
def postmaster_pid(pgdata) -> "int | None":
    """The pid of the postmaster running on ``pgdata``, or None."""
    try:
        with open(Path(pgdata) / "postmaster.pid") as f:
            pid = int(f.readline().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def tail(path, n: int = 20) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def copy_tree(src: Path, dst: Path) -> None:
    """Copy a data directory; ``cp -a`` is about twice as fast as shutil for ~1000 small files."""
    cp = shutil.which("cp")
    if cp and subprocess.run([cp, "-a", str(src), str(dst)], capture_output=True).returncode == 0:
        return
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, symlinks=True)


DB_IN_PRODUCTION = 6  # enum DBState in PostgreSQL's pg_control.h (stable since 9.x)


def control_state(pgdata) -> "int | None":
    """The cluster state in ``global/pg_control`` (what pg_ctl reads): system identifier (8 bytes),
    control and catalog versions (4 + 4), then the state (a native int)."""
    try:
        with open(Path(pgdata) / "global" / "pg_control", "rb") as f:
            head = f.read(20)
    except OSError:
        return None
    return int.from_bytes(head[16:20], sys.byteorder) if len(head) == 20 else None


def read_from(path, offset: int) -> str:
    """What was appended to a log file after ``offset`` bytes."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(256 * 1024).decode("utf-8", "replace")
    except OSError:
        return ""


class LocalBackend(LocalApps):
    """Servers as processes of this machine, data under the lab home (or a temp dir)."""

    name = "local"
    max_replicas = 5

    @staticmethod
    def prepare_state(home, state: dict) -> None:
        """Record the binaries, the server user and the data root in a new cluster's state."""
        bins = binaries.find()
        user = server_user()
        data_root = home.default_data_root(user.can_reach)
        if data_root.exists() and any(data_root.iterdir()):
            raise LabError(f"{data_root} holds data from another cluster but {home.state_file} is missing: "
                           f"remove {data_root} if it is not needed, then lab.up()")
        data_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        user.chown(data_root, recursive=False)
        state.update(pg_bindir=str(bins.bindir), pg_version=bins.version, server_user=user.name,
                     data_root=str(data_root))

    def __init__(self, home, state: dict):
        bins = binaries.PgBinaries(bindir=Path(state["pg_bindir"]), source="state", version=state["pg_version"],
                                   major=int(state["pg_version"].split(".")[0]))
        if not (bins.bindir / "postgres").exists():
            bins = binaries.find()
            if bins.major != int(state["pg_version"].split(".")[0]):
                raise LabError(f"this cluster was made with PostgreSQL {state['pg_version']} but only "
                               f"{bins.version} is installed now: reset it with lab.down(wipe=True)")
        user = server_user()
        if user.name != state.get("server_user", user.name):
            raise LabError(f"this cluster's servers run as {state['server_user']!r}, not {user.name!r}: "
                           "set LAB_SERVER_USER accordingly")
        self.bins = bins
        self.user = user
        self.owner = home.owner  # the lab home, for port claims
        self.data_root = Path(state["data_root"])

    def describe(self) -> str:
        return f"PostgreSQL {self.bins.version}"

    def node_spec(self, name: str, role, port: int) -> dict:
        d = self.data_root / name
        return {"name": name, "role": str(role), "port": port, "pgdata": str(d / "pgdata"),
                "log": str(d / "server.log"), "listen": "127.0.0.1"}

    def storage_of(self, spec) -> dict:
        return {"kind": "directory", "where": spec["pgdata"], "exists": Path(spec["pgdata"]).exists()}

    def after_down(self) -> None:
        """Every server is stopped: nothing else holds resources."""

    def wipe(self) -> None:
        """Remove what is left of the data root once every node's data is gone."""
        shutil.rmtree(self.data_root, ignore_errors=True)

    # --- helpers ------------------------------------------------------------------
    def run(self, cmd, *, as_server=True, env=None, timeout=120, input=None, check=True, log=None):
        kwargs = self.user.run_kwargs() if as_server else {}
        env = env or self.bins.env()
        if kwargs:  # another user: our home and working directory may be closed to it
            env["HOME"] = "/tmp"
            kwargs["cwd"] = "/"
        try:
            r = subprocess.run(cmd, env=env, input=input, capture_output=True, text=True, timeout=timeout,
                               start_new_session=True, **kwargs)
        except subprocess.TimeoutExpired:
            raise Timeout(f"{Path(cmd[0]).name} did not finish within {timeout}s") from None
        if log is not None and (r.stdout or r.stderr):
            self._append_log(log, r.stdout + r.stderr)
        if check and r.returncode != 0:
            msg = (r.stderr or r.stdout).strip().splitlines()
            raise LabError(f"{Path(cmd[0]).name} failed: {msg[-1] if msg else 'exit ' + str(r.returncode)}")
        return r

    def _append_log(self, path, text):
        try:
            with open(path, "a") as f:
                f.write(text if text.endswith("\n") else text + "\n")
        except OSError:
            pass

    def node_dir(self, spec) -> Path:
        return Path(spec["pgdata"]).parent

    def make_node_dir(self, spec) -> None:
        d = self.node_dir(spec)
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)
        self.user.chown(d, recursive=False)
        log = Path(spec["log"])
        if not log.exists():  # owned by the server user, who writes it through pg_ctl -l
            log.touch(mode=0o600)
            self.user.chown(log, recursive=False)

    def pid(self, spec) -> "int | None":
        return postmaster_pid(spec["pgdata"])

    def logs(self, spec, tail_lines=50) -> str:
        return tail(spec["log"], tail_lines)

    # --- template -------------------------------------------------------------------
    def template(self, staging_root: Path) -> Path:
        """A data directory straight from initdb, cached per PostgreSQL version."""
        cache = cache_dir()
        target = cache / f"template-pg{self.bins.version}-f{TEMPLATE_FORMAT}"
        if (target / "PG_VERSION").exists():
            return target
        cache.mkdir(parents=True, exist_ok=True)
        staging_root.mkdir(parents=True, exist_ok=True)
        self.user.chown(staging_root, recursive=False)
        work = staging_root / f".template-{os.getpid()}-{secrets.token_hex(3)}"
        work.mkdir(mode=0o700)
        self.user.chown(work, recursive=False)
        pwfile = work / "pw"
        pwfile.write_text(secrets.token_urlsafe(24) + "\n")  # replaced per cluster
        os.chmod(pwfile, 0o600)
        self.user.chown(pwfile, recursive=False)
        try:
            self.run(self.bins.cmd("initdb", "-D", work / "pgdata", "-U", "admin", "--auth=scram-sha-256",
                                   f"--pwfile={pwfile}", "-E", "UTF8", "--no-locale", "--no-sync"), timeout=300)
            tmp = cache / f".{target.name}.{os.getpid()}"
            shutil.copytree(work / "pgdata", tmp, symlinks=True)
            try:
                os.rename(tmp, target)
            except OSError:  # another process won the race: use theirs
                shutil.rmtree(tmp, ignore_errors=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return target

    # --- creating nodes -------------------------------------------------------------
    def create_primary(self, spec, state) -> None:
        pgdata = Path(spec["pgdata"])
        if (pgdata / "PG_VERSION").exists():
            raise LabError(f"{pgdata} already holds a database: refusing to overwrite it; "
                           "use lab.up() to start it or lab.down(wipe=True) to reset")
        data_root = self.node_dir(spec).parent
        template = self.template(data_root)
        self.make_node_dir(spec)
        shutil.rmtree(pgdata, ignore_errors=True)
        copy_tree(template, pgdata)
        for conf in ("postgresql.conf", "pg_hba.conf"):
            shutil.copyfile(MASTER_DIR / conf, pgdata / conf)
        os.chmod(pgdata, 0o700)
        self.user.chown(pgdata)
        # The template's superuser password is not this cluster's: set it in single-user
        # mode, before the server listens, so there is no window without a password.
        sql = "ALTER ROLE admin PASSWORD '{}';\n".format(state["password"].replace("'", "''"))
        self.run(self.bins.cmd("postgres", "--single", "-D", pgdata, "-c", "log_min_messages=fatal",
                               "postgres"), input=sql, timeout=60, log=None)
        self.start(spec, state)
        env = self.bins.env()
        env.update(PGHOST="127.0.0.1", PGPORT=str(spec["port"]), PGUSER=state["superuser"],
                   PGPASSWORD=state["password"], PGCONNECT_TIMEOUT="10",
                   REPLICATION_USER=state["replication_user"],
                   REPLICATION_PASSWORD=state["replication_password"], APP_DB=state["app_db"])
        self.run(["sh", str(MASTER_DIR / "init-master.sh")], as_server=False, env=env, log=spec["log"])

    def prepare_replica(self, spec, state, primary_spec, wait_timeout=60, rejoin=False) -> None:
        """Run ``replica/entrypoint.sh`` in prepare-only mode: keep, repair, rewind or take a
        base backup (``rejoin``: also rewind a former primary's data onto the primary)."""
        self.make_node_dir(spec)
        env = self.bins.env()
        env.update(PGDATA=str(spec["pgdata"]), PRIMARY_HOST="127.0.0.1", PRIMARY_PORT=str(primary_spec["port"]),
                   REPLICATION_USER=state["replication_user"], REPLICATION_PASSWORD=state["replication_password"],
                   REPLICA_NAME=spec["name"], SLOT_NAME=spec["name"], WAIT_TIMEOUT=str(wait_timeout),
                   REPLICA_PREPARE_ONLY="1", REPLICA_REJOIN="1" if rejoin else "0")
        # The script goes in on stdin: the server user may not be able to read the repository
        # (a clone under /root, say), and it needs no stdin of its own.
        r = self.run(["sh", "-s"], input=(REPLICA_DIR / "entrypoint.sh").read_text(), env=env, check=False,
                     log=spec["log"], timeout=wait_timeout + 600)
        if r.returncode != 0:
            last = (r.stderr or r.stdout).strip().splitlines()
            raise ServerStartError(f"{spec['name']}: could not prepare the replica: {last[-1] if last else r.returncode}")

    def adopt(self, spec, backup: Path) -> None:
        """Make a base backup taken with ``pg_basebackup -R`` this node's data directory (moved)."""
        backup = Path(backup)
        if not (backup / "PG_VERSION").exists() or not (backup / "standby.signal").exists():
            raise LabError(f"{backup} is not a base backup taken with -R (no PG_VERSION or standby.signal): "
                           "take one with pg_basebackup -R -X stream")
        self.make_node_dir(spec)
        pgdata = Path(spec["pgdata"])
        if pgdata.exists():
            raise LabError(f"{pgdata} already exists: pick another replica name")
        shutil.move(str(backup), str(pgdata))
        os.chmod(pgdata, 0o700)
        self.user.chown(pgdata)

    def tool(self, spec, args, check=True, timeout=120, env=None) -> subprocess.CompletedProcess:
        """Run a command beside this node's data, as the server user (PostgreSQL's tools from its
        bin directory; LANG=C so their output parses)."""
        args = [str(a) for a in args]
        if (self.bins.bindir / args[0]).exists():
            args[0] = self.bins.path(args[0])
        full = self.bins.env()
        full.update(env or {})
        return self.run(args, check=check, timeout=timeout, env=full)

    # --- lifecycle ------------------------------------------------------------------
    def ensure_port(self, spec) -> bool:
        """Re-claim the node's port, or move it to a free one; True if the port changed."""
        port = ports.claim_one(spec["port"], self.owner)
        changed = port != spec["port"]
        spec["port"] = port
        return changed

    def write_node_conf(self, spec) -> None:
        path = Path(spec["pgdata"]) / "node.conf"
        path.write_text(render_node_conf(spec["name"], spec["port"], spec.get("listen", "127.0.0.1")))
        os.chmod(path, 0o600)
        self.user.chown(path, recursive=False)

    def retarget(self, spec, host: str, port: int) -> None:
        """Point a replica's primary_conninfo at host:port (takes effect on reload)."""
        auto = Path(spec["pgdata"]) / "postgresql.auto.conf"
        try:
            text = auto.read_text()
        except OSError:
            return
        new = retarget_conninfo(text, host, port)
        if new != text:
            auto.write_text(new)
            pid = self.pid(spec)
            if pid:
                os.kill(pid, signal.SIGHUP)

    def follow(self, spec, primary_spec) -> None:
        """After a promotion: stream from the new primary (``primary_conninfo`` retargeted, reloaded)."""
        self.retarget(spec, "127.0.0.1", primary_spec["port"])

    def start(self, spec, state=None, primary_spec=None) -> int:
        pid = self.pid(spec)
        if pid:
            return pid
        if primary_spec is not None:
            self.prepare_replica(spec, state, primary_spec)
        if not (Path(spec["pgdata"]) / "PG_VERSION").exists():
            raise LabError(f"{spec['name']}: {spec['pgdata']} holds no database: "
                           "reset the cluster with lab.down(wipe=True), then lab.up()")
        self.write_node_conf(spec)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            mark = os.path.getsize(spec["log"]) if os.path.exists(spec["log"]) else 0
            # Like pg_ctl start, minus its 100 ms polling: a detached postmaster whose pid we
            # know, logging to server.log; then postmaster.pid is polled every 5 ms.
            r = self.run(["sh", "-c", 'exec "$0" -D "$1" >>"$2" 2>&1 </dev/null & echo $!',
                          self.bins.path("postgres"), str(spec["pgdata"]), str(spec["log"])], timeout=30)
            pid = self.wait_ready(spec, int(r.stdout.strip()), deadline)
            if pid:
                return pid
            new_log = read_from(spec["log"], mark)
            # after a SIGKILL, the old server's children may hold shared memory for a moment,
            # and a slow init may not have reaped the old postmaster yet
            transient = ("shared memory block is still in use", 'lock file "postmaster.pid" already exists')
            if any(t in new_log for t in transient) and not self.pid(spec) and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            if self.pid(spec):  # started but never became ready: do not leave it behind
                self.stop(spec)
            ctx = "\n".join(new_log.strip().splitlines()[-8:]) or "(nothing in the log)"
            raise ServerStartError(f"{spec['name']} did not start on port {spec['port']}; last log lines:\n{ctx}")

    def wait_ready(self, spec, pid: int, deadline: float) -> "int | None":
        """Poll postmaster.pid until ``pid`` says "ready" (or "standby"); None if it died first."""
        path = Path(spec["pgdata"]) / "postmaster.pid"
        while time.monotonic() < deadline:
            try:
                lines = path.read_text().splitlines()
            except OSError:
                lines = []
            # line 1 is the pid, line 8 the postmaster's status (PostgreSQL >= 10)
            if len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() in ("ready", "standby"):
                return pid
            if not pid_alive(pid):
                return None
            time.sleep(0.005)
        return None

    def signal_stop(self, spec, sig=signal.SIGINT) -> "int | None":
        pid = self.pid(spec)
        if pid:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return None
        return pid

    def stop(self, spec, timeout: float = 30) -> None:
        self.stop_many([spec], timeout)

    def stop_many(self, specs, timeout: float = 30) -> None:
        """Fast shutdown (SIGINT) of several nodes at once; SIGKILL whoever outlives the timeout."""
        for s in specs:  # a frozen (paused) server cannot shut down: thaw it first
            self.unpause(s)
        pids = [(s, self.signal_stop(s)) for s in specs]
        deadline = time.monotonic() + timeout
        for s, pid in pids:
            if pid and not wait_gone(pid, max(0.0, deadline - time.monotonic())):
                self._append_log(s["log"], f"lab: {s['name']} (pid {pid}) ignored SIGINT for {timeout}s: SIGKILL")
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                wait_gone(pid, 10, reaped=True)

    def kill(self, spec) -> "int | None":
        """SIGKILL the postmaster: a crash, for experiments (a paused one is thawed first, so
        that its children see their postmaster die and exit instead of staying frozen)."""
        self.unpause(spec)
        pid = self.signal_stop(spec, signal.SIGKILL)
        if pid:
            wait_gone(pid, 10)
        return pid

    def pause(self, spec) -> None:
        """SIGSTOP the postmaster and every child (lab.faults.pause adds a watchdog that resumes it)."""
        pid = self.pid(spec)
        if not pid:
            raise LabError(f"{spec['name']} is not running")
        signal_tree(process_tree(pid), signal.SIGSTOP)

    def unpause(self, spec) -> None:
        """SIGCONT the postmaster and every child (a no-op on a running node)."""
        pid = self.pid(spec)
        if pid:
            signal_tree(reversed(process_tree(pid)), signal.SIGCONT)

    def promote(self, spec, timeout=60) -> None:
        """What ``pg_ctl promote -w`` does, minus its 100 ms polling: a ``promote`` file in the data
        directory, SIGUSR1 to the postmaster, then the control file's state polled every 5 ms until
        it says "in production" (the caller then waits until the node accepts writes)."""
        pgdata = Path(spec["pgdata"])
        pid = self.pid(spec)
        if not pid:
            raise LabError(f"{spec['name']} is not running: start it before promoting it")
        if not (pgdata / "standby.signal").exists():
            raise LabError(f"{spec['name']} is not in standby mode (no standby.signal): nothing to promote")
        trigger = pgdata / "promote"
        trigger.touch(mode=0o600)
        self.user.chown(trigger, recursive=False)
        os.kill(pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if control_state(pgdata) == DB_IN_PRODUCTION:
                return
            if not pid_alive(pid):
                raise LabError(f"{spec['name']} stopped while being promoted; last log lines:\n{tail(spec['log'], 8)}")
            time.sleep(0.005)
        raise Timeout(f"{spec['name']} was not promoted within {timeout} s: see its logs()")

    def remove_data(self, spec) -> None:
        if self.pid(spec):
            raise LabError(f"{spec['name']} is running: stop it before removing its data")
        shutil.rmtree(self.node_dir(spec), ignore_errors=True)
        Path(str(spec["pgdata"]).rstrip("/") + ".basebackup-incomplete").unlink(missing_ok=True)
