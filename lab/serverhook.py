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

At the server's start it also gives JupyterLab's own menus the class's language: with
``LAB_LANG=es`` a student who has not chosen a language opens JupyterLab in Spanish
(``seed_jupyterlab_locale``; this acts behind a hub or not, as LAB_LANG asks).
"""
from __future__ import annotations

import asyncio
import importlib.metadata
import os
import signal
import time
from pathlib import Path

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.utils import ensure_async

from .errors import LabError
from .i18n import _normal as lab_language

# JupyterLab's own menus in the class's language: LAB_LANG -> (the locale of JupyterLab's
# translation setting, the pip package of its language pack).  The single-user image installs
# the pack (hub/Dockerfile's LANGUAGE_PACKS, and tests/engine/hub_image.py's wheels from here),
# the hub's environment too for the process spawner (pyproject.toml's [hub] extra), as
# `make lab LAB_LANG=es` does on a laptop (Makefile's JUPYTER_PACK_es): tests/test_hub_language.py
# keeps them all equal to this.
JUPYTERLAB_LANGUAGES = {"es": ("es_ES", "jupyterlab-language-pack-es-ES")}
# The translation extension's settings file in a JupyterLab user-settings directory.
TRANSLATION_SETTINGS = Path("@jupyterlab", "translation-extension", "plugin.jupyterlab-settings")


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


def class_locale(env=None) -> "tuple[str, str] | None":
    """(JupyterLab's locale, its language pack) for the class's ``LAB_LANG``; None when it is
    unset, English, or a language JupyterLab gets no pack for here."""
    env = os.environ if env is None else env
    return JUPYTERLAB_LANGUAGES.get(lab_language(env.get("LAB_LANG")) or "")


def pack_installed(pack: str) -> bool:
    try:
        importlib.metadata.version(pack)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


# Why a default written into the student's own user-settings file, and not a settings override
# (overrides.json, overrides.d/ or labconfig's default_setting_overrides.json):
# - one place for both spawners: this extension runs in every student's server, as the student,
#   in the process spawner's servers and in the image's alike; overrides are read from the
#   environment's directories, shared by every student of the process spawner and fixed in the
#   image, so they could not follow the class's LAB_LANG without a second mechanism per spawner;
# - JupyterLab's server takes its own locale (the language list's names, the settings' schemas it
#   translates) from the user's file only, not from overrides: with an override the menus would
#   be in Spanish and the Settings editor's titles in English;
# - the student's choice wins: Settings > Language writes this same file, which is then present
#   and never touched again.  The one cost: a student who never chose keeps Spanish if the class
#   later runs without LAB_LANG (their file says es_ES) until they choose in Settings > Language.
def seed_jupyterlab_locale(settings_dir, env=None) -> "str | None":
    """Make the class's language (``LAB_LANG``) JupyterLab's for a student who has not chosen one:
    write ``{"locale": "es_ES"}`` as the translation extension's user setting in ``settings_dir``
    (JupyterLab's user-settings directory) when that file is absent.  A file already there (the
    student's choice, or an earlier seed) is left as it is; nothing is written without the language
    pack (JupyterLab would have no Spanish to show) or when LAB_LANG is unset or English.  Returns
    a line saying what it did for the server's log, or None when LAB_LANG asks for nothing."""
    wanted = class_locale(env)
    if wanted is None:
        return None
    locale, pack = wanted
    if not pack_installed(pack):
        return (f"JupyterLab's {locale} language pack is not installed here (pip install {pack}): "
                "its menus stay in English")
    path = Path(settings_dir) / TRANSLATION_SETTINGS
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "x", encoding="utf-8") as f:  # only when absent, even against a racing write
            f.write(f'{{"locale": "{locale}"}}\n')
    except FileExistsError:
        return f"JupyterLab's language: {path} is there (their choice, or an earlier start's): left as it is"
    except OSError as e:
        return f"JupyterLab's language: {path} not written ({e}): its menus stay as they were"
    return f"JupyterLab opens in {locale} (the class's LAB_LANG): {path} written"


def lab_settings_dir(serverapp) -> "str | None":
    """The user-settings directory of the JupyterLab this server runs, or None without one."""
    point = serverapp.extension_manager.extension_points.get("lab")  # jupyterlab's LabApp, by its name
    return getattr(point.app, "user_settings_dir", None) if point is not None and point.app else None


class StopWithServer(ExtensionApp):
    """The extension: at start, JupyterLab's language seeded and a log line; the clusters stopped
    at the server's stop."""

    name = "pglab_serverhook"
    description = "Stops the lab's clusters (data kept) when this Jupyter server stops behind a hub"
    load_other_extensions = True

    def initialize_settings(self):
        settings_dir = lab_settings_dir(self.serverapp)
        said = seed_jupyterlab_locale(settings_dir) if settings_dir else None
        if said:
            self.log.info("pglab: %s", said)
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
