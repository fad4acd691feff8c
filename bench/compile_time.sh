#!/usr/bin/env bash
# Compile-time cost of each public header. For every include/mproc/*.hpp
# alone, the umbrella <mproc/mproc.hpp>, and a baseline unit that includes
# only <vector> <string> <thread> <future> <mutex>, compiles a translation
# unit that includes just that (${CXX:-g++} -std=c++20 -O0 -c -I include)
# N times, round-robin over the units so machine noise hits all alike, and
# prints the median CPU time (user+sys) and median peak RSS of the compiler,
# each also as a ratio to the baseline's median. Beside each header's ratio,
# "floor": the ratio of a unit that includes only the baseline and the
# standard and system headers that header's mproc files include themselves:
# what the header would cost if mproc's own code were free.
#
#   bench/compile_time.sh [N]        N repetitions (default 5, or $N)
#   CXX=clang++ bench/compile_time.sh
#   EXTRA_CXXFLAGS="-DFOO" bench/compile_time.sh
#   ONLY="mproc.hpp thread_pool.hpp" bench/compile_time.sh   subset (+ baseline)
#   MPROC_ROOT=/other/checkout bench/compile_time.sh   measure that tree's headers
#
# mpi.hpp is measured only when <mpi.h> is found (directly, or through
# `mpicxx --showme:compile`). Needs /usr/bin/time (GNU time).
# SPDX-License-Identifier: MIT
set -euo pipefail

root=${MPROC_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
cxx=${CXX:-g++}
reps=${1:-${N:-5}}
timebin=/usr/bin/time
[[ -x $timebin ]] || { echo "compile_time.sh: $timebin (GNU time) is required" >&2; exit 2; }
[[ $reps =~ ^[1-9][0-9]*$ ]] || { echo "compile_time.sh: N must be a positive integer" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/mproc-compile-time.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Flags for <mpi.h>: none if the compiler finds it, mpicxx's if that finds it.
mpi_flags=""
mpi_ok=0
if echo '#include <mpi.h>' | $cxx -std=c++20 -E -x c++ - >/dev/null 2>&1; then
  mpi_ok=1
elif command -v mpicxx >/dev/null 2>&1; then
  mpi_flags=$(mpicxx --showme:compile 2>/dev/null || true)
  if [[ -n $mpi_flags ]] &&
     echo '#include <mpi.h>' | $cxx -std=c++20 $mpi_flags -E -x c++ - >/dev/null 2>&1; then
    mpi_ok=1
  fi
fi

# The compiler's include directories, longest first (to spell a header's
# path as #include <...> would).
# shellcheck disable=SC2086
search_dirs=$(echo | $cxx -std=c++20 -x c++ -E -v - 2>&1 >/dev/null |
  sed -n '/#include <...> search starts here:/,/End of search list./p' | sed '1d;$d' |
  while read -r d; do realpath -m "$d"; done | awk '{ print length($0), $0 }' | sort -rn | cut -d' ' -f2- | tr '\n' ' ')

# Units: name -> source file. The baseline first.
names=(baseline)
printf '#include <vector>\n#include <string>\n#include <thread>\n#include <future>\n#include <mutex>\n' \
  > "$work/baseline.cpp"
declare -A flags=([baseline]="")
for h in "$root"/include/mproc/*.hpp; do
  b=$(basename "$h")
  if [[ -n ${ONLY:-} ]] && [[ " $ONLY " != *" $b "* ]]; then continue; fi
  if [[ $b == mpi.hpp ]]; then
    [[ $mpi_ok == 1 ]] || { echo "(skipping mpi.hpp: <mpi.h> not found)" >&2; continue; }
    flags[$b]=$mpi_flags
  else
    flags[$b]=""
  fi
  names+=("$b")
  printf '#include <mproc/%s>\n' "$b" > "$work/${b%.hpp}.cpp"
  # Its floor: the headers that an mproc file of its tree includes itself
  # (as the preprocessor saw them: -H prints each include, indented by
  # depth), spelled relative to the compiler's include directories.
  floor="floor:$b"
  cp "$work/baseline.cpp" "$work/floor_${b%.hpp}.cpp"
  # shellcheck disable=SC2086
  $cxx -std=c++20 -I "$root/include" ${flags[$b]} -H -fsyntax-only "$work/${b%.hpp}.cpp" 2>&1 |
    awk -v mp="$root/include/mproc/" -v dirs="$search_dirs" '
      BEGIN { n = split(dirs, d, " ") }
      /^\.+ / {
        depth = length($1); f = $2; parent[depth] = f
        if (index(f, mp) == 1 || index(parent[depth - 1], mp) != 1) next
        for (i = 1; i <= n; ++i) if (index(f, d[i] "/") == 1) { f = substr(f, length(d[i]) + 2); break }
        print "#include <" f ">"
      }' | sort -u >> "$work/floor_${b%.hpp}.cpp"
  flags[$floor]=${flags[$b]}
  names+=("$floor")
done

for ((r = 1; r <= reps; ++r)); do
  for n in "${names[@]}"; do
    src="$work/${n%.hpp}.cpp"
    [[ $n == floor:* ]] && src="$work/floor_${n#floor:}" && src="${src%.hpp}.cpp"
    # shellcheck disable=SC2086
    if ! $timebin -f "%U %S %M" -o "$work/t" \
         $cxx -std=c++20 -O0 -I "$root/include" ${flags[$n]} ${EXTRA_CXXFLAGS:-} \
         -c "$src" -o /dev/null 2> "$work/err"; then
      echo "compile_time.sh: $n failed to compile:" >&2
      cat "$work/err" >&2
      exit 1
    fi
    # GNU time may prefix a "Command exited..." line; the numbers are last.
    tail -n 1 "$work/t" | awk -v n="$n" '{ printf "%s %.3f %d\n", n, $1 + $2, $3 }' \
      >> "$work/samples"
  done
done

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

base_cpu=$(awk '$1 == "baseline" { print $2 }' "$work/samples" | median)
base_rss=$(awk '$1 == "baseline" { print $3 }' "$work/samples" | median)

echo "compiler: $($cxx --version | head -n 1); $reps repetitions, medians"
printf '%-20s %9s %7s %7s %10s %7s\n' unit "cpu(s)" "x base" "floor" "rss(MiB)" "x base"
for n in "${names[@]}"; do
  [[ $n == floor:* ]] && continue
  cpu=$(awk -v n="$n" '$1 == n { print $2 }' "$work/samples" | median)
  rss=$(awk -v n="$n" '$1 == n { print $3 }' "$work/samples" | median)
  fl=$base_cpu
  [[ $n != baseline ]] && fl=$(awk -v n="floor:$n" '$1 == n { print $2 }' "$work/samples" | median)
  awk -v n="$n" -v c="$cpu" -v f="$fl" -v r="$rss" -v bc="$base_cpu" -v br="$base_rss" \
    'BEGIN { printf "%-20s %9.3f %7.2f %7.2f %10.1f %7.2f\n", n, c, c / bc, f / bc, r / 1024, r / br }'
done
