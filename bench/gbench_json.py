"""Reads Google Benchmark's JSON output (--benchmark_format=json with
--benchmark_repetitions and --benchmark_report_aggregates_only): the median
real time of each benchmark, in seconds, by name without "BM_" and without
its "/..." arguments. Used by mpi_compare.py and manager_compare.py.
"""

import json


def median_seconds(text):
    data = json.loads(text[text.index("{"):])
    seconds = {}
    for b in data["benchmarks"]:
        if b.get("aggregate_name") != "median":
            continue
        name = b["run_name"].split("/")[0].removeprefix("BM_")
        scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b["time_unit"]]
        seconds[name] = b["real_time"] * scale
    return seconds
