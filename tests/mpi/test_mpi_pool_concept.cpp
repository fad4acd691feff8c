// One generic program, written against mproc::pool_like, run unchanged on a
// ThreadPool, a process Pool and an MPI Pool (under `mpiexec -n 3`).
#include <numeric>
#include <tuple>
#include <vector>

#include <mproc/mpi.hpp>
#include <mproc/pool.hpp>
#include <mproc/pool_concept.hpp>
#include <mproc/thread_pool.hpp>

#include "catch.hpp"

namespace mp = mproc;

namespace {

int square(int x) { return x * x; }
int add(int a, int b) { return a + b; }

static_assert(mp::pool_like<mp::ThreadPool>);
static_assert(mp::pool_like<mp::Pool>);
static_assert(mp::pool_like<mp::mpi::Pool>);
static_assert(!mp::pool_like<std::vector<int>>);

// The program: map, starmap, imap, apply_async, apply, close, join.
template <mp::pool_like P>
std::vector<int> generic_program(P& pool) {
  std::vector<int> xs(100);
  std::iota(xs.begin(), xs.end(), 0);
  std::vector<std::tuple<int, int>> pairs;
  for (int x : xs) pairs.emplace_back(x, 1000);
  std::vector<int> out = pool.map(square, xs);
  for (int s : pool.starmap(add, pairs)) out.push_back(s);
  for (int r : pool.imap(square, xs)) out.push_back(-r);
  out.push_back(pool.apply_async(square, 12).get());
  out.push_back(pool.apply(add, 20, 22));
  pool.close();
  pool.join();
  return out;
}

}  // namespace

TEST_CASE("pool_like: the same generic program runs on ThreadPool, Pool and mpi::Pool", "[mpi][pool_like]") {
  // Every rank runs the local pools (the process pool forks workers from an
  // MPI rank: they never call MPI); then the MPI pool, on the client.
  mp::ThreadPool threads(2);
  const auto by_threads = generic_program(threads);
  mp::Pool processes(2);
  const auto by_processes = generic_program(processes);
  REQUIRE(by_threads.size() == 302);
  REQUIRE(by_threads[99] == 99 * 99);
  REQUIRE(by_threads[100] == 1000);
  REQUIRE(by_threads[300] == 144);
  REQUIRE(by_threads[301] == 42);
  REQUIRE(by_processes == by_threads);

  mp::mpi::Pool ranks(mp::mpi::PoolOptions().servers_return());
  if (!ranks) return;
  REQUIRE(generic_program(ranks) == by_threads);
}
