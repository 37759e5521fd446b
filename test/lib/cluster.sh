#!/usr/bin/env bash
# cluster.sh — start and stop a throwaway PostgreSQL 15 cluster for the tests.
#
#   test/lib/cluster.sh start <dir> <port> [extra-conf-file]
#   test/lib/cluster.sh stop  <dir>
#   test/lib/cluster.sh status <dir>
#
# Layout under <dir> (created if missing, owned by the postgres OS user):
#   <dir>/data         the data directory (initdb'd on first start)
#   <dir>/.s.PGSQL.N   the unix socket (the data dir's parent)
#   <dir>/server.log   the server log (logging_collector off)
#   <dir>/jwt_secret   the per-cluster random HS256 secret (48 characters)
#
# `start` prints the environment to use on stdout, in a form for eval:
#   eval "$(test/lib/cluster.sh start /tmp/x 54329)"
# Everything else goes to stderr. Lines in the extra conf file are appended
# after the defaults, so they override them (e.g. shared_preload_libraries).
#
# As root, initdb/pg_ctl run as the postgres OS user (runuser); as any other
# user, they run as that user. Callers trap EXIT and call `stop`.
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PG_OS_USER=${PG_OS_USER:-postgres}
READY_DEADLINE=${READY_DEADLINE:-60}

die() { echo "cluster.sh: $*" >&2; exit 1; }
note() { echo "cluster.sh: $*" >&2; }

usage() {
  sed -n '3,6p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# as_pg: run a command as the cluster's OS user, from a directory it can read.
as_pg() {
  local dir=$1; shift
  if [[ $(id -u) -eq 0 && "$PG_OS_USER" != root ]]; then
    (cd "$dir" && runuser -u "$PG_OS_USER" -- "$@")
  else
    (cd "$dir" && "$@")
  fi
}

# new_secret: print 48 random letters and digits (no pipes, so no SIGPIPE).
new_secret() {
  local raw
  raw=$(LC_ALL=C tr -dc 'A-Za-z0-9' < <(head -c 2048 /dev/urandom))
  [[ ${#raw} -ge 48 ]] || die "could not generate a secret"
  printf '%s' "${raw:0:48}"
}

# abs_dir: print the absolute path of a directory, creating it.
abs_dir() {
  mkdir -p "$1"
  (cd "$1" && pwd -P)
}

# write_conf: the test settings, appended to postgresql.conf on every start.
write_conf() {
  local dir=$1 port=$2 extra=$3 secret=$4 conf=$1/data/postgresql.conf
  # Drop what a previous start appended, then append the current settings.
  if grep -q '^# >>> pg_jobrunner test settings' "$conf"; then
    sed -i '/^# >>> pg_jobrunner test settings/,$d' "$conf"
  fi
  {
    echo "# >>> pg_jobrunner test settings (written by test/lib/cluster.sh)"
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $port"
    echo "unix_socket_directories = '$dir'"
    echo "fsync = off"
    echo "synchronous_commit = on"
    echo "full_page_writes = off"
    echo "logging_collector = off"
    echo "max_connections = 100"
    echo "max_worker_processes = 16"
    echo "max_prepared_transactions = 4"  # cancel_job refuses PREPARE: tested
    echo "shared_preload_libraries = 'pg_jobrunner,pg_cron'"
    echo "cron.database_name = 'jobrunner_it'"
    echo "jobrunner.database_name = 'jobrunner_it'"
    echo "jobrunner.jwt_secret = '$secret'"
    echo "jobrunner.poll_interval = '1s'"
    if [[ -n "$extra" ]]; then
      echo "# from $extra"
      cat "$extra"
    fi
  } >> "$conf"
}

# wait_ready: poll pg_isready until the server accepts connections or the
# deadline passes.
wait_ready() {
  local dir=$1 port=$2 deadline=$((SECONDS + READY_DEADLINE))
  until "$PGBIN/pg_isready" -q -h "$dir" -p "$port" -U postgres -d postgres -t 2; do
    if (( SECONDS >= deadline )); then
      return 1
    fi
    sleep 0.1
  done
}

cmd_start() {
  [[ $# -ge 2 && $# -le 3 ]] || usage
  local dir port=$2 extra=${3:-} secret
  [[ "$port" =~ ^[0-9]+$ ]] || die "port must be a number: $port"
  if [[ -n "$extra" ]]; then
    [[ -r "$extra" ]] || die "cannot read extra conf file: $extra"
    extra=$(cd "$(dirname "$extra")" && pwd -P)/$(basename "$extra")
  fi
  dir=$(abs_dir "$1")
  (( ${#dir} < 90 )) || die "path too long for a unix socket: $dir"
  if [[ $(id -u) -eq 0 ]]; then
    chown "$PG_OS_USER": "$dir"
    chmod 0750 "$dir"
    as_pg "$dir" test -w "$dir" ||
      die "$PG_OS_USER cannot write $dir (is a parent directory closed to it?)"
  fi

  if [[ -f "$dir/data/postmaster.pid" ]] &&
     as_pg "$dir" "$PGBIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    die "a server is already running in $dir/data (stop it first)"
  fi

  if [[ ! -f "$dir/data/PG_VERSION" ]]; then
    note "initdb $dir/data"
    as_pg "$dir" "$PGBIN/initdb" -D "$dir/data" -U postgres --auth=trust \
      --encoding=UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1 ||
      { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  fi

  if [[ -s "$dir/jwt_secret" ]]; then
    secret=$(<"$dir/jwt_secret")
  else
    secret=$(new_secret)
    (umask 077 && printf '%s\n' "$secret" > "$dir/jwt_secret")
  fi
  write_conf "$dir" "$port" "$extra" "$secret"

  note "starting on 127.0.0.1:$port, socket in $dir, log $dir/server.log"
  if ! as_pg "$dir" "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" \
      -w -t "$READY_DEADLINE" start >/dev/null; then
    tail -n 40 "$dir/server.log" >&2 2>/dev/null || true
    die "the server did not start"
  fi
  if ! wait_ready "$dir" "$port"; then
    tail -n 40 "$dir/server.log" >&2 2>/dev/null || true
    die "the server did not accept connections within ${READY_DEADLINE}s"
  fi

  echo "export PGHOST='$dir'"
  echo "export PGPORT='$port'"
  echo "export PGUSER='postgres'"
  echo "export JOBRUNNER_DATADIR='$dir/data'"
  echo "export JOBRUNNER_LOGFILE='$dir/server.log'"
  echo "export JOBRUNNER_PGCTL='$PGBIN/pg_ctl'"
}

cmd_stop() {
  [[ $# -eq 1 ]] || usage
  local dir=$1 pid
  [[ -d "$dir/data" ]] || { note "no cluster in $dir"; return 0; }
  dir=$(cd "$dir" && pwd -P)
  [[ -f "$dir/data/postmaster.pid" ]] || return 0
  if as_pg "$dir" "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1; then
    return 0
  fi
  note "fast shutdown failed; trying immediate"
  if as_pg "$dir" "$PGBIN/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1; then
    return 0
  fi
  # Last resort: the postmaster pid is the first line of postmaster.pid.
  if [[ -f "$dir/data/postmaster.pid" ]]; then
    pid=$(head -n 1 "$dir/data/postmaster.pid")
    if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
      note "killing postmaster $pid"
      kill -9 "$pid" 2>/dev/null || true
      return 0
    fi
  fi
  return 0
}

cmd_status() {
  [[ $# -eq 1 ]] || usage
  [[ -d "$1/data" ]] || { echo "no cluster"; return 3; }
  local dir
  dir=$(cd "$1" && pwd -P)
  as_pg "$dir" "$PGBIN/pg_ctl" -D "$dir/data" status
}

[[ $# -ge 1 ]] || usage
action=$1; shift
case "$action" in
  start) cmd_start "$@" ;;
  stop) cmd_stop "$@" ;;
  status) cmd_status "$@" ;;
  *) usage ;;
esac
