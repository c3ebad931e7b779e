"""The cluster fixtures.  Every cluster a test makes lives in its own lab home under pytest's
temp dir and is wiped at teardown (the leftovers check, labtest/leftovers.py, fails the session
if a server is left).  A test that uses one of them starts servers: mark it ``integration``."""
from __future__ import annotations

from pathlib import Path

import pytest

import lab
from lab import sync
from labtest.session import CLAIMS


@pytest.fixture(scope="session")
def claims_dir() -> Path:
    """This session's port-claims directory (``LAB_PORT_CLAIMS``)."""
    return CLAIMS


@pytest.fixture(scope="module")
def lab_home(tmp_path_factory):
    """A lab home with a primary + one replica for a test module; wiped afterwards."""
    home = tmp_path_factory.mktemp("lab")
    lab.up(replicas=1, home=home, quiet=True)
    yield home
    lab.down(wipe=True, home=home)


@pytest.fixture
def cluster(lab_home):
    """The module's cluster, re-attached; up() starts whatever an earlier test left stopped."""
    return lab.up(replicas=1, home=lab_home, quiet=True)


@pytest.fixture(scope="module")
def two(tmp_path_factory, request):
    """A primary + two replicas for a test module; what the chapter changes is put back (the
    module's ``TIDY``, by default chapter 05's ``sync.tidy``: proxies, synchronous standbys), then
    it is wiped."""
    tidy = getattr(request.module, "TIDY", sync.tidy)
    home = tmp_path_factory.mktemp("lab")
    c = lab.up(replicas=2, home=home, quiet=True)
    yield c
    try:
        tidy(c)
    finally:
        lab.down(wipe=True, home=home)


@pytest.fixture
def fresh_cluster(tmp_path):
    """A primary + one replica for one destructive test; wiped afterwards."""
    c = lab.up(replicas=1, home=tmp_path / "lab", quiet=True)
    yield c
    lab.down(wipe=True, home=tmp_path / "lab")
