#!/usr/bin/env bash
# Formats mproc's C++ sources (include/ tests/ bench/ examples/) with the
# root .clang-format, using the pinned clang-format-19 (another version
# formats differently; override with CLANG_FORMAT=<binary> at your own risk).
#   tools/format.sh           rewrite every file that differs
#   tools/format.sh --check   list the files that differ and exit 1 if any do
#   tools/format.sh [--check] FILE...   only those files
# SPDX-License-Identifier: MIT
set -euo pipefail
cd "$(dirname "$0")/.."

clang_format=${CLANG_FORMAT:-clang-format-19}
if ! command -v "$clang_format" >/dev/null; then
  echo "tools/format.sh: $clang_format not found (Debian: apt-get install clang-format-19)" >&2
  exit 2
fi

check=0
if [ "${1:-}" = "--check" ]; then
  check=1
  shift
fi
if [ $# -gt 0 ]; then
  files=("$@")
else
  mapfile -t files < <(git ls-files -- 'include/*.hpp' 'tests/*.hpp' 'tests/*.cpp' 'bench/*.hpp' 'bench/*.cpp' \
                                       'examples/*.hpp' 'examples/*.cpp')
fi

if [ "$check" -eq 0 ]; then
  "$clang_format" -i --style=file "${files[@]}"
  exit 0
fi

differ=0
for f in "${files[@]}"; do
  if ! "$clang_format" --style=file "$f" | cmp -s - "$f"; then
    echo "$f"
    differ=$((differ + 1))
  fi
done
if [ "$differ" -gt 0 ]; then
  echo "tools/format.sh: ${differ} of ${#files[@]} files are not formatted (run tools/format.sh)" >&2
  exit 1
fi
echo "tools/format.sh: ${#files[@]} files formatted"
