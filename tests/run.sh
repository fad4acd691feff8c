#!/usr/bin/env bash
# Runs mproc's whole test suite (Release build: unit tests, examples, consumer
# tests). Installs the test dependencies first when they are missing: with
# apt-get when run as root, otherwise it prints the one command to run.
set -euo pipefail
cd "$(dirname "$0")/.."

have_catch2() {
  local d
  for d in /usr/lib/cmake /usr/lib/*/cmake /usr/share/cmake /usr/local/lib/cmake /usr/local/lib/*/cmake /usr/local/share/cmake; do
    [ -f "$d/Catch2/Catch2Config.cmake" ] && return 0
  done
  return 1
}

packages=()
have_catch2 || packages+=(catch2)
command -v pkg-config >/dev/null || packages+=(pkg-config)

if [ ${#packages[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "tests/run.sh: installing ${packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${packages[@]}" || { apt-get update -q && apt-get install -y -q "${packages[@]}"; }
  else
    echo "tests/run.sh: missing test dependencies. Install them with:" >&2
    echo "  sudo apt-get install -y ${packages[*]}" >&2
    exit 1
  fi
fi

exec cmake --workflow --preset test
