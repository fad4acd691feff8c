#!/usr/bin/env python3
"""The article's Python program, timed, so its figures can sit next to
bench_pool's on the same machine:

    python3 bench/article_python.py

Needs numpy (apt-get install python3-numpy). Prints the median time of
Pool(4).map(mean, 10 x 1,000,000 randn), of a serial numpy loop, of
Pool(2).map(x*x, range(100000)) per task (default and unit chunksize), and of
Pool(2) create + map + teardown.
"""
import statistics
import sys
import time
from multiprocessing import Pool, get_context

try:
    import numpy as np
except ImportError:
    sys.exit("article_python.py: numpy is not installed (apt-get install python3-numpy); nothing measured")


def analyze_data(data):
    return data.mean()


def square(x):
    return x * x


def median_ms(fn, repeat=5):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main():
    ctx = get_context("fork")
    data_sets = [np.random.randn(1000000) for _ in range(10)]
    with ctx.Pool(processes=4) as pool:
        map_ms = median_ms(lambda: pool.map(analyze_data, data_sets))
    serial_ms = median_ms(lambda: [d.mean() for d in data_sets])
    with ctx.Pool(processes=2) as pool:
        n = 100000
        default_us = median_ms(lambda: pool.map(square, range(n))) * 1e3 / n
        unit_us = median_ms(lambda: pool.map(square, range(n), chunksize=1), repeat=3) * 1e3 / n

    def lifecycle():
        with ctx.Pool(processes=2) as pool:
            pool.map(square, range(100))

    life_ms = median_ms(lifecycle)
    print(f"Pool(4).map(mean, 10 x 1M randn)   {map_ms:9.2f} ms")
    print(f"serial numpy mean loop             {serial_ms:9.2f} ms")
    print(f"Pool(2).map(x*x), default chunks   {default_us:9.3f} us/task")
    print(f"Pool(2).map(x*x), chunksize=1      {unit_us:9.3f} us/task")
    print(f"Pool(2) create + map + teardown    {life_ms:9.2f} ms")


if __name__ == "__main__":
    main()
