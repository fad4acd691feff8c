// An mp::Array lives in this machine's shared memory: mpi::Pool refuses to
// send one to another rank (possibly another machine) and says what to do.
// (Checked by tests/mpi/CMakeLists.txt with MPI's include path.)
#include <vector>

#include <mproc/mpi.hpp>
#include <mproc/sharedctypes.hpp>

// expect-error: is (or contains) a process-shared object
// expect-error: Pass the contents by value
double first(const mproc::Array<double>& a) { return a[0]; }

int main() {
  mproc::mpi::Pool pool;
  std::vector<mproc::Array<double>> sets;
  sets.emplace_back(10);
  return static_cast<int>(pool.map(first, sets)[0]);
}
