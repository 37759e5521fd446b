#!/usr/bin/env bash
# demo.sh — `make demo`: a throwaway PostgreSQL 15 cluster with pg_jobrunner
# installed and created. A placeholder: the guided demo is under construction.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -eq 0 ]]; then make --no-print-directory install >/dev/null
else sudo make --no-print-directory install >/dev/null; fi

DEMO_DIR=$(mktemp -d /tmp/jobrunner-demo.XXXXXX)
trap 'test/lib/cluster.sh stop "$DEMO_DIR" >/dev/null 2>&1 || true; rm -rf "$DEMO_DIR"' EXIT
eval "$(test/lib/cluster.sh start "$DEMO_DIR" "${DEMO_PORT:-54339}")"

psql() { /usr/lib/postgresql/15/bin/psql -X -v ON_ERROR_STOP=1 "$@"; }
psql -q -d postgres -c 'CREATE DATABASE jobrunner_it'
psql -q -d jobrunner_it -c 'CREATE EXTENSION pg_cron' -c 'CREATE EXTENSION pg_jobrunner'
psql -d jobrunner_it -c 'SELECT * FROM jobrunner.worker_status()'

echo "pg_jobrunner demo: under construction (the cluster above is stopped on exit)."
