// A consumer of mproc's component mpi: run as `mpiexec -n 2 consumer_mpi`.
#include <cstdio>
#include <vector>

#include <mproc/mpi.hpp>
#include <mproc/version.hpp>

namespace mp = mproc;

int twice(int x) { return 2 * x; }

int main() {
  mp::mpi::Pool pool;
  const auto r = pool.map(twice, std::vector<int>{1, 2, 3});
  if (r != std::vector<int>{2, 4, 6}) return 1;
  std::printf("mproc %s mpi ok\n", MPROC_VERSION_STRING);
  return 0;
}
