"""Runs bench_managers and its Python peer (multiprocessing's Manager().dict()
and connection.Listener/Client) alternately, and prints medians and ratios.

    python3 bench/manager_compare.py --bench build/bench/bench/bench_managers [--runs 5]

Each run of bench_managers reports the median of 3 repetitions of each
benchmark; each Python run times 20,000 dict sets, 20,000 gets, 20,000
Listener/Client round trips of 64 bytes and one cold start (Manager() + dict()
+ set + get + shutdown). The figures printed are medians over --runs runs,
each ratio taken against its peer in the same run.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gbench_json import median_seconds  # noqa: E402

PYTHON_PEER = r"""
import json, os, time
from multiprocessing import Manager, Process
from multiprocessing.connection import Listener, Client

def echo(address):
    with Client(address, authkey=b"bench-key") as c:
        try:
            while True:
                c.send_bytes(c.recv_bytes())
        except EOFError:
            pass

def main():
    n = 20000
    out = {}
    t0 = time.perf_counter()
    with Manager() as m:
        d = m.dict()
        d["key"] = 1
        d["key"]
    out["cold"] = time.perf_counter() - t0
    with Manager() as m:
        d = m.dict()
        t0 = time.perf_counter()
        for i in range(n):
            d["key"] = i
        out["set"] = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        for i in range(n):
            d["key"]
        out["get"] = (time.perf_counter() - t0) / n
    address = "/tmp/mproc-bench-py-%d.sock" % os.getpid()
    with Listener(address, authkey=b"bench-key") as listener:
        p = Process(target=echo, args=(address,))
        p.start()
        with listener.accept() as c:
            payload = bytes(64)
            t0 = time.perf_counter()
            for i in range(n):
                c.send_bytes(payload)
                c.recv_bytes()
            out["roundtrip"] = (time.perf_counter() - t0) / n
        p.join()
    print(json.dumps(out))

if __name__ == "__main__":
    main()
"""


def bench_run(path):
    out = subprocess.run([path, "--benchmark_format=json", "--benchmark_repetitions=3",
                          "--benchmark_report_aggregates_only=true"], capture_output=True, text=True, timeout=1200)
    if out.returncode != 0:
        sys.exit(f"{path} failed ({out.returncode}):\n{out.stderr}")
    return median_seconds(out.stdout)


def peer_run(python):
    out = subprocess.run([python, "-c", PYTHON_PEER], capture_output=True, text=True, timeout=1200)
    if out.returncode != 0:
        sys.exit(f"the Python peer failed ({out.returncode}):\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bench", required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--python", default="/usr/bin/python3")
    args = parser.parse_args()

    rows = {}
    def add(key, value):
        rows.setdefault(key, []).append(value)

    for run in range(args.runs):
        ours = bench_run(args.bench)
        peer = peer_run(args.python)
        raw = ours["RawUnixSocket_RoundTrip_64B"]
        op = (ours["Manager_DictSet"] + ours["Manager_DictGet"]) / 2
        add("raw socket round trip (us)", raw * 1e6)
        add("Manager dict set (us)", ours["Manager_DictSet"] * 1e6)
        add("Manager dict get (us)", ours["Manager_DictGet"] * 1e6)
        add("Manager dict op / raw round trip", op / raw)
        add("Python dict op / Manager dict op", (peer["set"] + peer["get"]) / 2 / op)
        add("Listener/Client round trip / raw", ours["ListenerClient_RoundTrip_64B"] / raw)
        add("Python Listener/Client / mproc", peer["roundtrip"] / ours["ListenerClient_RoundTrip_64B"])
        add("cold Manager (ms)", ours["Manager_Cold"] * 1e3)
        add("Python cold Manager / mproc", peer["cold"] / ours["Manager_Cold"])
        print(f"run {run + 1}/{args.runs}: dict op {op * 1e6:.1f} us, raw {raw * 1e6:.1f} us, "
              f"Python dict op {(peer['set'] + peer['get']) / 2 * 1e6:.1f} us", file=sys.stderr)

    width = max(len(k) for k in rows)
    for key, values in rows.items():
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"{key:<{width}}  median {statistics.median(values):8.2f}   ({shown})")


if __name__ == "__main__":
    main()
