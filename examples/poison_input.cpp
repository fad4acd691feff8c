// examples/poison_input.cpp — errors that help: which input killed a worker,
// and exceptions that keep their type across the process boundary.
//
// In Python, a worker killed by a bad input (a segfault in a C extension, the
// OOM killer) leaves Pool.map hanging. Here the call fails with WorkerCrashed,
// which names the input (its position), the signal, whether the kernel's OOM
// killer did it and the worker's peak memory; the pool replaces the worker.
// A task's exception comes back as its own type: standard ones always, your
// own once registered with mp::register_exception.
// SPDX-License-Identifier: MIT
//
// expect-output: input 3 killed its worker \(signal 9\)
// expect-output: the pool serves on: 4 results
// expect-output: std::invalid_argument: negative input -1
// expect-output: QuotaExceeded: 7 items over the quota

#include <csignal>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include <mproc/pool.hpp>
#include <mproc/remote_exception.hpp>

namespace mp = mproc;

// A user's exception type, registered so it comes back as itself.
class QuotaExceeded : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
inline const bool quota_registered = mp::register_exception<QuotaExceeded>();

int process_item(int x) {
  if (x == 13) ::raise(SIGKILL);  // stands for a crash in native code, or the OOM killer
  if (x < 0) throw std::invalid_argument("negative input " + std::to_string(x));
  if (x > 100) throw QuotaExceeded(std::to_string(x - 100) + " items over the quota");
  return 2 * x;
}

// what() without its " (raised in worker process N)" suffix.
std::string without_origin(const char* what) {
  const std::string w = what;
  return w.substr(0, w.find(" (raised in"));
}

int main() {
  mp::Pool pool(2);
  try {
    (void)pool.map(process_item, std::vector<int>{1, 2, 3, 13, 5}, 1);
  } catch (const mp::WorkerCrashed& e) {
    std::printf("input %zu killed its worker (signal %d)\n", *e.first_input(), e.signal());
    std::printf("  what(): %s\n", e.what());
  }
  std::printf("the pool serves on: %zu results\n", pool.map(process_item, std::vector<int>{1, 2, 3, 4}).size());

  try {
    (void)pool.apply(process_item, -1);
  } catch (const std::invalid_argument& e) {  // caught as the standard type
    std::printf("%s\n", without_origin(e.what()).c_str());
  }
  try {
    (void)pool.apply(process_item, 107);
  } catch (const QuotaExceeded& e) {  // caught as the user's type
    std::printf("%s\n", without_origin(e.what()).c_str());
  }
  return 0;
}
