#!/usr/bin/env bash
# run-tests.sh — every test tier of pg_jobrunner, run by `make test` after the
# build: formatting, GoogleTest units, `make install`, a throwaway PostgreSQL
# 15 cluster (test/lib/cluster.sh), pg_regress, pgTAP, isolation specs, the
# update from every released version, the Python integration tests against
# a real HTTP endpoint, the monitoring files against postgres_exporter and
# promtool, a server-log check, and last the Debian package.
#
# Each tier prints a header and its own result; the last line is the sum over
# all tiers, "N passed, N failed". The exit status is non-zero when a test
# failed or a tier could not run (a tier that could not run counts as one
# failure). A tier with no test files yet counts 0 and says so.
#
# Environment knobs: JOBRUNNER_TEST_PORT (first port to try, default 54329),
# KEEP_CLUSTER=1 (leave the cluster's directory behind), TIER_TIMEOUT
# (seconds per runner, default 900), TIERS (only these tiers, e.g. "regress
# upgrade"; the cluster and log check always run), INTEGRATION_TESTS (only
# these test/integration modules, e.g. "test_faults test_limits"),
# SKIP_INSTALL=1 (test what is installed already; also skips the package
# tier, which reinstalls), PGBIN (the PostgreSQL 15 bin/ to build against,
# install into and run: a private copy of the installation lets two trees be
# tested side by side; the package tier is skipped then, as it installs the
# system's).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd -P)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGXS_TEST=$(dirname "$PGBIN")/lib/pgxs/src/test
export PGBIN PG_CONFIG=$PGBIN/pg_config   # test/lib/cluster.sh and make read them
PY=/usr/bin/python3            # Debian's python: it has psycopg2 and PyJWT
BUILD=${TEST_OUTPUT:-$ROOT/build}  # logs and results; TEST_OUTPUT lets runs side by side keep theirs apart
LOGS=$BUILD/logs
TIER_TIMEOUT=${TIER_TIMEOUT:-900}
export LC_ALL=C.UTF-8

mkdir -p "$LOGS"

TOTAL_PASSED=0
TOTAL_FAILED=0
SUMMARY=()
CLUSTER_DIR=
CLUSTER_UP=0
SECRET=

# --- reporting ----------------------------------------------------------------

header() { printf '\n=== %s: %s\n' "$1" "$2"; }

# result <tier> <passed> <failed>: add to the totals and print the tier's line.
result() {
  local tier=$1 passed=$2 failed=$3 verdict=ok
  TOTAL_PASSED=$((TOTAL_PASSED + passed))
  TOTAL_FAILED=$((TOTAL_FAILED + failed))
  (( failed == 0 )) || verdict=FAILED
  printf -- '--- %s %s (passed %d, failed %d)\n' "$tier" "$verdict" "$passed" "$failed"
  SUMMARY+=("$(printf '%-12s %-7s passed %4d  failed %4d' "$tier" "$verdict" "$passed" "$failed")")
}

# broken <tier> <why>: the tier could not run; it counts as one failure.
broken() {
  TOTAL_FAILED=$((TOTAL_FAILED + 1))
  printf -- '--- %s COULD NOT RUN: %s\n' "$1" "$2"
  SUMMARY+=("$(printf '%-12s %-7s %s' "$1" "ERROR" "$2")")
}

# empty <tier> <why>: nothing to run yet; counts 0.
empty() {
  printf -- '--- %s: no tests yet (%s)\n' "$1" "$2"
  SUMMARY+=("$(printf '%-12s %-7s %s' "$1" "none" "$2")")
}

# show <file> [lines]: print the tail of a log, indented.
show() {
  local file=$1 lines=${2:-80}
  [[ -f "$file" ]] || return 0
  tail -n "$lines" "$file" | sed 's/^/    /'
}

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# --- the cluster ----------------------------------------------------------------

stop_cluster() {
  if [[ -n "$CLUSTER_DIR" && -d "$CLUSTER_DIR" && $CLUSTER_UP -eq 1 ]]; then
    test/lib/cluster.sh stop "$CLUSTER_DIR" >/dev/null 2>&1 || true
    CLUSTER_UP=0
  fi
}

SUMMARY_DONE=0
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  local rc=$?
  if (( ! SUMMARY_DONE )); then
    # Stopped early (a bug here, or a signal): still close on one count line.
    echo
    echo "=== run-tests.sh stopped early (exit $rc)"
    echo "$TOTAL_PASSED passed, $((TOTAL_FAILED + 1)) failed"
  fi
  stop_cluster
  if [[ -n "$CLUSTER_DIR" && -d "$CLUSTER_DIR" ]]; then
    cp "$CLUSTER_DIR/server.log" "$LOGS/server.log" 2>/dev/null || true
    if [[ "${KEEP_CLUSTER:-0}" != 1 ]]; then
      rm -rf "$CLUSTER_DIR"
    fi
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# port_free <port>: nothing accepts connections on 127.0.0.1:<port>.
port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pick_port() {
  local port=${JOBRUNNER_TEST_PORT:-54329} last
  last=$((port + 50))
  while (( port < last )); do
    if port_free "$port"; then echo "$port"; return 0; fi
    port=$((port + 1))
  done
  return 1
}

psql_do() { # psql_do <db> <sql>
  "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$1" -c "$2"
}

# --- pg_regress-style output ----------------------------------------------------

# parse_regress <log> <tier>: read "All N tests passed" / "M of N tests failed".
parse_regress() {
  local log=$1 tier=$2 n m
  if n=$(grep -oE 'All [0-9]+ tests passed' "$log" | grep -oE '[0-9]+'); then
    result "$tier" "$n" 0
  elif m=$(grep -oE '[0-9]+ of [0-9]+ tests failed' "$log"); then
    n=$(awk '{print $3}' <<<"$m")
    m=$(awk '{print $1}' <<<"$m")
    result "$tier" $((n - m)) "$m"
  else
    return 1
  fi
}

# show_diffs <dir>: the first 300 lines of build/<dir>/regression.diffs, if any.
show_diffs() {
  local diffs=$BUILD/$1/regression.diffs
  if [[ -s "$diffs" ]]; then
    echo "    --- build/$1/regression.diffs:"
    head -n 300 "$diffs" | sed 's/^/    /'
  fi
}

# --- tiers ------------------------------------------------------------------------

tier_unit() {
  header unit "GoogleTest (make unit)"
  local log=$LOGS/unit.log rc=0 passed failed
  if ! compgen -G 'test/unit/*_test.cpp' >/dev/null; then
    empty unit "no test/unit/*_test.cpp"; return
  fi
  timeout "$TIER_TIMEOUT" make --no-print-directory unit >"$log" 2>&1 || rc=$?
  grep -E '^\[(==========|  PASSED  |  FAILED  |  SKIPPED )\]' "$log" | sed 's/^/    /' || true
  passed=$(sed -n 's/^\[  PASSED  \] \([0-9][0-9]*\) tests\{0,1\}\..*/\1/p' "$log" | tail -n 1)
  failed=$(sed -n 's/^\[  FAILED  \] \([0-9][0-9]*\) tests\{0,1\}, listed below.*/\1/p' "$log" | tail -n 1)
  if [[ -z "$passed" ]]; then
    show "$log" 60
    broken unit "no GoogleTest summary (build error or crash, exit $rc; see build/logs/unit.log)"
    return
  fi
  failed=${failed:-0}
  if (( rc != 0 && failed == 0 )); then
    show "$log" 60
    broken unit "make unit exited $rc after '$passed tests passed'"
    return
  fi
  (( failed == 0 )) || show "$log" 80
  result unit "$passed" "$failed"
}

tier_install() {
  header install "make install"
  local log=$LOGS/install.log
  if [[ "${SKIP_INSTALL:-0}" == 1 ]]; then
    printf -- '--- install skipped (SKIP_INSTALL=1)\n'
    return 0
  fi
  if as_root make --no-print-directory install >"$log" 2>&1; then
    printf -- '--- install ok\n'
    SUMMARY+=("$(printf '%-12s %-7s %s' install ok "make install")")
    return 0
  fi
  show "$log" 40
  broken install "make install failed (see build/logs/install.log)"
  return 1
}

# tier_cluster: start the cluster and create the test databases. Sets
# CLUSTER_UP and the DB_OK_* flags used by the tiers that need them.
DB_OK_IT=0 DB_OK_TAP=0 DB_OK_ISO=0
tier_cluster() {
  header cluster "throwaway PostgreSQL 15 cluster"
  local port envfile log=$LOGS/cluster.log
  if ! port=$(pick_port); then
    broken cluster "no free port near ${JOBRUNNER_TEST_PORT:-54329}"; return 1
  fi
  CLUSTER_DIR=$(mktemp -d /tmp/jobrunner-test.XXXXXX)
  envfile=$CLUSTER_DIR/env.sh
  if ! test/lib/cluster.sh start "$CLUSTER_DIR" "$port" >"$envfile" 2>"$log"; then
    show "$log" 50
    broken cluster "the cluster did not start"; return 1
  fi
  CLUSTER_UP=1
  # shellcheck disable=SC1090
  source "$envfile"
  SECRET=$(<"$CLUSTER_DIR/jwt_secret")
  export JOBRUNNER_SECRET=$SECRET  # pg_regress: tests check signatures with it
  export PGHOST PGPORT PGUSER=postgres
  echo "    PGHOST=$PGHOST PGPORT=$PGPORT data=$JOBRUNNER_DATADIR"

  # The roles every tier shares (PostgREST's, and an attacker's), once.
  if ! { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -d postgres -f test/lib/roles.sql &&
         psql_do postgres 'CREATE DATABASE jobrunner_it' &&
         psql_do postgres 'CREATE DATABASE jobrunner_tap' &&
         psql_do postgres 'CREATE DATABASE jobrunner_iso'; } >>"$log" 2>&1; then
    show "$log" 20
    broken cluster "could not create the test databases"; return 1
  fi
  if psql_do jobrunner_it 'CREATE EXTENSION pg_cron; CREATE EXTENSION pg_jobrunner;' >>"$log" 2>&1; then
    DB_OK_IT=1
  fi
  if psql_do jobrunner_tap 'CREATE EXTENSION pgtap; CREATE EXTENSION pg_jobrunner;' >>"$log" 2>&1; then
    DB_OK_TAP=1
  fi
  if psql_do jobrunner_iso 'CREATE EXTENSION pg_jobrunner;' >>"$log" 2>&1; then
    DB_OK_ISO=1
  fi
  if (( DB_OK_IT && DB_OK_TAP && DB_OK_ISO )); then
    printf -- '--- cluster ok (databases jobrunner_it, jobrunner_tap, jobrunner_iso)\n'
    SUMMARY+=("$(printf '%-12s %-7s %s' cluster ok "port $PGPORT")")
    return 0
  fi
  show "$log" 20
  broken cluster "CREATE EXTENSION failed (it=$DB_OK_IT tap=$DB_OK_TAP iso=$DB_OK_ISO)"
}

# regress_outputdir <dir>: a fresh output directory for pg_regress, whose
# expected/ is the repository's (pg_regress looks there before --inputdir).
regress_outputdir() {
  rm -rf "$1"; mkdir -p "$1"
  ln -s "$ROOT/expected" "$1/expected"
}

tier_regress() {
  header regress "pg_regress (test/sql, expected)"
  local log=$LOGS/regress.log rc=0 tests=()
  if [[ -f test/schedule ]]; then
    tests=(--schedule=test/schedule)
  else
    local f
    for f in test/sql/*.sql; do
      [[ -e "$f" ]] && tests+=("$(basename "$f" .sql)")
    done
  fi
  if (( ${#tests[@]} == 0 )); then empty regress "no test/sql/*.sql"; return; fi
  if (( ! CLUSTER_UP )); then broken regress "no cluster"; return; fi
  regress_outputdir "$BUILD/regress"
  timeout "$TIER_TIMEOUT" "$PGXS_TEST/regress/pg_regress" --bindir="$PGBIN" \
    --inputdir=test --outputdir="$BUILD/regress" --load-extension=pgcrypto --load-extension=pg_jobrunner \
    --host="$PGHOST" --port="$PGPORT" --user=postgres \
    --dbname=jobrunner_regress "${tests[@]}" >"$log" 2>&1 || rc=$?
  sed 's/^/    /' "$log"
  if ! parse_regress "$log" regress; then
    broken regress "pg_regress gave no result (exit $rc)"; return
  fi
  show_diffs regress
}

tier_pgtap() {
  header pgtap "pg_prove (test/pgtap)"
  local log=$LOGS/pgtap.log rc=0 files=() tests failed=0 line f
  for f in test/pgtap/*.sql; do [[ -e "$f" ]] && files+=("$f"); done
  if (( ${#files[@]} == 0 )); then empty pgtap "no test/pgtap/*.sql"; return; fi
  if (( ! DB_OK_TAP )); then broken pgtap "database jobrunner_tap is not ready"; return; fi
  timeout "$TIER_TIMEOUT" pg_prove -h "$PGHOST" -p "$PGPORT" -U postgres \
    -d jobrunner_tap "${files[@]}" >"$log" 2>&1 || rc=$?
  sed 's/^/    /' "$log"
  tests=$(sed -n 's/^Files=[0-9]*, Tests=\([0-9]*\),.*/\1/p' "$log" | tail -n 1)
  if [[ -z "$tests" ]] || ! grep -qE '^Result: (PASS|FAIL)' "$log"; then
    broken pgtap "pg_prove gave no result (exit $rc)"; return
  fi
  # Each file in the summary report: its failed assertions; a file that broke
  # some other way (bad plan, died, non-zero exit) adds one failure.
  local assertions_failed=0
  while IFS= read -r line; do
    f=$(sed -n 's/.*Failed: \([0-9]*\)).*/\1/p' <<<"$line")
    if [[ -n "$f" && "$f" -gt 0 ]]; then
      assertions_failed=$((assertions_failed + f))
    else
      failed=$((failed + 1))
    fi
  done < <(grep -E '\(Wstat: [0-9]+ Tests: [0-9]+ Failed: [0-9]+\)' "$log" || true)
  failed=$((failed + assertions_failed))
  if grep -q '^Result: FAIL' "$log" && (( failed == 0 )); then failed=1; fi
  (( assertions_failed <= tests )) || tests=$assertions_failed
  result pgtap $((tests - assertions_failed)) "$failed"
}

tier_isolation() {
  header isolation "pg_isolation_regress (test/isolation)"
  local log=$LOGS/isolation.log rc=0 specs=() f
  for f in test/isolation/specs/*.spec; do
    [[ -e "$f" ]] && specs+=("$(basename "$f" .spec)")
  done
  if (( ${#specs[@]} == 0 )); then empty isolation "no test/isolation/specs/*.spec"; return; fi
  if (( ! DB_OK_ISO )); then broken isolation "database jobrunner_iso is not ready"; return; fi
  rm -rf "$BUILD/isolation"; mkdir -p "$BUILD/isolation"
  # --use-existing: jobrunner_iso was made above with the extension in it (see
  # test/isolation/README).
  timeout "$TIER_TIMEOUT" "$PGXS_TEST/isolation/pg_isolation_regress" --bindir="$PGBIN" \
    --inputdir=test/isolation --outputdir="$BUILD/isolation" \
    --host="$PGHOST" --port="$PGPORT" --user=postgres \
    --dbname=jobrunner_iso --use-existing "${specs[@]}" >"$log" 2>&1 || rc=$?
  sed 's/^/    /' "$log"
  if ! parse_regress "$log" isolation; then
    broken isolation "pg_isolation_regress gave no result (exit $rc)"; return
  fi
  show_diffs isolation
}

# tier_upgrade: the released install scripts, updated to this version with
# ALTER EXTENSION ... UPDATE, end up with exactly the objects of a fresh
# install, keep every job, and pass the regression suite.
tier_upgrade() {
  header upgrade "ALTER EXTENSION pg_jobrunner UPDATE from every released version"
  local log=$LOGS/upgrade.log passed=0 failed=0 version current db before after rc
  if (( ! CLUSTER_UP )); then broken upgrade "no cluster"; return; fi
  current=$(sed -n "s/^default_version = '\(.*\)'/\1/p" pg_jobrunner.control)
  : >"$log"
  for f in sql/pg_jobrunner--*.sql; do
    version=$(basename "$f" .sql); version=${version#pg_jobrunner--}
    [[ "$version" == *--* || "$version" == "$current" ]] && continue
    db=jobrunner_upgrade_${version//./_}
    echo "    -- from $version"
    # 1. install the released version, fill it, update
    if psql_do postgres "DROP DATABASE IF EXISTS $db" >>"$LOGS/upgrade.log" 2>&1 &&
       psql_do postgres "CREATE DATABASE $db" >>"$log" 2>&1 &&
       psql_do "$db" "CREATE EXTENSION pg_jobrunner VERSION '$version'" >>"$log" 2>&1 &&
       "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$db" -f test/upgrade/populate-$version.sql >>"$log" 2>&1 &&
       before=$("$PGBIN/psql" -X -A -d "$db" -f test/upgrade/job-states.sql 2>>"$log") &&
       psql_do "$db" "ALTER EXTENSION pg_jobrunner UPDATE" >>"$log" 2>&1 &&
       [[ $("$PGBIN/psql" -X -A -t -d "$db" -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_jobrunner'") == "$current" ]]; then
      passed=$((passed + 1)); echo "       update $version -> $current ... ok"
    else
      failed=$((failed + 1)); echo "       update $version -> $current ... FAILED"; show "$log" 30
      continue
    fi
    # 2. the same objects as a fresh install
    if schema_matches_fresh "$db" "$current" >>"$log" 2>&1; then
      passed=$((passed + 1)); echo "       schema equals a fresh $current install ... ok"
    else
      failed=$((failed + 1)); echo "       schema equals a fresh $current install ... FAILED"
      show "$LOGS/upgrade-schema.diff" 60
    fi
    # 3. every job as it was
    after=$("$PGBIN/psql" -X -A -d "$db" -f test/upgrade/job-states.sql 2>>"$log" || true)
    if [[ -n "$before" && "$before" == "$after" ]]; then
      passed=$((passed + 1)); echo "       jobs and logs unchanged ... ok"
    else
      failed=$((failed + 1)); echo "       jobs and logs unchanged ... FAILED"
      diff <(echo "$before") <(echo "$after") | head -n 30 | sed 's/^/       /'
    fi
    # 4. the regression suite on the updated database (all but install,
    # which checks a fresh one); pg_regress loads no extension into an
    # existing database, so pgcrypto (REGRESS_OPTS) comes here
    regress_outputdir "$BUILD/upgrade-regress"
    rc=0
    psql_do "$db" "CREATE EXTENSION IF NOT EXISTS pgcrypto" >>"$log" 2>&1 || true
    timeout "$TIER_TIMEOUT" "$PGXS_TEST/regress/pg_regress" --bindir="$PGBIN" \
      --inputdir=test --outputdir="$BUILD/upgrade-regress" \
      --host="$PGHOST" --port="$PGPORT" --user=postgres --use-existing \
      --dbname="$db" $(grep -v '^test: install$' test/schedule | sed -n 's/^test: //p') \
      >"$LOGS/upgrade-regress.log" 2>&1 || rc=$?
    local n m
    if n=$(grep -oE 'All [0-9]+ tests passed' "$LOGS/upgrade-regress.log" | grep -oE '[0-9]+'); then
      passed=$((passed + n)); echo "       regression suite on the updated database: $n passed"
    elif m=$(grep -oE '[0-9]+ of [0-9]+ tests failed' "$LOGS/upgrade-regress.log"); then
      n=$(awk '{print $3}' <<<"$m"); m=$(awk '{print $1}' <<<"$m")
      passed=$((passed + n - m)); failed=$((failed + m))
      echo "       regression suite on the updated database: $m of $n failed"
      show_diffs upgrade-regress
    else
      failed=$((failed + 1)); echo "       regression suite on the updated database gave no result (exit $rc)"
      show "$LOGS/upgrade-regress.log" 20
    fi
  done
  if (( passed + failed == 0 )); then empty upgrade "no released install script in sql/"; return; fi
  result upgrade "$passed" "$failed"
}

# schema_matches_fresh <db> <version>: the extension's objects in <db> are
# those of a fresh install of <version> (pg_dump --binary-upgrade lists every
# member of an extension; oids, transaction ids, sequence positions and the
# stored defaults of columns added by ALTER TABLE are left out).
schema_matches_fresh() {
  local db=$1 version=$2 fresh=jobrunner_upgrade_fresh
  psql_do postgres "DROP DATABASE IF EXISTS $fresh" && psql_do postgres "CREATE DATABASE $fresh" &&
    psql_do "$fresh" "CREATE EXTENSION pg_jobrunner VERSION '$version'" || return 1
  local d
  for d in "$db" "$fresh"; do
    "$PGBIN/pg_dump" --schema-only --binary-upgrade -h "$PGHOST" -p "$PGPORT" -U postgres -d "$d" |
      grep -vE "^SELECT pg_catalog\.(binary_upgrade_set|setval)|^\\\\(un)?restrict |relfrozenxid|^WHERE oid = '" |
      grep -v '^-- set missing value\.$' |
      sed -E "s/'\{[0-9,]+\}'/'{oids}'/g" | cat -s >"$BUILD/upgrade-$d.schema" || return 1
  done
  diff -u "$BUILD/upgrade-$db.schema" "$BUILD/upgrade-$fresh.schema" >"$LOGS/upgrade-schema.diff"
}

# parse_unittest <log>: print "passed failed skipped" from unittest's closing
# lines ("Ran N tests", "OK (skipped=S)" / "FAILED (failures=F, errors=E)").
parse_unittest() {
  local log=$1 ran last failures errors skipped unexpected
  ran=$(sed -n 's/^Ran \([0-9]*\) tests\{0,1\} in .*/\1/p' "$log" | tail -n 1)
  [[ -n "$ran" ]] || return 1
  last=$(grep -E '^(OK|FAILED)( \(.*\))?$' "$log" | tail -n 1)
  [[ -n "$last" ]] || return 1
  failures=$(grep -oE 'failures=[0-9]+' <<<"$last" | cut -d= -f2 || true)
  errors=$(grep -oE 'errors=[0-9]+' <<<"$last" | cut -d= -f2 || true)
  skipped=$(grep -oE 'skipped=[0-9]+' <<<"$last" | cut -d= -f2 || true)
  unexpected=$(grep -oE 'unexpected successes=[0-9]+' <<<"$last" | cut -d= -f2 || true)
  failures=$(( ${failures:-0} + ${errors:-0} + ${unexpected:-0} ))
  skipped=${skipped:-0}
  # A test whose body and cleanup both fail is reported twice, and a class
  # whose setUpClass fails runs none: count each failing test once, and
  # never report fewer than no tests passed.
  local distinct
  distinct=$(sed -nE 's/^(FAIL|ERROR): ([^ ]+ \([^)]*\)).*/\2/p' "$log" | sort -u | wc -l)
  (( distinct > 0 && distinct < failures )) && failures=$distinct
  local passed=$((ran - failures - skipped))
  (( passed >= 0 )) || passed=0
  echo "$passed $failures $skipped"
}

tier_integration() {
  header integration "Python unittest (test/integration, $PY)"
  local files=() f mod log rc counts p q s passed=0 failed=0 skipped=0 broke=0
  for f in test/integration/test_*.py; do
    [[ -e "$f" ]] || continue
    if [[ -n "${INTEGRATION_TESTS:-}" && " $INTEGRATION_TESTS " != *" $(basename "$f" .py) "* ]]; then continue; fi
    files+=("$f")
  done
  if (( ${#files[@]} == 0 )); then empty integration "no test/integration/test_*.py"; return; fi
  if [[ ! -x "$PY" ]]; then broken integration "$PY is missing"; return; fi
  if (( ! CLUSTER_UP )); then broken integration "no cluster"; return; fi
  for f in "${files[@]}"; do
    mod=$(basename "$f" .py)
    log=$LOGS/integration-$mod.log
    rc=0
    echo "    -- $mod"
    (
      cd test/integration
      if (( CLUSTER_UP )); then
        export PGHOST PGPORT
      else  # never fall through to a default cluster on this machine
        export PGHOST=/nonexistent/jobrunner-test-cluster PGPORT=1
      fi
      export PGUSER=postgres PGDATABASE=jobrunner_it
      export JOBRUNNER_SECRET="$SECRET" JOBRUNNER_DATADIR="${JOBRUNNER_DATADIR:-}"
      export JOBRUNNER_PGCTL="$PGBIN/pg_ctl" JOBRUNNER_LOGFILE="${JOBRUNNER_LOGFILE:-}"
      export PYTHONDONTWRITEBYTECODE=1
      unset PYTHONPATH PYTHONHOME
      exec timeout "$TIER_TIMEOUT" "$PY" -m unittest -v "$mod"
    ) >"$log" 2>&1 </dev/null || rc=$?
    if counts=$(parse_unittest "$log"); then
      read -r p q s <<<"$counts"
      passed=$((passed + p)); failed=$((failed + q)); skipped=$((skipped + s))
      if (( q > 0 )); then
        head -n 400 "$log" | sed 's/^/       /'
      else
        grep -E ' \.\.\. ' "$log" | sed 's/^/       /' || true
      fi
      printf '       %s: passed %d, failed %d, skipped %d\n' "$mod" "$p" "$q" "$s"
    else
      show "$log" 60
      printf '       %s: no unittest result (exit %d)\n' "$mod" "$rc"
      broke=$((broke + 1))
    fi
  done
  (( skipped == 0 )) || echo "    ($skipped skipped)"
  result integration "$passed" "$failed"
  if (( broke > 0 )); then broken integration "$broke file(s) gave no unittest result"; fi
}

# tier_log_hygiene: the contract says neither the secret nor a token the
# extension minted ever reaches the server log.
tier_log_hygiene() {
  header log-hygiene "no secret or minted token in the server log"
  local logfile=$CLUSTER_DIR/server.log out
  if [[ -z "$CLUSTER_DIR" || ! -f "$logfile" || -z "$SECRET" ]]; then
    broken log-hygiene "no server log"; return
  fi
  if ! out=$(JOBRUNNER_SECRET=$SECRET "$PY" - "$logfile" <<'PYEOF'
import os, re, sys
import jwt
secret = os.environ["JOBRUNNER_SECRET"]
text = open(sys.argv[1], "rb").read().decode("utf-8", "replace")
passed = failed = 0
if secret in text:
    failed += 1; print("    the jwt secret appears in the server log")
else:
    passed += 1
leaked = 0
for tok in set(re.findall(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", text)):
    try:
        jwt.decode(tok, secret, algorithms=["HS256"], options={"verify_aud": False, "verify_exp": False, "verify_iat": False})
        leaked += 1
    except jwt.PyJWTError:
        pass
if leaked:
    failed += 1; print("    %d token(s) signed with the cluster secret appear in the server log" % leaked)
else:
    passed += 1
print(passed, failed)
PYEOF
  ); then
    broken log-hygiene "the check did not run"; return
  fi
  [[ $(wc -l <<<"$out") -le 1 ]] || sed '$d' <<<"$out"
  local passed failed
  read -r passed failed < <(tail -n 1 <<<"$out")
  result log-hygiene "$passed" "$failed"
}

# tier_format: every tracked C++ file is as clang-format (Debian's, with
# .clang-format) would write it; one check per file.
tier_format() {
  header format "clang-format --dry-run --Werror (src, test/unit)"
  local f passed=0 failed=0
  if ! command -v clang-format >/dev/null; then broken format "clang-format is missing"; return; fi
  while IFS= read -r f; do
    if clang-format --dry-run --Werror "$f" >"$LOGS/format.log" 2>&1; then
      passed=$((passed + 1))
    else
      failed=$((failed + 1)); echo "    $f is not formatted (clang-format -i $f):"
      head -n 20 "$LOGS/format.log" | sed 's/^/      /'
    fi
  done < <(git ls-files 'src/*.cpp' 'src/*.hpp' 'test/unit/*.cpp' 'test/unit/*.hpp')
  result format "$passed" "$failed"
}

# tier_monitoring: postgres_exporter with monitoring/postgres_exporter.yml
# against the test cluster, and promtool on the alerting rules.
tier_monitoring() {
  header monitoring "postgres_exporter and promtool (test/monitoring/run.sh)"
  local log=$LOGS/monitoring.log rc=0 counts
  if (( ! CLUSTER_UP )); then broken monitoring "no cluster"; return; fi
  PGDATABASE=jobrunner_it JOBRUNNER_SECRET="$SECRET" MONITOR_OUTPUT="$LOGS" \
    timeout "$TIER_TIMEOUT" test/monitoring/run.sh >"$log" 2>&1 || rc=$?
  grep -vE '^[0-9]+ passed, [0-9]+ failed$' "$log" | sed 's/^/    /' || true
  if counts=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1); then
    result monitoring "$(awk '{print $1}' <<<"$counts")" "$(awk '{print $3}' <<<"$counts")"
  else
    broken monitoring "test/monitoring/run.sh gave no result (exit $rc)"
  fi
}

# tier_script <tier> <script> <what>: a tier that is a script of its own,
# printing its checks and ending with "N passed, M failed".
tier_script() {
  local tier=$1 script=$2 log=$LOGS/$1.log rc=0 last passed failed
  header "$tier" "$3"
  if [[ ! -x "$script" ]]; then broken "$tier" "$script is missing"; return; fi
  timeout "$TIER_TIMEOUT" "$script" >"$log" 2>&1 || rc=$?
  sed '$d' "$log" | sed 's/^/    /'
  last=$(tail -n 1 "$log")
  if [[ "$last" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    passed=${BASH_REMATCH[1]} failed=${BASH_REMATCH[2]}
    (( rc == 0 || failed > 0 )) || failed=1  # a failing exit without a failed check
    result "$tier" "$passed" "$failed"
  else
    broken "$tier" "$script gave no result (exit $rc)"
  fi
}

# --- main ---------------------------------------------------------------------------

started=$SECONDS
# wanted <tier>: the tier is in $TIERS (all tiers when TIERS is unset).
wanted() { [[ -z "${TIERS:-}" || " $TIERS " == *" $1 "* ]]; }
wanted format && tier_format
wanted unit && tier_unit
if tier_install; then
  tier_cluster || true
else
  echo "    (no cluster: the extension is not installed)"
fi
wanted regress && tier_regress
wanted pgtap && tier_pgtap
wanted isolation && tier_isolation
wanted upgrade && tier_upgrade
wanted integration && tier_integration
wanted monitoring && tier_monitoring
if (( CLUSTER_UP )); then
  stop_cluster
  tier_log_hygiene
fi
# Last: it swaps the installed extension for the Debian package's and back,
# so no other tier may run beside it.
if wanted package && (( ! ${SKIP_INSTALL:-0} )) && [[ $PGBIN == /usr/lib/postgresql/15/bin ]]; then
  tier_script package test/package/run.sh "the Debian package and the PGXN distribution of HEAD"
fi

if (( TOTAL_FAILED > 0 )) && [[ -n "$CLUSTER_DIR" && -f "$CLUSTER_DIR/server.log" ]]; then
  echo
  echo "=== last 60 lines of the server log ($CLUSTER_DIR/server.log, kept in build/logs/server.log)"
  show "$CLUSTER_DIR/server.log" 60
fi

echo
echo "=== summary ($((SECONDS - started))s)"
for line in "${SUMMARY[@]}"; do echo "    $line"; done
echo "$TOTAL_PASSED passed, $TOTAL_FAILED failed"
SUMMARY_DONE=1
if (( TOTAL_FAILED > 0 )); then exit 1; fi
exit 0
