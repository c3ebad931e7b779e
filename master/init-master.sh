#!/bin/sh
# pg-master's initialisation: runs once against the freshly started primary, and is
# safe to run again.  It creates
#   - the replication role ($REPLICATION_USER, default replicator),
#   - the application database ($APP_DB, default crypto_db),
#   - the test_replication table with a few rows, as in the original project.
#
# It connects with libpq's variables: PGHOST, PGPORT, PGUSER, PGPASSWORD (the
# superuser's).  Containers and the lab's local backend both run it unchanged.
set -eu

: "${REPLICATION_USER:=replicator}"
: "${REPLICATION_PASSWORD:?set REPLICATION_PASSWORD (the lab generates one per cluster)}"
: "${APP_DB:=crypto_db}"

log() { echo "init-master: $*" >&2; }

# single quotes doubled, for use inside a SQL literal
sql_literal() { printf "%s" "$1" | sed "s/'/''/g"; }
REPL_USER_SQL=$(sql_literal "$REPLICATION_USER")
REPL_PW_SQL=$(sql_literal "$REPLICATION_PASSWORD")
APP_DB_SQL=$(sql_literal "$APP_DB")

log "creating role $REPLICATION_USER and database $APP_DB"
# The password travels on stdin, never on a command line.
psql -X -q -v ON_ERROR_STOP=1 -d postgres <<SQL
SELECT format('CREATE ROLE %I WITH REPLICATION LOGIN', '$REPL_USER_SQL')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$REPL_USER_SQL') \gexec
SELECT format('ALTER ROLE %I WITH REPLICATION LOGIN PASSWORD %L', '$REPL_USER_SQL', '$REPL_PW_SQL') \gexec
-- pg_rewind as the replication role (no superuser needed): what it reads on the source
SELECT format('GRANT EXECUTE ON FUNCTION %s TO %I', f, '$REPL_USER_SQL')
  FROM unnest(ARRAY['pg_catalog.pg_ls_dir(text, boolean, boolean)',
                    'pg_catalog.pg_stat_file(text, boolean)',
                    'pg_catalog.pg_read_binary_file(text)',
                    'pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)']) AS f \gexec
-- and a CHECKPOINT before it (PostgreSQL 15's pg_checkpoint role): a primary just promoted names
-- its new timeline in pg_control only after its first checkpoint, which pg_rewind needs
SELECT format('GRANT pg_checkpoint TO %I', '$REPL_USER_SQL')
 WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pg_checkpoint') \gexec
SELECT format('CREATE DATABASE %I', '$APP_DB_SQL')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$APP_DB_SQL') \gexec
SQL

log "creating table test_replication in $APP_DB"
psql -X -q -v ON_ERROR_STOP=1 -d "$APP_DB" <<'SQL'
CREATE TABLE IF NOT EXISTS test_replication (
    id         serial PRIMARY KEY,
    mensaje    text        NOT NULL,
    creado_en  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO test_replication (mensaje)
SELECT m FROM (VALUES ('Mensaje inicial desde el master'),
                      ('Replicación funcionando')) AS v(m)
 WHERE NOT EXISTS (SELECT 1 FROM test_replication);
SQL
log "done"
