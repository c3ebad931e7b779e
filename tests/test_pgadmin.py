"""pgAdmin 4 without Docker (lab.pgadmin).

The unit tests at the top need nothing.  The ``pgadmin`` tier installs pgAdmin 4 into its own
environment (.venv-pgadmin, about a minute the first time) unless it is there already, and skips
with the reason when it cannot (no network to PyPI, no venv module; LAB_PGADMIN_INSTALL=0 skips
the install); then it runs pgAdmin against a real primary + replica, logs in over HTTP with the
generated login and reads the servers through pgAdmin's own API.
"""
from __future__ import annotations

import http.cookiejar
import json
import os
import re
import socket
import stat
import types
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

import lab
from lab import pgadmin as pga
from lab.backends.apps import LocalApps
from lab.services import pgadmin as pgadmin_service
from lab.system import ports
from lab.system.home import LabHome


# --------------------------------------------------------------------------
# unit: what pgAdmin is given
# --------------------------------------------------------------------------

NODES = [("primary", "primary", "127.0.0.1", 25001), ("replica1", "replica", "127.0.0.1", 25002)]


def test_servers_json_lists_every_node_without_password():
    doc = pga.render_servers(NODES, username="admin", maintenance_db="crypto_db")
    servers = list(doc["Servers"].values())
    assert [s["Name"] for s in servers] == ["primary", "replica1"]
    assert [s["Port"] for s in servers] == [25001, 25002]
    for s, (_, role, _, port) in zip(servers, NODES):
        # what pgAdmin's load-servers requires: Group, Name, an integer Port
        assert s["Group"] == pga.GROUP and isinstance(s["Port"], int)
        assert s["Host"] == "127.0.0.1"
        assert s["MaintenanceDB"] == "crypto_db" and s["Username"] == "admin"
        assert role in s["Comment"] and str(port) in s["Comment"]
        assert s["ConnectionParameters"]["passfile"] == "/pgpass"
    text = json.dumps(doc).lower()
    assert "password" not in text.replace("passfile", "")
    assert json.loads(json.dumps(doc)) == doc


def test_passfile_line_covers_every_port_and_escapes():
    assert pga.render_passfile("admin", "s3cr:t\\x") == "127.0.0.1:*:*:admin:s3cr\\:t\\\\x\n"


def test_config_keeps_pgadmin_on_loopback_and_in_its_directory(tmp_path):
    ns: dict = {}
    exec(pga.render_config(tmp_path, 23456), ns)
    assert ns["SERVER_MODE"] is True
    assert ns["DEFAULT_SERVER"] == "127.0.0.1" and ns["DEFAULT_SERVER_PORT"] == 23456
    for key in ("DATA_DIR", "LOG_FILE", "SQLITE_PATH", "SESSION_DB_PATH", "STORAGE_DIR"):
        assert Path(ns[key]).is_relative_to(tmp_path), key
    assert ns["UPGRADE_CHECK_ENABLED"] is False
    assert ns["SESSION_COOKIE_NAME"] == "pga4_session_23456"


def test_storage_dir_is_named_as_pgadmin_names_it(tmp_path):
    assert pga.storage_user_dir(tmp_path, "student@lab.example.com") == \
        tmp_path / "storage" / "student_lab.example.com"


def test_without_pgadmin_start_says_how_to_install_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(pgadmin_service, "find_python", lambda: None)
    fake = types.SimpleNamespace(home=LabHome(tmp_path / "home"), _reload=lambda: None, nodes=[],
                                 credentials={"user": "admin", "database": "crypto_db"}, backend=LocalApps())
    with pytest.raises(lab.LabError) as e:
        pga.start(fake, quiet=True)
    msg = str(e.value)
    assert "\n" not in msg and pga.INSTALL_HINT in msg


def test_stop_and_status_of_a_home_without_pgadmin(tmp_path):
    assert pga.stop(tmp_path, quiet=True) is False
    info = pga.status(tmp_path)
    assert not info.running and info.url is None
    assert "stopped" in repr(info) and "stopped" in info._repr_html_()


def test_info_shows_link_email_and_password():
    info = pga.PgAdmin(url="http://127.0.0.1:5050", email=pga.EMAIL, password="pw<1>", port=5050, pid=1,
                       running=True, version="9.18")
    page = info._repr_html_()
    assert "<a href='http://127.0.0.1:5050'" in page and pga.EMAIL in page and "pw&lt;1&gt;" in page
    assert "http://127.0.0.1:5050" in repr(info) and "pw<1>" in repr(info)


def _randint_returning(first: list):
    real = ports.random.randint
    return lambda lo, hi: first.pop(0) if first else real(lo, hi)


def test_random_ports_skip_ports_the_home_already_holds(monkeypatch):
    """pgAdmin's port and the nodes' ports are claimed by one lab home: a random pick must not
    hand one of them back as if it were free."""
    owner = "/home/pgadmin-unit"
    held = ports.claim_free_ports(1, owner)[0]
    try:
        monkeypatch.setattr(ports.random, "randint", _randint_returning([held, held]))
        got = ports.claim_free_ports(1, owner)[0]
        assert got != held
    finally:
        ports.release_all(owner)


def test_pgadmin_never_gets_a_node_port(tmp_path, monkeypatch):
    """Not even a stopped node's (unclaimed) port: the node takes it back at its next start."""
    home = LabHome(tmp_path / "home")
    node_port = ports.claim_free_ports(1, "/home/probe")[0]
    ports.release([node_port], "/home/probe")
    fake = types.SimpleNamespace(home=home, nodes=[types.SimpleNamespace(port=node_port)])
    monkeypatch.setattr(ports.random, "randint", _randint_returning([node_port]))
    try:
        got = pgadmin_service.claim_port(pgadmin_service.service(home), fake, old=node_port)
        assert got != node_port
        assert ports.read_claim(node_port) is None
    finally:
        ports.release_all(home.owner)


# --------------------------------------------------------------------------
# the pgadmin tier: a real pgAdmin on a real cluster
# --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def pgadmin_python():
    python = pga.find_python()
    if python is not None:
        return python
    if os.environ.get("LAB_PGADMIN_INSTALL") == "0":
        pytest.skip("pgAdmin 4 is not installed (LAB_PGADMIN_INSTALL=0: not installing it)")
    try:
        return pga.install(quiet=True)
    except lab.LabError as e:
        pytest.skip(f"pgAdmin 4 is not installed and could not be installed: {str(e).splitlines()[0]}")


@pytest.fixture(scope="module")
def pgadmin_cluster(pgadmin_python, lab_home):
    """The module's cluster with pgAdmin started; pgAdmin is stopped before the cluster is wiped."""
    c = lab.up(replicas=1, home=lab_home, quiet=True)
    yield c
    pga.stop(c, quiet=True)


class Client:
    """pgAdmin's web UI as a browser uses it: a cookie jar, the CSRF token, JSON endpoints."""

    def __init__(self, url: str):
        self.url = url
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        self.token = None

    def login(self, email: str, password: str) -> bool:
        page = self.opener.open(self.url + "/login", timeout=30).read().decode()
        self.token = re.search(r'"csrfToken":\s*"([^"]+)"', page).group(1)
        form = urllib.parse.urlencode({"csrf_token": self.token, "email": email, "password": password,
                                       "language": "en", "internal_button": "Login"}).encode()
        r = self.opener.open(self.url + "/authenticate/login", form, timeout=30)
        return r.geturl().rstrip("/").endswith("/browser")

    def call(self, path: str, body=None):
        req = urllib.request.Request(self.url + path, data=None if body is None else json.dumps(body).encode(),
                                     headers={"X-pgA-CSRFToken": self.token, "Accept": "application/json",
                                              "Content-Type": "application/json"})
        with self.opener.open(req, timeout=60) as r:
            return json.loads(r.read())

    def servers(self) -> dict:
        """name -> server properties, from every server group the user has."""
        out = {}
        for group in self.call("/browser/server_group/nodes/")["data"]:
            try:
                listed = self.call(f"/browser/server/obj/{group['_id']}/")
            except urllib.error.HTTPError:
                continue
            for s in listed:
                out[s["name"]] = s
        return out


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.pgadmin
@pytest.mark.integration
def test_start_login_and_list_the_nodes(pgadmin_cluster, capsys):
    c = pgadmin_cluster
    info = pga.start(c)
    printed = capsys.readouterr().out
    assert info.running and info.url == f"http://127.0.0.1:{info.port}"
    assert info.url in printed and info.email in printed and info.password in printed
    assert info.email == "student@lab.example.com" and len(info.password) >= 20

    client = Client(info.url)
    assert client.login(info.email, info.password), "pgAdmin refused the generated login"
    servers = client.servers()
    for n in c.nodes:
        assert n.name in servers, f"pgAdmin does not list {n.name}: {sorted(servers)}"
        s = servers[n.name]
        assert (s["host"], s["port"], s["username"], s["db"]) == ("127.0.0.1", n.port, "admin", "crypto_db")
        assert n.role.value in s["comment"]
        assert s["group-name"] == pga.GROUP

    # pgAdmin connects with the password file alone (no password in its database)
    for n in c.nodes:
        s = servers[n.name]
        r = client.call(f"/browser/server/connect/{s['gid']}/{s['id']}", body={})
        assert r["success"] == 1, r
        assert r["data"]["in_recovery"] is (n.role == lab.Role.REPLICA)


@pytest.mark.pgadmin
@pytest.mark.integration
def test_files_are_private_and_servers_json_has_no_password(pgadmin_cluster):
    c = pgadmin_cluster
    d = c.home.path / "pgadmin"
    assert _mode(d) == 0o700
    assert _mode(d / "login.json") == 0o600
    login = json.loads((d / "login.json").read_text())
    assert login["email"] == pga.EMAIL and login["password"]
    assert c.credentials["password"] not in (d / "servers.json").read_text()
    assert login["password"] not in (d / "servers.json").read_text()
    passfile = pga.storage_user_dir(d, pga.EMAIL) / "pgpass"
    assert _mode(passfile) == 0o600
    assert login["pids"]["pgadmin"] == pga.status(c).pid


@pytest.mark.pgadmin
@pytest.mark.integration
def test_start_again_reattaches(pgadmin_cluster):
    c = pgadmin_cluster
    first = pga.status(c)
    assert first.running
    again = pga.start(c, quiet=True)
    third = pga.start(lab.attach(c.home.path), quiet=True)
    assert again.url == third.url == first.url
    assert again.pid == third.pid == first.pid
    assert (again.email, again.password) == (first.email, first.password)


@pytest.mark.pgadmin
@pytest.mark.integration
def test_start_again_reloads_the_servers_when_the_cluster_changed(pgadmin_cluster):
    c = pgadmin_cluster
    first = pga.status(c)
    c.add_replica("replica2")
    try:
        info = pga.start(c, quiet=True)
        assert info.pid == first.pid  # the same pgAdmin, servers reloaded in place
        client = Client(info.url)
        assert client.login(info.email, info.password)
        servers = client.servers()
        assert servers["replica2"]["port"] == c.node("replica2").port
    finally:
        c.remove_replica("replica2")
    info = pga.start(c, quiet=True)
    client = Client(info.url)
    assert client.login(info.email, info.password)
    assert sorted(client.servers()) == sorted(n.name for n in c.nodes)


@pytest.mark.pgadmin
@pytest.mark.integration
def test_stop_leaves_no_process_and_no_claim_then_start_keeps_the_login(pgadmin_cluster):
    c = pgadmin_cluster
    before = pga.status(c)
    assert before.running
    assert pga.stop(c, quiet=True) is True
    assert not pga.status(c).running
    assert pga.pgadmin_pids(c.home.path / "pgadmin") == []
    assert "pids" not in json.loads((c.home.path / "pgadmin" / "login.json").read_text())
    assert ports.read_claim(before.port) is None
    assert ports.port_is_free(before.port)
    assert pga.stop(c, quiet=True) is False  # stopping twice is fine

    after = pga.start(c, quiet=True)
    assert (after.email, after.password) == (before.email, before.password)
    assert Client(after.url).login(after.email, after.password)
    assert pga.stop(c, quiet=True) is True
    assert pga.pgadmin_pids(c.home.path / "pgadmin") == []
    assert ports.read_claim(after.port) is None


@pytest.mark.pgadmin
@pytest.mark.integration
def test_failed_start_cleans_up_and_shows_the_log(pgadmin_cluster, monkeypatch):
    c = pgadmin_cluster
    with socket.socket() as busy:  # something else listens on the port pgAdmin is given
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        monkeypatch.setattr(pgadmin_service, "claim_port", lambda run, cluster, old: port)
        with pytest.raises(lab.LabError) as e:
            pga.start(c, quiet=True, timeout=60)
    assert "last lines" in str(e.value)
    assert "in use" in str(e.value).lower() or "address" in str(e.value).lower(), str(e.value)
    assert pga.pgadmin_pids(c.home.path / "pgadmin") == []
    assert "pids" not in json.loads((c.home.path / "pgadmin" / "login.json").read_text())
    assert not pga.status(c).running
