// Ranks that run different builds of a program: built twice (the second
// with MPROC_TEST_OTHER_BUILD, so its code and GNU build-id differ) and run
// as `mpiexec -n 1 other_build_a : -n 2 other_build_b`. The client's pool
// must refuse the serving ranks with a clear ProcessError when it is
// created (never send them tasks that would name the wrong code), and every
// rank must end cleanly.
#include <cstdio>
#include <vector>

#include <mproc/mpi.hpp>

namespace mp = mproc;

#if defined(MPROC_TEST_OTHER_BUILD)
int twice(int x) { return 3 * x; }  // another function at (maybe) the same offset
#else
int twice(int x) { return 2 * x; }
#endif

int main() {
  try {
    mp::mpi::Pool pool;
    const auto r = pool.map(twice, std::vector<int>{1, 2, 3});
    std::printf("the map ran on another build: %d %d %d\n", r[0], r[1], r[2]);
    return 1;
  } catch (const mp::ProcessError& e) {
    std::printf("refused: %s\n", e.what());
    return 0;
  }
}
