"""A private Docker engine for the compose test tier and for benchmarks (Linux, root).

    with PrivateDockerd() as engine:            # its own dockerd + containerd, nothing shared
        engine.images = ensure_images(engine, repo_root)
        subprocess.run([*compose_cli(), ...], env=engine.env())

Test and bench infrastructure, kept out of the students' package (and of its wheel).  Imported
as ``engine``: pytest puts tests/ on sys.path (tests/ has no __init__.py), bench scripts and
``python -m engine`` add it themselves (``PYTHONPATH=tests python -m engine --reap``).

The engine never touches the host's Docker (if any) and changes no firewall rule or sysctl;
its data-root is wiped at every stop and the images survive as ``docker save`` tars in
``~/.cache/pglab/docker-images``.  One file per concern, each importing only those above it:

    sweep.py      processes, mounts and cgroups of an engine on the host
    host.py       binaries, the Debian mirror, ``availability()``, ``DockerdError``
    api.py        the Docker API over the engine's unix socket
    engine.py     ``PrivateDockerd``: start, stop leaving nothing, reap a dead owner's engine
    images.py     base and node images, their keys and the tar cache
    app_image.py  the crypto app's image (wheels built on the host)
    pgadmin_image.py  pgAdmin 4's image for compose's pgadmin (wheels built on the host)
    ha_image.py   chapter 08's HA image (etcd, HAProxy, Patroni) on the node image
    hub_image.py  the class's single-user image (hub/Dockerfile)
    shared.py     one engine for several test sessions (``--serve``; LAB_TEST_ENGINE_ROOT)
    __main__.py   ``python -m engine [--cold] [--reap] [--serve FILE]``: time a start + images + stop
"""
from lab.backends.compose import compose_cli

from .app_image import APP_IMAGE, app_key, ensure_app_image
from .engine import PrivateDockerd, reap_stale
from .ha_image import HA_IMAGE, ensure_ha_image, ha_key
from .host import DockerdError, availability, debian_mirror, docker_cli, host_net_state, net_state_changes
from .images import BASE_IMAGE, NODE_IMAGE, base_key, default_cache_dir, ensure_images, node_key
from .pgadmin_image import PGADMIN_IMAGE, ensure_pgadmin_image, pgadmin_key

__all__ = ["APP_IMAGE", "BASE_IMAGE", "HA_IMAGE", "NODE_IMAGE", "PGADMIN_IMAGE", "DockerdError", "PrivateDockerd",
           "app_key", "availability", "base_key", "compose_cli", "debian_mirror", "default_cache_dir", "docker_cli",
           "ensure_app_image", "ensure_ha_image", "ensure_images", "ensure_pgadmin_image", "ha_key", "host_net_state",
           "net_state_changes", "node_key", "pgadmin_key", "reap_stale"]
