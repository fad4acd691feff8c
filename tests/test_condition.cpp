// Process-shared Condition (<mproc/condition.hpp>): the lock rule, timed
// wait, notify between processes, and waiters that died (#12).
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include <signal.h>

#include <mproc/condition.hpp>
#include <mproc/lock.hpp>
#include <mproc/sharedctypes.hpp>

#include "catch.hpp"
#include "shm_children.hpp"
#include "sync_helpers.hpp"

namespace mp = mproc;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using mproc_test::MessageContains;
using sync_test::eventually;
using sync_test::kill_dead;
using sync_test::kSlack;
using sync_test::time_of;

// -------------------------------------------------------------- Condition

TEST_CASE("Condition: wait and notify need the lock") {
  mp::Condition cond;
  REQUIRE_THROWS_MATCHES(cond.wait(10ms), mp::ProcessError,
                         MessageContains("Condition.wait(): the condition's lock is not held by this thread"));
  REQUIRE_THROWS_MATCHES(cond.notify(), mp::ProcessError, MessageContains("Condition.notify()"));
  REQUIRE_THROWS_AS(cond.notify_all(), mp::ProcessError);
  std::lock_guard guard(cond);
  cond.notify();  // nobody waits: fine
  REQUIRE_THROWS_MATCHES(cond.notify(-1), mp::ProcessError, MessageContains("n must be >= 0"));
}

TEST_CASE("Condition: timed wait returns false after about the timeout, lock re-held") {
  for (int kind = 0; kind < 2; ++kind) {
    mp::Lock plain;
    mp::Condition cond = kind == 0 ? mp::Condition(plain) : mp::Condition();
    cond.acquire();
    if (kind == 1) cond.acquire();  // RLock at depth 2: restored after the wait
    bool result = true;
    const auto took = time_of([&] { result = cond.wait(100ms); });
    CHECK_FALSE(result);
    CHECK(took >= 100ms);
    CHECK(took < 100ms + kSlack);
    CHECK_FALSE(cond.wait_for([] { return false; }, 30ms));
    CHECK(cond.wait_for([] { return true; }, 0ms));
    if (kind == 1) cond.release();
    cond.release();
    REQUIRE_THROWS_AS(cond.release(), mp::ProcessError);
    if (kind == 0) CHECK(plain.try_acquire());  // the condition used the given lock
  }
}

TEST_CASE("Condition: notify(1) wakes exactly one process, notify_all the rest") {
  mp::Condition cond;
  mp::RawValue<int> waiting(0), woken(0);
  constexpr int kProcs = 3;
  std::vector<pid_t> pids;
  for (int p = 0; p < kProcs; ++p)
    pids.push_back(shm_test::spawn([&] {
      std::lock_guard guard(cond);
      waiting.set(waiting.get() + 1);
      if (!cond.wait(20s)) return 3;
      woken.set(woken.get() + 1);
      return 0;
    }));
  // A child counted in `waiting` is inside wait(): it set the count and
  // released the lock in one critical section.
  const auto poll_until = [&](auto pred) {
    const auto deadline = Clock::now() + 20s;
    for (;;) {
      {
        std::lock_guard guard(cond);
        if (pred() || Clock::now() > deadline) return pred();
      }
      std::this_thread::sleep_for(1ms);  // polling shared state, not settling
    }
  };
  REQUIRE(poll_until([&] { return waiting.get() == kProcs; }));
  {
    std::lock_guard guard(cond);
    cond.notify(1);
  }
  REQUIRE(poll_until([&] { return woken.get() >= 1; }));
  std::this_thread::sleep_for(100ms);  // a second, wrong wake-up would show up here
  {
    std::lock_guard guard(cond);
    CHECK(woken.get() == 1);
    cond.notify_all();
  }
  for (pid_t pid : pids) CHECK(shm_test::join(pid).exitcode == 0);
  CHECK(woken.get() == kProcs);
}

TEST_CASE("Condition: producer/consumer between processes over a Value") {
  mp::Lock lock;
  mp::Condition cond(lock);
  mp::RawArray<int> box(2);  // [0]: full flag, [1]: item
  constexpr int kItems = 500;
  const pid_t consumer = shm_test::spawn([&] {
    long sum = 0;
    for (int i = 0; i < kItems; ++i) {
      std::lock_guard guard(cond);
      if (!cond.wait_for([&] { return box[0] == 1; }, 20s)) return 3;
      sum += box[1];
      box[0] = 0;
      cond.notify();
    }
    return sum == long{kItems} * (kItems + 1) / 2 ? 0 : 4;
  });
  for (int i = 1; i <= kItems; ++i) {
    std::lock_guard guard(cond);
    REQUIRE(cond.wait_for([&] { return box[0] == 0; }, 20s));
    box[1] = i;
    box[0] = 1;
    cond.notify();
  }
  CHECK(shm_test::join(consumer).exitcode == 0);
}

namespace {

// A child that waits on `cond` (in probe mode if `probe`: its record is not
// in the kernel's robust list) and exits 0 if notified, 4 if not. Returns
// once the child is inside wait(): it told us so holding the lock, and the
// lock became free only when wait() released it.
pid_t spawn_cond_waiter(mp::Condition& cond, bool probe, std::chrono::milliseconds timeout = 30s) {
  shm_test::Pipe ready;
  const pid_t pid = shm_test::spawn([&] {
    mp::detail::SyncTesting::no_robust_list = probe;
    std::lock_guard guard(cond);
    shm_test::send(ready.w.get(), 'w');
    return cond.wait(timeout) ? 0 : 4;
  });
  shm_test::recv<char>(ready.r.get());
  std::lock_guard guard(cond);
  return pid;
}

}  // namespace

TEST_CASE("Condition: a notify() only a dead waiter could take is not kept for a later waiter (#12)",
          "[condition][failure-model]") {
  for (const bool probe : {false, true}) {
    for (const bool reap : {false, true}) {
      INFO("probe mode: " << probe << ", dead waiter reaped: " << reap);
      mp::Condition cond;
      const pid_t dead = spawn_cond_waiter(cond, probe);
      kill_dead(dead, reap);
      std::lock_guard guard(cond);
      cond.notify();  // nobody alive waits: no effect
      bool result = true;
      const auto took = time_of([&] { result = cond.wait(150ms); });
      CHECK_FALSE(result);  // not woken by the dead waiter's notification
      CHECK(took >= 150ms);
      if (!reap) CHECK(shm_test::join(dead).exitcode == -SIGKILL);
    }
  }
}

TEST_CASE("Condition: notify(n) wakes n live waiters when older dead ones are registered (#12)",
          "[condition][failure-model]") {
  for (const bool probe : {false, true}) {
    INFO("probe mode: " << probe);
    mp::Condition cond;
    const pid_t dead1 = spawn_cond_waiter(cond, probe);
    const pid_t dead2 = spawn_cond_waiter(cond, probe);
    kill_dead(dead1, false);
    kill_dead(dead2, true);
    const pid_t live1 = spawn_cond_waiter(cond, probe);
    const pid_t live2 = spawn_cond_waiter(cond, probe);
    const pid_t late = spawn_cond_waiter(cond, probe, 300ms);  // must time out: nothing is left for it
    {
      std::lock_guard guard(cond);
      cond.notify(2);
    }
    CHECK(shm_test::join(live1).exitcode == 0);
    CHECK(shm_test::join(live2).exitcode == 0);
    CHECK(shm_test::join(late).exitcode == 4);
    CHECK(shm_test::join(dead1).exitcode == -SIGKILL);
    // Dead waiters' records are forgotten: a full table of live waiters fits.
    const pid_t again = spawn_cond_waiter(cond, probe);
    {
      std::lock_guard guard(cond);
      cond.notify_all();
    }
    CHECK(shm_test::join(again).exitcode == 0);
  }
}

TEST_CASE("Condition: more waiters than it has records get ProcessError, not a hang") {
  mp::Condition cond;
  constexpr int kMax = mp::detail::ConditionState::kMaxWaiters;
  std::atomic<int> registered{0}, notified{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kMax; ++t)
    threads.emplace_back([&] {
      std::lock_guard guard(cond);
      ++registered;
      if (cond.wait(30s)) ++notified;
    });
  REQUIRE(eventually([&] {
    std::lock_guard guard(cond);  // free only while every registered thread is inside wait()
    return registered == kMax;
  }));
  {
    std::lock_guard guard(cond);
    REQUIRE_THROWS_MATCHES(cond.wait(10ms), mp::ProcessError,
                           MessageContains("too many waiting threads (at most 192)"));
    cond.notify_all();
  }
  for (auto& t : threads) t.join();
  CHECK(notified == kMax);
}
