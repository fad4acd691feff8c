// Tests of <mproc/system.hpp>: cpu_count and the system information helpers.
#include <thread>

#include <sched.h>

#include <mproc/system.hpp>

#include "catch.hpp"

namespace mp = mproc;

TEST_CASE("cpu_count is the size of the affinity mask") {
  cpu_set_t set;
  CPU_ZERO(&set);
  REQUIRE(sched_getaffinity(0, sizeof set, &set) == 0);
  CHECK(mp::cpu_count() == CPU_COUNT(&set));
  CHECK(mp::cpu_count() >= 1);
}

TEST_CASE("cpu_count honours a narrowed affinity mask") {
  // Affinity is per thread: narrow it on a helper thread only.
  int seen = 0;
  int first_cpu = -1;
  std::thread t([&] {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return;
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (CPU_ISSET(cpu, &set)) {
        first_cpu = cpu;
        break;
      }
    }
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(first_cpu, &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0) return;
    seen = mp::cpu_count();
  });
  t.join();
  REQUIRE(first_cpu >= 0);
  CHECK(seen == 1);
}
