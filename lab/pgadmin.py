"""pgAdmin 4 without Docker: the ``pgadmin4`` package in server mode on 127.0.0.1, with the nodes loaded.

>>> info = lab.pgadmin.start(cluster)     # doctest: +SKIP
>>> info                                  # the URL as a link, the email and the password
>>> lab.pgadmin.stop(cluster)             # doctest: +SKIP

pgAdmin lives in an environment of its own, ``.venv-pgadmin/`` in the repository (``install()``,
``python -m lab pgadmin --install``), and runs there as a separate process; with the compose
backend it is the ``pgadmin`` service of compose/docker-compose.yml.  Its files live in
``<lab home>/pgadmin/`` (mode 0700).  The login survives ``stop()``; ``start()`` again
re-attaches to a running pgAdmin or starts it with the same login (and, if it can, the same
port).  The servers are re-loaded whenever the cluster changed (a new replica, a failover, a
moved port).

Behind JupyterHub or Binder the link it prints goes through the student's Jupyter server
(``/user/<name>/proxy/absolute/<port>/``; ``PgAdmin.public_url``), and pgAdmin is told that prefix.

How it is run lives in ``lab.services.pgadmin``; this module is what a notebook calls.
"""
from __future__ import annotations

from .services.pgadmin import (CLI_TIMEOUT, EMAIL, GROUP, INSTALL_HINT, REQUIREMENT, START_TIMEOUT, STOP_TIMEOUT,
                               PgAdmin, find_python, install, installed_version, pgadmin_pids, render_config,
                               render_passfile, render_servers, servers, start, status, stop, storage_user_dir,
                               venv_dir)
from .services.supervisor import HOST

__all__ = ["start", "stop", "status", "install", "find_python", "installed_version", "venv_dir", "pgadmin_pids",
           "servers", "render_servers", "render_passfile", "render_config", "storage_user_dir", "PgAdmin",
           "EMAIL", "GROUP", "HOST", "REQUIREMENT", "INSTALL_HINT", "START_TIMEOUT", "STOP_TIMEOUT", "CLI_TIMEOUT"]
