// Process-shared Semaphore and BoundedSemaphore (<mproc/semaphore.hpp>):
// value, errors, timeouts, and use between processes.
#include <atomic>
#include <chrono>
#include <mutex>
#include <vector>

#include <mproc/semaphore.hpp>
#include <mproc/sharedctypes.hpp>

#include "catch.hpp"
#include "shm_children.hpp"
#include "sync_helpers.hpp"

namespace mp = mproc;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using mproc_test::MessageContains;
using sync_test::kSlack;
using sync_test::time_of;

// -------------------------------------------------------------- Semaphore

TEST_CASE("Semaphore: value, acquire, release, errors") {
  mp::Semaphore sem(2);
  CHECK(sem.get_value() == 2);
  CHECK(sem.acquire());
  CHECK(sem.try_acquire());
  CHECK(sem.get_value() == 0);
  CHECK_FALSE(sem.try_acquire());
  bool got = true;
  const auto took = time_of([&] { got = sem.acquire(120ms); });
  CHECK_FALSE(got);
  CHECK(took >= 120ms);
  CHECK(took < 120ms + kSlack);
  sem.release(2);
  CHECK(sem.get_value() == 2);
  sem.release();
  CHECK(sem.get_value() == 3);  // a plain Semaphore has no bound
  REQUIRE_THROWS_MATCHES(sem.release(0), mp::ValueError, MessageContains("n must be one or more"));
  REQUIRE_THROWS_MATCHES(mp::Semaphore(-1), mp::ValueError, MessageContains("initial value must be >= 0"));
  mp::Semaphore big(mp::Semaphore::kMaxValue);
  REQUIRE_THROWS_MATCHES(big.release(), mp::ProcessError, MessageContains("SEM_VALUE_MAX"));
  {
    std::lock_guard guard(sem);
    CHECK(sem.get_value() == 2);
  }
  CHECK(sem.get_value() == 3);
}

TEST_CASE("BoundedSemaphore: release past the initial value throws") {
  mp::BoundedSemaphore sem(2);
  REQUIRE_THROWS_MATCHES(sem.release(), mp::ProcessError, MessageContains("released too many times"));
  CHECK(sem.get_value() == 2);
  sem.acquire();
  REQUIRE_THROWS_MATCHES(sem.release(2), mp::ProcessError, MessageContains("BoundedSemaphore.release()"));
  sem.release();
  CHECK(sem.get_value() == 2);
  mp::Semaphore& base = sem;  // a BoundedSemaphore is a Semaphore
  REQUIRE_THROWS_AS(base.release(), mp::ProcessError);
}

TEST_CASE("Semaphore: bounds concurrency between processes") {
  constexpr int kPermits = 2, kProcs = 6;
  mp::Semaphore sem(kPermits);
  mp::RawArray<int> holders(2);  // [0]: current holders, [1]: most seen at once
  std::vector<pid_t> pids;
  for (int p = 0; p < kProcs; ++p)
    pids.push_back(shm_test::spawn([&] {
      for (int i = 0; i < 300; ++i) {
        std::lock_guard guard(sem);
        const int now = std::atomic_ref<int>(holders[0]).fetch_add(1) + 1;
        std::atomic_ref<int> most(holders[1]);
        int seen = most.load();
        while (now > seen && !most.compare_exchange_weak(seen, now)) {
        }
        for (int spin = 0; spin < 200; ++spin) std::atomic_signal_fence(std::memory_order_seq_cst);
        std::atomic_ref<int>(holders[0]).fetch_sub(1);
      }
      return 0;
    }));
  for (pid_t pid : pids) CHECK(shm_test::join(pid).exitcode == 0);
  CHECK(holders[0] == 0);
  CHECK(holders[1] >= 1);
  CHECK(holders[1] <= kPermits);
  CHECK(sem.get_value() == kPermits);
}

TEST_CASE("Semaphore: a release wakes a blocked process") {
  mp::Semaphore sem(0);
  shm_test::Pipe ready;
  const pid_t pid = shm_test::spawn([&] {
    shm_test::send(ready.w.get(), 'r');
    return sem.acquire(10s) ? 0 : 3;
  });
  shm_test::recv<char>(ready.r.get());
  sem.release();
  CHECK(shm_test::join(pid).exitcode == 0);
  CHECK(sem.get_value() == 0);
}
