#!/bin/sh
# compose/docker-compose.ha.yml's etcd-auth: a one-shot job that turns etcd's authentication on
# once the three members answer (the local backend's enable_etcd_auth, with etcdctl): the root
# role, the root user with the cluster's generated password (on stdin, never on a command line),
# then auth.  On a cluster whose auth is already on (a restart), it only says so.
# Environment: ETCD_ENDPOINTS (default http://etcd1:2379,http://etcd2:2379,http://etcd3:2379),
# ETCD_ROOT_PASSWORD (required).
set -eu
: "${ETCD_ROOT_PASSWORD:?set ETCD_ROOT_PASSWORD (the lab generates one per cluster)}"
EP="--endpoints=${ETCD_ENDPOINTS:-http://etcd1:2379,http://etcd2:2379,http://etcd3:2379}"
unset ETCDCTL_USER ETCDCTL_PASSWORD
log() { echo "etcd-auth: $*" >&2; }

i=0
until etcdctl "$EP" --dial-timeout=1s --command-timeout=2s endpoint health >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -ge 120 ]; then
        log "the etcd members did not all answer within a minute:"
        etcdctl "$EP" --dial-timeout=1s endpoint health >&2 || true
        exit 1
    fi
    sleep 0.5
done
# Without credentials, listing users works only while auth is off.
if ! etcdctl "$EP" user list >/dev/null 2>&1; then
    log "authentication is already on"
    exit 0
fi
etcdctl "$EP" role add root >/dev/null 2>&1 || true
if ! etcdctl "$EP" user get root >/dev/null 2>&1; then
    printf '%s\n' "$ETCD_ROOT_PASSWORD" | etcdctl "$EP" user add root --interactive=false >/dev/null
fi
etcdctl "$EP" user grant-role root root >/dev/null
etcdctl "$EP" auth enable >/dev/null
log "authentication on (user root)"
