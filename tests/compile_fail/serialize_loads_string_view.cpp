// A std::string_view decoded by mp::loads would point into the frame, which
// the caller may free: loads says to receive std::string instead (#7).
#include <string>
#include <string_view>

#include <mproc/serialize.hpp>

// expect-error: std::string_view points into the sender's memory
// expect-error: receive std::string instead
// expect-error: decode_site::loads
int main() {
  const auto frame = mproc::dumps(std::string("text"));
  return static_cast<int>(mproc::loads<std::string_view>(frame).size());
}
