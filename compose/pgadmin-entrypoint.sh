#!/bin/bash
# pgadmin (compose/pgadmin.Dockerfile): pgAdmin 4 in server mode under gunicorn, started the way
# dpage/pgadmin4's entrypoint starts it, with the same variables:
#   1. first start: /pgadmin4/config_distro.py from the package's defaults, the container's paths
#      and every PGADMIN_CONFIG_<NAME>=<python value> (e.g. PGADMIN_CONFIG_SERVER_MODE=True);
#   2. no /var/lib/pgadmin/pgadmin4.db yet: pgAdmin's database with the login PGADMIN_DEFAULT_EMAIL /
#      PGADMIN_DEFAULT_PASSWORD (or PGADMIN_DEFAULT_PASSWORD_FILE), then the servers of
#      PGADMIN_SERVER_JSON_FILE (default /pgadmin4/servers.json) and the preferences of
#      PGADMIN_PREFERENCES_JSON_FILE (default /pgadmin4/preferences.json) for that user;
#   3. gunicorn on ${PGADMIN_LISTEN_ADDRESS:-[::]}:${PGADMIN_LISTEN_PORT:-80} (443 with
#      PGADMIN_ENABLE_TLS and /certs/server.{cert,key}; a unix socket with PGADMIN_ENABLE_SOCK).
# The password is read from the environment and passed on in it, never on a command line.
set -eu
PY=/venv/bin/python3
PKG=/pgadmin4/package

if [ ! -s /pgadmin4/config_distro.py ]; then
    {
        cat "$PKG/config_distro.py" 2>/dev/null || true
        echo "CA_FILE = '/etc/ssl/certs/ca-certificates.crt'"
        echo "LOG_FILE = '/dev/null'"
        # the base's PostgreSQL client programs (pg_dump, pg_restore, psql), newest first
        echo "DEFAULT_BINARY_PATHS = {"
        first=1
        for bin in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -rn); do
            major=$(basename "$(dirname "$bin")")
            [ "$first" = 1 ] && echo "    'pg': '$bin'," && first=0
            echo "    'pg-$major': '$bin',"
        done
        echo "}"
        # as dpage/pgadmin4: the value is Python, e.g. True, 5, "'text'"
        for var in $(env | grep -o '^PGADMIN_CONFIG_[A-Za-z0-9_]*' || true); do
            echo "${var#PGADMIN_CONFIG_} = ${!var}"
        done
    } > /pgadmin4/config_distro.py
fi

if [ ! -f /var/lib/pgadmin/pgadmin4.db ]; then
    if [ -n "${PGADMIN_DEFAULT_PASSWORD_FILE:-}" ]; then
        PGADMIN_DEFAULT_PASSWORD=$(cat "$PGADMIN_DEFAULT_PASSWORD_FILE")
    fi
    if [ -z "${PGADMIN_DEFAULT_EMAIL:-}" ] || [ -z "${PGADMIN_DEFAULT_PASSWORD:-}" ]; then
        echo 'You need to define the PGADMIN_DEFAULT_EMAIL and PGADMIN_DEFAULT_PASSWORD or PGADMIN_DEFAULT_PASSWORD_FILE environment variables.' >&2
        exit 1
    fi
    # pgAdmin's own check (its CHECK_EMAIL_DELIVERABILITY and ALLOW_SPECIAL_EMAIL_DOMAINS apply)
    if ! EMAIL="$PGADMIN_DEFAULT_EMAIL" "$PY" -c "import os, sys
import config  # first: pgAdmin's modules import each other in this order
from pgadmin.utils.validation_utils import validate_email
sys.exit(0 if validate_email(os.environ['EMAIL']) else 1)"; then
        echo "'$PGADMIN_DEFAULT_EMAIL' does not appear to be a valid email address. Please reset the PGADMIN_DEFAULT_EMAIL environment variable and try again." >&2
        exit 1
    fi
    export PGADMIN_SETUP_EMAIL="$PGADMIN_DEFAULT_EMAIL" PGADMIN_SETUP_PASSWORD="$PGADMIN_DEFAULT_PASSWORD"
    # importing pgAdmin creates its database with that user
    "$PY" /pgadmin4/run_pgadmin.py
    unset PGADMIN_SETUP_PASSWORD
    PGADMIN_SERVER_JSON_FILE="${PGADMIN_SERVER_JSON_FILE:-/pgadmin4/servers.json}"
    PGADMIN_PREFERENCES_JSON_FILE="${PGADMIN_PREFERENCES_JSON_FILE:-/pgadmin4/preferences.json}"
    if [ "${PGADMIN_CONFIG_SERVER_MODE:-True}" = "False" ]; then
        user=()
        prefs_user=$(cd /pgadmin4 && "$PY" -c 'import config; print(config.DESKTOP_USER)')
    else
        user=(--user "$PGADMIN_DEFAULT_EMAIL")
        prefs_user=$PGADMIN_DEFAULT_EMAIL
    fi
    if [ -f "$PGADMIN_SERVER_JSON_FILE" ]; then
        "$PY" /pgadmin4/setup.py load-servers "$PGADMIN_SERVER_JSON_FILE" "${user[@]}"
    fi
    if [ -f "$PGADMIN_PREFERENCES_JSON_FILE" ]; then
        "$PY" /pgadmin4/setup.py set-prefs "$prefs_user" --input-file "$PGADMIN_PREFERENCES_JSON_FILE"
    fi
fi
unset PGADMIN_DEFAULT_PASSWORD

# gunicorn's worker timeout: pgAdmin's session lifetime (in seconds), as dpage/pgadmin4
TIMEOUT=$(cd /pgadmin4 && "$PY" -c 'import config; print(config.SESSION_EXPIRATION_TIME * 60 * 60 * 24)')
# [::] needs IPv6 in the kernel; without it, every IPv4 address
ANY='[::]'
[ -e /proc/net/if_inet6 ] || ANY=0.0.0.0
if [ -n "${PGADMIN_ENABLE_SOCK:-}" ]; then
    BIND="unix:/run/pgadmin/pgadmin.sock"
elif [ -n "${PGADMIN_ENABLE_TLS:-}" ]; then
    BIND="${PGADMIN_LISTEN_ADDRESS:-$ANY}:${PGADMIN_LISTEN_PORT:-443}"
else
    BIND="${PGADMIN_LISTEN_ADDRESS:-$ANY}:${PGADMIN_LISTEN_PORT:-80}"
fi
tls=()
if [ -n "${PGADMIN_ENABLE_TLS:-}" ]; then
    tls=(--keyfile /certs/server.key --certfile /certs/server.cert)
fi
# one worker (pgAdmin keeps its sessions in the process), many threads
exec /venv/bin/gunicorn --limit-request-line "${GUNICORN_LIMIT_REQUEST_LINE:-8190}" --timeout "$TIMEOUT" \
    --bind "$BIND" -w 1 --threads "${GUNICORN_THREADS:-25}" --access-logfile "${GUNICORN_ACCESS_LOGFILE:--}" \
    "${tls[@]}" -c gunicorn_config.py run_pgadmin:app
