"""The chapters again, on the compose backend: nbval twice in a row in one lab home, on the
private Docker engine (the local backend's runs are `make test`'s scripts/test-notebooks.sh).
Every chapter is taken, as the local runs take the whole notebooks/ directory: each
``notebooks/[0-9][0-9]_*.ipynb``, a new one included without a change here.

Under `make test` this test runs in a pytest session of its own beside pytest's tiers and the
local notebooks, on the engine they share (scripts/test-all.sh).

Chapter 03: its base backup is taken in the primary's container, copied out to the lab home, and
copied into a replica container's volume when adopted.  Chapter 05: the proxy listens on the compose
network's gateway, which the replica containers reach.  Chapters 06 and 07: failovers, rejoins and a
switchover move the roles between containers; each node's role file in its volume (lab-role.env)
tells its entrypoint what it is when its container starts again.  Chapter 08: its own cluster
(compose/docker-compose.ha.yml: etcd, Patroni and HAProxy containers) beside the chapters' one.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine import ensure_ha_image

pytestmark = [pytest.mark.compose, pytest.mark.integration]

REPO = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_S = 3600  # one nbval run of every chapter; about 11 min alone, more beside pytest
TAIL_LINES = 30  # of each failed cell's report


def chapters() -> list[Path]:
    return sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def failures(stdout: str) -> str:
    """Each failed notebook cell of an nbval run (pytest -rf): its id, e.g.
    ``notebooks/03_x.ipynb::Cell 12``, and the last lines of its report, which hold the cell's
    error; or the run's last lines if no cell failed (a collection error, a crash)."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", stdout).splitlines()  # nbval's colours
    heads = [(i, m.group(1)) for i, line in enumerate(lines) if (m := re.match(r"^_{3,} (.+?) _{3,}$", line))]
    if not heads:
        return "\n".join(lines[-TAIL_LINES:])
    ends = [i for i, line in enumerate(lines) if re.match(r"^={3,} .* ={3,}$", line)]
    out = []
    for n, (start, name) in enumerate(heads):
        stop = heads[n + 1][0] if n + 1 < len(heads) else next((e for e in ends if e > start), len(lines))
        out += [f"--- {name} (last {TAIL_LINES} lines of its report)", *lines[start + 1:stop][-TAIL_LINES:]]
    summary = [line for line in lines if line.startswith(("FAILED ", "ERROR "))]
    return "\n".join([*out, "--- summary", *summary])


def test_chapters_run_twice_on_compose(docker_engine, tmp_path):
    nbs = chapters()
    assert nbs, f"no notebooks/[0-9][0-9]_*.ipynb in {REPO}"
    ensure_ha_image(docker_engine, REPO)  # chapter 08's etcd, Patroni and HAProxy containers
    env = dict(os.environ, DOCKER_HOST=docker_engine.host, LAB_NODE_IMAGE=docker_engine.images["node"],
               LAB_HA_IMAGE=docker_engine.images["ha"], LAB_BACKEND="compose", LAB_HOME=str(tmp_path / "lab"))
    env.pop("LAB_PORT_CLAIMS", None)  # the notebooks' own claims; released by the wipe below
    try:
        for run in (1, 2):
            r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rf", "--nbval-lax", "--nbval-current-env",
                                "--nbval-cell-timeout=600", "-p", "no:cacheprovider", *map(str, nbs)],
                               env=env, cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
            assert r.returncode == 0, (f"nbval run {run}/2 of {len(nbs)} chapters on compose failed "
                                       f"(exit {r.returncode}):\n{failures(r.stdout)}\n{r.stderr[-2000:]}")
            assert " passed" in r.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([sys.executable, "-m", "lab", "down", "--wipe"], env=env, cwd=REPO, capture_output=True,
                       timeout=300)
