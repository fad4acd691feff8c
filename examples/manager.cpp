// Python's Manager sample: child processes fill a shared dict and list that
// live in the manager's server process; the parent prints them.
//
//   Python                                     C++
//   def f(d, l):                               void f(mp::DictProxy<std::string, double> d,
//       d[1] = '1'; d['2'] = 2                        mp::ListProxy<int> l) {
//       l.reverse()                                d.set("1", 1.0); d.set("2", 2.0); ... }
//   with Manager() as manager:                 mp::Manager manager;
//       d = manager.dict()                     auto d = manager.dict<std::string, double>();
//       l = manager.list(range(10))            auto l = manager.list<int>(); l.extend({0, ..., 9});
//       p = Process(target=f, args=(d, l))     mp::Process p(f, d, l);
//       p.start(); p.join()                    p.start(); p.join();
//       print(d); print(l)                     ... print d.items(), l.items()
//
// Then the same objects from a Pool's tasks, and a Lock shared the same way.
#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

#include <mproc/managers.hpp>
#include <mproc/pool.hpp>
#include <mproc/process.hpp>

namespace mp = mproc;

void f(mp::DictProxy<std::string, double> d, mp::ListProxy<int> l) {
  d.set("1", 1.0);
  d.set("2", 2.0);
  d.set("0.25", 0.25);
  std::vector<int> items = l.items();
  l.clear();
  for (auto it = items.rbegin(); it != items.rend(); ++it) l.append(*it);
}

int count_word(mp::DictProxy<std::string, double> counts, mp::LockProxy lock, std::string word) {
  std::lock_guard guard(lock);  // get + set as one step, across processes
  counts.set(word, counts.get(word, 0.0) + 1.0);
  return 0;
}

int main() {
  mp::Manager manager;
  auto d = manager.dict<std::string, double>();
  auto l = manager.list<int>();
  l.extend({0, 1, 2, 3, 4, 5, 6, 7, 8, 9});

  mp::Process p(f, d, l);
  p.start();
  p.join();

  std::printf("{");
  for (const auto& [k, v] : d.items()) std::printf(" '%s': %g", k.c_str(), v);
  std::printf(" }\n[");
  for (int x : l.items()) std::printf(" %d", x);
  std::printf(" ]\n");

  auto counts = manager.dict<std::string, double>();
  auto lock = manager.Lock();
  std::vector<std::tuple<mp::DictProxy<std::string, double>, mp::LockProxy, std::string>> words;
  for (const char* w : {"map", "pool", "map", "queue", "map", "pool"}) words.emplace_back(counts, lock, w);
  mp::Pool pool(2);
  pool.starmap(count_word, words);
  for (const auto& [k, v] : counts.items()) std::printf("%s=%g ", k.c_str(), v);
  std::printf("\n");
}
// expect-output: \{ '0\.25': 0\.25 '1': 1 '2': 2 \}
// expect-output: \[ 9 8 7 6 5 4 3 2 1 0 \]
// expect-output: map=3 pool=2 queue=1
