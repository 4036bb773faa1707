#!/bin/sh
# The login every eldercare process except `migrate` uses (docker-compose.yml). It owns nothing;
# migration 0009 grants it what it needs: read and write the data, but only INSERT and SELECT on
# audit_log, so it can neither edit the audit trail nor drop its triggers.
# The postgres image runs this once, when the database volume is first created; for a volume made
# before, see deploy/README.md ("Database roles").
set -eu
psql -v ON_ERROR_STOP=1 -v app_password="$ELDERCARE_APP_DB_PASSWORD" \
    --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE eldercare_app LOGIN PASSWORD :'app_password';
SQL
