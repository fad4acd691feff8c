#!/usr/bin/env python3
# bench/compare_builds.py — the same benchmark programs of two builds (e.g.
# before and after a change), run alternately on this machine, and the
# median time of each benchmark in each build with their ratio. Alternating
# spreads the machine's load changes over both builds; see bench/README.md.
#
#   bench/compare_builds.py --before OLD/build/bench/bench --after build/bench/bench \
#       [--runs 5] [--programs bench_pool bench_thread_pool ...] [--filter REGEX]
#
# Prints one line per benchmark found in both builds: median before, median
# after (of `--runs` runs each) and after/before; a ratio above 1 is slower.
# SPDX-License-Identifier: MIT
import argparse
import json
import os
import statistics
import subprocess
import sys

PROGRAMS = ["bench_pool", "bench_thread_pool", "bench_connection", "bench_queue", "bench_shared"]


def run(path, flt):
    cmd = [path, "--benchmark_format=json"]
    if flt:
        cmd.append("--benchmark_filter=" + flt)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=1800).stdout
    times = {}
    for b in json.loads(out)["benchmarks"]:
        if b.get("run_type") == "aggregate" or b.get("error_occurred"):
            continue
        # manual-time and real-time benchmarks report real_time; in ns
        scale = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}[b.get("time_unit", "ns")]
        times[b["name"]] = b["real_time"] * scale
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--before", required=True, help="directory of the old build's bench programs")
    ap.add_argument("--after", required=True, help="directory of the new build's bench programs")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--programs", nargs="*", default=PROGRAMS)
    ap.add_argument("--filter", default="")
    a = ap.parse_args()
    worst = 0.0
    for prog in a.programs:
        paths = {k: os.path.join(d, prog) for k, d in (("before", a.before), ("after", a.after))}
        if not all(os.access(p, os.X_OK) for p in paths.values()):
            print(f"{prog}: not built in both builds, skipped", file=sys.stderr)
            continue
        samples = {"before": {}, "after": {}}
        for i in range(a.runs):
            order = ("before", "after") if i % 2 == 0 else ("after", "before")
            for k in order:
                for name, t in run(paths[k], a.filter).items():
                    samples[k].setdefault(name, []).append(t)
        print(f"\n{prog} (median of {a.runs} alternating runs)")
        print(f"  {'benchmark':70} {'before':>12} {'after':>12} {'after/before':>12}")
        for name in samples["before"]:
            if name not in samples["after"]:
                continue
            b = statistics.median(samples["before"][name])
            f = statistics.median(samples["after"][name])
            ratio = f / b if b else float("nan")
            worst = max(worst, ratio)
            print(f"  {name[:70]:70} {b / 1e3:10.1f}us {f / 1e3:10.1f}us {ratio:12.3f}")
    print(f"\nlargest after/before: {worst:.3f}")


if __name__ == "__main__":
    main()
