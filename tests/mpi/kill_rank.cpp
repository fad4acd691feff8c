// A serving rank dies (SIGKILL) in the middle of a map. MPI without ULFM
// cannot continue a job that lost a rank: mpiexec must end the whole job
// within seconds, with a non-zero exit code and a message naming the dead
// rank — the client must neither hang nor return results. Run by ctest
// through run_mpi_program.cmake, which checks exit code, output and time.
#include <csignal>
#include <cstdio>
#include <numeric>
#include <vector>

#include <unistd.h>

#include <mproc/mpi.hpp>

namespace mp = mproc;

int kill_on_5(int x) {
  if (x == 5) {
    std::fprintf(stderr, "task 5: killing serving rank (pid %d) with SIGKILL\n", static_cast<int>(::getpid()));
    std::fflush(stderr);
    ::kill(::getpid(), SIGKILL);
  }
  return x;
}

int main() {
  mp::mpi::Pool pool;
  std::vector<int> xs(40);
  std::iota(xs.begin(), xs.end(), 0);
  try {
    const auto r = pool.map(kill_on_5, xs, 1);
    std::printf("the map returned %zu results although a rank died\n", r.size());
  } catch (const std::exception& e) {
    std::printf("the map threw: %s\n", e.what());
  }
  return 0;
}
