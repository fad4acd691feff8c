// Thread pool benchmarks, side by side with their peers (bench/README.md: P2, P3):
//  P2  1M empty post()s + wait(): ThreadPool(2) vs tbb::task_group in a
//      task_arena(2) vs boost::asio::thread_pool(2); std::async per task
//      (1000 tasks, it starts a thread each) for scale; submit() with futures
//      and apply_async() with AsyncResults.
//  P3  parallel_for over 1M doubles (v[i] *= c): ThreadPool vs
//      tbb::parallel_for vs OpenMP vs a serial loop; map over 1M ints.
//  The article's data analysis on threads: mean of each of 10 vectors of
//  1,000,000 doubles, ThreadPool.map vs tbb::parallel_for vs serial.
// Run with --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
// and compare medians.
#include <atomic>
#include <cstddef>
#include <future>
#include <numeric>
#include <span>
#include <vector>

#include <benchmark/benchmark.h>

#include <mproc/futures.hpp>
#include <mproc/thread_pool.hpp>

#ifdef MPROC_BENCH_HAVE_TBB
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>
#include <tbb/task_group.h>
#endif
#ifdef MPROC_BENCH_HAVE_BOOST
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#endif
#ifdef MPROC_BENCH_HAVE_OPENMP
#include <omp.h>
#endif

#include "article.hpp"

namespace mp = mproc;

namespace {

constexpr int kPosts = 1'000'000;
constexpr std::size_t kItems = 1'000'000;
constexpr int kThreads = 2;

mp::ThreadPool& pool2() {
  static mp::ThreadPool pool(kThreads);
  return pool;
}

// ------------------------------------------------------------------ P2

void BM_Post1M_ThreadPool(benchmark::State& state) {
  auto& pool = pool2();
  for (auto _ : state) {
    for (int i = 0; i < kPosts; ++i) pool.post([] {});
    pool.wait();
  }
  state.SetItemsProcessed(state.iterations() * kPosts);
}

#ifdef MPROC_BENCH_HAVE_TBB
void BM_Post1M_TbbTaskGroup(benchmark::State& state) {
  tbb::task_arena arena(kThreads);
  tbb::task_group group;
  for (auto _ : state) {
    arena.execute([&] {
      for (int i = 0; i < kPosts; ++i) group.run([] {});
      group.wait();
    });
  }
  state.SetItemsProcessed(state.iterations() * kPosts);
}
#endif

#ifdef MPROC_BENCH_HAVE_BOOST
// asio's pool can only be waited for by join(), which ends it: one pool per run.
void BM_Post1M_AsioThreadPool(benchmark::State& state) {
  for (auto _ : state) {
    boost::asio::thread_pool pool(kThreads);
    for (int i = 0; i < kPosts; ++i) boost::asio::post(pool, [] {});
    pool.join();
  }
  state.SetItemsProcessed(state.iterations() * kPosts);
}
#endif

// std::async starts a thread per task: 1000 tasks, compare per-item times.
void BM_Post1000_StdAsync(benchmark::State& state) {
  std::vector<std::future<void>> fs;
  fs.reserve(1000);
  for (auto _ : state) {
    for (int i = 0; i < 1000; ++i) fs.push_back(std::async(std::launch::async, [] {}));
    for (auto& f : fs) f.get();
    fs.clear();
  }
  state.SetItemsProcessed(state.iterations() * 1000);
}

void BM_Post1000_ThreadPool(benchmark::State& state) {
  auto& pool = pool2();
  for (auto _ : state) {
    for (int i = 0; i < 1000; ++i) pool.post([] {});
    pool.wait();
  }
  state.SetItemsProcessed(state.iterations() * 1000);
}

void BM_Submit100k_ThreadPool(benchmark::State& state) {
  auto& pool = pool2();
  std::vector<std::future<int>> fs;
  fs.reserve(100'000);
  for (auto _ : state) {
    for (int i = 0; i < 100'000; ++i) fs.push_back(pool.submit([i] { return i; }));
    long long sum = 0;
    for (auto& f : fs) sum += f.get();
    benchmark::DoNotOptimize(sum);
    fs.clear();
  }
  state.SetItemsProcessed(state.iterations() * 100'000);
}

// 100,000 apply_async calls on ThreadPool(2), submitted by `submit(pool, i)`
// and their results summed by `collect(results)`.
template <class Submit, class Collect>
void apply_async_100k(benchmark::State& state, Submit submit, Collect collect) {
  auto& pool = pool2();
  std::vector<mp::AsyncResult<int>> rs;
  rs.reserve(100'000);
  for (auto _ : state) {
    for (int i = 0; i < 100'000; ++i) rs.push_back(submit(pool, i));
    benchmark::DoNotOptimize(collect(rs));
    rs.clear();
  }
  state.SetItemsProcessed(state.iterations() * 100'000);
}

long long sum_in_order(std::vector<mp::AsyncResult<int>>& rs) {
  long long sum = 0;
  for (auto& r : rs) sum += r.get();
  return sum;
}

// The same as BM_Submit100k_ThreadPool through apply_async: AsyncResult instead of
// std::future (whose set_value costs a pthread_once futex wake-up, a system
// call, per task).
void BM_ApplyAsync100k_ThreadPool(benchmark::State& state) {
  apply_async_100k(
      state, [](mp::ThreadPool& pool, int i) { return pool.apply_async([i] { return i; }); }, sum_in_order);
}

// The same with a result callback (issue 11's new path): every result also
// passes through the pool's callback thread before it is ready.
void BM_ApplyAsync100k_ThreadPool_Callback(benchmark::State& state) {
  long long seen = 0;  // touched by the callback thread only, read after get()
  apply_async_100k(
      state,
      [&seen](mp::ThreadPool& pool, int i) {
        return pool.apply_async(mp::callbacks([&seen](const int& v) { seen += v; }), [i] { return i; });
      },
      sum_in_order);
  benchmark::DoNotOptimize(seen);
}

// The same, collected in completion order with as_completed.
void BM_ApplyAsync100k_ThreadPool_AsCompleted(benchmark::State& state) {
  apply_async_100k(
      state, [](mp::ThreadPool& pool, int i) { return pool.apply_async([i] { return i; }); },
      [](std::vector<mp::AsyncResult<int>>& rs) {
        long long sum = 0;
        for (const auto& r : mp::as_completed(rs)) sum += r.get();
        return sum;
      });
}

void BM_Submit1000_StdAsync(benchmark::State& state) {
  std::vector<std::future<int>> fs;
  fs.reserve(1000);
  for (auto _ : state) {
    for (int i = 0; i < 1000; ++i) fs.push_back(std::async(std::launch::async, [i] { return i; }));
    long long sum = 0;
    for (auto& f : fs) sum += f.get();
    benchmark::DoNotOptimize(sum);
    fs.clear();
  }
  state.SetItemsProcessed(state.iterations() * 1000);
}

// ------------------------------------------------------------------ P3

std::vector<double>& doubles() {
  static std::vector<double> v(kItems, 1.0);
  return v;
}
constexpr double kScale = 1.0000001;

void BM_Scale1M_Serial(benchmark::State& state) {
  auto& v = doubles();
  for (auto _ : state) {
    for (std::size_t i = 0; i < v.size(); ++i) v[i] *= kScale;
    benchmark::ClobberMemory();
  }
}

void BM_Scale1M_ThreadPoolParallelFor(benchmark::State& state) {
  auto& pool = pool2();
  auto& v = doubles();
  double* p = v.data();
  for (auto _ : state) {
    pool.parallel_for(std::size_t{0}, v.size(), [p](std::size_t i) { p[i] *= kScale; });
    benchmark::ClobberMemory();
  }
}

#ifdef MPROC_BENCH_HAVE_TBB
void BM_Scale1M_TbbParallelFor(benchmark::State& state) {
  tbb::task_arena arena(kThreads);
  auto& v = doubles();
  double* p = v.data();
  for (auto _ : state) {
    arena.execute([&] { tbb::parallel_for(std::size_t{0}, v.size(), [p](std::size_t i) { p[i] *= kScale; }); });
    benchmark::ClobberMemory();
  }
}

void BM_Scale1M_TbbParallelForRange(benchmark::State& state) {
  tbb::task_arena arena(kThreads);
  auto& v = doubles();
  double* p = v.data();
  for (auto _ : state) {
    arena.execute([&] {
      tbb::parallel_for(tbb::blocked_range<std::size_t>(0, v.size()), [p](const tbb::blocked_range<std::size_t>& r) {
        for (std::size_t i = r.begin(); i != r.end(); ++i) p[i] *= kScale;
      });
    });
    benchmark::ClobberMemory();
  }
}
#endif

#ifdef MPROC_BENCH_HAVE_OPENMP
void BM_Scale1M_OpenMP(benchmark::State& state) {
  auto& v = doubles();
  double* p = v.data();
  const auto n = static_cast<long>(v.size());
  for (auto _ : state) {
#pragma omp parallel for num_threads(kThreads) schedule(static)
    for (long i = 0; i < n; ++i) p[i] *= kScale;
    benchmark::ClobberMemory();
  }
}
#endif

std::vector<int>& ints() {
  static std::vector<int> v = [] {
    std::vector<int> x(kItems);
    std::iota(x.begin(), x.end(), 0);
    return x;
  }();
  return v;
}

void BM_MapSquares1M_Serial(benchmark::State& state) {
  auto& in = ints();
  for (auto _ : state) {
    std::vector<int> out(in.size());
    for (std::size_t i = 0; i < in.size(); ++i) out[i] = in[i] * in[i];
    benchmark::DoNotOptimize(out.data());
  }
}

void BM_MapSquares1M_ThreadPool(benchmark::State& state) {
  auto& pool = pool2();
  auto& in = ints();
  for (auto _ : state) benchmark::DoNotOptimize(pool.map([](int x) { return x * x; }, in).data());
}

#ifdef MPROC_BENCH_HAVE_TBB
void BM_MapSquares1M_Tbb(benchmark::State& state) {
  tbb::task_arena arena(kThreads);
  auto& in = ints();
  for (auto _ : state) {
    std::vector<int> out(in.size());
    arena.execute([&] {
      tbb::parallel_for(tbb::blocked_range<std::size_t>(0, in.size()), [&](const tbb::blocked_range<std::size_t>& r) {
        for (std::size_t i = r.begin(); i != r.end(); ++i) out[i] = in[i] * in[i];
      });
    });
    benchmark::DoNotOptimize(out.data());
  }
}
#endif

// ------------------------------------------------------------------ the article's data analysis

using mproc_bench::mean_of;

const std::vector<std::vector<double>>& datasets() { return mproc_bench::article_data_sets(); }

void BM_Article_Serial(benchmark::State& state) {
  const auto& d = datasets();
  for (auto _ : state) {
    std::vector<double> means;
    for (const auto& v : d) means.push_back(mean_of(v));
    benchmark::DoNotOptimize(means.data());
  }
}

void BM_Article_ThreadPoolMap(benchmark::State& state) {
  auto& pool = pool2();
  const auto& d = datasets();
  for (auto _ : state)
    benchmark::DoNotOptimize(pool.map([](const std::vector<double>& v) { return mean_of(v); }, d).data());
}

#ifdef MPROC_BENCH_HAVE_TBB
void BM_Article_Tbb(benchmark::State& state) {
  tbb::task_arena arena(kThreads);
  const auto& d = datasets();
  for (auto _ : state) {
    std::vector<double> means(d.size());
    arena.execute(
        [&] { tbb::parallel_for(std::size_t{0}, d.size(), [&](std::size_t i) { means[i] = mean_of(d[i]); }); });
    benchmark::DoNotOptimize(means.data());
  }
}
#endif

}  // namespace

BENCHMARK(BM_Post1M_ThreadPool)->Unit(benchmark::kMillisecond)->UseRealTime();
#ifdef MPROC_BENCH_HAVE_TBB
BENCHMARK(BM_Post1M_TbbTaskGroup)->Unit(benchmark::kMillisecond)->UseRealTime();
#endif
#ifdef MPROC_BENCH_HAVE_BOOST
BENCHMARK(BM_Post1M_AsioThreadPool)->Unit(benchmark::kMillisecond)->UseRealTime();
#endif
BENCHMARK(BM_Post1000_ThreadPool)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_Post1000_StdAsync)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_Submit100k_ThreadPool)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ApplyAsync100k_ThreadPool)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ApplyAsync100k_ThreadPool_Callback)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ApplyAsync100k_ThreadPool_AsCompleted)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Submit1000_StdAsync)->Unit(benchmark::kMicrosecond)->UseRealTime();

BENCHMARK(BM_Scale1M_Serial)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_Scale1M_ThreadPoolParallelFor)->Unit(benchmark::kMicrosecond)->UseRealTime();
#ifdef MPROC_BENCH_HAVE_TBB
BENCHMARK(BM_Scale1M_TbbParallelFor)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_Scale1M_TbbParallelForRange)->Unit(benchmark::kMicrosecond)->UseRealTime();
#endif
#ifdef MPROC_BENCH_HAVE_OPENMP
BENCHMARK(BM_Scale1M_OpenMP)->Unit(benchmark::kMicrosecond)->UseRealTime();
#endif
BENCHMARK(BM_MapSquares1M_Serial)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_MapSquares1M_ThreadPool)->Unit(benchmark::kMicrosecond)->UseRealTime();
#ifdef MPROC_BENCH_HAVE_TBB
BENCHMARK(BM_MapSquares1M_Tbb)->Unit(benchmark::kMicrosecond)->UseRealTime();
#endif
BENCHMARK(BM_Article_Serial)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Article_ThreadPoolMap)->Unit(benchmark::kMillisecond)->UseRealTime();
#ifdef MPROC_BENCH_HAVE_TBB
BENCHMARK(BM_Article_Tbb)->Unit(benchmark::kMillisecond)->UseRealTime();
#endif

BENCHMARK_MAIN();
