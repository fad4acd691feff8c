// A std::span nested in a container decoded by mp::loads would point into
// the frame: loads names the span and says to receive std::vector instead (#7).
#include <map>
#include <span>
#include <string>
#include <vector>

#include <mproc/serialize.hpp>

// expect-error: std::span<const U> points into the sender's memory
// expect-error: receive std::vector<U> instead
int main() {
  const auto frame = mproc::dumps(std::map<std::string, std::vector<double>>{{"x", {1.0}}});
  return static_cast<int>(mproc::loads<std::map<std::string, std::span<const double>>>(frame).size());
}
