#!/usr/bin/env bash
# run.sh — the package tier: the committed tree (git archive HEAD) as PGXN and
# Debian see it.
#
#   test/package/run.sh            from the repository root, as root
#
# 1. META.json against the PGXN Meta Spec 1.0.0, its version against the
#    control file's, and the zip of `make dist` (test/package/check_meta.py).
# 2. dpkg-buildpackage -us -uc -b (debian/: pg_buildext; the regression suite
#    runs once at build time), the .deb's file list, dpkg -i, the regression
#    suite against the installed package (debian/tests/installcheck: pg_buildext
#    installcheck in a throwaway pg_virtualenv cluster), dpkg -r, and the
#    tree's own build put back with `make install` from the repository root.
#
# Prints "    <check> ... ok|FAILED" per check and ends with "N passed, M
# failed"; exit 0 iff M == 0. Everything is built in a temporary directory,
# removed at the end (KEEP_TMP=1 keeps it, for its logs). While it runs the
# system's pg_jobrunner files are the package's, and between dpkg -r and make
# install they are briefly absent: do not run it beside another tier that
# creates the extension.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$(pwd -P)
PKG=postgresql-15-jobrunner
LIBDIR=/usr/lib/postgresql/15/lib
EXTDIR=/usr/share/postgresql/15/extension
export LC_ALL=C.UTF-8

PASSED=0
FAILED=0
TMP=
INSTALLED=0   # 1 from dpkg -i until the package is removed again
DPKG_OK=0     # 1 when dpkg -i installed it
started=$SECONDS

# ok / failed <check> [log]: print the check's line, count it, show a log's tail.
ok() { printf '    %s ... ok\n' "$1"; PASSED=$((PASSED + 1)); }
failed() {
  printf '    %s ... FAILED\n' "$1"; FAILED=$((FAILED + 1))
  if [[ -n "${2:-}" && -f "$2" ]]; then tail -n 40 "$2" | sed 's/^/        /'; fi
}

# finish: the closing count line and the exit status.
FINISHED=0
finish() {
  printf '    (%ds)\n' $((SECONDS - started))
  echo "$PASSED passed, $FAILED failed"
  FINISHED=1
  (( FAILED == 0 ))
}

# restore: remove the package, put back the tree's own build (make install).
restore() {
  local log=$TMP/dpkg-r.log
  if dpkg -r "$PKG" >"$log" 2>&1 &&
     [[ $(dpkg-query -W -f='${db:Status-Status}' "$PKG" 2>/dev/null) != installed ]] &&
     { (( ! DPKG_OK )) || [[ ! -e $LIBDIR/pg_jobrunner.so ]]; }; then
    ok "dpkg -r $PKG removes it and its files"
  else
    failed "dpkg -r $PKG removes it and its files" "$log"
  fi
  INSTALLED=0
  if make -C "$ROOT" --no-print-directory install >"$TMP/make-install.log" 2>&1 &&
     [[ -e $LIBDIR/pg_jobrunner.so && -e $EXTDIR/pg_jobrunner.control ]]; then
    ok "make install from $ROOT puts the tree's build back"
  else
    failed "make install from $ROOT puts the tree's build back" "$TMP/make-install.log"
  fi
}

# cleanup: on any exit, never leave the package installed or the temp dir.
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  local rc=$?
  if (( ! FINISHED )); then  # stopped early: still close on one count line
    echo "    stopped early (exit $rc)"
    echo "$PASSED passed, $((FAILED + 1)) failed"
  fi
  if (( INSTALLED )); then
    dpkg -r "$PKG" >/dev/null 2>&1 || true
    make -C "$ROOT" --no-print-directory install >/dev/null 2>&1 || true
  fi
  if [[ -n "$TMP" && "${KEEP_TMP:-0}" != 1 ]]; then rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ $(id -u) -ne 0 ]]; then
  failed "running as root (dpkg -i / -r need it)"
  finish; exit
fi

TMP=$(mktemp -d /tmp/jobrunner-package.XXXXXX)
chmod 755 "$TMP"   # the build-time test cluster (user postgres) reads debian/<pkg> in it
[[ "${KEEP_TMP:-0}" == 1 ]] && echo "    (temporary directory: $TMP)"
TREE=$TMP/pg-jobrunner
mkdir "$TREE"
if ! git -C "$ROOT" archive HEAD | tar -x -C "$TREE"; then
  failed "git archive HEAD"
  finish; exit
fi
echo "    (HEAD $(git -C "$ROOT" rev-parse --short HEAD))"

# --- PGXN ---------------------------------------------------------------------
py_checks() { # py_checks <args...>: run check_meta.py, count its lines
  local line
  while IFS= read -r line; do
    echo "$line"
    case $line in
      *' ... ok') PASSED=$((PASSED + 1)) ;;
      *' ... FAILED') FAILED=$((FAILED + 1)) ;;
    esac
  done < <(/usr/bin/python3 "$TREE/test/package/check_meta.py" "$@" || true)
}
py_checks meta "$TREE"
VERSION=$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$TREE/pg_jobrunner.control")
ZIP=$TREE/build/dist/pg_jobrunner-$VERSION.zip
if GIT_DIR=$(git -C "$ROOT" rev-parse --absolute-git-dir) \
     make -C "$TREE" --no-print-directory dist >"$TMP/dist.log" 2>&1 && [[ -f "$ZIP" ]]; then
  py_checks dist "$TREE" "$ZIP"
  rm -rf "$TREE/build"
else
  failed "make dist writes build/dist/pg_jobrunner-$VERSION.zip" "$TMP/dist.log"
fi

# --- Debian package -------------------------------------------------------------
DEBVERSION=$(dpkg-parsechangelog -l "$TREE/debian/changelog" -S Version)
DEB=$TMP/${PKG}_${DEBVERSION}_$(dpkg --print-architecture).deb
if [[ "${DEBVERSION%-*}" == "$VERSION" ]]; then
  ok "debian/changelog version $DEBVERSION is default_version $VERSION"
else
  failed "debian/changelog version $DEBVERSION is default_version $VERSION"
fi

if (cd "$TREE" && timeout 600 dpkg-buildpackage -us -uc -b) >"$TMP/build.log" 2>&1 && [[ -f "$DEB" ]]; then
  ok "dpkg-buildpackage -us -uc -b builds $(basename "$DEB") (suite at build time: $(grep -oE 'All [0-9]+ tests passed' "$TMP/build.log" | head -n 1))"
else
  failed "dpkg-buildpackage -us -uc -b builds $(basename "$DEB")" "$TMP/build.log"
  finish; exit
fi

missing=()
dpkg-deb -c "$DEB" | awk '{print $NF}' >"$TMP/files"
for f in "$LIBDIR/pg_jobrunner.so" "$EXTDIR/pg_jobrunner.control" \
         "$EXTDIR/pg_jobrunner--$VERSION.sql" "$EXTDIR/pg_jobrunner--0.1.0.sql" \
         "$EXTDIR/pg_jobrunner--0.1.0--$VERSION.sql"; do
  grep -qxF ".$f" "$TMP/files" || missing+=("$f")
done
if (( ${#missing[@]} == 0 )); then
  ok "dpkg-deb -c lists the library, the control file and the 3 SQL scripts"
else
  failed "dpkg-deb -c lists the library, the control file and the 3 SQL scripts (missing: ${missing[*]})"
fi

INSTALLED=1
if dpkg -i "$DEB" >"$TMP/dpkg-i.log" 2>&1 &&
   [[ $(dpkg-query -W -f='${Status} ${Version}' "$PKG") == "install ok installed $DEBVERSION" ]]; then
  ok "dpkg -i installs $PKG $DEBVERSION"
  DPKG_OK=1
  log=$TMP/installcheck.log
  if (cd "$TREE" && timeout 600 debian/tests/installcheck) >"$log" 2>&1 &&
     n=$(grep -oE 'All [0-9]+ tests passed' "$log"); then
    ok "pg_buildext installcheck against the installed package: $n"
  else
    failed "pg_buildext installcheck against the installed package" "$log"
  fi
else
  failed "dpkg -i installs $PKG $DEBVERSION" "$TMP/dpkg-i.log"
fi
restore

finish
