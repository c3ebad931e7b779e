#!/bin/sh
# An HA node's container entrypoint (compose/docker-compose.ha.yml's pg-ha1..3, image
# compose/ha.Dockerfile): Patroni runs PostgreSQL, over etcd.
#
#   patroni-entrypoint.sh                  write /tmp/patroni.yml (0600) with patroni-config.py
#                                          from the environment, then run Patroni on it
#   patroni-entrypoint.sh post-bootstrap   what Patroni runs once on the cluster it bootstrapped
#                                          (PG_POST_BOOTSTRAP): init-master.sh, as on pg-master:
#                                          the replication role, crypto_db, test_replication
#
# Environment: see patroni-config.py (the secrets are required; nothing is baked into the image).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)

if [ "${1:-}" = "post-bootstrap" ]; then
    # Patroni passes a connection URL; init-master.sh uses libpq's variables (socket, superuser)
    PGHOST=/var/run/postgresql PGPORT=5432 PGUSER="${POSTGRES_USER:-admin}" \
        PGPASSWORD="${POSTGRES_PASSWORD:?}" exec sh "$HERE/init-master.sh"
fi

: "${PGDATA:?set PGDATA, this node's data directory}"
CONFIG=${PATRONI_CONFIG_FILE:-/tmp/patroni.yml}
umask 077
export PG_POST_BOOTSTRAP="${PG_POST_BOOTSTRAP-$HERE/patroni-entrypoint.sh post-bootstrap}"
python3 "$HERE/patroni-config.py" > "$CONFIG.tmp"
mv "$CONFIG.tmp" "$CONFIG"
echo "patroni-entrypoint: $(hostname): Patroni on $CONFIG, etcd ${ETCD_HOSTS:-etcd1:2379,etcd2:2379,etcd3:2379}" >&2

# Patroni runs as this script's child, not in its place: when Patroni alone dies (chapter 08 kills
# it on purpose), the container lives on while the PostgreSQL it left runs, unmanaged, as a
# machine whose Patroni crashed would.  `docker stop` (SIGTERM) goes to Patroni, which stops
# PostgreSQL and gives up the leader key.  As PID 1 this shell also reaps the orphans.
patroni "$CONFIG" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
status=0
wait "$child" || status=$?
while kill -0 "$child" 2>/dev/null; do  # a signal ended `wait`, not Patroni: wait again
    wait "$child" || status=$?
done
# the postmaster alive (a zombie that nobody reaped yet counts as gone)
postmaster() {
    pid=$(head -n 1 "$PGDATA/postmaster.pid" 2>/dev/null) || return 1
    state=$(sed -n 's/^[0-9]* (.*) \([A-Z]\) .*/\1/p' "/proc/$pid/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}
if postmaster; then
    echo "patroni-entrypoint: Patroni exited ($status); PostgreSQL runs on without it until it stops" >&2
    trap 'kill -INT "$(head -n 1 "$PGDATA/postmaster.pid")" 2>/dev/null' TERM INT
    while postmaster; do sleep 0.5; done
fi
exit "$status"
