"""The instructor's view of a class on JupyterHub: every student's lab at once, without their notebooks.

>>> room = lab.classroom.Classroom()        # the class root: LAB_CLASS_ROOT, else /srv/pglab-class  # doctest: +SKIP
>>> room.status()                           # server, cluster, nodes, checks passed, last activity    # doctest: +SKIP
>>> room.progress()                         # student x chapter: self-checks passed / exercises      # doctest: +SKIP
>>> room.plot()                             # the same as a picture                                   # doctest: +SKIP
>>> room.reset("alice")                     # stop and wipe alice's cluster (her progress is kept)    # doctest: +SKIP

Each student's lab home is ``<class root>/homes/<student>`` (owned by the student's uid, 0700).  The
tool reads it as root on the hub host: the cluster's state file (``state.json``: nodes, roles, data
directories) and the self-checks' record (``progress.json``, written by ``lab.checks.check``).  It
never attaches to a student's cluster, so it starts nothing, writes nothing there and connects to no
server.

Whether a cluster runs depends on where the student's server runs (``LAB_HUB_SPAWNER``):

- ``process`` (a Unix user per student): the postmaster pids recorded in each data directory are
  alive on this host.  Whether the student's Jupyter server runs is the hub's answer when the hub
  API can be asked (``JUPYTERHUB_API_URL`` / ``JUPYTERHUB_API_TOKEN`` with ``read:servers``, as the
  ``pglab-class`` service has), else whether a process of the student's Jupyter server is alive.
- ``docker`` (a container per student): pids are the container's, meaningless here, so the server
  is the hub's answer and the cluster is what the data directories record (a server's pid file is
  there while it runs); the ``seen`` column says which.

An instructor's notebook in their own single-user server, where the class root is out of reach,
uses ``Classroom.from_hub()``: the same tables from the hub service ``pglab-class``
(``hub/class_service.py``), which runs as root on the hub host and answers admins only.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pandas as pd
import psutil
from matplotlib.figure import Figure

from .backends.local import postmaster_pid
from .errors import BadArgument, LabError, LabHomeError, Text, need_choice, need_str
from .exercises import registered
from .exercises.progress import results as progress_results
from .i18n import _
from .plots import show_figures_in_notebooks
from .system.home import LabHome
from .system.process import command_line

ROOT_ENV = "LAB_CLASS_ROOT"
DEFAULT_ROOT = "/srv/pglab-class"
SPAWNER_ENV = "LAB_HUB_SPAWNER"
SPAWNERS = ("process", "docker")
SERVICE = "pglab-class"
CONTAINER_ENV = "LAB_CLASS_CONTAINER"      # DockerSpawner's container name, "{student}" replaced
CONTAINER_DEFAULT = "jupyter-{student}"    # DockerSpawner's default name_template for the default server
RESET_TIMEOUT = 300  # seconds: a reset waits for a student's kernel that holds the lab's lock (LAB_LOCK_WAIT)

STATUS_COLUMNS = ["student", "server", "cluster", "nodes", "checks", "last_activity", "seen"]


def _root_path(root=None) -> Path:
    """``root``, else ``LAB_CLASS_ROOT``, else /srv/pglab-class, as a path (not checked)."""
    if root is not None:
        need_str(os.fspath(root) if isinstance(root, os.PathLike) else root, "root", example="'/srv/pglab-class'")
        if "\0" in os.fspath(root):
            raise BadArgument(_("root is the class root's directory, not {value!r:.60}").format(value=root))
    return Path(root or os.environ.get(ROOT_ENV) or DEFAULT_ROOT).expanduser().absolute()


def class_root(root=None) -> Path:
    """The class root: ``root``, else ``LAB_CLASS_ROOT``, else /srv/pglab-class; it must hold ``homes/``."""
    path = _root_path(root)
    if not (path / "homes").is_dir():
        raise LabError(_("no class at {path} (no homes/ directory in it): set {variable} to the directory that "
                         "holds homes/<student>, or give it (python -m lab class status --root DIR)").format(
            path=path, variable=ROOT_ENV))
    return path


def spawner_kind(spawner=None) -> str:
    """``docker`` when students' servers run in containers, else ``process`` (``LAB_HUB_SPAWNER``)."""
    if spawner is not None:
        return need_choice(spawner, "spawner", SPAWNERS)
    name = (os.environ.get(SPAWNER_ENV) or "process").strip().lower()
    return "docker" if name in ("docker", "dockerspawner", "container", "containers") else "process"


def chapters() -> "dict[str, list[str]]":
    """Chapter -> its exercise ids, from the registry (the list every student's record is counted against)."""
    out: "dict[str, list[str]]" = {}
    for ex in registered().values():
        out.setdefault(ex.chapter, []).append(ex.id)
    return out


# --- the hub's API ------------------------------------------------------------------------------
def hub_request(method: str, url: str, token: str, body=None, timeout: float = 10):
    """One JSON request with a hub token; (status, decoded body or None)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Authorization": f"token {token}", "Accept": "application/json",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw.decode() or "null")
    except ValueError:
        return status, None


def hub_servers(api_url: "str | None" = None, token: "str | None" = None) -> "dict[str, bool] | None":
    """User name -> is their default server running, from the hub's API (None when it cannot be asked:
    no hub here, or a token without ``list:users`` / ``read:servers``)."""
    api_url = (api_url or os.environ.get("JUPYTERHUB_API_URL") or "").rstrip("/")
    token = token or os.environ.get("JUPYTERHUB_API_TOKEN")
    if not api_url or not token:
        return None
    running: "dict[str, bool]" = {}
    offset = 0
    while True:  # the hub answers in pages (50 users by default)
        try:
            status, users = hub_request("GET", f"{api_url}/users?limit=200&offset={offset}", token)
        except (OSError, ValueError):
            return None
        if status != 200 or not isinstance(users, list):
            return None
        for u in users:
            servers = u.get("servers")
            if servers is None:  # the token may list users but not read their servers
                return None
            default = servers.get("") or {}
            running[u.get("name", "")] = bool(default.get("ready") or default.get("pending") == "spawn")
        if len(users) < 200:
            return running
        offset += 200


# --- one student's lab home ---------------------------------------------------------------------
def _readable(path: Path) -> bool:
    """Can this process list ``path`` and read what is in it (root on the hub host can; a student cannot)."""
    return path.is_dir() and os.access(path, os.R_OK | os.X_OK)


def _owner(path: Path) -> "tuple[int, int]":
    st = path.stat()
    return st.st_uid, st.st_gid


def _last_activity(home: Path) -> "float | None":
    """The newest change the lab made in the home: its state, its record of checks, a kernel's note."""
    times = []
    for p in [home / "state.json", home / "progress.json", home / "exercises.json", home / "operation",
              home / "ha" / "state.json", *(home / "kernels").glob("*")]:
        try:
            times.append(p.stat().st_mtime)
        except OSError:
            pass
    for entry in progress_results(home).values():
        if isinstance(entry.get("time"), (int, float)):
            times.append(float(entry["time"]))
    return max(times) if times else None


class Classroom:
    """Every student's lab under a class root (``<root>/homes/<student>``), read as root on the hub host."""

    def __init__(self, root=None, spawner: "str | None" = None, hub_api_url: "str | None" = None,
                 hub_token: "str | None" = None):
        self.root = class_root(root)
        self.spawner = spawner_kind(spawner)
        for value, what in ((hub_api_url, "hub_api_url"), (hub_token, "hub_token")):
            if value is not None:
                need_str(value, what, empty=True)
        self._hub = (hub_api_url, hub_token)

    def __repr__(self):
        return _("<Classroom {root} ({spawner} spawner): {students} students>").format(
            root=self.root, spawner=self.spawner, students=len(self.students()))

    @classmethod
    def from_hub(cls, url: "str | None" = None, token: "str | None" = None) -> "HubClassroom":
        """The same view through the hub service ``pglab-class``, for a notebook in the instructor's
        own single-user server (see ``HubClassroom``)."""
        return HubClassroom(url, token)

    @classmethod
    def here(cls, root=None) -> "Classroom | HubClassroom":
        """The class root when this process can read it and every lab home in it (root on the hub
        host), else the hub service when this runs behind a hub; the admin notebook starts with this."""
        path = _root_path(root)
        if _readable(path / "homes") and all(_readable(h) for h in (path / "homes").iterdir() if h.is_dir()):
            return cls(path)
        if os.environ.get("JUPYTERHUB_API_TOKEN") and os.environ.get("JUPYTERHUB_API_URL"):
            return HubClassroom()
        return cls(root)  # no class root here: its one-line error says how to set it

    # --- who ------------------------------------------------------------------------------
    def students(self) -> "list[str]":
        """The students: one directory each under ``homes/``."""
        return sorted(p.name for p in (self.root / "homes").iterdir() if p.is_dir() and not p.name.startswith("."))

    def home(self, student: str) -> Path:
        """``student``'s lab home (a one-line error naming the students there are, for an unknown one)."""
        need_str(student, "student", example="'alice'")
        names = self.students()
        if student not in names:
            listed = ", ".join(names) if names else _("none yet")
            raise LabError(_("no student {student!r} in {directory}: the students are {students}").format(
                student=student, directory=self.root / "homes", students=listed))
        return self.root / "homes" / student

    # --- what each lab is doing -------------------------------------------------------------
    def _servers(self) -> "dict[str, bool] | None":
        return hub_servers(*self._hub)

    @staticmethod
    def _jupyter_servers() -> "set[tuple[int, str]]":
        """Process spawner without the hub's answer: (uid, JUPYTERHUB_USER) of every Jupyter server
        alive on this host (kernels aside), from one look at the process table."""
        found = set()
        for p in psutil.process_iter(["uids", "cmdline"]):
            try:
                cmd = " ".join(p.info["cmdline"] or [])
                if "jupyter" not in cmd or "ipykernel" in cmd or p.info["uids"] is None:
                    continue
                user = p.environ().get("JUPYTERHUB_USER")
                if user:
                    found.add((p.info["uids"].real, user))
            except (psutil.Error, OSError):
                continue
        return found

    def _host_path(self, home: Path, state: dict, path: str) -> Path:
        """A data directory as this host sees it: in a container the state names the container's paths,
        and the lab home is the bind mount of ``home``; its ``data/`` is under it."""
        p = Path(path)
        if self.spawner == "docker" and state.get("data_root"):
            root = Path(state["data_root"])
            try:
                return home / root.name / p.relative_to(root)
            except ValueError:
                return p
        return p

    def _nodes(self, home: Path, state: dict) -> "list[tuple[str, str, str]]":
        """(node, role, running | stopped | unknown) for each node recorded in ``state``."""
        out = []
        for name, spec in sorted(state.get("nodes", {}).items(), key=lambda kv: (kv[0] != state.get("primary"), kv[0])):
            pgdata = spec.get("pgdata")
            if not pgdata:
                out.append((name, spec.get("role", "?"), "unknown"))
                continue
            data = self._host_path(home, state, pgdata)
            if self.spawner == "docker":  # the pid is the container's: its pid file is the record
                run = (data / "postmaster.pid").exists()
            else:
                pid = postmaster_pid(data)
                run = bool(pid) and "postgres" in (command_line(pid) or "")
            out.append((name, spec.get("role", "?"), "running" if run else "stopped"))
        return out

    @staticmethod
    def _nodes_line(nodes) -> str:
        parts = []
        for name, role, state in nodes:
            usual = "primary" if name == "primary" else "replica"
            parts.append(f"{name}:{state}" if role == usual else f"{name}({role}):{state}")
        return ", ".join(parts)

    @staticmethod
    def _cluster_word(nodes) -> str:
        if not nodes:
            return "none"
        states = {s for _name, _role, s in nodes}
        if states == {"running"}:
            return "running"
        if states == {"stopped"}:
            return "stopped"
        return "partly running" if "running" in states else "unknown"

    def _passed(self, home: Path) -> "set[str]":
        """Exercises this student has passed at least once (a pass is not undone by a later ❌)."""
        known = registered()
        return {k for k, v in progress_results(home).items() if k in known and v.get("passed")}

    def student_status(self, student: str, servers: "dict[str, bool] | None" = None,
                       processes: "set[tuple[int, str]] | None" = None) -> dict:
        """One row of ``status()`` (``servers``: the hub's answer; ``processes``: ``_jupyter_servers()``)."""
        home = self.home(student)
        row = dict(student=student, server="unknown", cluster="none", nodes="", checks="",
                   last_activity=pd.NaT, seen="")
        uid, _gid = _owner(home)
        if servers is not None:
            row["server"] = "running" if servers.get(student) else "stopped"
            how = _("the hub")
        elif self.spawner == "process":
            if processes is None:
                processes = self._jupyter_servers()
            row["server"] = "running" if (uid, student) in processes else "stopped"
            how = _("its processes on this host")
        else:
            how = _("nowhere (no hub to ask)")
        try:
            state = LabHome(home).load()
        except LabHomeError as e:
            row["cluster"] = f"unreadable: {e}"
            state = None
        if state is not None:
            nodes = self._nodes(home, state)
            row["nodes"] = self._nodes_line(nodes)
            row["cluster"] = self._cluster_word(nodes)
            if state.get("ready") is False:
                row["cluster"] += " (being created)"
        try:
            ha = LabHome(home / "ha").load() if (home / "ha").is_dir() else None
        except LabHomeError:
            ha = None
        if ha is not None:  # chapter 08's cluster, next to the main one
            row["nodes"] = "; ".join(x for x in [row["nodes"], "ha: " + self._nodes_line(self._nodes(home / "ha", ha))] if x)
        total = sum(len(v) for v in chapters().values())
        row["checks"] = f"{len(self._passed(home))}/{total}"
        last = _last_activity(home)
        if last is not None:
            row["last_activity"] = pd.Timestamp(last, unit="s", tz="UTC").floor("s")
        cluster_how = (_("pids on this host") if self.spawner == "process"
                       else _("the state file (pids are the container's)"))
        row["seen"] = _("server from {how}; cluster from {cluster_how}").format(how=how, cluster_how=cluster_how)
        return row

    def status(self) -> pd.DataFrame:
        """One row per student: their Jupyter server (running, stopped, unknown), their cluster (running,
        stopped, partly running, none), its nodes with their state (a role shown when it is not the
        name's: ``primary(former primary):stopped`` after a failover), self-checks passed / exercises,
        the last time the lab wrote in their home (UTC), and how each was seen."""
        servers = self._servers()
        processes = self._jupyter_servers() if servers is None and self.spawner == "process" else None
        rows = [self.student_status(s, servers, processes) for s in self.students()]
        return pd.DataFrame(rows, columns=STATUS_COLUMNS)

    def passed(self) -> pd.DataFrame:
        """Student x chapter: how many of the chapter's self-checks the student has passed (numbers)."""
        chs = chapters()
        rows = {}
        for s in self.students():
            done = self._passed(self.root / "homes" / s)
            rows[s] = {ch: sum(1 for e in ids if e in done) for ch, ids in chs.items()}
        df = pd.DataFrame.from_dict(rows, orient="index", columns=list(chs)).fillna(0).astype(int)
        df.index.name = "student"
        return df

    def progress(self) -> pd.DataFrame:
        """Student x chapter: self-checks passed / the chapter's exercises (``"2/4"``), and the total."""
        return progress_table(self.passed(), chapters())

    def plot(self) -> Figure:
        """The progress table as a picture: one row per student, one column per chapter, the share of
        the chapter's self-checks passed."""
        return progress_plot(self.passed(), chapters())

    # --- resetting one student's cluster ----------------------------------------------------
    def reset(self, student: str) -> Text:
        """Stop and wipe ``student``'s cluster (chapter 08's too), as ``python -m lab down --wipe`` does in
        their lab: as their uid (process spawner), or in their running container (docker spawner);
        nothing of theirs is left owned by root.  Their record of self-checks is kept; their next
        ``lab.up()`` makes a new cluster."""
        home = self.home(student)
        uid, gid = _owner(home)
        if self.spawner == "docker":
            container = (os.environ.get(CONTAINER_ENV) or CONTAINER_DEFAULT).format(student=student)
            if _container_running(container):
                # as the home's owner, whoever the image's default user is: no root-owned file left
                out = _run(["docker", "exec", "-u", f"{uid}:{gid}", container, "python", "-m", "lab", "down", "--wipe"])
                return Text(_("{student}: cluster stopped and wiped in container {container} ({output}); "
                              "progress kept").format(student=student, container=container, output=out))
            _run(["rm", "-rf", "--", str(home / "ha"), str(home / "data"), str(home / "state.json")],
                 uid=uid, gid=gid)
            return Text(_("{student}: container {container} is not running; cluster data wiped as uid {uid}; "
                          "progress kept").format(student=student, container=container, uid=uid))
        exe, extra = student_python(uid, gid)
        env = {**os.environ, **extra, "HOME": str(home)}
        env.pop("LAB_HOME", None)
        _run([exe, "-m", "lab", "--home", str(home), "down", "--wipe"], uid=uid, gid=gid, env=env, cwd=home)
        return Text(_("{student}: cluster stopped and wiped as uid {uid}; progress kept").format(
            student=student, uid=uid))


def _run(cmd, uid: "int | None" = None, gid: "int | None" = None, env=None, cwd=None) -> str:
    """Run ``cmd`` (as ``uid`` when that is not us); its last line, or a LabError with its last line."""
    kwargs = {}
    if uid is not None and uid != os.geteuid():
        kwargs = {"user": uid, "group": gid, "extra_groups": []}
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=RESET_TIMEOUT, env=env,
                           cwd=cwd or "/", **kwargs)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LabError(_("{program} did not run: {error}").format(program=Path(cmd[0]).name, error=e)) from None
    lines = (r.stdout + r.stderr).strip().splitlines()
    if r.returncode != 0:
        raise LabError(_("{command} … failed: {last_line}").format(
            command=" ".join(cmd[:2]),
            last_line=lines[-1] if lines else _("exit {code}").format(code=r.returncode)))
    return lines[-1] if lines else _("done")


def _container_running(name: str) -> bool:
    """Is the container ``name`` running, on the Docker daemon of ``DOCKER_HOST``?  Not knowing is an
    error: wiping the data under a running container would pull it from under its servers."""
    try:
        r = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", name], capture_output=True,
                           text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LabError(_("cannot ask Docker whether {name} runs ({error}): install the docker CLI and set "
                         "DOCKER_HOST to the hub's Docker daemon").format(name=name, error=e)) from None
    if r.returncode == 0:
        return r.stdout.strip() == "true"
    if "No such" in r.stderr or "no such" in r.stderr:
        return False
    last = (r.stderr.strip().splitlines() or ["?"])[-1]
    raise LabError(_("cannot ask Docker whether {name} runs ({error}): set DOCKER_HOST to the hub's Docker daemon")
                   .format(name=name, error=last))


_pythons: "dict[int, tuple[str, dict]]" = {}


def student_python(uid: int, gid: int) -> "tuple[str, dict]":
    """A Python that ``uid`` can run and that imports this lab: (interpreter, extra environment).
    This interpreter when the user can reach it, else a system Python of the same version given this
    environment's packages and the lab's source through PYTHONPATH (a virtualenv under /root)."""
    if uid in _pythons:
        return _pythons[uid]
    ver = f"{sys.version_info[0]}.{sys.version_info[1]}"
    paths = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], str(Path(__file__).resolve().parents[1])]
    site = os.pathsep.join(dict.fromkeys(paths))
    tries = [(sys.executable, {})] + [(c, {"PYTHONPATH": site}) for c in (f"/usr/bin/python{ver}", f"/usr/local/bin/python{ver}")
                                      if os.path.exists(c)]
    tried = []
    for exe, extra in tries:
        try:
            _run([exe, "-c", "import lab.cluster"], uid=uid, gid=gid, env={"PATH": "/usr/bin:/bin", "HOME": "/", **extra})
        except LabError as e:
            tried.append(f"{exe}: {e}")
            continue
        _pythons[uid] = (exe, extra)
        return exe, extra
    raise LabError(_("uid {uid} can run no Python that imports the lab ({tried}): install the lab "
                     "where every student can read it").format(uid=uid, tried="; ".join(tried)))


def progress_table(passed: pd.DataFrame, chs: "dict[str, list[str]]") -> pd.DataFrame:
    """``"passed/total"`` per chapter and in all, from ``passed()``'s numbers."""
    out = pd.DataFrame(index=passed.index)
    for ch, ids in chs.items():
        out[ch] = [f"{n}/{len(ids)}" for n in passed.get(ch, pd.Series(0, index=passed.index))]
    total = sum(len(ids) for ids in chs.values())
    out["total"] = [f"{n}/{total}" for n in passed.sum(axis=1)] if len(passed.columns) else f"0/{total}"
    out.index.name = "student"
    return out


def progress_plot(passed: pd.DataFrame, chs: "dict[str, list[str]]") -> Figure:
    """A student x chapter grid coloured by the share of self-checks passed, each cell labelled p/t."""
    show_figures_in_notebooks()
    students = list(passed.index)
    cols = list(chs)
    share = [[passed.at[s, ch] / len(chs[ch]) if ch in passed.columns and chs[ch] else 0.0 for ch in cols]
             for s in students]
    fig = Figure(figsize=(2.0 + 0.7 * len(cols), 1.6 + 0.35 * max(1, len(students))))
    ax = fig.add_subplot()
    if students:
        im = ax.imshow(share, vmin=0, vmax=1, cmap="Greens", aspect="auto")
        for i, s in enumerate(students):
            for j, ch in enumerate(cols):
                n = int(passed.at[s, ch]) if ch in passed.columns else 0
                ax.text(j, i, f"{n}/{len(chs[ch])}", ha="center", va="center", fontsize=8,
                        color="white" if share[i][j] > 0.6 else "black")
        fig.colorbar(im, ax=ax, label=_("share passed"))
    ax.set_xticks(range(len(cols)), [_("ch {chapter}").format(chapter=c) for c in cols])
    ax.set_yticks(range(len(students)), students)
    ax.set_title(_("self-checks passed per chapter ({students} students)").format(students=len(students)))
    fig.tight_layout()
    return fig


class HubClassroom:
    """The instructor's view through the hub service ``pglab-class`` (``hub/class_service.py``), with the
    caller's own hub token (``JUPYTERHUB_API_TOKEN``: an admin's, in the instructor's server).

    The service's address: ``url``, else ``LAB_CLASS_SERVICE_URL``, else the hub's answer to
    ``GET /services/pglab-class`` (its ``url``; the token needs ``read:services``)."""

    def __init__(self, url: "str | None" = None, token: "str | None" = None):
        if url is not None:
            need_str(url, "url", example="'http://127.0.0.1:10101/services/pglab-class/'")
        if token is not None:
            need_str(token, "token")
        self.token = token or os.environ.get("JUPYTERHUB_API_TOKEN")
        if not self.token:
            raise LabError(_("no hub token here (JUPYTERHUB_API_TOKEN is unset): run this in your server on the hub, "
                             "or read the class root directly with Classroom(root) as root on the hub host"))
        self.url = (url or os.environ.get("LAB_CLASS_SERVICE_URL") or self._ask_hub()).rstrip("/") + "/"

    def __repr__(self):
        return f"<HubClassroom {self.url}>"

    def _ask_hub(self) -> str:
        api = (os.environ.get("JUPYTERHUB_API_URL") or "").rstrip("/")
        if not api:
            raise LabError(_("JUPYTERHUB_API_URL is unset: give the service's address, Classroom.from_hub(url=...)"))
        try:
            status, body = hub_request("GET", f"{api}/services/{SERVICE}", self.token)
        except (OSError, ValueError) as e:
            raise LabError(_("the hub at {url} does not answer ({error}): is it running?").format(url=api, error=e)) from None
        if status != 200 or not isinstance(body, dict) or not body.get("url"):
            raise LabError(_("the hub does not show the {service} service to this token (HTTP {status}): "
                             "it needs an admin's token, or give its address with Classroom.from_hub(url=...)").format(
                service=SERVICE, status=status))
        return body["url"].rstrip("/") + (body.get("prefix") or f"/services/{SERVICE}/")

    def _call(self, method: str, path: str):
        try:
            status, body = hub_request(method, self.url + path, self.token, body={} if method == "POST" else None,
                                       timeout=RESET_TIMEOUT + 30)
        except (OSError, ValueError) as e:
            raise LabError(_("the {service} service at {url} does not answer ({error}): is the hub running?").format(
                service=SERVICE, url=self.url, error=e)) from None
        if status in (401, 403):
            raise LabError(_("the {service} service answers admins only (HTTP {status}): log in as the instructor")
                           .format(service=SERVICE, status=status))
        if status != 200:
            msg = body.get("error") if isinstance(body, dict) else None
            raise LabError(msg or _("the {service} service answered HTTP {status} to {path}").format(
                service=SERVICE, status=status, path=path))
        return body

    def students(self) -> "list[str]":
        return list(self.status()["student"])

    def status(self) -> pd.DataFrame:
        df = pd.DataFrame(self._call("GET", "api/status")["status"], columns=STATUS_COLUMNS)
        df["last_activity"] = pd.to_datetime(df["last_activity"], utc=True)
        return df

    def _progress(self) -> "tuple[pd.DataFrame, dict]":
        body = self._call("GET", "api/progress")
        chs = body["chapters"]
        passed = pd.DataFrame.from_dict(body["passed"], orient="index", columns=list(chs)).fillna(0).astype(int)
        passed.index.name = "student"
        return passed, chs

    def passed(self) -> pd.DataFrame:
        return self._progress()[0]

    def progress(self) -> pd.DataFrame:
        return progress_table(*self._progress())

    def plot(self) -> Figure:
        return progress_plot(*self._progress())

    def reset(self, student: str) -> Text:
        need_str(student, "student", example="'alice'")
        return Text(self._call("POST", f"api/reset/{urllib.parse.quote(student, safe='')}")["message"])

