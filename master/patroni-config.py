#!/usr/bin/env python3
"""Print a Patroni node's configuration (JSON, which Patroni reads as YAML) from the environment.

The container twin of the lab's local backend (lab/backends/patroni.py, ``patroni_config``): the
same dynamic settings (ttl 20, loop_wait 2, retry_timeout 5, pg_rewind, slots), the same
PostgreSQL parameters (this directory's postgresql.conf, minus what Patroni sets itself), initdb
options, fast base backups, scram-sha-256 and no watchdog.  What differs is only where things
are: every address is a service name on the compose network instead of 127.0.0.1.
master/patroni-entrypoint.sh runs it; tests/test_ha_compose.py checks it against the local one.

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
# The same as lab/backends/patroni.py: DEFAULT_DCS and _NOT_PASSED.
DCS = {"ttl": 20, "loop_wait": 2, "retry_timeout": 5, "maximum_lag_on_failover": 1048576,
       "primary_start_timeout": 300}
NOT_PASSED = {"listen_addresses", "port", "include_if_exists", "logging_collector", "log_destination",
              "synchronous_standby_names", "hot_standby_feedback"}


def master_parameters(conf: Path = HERE / "postgresql.conf") -> dict:
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


def need(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        sys.exit(f"patroni-config: set {name} (the lab generates the secrets of a cluster)")
    return value


def config(env=os.environ) -> dict:
    name = env.get("NODE_NAME") or socket.gethostname()
    host = env.get("NODE_HOST") or name
    postgres = shutil.which("postgres") or "/usr/lib/postgresql/15/bin/postgres"
    superuser = env.get("POSTGRES_USER") or "admin"
    replication_user = env.get("REPLICATION_USER") or "replicator"
    dcs = dict(DCS, postgresql={"use_pg_rewind": True, "use_slots": True, "parameters": master_parameters()})
    # the nodes and the published ports (docker-proxy connects from the network's gateway) share
    # one subnet: nothing from elsewhere gets in
    hba = ["local all all scram-sha-256", "host all all samenet scram-sha-256",
           f"host replication {replication_user} samenet scram-sha-256"]
    bootstrap = {"dcs": dcs, "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, "data-checksums"]}
    if env.get("PG_POST_BOOTSTRAP"):
        bootstrap["post_bootstrap"] = env["PG_POST_BOOTSTRAP"]
    return {
        "scope": env.get("PATRONI_CLUSTER") or "lab", "namespace": "/service", "name": name,
        "log": {"level": "INFO", "format": "%(asctime)s %(levelname)s: %(message)s"},
        "restapi": {"listen": "0.0.0.0:8008", "connect_address": f"{host}:8008",
                    "authentication": {"username": env.get("REST_USER") or "patroni",
                                       "password": need("REST_PASSWORD")}},
        "etcd3": {"hosts": (env.get("ETCD_HOSTS") or "etcd1:2379,etcd2:2379,etcd3:2379").split(","),
                  "username": env.get("ETCD_USER") or "root", "password": need("ETCD_ROOT_PASSWORD")},
        "bootstrap": bootstrap,
        "postgresql": {
            "listen": "0.0.0.0:5432", "connect_address": f"{host}:5432",
            "data_dir": need("PGDATA"), "bin_dir": str(Path(postgres).parent), "pgpass": "/tmp/pgpass",
            "authentication": {
                "superuser": {"username": superuser, "password": need("POSTGRES_PASSWORD")},
                "replication": {"username": replication_user, "password": need("REPLICATION_PASSWORD")},
                "rewind": {"username": superuser, "password": need("POSTGRES_PASSWORD")}},
            # logs go to stderr: `docker logs` shows Patroni's and PostgreSQL's together
            "parameters": {"unix_socket_directories": "/var/run/postgresql", "logging_collector": "off",
                           "log_destination": "stderr"},
            "pg_hba": hba,
            # a new replica's base backup asks for an immediate checkpoint, not a spread one
            "basebackup": [{"checkpoint": "fast"}]},
        "watchdog": {"mode": "off"},
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
    }


if __name__ == "__main__":
    print(json.dumps(config(), indent=2))
