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
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from engine import PrivateDockerd, availability, ensure_images

REPO = Path(__file__).resolve().parent.parent

SYSCTLS = ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding", "net/ipv4/conf/all/route_localnet",
           "net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables")


def host_net_state() -> dict:
    """The host's firewall rules (every iptables flavour present) and forwarding sysctls,
    without comments and packet counters, to compare before and after."""
    state = {}
    for tool in ("iptables-save", "ip6tables-save", "iptables-legacy-save", "ip6tables-legacy-save"):
        path = shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
        if not path:
            continue
        r = subprocess.run([path], capture_output=True, text=True, timeout=30)
        state[tool] = [re.sub(r"\[\d+:\d+\]", "", line) for line in r.stdout.splitlines()
                       if line.strip() and not line.startswith("#")]
    for name in SYSCTLS:
        try:
            state[name] = Path("/proc/sys", name).read_text().strip()
        except OSError:
            state[name] = None
    return state


def net_state_changes(before: dict, after: dict) -> list[str]:
    out = []
    for k in sorted(set(before) | set(after)):
        if before.get(k) != after.get(k):
            b, a = before.get(k), after.get(k)
            if isinstance(b, list) and isinstance(a, list):
                out.append(f"{k}: +{sorted(set(a) - set(b))} -{sorted(set(b) - set(a))}")
            else:
                out.append(f"{k}: {b!r} -> {a!r}")
    return out


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


@pytest.fixture(scope="session")
def docker_engine(request):
    require_compose_tier()
    plugins = request.config.pluginmanager
    reporter, capture = plugins.getplugin("terminalreporter"), plugins.getplugin("capturemanager")

    def progress(msg):  # shown live, even under output capture: a cold build takes a minute
        if reporter is None:
            return
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.write_line(f"pglab-dockerd: {msg}")

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
