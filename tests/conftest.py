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

pytest_plugins = [
    "labtest.clusters",
    "labtest.tiers",
    "labtest.leftovers",
    "docker_fixtures",
    "app_fixtures",
]
