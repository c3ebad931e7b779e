"""Where a student's browser reaches the lab's web apps: directly, or through their Jupyter server.

On a laptop the browser and the apps share a machine, and ``http://127.0.0.1:<port>`` is the link.
Behind JupyterHub or Binder the browser is elsewhere and only the student's Jupyter server is
reachable; jupyter-server-proxy forwards ``<server base>proxy/<port>/...`` to that port of the
server's machine (the prefix stripped) and ``<server base>proxy/absolute/<port>/...`` (the prefix
kept), websockets included, behind the Jupyter server's own login.

    JUPYTERHUB_SERVICE_PREFIX   the server's base path, e.g. /user/alice/ (JupyterHub and Binder set it)
    JUPYTERHUB_PUBLIC_URL       the hub's public URL, if the hub knows it (its origin makes links
    JUPYTERHUB_EXTERNAL_URL     absolute); otherwise links are paths, which a browser resolves
                                against the page it shows
    LAB_PROXY_PREFIX            the server's base path (/jupyter/) or URL (https://host/jupyter/),
                                for a Jupyter server that no hub started
    LAB_LINKS                   auto (the default: through the proxy where one of the above is set),
                                direct (always 127.0.0.1) or proxy (always the proxy; base / if
                                nothing says otherwise)

Proxied links need jupyter-server-proxy in this environment; without it the links stay direct
and ``notice()`` says why, once.  The lab's own requests (health checks, its API client) always
use 127.0.0.1: only what a browser opens goes through the proxy.
"""
from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import urlsplit

from ..i18n import N_, _
from ..errors import LabError

HOST = "127.0.0.1"
MODES = ("auto", "direct", "proxy")
# what a URL path may hold unescaped (RFC 3986 pchar and "/", "%" for escapes): JupyterHub escapes
# user names this way in /user/<name>/
_PATH = re.compile(r"^/([A-Za-z0-9._~!$&'()*+,;=:@%-]+/)*$")
_told: "set[str]" = set()
# the end of Links.why where proxied links were asked for but cannot be had (notice() says it translated)
_NO_PROXY = (", but jupyter-server-proxy is not installed in this environment "
             "(pip install jupyter-server-proxy, then restart the Jupyter server): "
             "the links below reach 127.0.0.1 of the server's machine only")


@dataclass(frozen=True)
class Links:
    """How links to the lab's apps are made here: ``direct`` (http://127.0.0.1:<port>) or ``proxy``
    (through the Jupyter server at ``origin`` + ``prefix``), and why."""

    mode: str
    prefix: str = ""   # the Jupyter server's base path, "/" first and last ("/user/alice/")
    origin: str = ""   # "https://hub.example.org", or "" for origin-relative links
    why: str = ""

    @property
    def proxied(self) -> bool:
        return self.mode == "proxy"


def _proxy_installed() -> bool:
    return importlib.util.find_spec("jupyter_server_proxy") is not None


def _prefix(raw: str, var: str) -> "tuple[str, str]":
    """(origin, base path) of a base path or URL given in ``var``; a LabError saying what to give."""
    text = raw.strip()
    origin = ""
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise LabError(_("{var}={raw!r}: give the Jupyter server's base path (/user/alice/) or its URL "
                             "(https://hub.example.org/user/alice/); LAB_LINKS=direct turns proxied links off").format(
                var=var, raw=raw))
        origin, text = f"{parts.scheme}://{parts.netloc}", parts.path or "/"
    path = text if text.endswith("/") else text + "/"
    if not _PATH.match(path) or any(seg in (".", "..") for seg in path.split("/")):
        raise LabError(_("{var}={raw!r}: not a URL path like /user/alice/ (one '/' first, no spaces, '?', '#', "
                         "'//' or '..'); LAB_LINKS=direct turns proxied links off").format(var=var, raw=raw))
    return origin, path


def _origin(env: Mapping[str, str]) -> str:
    """The hub's public origin, if the hub said it; "" (origin-relative links) otherwise."""
    for var in ("JUPYTERHUB_PUBLIC_URL", "JUPYTERHUB_EXTERNAL_URL"):
        raw = env.get(var, "").strip()
        if not raw:
            continue
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise LabError(_("{var}={raw!r}: not an http(s) URL; unset it (links then are paths the browser "
                             "resolves) or set LAB_LINKS=direct").format(var=var, raw=raw))
        return f"{parts.scheme}://{parts.netloc}"
    return ""


def links(env: "Mapping[str, str] | None" = None) -> Links:
    """How links are made in this environment (``os.environ`` unless ``env``); a LabError names a
    variable with a value that makes no link."""
    env = os.environ if env is None else env
    mode = env.get("LAB_LINKS", "").strip().lower() or "auto"
    if mode not in MODES:
        raise LabError(_("LAB_LINKS={value!r}: auto (the default), direct (always 127.0.0.1) "
                         "or proxy (always through the Jupyter server)").format(value=env.get('LAB_LINKS')))
    if mode == "direct":
        return Links("direct", why="LAB_LINKS=direct")
    if env.get("LAB_PROXY_PREFIX", "").strip():
        origin, prefix = _prefix(env["LAB_PROXY_PREFIX"], "LAB_PROXY_PREFIX")
        origin = origin or _origin(env)
        why = "LAB_PROXY_PREFIX"
    elif env.get("JUPYTERHUB_SERVICE_PREFIX", "").strip():
        origin, prefix = _prefix(env["JUPYTERHUB_SERVICE_PREFIX"], "JUPYTERHUB_SERVICE_PREFIX")
        origin = origin or _origin(env)
        why = N_("a Jupyter server started by JupyterHub or Binder (JUPYTERHUB_SERVICE_PREFIX)")
    elif mode == "proxy":
        origin, prefix, why = _origin(env), "/", "LAB_LINKS=proxy"
    else:
        return Links("direct", why="no hub or Binder here (JUPYTERHUB_SERVICE_PREFIX is not set)")
    if not _proxy_installed():
        return Links("direct", why=why + _NO_PROXY)
    return Links("proxy", prefix=prefix, origin=origin, why=why)


def base_path(port: int, *, absolute: bool = True, env: "Mapping[str, str] | None" = None) -> str:
    """The path an app on ``port`` must be told it is reached under, "" where links are direct.
    ``absolute=True``: ``<prefix>proxy/absolute/<port>``, which the proxy keeps, so the app sees the
    browser's whole path and answers under it (Streamlit's base URL path).  ``absolute=False``:
    ``<prefix>proxy/<port>``, which the proxy strips, for an app that answers at its root and only
    puts the prefix in the links it makes (uvicorn's root path)."""
    got = links(env)
    if not got.proxied:
        return ""
    return f"{got.prefix}proxy/absolute/{int(port)}" if absolute else f"{got.prefix}proxy/{int(port)}"


def browser_url(port: int, path: str = "/", *, absolute: bool = True, env: "Mapping[str, str] | None" = None) -> str:
    """The URL a student's browser opens for ``path`` of the app on ``port``.

    Direct: ``http://127.0.0.1:<port><path>``.  Behind a proxy, for an app told its ``base_path()``
    (``absolute=True``): ``<origin><prefix>proxy/absolute/<port><path>``; for an app that answers at
    its root, not told where it is (``absolute=False``): ``<origin><prefix>proxy/<port><path>``, the
    proxy stripping its prefix.  ``path`` is a path on the app (``/``, ``/docs``)."""
    if not path.startswith("/"):
        raise LabError(_("path={path!r}: a path on the app, starting with '/' (e.g. '/docs')").format(path=path))
    got = links(env)
    if not got.proxied:
        return f"http://{HOST}:{int(port)}{path}"
    return got.origin + base_path(port, absolute=absolute, env=env) + path


def notice(env: "Mapping[str, str] | None" = None) -> "str | None":
    """Why links stay direct although a hub, Binder or an override asked for the proxy: the first
    time in this process only (a student reads it once, not at every start); else None."""
    got = links(env)
    if got.proxied or got.why.startswith(("LAB_LINKS=direct", "no hub")) or got.why in _told:
        return None
    _told.add(got.why)
    if got.why.endswith(_NO_PROXY):
        return _("links are direct: {why}, but jupyter-server-proxy is not installed in this environment "
                 "(pip install jupyter-server-proxy, then restart the Jupyter server): "
                 "the links below reach 127.0.0.1 of the server's machine only").format(
            why=_(got.why[:-len(_NO_PROXY)]))
    return _("links are direct: {why}").format(why=got.why)
