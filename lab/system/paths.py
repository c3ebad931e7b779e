"""Where the repository's own files are: the scripts and configuration every backend runs."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MASTER_DIR = REPO / "master"
REPLICA_DIR = REPO / "replica"
COMPOSE_DIR = REPO / "compose"
