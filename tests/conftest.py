"""The suite's root.  The session's environment is set first (labtest/session.py: its own port
claims directory, a mark every process it starts inherits, no student LAB_HOME); the fixtures and
hooks live in plugins (tests/README.md):

    labtest.clusters   lab_home, cluster, two, fresh_cluster, claims_dir
    labtest.tiers      a test that starts PostgreSQL servers without ``integration`` fails
    labtest.leftovers  the session fails if a server, service or port claim of the tests is left
    docker_fixtures    the compose tier's private Docker engine (docker_engine)
    app_fixtures       the crypto app's clusters and processes

Helpers tests import: ``from labtest.helpers import insert, rows_with, postmasters``."""
from labtest import session  # noqa: F401  (first: the environment, before anything imports lab)

import pytest

from lab import i18n

pytest_plugins = [
    "labtest.clusters",
    "labtest.tiers",
    "labtest.leftovers",
    "docker_fixtures",
    "app_fixtures",
]


@pytest.fixture(autouse=True)
def _lab_speaks_english(monkeypatch):
    """Every test starts with the lab in English, whatever an earlier test chose or the environment
    says (a test that wants Spanish sets LAB_LANG or calls lab.set_language itself)."""
    monkeypatch.delenv("LAB_LANG", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    i18n.set_language(None)
    yield
    i18n.set_language(None)


@pytest.fixture
def spanish(_lab_speaks_english):
    """The lab in Spanish for this test (the autouse fixture above puts English back)."""
    i18n.set_language("es")
    yield
