// The article's Lock sample: several threads increment a shared counter,
// each increment under a lock, so none is lost.
//
//   Python                                   C++
//   counter = 0                              long counter = 0;
//   lock = threading.Lock()                  std::mutex lock;   (threading.Lock)
//   def increment():                         auto increment = [&] {
//       global counter                           for (int i = 0; i < 100000; ++i) {
//       for _ in range(100000):                      std::lock_guard hold(lock);
//           with lock:                               ++counter; } };
//               counter += 1
//   threads = [Thread(target=increment)      mp::ThreadPool pool(4);
//              for _ in range(4)]            for (...) pool.post(increment);
//   start all, join all                      pool.wait();
//   print(counter)                           std::printf("counter = %ld\n", counter);
//
// (mproc::Lock, the process-shared lock, works between threads too; a
// std::mutex is the cheaper choice when only threads share the counter.)
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include <mproc/thread_pool.hpp>

namespace mp = mproc;

// expect-output: ^counter = 400000.$
int main() {
  constexpr int kThreads = 4;
  constexpr int kIncrements = 100000;
  long counter = 0;
  std::mutex lock;
  auto increment = [&] {
    for (int i = 0; i < kIncrements; ++i) {
      std::lock_guard hold(lock);
      ++counter;
    }
  };

  mp::ThreadPool pool(kThreads);
  for (int t = 0; t < kThreads; ++t) pool.post(increment);
  pool.wait();

  if (counter != static_cast<long>(kThreads) * kIncrements) {
    std::fprintf(stderr, "lost increments: %ld\n", counter);
    return EXIT_FAILURE;
  }
  std::printf("counter = %ld\n", counter);
  return 0;
}
