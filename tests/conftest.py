"""Shared fixtures.  Every cluster a test makes lives in its own lab home under pytest's
temp dir and is wiped at teardown; tests/test_zz_leftovers.py checks nothing remains."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Port claims of this test session go to their own directory, so the last test can
# check that none is left (the servers still check the port is really free).
_CLAIMS = Path(tempfile.mkdtemp(prefix="pglab-test-claims-"))
os.environ["LAB_PORT_CLAIMS"] = str(_CLAIMS)
os.environ.pop("LAB_HOME", None)
# Tests choose their backend; by default the local one, even where Docker runs.
os.environ.setdefault("LAB_BACKEND", "local")


def postmasters() -> dict[int, str]:
    """pid -> data directory of every running postgres postmaster on this host (Linux /proc)."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
            if not cmd or not cmd[0].endswith(b"postgres") or b"-D" not in cmd:
                continue
            out[int(d.name)] = os.readlink(d / "cwd")
        except OSError:
            continue
    return out


_BEFORE = postmasters()


def insert(node, text) -> int:
    """INSERT one row into test_replication (the original course's table) on ``node``."""
    return node.execute("INSERT INTO test_replication (mensaje) VALUES (%s)", (text,))


def rows_with(node, text) -> int:
    return node.scalar("SELECT count(*) FROM test_replication WHERE mensaje = %s", (text,))


@pytest.fixture(scope="session")
def claims_dir() -> Path:
    return _CLAIMS


@pytest.fixture(scope="session")
def postmasters_before() -> dict[int, str]:
    return dict(_BEFORE)


@pytest.fixture(scope="module")
def lab_home(tmp_path_factory):
    """A lab home with a primary + one replica for a test module; wiped afterwards."""
    import lab

    home = tmp_path_factory.mktemp("lab")
    lab.up(replicas=1, home=home, quiet=True)
    yield home
    lab.down(wipe=True, home=home)


@pytest.fixture
def cluster(lab_home):
    """The module's cluster, re-attached; up() starts whatever an earlier test left stopped."""
    import lab

    return lab.up(replicas=1, home=lab_home, quiet=True)


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """A primary + two replicas for a test module; what chapter 05 changes (proxies, synchronous
    standbys) is put back, then it is wiped."""
    import lab
    from lab import sync

    home = tmp_path_factory.mktemp("lab")
    c = lab.up(replicas=2, home=home, quiet=True)
    yield c
    try:
        sync.tidy(c)
    finally:
        lab.down(wipe=True, home=home)


@pytest.fixture
def fresh_cluster(tmp_path):
    """A primary + one replica for one destructive test; wiped afterwards."""
    import lab

    c = lab.up(replicas=1, home=tmp_path / "lab", quiet=True)
    yield c
    lab.down(wipe=True, home=tmp_path / "lab")


try:  # the private Docker engine tier (tests/docker_fixtures.py), where present
    from docker_fixtures import docker_engine  # noqa: F401
except ImportError:
    @pytest.fixture(scope="session")
    def docker_engine():
        pytest.skip("the compose tier needs tests/docker_fixtures.py (a private Docker engine)")
