// apply_async / map_async with callbacks (Python: callback=, error_callback=):
// results are collected as they complete, failures are logged, and join()
// returns only after every callback has run.
//
//   Python                                          C++
//   def ok(r): done.append(r)                       auto ok = [&](const int& r) { done.push_back(r); };
//   def err(e): print("failed:", e)                 auto err = [](std::exception_ptr e) { ... };
//   for x in [3, 1, -4, 2]:                         for (int x : {3, 1, -4, 2})
//       pool.apply_async(check, (x,),                   (void)pool.apply_async(mp::callbacks(ok, err), check, x);
//                        callback=ok, error_callback=err)
//   pool.close(); pool.join()                       pool.close(); pool.join();
#include <algorithm>
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include <mproc/pool.hpp>

namespace mp = mproc;

int check(int x) {
  if (x < 0) throw std::invalid_argument("negative input " + std::to_string(x));
  return x * 10;
}

// expect-output: failed: std::invalid_argument: negative input -4
// expect-output: done: 10 20 30
// expect-output: sum of squares: 14
int main() {
  std::vector<int> done;  // touched only by callbacks (one thread, one at a time), read after join()
  auto ok = [&done](const int& r) { done.push_back(r); };
  auto err = [](std::exception_ptr e) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      std::printf("failed: %s\n", x.what());
    }
  };
  mp::Pool pool(2);
  for (int x : {3, 1, -4, 2}) (void)pool.apply_async(mp::callbacks(ok, err), check, x);

  int sum = 0;
  auto squares = pool.map_async([](int x) { return x * x; }, std::vector<int>{1, 2, 3}, 0,
                                mp::callbacks([&sum](const std::vector<int>& v) {
                                  for (int s : v) sum += s;
                                }));
  (void)squares.get();  // the callback has run by now

  pool.close();
  pool.join();  // every callback has run
  std::sort(done.begin(), done.end());
  std::printf("done:");
  for (int r : done) std::printf(" %d", r);
  std::printf("\nsum of squares: %d\n", sum);
  return 0;
}
