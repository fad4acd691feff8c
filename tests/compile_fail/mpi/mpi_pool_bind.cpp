// mpi::Pool does not take mp::bind (it would resend the state with every
// chunk to every rank); it points to broadcast, which sends it once per rank.
// (Checked by tests/mpi/CMakeLists.txt with MPI's include path.)
#include <vector>

#include <mproc/bind.hpp>
#include <mproc/mpi.hpp>

// expect-error: mp::bind is not supported here
// expect-error: pool.broadcast(state)
double scale(const std::vector<double>& w, int x) { return w[0] * x; }

int main() {
  mproc::mpi::Pool pool;
  return static_cast<int>(pool.map(mproc::bind(scale, std::vector<double>{2.0}), std::vector<int>{1, 2})[0]);
}
