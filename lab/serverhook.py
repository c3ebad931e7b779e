"""Stop a student's clusters when their Jupyter server stops, behind a hub.

On a class server (hub/README.md) a student's server stops when they stop it from the hub, when
the idle culler stops it, or when the hub or Docker sends it SIGTERM; their PostgreSQL servers
(and the crypto app and pgAdmin started on them) would otherwise keep running, and keep their
memory, for nobody.  This Jupyter server extension stops them then, as ``python -m lab down``
does: the data is kept, and ``lab.up()`` brings the same cluster back next time.

It acts only behind a hub (``JUPYTERHUB_SERVICE_PREFIX`` set) or with ``LAB_STOP_WITH_SERVER=1``:
on a laptop (``make lab``) the cluster keeps running after JupyterLab stops.

jupyter_server calls ``stop_extension`` of ExtensionApps only, from its clean-up, which runs on
SIGTERM; so this is an ExtensionApp.  JupyterHub stops a server with SIGINT first, which a server
without a terminal takes as KeyboardInterrupt and exits on with no clean-up at all: behind a hub
this extension makes SIGINT stop the server as SIGTERM does.  It is enabled with
``{"ServerApp": {"jpserver_extensions": {"lab.serverhook": true}}}`` in a
``jupyter_server_config.d`` directory (hub/singleuser/ holds that file).
"""
from __future__ import annotations

import asyncio
import os
import signal
import time

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.utils import ensure_async

from .errors import LabError


def active(env=None) -> bool:
    """Does this server's stop stop the clusters?  Behind a hub, or when asked to."""
    env = os.environ if env is None else env
    return bool(env.get("JUPYTERHUB_SERVICE_PREFIX")) or env.get("LAB_STOP_WITH_SERVER") == "1"


def stop_clusters(home=None) -> "list[str]":
    """Stop chapter 08's HA cluster and the cluster of the lab home (``LAB_HOME``), with what runs
    on them (the crypto app, pgAdmin); data kept.  One line per cluster saying how it went: a
    failure of one does not keep the other running."""
    # The server holds this module from its start to its stop; lab.cluster brings pandas and the
    # whole lab (~40 MB and a second of CPU in every student's server, 30 starting at a time).
    from . import cluster, ha  # lazy: only at the stop
    lines = []
    for what, down in (("HA cluster", ha.down), ("cluster", cluster.down)):
        t0 = time.monotonic()
        try:
            down(home=home)
        except LabError as e:
            lines.append(f"{what}: not stopped: {e}")
        else:
            lines.append(f"{what}: stopped in {time.monotonic() - t0:.1f} s (data kept)")
    return lines


class StopWithServer(ExtensionApp):
    """The extension: nothing at start but a log line; the clusters stopped at the server's stop."""

    name = "pglab_serverhook"
    description = "Stops the lab's clusters (data kept) when this Jupyter server stops behind a hub"
    load_other_extensions = True

    def initialize_settings(self):
        if not active():
            return
        # Called in the main thread after the server set its own signal handlers: SIGINT gets the
        # clean stop unless the server asks for a confirmation on a terminal.
        if signal.getsignal(signal.SIGINT) in (signal.default_int_handler, signal.SIG_DFL, signal.SIG_IGN):
            signal.signal(signal.SIGINT, self.serverapp._signal_stop)
        self.log.info("pglab: this server's stop stops the lab's clusters in %s (data kept)",
                      os.environ.get("LAB_HOME") or "the default lab home")

    async def stop_extension(self):
        if not active():
            return
        t0 = time.monotonic()
        # Kernels first: one in the middle of a lab call holds the lab's lock, which down() would
        # otherwise wait for (their own shutdown comes right after this anyway).
        try:
            await ensure_async(self.serverapp.kernel_manager.shutdown_all())
        except Exception as e:  # a kernel that will not stop is killed by the server's own clean-up
            self.log.warning("pglab: shutting the kernels down: %s", e)
        lines = await asyncio.get_running_loop().run_in_executor(None, stop_clusters)
        for line in lines:
            self.log.info("pglab: %s", line)
        self.log.info("pglab: clusters stopped with the server in %.1f s", time.monotonic() - t0)


def _jupyter_server_extension_points():
    return [{"module": "lab.serverhook", "app": StopWithServer}]
