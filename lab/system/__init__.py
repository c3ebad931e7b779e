"""The machine the lab runs on: its home on disk, ports, the server user, binaries, processes.

Imports nothing of the lab above it (only ``lab.errors``): the backends, services and
chapters build on it.
"""
