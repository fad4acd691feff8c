// A Pool task returning a struct of spans would hand the parent pointers into
// the worker's memory: it does not compile and says to use std::vector (#7).
#include <span>
#include <utility>
#include <vector>

#include <mproc/pool.hpp>

// expect-error: std::span<const U> points into the sender's memory
// expect-error: receive std::vector<U> instead
// expect-error: decode_site::pool_result
std::pair<int, std::span<const double>> head(std::vector<double> v) {
  static std::vector<double> kept;
  kept = std::move(v);
  return {1, std::span<const double>(kept)};
}

int main() {
  mproc::Pool pool(2);
  auto r = pool.apply_async(head, std::vector<double>{1.0, 2.0});
  return r.get().first;
}
