"""PostgreSQL Replication Lab: a primary and hot-standby replicas, from Python.

>>> import lab
>>> cluster = lab.up(replicas=1)     # doctest: +SKIP
>>> cluster.status()                 # doctest: +SKIP
"""
from .cluster import Cluster, attach, down, up
from .errors import LabError, NotRunning, ReadOnlyError, SQLError
from .lsn import format_lsn, lsn_diff, parse_lsn
from .node import Node, Role, State

__all__ = ["up", "attach", "down", "Cluster", "Node", "Role", "State", "LabError", "SQLError",
           "ReadOnlyError", "NotRunning", "parse_lsn", "format_lsn", "lsn_diff"]
__version__ = "0.1.0"
