"""Chapter 09: logical replication and change data capture (being written)."""
from __future__ import annotations
