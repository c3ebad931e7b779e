"""The local backend: PostgreSQL servers as processes started from the installed binaries.

Each node lives in ``<data_root>/<name>/``: ``pgdata/`` (its data directory) and
``server.log``.  The primary is made from a cached template data directory (initdb
runs once per PostgreSQL version), ``master/postgresql.conf``, ``master/pg_hba.conf``
and ``master/init-master.sh``; replicas are made by ``replica/entrypoint.sh``.
Servers are started with ``pg_ctl`` and stopped by pid (SIGINT, then SIGKILL after a
timeout).
"""
from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from .. import commands, conninfo
from ..i18n import _, ngettext
from ..errors import LabError, NotRunning, ServerStartError, Timeout
from ..system import binaries, ports
from ..system.home import cache_dir
from ..system.osuser import server_user
from ..system.paths import MASTER_DIR, REPLICA_DIR
from ..system.process import (command_line, is_stopped, pid_alive, process_tree, signal_tree, terminate_tree,
                              wait_gone, wait_states, working_in)
from . import links
from .apps import LocalApps
from .pgconf import primary_conninfo, render_node_conf, retarget_conninfo, standalone_auto_conf

_log = logging.getLogger(__name__)

TEMPLATE_FORMAT = 1  # bump when initdb options change
START_TIMEOUT = 60
_watchdogs: dict = {}   # pgdata -> Popen of the watchdog that resumes a paused node, in this process


# --- processes --------------------------------------------------------------------
def postmaster_pid(pgdata) -> "int | None":
    """The pid of the postmaster running on ``pgdata`` (or of a single-user backend, which writes
    its pid negated: ``postgres --single`` sets the password of a new primary), or None."""
    try:
        with open(Path(pgdata) / "postmaster.pid") as f:
            pid = abs(int(f.readline().strip()))
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def tail(path, n: int = 20) -> str:
    if n <= 0:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def _read_text(path) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


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
    max_standalones = 2

    @staticmethod
    def prepare_state(home, state: dict) -> None:
        """Record the binaries, the server user and the data root in a new cluster's state."""
        bins = binaries.find()
        user = server_user()
        data_root = home.default_data_root(user.can_reach)
        if data_root.exists() and any(data_root.iterdir()):
            raise LabError(_("{data_root} holds data from another cluster but {state_file} is missing: "
                             "remove {data_root} if it is not needed, then lab.up()").format(
                data_root=data_root, state_file=home.state_file))
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
                raise LabError(_("this cluster was made with PostgreSQL {made_with} but only "
                                 "{installed} is installed now: reset it with lab.down(wipe=True)").format(
                    made_with=state['pg_version'], installed=bins.version))
        user = server_user()
        if user.name != state.get("server_user", user.name):
            raise LabError(_("this cluster's servers run as {server_user!r}, not {user!r}: "
                             "set LAB_SERVER_USER accordingly").format(
                server_user=state['server_user'], user=user.name))
        self.bins = bins
        self.user = user
        self.state = state
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

    def primary_address(self) -> "tuple[str, int]":
        return "127.0.0.1", self.state["nodes"][self.state["primary"]]["port"]

    def address_of(self, spec) -> "tuple[str, int]":
        return "127.0.0.1", spec["port"]

    def archive_dir(self) -> str:
        """``<data_root>/archive``: beside the nodes' data, where every server (one OS user) reaches."""
        path = self.data_root / "archive"
        path.mkdir(mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
        self.user.chown(path, recursive=False)
        return str(path)

    def proxy_address(self) -> str:
        return "127.0.0.1"

    def host_dir(self) -> Path:
        return self.data_root

    def after_down(self) -> None:
        """Every server is stopped: nothing else holds resources."""

    def wipe(self) -> None:
        """Remove the data root, once every node's data is gone.  What still works in it (after a
        kernel killed during ``lab.up``: a replica's base backup, a postmaster that had not yet
        written postmaster.pid, initdb) is ended first, or it would write files back."""
        for attempt in range(3):
            self._end_workers()
            shutil.rmtree(self.data_root, ignore_errors=True)
            if not self.data_root.exists():
                return
            time.sleep(0.2)
        raise LabError(_("could not remove {data_root}: see what still uses it (fuser -v), remove it "
                         "by hand, then lab.up()").format(data_root=self.data_root))

    def _end_workers(self) -> None:
        for pid in working_in(self.data_root, {os.geteuid(), self.user.uid}):
            what = command_line(pid)
            if what is None:
                continue
            _log.warning("lab: ending pid %s, still working in %s: %s", pid, self.data_root, what)
            terminate_tree(pid, timeout=5, sig=signal.SIGKILL)

    # --- helpers ------------------------------------------------------------------
    def _run(self, cmd, *, as_server=True, env=None, timeout=120, input=None, check=True, log=None):
        kwargs = self.user.run_kwargs() if as_server else {}
        env = env or self.bins.env()
        if kwargs:  # another user: our home and working directory may be closed to it
            env["HOME"] = "/tmp"
            kwargs["cwd"] = "/"
        try:
            r = subprocess.run(cmd, env=env, input=input, capture_output=True, text=True, timeout=timeout,
                               start_new_session=True, **kwargs)
        except subprocess.TimeoutExpired:
            raise Timeout(_("{program} did not finish within {timeout}s").format(
                program=Path(cmd[0]).name, timeout=timeout)) from None
        if log is not None and (r.stdout or r.stderr):
            self._append_log(log, r.stdout + r.stderr)
        if check and r.returncode != 0:
            msg = (r.stderr or r.stdout).strip().splitlines()
            raise LabError(_("{program} failed: {reason}").format(
                program=Path(cmd[0]).name, reason=msg[-1] if msg else 'exit ' + str(r.returncode)))
        return r

    def _append_log(self, path, text):
        try:
            with open(path, "a") as f:
                f.write(text if text.endswith("\n") else text + "\n")
        except OSError:
            pass

    def _node_dir(self, spec) -> Path:
        return Path(spec["pgdata"]).parent

    def _make_node_dir(self, spec) -> None:
        d = self._node_dir(spec)
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
    def _template(self, staging_root: Path) -> Path:
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
            self._run(self.bins.cmd("initdb", "-D", work / "pgdata", "-U", "admin", "--auth=scram-sha-256",
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
            raise LabError(_("{pgdata} already holds a database: refusing to overwrite it; "
                             "use lab.up() to start it or lab.down(wipe=True) to reset").format(pgdata=pgdata))
        data_root = self._node_dir(spec).parent
        template = self._template(data_root)
        self._make_node_dir(spec)
        shutil.rmtree(pgdata, ignore_errors=True)
        copy_tree(template, pgdata)
        for conf in ("postgresql.conf", "pg_hba.conf"):
            shutil.copyfile(MASTER_DIR / conf, pgdata / conf)
        os.chmod(pgdata, 0o700)
        self.user.chown(pgdata)
        # The template's superuser password is not this cluster's: set it in single-user
        # mode, before the server listens, so there is no window without a password.
        sql = "ALTER ROLE admin PASSWORD '{}';\n".format(state["password"].replace("'", "''"))
        self._run(self.bins.cmd("postgres", "--single", "-D", pgdata, "-c", "log_min_messages=fatal",
                               "postgres"), input=sql, timeout=60, log=None)
        self.start(spec, state)
        env = self.bins.env()
        env.update(PGHOST="127.0.0.1", PGPORT=str(spec["port"]), PGUSER=state["superuser"],
                   PGPASSWORD=state["password"], PGCONNECT_TIMEOUT="10",
                   REPLICATION_USER=state["replication_user"],
                   REPLICATION_PASSWORD=state["replication_password"], APP_DB=state["app_db"])
        self._run(["sh", str(MASTER_DIR / "init-master.sh")], as_server=False, env=env, log=spec["log"])

    def create_standalone(self, spec, state) -> None:
        """Made exactly as the primary is: the same template, configuration and initialisation."""
        self.create_primary(spec, state)

    def adopt_standalone(self, spec, backup: Path, recovery: "dict | None" = None) -> None:
        """Move a plain base backup into the node's data directory, standby settings out, recovery in."""
        backup = Path(backup)
        if not (backup / "PG_VERSION").exists():
            raise LabError(_("{backup} is not a base backup (no PG_VERSION): take one with "
                             "lab.backups.take_base_backup(cluster) or pg_basebackup -D DIR -X stream").format(
                backup=backup))
        auto_text = standalone_auto_conf(_read_text(backup / "postgresql.auto.conf"), recovery)
        self._make_node_dir(spec)
        pgdata = Path(spec["pgdata"])
        if pgdata.exists():
            raise LabError(_("{pgdata} already exists: pick another name").format(pgdata=pgdata))
        shutil.move(str(backup), str(pgdata))
        (pgdata / "standby.signal").unlink(missing_ok=True)
        (pgdata / "recovery.signal").unlink(missing_ok=True)
        (pgdata / "postgresql.auto.conf").write_text(auto_text)
        if recovery:
            (pgdata / "recovery.signal").touch()
        os.chmod(pgdata, 0o700)
        self.user.chown(pgdata)

    def prepare_replica(self, spec, state, primary_spec, wait_timeout=60, rejoin=False) -> None:
        """Run ``replica/entrypoint.sh`` in prepare-only mode: keep, repair, rewind or take a
        base backup (``rejoin``: also rewind a former primary's data onto the primary)."""
        self._make_node_dir(spec)
        env = self.bins.env()
        env.update(PGDATA=str(spec["pgdata"]), PRIMARY_HOST="127.0.0.1", PRIMARY_PORT=str(primary_spec["port"]),
                   REPLICATION_USER=state["replication_user"], REPLICATION_PASSWORD=state["replication_password"],
                   REPLICA_NAME=spec["name"], SLOT_NAME=spec["name"], WAIT_TIMEOUT=str(wait_timeout),
                   REPLICA_PREPARE_ONLY="1", REPLICA_REJOIN="1" if rejoin else "0")
        # The script goes in on stdin: the server user may not be able to read the repository
        # (a clone under /root, say), and it needs no stdin of its own.
        r = self._run(["sh", "-s"], input=(REPLICA_DIR / "entrypoint.sh").read_text(), env=env, check=False,
                     log=spec["log"], timeout=wait_timeout + 600)
        commands.from_entrypoint(spec["name"], r.stderr)
        if r.returncode != 0:
            last = (r.stderr or r.stdout).strip().splitlines()
            raise ServerStartError(_("{node}: could not prepare the replica: {reason}").format(
                node=spec['name'], reason=last[-1] if last else r.returncode))

    def adopt(self, spec, backup: Path) -> None:
        """Make a base backup taken with ``pg_basebackup -R`` this node's data directory (moved)."""
        backup = Path(backup)
        if not (backup / "PG_VERSION").exists() or not (backup / "standby.signal").exists():
            raise LabError(_("{backup} is not a base backup taken with -R (no PG_VERSION or standby.signal): "
                             "take one with pg_basebackup -R -X stream").format(backup=backup))
        self._make_node_dir(spec)
        pgdata = Path(spec["pgdata"])
        if pgdata.exists():
            raise LabError(_("{pgdata} already exists: pick another replica name").format(pgdata=pgdata))
        shutil.move(str(backup), str(pgdata))
        os.chmod(pgdata, 0o700)
        self.user.chown(pgdata)

    def tool(self, spec, args, check=True, timeout=120, env=None) -> subprocess.CompletedProcess:
        """Run a command beside this node's data, as the server user (PostgreSQL's tools from its
        bin directory; LANG=C so their output parses)."""
        args = [str(a) for a in args]
        if commands.worth_showing(args):
            commands.shell(spec["name"], args, env={k: v for k, v in (env or {}).items() if k != "LANG"})
        if (self.bins.bindir / args[0]).exists():
            args[0] = self.bins.path(args[0])
        full = self.bins.env()
        full.update(env or {})
        return self._run(args, check=check, timeout=timeout, env=full)

    def server_file(self, spec, name: str) -> str:
        """``<data_root>/<name>``: one file for every node of this host."""
        return str(self.data_root / name)

    def write_server_file(self, spec, name: str, text: str) -> str:
        path = Path(self.server_file(spec, name))
        tmp = path.with_name(f".{name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        self.user.chown(tmp, recursive=False)
        os.replace(tmp, path)
        return str(path)

    def remove_server_file(self, spec, name: str, what: str) -> str:
        """Kept while a node's ``primary_conninfo`` names it (a replica made from a base backup)."""
        path = Path(self.server_file(spec, name))
        users = []
        for n in self.state["nodes"].values():
            try:
                info = primary_conninfo((Path(n["pgdata"]) / "postgresql.auto.conf").read_text())
            except OSError:
                continue
            if info and str(path) in info.values():
                users.append(n["name"])
        if not path.exists():
            return _("no {what}").format(what=what)
        if users:
            return _("kept {name}: {nodes} still connect(s) with it").format(name=name, nodes=', '.join(users))
        path.unlink()
        return _("removed {name}").format(name=name)

    def where(self, spec, path: str) -> str:
        return str(path)

    def give_to_server(self, path: Path) -> None:
        self.user.chown(path, recursive=False)

    @contextlib.contextmanager
    def directory_out(self, spec, dest: Path):
        """The tools write on this host: straight into ``dest``."""
        yield str(dest)

    @contextlib.contextmanager
    def directory_in(self, spec, src: Path):
        """The tools read this host: ``src`` itself."""
        yield str(src)

    # --- lifecycle ------------------------------------------------------------------
    def ensure_port(self, spec) -> bool:
        """Re-claim the node's port, or move it to a free one; True if the port changed."""
        port = ports.claim_one(spec["port"], self.owner)
        changed = port != spec["port"]
        spec["port"] = port
        return changed

    def _write_node_conf(self, spec) -> None:
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
            record_retarget(spec["name"], new)
            pid = self.pid(spec)
            if pid:
                os.kill(pid, signal.SIGHUP)

    def follow(self, spec, primary_spec) -> None:
        """After a promotion: stream from the new primary (``primary_conninfo`` retargeted, reloaded)."""
        self.retarget(spec, "127.0.0.1", primary_spec["port"])

    def upstream(self, spec) -> "tuple[str, int] | None":
        """host and port of the ``primary_conninfo`` in the replica's postgresql.auto.conf."""
        try:
            info = primary_conninfo((Path(spec["pgdata"]) / "postgresql.auto.conf").read_text())
        except (OSError, ValueError):
            return None
        host = (info or {}).get("host") or (info or {}).get("hostaddr")
        try:
            return (host, int(info.get("port") or 5432)) if host else None
        except ValueError:
            return None

    def start(self, spec, state=None, primary_spec=None) -> int:
        pid = self.pid(spec)
        if pid:
            return pid
        if primary_spec is not None:
            self.prepare_replica(spec, state, primary_spec)
        if not (Path(spec["pgdata"]) / "PG_VERSION").exists():
            raise LabError(_("{node}: {pgdata} holds no database: "
                             "reset the cluster with lab.down(wipe=True), then lab.up()").format(
                node=spec['name'], pgdata=spec['pgdata']))
        self._write_node_conf(spec)
        deadline = time.monotonic() + START_TIMEOUT
        moved = False
        while True:
            mark = os.path.getsize(spec["log"]) if os.path.exists(spec["log"]) else 0
            # Like pg_ctl start, minus its 100 ms polling: a detached postmaster whose pid we
            # know, logging to server.log; then postmaster.pid is polled every 5 ms.
            commands.shell(spec["name"], ["pg_ctl", "start", "-D", spec["pgdata"], "-l", spec["log"]])
            r = self._run(["sh", "-c", 'exec "$0" -D "$1" >>"$2" 2>&1 </dev/null & echo $!',
                          self.bins.path("postgres"), str(spec["pgdata"]), str(spec["log"])], timeout=30)
            pid = self._wait_postmaster(spec, int(r.stdout.strip()), deadline)
            if pid:
                return pid
            new_log = read_from(spec["log"], mark)
            # after a SIGKILL, the old server's children may hold shared memory for a moment,
            # and a slow init may not have reaped the old postmaster yet
            transient = ("shared memory block is still in use", 'lock file "postmaster.pid" already exists')
            if any(t in new_log for t in transient) and not self.pid(spec) and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            if ("Address already in use" in new_log and not moved and not self.pid(spec)
                    and time.monotonic() < deadline):
                # something outside the lab's port claims took the port between its claim and this
                # bind: the node moves to another claimed port, once (the caller saves the spec)
                old = spec["port"]
                spec["port"] = ports.claim_free_ports(1, self.owner)[0]
                ports.release([old], self.owner)
                self._write_node_conf(spec)
                moved = True
                continue
            if self.pid(spec):  # started but never became ready: do not leave it behind
                self.stop(spec)
            ctx = "\n".join(new_log.strip().splitlines()[-8:]) or _("(nothing in the log)")
            raise ServerStartError(_("{node} did not start on port {port}; last log lines:\n{log_lines}").format(
                node=spec['name'], port=spec['port'], log_lines=ctx))

    def wait_ready(self, spec, timeout: "float | None" = None) -> int:
        """Until the node's postmaster.pid says "ready" (or "standby")."""
        timeout = START_TIMEOUT if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            pid = self.pid(spec)
            if pid and self._wait_postmaster(spec, pid, min(deadline, time.monotonic() + 0.5)):
                return pid
            if not self.pid(spec):
                raise NotRunning(_("{node} is not running; last log lines:\n{log_lines}").format(
                    node=spec['name'], log_lines=tail(spec['log'], 8)))
            if time.monotonic() > deadline:
                raise Timeout(_("{node} was not ready within {timeout:g} s: see its logs()").format(
                    node=spec['name'], timeout=timeout))

    def _wait_postmaster(self, spec, pid: int, deadline: float) -> "int | None":
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

    def _signal_stop(self, spec, sig=signal.SIGINT) -> "int | None":
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
            self.resume(s)
        pids = [(s, self._signal_stop(s)) for s in specs]
        for s, pid in pids:
            if pid:
                commands.shell(s["name"], ["pg_ctl", "stop", "-m", "fast", "-D", s["pgdata"]])
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
        self.resume(spec)
        pid = self._signal_stop(spec, signal.SIGKILL)
        if pid:
            commands.note(spec["name"], f"kill -KILL {pid}   # " + _("the postmaster: a crash"))
            wait_gone(pid, 10)
        return pid

    # --- faults -----------------------------------------------------------------------
    def pause(self, spec, max_seconds: float) -> str:
        """SIGSTOP the postmaster and every child.  A watchdog process (its own session, so it
        outlives this kernel) sends them SIGCONT after ``max_seconds``; ``resume`` ends it."""
        pid = self.pid(spec)
        if not pid:
            raise NotRunning(_("{node} is stopped: start it before pausing it").format(node=spec['name']))
        pids = process_tree(pid)
        # The watchdog first: if anything below fails, the node still wakes up.
        dog = subprocess.Popen(["sh", "-c", 'sleep "$0"; kill -CONT "$@"', str(max_seconds), *map(str, pids)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
        _watchdogs[spec["pgdata"]] = dog
        commands.note(spec["name"], f"kill -STOP {' '.join(map(str, pids))}   # "
                      + _("the postmaster and its children: frozen"))
        signal_tree(pids, signal.SIGSTOP)
        # a child forked between the listing and the postmaster's stop: freeze it too
        late = [p for p in process_tree(pid) if p not in pids]
        signal_tree(late, signal.SIGSTOP)
        wait_states(pids + late, stopped=True)
        n = len(pids) + len(late)
        return ngettext("{n} process stopped; resumed by itself after {max_seconds:g} s",
                        "{n} processes stopped; resumed by itself after {max_seconds:g} s", n).format(
            n=n, max_seconds=max_seconds)

    def resume(self, spec) -> str:
        """End the node's watchdog, then SIGCONT the postmaster and every child."""
        dog = _watchdogs.pop(spec["pgdata"], None)
        if dog is not None:
            if dog.poll() is None:  # its own session: the shell and its sleep go together
                try:
                    os.killpg(dog.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            dog.wait()
        pid = self.pid(spec)
        if not pid:
            return _("not running")
        was = is_stopped(pid)
        tree = process_tree(pid)
        if was:
            commands.note(spec["name"], f"kill -CONT {' '.join(map(str, tree))}")
        signal_tree(reversed(tree), signal.SIGCONT)
        wait_states(tree, stopped=False)
        return _("resumed") if was else _("was not paused")

    def is_paused(self, spec) -> bool:
        pid = self.pid(spec)
        return bool(pid) and is_stopped(pid)

    def cut(self, spec, hold: bool = False) -> str:
        """Through the replica's proxy (``links.route`` makes one if there is none): processes of
        one host share its network, so a link is cut where it passes through the lab."""
        lk = links.link(self.owner, spec["name"]) or links.route(self, spec)
        lk.cut(hold=hold)
        if hold:
            return _("cut off the primary (proxy on port {port}, silent)").format(port=lk.proxy.port)
        return _("cut off the primary (proxy on port {port})").format(port=lk.proxy.port)

    def heal(self, spec) -> str:
        lk = links.link(self.owner, spec["name"])
        if lk is None:
            return _("no proxy link in this process: nothing to heal")
        lk.heal()
        return _("link healed")

    def is_cut(self, spec) -> bool:
        lk = links.link(self.owner, spec["name"])
        return lk is not None and lk.proxy.is_cut

    def promote(self, spec, timeout=60) -> None:
        """What ``pg_ctl promote -w`` does, minus its 100 ms polling: a ``promote`` file in the data
        directory, SIGUSR1 to the postmaster, then the control file's state polled every 5 ms until
        it says "in production" (the caller then waits until the node accepts writes)."""
        pgdata = Path(spec["pgdata"])
        pid = self.pid(spec)
        if not pid:
            raise LabError(_("{node} is not running: start it before promoting it").format(node=spec['name']))
        if not (pgdata / "standby.signal").exists():
            raise LabError(_("{node} is not in standby mode (no standby.signal): nothing to promote").format(
                node=spec['name']))
        # The file appears complete and owned by the server user in one step (a rename): a standby
        # whose primary is gone signals its own postmaster every few hundred ms, and the server
        # consumes a ``promote`` file as soon as it sees one, so nothing is done to it afterwards.
        trigger = pgdata / "promote"
        tmp = pgdata / f".promote.{os.getpid()}.{secrets.token_hex(4)}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            self.user.chown(tmp, recursive=False)
            os.rename(tmp, trigger)
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            if isinstance(e, OSError):
                raise LabError(_("{node}: could not write its promote file ({strerror}): nothing "
                                 "changed; see the permissions of its data directory").format(
                    node=spec['name'], strerror=e.strerror)) from None
            raise
        commands.shell(spec["name"], ["pg_ctl", "promote", "-D", spec["pgdata"]])
        try:
            os.kill(pid, signal.SIGUSR1)
        except ProcessLookupError:
            raise LabError(_("{node} stopped while being promoted; last log lines:\n"
                             "{log_lines}").format(node=spec['name'], log_lines=tail(spec['log'], 8))) from None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if control_state(pgdata) == DB_IN_PRODUCTION:
                return
            if not pid_alive(pid):
                raise LabError(_("{node} stopped while being promoted; last log lines:\n{log_lines}").format(
                    node=spec['name'], log_lines=tail(spec['log'], 8)))
            time.sleep(0.005)
        raise Timeout(_("{node} was not promoted within {timeout} s: see its logs()").format(
            node=spec['name'], timeout=timeout))

    def remove_data(self, spec) -> None:
        if self.pid(spec):
            raise LabError(_("{node} is running: stop it before removing its data").format(node=spec['name']))
        shutil.rmtree(self._node_dir(spec), ignore_errors=True)
        Path(str(spec["pgdata"]).rstrip("/") + ".basebackup-incomplete").unlink(missing_ok=True)


# --- the commands behind the lab's own steps, for lab.transcript() ------------------------------
def record_retarget(name: str, auto_conf: str) -> None:
    """A new primary_conninfo written to postgresql.auto.conf, as the SQL that does the same."""
    for line in auto_conf.splitlines():
        if line.strip().startswith("primary_conninfo"):
            value = line.split("=", 1)[1].strip()
            try:  # as a student would write it: the parameters that matter, not libpq's defaults
                info = conninfo.parse(value.strip("'").replace("''", "'"))
                keep = {k: info[k] for k in ("host", "port", "user", "password", "application_name") if k in info}
                value = "'" + conninfo.make(**keep).replace("'", "''") + "'"
            except LabError:
                pass
            commands.sql(name, f"ALTER SYSTEM SET primary_conninfo = {value}")
            commands.sql(name, "SELECT pg_reload_conf()")
            return
