// Process pool benchmarks, side by side with their peers (bench/README.md: P1, P1b,
// P4, P8): the article's Pool(4).map(mean, 10 x 1,000,000 randn) with inputs
// in shared memory (mp::Array) and copied (std::vector), against a serial
// loop, the ThreadPool, and raw forked children over a shared mapping;
// map(x*x) over 1M ints; pool create + map + destroy; and per-task constant
// state (64 KiB) given with mp::bind, against loading it once per worker
// (initializer) and sending it with every input (starmap of pairs).
// Python's own figures: bench/article_python.py.
#include <algorithm>
#include <array>
#include <fstream>
#include <memory>
#include <numeric>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include <benchmark/benchmark.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mproc/bind.hpp>
#include <mproc/pool.hpp>
#include <mproc/sharedctypes.hpp>
#include <mproc/thread_pool.hpp>

#include "article.hpp"

namespace mp = mproc;

namespace {

using mproc_bench::mean_of;
constexpr int kSets = mproc_bench::kArticleSets;
constexpr std::size_t kSize = mproc_bench::kArticleSize;

double analyze_array(const mp::Array<double>& a) { return mean_of(a); }
double analyze_view(std::span<const double> v) { return mean_of(v); }
int square(int x) { return x * x; }

struct Data {
  const std::vector<std::vector<double>>& vectors = mproc_bench::article_data_sets();
  std::vector<mp::Array<double>> arrays;
  Data() {
    for (const auto& v : vectors) arrays.emplace_back(v);
  }
};
Data& data() {
  static Data d;
  return d;
}
mp::Pool& pool4() {
  static mp::Pool pool(4);
  return pool;
}
mp::Pool& pool2() {
  static mp::Pool pool(2);
  return pool;
}

void BM_Article_SerialLoop(benchmark::State& state) {
  auto& d = data();
  for (auto _ : state) {
    std::vector<double> means;
    for (const auto& v : d.vectors) means.push_back(mean_of(v));
    benchmark::DoNotOptimize(means.data());
  }
}

void BM_Article_PoolMap_Array(benchmark::State& state) {
  auto& d = data();
  auto& pool = pool4();
  for (auto _ : state) benchmark::DoNotOptimize(pool.map(analyze_array, d.arrays).data());
}

void BM_Article_PoolMap_Vector(benchmark::State& state) {
  auto& d = data();
  auto& pool = pool4();
  for (auto _ : state) benchmark::DoNotOptimize(pool.map(analyze_view, d.vectors).data());
}

void BM_Article_ThreadPoolMap(benchmark::State& state) {
  auto& d = data();
  static mp::ThreadPool threads(2);
  for (auto _ : state)
    benchmark::DoNotOptimize(threads.map([](const std::vector<double>& v) { return mean_of(v); }, d.vectors).data());
}

// Four raw forked children: child w writes the means of sets w, w + 4, ...
// of `shared` (kSets x kSize doubles) to `results`; all reaped on return.
void raw_fork4_means(const double* shared, double* results) {
  pid_t pids[4];
  for (int w = 0; w < 4; ++w) {
    pids[w] = ::fork();
    if (pids[w] == 0) {
      for (int s = w; s < kSets; s += 4) results[s] = mean_of({shared + s * kSize, kSize});
      ::_exit(0);
    }
  }
  for (pid_t p : pids) ::waitpid(p, nullptr, 0);
}

// Peer: 4 raw forked children over a shared anonymous mapping (fork cost dominates).
void BM_Article_RawFork4(benchmark::State& state) {
  auto& d = data();
  const std::size_t bytes = kSets * kSize * sizeof(double);
  auto* shared =
      static_cast<double*>(::mmap(nullptr, bytes + 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  for (int s = 0; s < kSets; ++s) std::copy(d.vectors[s].begin(), d.vectors[s].end(), shared + s * kSize);
  auto* results = shared + kSets * kSize;
  for (auto _ : state) {
    raw_fork4_means(shared, results);
    benchmark::DoNotOptimize(results[0]);
  }
  ::munmap(shared, bytes + 4096);
}

// Proportional set size of the processes `pids` together, in MiB (shared
// pages count once in total), from /proc/<pid>/smaps_rollup; 0 if unreadable.
double pss_mib(const std::vector<pid_t>& pids) {
  double kib = 0;
  for (pid_t pid : pids) {
    std::ifstream rollup("/proc/" + std::to_string(pid) + "/smaps_rollup");
    for (std::string line; std::getline(rollup, line);)
      if (line.rfind("Pss:", 0) == 0) kib += std::stod(line.substr(4));
  }
  return kib / 1024;
}

// P1, map by map: a fresh Pool(4) per iteration runs the article's map 8
// times over the same mp::Arrays, each map timed alone, next to the serial
// loop over the same arrays in this process (whose pages are mapped here
// already). Counters: map1 (the first, cold map), map2 ... map8, serial (ms),
// and warm_worst_x_serial: the slowest of maps 2..8 over the serial loop
// (target <= 1.0). The reported time is that slowest warm map. The workers'
// footprint: pss1 and pss8, their PSS (MiB, in total) after the first and
// the eighth map (it must not grow: each worker keeps what it mapped).
void BM_Article_PoolMap_ByMap(benchmark::State& state) {
  auto& d = data();
  constexpr int kMaps = 8;
  std::array<double, kMaps> sums{};
  double serial_sum = 0, ratio_sum = 0, pss1_sum = 0, pss8_sum = 0;
  for (auto _ : state) {
    mp::Pool pool(4);
    std::array<double, kMaps> ms{};
    for (int m = 0; m < kMaps; ++m) {
      ms[static_cast<std::size_t>(m)] =
          mproc_bench::time_ms([&] { benchmark::DoNotOptimize(pool.map(analyze_array, d.arrays).data()); });
      if (m == 0) pss1_sum += pss_mib(pool.worker_pids());
    }
    pss8_sum += pss_mib(pool.worker_pids());
    const double serial = mproc_bench::time_ms([&] {
      std::vector<double> means;
      for (const auto& a : d.arrays) means.push_back(mean_of(a));
      benchmark::DoNotOptimize(means.data());
    });
    const double worst = *std::max_element(ms.begin() + 1, ms.end());
    state.SetIterationTime(worst / 1e3);
    for (std::size_t m = 0; m < kMaps; ++m) sums[m] += ms[m];
    serial_sum += serial;
    ratio_sum += worst / serial;
  }
  const auto n = static_cast<double>(state.iterations());
  for (std::size_t m = 0; m < kMaps; ++m) state.counters["map" + std::to_string(m + 1)] = sums[m] / n;
  state.counters["serial"] = serial_sum / n;
  state.counters["warm_worst_x_serial"] = ratio_sum / n;
  state.counters["pss1"] = pss1_sum / n;
  state.counters["pss8"] = pss8_sum / n;
}

// P1c, cold: fresh Arrays (made untimed), then Pool(4) + the first map + the
// pool's destruction, timed together.
void BM_Article_Cold_Pool(benchmark::State& state) {
  auto& d = data();
  for (auto _ : state) {
    std::vector<mp::Array<double>> fresh;
    for (const auto& v : d.vectors) fresh.emplace_back(v);
    const double ms = mproc_bench::time_ms([&] {
      mp::Pool pool(4);
      benchmark::DoNotOptimize(pool.map(analyze_array, fresh).data());
    });
    state.SetIterationTime(ms / 1e3);
  }
}

// Peer of P1c: four raw forked children read a fresh memfd that this process
// filled (untimed), each its share of the sets, and are reaped.
void BM_Article_Cold_RawFork4(benchmark::State& state) {
  auto& d = data();
  const std::size_t bytes = kSets * kSize * sizeof(double) + 4096;
  for (auto _ : state) {
    const int fd = ::memfd_create("bench", MFD_CLOEXEC);
    if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(bytes)) != 0) state.SkipWithError("memfd");
    auto* shared = static_cast<double*>(::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    for (int s = 0; s < kSets; ++s) std::copy(d.vectors[s].begin(), d.vectors[s].end(), shared + s * kSize);
    auto* results = shared + kSets * kSize;
    const double ms = mproc_bench::time_ms([&] { raw_fork4_means(shared, results); });
    benchmark::DoNotOptimize(results[0]);
    ::munmap(shared, bytes);
    ::close(fd);
    state.SetIterationTime(ms / 1e3);
  }
}

void BM_MapSquares_DefaultChunksize(benchmark::State& state) {
  auto& pool = pool2();
  std::vector<int> in(1'000'000);
  std::iota(in.begin(), in.end(), 0);
  for (auto _ : state) benchmark::DoNotOptimize(pool.map(square, in).data());
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(in.size()));
}

void BM_MapSquares_Chunksize1(benchmark::State& state) {
  auto& pool = pool2();
  std::vector<int> in(100'000);
  std::iota(in.begin(), in.end(), 0);
  for (auto _ : state) benchmark::DoNotOptimize(pool.map(square, in, 1).data());
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(in.size()));
}

void BM_PoolLifecycle(benchmark::State& state) {
  std::vector<int> in(100);
  std::iota(in.begin(), in.end(), 0);
  for (auto _ : state) {
    mp::Pool pool(2);
    benchmark::DoNotOptimize(pool.map(square, in).data());
  }
}

// Peer of the lifecycle: fork 2 children that square 50 ints each and send
// them back through a pipe, then reap them (the floor any fork-based pool pays).
void BM_RawFork2_Lifecycle(benchmark::State& state) {
  for (auto _ : state) {
    int fds[2];
    if (::pipe(fds) != 0) state.SkipWithError("pipe");
    pid_t pids[2];
    for (int w = 0; w < 2; ++w) {
      pids[w] = ::fork();
      if (pids[w] == 0) {
        int out[50];
        for (int i = 0; i < 50; ++i) out[i] = square(w * 50 + i);
        (void)!::write(fds[1], out, sizeof out);
        ::_exit(0);
      }
    }
    ::close(fds[1]);
    int in[100];
    std::size_t got = 0;
    for (ssize_t r; got < sizeof in && (r = ::read(fds[0], reinterpret_cast<char*>(in) + got, sizeof in - got)) > 0;)
      got += static_cast<std::size_t>(r);
    ::close(fds[0]);
    for (pid_t p : pids) ::waitpid(p, nullptr, 0);
    benchmark::DoNotOptimize(in[0]);
  }
}

// Per-task constant state: 64 KiB of weights that each of 1,000 calls reads.
constexpr std::size_t kStateFloats = 16384;
constexpr int kStateItems = 1000;
std::vector<float> state_weights() { return std::vector<float>(kStateFloats, 0.5f); }
float weigh(const std::vector<float>& w, int x) {
  return w[static_cast<std::size_t>(x) % w.size()] * static_cast<float>(x);
}
std::vector<float> worker_weights;  // set in each worker by the initializer
void load_weights() { worker_weights = state_weights(); }
float weigh_global(int x) { return weigh(worker_weights, x); }
std::vector<int> state_inputs() {
  std::vector<int> in(kStateItems);
  std::iota(in.begin(), in.end(), 0);
  return in;
}

void BM_State_Bind(benchmark::State& state) {
  auto& pool = pool2();
  const auto in = state_inputs();
  const auto w = state_weights();
  for (auto _ : state) benchmark::DoNotOptimize(pool.map(mp::bind(weigh, w), in).data());
  state.SetItemsProcessed(state.iterations() * kStateItems);
}

void BM_State_Initializer(benchmark::State& state) {
  static mp::Pool pool(2, mp::PoolOptions().initializer(load_weights));
  const auto in = state_inputs();
  for (auto _ : state) benchmark::DoNotOptimize(pool.map(weigh_global, in).data());
  state.SetItemsProcessed(state.iterations() * kStateItems);
}

void BM_State_PerInput_Starmap(benchmark::State& state) {
  auto& pool = pool2();
  std::vector<std::tuple<std::vector<float>, int>> in;
  for (int x : state_inputs()) in.emplace_back(state_weights(), x);
  for (auto _ : state) benchmark::DoNotOptimize(pool.starmap(weigh, in).data());
  state.SetItemsProcessed(state.iterations() * kStateItems);
}

}  // namespace

BENCHMARK(BM_Article_SerialLoop)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Article_PoolMap_Array)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Article_PoolMap_Vector)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Article_ThreadPoolMap)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Article_RawFork4)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Article_PoolMap_ByMap)->Unit(benchmark::kMillisecond)->UseManualTime()->Iterations(3);
BENCHMARK(BM_Article_Cold_Pool)->Unit(benchmark::kMillisecond)->UseManualTime()->Iterations(5);
BENCHMARK(BM_Article_Cold_RawFork4)->Unit(benchmark::kMillisecond)->UseManualTime()->Iterations(5);
BENCHMARK(BM_MapSquares_DefaultChunksize)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_MapSquares_Chunksize1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_PoolLifecycle)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_RawFork2_Lifecycle)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_State_Bind)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_State_Initializer)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_State_PerInput_Starmap)->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
