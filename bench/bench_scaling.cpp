// Scaling study: 40 ms of CPU work cut into tasks of T µs (T = 1, 10, 100,
// 1000, 10000), run with W = 1 … N workers (N = 4 by default; more workers
// than cores shows oversubscription). Peers in the same run: a serial loop
// (the reference for efficiency), ThreadPool(W).map, Pool(W).map (default
// chunksize, one warm pool per W kept across iterations and repetitions),
// the first map on a fresh Pool(W) including its creation ("cold", one
// iteration), and oneTBB's parallel_for in a task_arena(W) when oneTBB is
// found. items_per_second is tasks per second. bench/scaling.py runs this
// program (and the MPI pool's scaling benchmark in bench_mpi), Python's
// multiprocessing.Pool on the same workload, and draws docs/scaling.png:
//   python3 bench/scaling.py --bench-dir build/bench/bench
// Environment: MPROC_BENCH_MAX_WORKERS=N (default 4) and
// MPROC_BENCH_TASK_US=1,10,100,1000,10000 choose the arguments.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include <mproc/pool.hpp>
#include <mproc/thread_pool.hpp>

#include "spin.hpp"

#if defined(MPROC_BENCH_HAVE_TBB)
#include <tbb/blocked_range.h>
#include <tbb/global_control.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>
#endif

namespace mp = mproc;

namespace {

constexpr std::int64_t kTotalMicros = 40'000;

using mproc_bench::spin;
using mproc_bench::spin_iters_per_us;

// The inputs of one run: `tasks` copies of the task's length in iterations.
struct Job {
  std::int64_t workers;
  std::int64_t task_us;
  std::vector<std::int64_t> inputs;
  Job(std::int64_t w, std::int64_t t)
      : workers(w), task_us(t), inputs(static_cast<std::size_t>(kTotalMicros / t), t * spin_iters_per_us()) {}
  std::int64_t tasks() const { return static_cast<std::int64_t>(inputs.size()); }
};

void finish(benchmark::State& state, const Job& job) {
  state.SetItemsProcessed(state.iterations() * job.tasks());
  state.counters["tasks"] = static_cast<double>(job.tasks());
  state.counters["iters_per_us"] = static_cast<double>(spin_iters_per_us());
}

// One warm pool per worker count, kept for the whole program.
template <class P>
P& warm(std::int64_t workers) {
  static std::map<std::int64_t, std::unique_ptr<P>> pools;
  auto& p = pools[workers];
  if (!p) p = std::make_unique<P>(static_cast<std::size_t>(workers));
  return *p;
}

void BM_Scaling_Serial(benchmark::State& state) {
  const Job job(1, state.range(0));
  std::vector<double> out(job.inputs.size());
  for (auto _ : state) {
    for (std::size_t i = 0; i < job.inputs.size(); ++i) out[i] = spin(job.inputs[i]);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  finish(state, job);
}

void BM_Scaling_ThreadPool(benchmark::State& state) {
  const Job job(state.range(0), state.range(1));
  auto& pool = warm<mp::ThreadPool>(job.workers);
  for (auto _ : state) benchmark::DoNotOptimize(pool.map(spin, job.inputs).data());
  finish(state, job);
}

void BM_Scaling_Pool(benchmark::State& state) {
  const Job job(state.range(0), state.range(1));
  auto& pool = warm<mp::Pool>(job.workers);
  for (auto _ : state) benchmark::DoNotOptimize(pool.map(spin, job.inputs).data());
  finish(state, job);
}

// Pool(W) created and its first map, timed together (destruction is not
// timed): what a program that maps once pays. One iteration per repetition.
void BM_Scaling_Pool_Cold(benchmark::State& state) {
  const Job job(state.range(0), state.range(1));
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    mp::Pool pool(static_cast<std::size_t>(job.workers));
    benchmark::DoNotOptimize(pool.map(spin, job.inputs).data());
    state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  finish(state, job);
}

#if defined(MPROC_BENCH_HAVE_TBB)
// oneTBB's parallel_for (auto partitioner) in a task_arena(W); global_control
// lets the arena have W threads even when W exceeds the cores (oneTBB's own
// default would cap it at the core count).
void BM_Scaling_TBB(benchmark::State& state) {
  const Job job(state.range(0), state.range(1));
  const tbb::global_control allow(tbb::global_control::max_allowed_parallelism, static_cast<std::size_t>(job.workers));
  tbb::task_arena arena(static_cast<int>(job.workers));
  std::vector<double> out(job.inputs.size());
  for (auto _ : state) {
    arena.execute([&] {
      tbb::parallel_for(tbb::blocked_range<std::size_t>(0, job.inputs.size()),
                        [&](const tbb::blocked_range<std::size_t>& r) {
                          for (std::size_t i = r.begin(); i != r.end(); ++i) out[i] = spin(job.inputs[i]);
                        });
    });
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  finish(state, job);
}
#endif

// ------------------------------------------------------------------ arguments

std::int64_t max_workers() {
  const char* env = std::getenv("MPROC_BENCH_MAX_WORKERS");
  const long n = env != nullptr ? std::strtol(env, nullptr, 10) : 0;
  return n > 0 ? n : 4;
}

std::vector<std::int64_t> task_sizes() {
  std::vector<std::int64_t> sizes;
  if (const char* env = std::getenv("MPROC_BENCH_TASK_US")) {
    const std::string s = env;
    std::size_t pos = 0;
    while (pos < s.size()) {
      const std::size_t comma = s.find(',', pos);
      const long us = std::strtol(s.substr(pos, comma - pos).c_str(), nullptr, 10);
      if (us > 0 && us <= kTotalMicros) sizes.push_back(us);
      pos = comma == std::string::npos ? s.size() : comma + 1;
    }
  }
  if (sizes.empty()) sizes = {1, 10, 100, 1000, 10000};
  return sizes;
}

void serial_args(benchmark::internal::Benchmark* b) {
  for (const std::int64_t us : task_sizes()) b->Arg(us);
  b->ArgName("task_us")->Unit(benchmark::kMillisecond)->UseRealTime();
}

void scaling_args(benchmark::internal::Benchmark* b) {
  for (const std::int64_t us : task_sizes())
    for (std::int64_t w = 1; w <= max_workers(); ++w) b->Args({w, us});
  b->ArgNames({"workers", "task_us"})->Unit(benchmark::kMillisecond);
}

void warm_args(benchmark::internal::Benchmark* b) {
  scaling_args(b);
  b->UseRealTime();
}

void cold_args(benchmark::internal::Benchmark* b) {
  scaling_args(b);
  b->UseManualTime()->Iterations(1);
}

}  // namespace

BENCHMARK(BM_Scaling_Serial)->Apply(serial_args);
BENCHMARK(BM_Scaling_ThreadPool)->Apply(warm_args);
BENCHMARK(BM_Scaling_Pool)->Apply(warm_args);
BENCHMARK(BM_Scaling_Pool_Cold)->Apply(cold_args);
#if defined(MPROC_BENCH_HAVE_TBB)
BENCHMARK(BM_Scaling_TBB)->Apply(warm_args);
#endif

BENCHMARK_MAIN();
