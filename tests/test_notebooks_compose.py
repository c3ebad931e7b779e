"""The chapters again, on the compose backend: nbval twice in a row in one lab home, on the
private Docker engine (the local backend's runs are `make test`'s scripts/test-notebooks.sh).

Chapter 03: its base backup is taken in the primary's container, copied out to the lab home, and
copied into a replica container's volume when adopted.  Chapter 05: the proxy listens on the compose
network's gateway, which the replica containers reach.  Chapters 06 and 07: failovers, rejoins and a
switchover move the roles between containers; each node's role file in its volume (lab-role.env)
tells its entrypoint what it is when its container starts again.  Chapter 08: its own cluster
(compose/docker-compose.ha.yml: etcd, Patroni and HAProxy containers) beside the chapters' one.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.compose, pytest.mark.integration]

REPO = Path(__file__).resolve().parent.parent
CHAPTERS = ["00_start_here", "01_primary_and_replica", "02_wal", "03_base_backups_and_slots", "04_hot_standby",
            "05_lag_and_sync_commit", "06_failover", "07_crypto_app", "08_automatic_failover"]


def test_chapters_run_twice_on_compose(docker_engine, tmp_path):
    from engine import ensure_ha_image

    ensure_ha_image(docker_engine, REPO)  # chapter 08's etcd, Patroni and HAProxy containers
    env = dict(os.environ, DOCKER_HOST=docker_engine.host, LAB_NODE_IMAGE=docker_engine.images["node"],
               LAB_HA_IMAGE=docker_engine.images["ha"], LAB_BACKEND="compose", LAB_HOME=str(tmp_path / "lab"))
    env.pop("LAB_PORT_CLAIMS", None)  # the notebooks' own claims; released by the wipe below
    nbs = [str(REPO / "notebooks" / f"{c}.ipynb") for c in CHAPTERS]
    try:
        for run in (1, 2):
            r = subprocess.run([sys.executable, "-m", "pytest", "-q", "--nbval-lax", "--nbval-current-env",
                                "-p", "no:cacheprovider", *nbs], env=env, cwd=REPO, capture_output=True,
                               text=True, timeout=2400)
            assert r.returncode == 0, f"nbval run {run} on compose failed:\n{r.stdout[-4000:]}"
            assert " passed" in r.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([sys.executable, "-m", "lab", "down", "--wipe"], env=env, cwd=REPO, capture_output=True,
                       timeout=300)
