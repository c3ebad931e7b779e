#!/bin/sh
# pg-replica's entrypoint: make this node a hot standby of the primary, then run it.
#
#  1. decide what the data directory needs, and log which path it took:
#     - empty: wait for the primary, take pg_basebackup -R -X stream -S <slot>
#       (one physical slot per replica);
#     - a half-written base backup, or unreadable (broken): wipe, then base backup;
#     - a standby of this primary on its timeline (or the primary is not reachable
#       yet): keep it and continue replicating from where it stopped;
#     - another cluster's data (a different system identifier): wipe, base backup;
#     - a standby on another timeline (the primary was promoted elsewhere): pg_rewind
#       when possible, else wipe and base backup;
#     - not a standby (a former primary): refuse, unless REPLICA_REJOIN=1 (then rewind).
#  2. start PostgreSQL (exec), unless REPLICA_PREPARE_ONLY=1 (the lab's local
#     backend prepares with this script and starts the server itself).
#
# First, the lab's record of this node's role (LAB_ROLE_FILE, beside the data in the volume;
# containers only) is read: what it sets wins over the environment, which was fixed when the
# container was created (PRIMARY_HOST=pg-master).  ROLE=primary (a promoted replica): start
# the existing data as it is, a primary; ROLE=replica: the steps above, towards its
# PRIMARY_HOST.  Without the file nothing changes.
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
#   REPLICA_REJOIN         1: rewind a former primary's data onto the primary (its
#                          unreplicated writes are lost); default: refuse
#   LAB_ROLE_FILE          the lab's role record (ROLE=primary|replica and the variables
#                          above); optional
set -eu

if [ -n "${LAB_ROLE_FILE:-}" ] && [ -f "$LAB_ROLE_FILE" ]; then
    set -a
    . "$LAB_ROLE_FILE"
    set +a
fi

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

if [ "${ROLE:-replica}" = "primary" ]; then
    if [ ! -f "$PGDATA/PG_VERSION" ]; then
        log "$LAB_ROLE_FILE says this node is a primary, but $PGDATA holds no database: refusing to start"
        exit 3
    fi
    log "$LAB_ROLE_FILE: this node is a primary (promoted): starting its data as it is"
    if [ "$REPLICA_PREPARE_ONLY" = "1" ]; then
        exit 0
    fi
    exec postgres -D "$PGDATA" "$@"
fi

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

# What the primary says about itself over a replication connection: "sysid|timeline|lsn|".
primary_identity() {
    psql -XAtq -c "IDENTIFY_SYSTEM" \
        "host=$PRIMARY_HOST port=$PRIMARY_PORT user=$REPLICATION_USER dbname=replication replication=true" \
        2>/dev/null
}

# One field of pg_controldata (LANG=C for stable labels).
control() { LANG=C pg_controldata "$PGDATA" 2>/dev/null | sed -n "s/^$1: *//p"; }

wipe_data() {
    find "$PGDATA" -mindepth 1 -delete 2>/dev/null || true
}

base_backup() {
    wait_for_primary
    mkdir -p "$PGDATA"
    chmod 0700 "$PGDATA"
    : > "$PARTIAL"
    log "run: pg_receivewal --create-slot --if-not-exists --slot=$SLOT_NAME -h $PRIMARY_HOST -p $PRIMARY_PORT -U $REPLICATION_USER"
    log "run: pg_basebackup -D $PGDATA -R -X stream --slot=$SLOT_NAME --checkpoint=fast -d 'host=$PRIMARY_HOST port=$PRIMARY_PORT user=$REPLICATION_USER application_name=$REPLICA_NAME'"
    pg_receivewal --create-slot --if-not-exists --slot="$SLOT_NAME" \
        -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$REPLICATION_USER" --no-password
    pg_basebackup -D "$PGDATA" -R -X stream --slot="$SLOT_NAME" --checkpoint=fast \
        -d "host=$PRIMARY_HOST port=$PRIMARY_PORT user=$REPLICATION_USER application_name=$REPLICA_NAME" \
        --no-password
    rm -f "$PARTIAL"
    log "base backup done: $PGDATA is a hot standby of $PRIMARY_HOST:$PRIMARY_PORT"
}

# pg_rewind the data onto the primary's timeline (needs a clean shutdown, which pg_rewind
# reaches by itself, and the WAL since the fork still on the primary: wal_keep_size, slots).
rewind() {
    log "rewinding with pg_rewind onto the primary's timeline"
    # After a crash pg_rewind runs the data's crash recovery (postgres --single), which refuses a
    # postmaster.pid naming a live process.  In a container the dead postmaster was PID 1, which
    # is now this script: that file is stale (and so is one whose process is gone).
    if [ -f "$PGDATA/postmaster.pid" ]; then
        old_pid=$(head -n 1 "$PGDATA/postmaster.pid")
        if [ "$old_pid" = "$$" ] || ! kill -0 "$old_pid" 2>/dev/null; then
            log "removing a stale postmaster.pid (PID $old_pid) left by the crashed server"
            rm -f "$PGDATA/postmaster.pid"
        fi
    fi
    # A primary just promoted writes its new timeline into pg_control only at the end of its first
    # checkpoint, which runs in the background (spread over minutes when much is dirty): a pg_rewind
    # before that can fail half-way ("source system was in unexpected state at end of rewind").  So
    # ask for one (init-master.sh grants pg_checkpoint), and if that is refused, wait while a dry
    # run still says "same timeline".
    source_conn="host=$PRIMARY_HOST port=$PRIMARY_PORT user=$REPLICATION_USER dbname=postgres application_name=$REPLICA_NAME"
    if [ "$here_tli" != "$primary_tli" ]; then
        log "run: psql -XAtq -c CHECKPOINT '$source_conn'"
        psql -XAtq -c "CHECKPOINT" "$source_conn" >/dev/null 2>&1 || log "CHECKPOINT refused (no pg_checkpoint role): waiting for the primary's own"
    fi
    waited=0
    while [ "$here_tli" != "$primary_tli" ] && pg_rewind --dry-run --target-pgdata="$PGDATA" --source-server="$source_conn" 2>&1 | grep -q "same timeline"; do
        if [ "$waited" -eq 0 ]; then
            log "the primary has not finished a checkpoint since its promotion: waiting for it before pg_rewind"
        fi
        if [ "$waited" -ge $((WAIT_TIMEOUT * 5)) ]; then
            log "still no checkpoint on the primary after ${WAIT_TIMEOUT} s: trying pg_rewind anyway (run CHECKPOINT on the primary)"
            break
        fi
        waited=$((waited + 1))
        sleep 0.2
    done
    log "run: pg_rewind --target-pgdata=$PGDATA --write-recovery-conf --progress --source-server='$source_conn'"
    if pg_rewind --target-pgdata="$PGDATA" --write-recovery-conf --progress \
        --source-server="$source_conn" >&2; then
        # pg_rewind copied the source's postgresql.auto.conf (its own slot name, if any):
        # this replica streams through its own slot, created on the new primary if needed.
        pg_receivewal --create-slot --if-not-exists --slot="$SLOT_NAME" \
            -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$REPLICATION_USER" --no-password
        echo "primary_slot_name = '$SLOT_NAME'" >> "$PGDATA/postgresql.auto.conf"
        log "pg_rewind done: continuing as a standby of $PRIMARY_HOST:$PRIMARY_PORT (slot $SLOT_NAME)"
        return 0
    fi
    return 1
}

# 1. Decide what the data directory needs, and say which path was taken.
if [ -f "$PARTIAL" ]; then
    log "a previous base backup did not finish: wiping $PGDATA before retrying"
    wipe_data
    rm -f "$PARTIAL"
fi

if [ ! -f "$PGDATA/PG_VERSION" ]; then
    log "empty data directory: taking a base backup from $PRIMARY_HOST:$PRIMARY_PORT (slot $SLOT_NAME)"
    base_backup
elif [ -z "$(control 'Database system identifier')" ]; then
    log "the data directory is broken (pg_controldata cannot read it): wiping it for a fresh base backup"
    wipe_data
    base_backup
else
    here_sysid=$(control 'Database system identifier')
    here_tli=$(control "Latest checkpoint's TimeLineID")
    identity=$(primary_identity || true)
    if [ -z "$identity" ]; then
        if [ -f "$PGDATA/standby.signal" ]; then
            log "existing standby data found, primary not reachable yet: starting and continuing replication from where it stopped"
        else
            log "$PGDATA holds a database that is not a standby and the primary cannot be checked: refusing to touch it"
            exit 3
        fi
    else
        primary_sysid=$(echo "$identity" | cut -d'|' -f1)
        primary_tli=$(echo "$identity" | cut -d'|' -f2)
        if [ "$primary_sysid" != "$here_sysid" ]; then
            log "this data belongs to another cluster (system identifier $here_sysid, the primary's is $primary_sysid): wiping it for a fresh base backup"
            wipe_data
            base_backup
        elif [ ! -f "$PGDATA/standby.signal" ] && [ "${REPLICA_REJOIN:-0}" != "1" ]; then
            log "$PGDATA holds a database that is not a standby (a promoted or former primary?): refusing to overwrite it; set REPLICA_REJOIN=1 to rewind it onto the primary, or wipe it"
            exit 3
        elif [ "$here_tli" = "$primary_tli" ] && [ -f "$PGDATA/standby.signal" ]; then
            log "existing standby data found (timeline $here_tli, same system): continuing replication from where it stopped"
        else
            log "timeline $here_tli here, $primary_tli on the primary: this node may have diverged"
            if ! rewind; then
                log "pg_rewind could not rejoin it: wiping it for a fresh base backup"
                wipe_data
                base_backup
            fi
        fi
    fi
fi

# 2. Run the server (containers) or hand back to the caller (lab's local backend).
if [ "$REPLICA_PREPARE_ONLY" = "1" ]; then
    exit 0
fi
exec postgres -D "$PGDATA" "$@"
