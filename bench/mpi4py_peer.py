"""The peer of bench/bench_mpi.cpp: the same workloads on mpi4py.futures.

Run it as the client of an MPI job whose other ranks serve (mpi4py's way to
use existing ranks instead of spawning):

    mpiexec -n 3 /usr/bin/python3 -m mpi4py.futures bench/mpi4py_peer.py

(Debian: apt-get install python3-mpi4py python3-numpy.) Prints one JSON
object: seconds per workload, the first call ("cold") and the median of
`--repetitions` warm calls, as bench/mpi_compare.py reads them.
"""

import argparse
import json
import statistics
import time

import numpy as np
from mpi4py import MPI
from mpi4py.futures import MPIPoolExecutor

UNIT_TASKS = 1000
SQUARES = 1_000_000
ARTICLE_SETS = 10
ARTICLE_SIZE = 1_000_000


def identity(x):
    return x


def square(x):
    return x * x


def analyze(data):
    return data.mean()


def timed(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--apply-calls", type=int, default=2000)
    args = parser.parse_args()

    rng = np.random.default_rng(42)
    data_sets = [rng.standard_normal(ARTICLE_SIZE) for _ in range(ARTICLE_SETS)]
    units = [1] * UNIT_TASKS
    xs = list(range(SQUARES))

    with MPIPoolExecutor() as pool:
        workers = MPI.COMM_WORLD.Get_size() - 1  # the serving ranks
        # Python's Pool default chunksize, as mproc uses: ceil(n / (4 * workers)).
        squares_chunksize = -(-SQUARES // (4 * workers))
        article_chunksize = -(-ARTICLE_SETS // (4 * workers))

        def apply_once():
            pool.submit(identity, 1).result()

        def unit_map():
            list(pool.map(identity, units, chunksize=1))

        def squares_map():
            list(pool.map(square, xs, chunksize=squares_chunksize))

        def article_map():
            list(pool.map(analyze, data_sets, chunksize=article_chunksize))

        out = {"workers": workers}
        # Cold: the first call of each workload on the fresh executor.
        out["cold_apply_s"] = timed(apply_once)
        out["cold_unit_map_s"] = timed(unit_map)
        out["cold_squares_s"] = timed(squares_map)
        out["cold_article_s"] = timed(article_map)
        # Warm: medians.
        out["apply_s"] = statistics.median(
            timed(lambda: [apply_once() for _ in range(args.apply_calls)]) / args.apply_calls
            for _ in range(args.repetitions))
        out["unit_map_s"] = statistics.median(timed(unit_map) for _ in range(args.repetitions))
        out["squares_s"] = statistics.median(timed(squares_map) for _ in range(args.repetitions))
        out["article_s"] = statistics.median(timed(article_map) for _ in range(args.repetitions))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
