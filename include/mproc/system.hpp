// Facts about the machine the program runs on.
// SPDX-License-Identifier: MIT
#pragma once

#include <thread>

#if defined(__linux__)
#include <sched.h>
#endif

namespace mproc {

// Number of CPUs this process may run on: the size of its CPU affinity mask
// (taskset, cgroup cpusets), like Python's os.process_cpu_count(); falls back
// to std::thread::hardware_concurrency(). Always at least 1.
// Non-blocking, thread-safe, never throws.
inline int cpu_count() noexcept {
#if defined(__linux__)
  // Grow the mask until the kernel accepts it, so machines with more than
  // CPU_SETSIZE CPUs are counted too.
  for (int ncpu = 1024; ncpu <= (1 << 20); ncpu *= 2) {
    cpu_set_t* set = CPU_ALLOC(static_cast<unsigned>(ncpu));
    if (set == nullptr) break;
    const std::size_t bytes = CPU_ALLOC_SIZE(static_cast<unsigned>(ncpu));
    CPU_ZERO_S(bytes, set);
    const int rc = sched_getaffinity(0, bytes, set);
    const int count = rc == 0 ? CPU_COUNT_S(bytes, set) : 0;
    CPU_FREE(set);
    if (rc == 0) return count > 0 ? count : 1;
  }
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : 1;
}

}  // namespace mproc
