"""The process spawner: one Unix user per student, for a class on one machine without Docker.

JupyterHub runs as root.  On a student's first spawn this spawner creates a Unix user for them
(named by ``unix_name``: a prefix, so that no hub name can become ``root`` or a system account),
their lab home ``<class root>/homes/<hub name>`` (mode 0700, theirs: LAB_HOME, where the lab
keeps their clusters, secrets and self-check progress), and their own directory
``<class root>/students/<hub name>`` (their HOME) with a copy of the notebooks that is never
overwritten.  Their single-user server then runs as that user, so their PostgreSQL servers run as
them too: another student can neither read their lab home nor log in to their servers.

Every student claims ports in one shared directory (``LAB_PORT_CLAIMS``, sticky and writable by
all), so no two students' servers are given the same port; PostgreSQL runs with the ``shared``
profile (lab/backends/pgconf.py); memory and CPU limits are set per student with a cgroup (v1)
under the hub's own, which the student's server, kernels and PostgreSQL servers all inherit.
"""
from __future__ import annotations

import grp
import hashlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner, set_user_setuid
from traitlets import Unicode

HUB_DIR = Path(__file__).resolve().parent
REPO = HUB_DIR.parent
MARK = "pglab class student"  # the GECOS field of the users this spawner creates
UNIX_NAME_MAX = 32


def unix_name(hub_name: str, prefix: str = "pglab-") -> str:
    """The Unix user of a hub user: ``prefix`` + the name, lowercase, in the characters Unix names
    allow; a name that had to change (other characters, too long) gets 8 hex digits of its hash, so
    two hub names never share a Unix user.

    >>> unix_name("alice")
    'pglab-alice'
    >>> unix_name("Zoë.Pérez@uni.edu")
    'pglab-zo--p-rez-uni-edu-55888aae'
    """
    base = re.sub(r"[^a-z0-9_-]", "-", hub_name.lower())
    room = UNIX_NAME_MAX - len(prefix)
    if base == hub_name and len(base) <= room:
        return prefix + base
    digest = hashlib.sha256(hub_name.encode()).hexdigest()[:8]
    return prefix + base[: room - 9] + "-" + digest


def check_hub_name(hub_name: str) -> str:
    """A hub name usable as a directory name under the class root, or ValueError saying why not."""
    if not hub_name or "/" in hub_name or "\0" in hub_name or hub_name.startswith("."):
        raise ValueError(f"the hub user name {hub_name!r} cannot name a directory: rename the user "
                         "(no '/', not starting with '.')")
    return hub_name


def singleuser_python() -> "tuple[str, dict]":
    """The interpreter a student runs their server with, and the environment it needs: this one
    (the hub's environment) when every directory up to it lets others through; else (a virtualenv
    whose interpreter lives under /root) the system's Python of the same version, given this
    environment's packages and the repository through PYTHONPATH."""
    real = Path(os.path.realpath(sys.executable))
    if all(os.stat(p).st_mode & 0o001 for p in real.parents) and os.access(real, os.X_OK):
        return sys.executable, {}
    ver = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for exe in (f"/usr/bin/python{ver}", f"/usr/local/bin/python{ver}"):
        if os.path.exists(exe):
            site = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], str(REPO)])
            return exe, {"PYTHONPATH": os.pathsep.join(site)}
    raise RuntimeError(f"students cannot run {sys.executable} (a directory above it is private) and there is "
                       f"no /usr/bin/python{ver}: run the hub from an environment every user can read "
                       f"(e.g. python3 -m venv /opt/pglab)")


def cgroup_dirs(controller: str) -> "Path | None":
    """The hub's own cgroup (v1) of ``controller``, under which each student gets one; None
    without a v1 hierarchy of that controller."""
    root = Path("/sys/fs/cgroup") / controller
    if not (root / "cgroup.procs").exists():
        return None
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controller in controllers.split(","):
                return root / path.lstrip("/")
    except OSError:
        return None
    return None


class ClassProcessSpawner(LocalProcessSpawner):
    """LocalProcessSpawner for a class: see the module's docstring."""

    class_root = Unicode("/srv/pglab-class", config=True,
                         help="Where the students' lab homes (homes/), directories (students/) and port claims live")
    user_prefix = Unicode("pglab-", config=True, help="What every student's Unix user name starts with")
    notebooks = Unicode(str(REPO / "notebooks"), config=True, help="The notebooks each student gets a copy of")

    # --- where things are ---------------------------------------------------------
    @property
    def unix_user(self) -> str:
        return unix_name(self.user.name, self.user_prefix)

    @property
    def lab_home(self) -> Path:
        return Path(self.class_root) / "homes" / check_hub_name(self.user.name)

    @property
    def student_dir(self) -> Path:
        return Path(self.class_root) / "students" / check_hub_name(self.user.name)

    @property
    def claims(self) -> Path:
        return Path(os.environ.get("LAB_PORT_CLAIMS") or Path(self.class_root) / "port-claims")

    # --- first spawn ----------------------------------------------------------------
    def ensure_user(self) -> pwd.struct_passwd:
        """The student's Unix user, created if missing; one that exists but is not ours is refused."""
        name = self.unix_user
        try:
            p = pwd.getpwnam(name)
        except KeyError:
            useradd = shutil.which("useradd") or "/usr/sbin/useradd"
            r = subprocess.run([useradd, "--no-create-home", "--home-dir", str(self.student_dir),
                                "--shell", "/usr/sbin/nologin", "--user-group",
                                "--comment", f"{MARK} {self.user.name}"[:200], name],
                               capture_output=True, text=True)
            if r.returncode != 0 and r.returncode != 9:  # 9: made meanwhile by another spawn
                raise RuntimeError(f"useradd {name} failed: {r.stderr.strip()}")
            p = pwd.getpwnam(name)
        if not p.pw_gecos.startswith(MARK) or p.pw_uid == 0:
            raise RuntimeError(f"the Unix user {name} exists and was not made for this class: "
                               f"set ClassProcessSpawner.user_prefix to another prefix")
        return p

    def ensure_dirs(self, p: pwd.struct_passwd) -> None:
        root = Path(self.class_root)
        for d in (root, root / "homes", root / "students"):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o711)  # every student passes through to their own directory, lists none
        self.claims.mkdir(parents=True, exist_ok=True)
        os.chmod(self.claims, 0o1777)  # like /tmp: all claim, each removes only their own
        for d in (self.lab_home, self.student_dir):
            d.mkdir(exist_ok=True)
            os.chown(d, p.pw_uid, p.pw_gid)
            os.chmod(d, 0o700)
        self.copy_notebooks(p)

    def copy_notebooks(self, p: pwd.struct_passwd) -> None:
        """The student's copy of the notebooks: files they do not have are copied (a new chapter,
        one they deleted to start over); a file they have is never touched."""
        src = Path(self.notebooks)
        dst = self.student_dir / "notebooks"
        if not src.is_dir():
            return
        for f in sorted(src.rglob("*")):
            rel = f.relative_to(src)
            if any(part.startswith(".") for part in rel.parts):
                continue
            target = dst / rel
            if f.is_dir() or target.exists():
                continue
            for d in [dst, *(dst / q for q in reversed(rel.parents[:-1]))]:
                if not d.exists():
                    d.mkdir()
                    os.chown(d, p.pw_uid, p.pw_gid)
            shutil.copy2(f, target)
            os.chown(target, p.pw_uid, p.pw_gid)
        if dst.exists():
            os.chown(dst, p.pw_uid, p.pw_gid)

    # --- limits ------------------------------------------------------------------------
    def cgroups(self) -> "dict[str, Path]":
        """This student's cgroup per controller that has a limit to set (memory, cpu)."""
        out = {}
        wanted = {"memory": self.mem_limit, "cpu": self.cpu_limit}
        for controller, limit in wanted.items():
            parent = cgroup_dirs(controller)
            if limit and parent is not None:
                out[controller] = parent / f"pglab-{self.unix_user}"
        return out

    def apply_limits(self) -> "dict[str, Path]":
        groups = self.cgroups()
        for controller, d in groups.items():
            d.mkdir(exist_ok=True)
            if controller == "memory":
                (d / "memory.limit_in_bytes").write_text(str(int(self.mem_limit)))
            else:
                period = 100_000
                (d / "cpu.cfs_period_us").write_text(str(period))
                (d / "cpu.cfs_quota_us").write_text(str(int(self.cpu_limit * period)))
        missing = {"memory": self.mem_limit, "cpu": self.cpu_limit}.keys() - groups.keys()
        for controller in missing:
            if {"memory": self.mem_limit, "cpu": self.cpu_limit}[controller]:
                self.log.warning("no cgroup v1 %s controller here: %s's %s limit is not applied",
                                 controller, self.user.name, controller)
        return groups

    def remove_limits(self) -> None:
        for d in self.cgroups().values():
            try:
                d.rmdir()  # refused while a process is left in it
            except OSError:
                pass

    # --- the spawner's hooks ------------------------------------------------------------
    def make_preexec_fn(self, name):
        """Join the student's cgroups (still as root, so the whole tree of processes the server
        starts inherits them), then become the student."""
        procs = [str(d / "cgroup.procs") for d in self._groups.values()]
        become = set_user_setuid(self.unix_user, chdir=True)

        def preexec():
            # a hub started in the background of a script has SIGINT ignored, which its children
            # would inherit: the spawner's first, gentle stop is a SIGINT
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            for path in procs:
                with open(path, "w") as f:
                    f.write(str(os.getpid()))
            become()
        return preexec

    def user_env(self, env):
        p = pwd.getpwnam(self.unix_user)
        env.update(USER=p.pw_name, LOGNAME=p.pw_name, HOME=p.pw_dir, SHELL=p.pw_shell)
        return env

    def _env_keep_default(self):
        # PGLAB_TEST_SESSION marks every process a test run starts (tests/labtest/session.py): a
        # student's servers started under the hub's tests carry it too; outside tests it is unset.
        return [*super()._env_keep_default(), "PGLAB_TEST_SESSION"]

    def get_env(self):
        env = super().get_env()
        exe, extra = singleuser_python()
        env.update(extra)
        env.update(
            LAB_HOME=str(self.lab_home),
            LAB_PORT_CLAIMS=str(self.claims),
            LAB_PG_PROFILE=os.environ.get("LAB_PG_PROFILE", "shared"),
            # the class's language (LAB_LANG=es: the lab speaks Spanish in every kernel; "" = each
            # notebook's folder decides, notebooks/es/ in Spanish)
            LAB_LANG=os.environ.get("LAB_LANG", ""),
            # the stop hook (lab/serverhook.py), enabled in singleuser/jupyter_server_config.d/, then
            # this environment's own configuration (JupyterLab, jupyter-server-proxy: enabled there)
            JUPYTER_CONFIG_PATH=os.pathsep.join([str(HUB_DIR / "singleuser"), str(Path(sys.prefix) / "etc" / "jupyter")]),
            # and its data (kernels, JupyterLab's extensions), found there even by the system's Python
            JUPYTER_PATH=str(Path(sys.prefix) / "share" / "jupyter"),
            JUPYTERLAB_DIR=str(Path(sys.prefix) / "share" / "jupyter" / "lab"),
            PATH=os.pathsep.join(dict.fromkeys([str(Path(exe).parent), str(Path(sys.executable).parent),
                                                "/usr/local/bin", "/usr/bin", "/bin"])),
        )
        return env

    async def start(self):
        p = self.ensure_user()
        self.ensure_dirs(p)
        self._groups = self.apply_limits()
        exe, _ = singleuser_python()
        self.cmd = [exe, "-m", "jupyterhub.singleuser"]
        self.notebook_dir = str(self.student_dir / "notebooks")
        return await super().start()

    async def stop(self, now=False):
        await super().stop(now=now)
        self.remove_limits()

    _groups: "dict[str, Path]" = {}


def remove_student(unix_user: str) -> None:
    """Remove a student's Unix user and group (their files stay): for an instructor's clean-up
    and the tests.  Only users this spawner made are removed."""
    try:
        p = pwd.getpwnam(unix_user)
    except KeyError:
        return
    if not p.pw_gecos.startswith(MARK):
        raise RuntimeError(f"{unix_user} was not made by the class spawner: not removed")
    subprocess.run([shutil.which("userdel") or "/usr/sbin/userdel", unix_user], check=True, capture_output=True)
    try:
        grp.getgrnam(unix_user)
        subprocess.run([shutil.which("groupdel") or "/usr/sbin/groupdel", unix_user], capture_output=True)
    except KeyError:
        pass
