#!/bin/sh
# pg-replica's entrypoint: make this node a hot standby of the primary, then run it.
#
#  1. if the data directory already holds a standby, keep it and continue
#     replicating from where it stopped; if it holds a half-written base backup,
#     wipe it; if it is empty, wait for the primary and take a base backup:
#        pg_basebackup -R -X stream -S <slot>   (one physical slot per replica)
#  2. start PostgreSQL (exec), unless REPLICA_PREPARE_ONLY=1 (the lab's local
#     backend prepares with this script and starts the server itself).
#
# Environment (no host paths are baked in; containers and the lab both set these):
#   PGDATA                 data directory of this replica (required)
#   PRIMARY_HOST           primary's address           (default pg-master)
#   PRIMARY_PORT           primary's port              (default 5432)
#   REPLICATION_USER       replication role            (default replicator)
#   REPLICATION_PASSWORD   its password                (required)
#   REPLICA_NAME           this replica's name; becomes application_name on the primary
#                          (default pg-replica)
#   SLOT_NAME              physical replication slot   (default: REPLICA_NAME, '-' -> '_')
#   WAIT_TIMEOUT           seconds to wait for the primary (default 60)
set -eu

: "${PGDATA:?set PGDATA, the replica's data directory}"
: "${PRIMARY_HOST:=pg-master}"
: "${PRIMARY_PORT:=5432}"
: "${REPLICATION_USER:=replicator}"
: "${REPLICATION_PASSWORD:?set REPLICATION_PASSWORD (the lab generates one per cluster)}"
: "${REPLICA_NAME:=pg-replica}"
: "${SLOT_NAME:=$(printf '%s' "$REPLICA_NAME" | tr -c 'a-zA-Z0-9_\n' '_')}"
: "${WAIT_TIMEOUT:=60}"
: "${REPLICA_PREPARE_ONLY:=0}"

log() { echo "entrypoint[$REPLICA_NAME]: $*" >&2; }

export PGPASSWORD="$REPLICATION_PASSWORD"
export PGCONNECT_TIMEOUT=5
PARTIAL="${PGDATA%/}.basebackup-incomplete"

# Wait for the primary (pg_isready: no password needed, polled with a deadline).
wait_for_primary() {
    waited=0
    until pg_isready -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -d postgres; do
        if [ "$waited" -ge "$((WAIT_TIMEOUT * 10))" ]; then
            log "the primary at $PRIMARY_HOST:$PRIMARY_PORT did not answer within ${WAIT_TIMEOUT}s: start it first"
            exit 2
        fi
        waited=$((waited + 1))
        sleep 0.1
    done
}

# 1. Decide what the data directory needs (a standby with data starts without its primary).
if [ -f "$PARTIAL" ]; then
    log "a previous base backup did not finish: wiping $PGDATA before retrying"
    find "$PGDATA" -mindepth 1 -delete 2>/dev/null || true
    rm -f "$PARTIAL"
fi

if [ -f "$PGDATA/PG_VERSION" ] && [ -f "$PGDATA/standby.signal" ]; then
    log "existing standby data found: continuing replication from where it stopped"
elif [ -f "$PGDATA/PG_VERSION" ]; then
    log "$PGDATA holds a database that is not a standby (a promoted or former primary?): refusing to overwrite it; wipe it or rejoin it with pg_rewind"
    exit 3
else
    log "empty data directory: taking a base backup from $PRIMARY_HOST:$PRIMARY_PORT (slot $SLOT_NAME)"
    wait_for_primary
    mkdir -p "$PGDATA"
    chmod 0700 "$PGDATA"
    : > "$PARTIAL"
    pg_receivewal --create-slot --if-not-exists --slot="$SLOT_NAME" \
        -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$REPLICATION_USER" --no-password
    pg_basebackup -D "$PGDATA" -R -X stream --slot="$SLOT_NAME" --checkpoint=fast \
        -d "host=$PRIMARY_HOST port=$PRIMARY_PORT user=$REPLICATION_USER application_name=$REPLICA_NAME" \
        --no-password
    rm -f "$PARTIAL"
    log "base backup done: $PGDATA is a hot standby of $PRIMARY_HOST:$PRIMARY_PORT"
fi

# 2. Run the server (containers) or hand back to the caller (lab's local backend).
if [ "$REPLICA_PREPARE_ONLY" = "1" ]; then
    exit 0
fi
exec postgres -D "$PGDATA" "$@"
