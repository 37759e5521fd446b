#!/usr/bin/env bash
# build-sql.sh — write an extension script from the SQL sources.
#
#   scripts/build-sql.sh install <version>            pg_jobrunner--<version>.sql
#   scripts/build-sql.sh update <from> <version>      pg_jobrunner--<from>--<version>.sql
#
# Both start with sql/guard.sql (the schema must belong to a superuser).
# An install script is sql/install/tables.sql followed by every file of
# sql/functions/ in the order of sql/functions/ORDER. An update script from
# <from> is every catalog change of sql/updates/ from <from> onwards, in
# version order, followed by the same function files: functions, views and
# grants are written CREATE OR REPLACE and replayed, so an update script holds
# only what ALTER must change, and an updated database ends up with exactly
# the objects of a fresh install.
set -euo pipefail
cd "$(dirname "$0")/.."

# functions: the files of sql/functions/, in the order they must run.
functions() {
  local f
  while read -r f; do
    [[ -z "$f" || "$f" == \#* ]] && continue
    [[ -f "sql/functions/$f" ]] || { echo "build-sql.sh: sql/functions/$f is missing" >&2; exit 1; }
    printf '\n-- >>> sql/functions/%s\n' "$f"
    cat "sql/functions/$f"
  done < sql/functions/ORDER
}

# version_ge <a> <b>: a >= b, for dotted version numbers.
version_ge() {
  [[ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -n 1)" == "$1" ]]
}

case "${1:-}" in
  install)
    [[ $# -eq 2 ]] || { echo "usage: $0 install <version>" >&2; exit 2; }
    printf -- '-- pg_jobrunner %s install script, built from sql/ by scripts/build-sql.sh.\n' "$2"
    printf '\\echo Use "CREATE EXTENSION pg_jobrunner" to load this file. \\quit\n'
    printf '\n-- >>> sql/guard.sql\n'
    cat sql/guard.sql
    printf '\n-- >>> sql/install/tables.sql\n'
    cat sql/install/tables.sql
    functions
    ;;
  update)
    [[ $# -eq 3 ]] || { echo "usage: $0 update <from> <version>" >&2; exit 2; }
    from=$2 to=$3 found=0
    printf -- '-- pg_jobrunner %s → %s update script, built from sql/ by scripts/build-sql.sh.\n' "$from" "$to"
    printf '\\echo Use "ALTER EXTENSION pg_jobrunner UPDATE TO '"'"'%s'"'"'" to load this file. \\quit\n' "$to"
    printf '\n-- >>> sql/guard.sql\n'
    cat sql/guard.sql
    for f in $(ls sql/updates/*--*.sql | sort -V); do
      step=$(basename "$f" .sql)
      if version_ge "${step%%--*}" "$from" && version_ge "$to" "${step##*--}"; then
        printf '\n-- >>> %s\n' "$f"
        cat "$f"
        found=1
      fi
    done
    (( found )) || { echo "build-sql.sh: no sql/updates/ step from $from" >&2; exit 1; }
    functions
    ;;
  *) sed -n '3,5p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
