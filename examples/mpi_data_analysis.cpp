// The article's data-analysis example (examples/data_analysis.cpp) across
// the ranks of an MPI job: the pool's type changes, the map stays.
//
//   $ mpiexec -n 4 ./mpi_data_analysis     # rank 0 maps, ranks 1..3 analyse
//
// Every rank runs this program. mp::mpi::Pool's constructor is where the
// serving ranks stay: they run analyze_data for the client until it closes
// the pool, then end. Only the client (rank 0) goes on past it, makes the
// data sets and maps over them; each data set travels to a serving rank as
// one MPI message and arrives as a std::span viewing the received bytes. It
// prints the same ten means as examples/data_analysis.cpp.
#include <chrono>
#include <cstdio>
#include <numeric>
#include <span>
#include <vector>

#include <mproc/mpi.hpp>

#include "article_data.hpp"

namespace mp = mproc;

// expect-output: ^\[-?0\.[0-9][0-9][0-9][0-9][0-9][0-9], -?0\.[0-9][0-9][0-9][0-9][0-9][0-9], -?0\.[0-9][0-9][0-9][0-9][0-9][0-9], -?0\.[0-9][0-9][0-9][0-9][0-9][0-9], -?0\.[0-9][0-9][0-9][0-9][0-9][0-9], -?0\.[0-9][0-9][0-9][0-9][0-9][0-9], -?0\.[0-9][0-9][0-9][0-9][0-9][0-9], -?0\.[0-9][0-9][0-9][0-9][0-9][0-9], -?0\.[0-9][0-9][0-9][0-9][0-9][0-9], -?0\.[0-9][0-9][0-9][0-9][0-9][0-9]\]
// expect-output: mpi::Pool\([0-9]+ ranks\)\.map +[0-9.]+ ms
// expect-output: serial loop +[0-9.]+ ms
// expect-output: the ranks agree with the serial loop

double mean(std::span<const double> data) {
  return std::accumulate(data.begin(), data.end(), 0.0) / static_cast<double>(data.size());
}

// Runs on a serving rank, on a view of the data set it received.
double analyze_data(std::span<const double> data) { return mean(data); }

int main() {
  mp::mpi::Pool pool;  // serving ranks serve here, then end

  const std::vector<std::vector<double>> data_sets = article::data_sets();
  std::vector<double> results = pool.map(analyze_data, data_sets);

  std::printf("[");
  for (std::size_t i = 0; i < results.size(); ++i) std::printf("%s%.6f", i ? ", " : "", results[i]);
  std::printf("]\n");

  auto t0 = std::chrono::steady_clock::now();
  const std::vector<double> again = pool.map(analyze_data, data_sets);
  auto t1 = std::chrono::steady_clock::now();
  std::vector<double> serial;
  for (const auto& data : data_sets) serial.push_back(mean(data));
  auto t2 = std::chrono::steady_clock::now();
  std::printf("mpi::Pool(%zu ranks).map  %8.2f ms\n", pool.size(),
              std::chrono::duration<double, std::milli>(t1 - t0).count());
  std::printf("serial loop             %8.2f ms\n", std::chrono::duration<double, std::milli>(t2 - t1).count());
  if (again != results || serial != results) {
    std::printf("results disagree\n");
    return 1;
  }
  std::printf("the ranks agree with the serial loop\n");
  return 0;
}
