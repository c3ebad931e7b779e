"""Fixtures of the compose tier: a private Docker engine with the lab's images.

Hooked in by tests/conftest.py (``from docker_fixtures import docker_engine``, or
``pytest_plugins = ["docker_fixtures"]``).

``docker_engine`` (session): an ``engine.PrivateDockerd`` (tests/engine/) that answers, with ``.host``
(``unix://...``), ``.env()`` (os.environ + DOCKER_HOST, for docker-compose and the docker CLI),
``.images`` (``{"base": ..., "node": ...}``), ``.docker(*args)`` (the CLI against it) and
``.client()`` (a docker SDK client).  The first use in a session starts the engine and loads the
images from ``~/.cache/pglab/docker-images/`` (seconds) or builds them (about a minute, once per machine).
The test that asks for it is skipped, with the reason, where the tier cannot run (not root, no
docker.io/docker-compose/debootstrap, ...: see ``engine.availability``).  At the end of the
session everything is stopped and removed, and teardown fails if anything of the engine is left
or the host's firewall rules or forwarding sysctls changed.

Given ``LAB_TEST_ENGINE_ROOT`` (scripts/test-all.sh runs ``python -m engine --serve``, whose engine
the compose notebooks use at the same time), the session uses that engine instead and leaves it
running; its teardown then fails if a container, network or volume of a compose project of this
session's lab homes (those under its temporary directory) is left.  The server checks the rest
(the engine empty, nothing of it on the host) when it stops.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from engine import DockerdError, PrivateDockerd, availability, ensure_images, host_net_state, net_state_changes
from engine.shared import ROOT_VAR, describe, given_engine, lab_projects, project_of

REPO = Path(__file__).resolve().parent.parent

@contextlib.contextmanager
def compose_env(engine, **extra):
    """DOCKER_HOST and the node image of the private engine (and ``extra`` variables, e.g.
    LAB_APP_IMAGE=...) in os.environ for a while; the earlier values come back afterwards."""
    new = {"DOCKER_HOST": engine.host, "LAB_NODE_IMAGE": engine.images["node"], **extra}
    saved = {k: os.environ.get(k) for k in new}
    os.environ.update(new)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def require_compose_tier() -> None:
    ok, why = availability()
    if not ok:
        pytest.skip(f"compose tier: {why}")


def _ours(engine: PrivateDockerd, basetemp: Path) -> list[dict]:
    """The containers, networks and volumes of the compose projects of lab homes under ``basetemp``:
    named after a directory there, or whose containers' env file (in the lab home) is there."""
    objs = engine.objects()
    projects = lab_projects(basetemp) | {
        project_of(o) for o in objs
        if o["labels"].get("com.docker.compose.project.environment_file", "").startswith(f"{basetemp}/")}
    return [o for o in objs if project_of(o) in projects]


@pytest.fixture(scope="session")
def docker_engine(request, tmp_path_factory):
    require_compose_tier()
    plugins = request.config.pluginmanager
    reporter, capture = plugins.getplugin("terminalreporter"), plugins.getplugin("capturemanager")

    def progress(msg):  # shown live, even under output capture: a cold build takes a minute
        if reporter is None:
            return
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.write_line(f"pglab-dockerd: {msg}")

    try:
        shared = given_engine()
    except DockerdError as e:
        pytest.fail(f"{ROOT_VAR}={os.environ.get(ROOT_VAR)}: {e}", pytrace=False)
    if shared is not None:
        shared.images = ensure_images(shared, REPO, log=progress)  # loaded by its server: a label check
        yield shared
        left = _ours(shared, tmp_path_factory.getbasetemp())
        assert not left, f"this session's compose projects left in the shared engine: {describe(left)}"
        return
    before = host_net_state()
    engine = PrivateDockerd()
    try:
        engine.start()
        engine.images = ensure_images(engine, REPO, log=progress)
    except BaseException:
        engine.stop()
        raise
    yield engine
    engine.stop()
    problems = engine.leftovers() + net_state_changes(before, host_net_state())
    assert not problems, f"the private Docker engine left things behind: {problems}"
