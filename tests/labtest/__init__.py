"""The test suite's own machinery, loaded by tests/conftest.py through ``pytest_plugins``.

    session    what marks this test session (its port-claims directory, an environment
               variable every process it starts inherits); imported first
    helpers    plain functions tests import: ``insert``, ``rows_with``, ``postmasters``, and
               the scans that find this session's processes
    clusters   the cluster fixtures (``lab_home``, ``cluster``, ``two``, ``fresh_cluster``, ...)
    tiers      the tier guard: a test that starts a PostgreSQL server without the
               ``integration`` marker fails
    leftovers  the session finalizer: the session fails if a server, pgAdmin, app process or
               port claim of the tests is left when it ends
    browser    headless Chromium for tests that load pages (DevTools protocol)
    fuzz       the public API's property-based test machinery (wrong values, targets, the
               watchdog), shared by test_public_api.py and test_public_api_ha.py
"""
