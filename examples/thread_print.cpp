// The article's threading sample: a thread printing the numbers 1 to 5.
//
//   Python                                        C++
//   def print_numbers():                          void print_numbers() {
//       for i in range(1, 6):                         for (int i = 1; i <= 5; ++i)
//           print(i)                                      std::printf("%d\n", i); }
//   t = threading.Thread(target=print_numbers)    std::thread t(print_numbers);
//   t.start()                                     (std::thread starts at once)
//   t.join()                                      t.join();
//
// The same on a mproc::ThreadPool: pool.apply(print_numbers) runs it on a
// worker thread and waits for it (any exception it throws comes back here).
#include <cstdio>
#include <thread>

#include <mproc/thread_pool.hpp>

namespace mp = mproc;

void print_numbers() {
  for (int i = 1; i <= 5; ++i) std::printf("%d\n", i);
}

// Prints 1..5, one per line, twice (the thread, then the pool); "." matches
// the newline in CTest's regular expressions.
// expect-output: ^1.2.3.4.5.1.2.3.4.5.$
int main() {
  std::thread t(print_numbers);
  t.join();

  mp::ThreadPool pool(1);
  pool.apply(print_numbers);
  std::fflush(stdout);
  return 0;
}
