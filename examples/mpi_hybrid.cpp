// Hybrid parallelism: MPI ranks (typically one per machine) and, inside
// each serving rank, a local pool over that machine's cores.
//
//   $ mpiexec -n 3 ./mpi_hybrid
//   $ mpiexec -n 4 --map-by ppr:1:node --hostfile hosts ./mpi_hybrid   # one rank per node
//
// Each task is one of the article's data sets. The serving rank that gets it
// splits it into blocks and sums them twice: with a local mp::ThreadPool
// (threads: the usual choice inside a rank) and with a local mp::Pool
// (processes: for code that is not thread-safe or may crash).
//
// fork() and MPI: a process Pool forks its workers. Some MPI transports
// (InfiniBand verbs, some RDMA stacks) break or warn when a process forks
// after MPI_Init; the shared-memory and TCP transports do not care. The safe
// order, used here, is to create the local process Pool *before* MPI is
// initialized: mp::Pool forks its worker template at construction and later
// workers come from that template, never from the MPI process; and since
// mp::mpi::Pool initializes MPI itself when nobody has, creating the local
// pool first is enough. Workers never call MPI.
//
// The pool is made with servers_return(): serving ranks come back from its
// constructor when the client is done, and every rank's local pools are
// destroyed normally at the end of main().
#include <cstdio>
#include <numeric>
#include <span>
#include <vector>

#include <mproc/mpi.hpp>
#include <mproc/pool.hpp>
#include <mproc/thread_pool.hpp>

#include "article_data.hpp"

namespace mp = mproc;

// expect-output: ^\[-?0\.[0-9]+, -?0\.[0-9]+, -?0\.[0-9]+, -?0\.[0-9]+, -?0\.[0-9]+, -?0\.[0-9]+, -?0\.[0-9]+, -?0\.[0-9]+, -?0\.[0-9]+, -?0\.[0-9]+\]
// expect-output: threads and processes agree on every data set
// expect-output: serving ranks used: [0-9]+

// This rank's local pools (the serving ranks use them in their tasks).
mp::ThreadPool* local_threads = nullptr;
mp::Pool* local_processes = nullptr;

double block_sum(std::span<const double> block) { return std::accumulate(block.begin(), block.end(), 0.0); }

struct Means {
  double by_threads;
  double by_processes;
  int rank;
};

// Runs on a serving rank: the data set split over its cores, twice.
Means analyze_data(std::span<const double> data) {
  constexpr std::size_t kBlocks = 8;
  std::vector<std::span<const double>> blocks;
  const std::size_t step = (data.size() + kBlocks - 1) / kBlocks;
  for (std::size_t at = 0; at < data.size(); at += step)
    blocks.push_back(data.subspan(at, std::min(step, data.size() - at)));
  const auto by_threads = local_threads->map(block_sum, blocks);
  const auto by_processes = local_processes->map(block_sum, blocks);
  const double n = static_cast<double>(data.size());
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return {std::accumulate(by_threads.begin(), by_threads.end(), 0.0) / n,
          std::accumulate(by_processes.begin(), by_processes.end(), 0.0) / n, rank};
}

int main() {
  // Local pools first: the process pool forks before MPI exists.
  mp::Pool processes(2);
  mp::ThreadPool threads(2);
  local_processes = &processes;
  local_threads = &threads;

  mp::mpi::Pool pool(mp::mpi::PoolOptions().servers_return());
  if (!pool) return 0;  // a serving rank, done serving

  const auto data_sets = article::data_sets();
  const std::vector<Means> means = pool.map(analyze_data, data_sets, 1);
  std::printf("[");
  bool agree = true;
  std::vector<int> ranks;
  for (std::size_t i = 0; i < means.size(); ++i) {
    std::printf("%s%.6f", i ? ", " : "", means[i].by_threads);
    agree = agree && means[i].by_threads == means[i].by_processes;
    ranks.push_back(means[i].rank);
  }
  std::printf("]\n");
  if (!agree) {
    std::printf("threads and processes disagree\n");
    return 1;
  }
  std::printf("threads and processes agree on every data set\n");
  std::sort(ranks.begin(), ranks.end());
  std::printf("serving ranks used: %ld\n", static_cast<long>(std::unique(ranks.begin(), ranks.end()) - ranks.begin()));
  return 0;
}
