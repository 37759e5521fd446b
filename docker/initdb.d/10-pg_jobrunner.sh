#!/usr/bin/env bash
# 10-pg_jobrunner.sh — first-start set-up for the docker image: the signing
# secret (and base URL) from the environment into postgresql.auto.conf, and
# the extensions in the default database. Runs once, from the entrypoint.
set -euo pipefail

if [[ -z "${JOBRUNNER_JWT_SECRET:-}" ]]; then
  echo "10-pg_jobrunner.sh: JOBRUNNER_JWT_SECRET is not set; jobs will fail until it is" >&2
fi
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v secret="${JOBRUNNER_JWT_SECRET:-}" -v base_url="${JOBRUNNER_BASE_URL:-}" <<'SQL'
SELECT :'secret' <> '' AS has_secret, :'base_url' <> '' AS has_base_url \gset
\if :has_secret
ALTER SYSTEM SET jobrunner.jwt_secret = :'secret';
\endif
\if :has_base_url
ALTER SYSTEM SET jobrunner.base_url = :'base_url';
\endif
CREATE EXTENSION IF NOT EXISTS pg_cron;
CREATE EXTENSION IF NOT EXISTS pg_jobrunner;
SQL
