// The article's Pipe sample: a child sends [1, 2, 3] to its parent.
//
//   Python                                     C++
//   def f(conn):                               void f(mp::Connection& conn) {
//       conn.send([1, 2, 3])                       conn.send(std::vector<int>{1, 2, 3});
//       conn.close()                               conn.close(); }
//   parent_conn, child_conn = Pipe()           auto [parent_conn, child_conn] = mp::Pipe();
//   p = Process(target=f, args=(child_conn,))  mp::Process p(f, std::move(child_conn));
//   p.start()                                  p.start();
//   print(parent_conn.recv())                  parent_conn.recv<std::vector<int>>()
//   p.join()                                   p.join();
#include <cstdio>
#include <utility>
#include <vector>

#include <mproc/connection.hpp>
#include <mproc/process.hpp>

namespace mp = mproc;

void f(mp::Connection& conn) {
  conn.send(std::vector<int>{1, 2, 3});
  conn.close();
}

// expect-output: ^\[1, 2, 3\]
int main() {
  auto [parent_conn, child_conn] = mp::Pipe();
  mp::Process p(f, std::move(child_conn));  // start() closes the parent's copy
  p.start();
  const auto received = parent_conn.recv<std::vector<int>>();
  std::printf("[");
  for (std::size_t i = 0; i < received.size(); ++i) std::printf(i ? ", %d" : "%d", received[i]);
  std::printf("]\n");
  p.join();
  return 0;
}
