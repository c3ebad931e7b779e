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
# Environment: PGDATA (required), POSTGRES_USER (default admin), POSTGRES_PASSWORD and
# REPLICATION_PASSWORD (required), REPLICATION_USER, APP_DB (see init-master.sh).
set -eu

: "${PGDATA:?set PGDATA, the primary's data directory}"
: "${POSTGRES_USER:=admin}"
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD (the lab generates one per cluster)}"
HERE=$(cd "$(dirname "$0")" && pwd)
DONE="$PGDATA/lab-initialised"

log() { echo "entrypoint[pg-master]: $*" >&2; }

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
