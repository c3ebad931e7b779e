"""Where a backend runs the lab's apps (pgAdmin, the crypto app): part of the Backend contract.

The compose backend runs them as services of its compose project (``compose_apps.py``); a
backend that has no place of its own for them (local) leaves them to ``lab.services``, which
runs them as supervised processes of this machine.
"""
from __future__ import annotations


class LocalApps:
    """Mixed into backends whose apps run as local processes (lab.services supervises them)."""
