// Python's Listener/Client sample: a server process accepts one client,
// authenticated with a shared key, and answers its messages.
//
//   Python                                         C++
//   with Listener(('localhost', 0),                mp::connection::Listener listener("localhost:0", "secret");
//                 authkey=b'secret') as listener:
//       # in another process:                      // in another process:
//       with Client(address, authkey=b'secret')    auto c = mp::connection::Client(address, "secret");
//            as c: c.send([1, 2, 3])               c.send(std::vector<int>{1, 2, 3});
//       with listener.accept() as conn:            mp::Connection conn = listener.accept();
//           print(conn.recv())                     conn.recv<std::vector<int>>();
//
// A client with the wrong key is refused (AuthenticationError on both sides).
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include <mproc/listener.hpp>
#include <mproc/process.hpp>

namespace mp = mproc;
using namespace std::chrono_literals;

int client(std::string address) {
  try {
    auto bad = mp::connection::Client(address, "wrong key");
    return 1;
  } catch (const mp::AuthenticationError& e) {
    std::printf("wrong key refused: %s\n", e.what());
  }
  auto c = mp::connection::Client(address, "secret");
  c.send(std::vector<int>{1, 2, 3});
  std::printf("sum from the server: %d\n", c.recv<int>());
  return 0;
}

int main() {
  mp::connection::Listener listener("127.0.0.1:0", "secret");  // port 0: any free port
  mp::Process p(client, listener.address());
  p.start();
  try {
    (void)listener.accept(10s);  // the client with the wrong key
  } catch (const mp::AuthenticationError&) {
  }
  mp::Connection conn = listener.accept(10s);
  const auto v = conn.recv<std::vector<int>>();
  conn.send(std::accumulate(v.begin(), v.end(), 0));
  p.join();
  std::printf("client exit code %d\n", p.exitcode().value_or(-1));
  return p.exitcode().value_or(-1);
}
// expect-output: wrong key refused: mproc: connection handshake: the digest sent was rejected
// expect-output: sum from the server: 6
// expect-output: client exit code 0
