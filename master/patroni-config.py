#!/usr/bin/env python3
"""Print a Patroni node's configuration (JSON, which Patroni reads as YAML) from the environment.

One generator for both backends: ``node_config`` holds what every member shares (dynamic
settings ttl 20, loop_wait 2, retry_timeout 5, pg_rewind, slots; this directory's
postgresql.conf minus what Patroni sets itself; initdb options, fast base backups,
scram-sha-256, no watchdog), and the lab's local backend (lab/backends/patroni.py) imports it
from this file.  What differs is only where things are: in a container every address is a
service name on the compose network, on one machine 127.0.0.1 and the lab's ports.
master/patroni-entrypoint.sh runs this file.

Environment (only the standard library is used; the image's PATH finds the server binaries):
  NODE_NAME                 this member's name (default: the host name)
  NODE_HOST                 its address for the others (default: NODE_NAME)
  PGDATA                    data directory (required)
  POSTGRES_USER, POSTGRES_PASSWORD          superuser (default admin; password required)
  REPLICATION_USER, REPLICATION_PASSWORD    replication role (default replicator; required)
  REST_USER, REST_PASSWORD  login of Patroni's REST API for changes (default patroni; required)
  ETCD_HOSTS                etcd members, host:port,... (default etcd1:2379,etcd2:2379,etcd3:2379)
  ETCD_USER, ETCD_ROOT_PASSWORD             etcd's login (default root; password required)
  PATRONI_CLUSTER           the cluster's scope (default lab)
  PG_POST_BOOTSTRAP         a script run once on the new cluster (default: none)
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Patroni refuses a ttl under 20 s; loop_wait + 2 * retry_timeout must stay under ttl.
DCS = {"ttl": 20, "loop_wait": 2, "retry_timeout": 5, "maximum_lag_on_failover": 1048576,
       "primary_start_timeout": 300}
# Set by Patroni itself, or meaningless under it (it writes the servers' configuration).
NOT_PASSED = {"listen_addresses", "port", "include_if_exists", "logging_collector", "log_destination",
              "synchronous_standby_names", "hot_standby_feedback"}


def master_parameters(conf: Path = HERE / "postgresql.conf") -> dict:
    """``postgresql.conf`` as a dict (name: value as written, quotes removed), without what
    Patroni sets itself."""
    out = {}
    for line in conf.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "=" not in line:
            continue
        k, v = (x.strip() for x in line.split("=", 1))
        if k in NOT_PASSED or not k:
            continue
        out[k] = v[1:-1] if len(v) >= 2 and v[0] == v[-1] == "'" else v
    return out


def need(name: str, env=os.environ) -> str:
    value = env.get(name, "")
    if not value:
        sys.exit(f"patroni-config: set {name} (the lab generates the secrets of a cluster)")
    return value


def node_config(*, name: str, pgdata: str, superuser: str, superuser_password: str, replication_user: str,
                replication_password: str, rest_user: str, rest_password: str, etcd_hosts: "list[str]",
                etcd_user: str, etcd_password: str, host: "str | None" = None, listen_host: str = "0.0.0.0",
                pg_port: int = 5432, rest_port: int = 8008, bin_dir: "str | None" = None,
                pgpass: str = "/tmp/pgpass", clients: str = "samenet", use_proxies: bool = False,
                parameters: "dict | None" = None, dcs: "dict | None" = None, scope: str = "lab",
                namespace: str = "/service", post_bootstrap: "str | None" = None,
                conf: Path = HERE / "postgresql.conf") -> dict:
    """One Patroni member's configuration: the settings every node shares (dynamic ones, the
    PostgreSQL parameters of ``conf``, initdb, authentication, fast base backups, no watchdog),
    placed where the caller says.  The containers (``config`` below) and the lab's local backend
    (lab/backends/patroni.py) both build theirs here.

    ``clients``: the address pg_hba.conf lets in (``samenet`` on a compose network, 127.0.0.1/32
    on one machine); ``use_proxies``: ``etcd_hosts`` are the only way to etcd (no discovery);
    ``parameters``: the node's own (log files, socket directory); ``dcs``: dynamic settings over
    the defaults."""
    host = host or name
    if bin_dir is None:
        bin_dir = str(Path(shutil.which("postgres") or "/usr/lib/postgresql/15/bin/postgres").parent)
    dynamic = dict(DCS, **(dcs or {}))
    dynamic["postgresql"] = {"use_pg_rewind": True, "use_slots": True, "parameters": master_parameters(conf)}
    hba = ["local all all scram-sha-256", f"host all all {clients} scram-sha-256",
           f"host replication {replication_user} {clients} scram-sha-256"]
    bootstrap = {"dcs": dynamic, "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, "data-checksums"]}
    if post_bootstrap:
        bootstrap["post_bootstrap"] = post_bootstrap
    etcd = {"hosts": list(etcd_hosts), "username": etcd_user, "password": etcd_password}
    if use_proxies:
        etcd["use_proxies"] = True
    return {
        "scope": scope, "namespace": namespace, "name": name,
        "log": {"level": "INFO", "format": "%(asctime)s %(levelname)s: %(message)s"},
        "restapi": {"listen": f"{listen_host}:{rest_port}", "connect_address": f"{host}:{rest_port}",
                    "authentication": {"username": rest_user, "password": rest_password}},
        "etcd3": etcd,
        "bootstrap": bootstrap,
        "postgresql": {
            "listen": f"{listen_host}:{pg_port}", "connect_address": f"{host}:{pg_port}",
            "data_dir": pgdata, "bin_dir": bin_dir, "pgpass": pgpass,
            "authentication": {
                "superuser": {"username": superuser, "password": superuser_password},
                "replication": {"username": replication_user, "password": replication_password},
                "rewind": {"username": superuser, "password": superuser_password}},
            "parameters": dict(parameters or {}),
            "pg_hba": hba,
            # a new replica's base backup asks for an immediate checkpoint, not a spread one
            "basebackup": [{"checkpoint": "fast"}]},
        "watchdog": {"mode": "off"},
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
    }


def config(env=os.environ) -> dict:
    """A container's configuration, from its environment (the list at the top)."""
    name = env.get("NODE_NAME") or socket.gethostname()
    return node_config(
        name=name, host=env.get("NODE_HOST") or name, pgdata=need("PGDATA", env),
        superuser=env.get("POSTGRES_USER") or "admin", superuser_password=need("POSTGRES_PASSWORD", env),
        replication_user=env.get("REPLICATION_USER") or "replicator",
        replication_password=need("REPLICATION_PASSWORD", env),
        rest_user=env.get("REST_USER") or "patroni", rest_password=need("REST_PASSWORD", env),
        etcd_hosts=(env.get("ETCD_HOSTS") or "etcd1:2379,etcd2:2379,etcd3:2379").split(","),
        etcd_user=env.get("ETCD_USER") or "root", etcd_password=need("ETCD_ROOT_PASSWORD", env),
        # the nodes and the published ports (docker-proxy connects from the network's gateway) share
        # one subnet: nothing from elsewhere gets in
        clients="samenet",
        # logs go to stderr: `docker logs` shows Patroni's and PostgreSQL's together
        parameters={"unix_socket_directories": "/var/run/postgresql", "logging_collector": "off",
                    "log_destination": "stderr"},
        scope=env.get("PATRONI_CLUSTER") or "lab", post_bootstrap=env.get("PG_POST_BOOTSTRAP"))


if __name__ == "__main__":
    print(json.dumps(config(), indent=2))
