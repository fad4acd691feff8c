// When does a pool pay off? The same 40 ms of work cut into tasks of 1 µs,
// 10 µs, 100 µs and 1 ms, each task reading 1 KiB of input, run by a serial
// loop (the reference), ThreadPool(2), and Pool(2) with the input carried
// three ways: an int naming the task (no data; also with chunksize=1), a
// 1 KiB std::vector<double> per task (copied to the worker), and a slice of
// one mp::Array bound with mp::bind (shared memory, nothing copied). The README's table "When does a
// process pool pay off?" is the serial time divided by each pool's
// (speed-up; 2 is the ceiling on 2 cores), from the medians of 5 runs:
//   bench_payoff --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>
#include <vector>

#include <benchmark/benchmark.h>

#include <mproc/bind.hpp>
#include <mproc/pool.hpp>
#include <mproc/sharedctypes.hpp>
#include <mproc/thread_pool.hpp>

namespace mp = mproc;

namespace {

constexpr std::size_t kInputDoubles = 128;  // 1 KiB per task
constexpr std::int64_t kTotalMicros = 40'000;

// `iters` steps of a dependent floating-point chain, seeded by the input.
double spin(std::span<const double> in, std::int64_t iters) {
  double x = std::accumulate(in.begin(), in.end(), 0.0);
  for (std::int64_t k = 0; k < iters; ++k) x = x * 0.999999 + 1e-7;
  return x;
}

// Iterations of spin() per µs on this machine (measured once, in the parent).
std::int64_t iters_per_us() {
  static const std::int64_t n = [] {
    const std::vector<double> in(kInputDoubles, 1.0);
    const auto t0 = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(spin(in, 20'000'000));
    const auto us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    return static_cast<std::int64_t>(20'000'000 / us);
  }();
  return n;
}

struct Job {
  std::int64_t tasks;
  std::int64_t iters;  // per task
  explicit Job(const benchmark::State& state)
      : tasks(kTotalMicros / state.range(0)), iters(state.range(0) * iters_per_us()) {}
};

std::vector<double> input_of(std::int64_t task, std::int64_t iters) {
  std::vector<double> v(kInputDoubles, static_cast<double>(task));
  v[0] = static_cast<double>(iters);  // the task's length travels in its data
  return v;
}
double task_on_vector(std::span<const double> in) { return spin(in, static_cast<std::int64_t>(in[0])); }
double task_on_slice(const mp::Array<double>& all, std::int64_t iters, std::int64_t task) {
  return spin(std::span(all.data() + task * static_cast<std::int64_t>(kInputDoubles), kInputDoubles), iters);
}
// No data: the input names the task; the length comes bound.
double task_on_index(std::int64_t iters, std::int64_t task) {
  const double in[kInputDoubles] = {static_cast<double>(task)};
  return spin(in, iters);
}

std::vector<std::int64_t> indices(std::int64_t n) {
  std::vector<std::int64_t> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

mp::Pool& pool2() {
  static mp::Pool pool(2);
  return pool;
}

void finish(benchmark::State& state, const Job& job) {
  state.SetItemsProcessed(state.iterations() * job.tasks);
  state.counters["tasks"] = static_cast<double>(job.tasks);
}

void BM_Payoff_Serial(benchmark::State& state) {
  const Job job(state);
  std::vector<std::vector<double>> in;
  for (std::int64_t t = 0; t < job.tasks; ++t) in.push_back(input_of(t, job.iters));
  for (auto _ : state) {
    std::vector<double> out;
    out.reserve(in.size());
    for (const auto& v : in) out.push_back(task_on_vector(v));
    benchmark::DoNotOptimize(out.data());
  }
  finish(state, job);
}

void BM_Payoff_ThreadPool(benchmark::State& state) {
  const Job job(state);
  static mp::ThreadPool pool(2);
  std::vector<std::vector<double>> in;
  for (std::int64_t t = 0; t < job.tasks; ++t) in.push_back(input_of(t, job.iters));
  for (auto _ : state) benchmark::DoNotOptimize(pool.map(task_on_vector, in).data());
  finish(state, job);
}

void BM_Payoff_Pool_Index(benchmark::State& state) {
  const Job job(state);
  const auto in = indices(job.tasks);
  for (auto _ : state) benchmark::DoNotOptimize(pool2().map(mp::bind(task_on_index, job.iters), in).data());
  finish(state, job);
}

// As above, one task per message (chunksize=1, as imap and apply_async send):
// the per-task cost of the round trip is no longer shared by a chunk.
void BM_Payoff_Pool_Index_Chunksize1(benchmark::State& state) {
  const Job job(state);
  const auto in = indices(job.tasks);
  for (auto _ : state) benchmark::DoNotOptimize(pool2().map(mp::bind(task_on_index, job.iters), in, 1).data());
  finish(state, job);
}

void BM_Payoff_Pool_Vector(benchmark::State& state) {
  const Job job(state);
  std::vector<std::vector<double>> in;
  for (std::int64_t t = 0; t < job.tasks; ++t) in.push_back(input_of(t, job.iters));
  for (auto _ : state) benchmark::DoNotOptimize(pool2().map(task_on_vector, in).data());
  finish(state, job);
}

void BM_Payoff_Pool_Array(benchmark::State& state) {
  const Job job(state);
  mp::Array<double> all(static_cast<std::size_t>(job.tasks) * kInputDoubles);
  for (std::int64_t t = 0; t < job.tasks; ++t)
    for (std::size_t k = 0; k < kInputDoubles; ++k)
      all[static_cast<std::size_t>(t) * kInputDoubles + k] = static_cast<double>(t);
  const auto in = indices(job.tasks);
  for (auto _ : state) benchmark::DoNotOptimize(pool2().map(mp::bind(task_on_slice, all, job.iters), in).data());
  finish(state, job);
}

void task_sizes(benchmark::internal::Benchmark* b) {
  for (const int us : {1, 10, 100, 1000}) b->Arg(us);
  b->ArgName("task_us")->Unit(benchmark::kMillisecond)->UseRealTime();
}

}  // namespace

BENCHMARK(BM_Payoff_Serial)->Apply(task_sizes);
BENCHMARK(BM_Payoff_ThreadPool)->Apply(task_sizes);
BENCHMARK(BM_Payoff_Pool_Index)->Apply(task_sizes);
BENCHMARK(BM_Payoff_Pool_Index_Chunksize1)->Apply(task_sizes);
BENCHMARK(BM_Payoff_Pool_Vector)->Apply(task_sizes);
BENCHMARK(BM_Payoff_Pool_Array)->Apply(task_sizes);

BENCHMARK_MAIN();
