"""Chapter 09's self-checks (logical replication and change data capture)."""
from __future__ import annotations
