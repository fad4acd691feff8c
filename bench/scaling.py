"""Scaling study: throughput and efficiency of ThreadPool, Pool and (when
built) mproc::mpi::Pool for 1 ... N workers and tasks of 1 us ... 10 ms, with
oneTBB and Python's multiprocessing.Pool as reference lines. Prints a table
and draws one PNG (matplotlib: apt-get install python3-matplotlib).

    /usr/bin/python3 bench/scaling.py [--bench-dir build/bench/bench] [--max-workers 4]
        [--task-us 1,10,100,1000,10000] [--out docs/scaling.png] [--quick] [--no-python] [--no-mpi]

The workload is 40 ms of CPU work (a dependent floating-point chain,
calibrated in us on this machine) cut into tasks of T us. C++ figures come
from bench_scaling (medians of the repetitions, run in random order so that
load changes spread over all peers; each pool warm; "Pool cold"
is Pool(W) created and its first map); the MPI pool's from bench_mpi run
under `mpiexec -n W+1` (W serving ranks, MPROC_BENCH_MPI_SCALING=1) when it
is built and mpiexec is on PATH; Python's from multiprocessing.Pool(W).map
over the same task lengths with a pure-Python chain, run here (medians of a
few maps on a warm pool). Efficiency is serial time / (W_eff x parallel
time), W_eff = min(W, cores), each against the serial loop of its own run
(C++ bench_scaling, bench_mpi's client, or Python).
"""

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.dont_write_bytecode = True  # no bench/__pycache__ from the imports below
sys.path.insert(0, HERE)
from gbench_json import median_seconds  # noqa: E402
from mpi_compare import mpiexec  # noqa: E402

TOTAL_US = 40_000  # kTotalMicros in bench_scaling.cpp, kScalingMicros in bench_mpi.cpp
MPI_TASK_US = (1, 10, 100, 1000, 10000)  # the sizes bench_mpi registers

# Series: key, label, colour, line style.
SERIES = [
    ("ThreadPool", "mproc::ThreadPool", "tab:blue", "-"),
    ("Pool", "mproc::Pool (warm)", "tab:orange", "-"),
    ("Pool_Cold", "mproc::Pool (cold: create + first map)", "tab:orange", ":"),
    ("MPI", "mproc::mpi::Pool (W serving ranks)", "tab:green", "-"),
    ("TBB", "oneTBB parallel_for, task_arena(W)", "tab:gray", "--"),
    ("Python", "Python multiprocessing.Pool", "tab:red", "--"),
]


def cores():
    return len(os.sched_getaffinity(0))


def gbench_flags(args):
    reps, min_time = (3, 0.05) if args.quick else (5, 0.2)
    return [f"--benchmark_repetitions={reps}", "--benchmark_report_aggregates_only=true",
            f"--benchmark_min_time={min_time}", "--benchmark_format=json",
            "--benchmark_enable_random_interleaving=true"]  # load changes spread over all peers


def medians_by_args(text):
    """{(name, workers or None, task_us): median seconds}, through
    gbench_json.median_seconds (which drops a name's "/..." arguments, so the
    arguments are folded into the name first)."""
    data = json.loads(text[text.index("{"):])
    for b in data["benchmarks"]:
        parts = b["run_name"].split("/")
        args = [p for p in parts[1:] if p.split(":")[0] in ("workers", "task_us")]
        b["run_name"] = "|".join([parts[0]] + args)
    result = {}
    for key, seconds in median_seconds(json.dumps(data)).items():
        name, *args = key.split("|")
        values = dict(a.split(":") for a in args)
        workers = int(values["workers"]) if "workers" in values else None
        result[(name, workers, int(values["task_us"]))] = seconds
    return result


def run(cmd, env=None, timeout=900):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if out.returncode != 0:
        sys.exit(f"failed ({out.returncode}): {' '.join(cmd)}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return out.stdout


# ------------------------------------------------------------------ C++ (bench_scaling)

def run_cpp(args, results, serial):
    exe = os.path.join(args.bench_dir, "bench_scaling")
    if not os.path.exists(exe):
        sys.exit(f"{exe} not found: cmake --preset bench && cmake --build build/bench --target bench_scaling")
    env = dict(os.environ, MPROC_BENCH_MAX_WORKERS=str(args.max_workers),
               MPROC_BENCH_TASK_US=",".join(map(str, args.task_us)))
    print(f"running {exe} ...", file=sys.stderr)
    t0 = time.monotonic()
    text = run([exe] + gbench_flags(args), env)
    medians = medians_by_args(text)
    print(f"  {time.monotonic() - t0:.0f} s", file=sys.stderr)
    data = json.loads(text[text.index("{"):])
    args.iters_per_us = int(next(b["iters_per_us"] for b in data["benchmarks"] if "iters_per_us" in b))
    for (name, w, t), s in medians.items():
        name = name.removeprefix("Scaling_")
        if name == "Serial":
            serial["C++"][t] = s
        else:
            results.setdefault(name, {})[(w, t)] = s


# ------------------------------------------------------------------ MPI (bench_mpi under mpiexec)

def run_mpi(args, results, serial):
    exe = os.path.join(args.bench_dir, "bench_mpi")
    if args.no_mpi:
        return "left out (--no-mpi)"
    if not os.path.exists(exe):
        return f"left out ({exe} not built: needs MPI)"
    if shutil.which("mpiexec") is None:
        return "left out (mpiexec not on PATH)"
    sizes = [t for t in args.task_us if t in MPI_TASK_US]
    if not sizes:
        return f"left out (bench_mpi registers tasks of {MPI_TASK_US} us only)"
    # bench_scaling's calibration: tasks as long as bench_scaling's
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               MPROC_BENCH_MPI_SCALING="1", MPROC_BENCH_SPIN_ITERS_PER_US=str(args.iters_per_us))
    pattern = "MpiScaling(_Serial)?/task_us:(" + "|".join(map(str, sizes)) + ")/"
    for w in range(1, args.max_workers + 1):
        print(f"running mpiexec -n {w + 1} {exe} ...", file=sys.stderr)
        t0 = time.monotonic()
        cmd = mpiexec(w + 1, [exe, f"--benchmark_filter={pattern}"] + gbench_flags(args))
        medians = medians_by_args(run(cmd, env))
        print(f"  {time.monotonic() - t0:.0f} s", file=sys.stderr)
        for (name, _, t), s in medians.items():
            if name == "MpiScaling":
                results.setdefault("MPI", {})[(w, t)] = s
            elif name == "MpiScaling_Serial":
                serial.setdefault(f"MPI{w}", {})[t] = s
    return "mpiexec -n W+1 (W serving ranks + the client)"


# ------------------------------------------------------------------ Python's multiprocessing.Pool

def py_spin(n):
    x = 1.0
    for _ in range(n):
        x = x * 0.999999 + 1e-7
    return x


def py_iters_per_us():
    n = 1_000_000
    t0 = time.perf_counter()
    py_spin(n)
    return n / ((time.perf_counter() - t0) * 1e6)


def py_serial_seconds(xs, conn):
    """The serial loop over `xs`, timed in a forked child: the parent's
    interpreter runs the open pools' handler threads, which would take the GIL
    from a serial loop timed there (making it slower than it is)."""
    s = time.perf_counter()
    list(map(py_spin, xs))
    conn.send(time.perf_counter() - s)
    conn.close()


def run_python(args, results, serial):
    if args.no_python:
        return "left out (--no-python)"
    reps = 3 if args.quick else 5
    rate = statistics.median(py_iters_per_us() for _ in range(5))
    inputs = {t: [max(1, round(t * rate))] * (TOTAL_US // t) for t in args.task_us}
    print(f"running Python's multiprocessing.Pool ({rate:.1f} iterations/us) ...", file=sys.stderr)
    t0 = time.monotonic()

    def timed(f, xs):
        s = time.perf_counter()
        f(py_spin, xs)
        return time.perf_counter() - s

    # One warm pool per W, all open; each repetition times the serial loop and
    # every pool in turn, so that load changes spread over all of them.
    ctx = multiprocessing.get_context("fork")
    ws = range(1, args.max_workers + 1)
    pools = {w: ctx.Pool(w) for w in ws}
    try:
        for w, pool in pools.items():
            pool.map(py_spin, [1] * (4 * w))  # warm: every worker started
        times = {}
        for _ in range(reps):
            for t, xs in inputs.items():
                rd, wr = ctx.Pipe(duplex=False)
                child = ctx.Process(target=py_serial_seconds, args=(xs, wr))
                child.start()
                wr.close()
                times.setdefault((0, t), []).append(rd.recv())
                child.join()
                for w, pool in pools.items():
                    times.setdefault((w, t), []).append(timed(pool.map, xs))
    finally:
        for pool in pools.values():
            pool.terminate()
            pool.join()
    for (w, t), ts in times.items():
        if w == 0:
            serial["Python"][t] = statistics.median(ts)
        else:
            results.setdefault("Python", {})[(w, t)] = statistics.median(ts)
    print(f"  {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return f"pure-Python chain ({rate:.0f} steps/\u00b5s), fork, default chunksize, medians of {reps} maps"


# ------------------------------------------------------------------ table and plot

def serial_of(key, w):
    return f"MPI{w}" if key == "MPI" else ("Python" if key == "Python" else "C++")


def table(args, results, serial, ncores):
    print(f"\nthroughput (tasks/s) and efficiency = serial / (min(W, {ncores}) x parallel time); "
          f"{TOTAL_US // 1000} ms of work per map, {ncores} cores")
    keys = [k for k, *_ in SERIES if k in results]
    for t in args.task_us:
        n = TOTAL_US // t
        line = f"\ntask {t} us ({n} tasks); serial: C++ {n / serial['C++'][t]:,.0f}/s" if t in serial["C++"] else \
            f"\ntask {t} us ({n} tasks)"
        if t in serial.get("Python", {}):
            line += f", Python {n / serial['Python'][t]:,.0f}/s"
        print(line)
        print(f"{'W':>3} " + " ".join(f"{k:>18}" for k in keys))
        for w in range(1, args.max_workers + 1):
            cells = []
            for k in keys:
                s = results[k].get((w, t))
                ref = serial.get(serial_of(k, w), {}).get(t)
                if s is None or ref is None:
                    cells.append(f"{'-':>18}")
                    continue
                eff = ref / (min(w, ncores) * s)
                cells.append(f"{n / s:>11,.0f} {eff:5.2f} ")
            print(f"{w:>3} " + " ".join(cells))


def us_text(t):
    return f"{t / 1000:g} ms" if t >= 1000 else f"{t} \u00b5s"


def plot(args, results, serial, ncores, notes):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError:
        print("\nmatplotlib is missing: no picture. Install it with `apt-get install python3-matplotlib` "
              "and run /usr/bin/python3.", file=sys.stderr)
        return
    sizes = args.task_us
    ws = list(range(1, args.max_workers + 1))
    fig, axes = plt.subplots(2, len(sizes), figsize=(max(3.4 * len(sizes) + 1, 11), 8.2), squeeze=False,
                             sharex=True)
    for col, t in enumerate(sizes):
        n = TOTAL_US // t
        top, bottom = axes[0][col], axes[1][col]
        for ax in (top, bottom):
            if args.max_workers > ncores:
                ax.axvspan(ncores + 0.5, args.max_workers + 0.5, color="0.93", zorder=0)
            ax.grid(True, which="both", alpha=0.3)
            ax.set_xticks(ws)
            ax.set_xlim(0.7, args.max_workers + 0.3)
        if t in serial["C++"]:
            ideal = [n / serial["C++"][t] * min(w, ncores) for w in ws]
            top.plot(ws, ideal, color="black", lw=0.8, ls=":", label=f"ideal: C++ serial x min(W, {ncores})")
        bottom.axhline(1.0, color="black", lw=0.8, ls=":")
        for key, label, colour, style in SERIES:
            if key not in results:
                continue
            pts = [(w, results[key][(w, t)], serial.get(serial_of(key, w), {}).get(t)) for w in ws
                   if (w, t) in results[key]]
            if not pts:
                continue
            x = [w for w, _, _ in pts]
            marker = "o" if style == "-" else ("s" if key == "Python" else "^")
            top.plot(x, [n / s for _, s, _ in pts], color=colour, ls=style, marker=marker, ms=4, label=label)
            e = [(w, ref / (min(w, ncores) * s)) for w, s, ref in pts if ref is not None]
            bottom.plot([w for w, _ in e], [v for _, v in e], color=colour, ls=style, marker=marker, ms=4)
        top.set_yscale("log")
        top.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        top.yaxis.set_minor_locator(ticker.LogLocator(subs="all"))
        top.yaxis.set_major_formatter(ticker.EngFormatter(sep=""))
        top.yaxis.set_minor_formatter(ticker.NullFormatter())
        top.set_title(f"tasks of {us_text(t)} ({n:,} per map)", fontsize=10)
        bottom.set_ylim(0, max([1.15] + [max(line.get_ydata()) + 0.05 for line in bottom.get_lines()
                                         if len(line.get_ydata()) > 1]))
        bottom.set_xlabel("workers W")
        if col == 0:
            top.set_ylabel("throughput (tasks/s, log)")
            bottom.set_ylabel(f"efficiency: serial / (min(W, {ncores}) \u00d7 time)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=(len(labels) + 1) // 2, fontsize=9, frameon=False)
    fig.suptitle(f"mproc scaling on {ncores} cores: {TOTAL_US // 1000} ms of CPU work per map, "
                 f"cut into tasks of {us_text(sizes[0])} \u2026 {us_text(sizes[-1])}", fontsize=13)
    fig.text(0.5, 0.935, f"grey: more workers than cores; shared machine, load average {args.load:.1f} before the "
             f"run\n" + "; ".join(notes), ha="center", va="top", fontsize=8.5, color="0.3")
    fig.tight_layout(rect=(0, 0.08, 1, 0.9))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"\nwrote {args.out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench-dir", default=os.path.join(ROOT, "build", "bench", "bench"),
                        help="where bench_scaling (and bench_mpi) are built")
    parser.add_argument("--max-workers", type=int, default=4)
    parser.add_argument("--task-us", default="1,10,100,1000,10000", help="comma-separated task lengths in us")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "scaling.png"))
    parser.add_argument("--quick", action="store_true", help="3 repetitions of 0.05 s instead of 5 of 0.2 s")
    parser.add_argument("--no-python", action="store_true")
    parser.add_argument("--no-mpi", action="store_true")
    args = parser.parse_args()
    args.task_us = sorted({int(t) for t in args.task_us.split(",") if t.strip()})
    if not args.task_us or args.task_us[0] < 1 or args.task_us[-1] > TOTAL_US:
        sys.exit(f"--task-us: lengths from 1 to {TOTAL_US} us")

    ncores = cores()
    args.load = os.getloadavg()[0]
    results, serial = {}, {"C++": {}, "Python": {}}
    start = time.monotonic()
    run_cpp(args, results, serial)
    notes = [f"medians of {3 if args.quick else 5} repetitions"]
    mpi = run_mpi(args, results, serial)
    python = run_python(args, results, serial)
    print(f"total {time.monotonic() - start:.0f} s; load average {args.load:.1f} before, "
          f"{os.getloadavg()[0]:.1f} now", file=sys.stderr)
    notes.append(f"MPI: {mpi}")
    notes.append(f"Python: {python}")
    if "TBB" not in results:
        notes.append("oneTBB: not built")
    table(args, results, serial, ncores)
    for note in notes:
        print(f"  {note}")
    plot(args, results, serial, ncores, notes)


if __name__ == "__main__":
    main()
