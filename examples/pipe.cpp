// The article's Pipe sample: a child sends [1, 2, 3] to its parent.
//
//   Python                                   C++
//   parent_conn, child_conn = Pipe()         auto [parent_conn, child_conn] = mp::Pipe();
//   p = Process(target=f, args=(child_conn,)) mp::Process p(f, std::move(child_conn));
//   p.start()                                p.start();
//   print(parent_conn.recv())                parent_conn.recv<std::vector<int>>()
//   p.join()                                 p.join();
//
// Typed send()/recv<T>() need mproc's serializer, which is not merged yet:
// until then this sample sends the ints' bytes with send_bytes().
#include <mproc/connection.hpp>
#include <mproc/process.hpp>

#include <cstdio>
#include <cstring>
#include <span>
#include <utility>
#include <vector>

namespace mp = mproc;

void f(mp::Connection& conn) {
  const std::vector<int> message{1, 2, 3};
  conn.send_bytes(std::as_bytes(std::span(message)));
  conn.close();
}

// expect-output: ^\[1, 2, 3\]
int main() {
  auto [parent_conn, child_conn] = mp::Pipe();
  mp::Process p(f, std::move(child_conn));  // start() closes the parent's copy
  p.start();
  const std::vector<std::byte> bytes = parent_conn.recv_bytes();
  std::vector<int> received(bytes.size() / sizeof(int));
  std::memcpy(received.data(), bytes.data(), received.size() * sizeof(int));
  std::printf("[");
  for (std::size_t i = 0; i < received.size(); ++i) std::printf(i ? ", %d" : "%d", received[i]);
  std::printf("]\n");
  p.join();
  return 0;
}
