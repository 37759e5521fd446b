#!/usr/bin/env bash
# run.sh — the monitoring test tier: Debian's postgres_exporter with
# monitoring/postgres_exporter.yml against a running test cluster, jobs run
# (some failing) and /metrics compared with SQL (check_metrics.py); then
# `promtool check rules` and `promtool test rules` on monitoring/alerts.yml.
#
#   PGHOST=... PGPORT=... PGUSER=postgres PGDATABASE=jobrunner_it test/monitoring/run.sh
#
# Environment: PGHOST, PGPORT, PGUSER (the cluster, as scripts/run-tests.sh
# exports them), PGDATABASE (a database to connect to; default
# jobrunner_it), JOBRUNNER_SECRET (the cluster's signing secret; read from
# <PGHOST>/jwt_secret, test/lib/cluster.sh's layout, when unset),
# MONITOR_OUTPUT (where the exporter's log goes; default /tmp).
# The cluster must preload pg_jobrunner with the build under test installed.
#
# Prints "    <check> ... ok|FAILED" per check and ends with
# "N passed, M failed"; exits 0 iff none failed.
set -uo pipefail
cd "$(dirname "$0")/../.."

PY=/usr/bin/python3   # Debian's python: psycopg2 and PyJWT
export PGDATABASE=${PGDATABASE:-jobrunner_it}
export PG_EXPORTER=${PG_EXPORTER:-/usr/bin/prometheus-postgres-exporter}
export MONITOR_OUTPUT=${MONITOR_OUTPUT:-/tmp}
if [[ -z "${JOBRUNNER_SECRET:-}" && -n "${PGHOST:-}" && -r "$PGHOST/jwt_secret" ]]; then
  JOBRUNNER_SECRET=$(<"$PGHOST/jwt_secret")
fi
export JOBRUNNER_SECRET=${JOBRUNNER_SECRET:-}

passed=0
failed=0

# line <check> <ok|FAILED>: one check's line, counted.
line() {
  printf '    %s ... %s\n' "$1" "$2"
  if [[ $2 == ok ]]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
}

# tool_check <check> <command...>: a command that must succeed; its output
# is shown when it does not.
tool_check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then
    line "$name" ok
  else
    line "$name" FAILED
    sed 's/^/        /' <<<"$out" | head -n 60
  fi
}

# --- the exporter against the cluster ------------------------------------------
missing=()
for tool in "$PG_EXPORTER" promtool curl "$PY"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if (( ${#missing[@]} > 0 )); then
  line "tools present (${missing[*]} missing: run make deps)" FAILED
elif [[ -z "${PGHOST:-}" || -z "${PGPORT:-}" ]]; then
  line "PGHOST and PGPORT name the test cluster" FAILED
else
  out=$(mktemp)
  # Its lines as they come; its closing count is folded into ours.
  timeout "${MONITOR_TIMEOUT:-300}" "$PY" test/monitoring/check_metrics.py 2>&1 | tee "$out" |
    { grep -vE '^[0-9]+ passed, [0-9]+ failed$' || true; }
  read -r p _ f _ < <(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -n 1) || true
  rm -f "$out"
  if [[ -n "${p:-}" ]]; then
    passed=$((passed + p)); failed=$((failed + f))
  else
    line "check_metrics.py ran to its end" FAILED
  fi
fi

# --- the alerting rules ------------------------------------------------------------
tool_check "promtool check rules monitoring/alerts.yml" promtool check rules monitoring/alerts.yml
tool_check "promtool test rules monitoring/alerts_test.yml" promtool test rules monitoring/alerts_test.yml

echo "$passed passed, $failed failed"
(( failed == 0 ))
