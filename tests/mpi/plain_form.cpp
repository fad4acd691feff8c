// The plain form of mproc::mpi::Pool, as in the issue: the program is
// written for one process, MPI is initialized by the pool, and serving ranks
// end inside the constructor — so the lines after it run on the client only.
// Run by ctest as `mpiexec -n 3 plain_form`; the test checks that only rank 0
// printed, that the map ran on both serving ranks and that every rank
// exited 0 (MPI finalized everywhere).
#include <cstdio>
#include <set>
#include <vector>

#include <mproc/mpi.hpp>

namespace mp = mproc;

int square(int x) { return x * x; }
int my_rank(int) {
  int r = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

int main() {
  mp::mpi::Pool pool;
  std::printf("after the constructor on rank %d\n", pool.rank());
  const auto r = pool.map(square, std::vector<int>{1, 2, 3});
  std::printf("map: %d %d %d\n", r[0], r[1], r[2]);
  const auto ranks = pool.map(my_rank, std::vector<int>(40, 0), 1);
  std::printf("served by %zu ranks\n", std::set<int>(ranks.begin(), ranks.end()).size());
  return 0;
}
