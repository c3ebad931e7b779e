"""The lab's web apps behind JupyterHub or Binder: reached through the student's own Jupyter server
(jupyter-server-proxy) instead of 127.0.0.1.

The unit tests at the top check the links (lab.system.jupyterenv) with the variables a hub, Binder or
a student sets, and what the app and pgAdmin are told.  The live part runs a real Jupyter server as
the student's (127.0.0.1, a free port, a token, base URL /user/student/, jupyter-server-proxy on), the
lab's crypto app started as a notebook on that server would start it (JUPYTERHUB_SERVICE_PREFIX set)
on a real cluster, then goes through the server's proxy with the token: the API, its /docs and their
OpenAPI document, the dashboard and Streamlit's websocket; in headless Chromium the dashboard renders
through the proxy, alone and embedded as a notebook shows it (``pgadmin`` tier: pgAdmin, logged in).
Everything is stopped at the end: the Jupyter server, the app, pgAdmin and the cluster.
"""
from __future__ import annotations

import base64
import contextlib
import http.cookiejar
import importlib.util
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

import lab
import lab.pgadmin
import lab.webapp
from app.settings import Settings, SettingsError
from app_fixtures import MARKER, SESSION, free_port
from lab.services import pgadmin as pgadmin_service
from lab.services.webapp import WebApp
from lab.system import jupyterenv
from labtest.browser import NO_CHROMIUM, artifacts, browser, chromium, dashboard_drawn, load_dashboard, wait_for_text
from labtest.pgadmin import python_or_skip as pgadmin_python

PREFIX = "/user/student/"
HUB_VARS = ("JUPYTERHUB_SERVICE_PREFIX", "JUPYTERHUB_PUBLIC_URL", "JUPYTERHUB_EXTERNAL_URL", "LAB_PROXY_PREFIX",
            "LAB_LINKS")
HAS_PROXY = importlib.util.find_spec("jupyter_server_proxy") is not None
NO_PROXY = "jupyter-server-proxy is not installed in this environment (pip install jupyter-server-proxy)"
DASHBOARD_TEXT = ["Crypto app", "Market overview", "BTC over the last 24 hours", "Replication", "served by:"]


@pytest.fixture
def env(monkeypatch):
    """No hub, Binder or override variable but those a test sets."""
    for var in HUB_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(jupyterenv, "_told", set())
    return monkeypatch


# --------------------------------------------------------------------------
# unit: the links
# --------------------------------------------------------------------------

def test_without_a_hub_links_are_direct(env):
    assert jupyterenv.links().mode == "direct"
    assert jupyterenv.browser_url(8501) == "http://127.0.0.1:8501/"
    assert jupyterenv.browser_url(8000, "/docs") == "http://127.0.0.1:8000/docs"
    assert jupyterenv.base_path(8501) == ""
    assert jupyterenv.notice() is None  # nothing asked for the proxy: nothing to explain


@pytest.mark.skipif(not HAS_PROXY, reason=NO_PROXY)
def test_under_a_hub_links_go_through_the_jupyter_server(env):
    env.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/alice/")
    got = jupyterenv.links()
    assert (got.mode, got.prefix, got.origin) == ("proxy", "/user/alice/", "")
    # origin-relative: the browser resolves them against the notebook's page
    assert jupyterenv.browser_url(8501) == "/user/alice/proxy/absolute/8501/"
    assert jupyterenv.browser_url(8000, "/docs") == "/user/alice/proxy/absolute/8000/docs"
    assert jupyterenv.browser_url(8000, "/docs", absolute=False) == "/user/alice/proxy/8000/docs"
    assert jupyterenv.base_path(8501) == "/user/alice/proxy/absolute/8501"
    assert jupyterenv.base_path(8000, absolute=False) == "/user/alice/proxy/8000"
    # the hub's public URL gives them an origin; its path is the hub's, not the server's
    env.setenv("JUPYTERHUB_PUBLIC_URL", "https://hub.example.org/hub/")
    assert jupyterenv.browser_url(8501) == "https://hub.example.org/user/alice/proxy/absolute/8501/"
    assert jupyterenv.base_path(8501) == "/user/alice/proxy/absolute/8501"
    # a name JupyterHub escaped stays escaped
    env.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/bob%40uni/")
    assert jupyterenv.base_path(1) == "/user/bob%40uni/proxy/absolute/1"


@pytest.mark.skipif(not HAS_PROXY, reason=NO_PROXY)
def test_overrides_force_the_proxy_or_direct_links(env):
    env.setenv("LAB_PROXY_PREFIX", "/jupyter")  # a Jupyter server no hub started
    assert jupyterenv.browser_url(9000) == "/jupyter/proxy/absolute/9000/"
    env.setenv("LAB_PROXY_PREFIX", "https://lab.example.org:8443/jupyter/")
    assert jupyterenv.browser_url(9000) == "https://lab.example.org:8443/jupyter/proxy/absolute/9000/"
    env.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/alice/")  # the override wins over the hub's
    assert jupyterenv.base_path(9000) == "/jupyter/proxy/absolute/9000"
    env.setenv("LAB_LINKS", "direct")  # and direct links win over both
    assert jupyterenv.browser_url(9000) == "http://127.0.0.1:9000/"
    env.setenv("LAB_LINKS", "Proxy")
    env.delenv("LAB_PROXY_PREFIX")
    env.delenv("JUPYTERHUB_SERVICE_PREFIX")
    assert jupyterenv.browser_url(9000) == "/proxy/absolute/9000/"  # a Jupyter server at its root


@pytest.mark.parametrize("var, value, says", [
    ("LAB_LINKS", "yes", "auto (the default), direct"),
    ("LAB_PROXY_PREFIX", "user/alice", "one '/' first"),
    ("LAB_PROXY_PREFIX", "/user/al ice/", "no spaces"),
    ("LAB_PROXY_PREFIX", "/user/../root/", "'..'"),
    ("LAB_PROXY_PREFIX", "//evil.example.org/", "'//'"),
    ("LAB_PROXY_PREFIX", "ftp://host/x/", "base path (/user/alice/) or its URL"),
    ("LAB_PROXY_PREFIX", "https://host/x/?a=1", "base path (/user/alice/) or its URL"),
    ("JUPYTERHUB_SERVICE_PREFIX", "/user/a#b/", "not a URL path"),
    ("JUPYTERHUB_PUBLIC_URL", "hub.example.org", "not an http(s) URL"),
])
def test_a_bad_variable_is_named_in_one_line(env, var, value, says):
    if var == "JUPYTERHUB_PUBLIC_URL":
        env.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/alice/")
    env.setenv(var, value)
    with pytest.raises(lab.LabError) as e:
        jupyterenv.browser_url(8501)
    msg = str(e.value)
    assert var in msg and says in msg and "\n" not in msg
    assert "LAB_LINKS" in msg  # what to do: correct it, or turn proxied links off


def test_without_jupyter_server_proxy_links_stay_direct_and_say_why_once(env):
    env.setattr(jupyterenv, "_proxy_installed", lambda: False)
    env.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/alice/")
    assert jupyterenv.browser_url(8501) == "http://127.0.0.1:8501/"
    assert jupyterenv.base_path(8501) == ""
    first = jupyterenv.notice()
    assert first and "jupyter-server-proxy is not installed" in first and "pip install" in first
    assert jupyterenv.notice() is None  # once per process


# --------------------------------------------------------------------------
# unit: what the app and pgAdmin are told, and what a notebook shows
# --------------------------------------------------------------------------

def test_app_paths_are_checked_like_every_setting():
    base = {"APP_PRIMARY_DSN": "host=127.0.0.1 port=5432 dbname=crypto_db"}
    s = Settings.from_env({**base, "APP_API_ROOT_PATH": "/user/a/proxy/absolute/8000/",
                           "APP_DASHBOARD_BASE_PATH": "/user/a/proxy/absolute/8501"})
    assert (s.api_root_path, s.dashboard_base_path) == ("/user/a/proxy/absolute/8000", "/user/a/proxy/absolute/8501")
    assert Settings.from_env(s.to_env()) == s
    assert Settings.from_env({**base, "APP_API_ROOT_PATH": "/"}).api_root_path == ""
    for bad, says in [("user/a", "starts with one '/'"), ("http://host/x", "not a URL"), ("/a b", "no spaces"),
                      ("/a/../b", "'..'"), ("/a?x=1", "'?'")]:
        with pytest.raises(SettingsError, match="APP_API_ROOT_PATH") as e:
            Settings.from_env({**base, "APP_API_ROOT_PATH": bad})
        assert says in str(e.value) and "\n" not in str(e.value)


def test_the_api_docs_find_their_document_under_the_root_path():
    from fastapi.testclient import TestClient

    from app.api import create_app

    root = "/user/a/proxy/8000"
    api = create_app(Settings.from_env({"APP_PRIMARY_DSN": "host=127.0.0.1 port=1 dbname=x"}))
    client = TestClient(api, root_path=root)  # as uvicorn runs it with APP_API_ROOT_PATH; no lifespan: no database
    docs = client.get("/docs")  # what the proxy passes on, its prefix stripped
    assert docs.status_code == 200 and f"'{root}/openapi.json'" in docs.text
    doc = client.get("/openapi.json")
    assert doc.status_code == 200 and doc.json()["servers"] == [{"url": root}]
    assert "/prices/{symbol}" in doc.json()["paths"]


def test_the_dashboard_links_the_api_where_a_browser_reaches_it(monkeypatch):
    from app.dashboard import public_api_url

    monkeypatch.delenv("APP_API_PUBLIC_URL", raising=False)
    assert public_api_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000"
    monkeypatch.setenv("APP_API_PUBLIC_URL", "/user/a/proxy/8000/")
    assert public_api_url("http://127.0.0.1:8000") == "/user/a/proxy/8000"
    monkeypatch.setenv("APP_API_PUBLIC_URL", "https://hub.example.org/user/a/proxy/8000")
    assert public_api_url("http://127.0.0.1:8000") == "https://hub.example.org/user/a/proxy/8000"
    for bad in ("javascript:alert(1)", "/a b", "hub.example.org/x"):
        monkeypatch.setenv("APP_API_PUBLIC_URL", bad)
        with pytest.raises(SettingsError, match="APP_API_PUBLIC_URL"):
            public_api_url("http://127.0.0.1:8000")


def test_pgadmin_under_a_prefix_is_told_it():
    python = Path(sys.executable)
    assert pgadmin_service.command(python) == [str(python), "-m", "pgadmin4.pgAdmin4"]
    argv = pgadmin_service.command(python, "/user/a/proxy/absolute/5050")
    assert argv[-1] == "/user/a/proxy/absolute/5050" and "pgadmin4.pgAdmin4" in " ".join(argv)
    assert pgadmin_service.script_name("/user/bob%40uni/proxy/absolute/5050") == \
        {"SCRIPT_NAME": "/user/bob@uni/proxy/absolute/5050"}
    assert pgadmin_service.script_name("") == {}
    info = lab.pgadmin.PgAdmin(url="http://127.0.0.1:5050", email="e@example.com", password="p", port=5050,
                               pid=1, running=True, public_url="/user/a/proxy/absolute/5050/")
    assert "/user/a/proxy/absolute/5050/" in repr(info) and "127.0.0.1" not in repr(info)
    assert "href='/user/a/proxy/absolute/5050/'" in info._repr_html_()


def test_a_notebook_shows_the_public_urls_and_the_lab_keeps_the_internal_ones():
    app = WebApp(api_url="http://127.0.0.1:8000", dashboard_url="http://127.0.0.1:8501/p/proxy/absolute/8501",
                 token="t", pids={}, running=True, public_api_url="/p/proxy/absolute/8000",
                 public_dashboard_url="/p/proxy/absolute/8501/")
    assert app.docs_url == "http://127.0.0.1:8000/docs" and app.public_docs_url == "/p/proxy/absolute/8000/docs"
    text, page = repr(app), app._repr_html_()
    assert "127.0.0.1" not in text and "127.0.0.1" not in page
    assert "<iframe src='/p/proxy/absolute/8501/'" in page and "href='/p/proxy/absolute/8000/docs'" in page
    direct = WebApp(api_url="http://127.0.0.1:8000", dashboard_url="http://127.0.0.1:8501", token="t", pids={},
                    running=True)  # a state written before public URLs existed
    assert direct.public_dashboard_url == "http://127.0.0.1:8501" and "http://127.0.0.1:8000/docs" in repr(direct)


# --------------------------------------------------------------------------
# live: a student's Jupyter server, the lab's app behind it
# --------------------------------------------------------------------------

class JupyterServer:
    """A real ``jupyter server`` as the student's: 127.0.0.1, a free port, a token, base URL
    /user/student/, jupyter-server-proxy enabled; in its own process group."""

    def __init__(self, tmp: Path):
        self.port = free_port()
        self.token = secrets.token_urlsafe(24)
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp / "config"
        config.mkdir()
        (config / "jupyter_server_config.json").write_text(json.dumps(
            {"ServerApp": {"jpserver_extensions": {"jupyter_server_proxy": True}}}))
        self.log = tmp / "jupyter-server.log"
        argv = [sys.executable, "-m", "jupyter_server", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
                "--ServerApp.port_retries=0", f"--ServerApp.base_url={PREFIX}", "--ServerApp.open_browser=False",
                f"--ServerApp.root_dir={tmp}"]
        if os.geteuid() == 0:
            argv.append("--allow-root")
        env = {**os.environ, MARKER: SESSION, "HOME": str(tmp), "JUPYTER_CONFIG_DIR": str(config),
               "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "JUPYTER_TOKEN": self.token}
        self.proc = subprocess.Popen(argv, env=env, stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.get(PREFIX + "api/status")[0] == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the Jupyter server did not start; its log:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.2)

    def get(self, path: str, token: bool = True) -> "tuple[int, dict, bytes]":
        """GET ``path`` (origin-relative, as a page's link) with the token, without following redirects."""
        req = urllib.request.Request(self.url + path, headers={"Authorization": f"token {self.token}"} if token else {})
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.fixture(scope="module")
def student_server(tmp_path_factory):
    if not HAS_PROXY:
        pytest.skip(NO_PROXY)
    server = JupyterServer(tmp_path_factory.mktemp("student-server"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def proxied_app(student_server, tmp_path_factory):
    """The lab's crypto app started from the student's server (JUPYTERHUB_SERVICE_PREFIX set) on a
    primary + 2 replicas; the app and the cluster are stopped after the module."""
    home = tmp_path_factory.mktemp("proxied-lab") / "lab"
    with pytest.MonkeyPatch.context() as mp:
        for var in HUB_VARS:
            mp.delenv(var, raising=False)
        mp.setenv("JUPYTERHUB_SERVICE_PREFIX", PREFIX)
        try:
            cluster = lab.up(replicas=2, home=home, quiet=True)
            info = lab.webapp.start(cluster, quiet=True, tick_rate=2)
            yield cluster, info
        finally:
            lab.webapp.stop(home, quiet=True)
            lab.down(wipe=True, home=home)


@pytest.mark.integration
@pytest.mark.app
def test_the_lab_shows_proxied_links_and_uses_127_0_0_1_itself(proxied_app):
    cluster, info = proxied_app
    state = lab.webapp.status(cluster)
    api_port, dash_port = state.api_url.rsplit(":", 1)[1], state.dashboard_url.split("/")[2].rsplit(":", 1)[1]
    assert info.public_dashboard_url == f"{PREFIX}proxy/absolute/{dash_port}/"
    assert info.public_api_url == f"{PREFIX}proxy/{api_port}"  # uvicorn: a root path the proxy strips
    assert info.public_docs_url == f"{PREFIX}proxy/{api_port}/docs"
    page = info._repr_html_()
    assert f"<iframe src='{info.public_dashboard_url}'" in page and "127.0.0.1" not in page + repr(info)
    # a restarted kernel sees the same (the state file keeps both)
    assert (state.public_api_url, state.public_dashboard_url) == (info.public_api_url, info.public_dashboard_url)
    # the lab itself: 127.0.0.1, the dashboard under the path it was given
    assert info.api_url == f"http://127.0.0.1:{api_port}"
    assert info.dashboard_url == f"http://127.0.0.1:{dash_port}{PREFIX}proxy/absolute/{dash_port}"
    reads = lab.webapp.reads(cluster, n=4)
    assert list(reads["status"]) == [200] * 4 and set(reads["role"]) <= {"replica", "primary"}
    assert lab.webapp.wait_dashboard(info, 30) is info
    # starting again re-attaches: same processes, same links
    again = lab.webapp.start(cluster, quiet=True)
    assert again.pids == info.pids and again.public_dashboard_url == info.public_dashboard_url


@pytest.mark.integration
@pytest.mark.app
def test_the_api_and_its_docs_answer_through_the_proxy(proxied_app, student_server):
    _, info = proxied_app
    status, _, body = student_server.get(info.public_api_url + "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, headers, body = student_server.get(info.public_api_url + "/prices/BTC?limit=3")
    assert status == 200 and len(json.loads(body)["prices"]) == 3 and headers["X-Served-Role"] in ("replica", "primary")
    # /docs asks for its OpenAPI document under the proxied path, and that path answers
    status, _, body = student_server.get(info.public_docs_url)
    assert status == 200
    spec_url = re.search(r"url: '([^']+)'", body.decode()).group(1)
    assert spec_url == info.public_api_url + "/openapi.json"
    status, _, body = student_server.get(spec_url)
    doc = json.loads(body)
    assert status == 200 and doc["servers"] == [{"url": info.public_api_url}] and "/prices/{symbol}" in doc["paths"]
    # the proxy is behind the Jupyter server's login: without the token the app is not reached
    status, _, body = student_server.get(info.public_api_url + "/health", token=False)
    assert status in (302, 403) and b'"status"' not in body


@pytest.mark.integration
@pytest.mark.app
def test_the_dashboard_and_its_websocket_answer_through_the_proxy(proxied_app, student_server):
    from websockets.sync.client import connect

    _, info = proxied_app
    status, _, body = student_server.get(info.public_dashboard_url + "_stcore/health")
    assert status == 200 and body.strip() == b"ok"
    status, _, body = student_server.get(info.public_dashboard_url)
    assert status == 200 and b"<title>Streamlit</title>" in body
    # Streamlit's websocket: the upgrade goes through the Jupyter server to the dashboard
    ws_url = student_server.url.replace("http://", "ws://") + info.public_dashboard_url + "_stcore/stream"
    with connect(ws_url, subprotocols=["streamlit"], open_timeout=20,
                 additional_headers={"Authorization": f"token {student_server.token}"}) as ws:
        assert ws.subprotocol == "streamlit"


@pytest.mark.integration
@pytest.mark.app
@pytest.mark.browser
@pytest.mark.skipif(chromium() is None, reason=NO_CHROMIUM)
def test_the_dashboard_renders_through_the_proxy_in_chromium(proxied_app, student_server, tmp_path):
    _, info = proxied_app
    with browser(tmp_path) as tools:
        # the token in the URL logs the browser in (a cookie), as a hub's login would
        url = f"{student_server.url}{info.public_dashboard_url}?token={student_server.token}"
        text = load_dashboard(tools, url, DASHBOARD_TEXT)
        assert "replica1" in text or "replica2" in text
        assert "Traceback" not in text and "Error" not in text, text[:1500]
        got = dashboard_drawn(tools)
        assert got["charts"] >= 2 and got["grids"] >= 3, got
        assert tools.evaluate("location.pathname") == info.public_dashboard_url
        # the page's link to the API goes through the proxy too, and the browser gets the docs there
        href = tools.evaluate("(() => { const a = [...document.querySelectorAll('a')]"
                              ".find(a => a.getAttribute('href').endsWith('/docs')); return a && a.getAttribute('href'); })()")
        assert href == info.public_docs_url
        got = tools.evaluate(f"fetch({json.dumps(href)}).then(r => r.status + ' ' + r.headers.get('content-type'))",
                             await_promise=True)
        assert got.startswith("200 text/html"), got
        shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        (artifacts() / "app-dashboard-proxied.png").write_bytes(base64.b64decode(shot["data"]))
        # embedded as the notebook shows it: the repr's HTML in a page of the Jupyter server (its
        # "not found" page has JupyterLab's security policy: frames of its own origin only)
        tools.call("Page.navigate", url=f"{student_server.url}{PREFIX}no-such-page")
        wait_for_text(tools, ["404"], 30)
        tools.evaluate(f"document.body.innerHTML = {json.dumps(info._repr_html_())}; 1")
        deadline = time.monotonic() + 60
        inner = ""
        while time.monotonic() < deadline and not all(w in inner for w in DASHBOARD_TEXT):
            time.sleep(0.5)
            inner = tools.evaluate("(() => { const f = document.querySelector('iframe');"
                                   " return f && f.contentDocument && f.contentDocument.body"
                                   " ? f.contentDocument.body.innerText : ''; })()") or ""
        assert all(w in inner for w in DASHBOARD_TEXT), inner[:1500]


# --------------------------------------------------------------------------
# live, pgadmin tier: pgAdmin through the proxy
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def proxied_pgadmin(proxied_app):
    pgadmin_python()  # installed into .venv-pgadmin the first time, as the pgadmin tier does
    cluster, _ = proxied_app
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTERHUB_SERVICE_PREFIX", PREFIX)
        try:
            yield lab.pgadmin.start(cluster, quiet=True)
        finally:
            lab.pgadmin.stop(cluster, quiet=True)


@pytest.mark.integration
@pytest.mark.pgadmin
def test_pgadmin_logs_in_and_lists_the_nodes_through_the_proxy(proxied_pgadmin, student_server):
    info = proxied_pgadmin
    assert info.public_url == f"{PREFIX}proxy/absolute/{info.port}/" and info.url == f"http://127.0.0.1:{info.port}"
    assert info.public_url in repr(info)
    base = student_server.url + info.public_url.rstrip("/")
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.addheaders = [("Authorization", f"token {student_server.token}")]
    page = opener.open(base + "/login", timeout=30).read().decode()
    # its pages link under the prefix the browser used
    assert f'src="{info.public_url}static/' in page
    csrf = re.search(r'"csrfToken":\s*"([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"csrf_token": csrf, "email": info.email, "password": info.password,
                                   "language": "en", "internal_button": "Login"}).encode()
    r = opener.open(base + "/authenticate/login", form, timeout=30)
    assert r.geturl() == base + "/browser/", r.geturl()  # redirected under the prefix, not doubled
    req = urllib.request.Request(base + "/browser/server_group/nodes/",
                                 headers={"X-pgA-CSRFToken": csrf, "Accept": "application/json"})
    groups = json.loads(opener.open(req, timeout=30).read())["data"]
    assert lab.pgadmin.GROUP in [g["label"] for g in groups]
    # Socket.IO (the query tool's channel) upgrades to a websocket through the proxy
    from websockets.sync.client import connect
    ws = student_server.url.replace("http://", "ws://") + info.public_url + "socket.io/?EIO=4&transport=websocket"
    with connect(ws, open_timeout=20, additional_headers={"Authorization": f"token {student_server.token}"}) as sock:
        assert sock.recv(timeout=20).startswith("0{")
    # the lab's own check still goes straight to 127.0.0.1
    with urllib.request.urlopen(info.url + "/misc/ping", timeout=10) as r:
        assert r.read() == b"PING"
