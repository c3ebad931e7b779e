"""pgAdmin 4 as a service of a lab home: the ``pgadmin4`` package in server mode on 127.0.0.1,
with the nodes loaded (or, where the backend has a place for it, its container).

pgAdmin pins exact versions of ~100 packages (Flask, urllib3, certifi, python-dateutil, ...),
so it lives in an environment of its own, ``.venv-pgadmin/`` in the repository (``install()``),
and runs there as a separate process; the notebooks' environment never imports it.  A
``pgadmin4`` installed in the lab's own environment is used too, if there is one.

Everything pgAdmin keeps lives in ``<lab home>/pgadmin/`` (mode 0700):

    config_local.py   pgAdmin's configuration (server mode, 127.0.0.1:<port>, paths below)
    login.json        the service's state: the generated login, port, URL and pid (mode 0600)
    servers.json      the nodes as pgAdmin's ``load-servers`` reads them (no password)
    pgadmin4.db       pgAdmin's own SQLite database (users, servers, preferences)
    storage/<user>/pgpass   libpq password file for the nodes (mode 0600)
    pgadmin.log, pgadmin4.log   its output, its own log
"""
from __future__ import annotations

import html
import importlib.util
import json
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

import psutil

from ..i18n import _
from ..errors import LabError
from ..system import jupyterenv
from ..system.home import cache_dir
from ..system.paths import REPO
from ..system.process import terminate_tree
from .supervisor import HOST, Service, Start, flock, tail, wait_answer, write_private

if TYPE_CHECKING:
    from ..cluster import Cluster

NAME = "pgadmin"
REQUIREMENT = "pgadmin4>=9.0,<10"
EMAIL = "student@lab.example.com"  # pgAdmin rejects special-use domains (.local, .test, localhost)
GROUP = "Replication Lab"
START_TIMEOUT = 90.0  # the first start creates pgAdmin's database: ~10 s here, slower on laptops
STOP_TIMEOUT = 15.0
CLI_TIMEOUT = 120.0
INSTALL_HINT = "python -m lab pgadmin --install"
_MODULE = "pgadmin4.pgAdmin4"
_KEEP = ("email", "password", "db_ready", "port", "url", "version")  # what a stop keeps of the state
_CHILD_ENV_DROP = (  # variables that would change where or how pgAdmin runs
    "PGADMIN_CONFIG_DEFAULT_SERVER", "PGADMIN_SERVER_MODE", "PGADMIN_INT_PORT", "PGADMIN_INT_KEY",
    "PGADMIN_SETUP_EMAIL", "PGADMIN_SETUP_PASSWORD", "CONFIG_DISTRO_FILE_PATH", "SCRIPT_NAME",
)
_NOISE = ("Werkzeug appears to be used in a production deployment", "* Serving Flask app", "* Debug mode")


# --- where pgAdmin is installed -----------------------------------------------------------
def venv_dir() -> Path:
    """pgAdmin's own environment: ``$LAB_PGADMIN_VENV``, else ``.venv-pgadmin`` in the repository."""
    env = os.environ.get("LAB_PGADMIN_VENV")
    if env:
        return Path(env).expanduser().absolute()
    if (REPO / "pyproject.toml").exists() and os.access(REPO, os.W_OK):
        return REPO / ".venv-pgadmin"
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
        raise LabError(_("LAB_PGADMIN_PYTHON={python} is not an executable Python: unset it or correct it").format(
            python=python))
    if python is None:
        raise LabError(_("pgAdmin 4 is not installed: run `{command}` (or lab.pgadmin.install()), "
                         "which puts it in its own environment {venv} (about 600 MB, a minute)").format(
            command=INSTALL_HINT, venv=venv_dir()))
    return python


def install(quiet: bool = False, upgrade: bool = False) -> Path:
    """Install pgAdmin 4 into its own environment (created if needed); returns its Python."""
    venv = venv_dir()
    python = _venv_python(venv)
    venv.mkdir(parents=True, exist_ok=True)  # `python -m venv` fills an existing directory
    with flock(venv / ".lab-install.lock"):
        if _stamp(venv).exists() and python.exists() and not upgrade:
            _say(quiet, _("pgAdmin 4 {version} is already installed in {venv}").format(
                version=installed_version(python) or '?', venv=venv))
            return python
        t0 = time.monotonic()
        if not python.exists():
            r = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
            if r.returncode != 0 or not python.exists():
                _empty(venv, keep=".lab-install.lock")
                pyv = "%d.%d" % sys.version_info[:2]
                raise LabError(_("could not create {venv} ('{python} -m venv' failed: "
                                 "{reason}): install python{version}-venv (Debian/Ubuntu) "
                                 "or set LAB_PGADMIN_PYTHON to a Python that has pgadmin4").format(
                    venv=venv, python=sys.executable, reason=_last_line(r.stderr or r.stdout), version=pyv))
        _stamp(venv).unlink(missing_ok=True)
        _say(quiet, _("installing {requirement} into {venv} (about 600 MB; a minute or two) ...").format(
            requirement=REQUIREMENT, venv=venv))
        log = venv / "install.log"
        cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
        cmd += (["--upgrade"] if upgrade else []) + [REQUIREMENT]
        with open(log, "w") as f:
            r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            last = tail(log, 8)
            errors = [ln for ln in last.splitlines() if ln.startswith("ERROR:")]
            raise LabError(_("pip could not install {requirement} into {venv}: {reason} (the whole log: {log})").format(
                requirement=REQUIREMENT, venv=venv, reason=(errors or last.splitlines() or [_("no output")])[-1],
                log=log))
        version = _version_of(python)
        _stamp(venv).write_text(json.dumps({"version": version, "requirement": REQUIREMENT,
                                            "seconds": round(time.monotonic() - t0, 1)}))
        _say(quiet, _("pgAdmin 4 {version} installed in {seconds:.0f} s").format(
            version=version, seconds=time.monotonic() - t0))
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


def servers(cluster: "Cluster") -> dict:
    """The servers.json pgAdmin gets for ``cluster``: its nodes as pgAdmin reaches them where the
    cluster's backend runs it (127.0.0.1 and the node's port; a service name in a container)."""
    cred = cluster.credentials
    nodes = []
    for n in cluster.nodes:
        a = cluster.backend.app_node(n.spec)
        nodes.append((a.name, n.role.value, a.host, a.port))
    return render_servers(nodes, username=cred["user"], maintenance_db=cred["database"])


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


# Behind the Jupyter server's proxy pgAdmin answers under <prefix>proxy/absolute/<port>/, the path
# kept.  It serves a prefix it is told of by an X-Script-Name header (pgAdmin4.py: ReverseProxied),
# which this proxy does not send: this launcher puts it on every request that comes with the prefix,
# so those reach pgAdmin's routes and its pages link under the prefix, while the lab's own requests
# to 127.0.0.1 without it answer as before.  pgAdmin's web server decodes the path: so is the prefix.
_PROXIED_LAUNCHER = """\
import sys
from urllib.parse import unquote
import pgadmin4.pgAdmin4 as pgadmin
prefix = unquote(sys.argv[1])
inner = pgadmin.app.wsgi_app
def with_prefix(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == prefix or path.startswith(prefix + "/"):
        environ["HTTP_X_SCRIPT_NAME"] = prefix
    return inner(environ, start_response)
pgadmin.app.wsgi_app = with_prefix
pgadmin.main()
"""


def command(python: Path, prefix: str = "") -> "list[str]":
    """How pgAdmin is run: its own module, or, under a proxy's ``prefix``, the launcher above (its
    command line names the module too, which is how its processes are found)."""
    if not prefix:
        return [str(python), "-m", _MODULE]
    return [str(python), "-c", _PROXIED_LAUNCHER, prefix]


def script_name(prefix: str) -> dict:
    """pgAdmin's SCRIPT_NAME variable under a proxy: its session cookie's path and the pages it may
    send a student back to after logging in or out."""
    return {"SCRIPT_NAME": unquote(prefix)} if prefix else {}


# --- what a start returns ----------------------------------------------------------------------
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
    public_url: "str | None" = None

    def __post_init__(self):
        self.public_url = self.public_url or self.url

    def __repr__(self):
        if not self.running:
            return _("pgAdmin 4: stopped (lab.pgadmin.start(cluster) starts it; login {email})").format(
                email=self.email)
        return _("pgAdmin 4{version}: {url}\n  email:    {email}\n  password: {password}").format(
            version=' ' + self.version if self.version else '', url=self.public_url, email=self.email,
            password=self.password)

    def _repr_html_(self):
        e = html.escape
        if not self.running:
            return _("<p>pgAdmin 4: <b>stopped</b> (<code>lab.pgadmin.start(cluster)</code> starts it)</p>")
        email, password = e(_("email")), e(_("password"))
        return ("<table>"
                f"<tr><th style='text-align:left'>pgAdmin 4{' ' + e(self.version) if self.version else ''}</th>"
                f"<td><a href='{e(self.public_url)}' target='_blank'>{e(self.public_url)}</a></td></tr>"
                f"<tr><th style='text-align:left'>{email}</th><td><code>{e(self.email)}</code></td></tr>"
                f"<tr><th style='text-align:left'>{password}</th><td><code>{e(self.password)}</code></td></tr>"
                "</table>")


class _Files:
    """pgAdmin's own files in the service directory."""

    def __init__(self, svc: Service):
        self.dir = svc.dir
        self.config = svc.dir / "config_local.py"
        self.servers = svc.dir / "servers.json"
        self.servers_loaded = svc.dir / "servers.loaded.json"
        self.db = svc.dir / "pgadmin4.db"
        self.log = svc.dir / "pgadmin4.log"


def service(where=None) -> Service:
    """The pgAdmin service of a lab home (a Cluster, a LabHome, a path, or the default home)."""
    return Service(where, NAME, state_name="login.json", title="pgAdmin 4")


def pgadmin_pids(workdir: "Path | None" = None) -> "list[int]":
    """Live pgAdmin processes on this host, those started in ``workdir`` if given."""
    out = []
    want = Path(workdir).resolve() if workdir is not None else None
    for p in psutil.process_iter(["pid"]):
        try:
            if _MODULE not in " ".join(p.cmdline()):
                continue
            if want is not None and Path(p.cwd()).resolve() != want:
                continue
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except (psutil.Error, OSError):
            continue
    return sorted(out)


# --- start, stop, status ------------------------------------------------------------------------
def start(cluster: "Cluster", quiet: bool = False, timeout: float = START_TIMEOUT) -> PgAdmin:
    """Start pgAdmin 4 for this cluster (or re-attach to the running one); prints URL and login."""
    cluster._reload()
    hosted = cluster.backend.start_app(NAME, {"servers": servers(cluster)}, quiet=quiet)
    if hosted is not None:  # the backend runs it (compose: the pgadmin service)
        info = PgAdmin(url=hosted.urls[NAME], email=hosted.login["email"], password=hosted.login["password"],
                       port=hosted.ports[0], pid=None, running=True, home=str(cluster.home.path))
        _say(quiet, repr(info) + (f"\n  {hosted.where}" if hosted.where else ""))
        return info
    svc = service(cluster)
    files = _Files(svc)
    with svc.locked():
        cluster._reload()
        state = svc.read_state()
        pid = state.get("pids", {}).get(NAME)
        note = jupyterenv.notice()  # first: a bad LAB_LINKS or proxy prefix is said before anything starts
        if note:
            _say(quiet, note)
        if state.get("email") and svc.ours(pid) and state.get("base_path", "") != jupyterenv.base_path(state["port"]):
            # started behind another proxy prefix, or without one: its pages would point elsewhere
            _say(quiet, _("pgAdmin's link changed since it started (a hub, Binder or LAB_LINKS): restarting it"))
        elif state.get("email") and svc.ours(pid):
            if not wait_answer(state.get("url") and state["url"] + "/misc/ping", 15, b"PING"):
                raise LabError(_("pgAdmin 4 (pid {pid}) runs but does not answer on {url}: "
                                 "lab.pgadmin.stop(cluster), then start it again; its last lines:\n{log_lines}").format(
                    pid=pid, url=state.get('url'), log_lines=_logs(svc)))
            svc.claim_again([state.get("port")])
            python = find_python()
            changed = _load_servers_if_changed(files, cluster, python, state) if python else False
            info = _info(svc, state, running=True)
            _say(quiet, _("pgAdmin 4 is running: re-attached; servers reloaded (refresh the page)") if changed
                 else _("pgAdmin 4 is running: re-attached"))
            _say(quiet, repr(info))
            return info
        python = _require_python()
        _stop_locked(svc)  # a stale state file, a stray process, a claimed port
        t0 = time.monotonic()
        login, fresh = _ensure_login(svc, files)
        with svc.starting(keep=_KEEP) as run:
            port = claim_port(run, cluster, login.get("port"))
            write_private(files.config, render_config(files.dir, port))
            if fresh:
                _setup_db(svc, files, python, login)
            _load_servers_if_changed(files, cluster, python, login)
            offset = _size(files.log)  # the error shows this start's lines of pgAdmin's own log
            prefix = jupyterenv.base_path(port)
            proc = run.spawn(NAME, command(python, prefix), env={**_pythonpath(files), **script_name(prefix)},
                             drop=_CHILD_ENV_DROP)
            url = f"http://{HOST}:{port}"
            run.wait_ready(NAME, proc, url + "/misc/ping", timeout, body=b"PING", logs=lambda: _logs(svc, offset))
        login.update(port=port, url=url, public_url=jupyterenv.browser_url(port, "/"), base_path=prefix,
                     version=installed_version(python), pids=run.pids, ports=[port])
        svc.write_state(login)
        info = _info(svc, login, running=True)
        _say(quiet, _("pgAdmin 4 started in {seconds:.1f} s").format(seconds=time.monotonic() - t0))
        _say(quiet, repr(info))
        return info


def stop(where=None, quiet: bool = False, timeout: float = STOP_TIMEOUT, wipe: bool = False) -> bool:
    """Stop this lab home's pgAdmin (a Cluster, a lab home path, or the default home).

    Its data and login are kept; ``wipe=True`` removes them too (the next start makes a new
    login).  Returns True if a pgAdmin was running.
    """
    backend = getattr(where, "backend", None)  # a Cluster: its backend may run pgAdmin itself
    was = bool(backend is not None and backend.stop_app(NAME))
    svc = service(where)
    if not svc.exists():
        return was
    with svc.locked():
        was = _stop_locked(svc, timeout) or was
        if wipe:
            _empty(svc.dir, keep=svc.lock_file.name)
    if wipe:
        svc.wipe()
    if was:
        _say(quiet, _("pgAdmin 4 stopped"))
    return was


def status(where=None) -> PgAdmin:
    """Is pgAdmin running for this lab home, where, and with which login?"""
    svc = service(where)
    state = svc.read_state()
    running = bool(state.get("email")) and svc.ours(state.get("pids", {}).get(NAME))
    return _info(svc, state, running=running)


def _stop_locked(svc: Service, timeout: float = STOP_TIMEOUT) -> bool:
    state = svc.read_state()
    held = state.get("ports") or [state.get("port")]
    was = svc.stop(timeout, keep=_KEEP)
    for pid in pgadmin_pids(svc.dir):  # one started before processes were marked
        terminate_tree(pid, timeout)
        was = True
    svc.release_ports(held)
    return was


# --- steps --------------------------------------------------------------------------------------
def claim_port(run: "Start | Service", cluster, old: "int | None") -> int:
    """pgAdmin's port: the one it had (a stable URL) if still free, else a random free one;
    never a node's port, even a stopped node's."""
    return run.claim_ports(1, avoid={n.port for n in cluster.nodes}, preferred=[old])[0]


def _info(svc: Service, state: dict, running: bool) -> PgAdmin:
    return PgAdmin(url=state.get("url") if running else None, email=state.get("email", EMAIL),
                   password=state.get("password", ""), port=state.get("port"),
                   pid=state.get("pids", {}).get(NAME) if running else None,
                   running=running, version=state.get("version"), home=str(svc.home.path),
                   public_url=state.get("public_url") if running else None)


def _ensure_login(svc: Service, files: _Files) -> "tuple[dict, bool]":
    """The saved login, or a new one (and then pgAdmin's database is made anew)."""
    login = {k: v for k, v in svc.read_state().items() if k in _KEEP}
    if login.get("email") and login.get("password") and login.get("db_ready") and files.db.exists():
        return login, False
    # a first start, or one that broke off before pgAdmin's database was complete: start over
    for p in (files.db, files.servers_loaded):
        p.unlink(missing_ok=True)
    shutil.rmtree(files.dir / "sessions", ignore_errors=True)
    login = {"email": EMAIL, "password": secrets.token_urlsafe(18), "db_ready": False, "port": login.get("port")}
    svc.write_state(login)
    return login, True


def _pythonpath(files: _Files) -> dict:
    # pgAdmin imports config_local from sys.path: ours is the only module in its directory
    old = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join([str(files.dir)] + ([old] if old else []))}


def _cli(files: _Files, python: Path, *args, env: "dict | None" = None) -> str:
    """Run pgAdmin's own command line (``pgadmin4-cli``, i.e. ``python -m pgadmin4.setup``)."""
    cmd = [str(python), "-m", "pgadmin4.setup", *args]
    child_env = {k: v for k, v in os.environ.items() if k not in _CHILD_ENV_DROP}
    child_env.update(_pythonpath(files), PYTHONUNBUFFERED="1", **(env or {}))
    try:
        r = subprocess.run(cmd, cwd=files.dir, env=child_env, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=CLI_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise LabError(_("pgAdmin's `setup.py {command}` did not finish in {timeout:.0f} s").format(
            command=args[0], timeout=CLI_TIMEOUT)) from None
    out = (r.stdout or "") + (r.stderr or "")
    if r.returncode != 0:
        raise LabError(_("pgAdmin's `setup.py {command}` failed (exit {code}):\n{log_lines}").format(
            command=args[0], code=r.returncode, log_lines=_last_lines(out, 8)))
    return out


def _setup_db(svc: Service, files: _Files, python: Path, login: dict) -> None:
    """pgAdmin's database with the login as its first (administrator) user."""
    # the password goes through the environment, never the command line (ps shows that to all)
    out = _cli(files, python, "setup-db",
               env={"PGADMIN_SETUP_EMAIL": login["email"], "PGADMIN_SETUP_PASSWORD": login["password"]})
    if not _has_user(files.db, login["email"]):
        files.db.unlink(missing_ok=True)
        raise LabError(_("pgAdmin's `setup.py setup-db` made no user {email}:\n{log_lines}").format(
            email=login['email'], log_lines=_last_lines(out, 8)))
    os.chmod(files.db, 0o600)
    login["db_ready"] = True
    svc.write_state(login)


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


def _load_servers_if_changed(files: _Files, cluster, python: Path, login: dict) -> bool:
    """Write servers.json and the password file; (re)load the servers when they changed."""
    cred = cluster.credentials
    doc = servers(cluster)
    userdir = storage_user_dir(files.dir, login["email"])
    userdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(files.dir / "storage", 0o700)
    write_private(userdir / "pgpass", render_passfile(cred["user"], cred["password"]))
    text = json.dumps(doc, indent=2) + "\n"
    write_private(files.servers, text)
    try:
        if files.servers_loaded.read_text() == text:
            return False
    except OSError:
        pass
    out = _cli(files, python, "load-servers", str(files.servers), "--user", login["email"], "--replace")
    m = re.search(r"Added (\d+) Server Group\(s\) and (\d+) Server\(s\)", out)
    if not m or int(m.group(2)) != len(doc["Servers"]):
        raise LabError(_("pgAdmin's `setup.py load-servers` did not load the {n} nodes:\n{log_lines}").format(
            n=len(doc['Servers']), log_lines=_last_lines(out, 8)))
    write_private(files.servers_loaded, text)
    return True


# --- small helpers --------------------------------------------------------------------------------
def _say(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, flush=True)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _last_lines(text: str, n: int) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def _last_line(text: str) -> str:
    return _last_lines(text or "", 1) or _("no output")


def _logs(svc: Service, offset: int = 0, n: int = 12) -> str:
    out, own = svc.log(NAME), svc.dir / "pgadmin4.log"
    parts = [t for t in (tail(out, n, noise=_NOISE), tail(own, n, offset, noise=_NOISE)) if t.strip()]
    return "\n".join(parts) or _("(nothing in {out} or {own})").format(out=out, own=own)
