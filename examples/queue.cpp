// Python's Queue sample, grown to three producers: each child puts its
// squares, the parent collects them and prints the sorted result.
//
//   Python                                     C++
//   def f(q, k):                               void f(mp::Queue<int> q, int k) {
//       for i in range(4):                         for (int i = 0; i < 4; ++i)
//           q.put((k * 4 + i) ** 2)                    q.put((k * 4 + i) * (k * 4 + i)); }
//   q = Queue()                                mp::Queue<int> q;
//   ps = [Process(target=f, args=(q, k))       std::vector<mp::Process> ps;
//         for k in range(3)]                   for (int k = 0; k < 3; ++k) ps.emplace_back(f, q, k);
//   for p in ps: p.start()                     for (auto& p : ps) p.start();
//   got = [q.get() for _ in range(6)]          ... q.get() six times
//   for p in ps: p.join()                      for (auto& p : ps) p.join();
//   q.shutdown()  # as 3.13's queue.Queue      q.shutdown();
//   try:                                       for (int x : q) got.push_back(x);
//       while True: got.append(q.get())
//   except ShutDown: pass
//   print(sorted(got))                         ... sorted
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include <mproc/process.hpp>
#include <mproc/queue.hpp>

namespace mp = mproc;
using namespace std::chrono_literals;

void f(mp::Queue<int> q, int k) {
  for (int i = 0; i < 4; ++i) q.put((k * 4 + i) * (k * 4 + i));
}

// expect-output: ^\[0, 1, 4, 9, 16, 25, 36, 49, 64, 81, 100, 121\]
// expect-output: qsize after: 0
int main() {
  mp::Queue<int> q;
  std::vector<mp::Process> ps;
  for (int k = 0; k < 3; ++k) ps.emplace_back(f, q, k);
  for (auto& p : ps) p.start();
  std::vector<int> got;
  for (int i = 0; i < 6; ++i) got.push_back(q.get(30s));
  for (auto& p : ps) p.join();  // (no feeder thread: joining before the queue is drained is fine)
  q.shutdown();                 // no more puts: the loop below ends once the queue is drained
  for (int x : q) got.push_back(x);
  std::sort(got.begin(), got.end());
  std::printf("[");
  for (std::size_t i = 0; i < got.size(); ++i) std::printf(i ? ", %d" : "%d", got[i]);
  std::printf("]\n");
  std::printf("qsize after: %zu\n", q.qsize());
  return 0;
}
