// Connection::recv<std::string_view> would return a view of the Connection's
// receive buffer, overwritten by the next recv: it does not compile and says
// to receive std::string (#7).
#include <string_view>

#include <mproc/connection.hpp>

// expect-error: std::string_view points into the sender's memory
// expect-error: receive std::string instead
// expect-error: decode_site::connection_recv
int main() {
  auto [a, b] = mproc::Pipe();
  a.send(std::string_view("hello"));
  return static_cast<int>(b.recv<std::string_view>().size());
}
