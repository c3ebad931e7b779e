"""The container spawner of a class: each student's Jupyter server in a container of its own.

hub/jupyterhub_config.py calls ``configure(c)`` when ``LAB_HUB_SPAWNER=docker``.  Each student gets a
container of the single-user image (hub/Dockerfile), where the lab runs its local backend as the
container's unprivileged user (uid 1000): PostgreSQL listens on the container's own 127.0.0.1, so
no other student can reach it, and the container's memory and CPU are capped.

Where a student's files live, on the hub's host (the class root, ``LAB_CLASS_ROOT``):

    <root>/homes/<student>     the lab home (LAB_HOME, mounted at /home/jovyan/.lab): the
                               clusters' data, state and generated secrets, self-check progress
    <root>/students/<student>  the container's home (/home/jovyan): the student's notebooks,
                               copied from the image on first start and never overwritten

(the same two directories as the process spawner's, so a class can move from one to the other).

Both are directories of the host bind-mounted into the container (owned by uid 1000, mode 0700),
not named volumes: the instructor's tool reads every lab home on the host as root, with the
lab's own functions, while the student's server is stopped as well as while it runs, and a
class is backed up or wiped with the class root.  The containers are removed when they stop
(``remove=True``): everything a student keeps is in those two directories.  Each container
also runs with no capability, no privilege to gain and a process limit, and gets docker stop's
SIGTERM with 30 s before SIGKILL: the stop hook (lab/serverhook.py) stops the student's clusters
in that time, data kept.

The containers run on a network of the class (``LAB_HUB_NETWORK``, created here when missing).
The hub runs on the host: it listens on that network's gateway, the host's own address on the
network's bridge, which the containers reach directly and nothing outside the host does.

Environment:
    DOCKER_HOST            the Docker engine (default: the local socket)
    LAB_HUB_IMAGE          the single-user image (default pglab/singleuser:latest)
    LAB_HUB_NETWORK        the class's network (default pglab-class)
    LAB_HUB_MEM_LIMIT      memory per student server (read by hub/jupyterhub_config.py)
    LAB_HUB_CPU_LIMIT      CPUs per student server (read by hub/jupyterhub_config.py)
    LAB_CLASS_ROOT         the class root (default /srv/pglab-class)
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import docker
from dockerspawner import DockerSpawner

DEFAULT_IMAGE = "pglab/singleuser:latest"
DEFAULT_NETWORK = "pglab-class"
DEFAULT_CLASS_ROOT = "/srv/pglab-class"
# The image's user (hub/Dockerfile): jovyan, uid 1000, gid 100 ("users").
CONTAINER_UID, CONTAINER_GID = 1000, 100
CONTAINER_HOME = "/home/jovyan"
CONTAINER_LAB_HOME = f"{CONTAINER_HOME}/.lab"
# docker stop's grace before SIGKILL: the stop hook stops every node of the student's clusters.
STOP_TIMEOUT = 30
# A student's server should never need more processes (a cluster is tens); a fork bomb stops here.
PIDS_LIMIT = 1024


class ClassConfigError(RuntimeError):
    """The hub's container settings cannot work: the message says what to change."""


def class_root() -> Path:
    return Path(os.environ.get("LAB_CLASS_ROOT") or DEFAULT_CLASS_ROOT)


def student_dir_name(name: str) -> str:
    """A hub user name as one directory name of the class root (as the process spawner names
    them); refuses what could leave it or hide in it."""
    if not name or "/" in name or "\0" in name or name.startswith("."):
        raise ClassConfigError(f"the hub user name {name!r} cannot name a directory of the class root: rename "
                               "the user (no '/', not starting with '.')")
    return name


def private_dir(path: Path, uid: int = CONTAINER_UID, gid: int = CONTAINER_GID) -> None:
    """``path`` made (with its parents) and given to ``uid``:``gid``, mode 0700.  A directory that
    belonged to someone else (a class first run by the process spawner) is given over whole, so
    that PostgreSQL in the container can open its data."""
    path.mkdir(parents=True, exist_ok=True)
    st = path.stat()
    try:
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.chown(path, uid, gid)
            for top, dirs, files in os.walk(path):
                for n in dirs + files:
                    os.chown(os.path.join(top, n), uid, gid, follow_symlinks=False)
        os.chmod(path, 0o700)
    except PermissionError:
        raise ClassConfigError(
            f"the hub cannot give {path} to uid {uid} (the containers' user): run the hub as root, or "
            f"`chown -R {uid}:{gid} {path} && chmod 0700 {path}`") from None


def class_network(client, name: str) -> str:
    """The class's network (created when missing); returns its gateway: the host's address on it."""
    try:
        net = client.networks.get(name)
    except docker.errors.NotFound:
        net = client.networks.create(name, driver="bridge", labels={"org.pglab.class": "1"})
        net.reload()
    for cfg in (net.attrs.get("IPAM") or {}).get("Config") or []:
        gateway = cfg.get("Gateway")
        if gateway and ":" not in gateway:
            return gateway
        subnet = cfg.get("Subnet") or ""
        m = re.fullmatch(r"(\d+\.\d+\.\d+\.)(\d+)/\d+", subnet)
        if m and ":" not in subnet:  # Docker takes the subnet's first address when none is named
            return f"{m.group(1)}{int(m.group(2)) + 1}"
    raise ClassConfigError(f"the Docker network {name!r} has no IPv4 gateway: remove it (docker network rm {name}) "
                           "and start the hub again, or name another one in LAB_HUB_NETWORK")


def _literal(path: Path) -> str:
    return str(path).replace("{", "{{").replace("}", "}}")


class ClassDockerSpawner(DockerSpawner):
    """DockerSpawner that makes the student's two directories on the host before the container
    starts (owned by the container's user, 0700), and mounts them."""

    def _dirs(self) -> "tuple[Path, Path]":
        name = student_dir_name(self.user.name)
        root = class_root()
        return root / "homes" / name, root / "students" / name

    async def start(self):
        lab_home, work = self._dirs()
        for d in (lab_home, work, work / ".lab"):  # .lab: the lab home's mount point, not root's
            private_dir(d)
        # DockerSpawner formats volume names ({username}): braces in a path are doubled
        self.volumes = {_literal(work): {"bind": CONTAINER_HOME, "mode": "rw"},
                        _literal(lab_home): {"bind": CONTAINER_LAB_HOME, "mode": "rw"}}
        return await super().start()


def configure(c) -> None:
    """The container spawner's settings in the hub's config ``c`` (see the module's docstring)."""
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as e:
        where = os.environ.get("DOCKER_HOST") or "the local socket"
        raise ClassConfigError(f"LAB_HUB_SPAWNER=docker but no Docker engine answers at {where} ({e}): start "
                               "Docker, set DOCKER_HOST, or use LAB_HUB_SPAWNER=process") from None
    network = os.environ.get("LAB_HUB_NETWORK") or DEFAULT_NETWORK
    gateway = class_network(client, network)
    client.close()

    c.JupyterHub.spawner_class = ClassDockerSpawner
    # The hub runs on the host and listens on the class network's gateway (the port the config
    # chose): the containers reach it there.
    bound = urlsplit(c.JupyterHub.hub_bind_url).port if "hub_bind_url" in c.JupyterHub else None
    port = bound or (c.JupyterHub.hub_port if "hub_port" in c.JupyterHub else 8081)
    c.JupyterHub.hub_bind_url = f"http://{gateway}:{port}"
    c.JupyterHub.hub_connect_url = f"http://{gateway}:{port}"

    s = c.ClassDockerSpawner
    s.image = os.environ.get("LAB_HUB_IMAGE") or DEFAULT_IMAGE
    s.network_name = network
    s.use_internal_ip = True
    s.remove = True
    # Memory and CPU per student: the config's Spawner.mem_limit and cpu_limit (LAB_HUB_MEM_LIMIT,
    # LAB_HUB_CPU_LIMIT), which DockerSpawner gives the container's cgroup.
    s.notebook_dir = CONTAINER_HOME
    s.environment = {"LAB_HOME": CONTAINER_LAB_HOME, "LAB_PG_PROFILE": "shared",
                     "LAB_LANG": os.environ.get("LAB_LANG", "")}  # the class's language (README.es.md)
    # No capability and no privilege to gain: the student's user needs neither.
    s.extra_host_config = {"pids_limit": PIDS_LIMIT, "cap_drop": ["ALL"], "security_opt": ["no-new-privileges"]}
    s.extra_create_kwargs = {"stop_timeout": STOP_TIMEOUT}
