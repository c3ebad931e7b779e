"""Chapter 10: the WAL archive, point-in-time recovery and cascading replicas (being written)."""
from __future__ import annotations
