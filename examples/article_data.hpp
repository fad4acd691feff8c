// The article's data sets (chapter 2.3.2: `[np.random.randn(1000000) for _
// in range(10)]`) for the examples: ten sets of 1,000,000 standard-normal
// doubles drawn in order from one std::mt19937_64 seeded 2024 — the numbers
// examples/data_analysis.cpp analyses, so every example prints the same ten
// means.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace article {

inline constexpr int kSets = 10;
inline constexpr std::size_t kSize = 1'000'000;
inline constexpr std::uint64_t kSeed = 2024;

// Fills every element of every set in `sets` (any range of ranges of
// double, e.g. std::vector<mp::Array<double>>), set after set, with
// standard-normal numbers from one generator seeded `seed`.
template <class Sets>
void fill_randn(Sets& sets, std::uint64_t seed = kSeed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> randn;
  for (auto& set : sets)
    for (double& x : set) x = randn(rng);
}

// The ten data sets as std::vector<double>.
inline std::vector<std::vector<double>> data_sets(std::uint64_t seed = kSeed) {
  std::vector<std::vector<double>> sets(kSets, std::vector<double>(kSize));
  fill_randn(sets, seed);
  return sets;
}

}  // namespace article
