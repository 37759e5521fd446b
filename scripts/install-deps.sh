#!/usr/bin/env bash
# install-deps.sh — install the Debian 12 packages pg_jobrunner needs to build,
# test and demo (PostgreSQL 15 + dev headers, pg_cron, pgTAP, libcurl, OpenSSL,
# GoogleTest, Python with psycopg2/PyJWT, nginx, wrk, clang-format, the Debian
# packaging tools, postgres_exporter and promtool, gnuplot).
#
# Idempotent: when every package is already installed it does no apt work at
# all. Runs as root, or through sudo when not root. It never stops or changes
# the Debian default cluster; the tests run their own throwaway cluster.
set -euo pipefail

# Profiles: all (default: build, test, demo, bench), build (compile and
# install the extension only), runtime (what a server running it needs). The
# Docker image uses build and runtime, so the shipped path is the tested one.
BUILD_PACKAGES=(build-essential g++ make postgresql-server-dev-15
                libcurl4-openssl-dev libssl-dev ca-certificates)
RUNTIME_PACKAGES=(postgresql-15-cron libcurl4 ca-certificates)
case "${1:-all}" in
  all)
    PACKAGES=(
      "${BUILD_PACKAGES[@]}"
      postgresql-15 postgresql-15-cron postgresql-15-pgtap
      libtap-parser-sourcehandler-pgtap-perl libgtest-dev
      python3 python3-psycopg2 python3-jwt
      nginx-light wrk
      # formatting check, Debian package build, monitoring, bench charts
      clang-format debhelper dpkg-dev fakeroot postgresql-server-dev-all
      prometheus-postgres-exporter prometheus gnuplot-nox
    ) ;;
  build) PACKAGES=("${BUILD_PACKAGES[@]}") ;;
  runtime) PACKAGES=("${RUNTIME_PACKAGES[@]}") ;;
  *) echo "usage: install-deps.sh [all|build|runtime]" >&2; exit 2 ;;
esac

# missing_packages: print the packages dpkg does not report as installed.
missing_packages() {
  local pkg status
  for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "installed" ]]; then
      printf '%s\n' "$pkg"
    fi
  done
}

mapfile -t missing < <(missing_packages)
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "install-deps: not root and no sudo; install: ${missing[*]}" >&2
    exit 1
  fi
  SUDO=(sudo)
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y --no-install-recommends "${missing[@]}"

mapfile -t still_missing < <(missing_packages)
if [[ ${#still_missing[@]} -ne 0 ]]; then
  echo "install-deps: still missing after install: ${still_missing[*]}" >&2
  exit 1
fi
echo "install-deps: done"
