// examples/parallel_for.cpp — a parallel loop over indices on a ThreadPool,
// with bounds of different integer types (an int 0 and a std::size_t size),
// as one writes it: pool.parallel_for(0, v.size(), f). The calling thread
// works too; the grain is chosen for you.
// SPDX-License-Identifier: MIT
//
// expect-output: scaled 1000000 values, sum 500000500000

#include <cstdio>
#include <numeric>
#include <vector>

#include <mproc/thread_pool.hpp>

namespace mp = mproc;

int main() {
  std::vector<long long> v(1'000'000);
  std::iota(v.begin(), v.end(), 0);
  mp::ThreadPool pool(2);
  pool.parallel_for(0, v.size(), [&v](std::size_t i) { v[i] += 1; });  // i: the bounds' common type
  std::printf("scaled %zu values, sum %lld\n", v.size(), std::accumulate(v.begin(), v.end(), 0LL));
  return 0;
}
