"""The instructor's view as a JupyterHub service: ``pglab-class``, JSON for the hub's admins only.

The hub starts it (a managed service in hub/jupyterhub_config.py) as the hub's user, root, on the
hub host, with ``LAB_CLASS_ROOT`` and ``LAB_HUB_SPAWNER`` and the hub's own service environment
(``JUPYTERHUB_API_TOKEN``, ``JUPYTERHUB_API_URL``, ``JUPYTERHUB_SERVICE_PREFIX``,
``JUPYTERHUB_SERVICE_URL``).  It reads every student's lab home with ``lab.classroom`` and answers:

    GET  <prefix>                      the same as a page, for an instructor's browser (logged in by the hub)
    GET  <prefix>api/status            {"status": [one row per student]}
    GET  <prefix>api/progress          {"chapters": {chapter: [exercise ids]}, "passed": {student: {chapter: n}}}
    POST <prefix>api/reset/<student>   {"message": "<student>: cluster stopped and wiped ..."}

Every API request carries a hub token (``Authorization: token …``), which the hub checks
(``HubOAuth``): only a token with ``access:services!service=pglab-class`` — the hub's admins, the
instructors — gets an answer; others get 403, and no token 401.  The page logs a browser in through
the hub (OAuth, ``<prefix>oauth_callback``) and shows the same to the same people.  Whether each student's server
runs is the hub's answer to this service's own token (``read:servers``).  The instructor's notebook
calls it through ``lab.classroom.Classroom.from_hub()`` with the instructor's token.

Run by hand (tests): ``python hub/class_service.py`` with the same environment.
"""
from __future__ import annotations

import asyncio
import base64
import html
import io
import json
import os
import signal
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop, PeriodicCallback

try:
    from lab import classroom
    from lab.errors import LabError
except ImportError:  # run from a checkout: hub/ is next to lab/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from lab import classroom  # noqa: E402
    from lab.errors import LabError  # noqa: E402

NAME = classroom.SERVICE
PARENT = os.getppid()  # the hub that started this service


class ClassHandler(HubOAuthenticated, web.RequestHandler):
    """A JSON endpoint for the hub's admins: the hub checks the caller's token and its scope."""

    def initialize(self, room_args: dict, hub_auth: HubOAuth):
        self.room_args = room_args
        self.hub_auth = hub_auth

    def prepare(self):
        if self.current_user is None:  # no token, or one the hub does not know, or without the scope
            token = self.hub_auth.get_token(self) if hasattr(self.hub_auth, "get_token") else None
            raise web.HTTPError(403 if token else 401)

    def get_login_url(self):  # an API answers 401/403, never a redirect to the hub's login page
        raise web.HTTPError(401)

    def write_error(self, status_code: int, **kwargs):
        reason = self._reason
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, web.HTTPError) and exc.log_message:
            reason = exc.log_message
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": reason}))

    def send(self, body: dict):
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body, default=str))

    async def room_call(self, fn):
        """Run ``fn(Classroom)`` in a thread (reading thirty homes, or a reset that waits for a
        student's kernel, must not stop the service answering); a LabError is a 400 with its line."""
        def work():
            return fn(classroom.Classroom(**self.room_args))
        try:
            return await asyncio.get_running_loop().run_in_executor(None, work)
        except LabError as e:
            raise web.HTTPError(400, str(e)) from None


class StatusHandler(ClassHandler):
    @web.authenticated
    async def get(self):
        df = await self.room_call(lambda room: room.status())
        rows = json.loads(df.to_json(orient="records", date_format="iso"))
        self.send({"status": rows})


class ProgressHandler(ClassHandler):
    @web.authenticated
    async def get(self):
        passed = await self.room_call(lambda room: room.passed())
        self.send({"chapters": classroom.chapters(),
                   "passed": {s: {c: int(n) for c, n in row.items()} for s, row in passed.iterrows()}})


class ResetHandler(ClassHandler):
    @web.authenticated
    async def post(self, student: str):
        message = await self.room_call(lambda room: room.reset(student))
        self.send({"message": str(message)})


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>pglab class</title>
<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;font-size:90%}}</style></head><body>
<h1>The class at a glance</h1><p>{when} &middot; {seen}</p>
<h2>Who is running what</h2>{status}
<h2>Self-checks passed per chapter</h2>{progress}<p><img alt="progress per chapter" src="data:image/png;base64,{plot}"></p>
<h2>Resetting one student's cluster</h2><p>From the instructor's notebook (hub/instructor.ipynb):
<code>room.reset("&lt;student&gt;")</code>; on the hub host: <code>python -m lab class reset &lt;student&gt;</code>;
or <code>POST {prefix}api/reset/&lt;student&gt;</code> with an instructor's token.</p></body></html>"""


class PageHandler(HubOAuthenticated, web.RequestHandler):
    """The same view as a page for an instructor's browser (logged in through the hub, OAuth)."""

    def initialize(self, room_args: dict, hub_auth: HubOAuth, prefix: str):
        self.room_args, self.hub_auth, self.prefix = room_args, hub_auth, prefix

    @web.authenticated
    async def get(self):
        def work():
            room = classroom.Classroom(**self.room_args)
            status = room.status()
            png = io.BytesIO()
            room.plot().savefig(png, format="png", dpi=90)
            return status, room.progress(), base64.b64encode(png.getvalue()).decode()
        try:
            status, progress, plot = await asyncio.get_running_loop().run_in_executor(None, work)
        except LabError as e:
            raise web.HTTPError(400, str(e)) from None
        seen = "; ".join(html.escape(x) for x in status["seen"].unique())
        self.finish(PAGE.format(when=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), seen=seen,
                                status=status.drop(columns="seen").to_html(index=False),
                                progress=progress.to_html(), plot=plot, prefix=html.escape(self.prefix)))


def make_app(prefix: "str | None" = None, room_args: "dict | None" = None, hub_auth: "HubOAuth | None" = None):
    """The tornado application under the service's prefix (``JUPYTERHUB_SERVICE_PREFIX``)."""
    prefix = prefix or os.environ.get("JUPYTERHUB_SERVICE_PREFIX") or f"/services/{NAME}/"
    room_args = dict(room_args or {})
    # one HubOAuth for the process (its token, the hub's API and the OAuth client from the hub's
    # environment): the OAuth callback handler finds the same instance
    auth = hub_auth or HubOAuth.instance(access_scopes={f"access:services!service={NAME}"}, cache_max_age=10)
    args = {"room_args": room_args, "hub_auth": auth}
    return web.Application([
        (prefix, PageHandler, {**args, "prefix": prefix}),
        (url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler, {}),
        (url_path_join(prefix, "api/status"), StatusHandler, args),
        (url_path_join(prefix, "api/progress"), ProgressHandler, args),
        (url_path_join(prefix, r"api/reset/([^/]+)"), ResetHandler, args),
    ], cookie_secret=os.urandom(32))


def main() -> int:
    url = os.environ.get("JUPYTERHUB_SERVICE_URL")
    if not url or not os.environ.get("JUPYTERHUB_API_TOKEN"):
        print(f"{NAME}: run by the hub (JUPYTERHUB_SERVICE_URL and JUPYTERHUB_API_TOKEN are unset): add it to "
              "c.JupyterHub.services with a url", file=sys.stderr)
        return 2
    where = urlparse(url)
    try:
        classroom.class_root()  # a class root that is not there is said at once, not at the first request
    except LabError as e:
        print(f"{NAME}: {e}", file=sys.stderr)
        return 2
    app = make_app()
    server = HTTPServer(app)
    server.listen(where.port or 80, where.hostname or "127.0.0.1")
    loop = IOLoop.current()

    def stop(*_):
        loop.add_callback_from_signal(loop.stop)

    signal.signal(signal.SIGTERM, stop)  # the hub stops its services with SIGINT, then SIGTERM
    signal.signal(signal.SIGINT, stop)
    def orphaned():  # a hub that died without stopping its services does not leave this one running
        if os.getppid() != PARENT:
            print(f"{NAME}: the hub (pid {PARENT}) is gone: stopping", file=sys.stderr, flush=True)
            loop.stop()

    PeriodicCallback(orphaned, 2000).start()
    print(f"{NAME}: answering on {url.rstrip('/')}{os.environ.get('JUPYTERHUB_SERVICE_PREFIX', '/')} "
          f"(class root {classroom.class_root()})", flush=True)
    loop.start()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
