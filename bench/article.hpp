// The article's data-analysis workload, shared by the benchmarks: ten data
// sets of 1,000,000 standard-normal doubles, and their mean.
#pragma once

#include <chrono>
#include <cstddef>
#include <random>
#include <span>
#include <vector>

namespace mproc_bench {

inline constexpr int kArticleSets = 10;
inline constexpr std::size_t kArticleSize = 1'000'000;

// Mean with four accumulators (the serial peer in bench/README.md). Opaque to the
// optimizer: GCC 12 misreads the tail loop at a constant size
// (-Waggressive-loop-optimizations).
[[gnu::noipa]] inline double mean_of(std::span<const double> v) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  std::size_t i = 0;
  for (; i + 4 <= v.size(); i += 4) {
    s0 += v[i];
    s1 += v[i + 1];
    s2 += v[i + 2];
    s3 += v[i + 3];
  }
  for (; i < v.size(); ++i) s0 += v[i];
  return (s0 + s1 + s2 + s3) / static_cast<double>(v.size());
}

// The data sets (seed 42), made on first use.
inline const std::vector<std::vector<double>>& article_data_sets() {
  static const std::vector<std::vector<double>> sets = [] {
    std::mt19937_64 rng(42);
    std::normal_distribution<double> randn;
    std::vector<std::vector<double>> out(kArticleSets, std::vector<double>(kArticleSize));
    for (auto& v : out)
      for (auto& x : v) x = randn(rng);
    return out;
  }();
  return sets;
}

// Wall-clock milliseconds that f() takes.
template <class F>
double time_ms(F&& f) {
  const auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace mproc_bench
