#!/bin/sh
# pg-master's container entrypoint (the lab's local backend makes its primary from a
# template instead, and runs only init-master.sh).
#
#  1. an empty data directory: initdb (scram-sha-256, superuser $POSTGRES_USER with
#     $POSTGRES_PASSWORD), this directory's postgresql.conf and pg_hba.conf;
#  2. not initialised yet (also after a crash half-way): start a server reachable only
#     from inside the container, run init-master.sh, stop it;
#  3. exec postgres (arguments are passed on, e.g. -c cluster_name=pg-master).
#
# After a failover this container's node may be a replica of another service: the lab records
# each node's role beside its data (LAB_ROLE_FILE, in the volume: ROLE=replica,
# PRIMARY_HOST=..., REPLICA_NAME, SLOT_NAME, REPLICA_REJOIN).  With ROLE=replica this script
# hands over to replica/entrypoint.sh (a former primary rejoins: pg_rewind).  With
# ROLE=standalone (a node outside the physical cluster, pg-standalone1/2) an empty data
# directory is initialised as above and existing data is started as it is (the lab may have put
# a base backup there, with recovery settings).  Without the file, or with ROLE=primary, it runs
# as above.
#
# Environment: PGDATA (required), POSTGRES_USER (default admin), POSTGRES_PASSWORD and
# REPLICATION_PASSWORD (required), REPLICATION_USER, APP_DB (see init-master.sh),
# LAB_ROLE_FILE (optional).
set -eu

: "${PGDATA:?set PGDATA, the primary's data directory}"
: "${POSTGRES_USER:=admin}"
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD (the lab generates one per cluster)}"
HERE=$(cd "$(dirname "$0")" && pwd)
DONE="$PGDATA/lab-initialised"

log() { echo "entrypoint[pg-master]: $*" >&2; }

if [ -n "${LAB_ROLE_FILE:-}" ] && [ -f "$LAB_ROLE_FILE" ]; then
    set -a   # what the file sets goes on to replica/entrypoint.sh
    . "$LAB_ROLE_FILE"
    set +a
    if [ "${ROLE:-primary}" = "replica" ]; then
        log "$LAB_ROLE_FILE: this node is now a replica of ${PRIMARY_HOST:-pg-master}: running replica/entrypoint.sh"
        exec "$HERE/../replica/entrypoint.sh" "$@"
    fi
    if [ "${ROLE:-primary}" = "standalone" ] && [ -s "$PGDATA/PG_VERSION" ] && [ -f "$DONE" ]; then
        # a node outside the physical cluster, its data made by an earlier start or by the lab (a
        # base backup, with its own recovery settings; a server in recovery cannot run
        # init-master.sh): run it as it is
        log "$LAB_ROLE_FILE: a standalone node with existing data: starting it as it is"
        exec postgres -D "$PGDATA" "$@"
    fi
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    log "empty data directory: initdb"
    mkdir -p "$PGDATA"
    chmod 0700 "$PGDATA"
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb -D "$PGDATA" -U "$POSTGRES_USER" --auth=scram-sha-256 --pwfile="$pwfile" -E UTF8 --no-locale >/dev/null
    rm -f "$pwfile"
    cp "$HERE/postgresql.conf" "$HERE/pg_hba.conf" "$PGDATA/"
fi

if [ ! -f "$DONE" ]; then
    log "running init-master.sh against a private server"
    pg_ctl -D "$PGDATA" -w -s -o "-c listen_addresses=127.0.0.1 -c port=5432" start
    PGHOST=127.0.0.1 PGPORT=5432 PGUSER="$POSTGRES_USER" PGPASSWORD="$POSTGRES_PASSWORD" \
        sh "$HERE/init-master.sh"
    pg_ctl -D "$PGDATA" -w -s -m fast stop
    : > "$DONE"
else
    log "existing data found: starting the primary"
fi

exec postgres -D "$PGDATA" "$@"
