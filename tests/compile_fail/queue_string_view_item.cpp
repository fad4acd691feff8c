// Queue<std::string_view> would pass a view of the producer's memory to the
// consumer: it does not compile and says to use std::string (#7).
#include <string_view>

#include <mproc/queue.hpp>

// expect-error: std::string_view points into the sender's memory
// expect-error: receive std::string instead
// expect-error: decode_site::queue_item
int main() {
  mproc::Queue<std::string_view> q;
  q.put("hello");
  return static_cast<int>(q.get().size());
}
