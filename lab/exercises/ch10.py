"""Chapter 10's self-checks (WAL archive, point-in-time recovery, cascading replicas)."""
from __future__ import annotations
