// The client calls std::exit() while its pool is open, with a task still
// running: no destructor runs, yet every rank must end (the pool that
// initialized MPI stops its serving ranks before MPI_Finalize, which waits
// for every rank). Run by ctest through run_mpi_program.cmake: exit code 0,
// within seconds.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include <mproc/mpi.hpp>

namespace mp = mproc;

int sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}

int main() {
  mp::mpi::Pool pool;
  auto running = pool.apply_async(sleep_ms, 300);
  std::printf("leaving with the pool open\n");
  std::fflush(stdout);
  std::exit(0);
}
