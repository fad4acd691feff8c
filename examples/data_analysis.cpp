// The article's data-analysis example (chapter 2.3.2), in C++:
//
//   def analyze_data(data): return data.mean()
//   data_sets = [np.random.randn(1000000) for _ in range(10)]
//   with Pool(processes=4) as pool:
//       results = pool.map(analyze_data, data_sets)
//   print(results)
//
// The data sets live in shared memory (mp::Array), so the workers read them
// in place: nothing is pickled or copied. The program then times the same
// map against a serial loop and a ThreadPool. On a terminal, a progress bar
// shows the map as it runs.
#include <chrono>
#include <cstdio>
#include <numeric>
#include <random>
#include <span>
#include <vector>

#include <mproc/mproc.hpp>
#include <mproc/thread_pool.hpp>

namespace mp = mproc;

// expect-output: ^\[-?0\.[0-9][0-9][0-9][0-9][0-9][0-9], -?0\.[0-9][0-9][0-9][0-9][0-9][0-9], -?0\.[0-9][0-9][0-9][0-9][0-9][0-9], -?0\.[0-9][0-9][0-9][0-9][0-9][0-9], -?0\.[0-9][0-9][0-9][0-9][0-9][0-9], -?0\.[0-9][0-9][0-9][0-9][0-9][0-9], -?0\.[0-9][0-9][0-9][0-9][0-9][0-9], -?0\.[0-9][0-9][0-9][0-9][0-9][0-9], -?0\.[0-9][0-9][0-9][0-9][0-9][0-9], -?0\.[0-9][0-9][0-9][0-9][0-9][0-9]\]
// expect-output: Pool\(4\)\.map, first +[0-9.]+ ms
// expect-output: Pool\(4\)\.map, again +[0-9.]+ ms
// expect-output: serial loop +[0-9.]+ ms
// expect-output: ThreadPool\(4\)\.map +[0-9.]+ ms
// expect-output: all three agree

double mean(std::span<const double> data) {
  return std::accumulate(data.begin(), data.end(), 0.0) / static_cast<double>(data.size());
}

// Runs in a worker process; the Array arrives as the same shared memory,
// read-only here (Array<const double>: the task cannot write to it).
//
// The first map is slower than the later ones: a worker that reads an array
// for the first time has the kernel fill its page tables for it (on a virtual
// machine that costs more than reading the data). Workers keep the arrays
// mapped, and the pool sends each array back to a worker that has it, so
// from the second map on the pool runs at memory speed.
double analyze_data(const mp::Array<const double>& data) { return mean(data); }

template <class F>
double time_ms(F&& f) {
  const auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

int main() {
  std::mt19937_64 rng(2024);
  std::normal_distribution<double> randn;
  std::vector<mp::Array<double>> data_sets;
  for (int i = 0; i < 10; ++i) {
    mp::Array<double> data(1'000'000);
    for (double& x : data) x = randn(rng);
    data_sets.push_back(data);
  }

  mp::Pool pool(4);
  std::vector<double> results;
  const double first_ms = time_ms([&] {
    for (double m : mp::progress(pool.imap(analyze_data, data_sets), "analyze_data")) results.push_back(m);
  });

  std::printf("[");
  for (std::size_t i = 0; i < results.size(); ++i) std::printf("%s%.6f", i ? ", " : "", results[i]);
  std::printf("]\n");

  std::vector<double> by_pool, by_loop, by_threads;
  mp::ThreadPool threads(4);
  const double pool_ms = time_ms([&] { by_pool = pool.map(analyze_data, data_sets); });
  const double loop_ms = time_ms([&] {
    for (const auto& data : data_sets) by_loop.push_back(mean(data));
  });
  const double threads_ms =
      time_ms([&] { by_threads = threads.map([](const mp::Array<double>& data) { return mean(data); }, data_sets); });
  std::printf("Pool(4).map, first %8.2f ms  (workers map the arrays: the kernel fills their page tables)\n", first_ms);
  std::printf("Pool(4).map, again %8.2f ms\n", pool_ms);
  std::printf("serial loop        %8.2f ms\n", loop_ms);
  std::printf("ThreadPool(4).map  %8.2f ms\n", threads_ms);
  if (by_pool != results || by_loop != results || by_threads != results) {
    std::printf("results disagree\n");
    return 1;
  }
  std::printf("all three agree\n");
  return 0;
}
