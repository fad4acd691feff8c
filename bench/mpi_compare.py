"""Runs bench_mpi and its mpi4py.futures peer (bench/mpi4py_peer.py) on the
same MPI job shape, alternately, and prints medians and ratios.

    python3 bench/mpi_compare.py --bench build/bench/bench/bench_mpi [--runs 5] [--ranks 3]

Each run of bench_mpi reports the median of 5 repetitions of each warm
benchmark and one first call ("cold") of each workload on a fresh pool; the
figures printed are medians over --runs runs (so cold figures are medians of
--runs first calls). Needs OpenMPI's mpiexec, python3-mpi4py and
python3-numpy (Debian's, run with /usr/bin/python3).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gbench_json import median_seconds  # noqa: E402


MPIEXEC_EXTRA = []


def mpiexec(ranks, extra):
    cmd = ["mpiexec", "-n", str(ranks)]
    version = subprocess.run(["mpiexec", "--version"], capture_output=True, text=True).stdout
    if "Open MPI" in version or "OpenRTE" in version:
        cmd += ["--oversubscribe", "--mca", "pml", "ob1", "--mca", "btl", "self,vader"]
    return cmd + MPIEXEC_EXTRA + extra


def run_json(cmd, env):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode != 0:
        sys.exit(f"failed ({out.returncode}): {' '.join(cmd)}\n{out.stdout}\n{out.stderr}")
    return out.stdout


def bench_run(args, env):
    text = run_json(mpiexec(args.ranks, [args.bench, "--benchmark_format=json", "--benchmark_repetitions=5",
                                         "--benchmark_report_aggregates_only=true"]), env)
    return median_seconds(text)


def peer_run(args, env):
    text = run_json(mpiexec(args.ranks, [args.python, "-m", "mpi4py.futures", args.peer]), env)
    return json.loads(text.strip().splitlines()[-1])


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser()
    parser.add_argument("--bench", required=True, help="the bench_mpi executable")
    parser.add_argument("--peer", default=os.path.join(here, "mpi4py_peer.py"))
    parser.add_argument("--python", default="/usr/bin/python3", help="a python3 with mpi4py and numpy")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ranks", type=int, default=3)
    parser.add_argument("--no-yield", action="store_true",
                        help="Open MPI: --mca mpi_yield_when_idle 0 (MPI's waits spin instead of yielding the CPU "
                             "at every poll, as on nodes with a core per rank; Open MPI yields by default when "
                             "ranks outnumber cores)")
    args = parser.parse_args()
    if args.no_yield:
        MPIEXEC_EXTRA.extend(["--mca", "mpi_yield_when_idle", "0"])
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")

    ours, theirs = [], []
    for i in range(args.runs):  # interleaved, so both see the same machine
        ours.append(bench_run(args, env))
        theirs.append(peer_run(args, env))
        print(f"run {i + 1}/{args.runs} done", file=sys.stderr)

    def med(runs, key):
        return statistics.median(r[key] for r in runs)

    unit = 1000
    squares = 1_000_000
    rows = [
        # name, mproc seconds, mpi4py seconds, unit divisor, unit label
        ("unit task: apply round trip, warm", med(ours, "MpiPool_Apply"), med(theirs, "apply_s"), 1, "us"),
        ("unit task: apply, cold (first call)", med(ours, "MpiPool_Cold_Apply"), med(theirs, "cold_apply_s"), 1, "us"),
        ("unit tasks: map chunksize=1, per task, warm", med(ours, "MpiPool_UnitTasks"), med(theirs, "unit_map_s"),
         unit, "us"),
        ("unit tasks: map chunksize=1, per task, cold", med(ours, "MpiPool_Cold_UnitTasks"),
         med(theirs, "cold_unit_map_s"), unit, "us"),
        ("1M x*x, default chunksize, per item, warm", med(ours, "MpiPool_Squares"), med(theirs, "squares_s"),
         squares, "ns"),
        ("1M x*x, default chunksize, per item, cold", med(ours, "MpiPool_Cold_Squares"),
         med(theirs, "cold_squares_s"), squares, "ns"),
        ("article map (10 x 1M doubles), warm", med(ours, "MpiPool_Article"), med(theirs, "article_s"), 1, "ms"),
        ("article map, cold (first call)", med(ours, "MpiPool_Cold_Article"), med(theirs, "cold_article_s"), 1, "ms"),
    ]
    scale = {"us": 1e6, "ns": 1e9, "ms": 1e3}
    mode = "MPI waits spin (mpi_yield_when_idle 0)" if args.no_yield else "Open MPI's default"
    print(f"\n{args.ranks} ranks (1 client + {args.ranks - 1} serving), {os.cpu_count()} cores, {mode}; "
          f"medians of {args.runs} runs\n")
    print(f"{'workload':48} {'mproc::mpi':>12} {'mpi4py':>12} {'mpi4py / mproc':>15}")
    for name, a, b, div, u in rows:
        print(f"{name:48} {a / div * scale[u]:9.2f} {u:2} {b / div * scale[u]:9.2f} {u:2} {b / a:14.1f}x")

    raw = med(ours, "Raw_RoundTrip")
    print("\nwithin the same run of bench_mpi:")
    print(f"  raw MPI round trip (MPI_Send + MPI_Recv, 64 B)      {raw * 1e6:8.2f} us")
    print(f"  apply round trip / raw round trip                    {med(ours, 'MpiPool_Apply') / raw:8.2f}")
    print(f"  map chunksize=1 per task / raw round trip            {med(ours, 'MpiPool_UnitTasks') / unit / raw:8.2f}")
    print(f"  1M x*x: mpi::Pool ({args.ranks - 1} ranks) / mproc::Pool(2)          "
          f"{med(ours, 'MpiPool_Squares') / med(ours, 'ProcessPool2_Squares'):8.2f}")
    print(f"  article map: mpi::Pool / serial loop                 "
          f"{med(ours, 'MpiPool_Article') / med(ours, 'Serial_Article'):8.2f}")


if __name__ == "__main__":
    main()
