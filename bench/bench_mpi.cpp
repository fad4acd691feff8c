// mproc::mpi::Pool benchmarks, run as `mpiexec -n 3 bench_mpi` (rank 0 is
// the client and runs Google Benchmark; ranks 1 and 2 serve). Peers in the
// same run: a raw MPI round trip between the client and a serving rank (the
// serving rank echoes inside a task, on its own communicator), the same map
// on an mproc::Pool with as many worker processes as there are serving ranks,
// and a serial loop. mpi4py.futures runs the same workloads in
// bench/mpi4py_peer.py; bench/mpi_compare.py runs both and prints ratios.
//
// Workloads: unit tasks (apply round trips, and map with chunksize=1), 1M
// `x*x` with the default chunksize, the article's map (ten 1,000,000-double
// vectors, mean of each). "Cold" figures are the first call of each workload
// on a fresh pool (measured once per process, reported as a one-iteration
// benchmark); the others are warm.
//
// With MPROC_BENCH_MPI_SCALING=1 in the environment, the scaling study of
// bench_scaling.cpp is added (bench/scaling.py runs it once per rank count):
// 40 ms of work cut into tasks of 1 µs … 10 ms, mapped (default chunksize) on
// all the serving ranks (W = ranks - 1), and a serial loop on the client
// (MPROC_BENCH_SPIN_ITERS_PER_US=n sets the length of the work's steps).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <span>
#include <vector>

#include <benchmark/benchmark.h>

#include <mproc/mpi.hpp>
#include <mproc/pool.hpp>

#include "article.hpp"
#include "spin.hpp"

namespace mp = mproc;

namespace {

using mproc_bench::mean_of;

constexpr std::size_t kUnitTasks = 1000;
constexpr std::size_t kSquares = 1'000'000;

MPI_Comm raw_comm = MPI_COMM_NULL;  // the raw peer's own communicator
mp::mpi::Pool* pool = nullptr;

int identity(int x) { return x; }
int square(int x) { return x * x; }
double analyze(std::span<const double> v) { return mean_of(v); }

// Runs on a serving rank: tells the client its rank, then echoes `n` small
// messages on raw_comm (the raw MPI peer: a plain MPI_Send/MPI_Recv round trip).
int echo(long n) {
  int rank = 0;
  MPI_Comm_rank(raw_comm, &rank);
  MPI_Send(&rank, 1, MPI_INT, 0, 1, raw_comm);
  char buf[64] = {};
  for (long i = 0; i < n; ++i) {
    MPI_Recv(buf, sizeof buf, MPI_BYTE, 0, 2, raw_comm, MPI_STATUS_IGNORE);
    MPI_Send(buf, sizeof buf, MPI_BYTE, 0, 3, raw_comm);
  }
  return rank;
}

const std::vector<int>& unit_inputs() {
  static const std::vector<int> xs(kUnitTasks, 1);
  return xs;
}
const std::vector<int>& square_inputs() {
  static const std::vector<int> xs = [] {
    std::vector<int> v(kSquares);
    std::iota(v.begin(), v.end(), 0);
    return v;
  }();
  return xs;
}

mp::Pool& process_pool() {
  static mp::Pool p(2);
  return p;
}

struct Cold {
  double apply_s = 0;
  double unit_map_s = 0;
  double squares_s = 0;
  double article_s = 0;
} cold;

// ------------------------------------------------------------------ peers

void BM_Raw_RoundTrip(benchmark::State& state) {
  auto echoing = pool->apply_async(echo, static_cast<long>(state.max_iterations));
  int peer = -1;
  MPI_Recv(&peer, 1, MPI_INT, MPI_ANY_SOURCE, 1, raw_comm, MPI_STATUS_IGNORE);
  char buf[64] = {};
  for (auto _ : state) {
    MPI_Send(buf, sizeof buf, MPI_BYTE, peer, 2, raw_comm);
    MPI_Recv(buf, sizeof buf, MPI_BYTE, peer, 3, raw_comm, MPI_STATUS_IGNORE);
  }
  echoing.get();
}

void BM_ProcessPool2_Squares(benchmark::State& state) {
  auto& p = process_pool();
  for (auto _ : state) benchmark::DoNotOptimize(p.map(square, square_inputs()));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kSquares));
}

void BM_Serial_Article(benchmark::State& state) {
  const auto& sets = mproc_bench::article_data_sets();
  for (auto _ : state) {
    std::vector<double> means;
    for (const auto& v : sets) means.push_back(mean_of(v));
    benchmark::DoNotOptimize(means);
  }
}

// ------------------------------------------------------------------ mproc::mpi::Pool, warm

void BM_MpiPool_Apply(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(pool->apply(identity, 1));
}

void BM_MpiPool_UnitTasks(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(pool->map(identity, unit_inputs(), 1));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kUnitTasks));
}

void BM_MpiPool_Squares(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(pool->map(square, square_inputs()));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kSquares));
}

void BM_MpiPool_Article(benchmark::State& state) {
  const auto& sets = mproc_bench::article_data_sets();
  for (auto _ : state) benchmark::DoNotOptimize(pool->map(analyze, sets));
}

// ------------------------------------------------------------------ cold (first calls)

void report_cold(benchmark::State& state, double s) {
  for (auto _ : state) state.SetIterationTime(s);
}
void BM_MpiPool_Cold_Apply(benchmark::State& state) { report_cold(state, cold.apply_s); }
void BM_MpiPool_Cold_UnitTasks(benchmark::State& state) { report_cold(state, cold.unit_map_s); }
void BM_MpiPool_Cold_Squares(benchmark::State& state) { report_cold(state, cold.squares_s); }
void BM_MpiPool_Cold_Article(benchmark::State& state) { report_cold(state, cold.article_s); }

// ------------------------------------------------------------------ scaling (bench/scaling.py)

constexpr std::int64_t kScalingMicros = 40'000;

using mproc_bench::spin;
using mproc_bench::spin_iters_per_us;

std::vector<std::int64_t> scaling_inputs(const benchmark::State& state) {
  return std::vector<std::int64_t>(static_cast<std::size_t>(kScalingMicros / state.range(0)),
                                   state.range(0) * spin_iters_per_us());
}

void scaling_finish(benchmark::State& state, std::size_t tasks) {
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(tasks));
  state.counters["tasks"] = static_cast<double>(tasks);
  state.counters["workers"] = static_cast<double>(pool->size());
}

void BM_MpiScaling_Serial(benchmark::State& state) {
  const auto inputs = scaling_inputs(state);
  std::vector<double> out(inputs.size());
  for (auto _ : state) {
    for (std::size_t i = 0; i < inputs.size(); ++i) out[i] = spin(inputs[i]);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  scaling_finish(state, inputs.size());
}

void BM_MpiScaling(benchmark::State& state) {
  const auto inputs = scaling_inputs(state);
  for (auto _ : state) benchmark::DoNotOptimize(pool->map(spin, inputs).data());
  scaling_finish(state, inputs.size());
}

[[maybe_unused]] const bool scaling_registered = [] {
  const char* env = std::getenv("MPROC_BENCH_MPI_SCALING");
  if (env == nullptr || *env == '\0' || *env == '0') return false;
  for (auto* b : {benchmark::RegisterBenchmark("BM_MpiScaling_Serial", BM_MpiScaling_Serial),
                  benchmark::RegisterBenchmark("BM_MpiScaling", BM_MpiScaling)}) {
    for (const int us : {1, 10, 100, 1000, 10000}) b->Arg(us);
    b->ArgName("task_us")->UseRealTime()->Unit(benchmark::kMillisecond);
  }
  return true;
}();

}  // namespace

BENCHMARK(BM_MpiPool_Cold_Apply)->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_MpiPool_Cold_UnitTasks)->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MpiPool_Cold_Squares)->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MpiPool_Cold_Article)->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Raw_RoundTrip)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_MpiPool_Apply)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_MpiPool_UnitTasks)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ProcessPool2_Squares)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MpiPool_Squares)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Serial_Article)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MpiPool_Article)->UseRealTime()->Unit(benchmark::kMillisecond);

int main(int argc, char** argv) {
  mp::mpi::Environment env(argc, argv);
  benchmark::Initialize(&argc, argv);
  MPI_Comm_dup(MPI_COMM_WORLD, &raw_comm);  // collective: before the pool
  {
    mp::mpi::Pool p(mp::mpi::PoolOptions().servers_return());
    if (p) {
      pool = &p;
      // Inputs are made before the cold calls, which time the pool only.
      (void)mproc_bench::article_data_sets();
      (void)square_inputs();
      (void)unit_inputs();
      cold.apply_s = mproc_bench::time_ms([] { benchmark::DoNotOptimize(pool->apply(identity, 1)); }) / 1e3;
      cold.unit_map_s =
          mproc_bench::time_ms([] { benchmark::DoNotOptimize(pool->map(identity, unit_inputs(), 1)); }) / 1e3;
      cold.squares_s = mproc_bench::time_ms([] { benchmark::DoNotOptimize(pool->map(square, square_inputs())); }) / 1e3;
      cold.article_s =
          mproc_bench::time_ms([] { benchmark::DoNotOptimize(pool->map(analyze, mproc_bench::article_data_sets())); }) /
          1e3;
      benchmark::RunSpecifiedBenchmarks();
      benchmark::Shutdown();
      pool = nullptr;
    }
  }
  MPI_Comm_free(&raw_comm);
  return 0;
}
