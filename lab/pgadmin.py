"""pgAdmin 4 without Docker: the ``pgadmin4`` package in server mode on 127.0.0.1, with the nodes loaded.

>>> info = lab.pgadmin.start(cluster)     # doctest: +SKIP
>>> info                                  # the URL as a link, the email and the password
>>> lab.pgadmin.stop(cluster)             # doctest: +SKIP

pgAdmin pins exact versions of ~100 packages (Flask, urllib3, certifi, python-dateutil, ...),
so it lives in an environment of its own, ``.venv-pgadmin/`` in the repository (``install()``,
``python -m lab pgadmin --install``), and runs there as a separate process; the notebooks'
environment never imports it.  A ``pgadmin4`` installed in the lab's own environment is used
too, if there is one.

Everything pgAdmin keeps lives in ``<lab home>/pgadmin/`` (mode 0700):

    config_local.py   pgAdmin's configuration (server mode, 127.0.0.1:<port>, paths below)
    login.json        the generated login, the port and the URL (mode 0600)
    servers.json      the nodes as pgAdmin's ``load-servers`` reads them (no password)
    pgadmin4.db       pgAdmin's own SQLite database (users, servers, preferences)
    storage/<user>/pgpass   libpq password file for the nodes (mode 0600)
    pgadmin.pid, pgadmin.out, pgadmin4.log

The login survives ``stop()``; ``start()`` again re-attaches to a running pgAdmin or starts
it with the same login (and, if it can, the same port).  The servers are re-loaded whenever
the cluster changed (a new replica, a failover, a moved port).
"""
from __future__ import annotations

import contextlib
import fcntl
import html
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .system import ports
from .errors import LabError
from .system.home import LabHome, cache_dir
from .system.process import pid_alive, pid_exists

REQUIREMENT = "pgadmin4>=9.0,<10"
EMAIL = "student@lab.example.com"  # pgAdmin rejects special-use domains (.local, .test, localhost)
GROUP = "Replication Lab"
HOST = "127.0.0.1"
START_TIMEOUT = 90.0  # the first start creates pgAdmin's database: ~10 s here, slower on laptops
STOP_TIMEOUT = 15.0
CLI_TIMEOUT = 120.0
INSTALL_HINT = "python -m lab pgadmin --install"
_CHILD_ENV_DROP = (  # variables that would change where or how pgAdmin runs
    "PGADMIN_CONFIG_DEFAULT_SERVER", "PGADMIN_SERVER_MODE", "PGADMIN_INT_PORT", "PGADMIN_INT_KEY",
    "PGADMIN_SETUP_EMAIL", "PGADMIN_SETUP_PASSWORD", "CONFIG_DISTRO_FILE_PATH", "SCRIPT_NAME",
)


# --- where pgAdmin is installed -----------------------------------------------------------
def venv_dir() -> Path:
    """pgAdmin's own environment: ``$LAB_PGADMIN_VENV``, else ``.venv-pgadmin`` in the repository."""
    env = os.environ.get("LAB_PGADMIN_VENV")
    if env:
        return Path(env).expanduser().absolute()
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").exists() and os.access(repo, os.W_OK):
        return repo / ".venv-pgadmin"
    return cache_dir() / "venv-pgadmin"


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _stamp(venv: Path) -> Path:
    return venv / ".lab-installed"


def find_python() -> "Path | None":
    """An interpreter that has pgAdmin 4: ``$LAB_PGADMIN_PYTHON``, ``.venv-pgadmin``, or this one."""
    env = os.environ.get("LAB_PGADMIN_PYTHON")
    if env:
        return Path(env)
    venv = venv_dir()
    if _stamp(venv).exists() and _venv_python(venv).exists():
        return _venv_python(venv)
    if importlib.util.find_spec("pgadmin4") is not None:
        return Path(sys.executable)
    return None


def installed_version(python: "Path | None" = None) -> "str | None":
    python = python or find_python()
    if python is None:
        return None
    if Path(python) == _venv_python(venv_dir()):
        try:
            return json.loads(_stamp(venv_dir()).read_text()).get("version")
        except (OSError, json.JSONDecodeError):
            pass
    return _version_of(Path(python))


def _require_python() -> Path:
    python = find_python()
    if python is not None and not os.access(python, os.X_OK):
        raise LabError(f"LAB_PGADMIN_PYTHON={python} is not an executable Python: unset it or correct it")
    if python is None:
        raise LabError(f"pgAdmin 4 is not installed: run `{INSTALL_HINT}` (or lab.pgadmin.install()), "
                       f"which puts it in its own environment {venv_dir()} (about 600 MB, a minute)")
    return python


def install(quiet: bool = False, upgrade: bool = False) -> Path:
    """Install pgAdmin 4 into its own environment (created if needed); returns its Python."""
    venv = venv_dir()
    python = _venv_python(venv)
    venv.mkdir(parents=True, exist_ok=True)  # `python -m venv` fills an existing directory
    with _flock(venv / ".lab-install.lock"):
        if _stamp(venv).exists() and python.exists() and not upgrade:
            _say(quiet, f"pgAdmin 4 {installed_version(python) or '?'} is already installed in {venv}")
            return python
        t0 = time.monotonic()
        if not python.exists():
            r = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
            if r.returncode != 0 or not python.exists():
                _empty(venv, keep=".lab-install.lock")
                pyv = "%d.%d" % sys.version_info[:2]
                raise LabError(f"could not create {venv} ('{sys.executable} -m venv' failed: "
                               f"{_last_line(r.stderr or r.stdout)}): install python{pyv}-venv (Debian/Ubuntu) "
                               "or set LAB_PGADMIN_PYTHON to a Python that has pgadmin4")
        _stamp(venv).unlink(missing_ok=True)
        _say(quiet, f"installing {REQUIREMENT} into {venv} (about 600 MB; a minute or two) ...")
        log = venv / "install.log"
        cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
        cmd += (["--upgrade"] if upgrade else []) + [REQUIREMENT]
        with open(log, "w") as f:
            r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            tail = _tail(log, 8)
            errors = [ln for ln in tail.splitlines() if ln.startswith("ERROR:")]
            raise LabError(f"pip could not install {REQUIREMENT} into {venv}: "
                           f"{(errors or tail.splitlines() or ['no output'])[-1]} (the whole log: {log})")
        version = _version_of(python)
        _stamp(venv).write_text(json.dumps({"version": version, "requirement": REQUIREMENT,
                                            "seconds": round(time.monotonic() - t0, 1)}))
        _say(quiet, f"pgAdmin 4 {version} installed in {time.monotonic() - t0:.0f} s")
        return python


def _empty(d: Path, keep: str) -> None:
    for p in d.iterdir():
        if p.name == keep:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _version_of(python: Path) -> "str | None":
    r = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('pgadmin4'))"],
                       capture_output=True, text=True)
    return (r.stdout.strip() or None) if r.returncode == 0 else None


# --- what pgAdmin is given ---------------------------------------------------------------------
def render_servers(nodes, *, username: str, maintenance_db: str, passfile: str = "/pgpass",
                   group: str = GROUP) -> dict:
    """pgAdmin's servers.json for ``nodes``: (name, role, host, port) tuples, the primary first.

    No password: pgAdmin connects with the libpq password file ``passfile`` (in server mode a
    path inside the user's storage directory).
    """
    servers = {}
    for i, (name, role, host, port) in enumerate(nodes, start=1):
        servers[str(i)] = {
            "Name": name,
            "Group": group,
            "Comment": f"{role} of the lab cluster ({host}:{port})",
            "Host": host,
            "Port": int(port),
            "MaintenanceDB": maintenance_db,
            "Username": username,
            "ConnectionParameters": {"sslmode": "prefer", "connect_timeout": 10, "passfile": passfile},
        }
    return {"Servers": servers}


def render_passfile(username: str, password: str, host: str = HOST) -> str:
    """One libpq password file line for every port and database of the lab's superuser."""
    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace(":", "\\:")
    return f"{esc(host)}:*:*:{esc(username)}:{esc(password)}\n"


def render_config(data_dir: Path, port: int) -> str:
    """pgAdmin's config_local.py: server mode on 127.0.0.1:<port>, every path in ``data_dir``."""
    d = Path(data_dir)
    settings = {
        "SERVER_MODE": True,
        "DEFAULT_SERVER": HOST,
        "DEFAULT_SERVER_PORT": int(port),
        "DATA_DIR": str(d),
        "LOG_FILE": str(d / "pgadmin4.log"),
        "SQLITE_PATH": str(d / "pgadmin4.db"),
        "SESSION_DB_PATH": str(d / "sessions"),
        "STORAGE_DIR": str(d / "storage"),
        "AZURE_CREDENTIAL_CACHE_DIR": str(d / "azurecredentialcache"),
        "KERBEROS_CCACHE_DIR": str(d / "krbccache"),
        # browsers share cookies between ports of one host: one name per pgAdmin
        "SESSION_COOKIE_NAME": f"pga4_session_{int(port)}",
        # nothing leaves the machine
        "UPGRADE_CHECK_ENABLED": False,
        "SHOW_GRAVATAR_IMAGE": False,
        "LLM_ENABLED": False,
        # the password is random (24 characters) and pgAdmin answers on 127.0.0.1 only: a locked
        # account after three typos would cost a student more than it protects
        "MAX_LOGIN_ATTEMPTS": 0,
    }
    lines = ["# Written by lab.pgadmin at every start: edits here are overwritten.", ""]
    lines += [f"{k} = {v!r}" for k, v in settings.items()]
    return "\n".join(lines) + "\n"


def storage_user_dir(data_dir: Path, email: str = EMAIL) -> Path:
    """pgAdmin's storage directory of a user (its own naming: '@' becomes '_')."""
    name = email
    if not name or name[0].isdigit():
        name = "pga_user_" + name
    name = name.replace("@", "_").replace("/", "slash").replace("\\", "slash")
    return Path(data_dir) / "storage" / name


# --- the record of one lab home's pgAdmin -------------------------------------------------------
@dataclass
class PgAdmin:
    """Where pgAdmin answers and how to log in; shows as a link in a notebook."""

    url: "str | None"
    email: str
    password: str
    port: "int | None"
    pid: "int | None"
    running: bool
    version: "str | None" = None
    home: "str | None" = None

    def __repr__(self):
        if not self.running:
            return f"pgAdmin 4: stopped (lab.pgadmin.start(cluster) starts it; login {self.email})"
        return (f"pgAdmin 4{' ' + self.version if self.version else ''}: {self.url}\n"
                f"  email:    {self.email}\n  password: {self.password}")

    def _repr_html_(self):
        e = html.escape
        if not self.running:
            return f"<p>pgAdmin 4: <b>stopped</b> (<code>lab.pgadmin.start(cluster)</code> starts it)</p>"
        return ("<table>"
                f"<tr><th style='text-align:left'>pgAdmin 4{' ' + e(self.version) if self.version else ''}</th>"
                f"<td><a href='{e(self.url)}' target='_blank'>{e(self.url)}</a></td></tr>"
                f"<tr><th style='text-align:left'>email</th><td><code>{e(self.email)}</code></td></tr>"
                f"<tr><th style='text-align:left'>password</th><td><code>{e(self.password)}</code></td></tr>"
                "</table>")


class _Files:
    def __init__(self, home: LabHome):
        self.home = home
        self.dir = home.path / "pgadmin"
        self.login = self.dir / "login.json"
        self.pid = self.dir / "pgadmin.pid"
        self.out = self.dir / "pgadmin.out"
        self.config = self.dir / "config_local.py"
        self.servers = self.dir / "servers.json"
        self.servers_loaded = self.dir / "servers.loaded.json"
        self.db = self.dir / "pgadmin4.db"
        self.log = self.dir / "pgadmin4.log"
        self.lock = self.dir / "lock"

    def ensure_dir(self) -> None:
        self.home.ensure()
        self.dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.dir, 0o700)

    def read_login(self) -> "dict | None":
        try:
            return json.loads(self.login.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def write_login(self, login: dict) -> None:
        _write_private(self.login, json.dumps(login, indent=2, sort_keys=True) + "\n")

    def read_pid(self) -> "int | None":
        try:
            return int(self.pid.read_text().strip())
        except (OSError, ValueError):
            return None


def _home_of(where) -> LabHome:
    if isinstance(where, LabHome):
        return where
    home = getattr(where, "home", None)  # a Cluster
    if isinstance(home, LabHome):
        return home
    return LabHome(where)


# --- processes ----------------------------------------------------------------------------------
def _is_pgadmin(pid: "int | None", workdir: Path) -> bool:
    """True if ``pid`` is a live pgAdmin started in ``workdir`` (not a recycled pid)."""
    if not pid or not pid_alive(pid):
        return False
    proc = Path(f"/proc/{pid}")
    if proc.exists():
        try:
            cmd = (proc / "cmdline").read_bytes()
            cwd = os.readlink(proc / "cwd")
        except OSError:
            return False
        return b"pgadmin4.pgAdmin4" in cmd and Path(cwd) == Path(workdir).resolve()
    r = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True)
    return "pgadmin4.pgAdmin4" in r.stdout


def pgadmin_pids(workdir: "Path | None" = None) -> list[int]:
    """Live pgAdmin processes on this host (Linux), those started in ``workdir`` if given."""
    out = []
    proc = Path("/proc")
    if not proc.is_dir():
        return out
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            if b"pgadmin4.pgAdmin4" not in (d / "cmdline").read_bytes():
                continue
            if workdir is not None and Path(os.readlink(d / "cwd")) != Path(workdir).resolve():
                continue
        except OSError:
            continue
        if pid_alive(int(d.name)):
            out.append(int(d.name))
    return sorted(out)


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM the process group of ``pid`` (its own session), SIGKILL after ``timeout``."""
    def send(sig):
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    send(signal.SIGTERM)
    if not _wait_gone(pid, timeout):
        send(signal.SIGKILL)
        _wait_gone(pid, 10)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _gone(pid: int) -> bool:
    """True once every thread of ``pid`` has exited (only then is its listening socket closed).

    A multi-threaded process whose main thread has exited shows as a zombie while its other
    threads still run: our own child is reaped only after all of them (which also keeps it
    from lingering as a zombie in this kernel); for another's child, its thread list is watched.
    """
    proc = _CHILDREN.get(pid)
    if proc is not None:
        if proc.poll() is None:
            return False
        del _CHILDREN[pid]
        return True
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == pid
    except ChildProcessError:  # not our child (started by another kernel or process)
        pass
    except OSError:
        return True
    if not pid_exists(pid):
        return True
    if pid_alive(pid):
        return False
    try:
        return len(os.listdir(f"/proc/{pid}/task")) <= 1
    except OSError:
        return True


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/misc/ping", timeout=2) as r:
            return r.status == 200 and r.read(16).strip() == b"PING"
    except (urllib.error.URLError, OSError, ValueError):
        return False


# --- public API ------------------------------------------------------------------------------
def start(cluster, quiet: bool = False, timeout: float = START_TIMEOUT) -> PgAdmin:
    """Start pgAdmin 4 for this cluster (or re-attach to the running one); prints URL and login.

    With the compose backend, this is the ``pgadmin`` service of compose/docker-compose.yml.
    """
    if getattr(cluster, "backend_name", "local") == "compose":
        return cluster.backend.start_pgadmin(quiet=quiet)
    files = _Files(cluster.home)
    files.ensure_dir()
    with _flock(files.lock):
        cluster._reload()
        login = files.read_login()
        pid = files.read_pid()
        if login and _is_pgadmin(pid, files.dir):
            if not _wait_answer(login.get("url"), 15):
                raise LabError(f"pgAdmin 4 (pid {pid}) runs but does not answer on {login.get('url')}: "
                               f"lab.pgadmin.stop(cluster), then start it again; its last lines:\n{_logs(files)}")
            _claim_again(files, login)
            python = find_python()
            changed = _load_servers_if_changed(files, cluster, python, login) if python else False
            info = _info(files, login, pid, running=True)
            _say(quiet, f"pgAdmin 4 is running: re-attached{'; servers reloaded (refresh the page)' if changed else ''}")
            _say(quiet, repr(info))
            return info
        python = _require_python()
        _stop_locked(files, quiet=True)  # a stale pid file, a stray process, a claimed port
        t0 = time.monotonic()
        login, fresh = _ensure_login(files)
        port = _claim_port(files, cluster, login.get("port"))
        proc = None
        try:
            _write_private(files.config, render_config(files.dir, port))
            if fresh:
                _setup_db(files, python, login)
            _load_servers_if_changed(files, cluster, python, login)
            proc = _spawn(files, python)
            files.pid.write_text(f"{proc.pid}\n")
            url = f"http://{HOST}:{port}"
            _wait_http(files, proc, url, timeout)
        except BaseException:
            if proc is not None:
                _terminate(proc.pid, 5)
            files.pid.unlink(missing_ok=True)
            _release_port(files, port)
            raise
        login.update(port=port, url=url, version=installed_version(python))
        files.write_login(login)
        info = _info(files, login, proc.pid, running=True)
        _say(quiet, f"pgAdmin 4 started in {time.monotonic() - t0:.1f} s")
        _say(quiet, repr(info))
        return info


def stop(where=None, quiet: bool = False, timeout: float = STOP_TIMEOUT, wipe: bool = False) -> bool:
    """Stop this lab home's pgAdmin (a Cluster, a lab home path, or the default home).

    Its data and login are kept; ``wipe=True`` removes them too (the next start makes a new
    login).  Returns True if a pgAdmin was running.
    """
    files = _Files(_home_of(where))
    if not files.dir.is_dir():
        return False
    with _flock(files.lock):
        was = _stop_locked(files, quiet=quiet, timeout=timeout)
        if wipe:
            _empty(files.dir, keep=files.lock.name)
    if wipe:
        shutil.rmtree(files.dir, ignore_errors=True)
    return was


def status(where=None) -> PgAdmin:
    """Is pgAdmin running for this lab home, where, and with which login?"""
    files = _Files(_home_of(where))
    login = files.read_login() or {}
    pid = files.read_pid()
    running = bool(login) and _is_pgadmin(pid, files.dir)
    return _info(files, login, pid if running else None, running=running)


def main(args) -> int:
    """``python -m lab pgadmin [--stop | --status | --install]`` (``args`` from argparse: home, stop, status, install)."""
    if getattr(args, "install", False):
        install()
        return 0
    if getattr(args, "stop", False):
        print("pgAdmin stopped" if stop(args.home, quiet=True) else "pgAdmin was not running")
        return 0
    if getattr(args, "status", False):
        info = status(args.home)
        print(info)
        return 0 if info.running else 3
    from .cluster import attach
    start(attach(args.home))
    return 0


# --- steps --------------------------------------------------------------------------------------
def _info(files: _Files, login: dict, pid, running: bool) -> PgAdmin:
    return PgAdmin(url=login.get("url") if running else None, email=login.get("email", EMAIL),
                   password=login.get("password", ""), port=login.get("port"), pid=pid if running else None,
                   running=running, version=login.get("version"), home=str(files.home.path))


def _ensure_login(files: _Files) -> "tuple[dict, bool]":
    """The saved login, or a new one (and then pgAdmin's database is made anew)."""
    login = files.read_login()
    if login and login.get("email") and login.get("password") and login.get("db_ready") and files.db.exists():
        return login, False
    # a first start, or one that broke off before pgAdmin's database was complete: start over
    for p in (files.db, files.servers_loaded):
        p.unlink(missing_ok=True)
    shutil.rmtree(files.dir / "sessions", ignore_errors=True)
    login = {"email": EMAIL, "password": secrets.token_urlsafe(18), "db_ready": False,
             "port": (login or {}).get("port")}
    files.write_login(login)
    return login, True


def _claim_port(files: _Files, cluster, old: "int | None") -> int:
    """pgAdmin's port: the one it had (a stable URL) if still free, else a random free one.

    Never a node's port, even a stopped node's: the node takes its port back at its next
    start, and a claim of the same lab home would not keep it from doing so.
    """
    owner = files.home.owner
    node_ports = {n.port for n in cluster.nodes}
    preferred = [old] if old and old not in node_ports else []
    for _ in range(20):
        port = ports.claim_free_ports(1, owner, preferred=preferred)[0]
        if port not in node_ports and ports.port_is_free(port):
            return port
        ports.release([port], owner)  # a fresh claim (random picks skip ports the home holds)
        preferred = []
    raise LabError("found no free port for pgAdmin on 127.0.0.1: stop other servers, then retry")


def _claim_again(files: _Files, login: dict) -> None:
    """A running pgAdmin keeps its claim (``lab.down()`` releases every claim of the home)."""
    if login.get("port"):
        ports.claim(login["port"], files.home.owner)


def _node_ports(home: LabHome) -> set:
    """The ports of the cluster's nodes, from its state file (none if it is gone)."""
    try:
        state = home.load() or {}
    except LabError:
        return set()
    return {spec.get("port") for spec in state.get("nodes", {}).values()}


def _release_port(files: _Files, port: "int | None") -> None:
    if port and port not in _node_ports(files.home):
        ports.release([port], files.home.owner)


def _stop_locked(files: _Files, quiet: bool, timeout: float = STOP_TIMEOUT) -> bool:
    pid = files.read_pid()
    pids = set(pgadmin_pids(files.dir))
    if pid and _is_pgadmin(pid, files.dir):
        pids.add(pid)
    for p in sorted(pids):
        _terminate(p, timeout)
    files.pid.unlink(missing_ok=True)
    _release_port(files, (files.read_login() or {}).get("port"))
    if pids:
        _say(quiet, "pgAdmin 4 stopped")
    return bool(pids)


def _child_env(files: _Files, extra: "dict | None" = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _CHILD_ENV_DROP}
    # pgAdmin imports config_local from sys.path: ours is the only module in its directory
    env["PYTHONPATH"] = os.pathsep.join([str(files.dir)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def _cli(files: _Files, python: Path, *args, env: "dict | None" = None) -> str:
    """Run pgAdmin's own command line (``pgadmin4-cli``, i.e. ``python -m pgadmin4.setup``)."""
    cmd = [str(python), "-m", "pgadmin4.setup", *args]
    try:
        r = subprocess.run(cmd, cwd=files.dir, env=_child_env(files, env), capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=CLI_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise LabError(f"pgAdmin's `setup.py {args[0]}` did not finish in {CLI_TIMEOUT:.0f} s") from None
    out = (r.stdout or "") + (r.stderr or "")
    if r.returncode != 0:
        raise LabError(f"pgAdmin's `setup.py {args[0]}` failed (exit {r.returncode}):\n{_last_lines(out, 8)}")
    return out


def _setup_db(files: _Files, python: Path, login: dict) -> None:
    """pgAdmin's database with the login as its first (administrator) user."""
    # the password goes through the environment, never the command line (ps shows that to all)
    out = _cli(files, python, "setup-db",
               env={"PGADMIN_SETUP_EMAIL": login["email"], "PGADMIN_SETUP_PASSWORD": login["password"]})
    if not _has_user(files.db, login["email"]):
        files.db.unlink(missing_ok=True)
        raise LabError(f"pgAdmin's `setup.py setup-db` made no user {login['email']}:\n{_last_lines(out, 8)}")
    os.chmod(files.db, 0o600)
    login["db_ready"] = True
    files.write_login(login)


def _has_user(db: Path, email: str) -> bool:
    """Is ``email`` a user in pgAdmin's database? (read-only; pgAdmin's table ``user``)"""
    if not db.exists():
        return False
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute('SELECT 1 FROM "user" WHERE username = ?', (email,)).fetchone() is not None
        finally:
            con.close()
    except sqlite3.Error:
        return False


def _cluster_servers(cluster) -> "tuple[dict, str]":
    cred = cluster.credentials
    nodes = [(n.name, n.role.value, n.host, n.port) for n in cluster.nodes]
    servers = render_servers(nodes, username=cred["user"], maintenance_db=cred["database"])
    return servers, render_passfile(cred["user"], cred["password"])


def _load_servers_if_changed(files: _Files, cluster, python: Path, login: dict) -> bool:
    """Write servers.json and the password file; (re)load the servers when they changed."""
    servers, passfile = _cluster_servers(cluster)
    userdir = storage_user_dir(files.dir, login["email"])
    userdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(files.dir / "storage", 0o700)
    _write_private(userdir / "pgpass", passfile)
    text = json.dumps(servers, indent=2) + "\n"
    _write_private(files.servers, text)
    try:
        if files.servers_loaded.read_text() == text:
            return False
    except OSError:
        pass
    out = _cli(files, python, "load-servers", str(files.servers), "--user", login["email"], "--replace")
    m = re.search(r"Added (\d+) Server Group\(s\) and (\d+) Server\(s\)", out)
    if not m or int(m.group(2)) != len(servers["Servers"]):
        raise LabError(f"pgAdmin's `setup.py load-servers` did not load the {len(servers['Servers'])} nodes:\n"
                       f"{_last_lines(out, 8)}")
    _write_private(files.servers_loaded, text)
    return True


_CHILDREN: "dict[int, subprocess.Popen]" = {}  # pgAdmins this process started (reaped by _gone)


def _spawn(files: _Files, python: Path) -> subprocess.Popen:
    try:
        files.log_offset = files.log.stat().st_size  # the error shows this start's lines only
    except OSError:
        files.log_offset = 0
    fd = os.open(files.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        proc = subprocess.Popen([str(python), "-m", "pgadmin4.pgAdmin4"], cwd=files.dir, env=_child_env(files),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    _CHILDREN[proc.pid] = proc
    return proc


def _wait_answer(url: "str | None", timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while url and not _answers(url):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return bool(url)


def _wait_http(files: _Files, proc: subprocess.Popen, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while not _answers(url):
        if proc.poll() is not None:
            raise LabError(f"pgAdmin 4 exited (code {proc.returncode}) before answering on {url}; "
                           f"its last lines:\n{_logs(files)}")
        if time.monotonic() > deadline:
            raise LabError(f"pgAdmin 4 did not answer on {url} within {timeout:.0f} s; its last lines:\n{_logs(files)}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


# --- small helpers --------------------------------------------------------------------------------
def _say(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, flush=True)


@contextlib.contextmanager
def _flock(path: Path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only (mode 0600), atomically."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


_NOISE = ("Werkzeug appears to be used in a production deployment", "* Serving Flask app", "* Debug mode")


def _tail(path: Path, n: int, offset: int = 0) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(offset, f.tell() - 64 * 1024))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return "\n".join([ln for ln in lines if ln.strip() and not any(x in ln for x in _NOISE)][-n:])


def _last_lines(text: str, n: int) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def _last_line(text: str) -> str:
    return _last_lines(text or "", 1) or "no output"


def _logs(files: _Files, n: int = 12) -> str:
    parts = [t for t in (_tail(files.out, n), _tail(files.log, n, getattr(files, "log_offset", 0))) if t.strip()]
    return "\n".join(parts) or f"(nothing in {files.out} or {files.log})"
