"""One engine for several test sessions at once: ``python -m engine --serve FILE`` starts it, loads
(or builds) the node image, writes ``LAB_TEST_ENGINE_ROOT=<root>`` to FILE, then makes the HA, app
and single-user images ready while the sessions started with that variable already use it
(``PrivateDockerd.attach``) instead of starting their own.  Only one engine can run on a machine at a time (their networks would collide), so
``make test``'s streams (pytest's tiers, the compose notebooks) share this one.

Each session checks that none of ITS containers, networks or volumes is left: those of the compose
projects of the lab homes under its own temporary directory (``pglab-<digest of the lab home>``,
lab/backends/compose.py).  The server, when told to stop (SIGTERM, SIGINT, or its parent gone),
checks that the engine holds nothing at all, stops it, and checks that nothing of it is left on
the host and that the host's firewall rules and forwarding sysctls are as they were.
"""
from __future__ import annotations

import hashlib
import os
import re
import signal
import sys
import time
from pathlib import Path

from .app_image import ensure_app_image
from .engine import PrivateDockerd
from .ha_image import ensure_ha_image
from .host import DockerdError, host_net_state, net_state_changes, say
from .hub_image import ensure_hub_image
from .images import ensure_images
from .pgadmin_image import ensure_pgadmin_image

ROOT_VAR = "LAB_TEST_ENGINE_ROOT"
_PROJECT = re.compile(r"pglab-[0-9a-f]{8}")


def given_engine() -> PrivateDockerd | None:
    """The engine named by ``LAB_TEST_ENGINE_ROOT`` (None when unset); DockerdError if it does not answer."""
    root = os.environ.get(ROOT_VAR)
    return PrivateDockerd.attach(root) if root else None


def lab_projects(under: Path, depth: int = 4) -> set[str]:
    """The compose project names of every directory down to ``depth`` levels below ``under``: the
    lab names a lab home's project after the SHA-1 of its path."""
    found, level = set(), [Path(under)]
    for _ in range(depth + 1):
        nxt = []
        for d in level:
            for p in {str(d), str(d.resolve())}:
                found.add("pglab-" + hashlib.sha1(p.encode()).hexdigest()[:8])
            try:
                nxt += [Path(e.path) for e in os.scandir(d) if e.is_dir(follow_symlinks=False)]
            except OSError:
                pass
        level = nxt
    return found


def project_of(obj: dict) -> str | None:
    """The lab compose project an engine object belongs to: its compose label, else the project
    its name or its ``pglab.tool-of`` label starts with (a tool container, a compose volume)."""
    labels = obj.get("labels") or {}
    if labels.get("com.docker.compose.project"):
        return labels["com.docker.compose.project"]
    for text in (obj.get("name") or "", labels.get("pglab.tool-of") or ""):
        m = _PROJECT.match(text)
        if m:
            return m.group(0)
    return None


def describe(objs) -> list[str]:
    return [f"{o['kind']} {o['name']}" for o in objs]


def more_images(engine: PrivateDockerd, repo, log=say) -> None:
    """The images a few tests ask for (HA: chapter 08, which the compose notebooks reach first; the
    app's; pgAdmin's; the single-user image), loaded or built once, while the streams already run
    on the node image: a test that asks for one meanwhile waits on the cache's lock and then finds
    it loaded, so no two streams build.  One that cannot be made is reported, not fatal: the tests that need
    it try again and fail or skip with their own reason."""
    for name, ensure in (("HA", ensure_ha_image), ("app", ensure_app_image), ("pgAdmin", ensure_pgadmin_image),
                         ("single-user", ensure_hub_image)):
        try:
            ensure(engine, repo, log=log)
        except Exception as e:  # noqa: BLE001  (reported; the tests that need it say why)
            log(f"the {name} image is not ready ({type(e).__name__}: {str(e)[-500:]}); its tests will try again")


def serve(envfile: Path, repo, log=say) -> int:
    """Start an engine with the node image, announce it in ``envfile``, make the other images
    ready, and keep it until SIGTERM or SIGINT (or until the parent process is gone); then stop
    it.  Exit status 0 when it held nothing at the end and left nothing behind, 1 when it did
    (said on stderr), 2 when it could not start, 130 when interrupted before it was announced."""
    phase, stop = ["starting"], []  # starting -> building (announced) -> serving

    def on_signal(signum, frame):
        if phase[0] != "serving":  # a cold build takes minutes: do not make Ctrl-C wait for it
            raise KeyboardInterrupt(f"signal {signum}")
        stop.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    # Started in the background by a script, SIGINT is ignored: Ctrl-C reaches the whole process
    # group, and the engine must outlive the sessions' teardown (the script sends SIGTERM after).
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, on_signal)
    parent = os.getppid()
    before = host_net_state()
    engine = PrivateDockerd()
    problems = []
    try:
        t0 = time.monotonic()
        try:
            engine.start()
            engine.images = ensure_images(engine, repo, log=log)
        except DockerdError as e:
            log(f"the shared engine could not start: {e}")
            return 2
        tmp = envfile.with_name(f".{envfile.name}.tmp")
        tmp.write_text(f"{ROOT_VAR}={engine.root}\n")
        os.replace(tmp, envfile)  # whole or absent: the caller waits for it
        phase[0] = "building"
        log(f"shared engine ready in {time.monotonic() - t0:.1f} s: {engine.host}")
        more_images(engine, repo, log)
        phase[0] = "serving"
        while not stop and os.getppid() == parent:
            time.sleep(0.5)
    except KeyboardInterrupt:
        if phase[0] == "starting":
            log("interrupted before the engine was ready: stopping it")
            engine.stop()
            return 130
        log("told to stop while the images were still being made")
    try:
        left = engine.objects()
    except (DockerdError, OSError, ValueError) as e:
        left, problems = [], [f"the engine did not answer at the end: {e}"]
    finally:
        engine.stop()
    if left:
        problems.append("the test sessions left in the shared engine: " + ", ".join(describe(left)))
    problems += engine.leftovers() + net_state_changes(before, host_net_state())
    if problems:
        print("the shared Docker engine left things behind: " + "; ".join(problems), file=sys.stderr)
        return 1
    log("shared engine stopped; nothing left behind")
    return 0
