"""The crypto app as compose's ``web-app`` (compose/app.Dockerfile) on a private Docker engine:
API and dashboard published on 127.0.0.1, the nodes reached by service name inside
``distribuidos-net``, the token from the lab's env file.  Also: the app as host processes
(lab.webapp) on the compose backend's published ports."""
from __future__ import annotations

import os
import stat

import httpx
import pytest

import lab
import lab.backends.pgconf
import lab.system.paths
import lab.webapp
from lab.system import ports

from docker_fixtures import compose_env
from engine import ensure_app_image

pytestmark = [pytest.mark.integration, pytest.mark.compose]


@pytest.fixture(scope="module")
def app_cluster(docker_engine, tmp_path_factory):
    image = ensure_app_image(docker_engine, lab.system.paths.REPO)
    home = tmp_path_factory.mktemp("app-compose") / "lab"
    with compose_env(docker_engine, LAB_APP_IMAGE=image):
        c = lab.up(replicas=1, home=home, quiet=True, backend="compose")
        try:
            yield c
        finally:
            lab.down(wipe=True, home=home)
            client = docker_engine.client()
            try:
                left = [x.name for x in client.containers.list(
                    all=True, filters={"label": "com.docker.compose.project=" + c._state["compose"]["project"]})]
            finally:
                client.close()
            assert left == [], f"containers left after down(wipe=True): {left}"
            assert ports.claims_of(c.home.owner) == []


def test_web_app_serves_the_api_from_replicas_and_the_dashboard(app_cluster):
    c = app_cluster
    info = c.backend.start_webapp(quiet=True)
    token = c._state["compose"]["app_token"]
    env_file = c._state["compose"]["env_file"]
    assert stat.S_IMODE(os.stat(env_file).st_mode) == 0o600
    assert f"APP_API_TOKEN={token}\n" in open(env_file).read() and len(token) >= 24
    assert info.login == {"token": token}
    with httpx.Client(base_url=info.urls["api"], timeout=10) as api:
        health = api.get("/health")
        assert health.status_code == 200, health.text
        assert api.get("/docs").status_code == 200
        prices = api.get("/prices/BTC", params={"limit": 5})
        assert prices.status_code == 200, prices.text
        assert prices.json()["prices"], "no back-filled history"
        # served inside the network by the replica service, under its node name
        assert prices.headers["X-Served-Role"] == "replica"
        assert prices.headers["X-Served-By"] == "replica1"
        tick = {"ticks": [{"symbol": "BTC", "price": 61234.5}]}
        assert api.post("/ticks", json=tick).status_code == 401
        assert api.post("/ticks", json=tick, headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
        ok = api.post("/ticks", json=tick, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 201, ok.text
        assert "/" in ok.json()["lsn"]
        nodes = api.get("/cluster").json()["nodes"]
        # one naming on both backends: the primary is its node, "primary", as locally (not its service)
        assert sorted((n["node"], n["role"]) for n in nodes) == [("primary", "primary"), ("replica1", "replica")]
        ok_by = api.post("/ticks", json=tick, headers={"Authorization": f"Bearer {token}"}).json()["primary"]
        assert ok_by == "primary"
    with httpx.Client(base_url=info.urls["dashboard"], timeout=10) as dash:
        assert dash.get("/_stcore/health").text.strip() == "ok"
        page = dash.get("/")
        assert page.status_code == 200 and "streamlit" in page.text.lower()
    # the token is the lab's, not the image's: nothing secret is baked in
    image_env = c.backend.client.images.get(os.environ["LAB_APP_IMAGE"]).attrs["Config"]["Env"]
    assert not [e for e in image_env if e.startswith(("APP_API_TOKEN", "PGPASSWORD"))]
    api_port, dash_port = c._state["compose"]["app_ports"]
    assert set(ports.claims_of(c.home.owner)) >= {api_port, dash_port}

    assert c.backend.stop_webapp() is True
    assert c.backend.container({"container": c._state["compose"]["prefix"] + "web-app"}) is None
    assert not {api_port, dash_port} & set(ports.claims_of(c.home.owner))
    assert c.backend.stop_webapp() is False


def test_host_processes_app_works_on_the_compose_ports(app_cluster):
    """lab.webapp.start on the compose backend: the app runs on the host and reaches the
    containers through their 127.0.0.1 ports."""
    c = app_cluster
    info = lab.webapp.start(c, quiet=True, feed=False)
    try:
        assert info.running
        df = lab.webapp.reads(c, n=6)
        assert set(df["status"]) == {200}
        assert set(df["role"]) == {"replica"}
        assert lab.webapp.write(c)["status"] == 201
    finally:
        lab.webapp.stop(c, quiet=True)
    assert not lab.webapp.status(c).running
