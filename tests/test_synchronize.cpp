// The process-shared synchronization objects together (<mproc/synchronize.hpp>):
// handles across processes and dumps/loads, malformed handles, and every
// timed wait under a signal storm (#13). Each object's own tests are in
// test_lock, test_semaphore, test_event, test_condition and test_barrier.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <utility>

#include <signal.h>
#include <sys/time.h>
#include <time.h>

#include <mproc/synchronize.hpp>

#include "catch.hpp"
#include "shm_children.hpp"

namespace mp = mproc;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using mproc_test::MessageContains;

// ---------------------------------------------------------------- handles

TEST_CASE("Sync objects made after a child started reach it by handle") {
  shm_test::Pipe to_child, from_child;
  const pid_t child = shm_test::spawn([&] {
    const auto lh = shm_test::recv<mp::detail::ShmHandle>(to_child.r.get());
    const auto sh = shm_test::recv<mp::detail::ShmHandle>(to_child.r.get());
    const auto eh = shm_test::recv<mp::detail::ShmHandle>(to_child.r.get());
    const auto ch = shm_test::recv<mp::detail::ShmHandle>(to_child.r.get());
    const auto clh = shm_test::recv<mp::detail::ShmHandle>(to_child.r.get());
    const auto bh = shm_test::recv<mp::detail::ShmHandle>(to_child.r.get());
    mp::Lock lock = mp::Lock::from_handle(lh);
    mp::Semaphore sem = mp::Semaphore::from_handle(sh);
    mp::Event event = mp::Event::from_handle(eh);
    mp::Condition cond = mp::Condition::from_handle(ch, clh);
    mp::Barrier barrier = mp::Barrier::from_handle(bh);
    if (barrier.parties() != 2) return 3;
    if (!lock.acquire(10s)) return 4;  // the parent released it
    sem.release();
    if (!event.wait(10s)) return 5;
    lock.release();
    {
      std::lock_guard guard(cond);
      cond.notify();
    }
    return barrier.wait(10s) <= 1 ? 0 : 6;
  });
  mp::Lock lock;
  mp::Semaphore sem(0);
  mp::Event event;
  mp::Condition cond;
  mp::Barrier barrier(2);
  lock.acquire();
  for (const auto& h :
       {lock.handle(), sem.handle(), event.handle(), cond.handle(), cond.lock_handle(), barrier.handle()})
    shm_test::send(to_child.w.get(), h);
  cond.acquire();  // before the child can notify
  lock.release();
  REQUIRE(sem.acquire(10s));
  event.set();
  CHECK(cond.wait(10s));
  cond.release();
  CHECK(barrier.wait(10s) <= 1);
  CHECK(shm_test::join(child).exitcode == 0);
  CHECK(lock.try_acquire());  // the child released it
  lock.release();
}

TEST_CASE("Sync handles: same object in-process, and malformed handles are rejected") {
  mp::Lock lock;
  mp::Lock again = mp::Lock::from_handle(lock.handle());
  CHECK(again == lock);
  CHECK_FALSE(mp::Lock() == lock);
  again.acquire();
  CHECK_FALSE(lock.try_acquire());
  lock.release();

  REQUIRE_THROWS_MATCHES(mp::RLock::from_handle(lock.handle()), mp::ProcessError,
                         MessageContains("invalid handle for RLock: it describes a Lock"));
  REQUIRE_THROWS_MATCHES(mp::BoundedSemaphore::from_handle(mp::Semaphore(1).handle()), mp::ProcessError,
                         MessageContains("it describes a Semaphore"));
  auto h = lock.handle();
  h.offset += 64;  // a free or foreign block of the arena
  REQUIRE_THROWS_AS(mp::Lock::from_handle(h), mp::ProcessError);
  h = lock.handle();
  h.offset = h.segment_size;  // past the end
  REQUIRE_THROWS_MATCHES(mp::Lock::from_handle(h), mp::ProcessError, MessageContains("lies outside the"));
  h = lock.handle();
  h.offset += 8;
  REQUIRE_THROWS_MATCHES(mp::Lock::from_handle(h), mp::ProcessError, MessageContains("misaligned"));
  h = lock.handle();
  h.magic = 0;
  REQUIRE_THROWS_MATCHES(mp::Lock::from_handle(h), mp::ProcessError, MessageContains("bad magic"));

  // Condition's lock handle must describe a lock.
  mp::Condition cond;
  REQUIRE_THROWS_MATCHES(mp::Condition::from_handle(cond.handle(), cond.handle()), mp::ProcessError,
                         MessageContains("its lock handle describes a Condition"));
}

TEST_CASE("Sync handles from a creator that exited fail cleanly") {
  shm_test::Pipe pipe;
  const pid_t child = shm_test::spawn([&] {
    mp::Event event;  // a new arena chunk in the child's own memory
    mp::Lock lock;
    shm_test::send(pipe.w.get(), lock.handle());
    return 0;
  });
  const auto h = shm_test::recv<mp::detail::ShmHandle>(pipe.r.get());
  CHECK(shm_test::join(child).exitcode == 0);
  REQUIRE_THROWS_MATCHES(mp::Lock::from_handle(h), mp::ProcessError, MessageContains("no longer exists"));
}

TEST_CASE("Sync objects cross dumps/loads by handle into a child started before them") {
  shm_test::Pipe to_child;
  const pid_t child = shm_test::spawn([&] {
    auto [lock, rlock] = mp::loads<std::pair<mp::Lock, mp::RLock>>(shm_test::recv_frame(to_child.r.get()));
    auto sem = mp::loads<mp::Semaphore>(shm_test::recv_frame(to_child.r.get()));
    auto bsem = mp::loads<mp::BoundedSemaphore>(shm_test::recv_frame(to_child.r.get()));
    auto event = mp::loads<mp::Event>(shm_test::recv_frame(to_child.r.get()));
    auto cond = mp::loads<mp::Condition>(shm_test::recv_frame(to_child.r.get()));
    auto barrier = mp::loads<mp::Barrier>(shm_test::recv_frame(to_child.r.get()));
    if (!lock.acquire(10s) || !rlock.acquire(10s)) return 3;  // the parent releases them
    lock.release();
    rlock.release();
    sem.release();
    bsem.acquire();
    if (!event.wait(10s)) return 4;
    {
      std::lock_guard guard(cond);
      cond.notify();
    }
    return barrier.wait(10s) <= 1 ? 0 : 5;
  });
  mp::Lock lock;
  mp::RLock rlock;
  mp::Semaphore sem(0);
  mp::BoundedSemaphore bsem(1);
  mp::Event event;
  mp::Condition cond(lock);
  mp::Barrier barrier(2);
  lock.acquire();
  rlock.acquire();
  shm_test::send_frame(to_child.w.get(), mp::dumps(std::pair(lock, rlock)));
  shm_test::send_frame(to_child.w.get(), mp::dumps(sem));
  shm_test::send_frame(to_child.w.get(), mp::dumps(bsem));
  shm_test::send_frame(to_child.w.get(), mp::dumps(event));
  shm_test::send_frame(to_child.w.get(), mp::dumps(cond));
  shm_test::send_frame(to_child.w.get(), mp::dumps(barrier));
  lock.release();
  rlock.release();
  REQUIRE(sem.acquire(10s));
  const auto until = Clock::now() + 10s;
  while (bsem.get_value() != 0 && Clock::now() < until) std::this_thread::sleep_for(1ms);  // polling, not settling
  CHECK(bsem.get_value() == 0);
  cond.acquire();  // the condition's lock is `lock`: the child notifies once we wait
  event.set();
  CHECK(cond.wait(10s));
  cond.release();
  CHECK(barrier.wait(10s) <= 1);
  CHECK(shm_test::join(child).exitcode == 0);
  bsem.release();  // the child's permit, returned by the parent: allowed, within the bound
  CHECK(bsem.get_value() == 1);
}

TEST_CASE("Sync frames: a kind mismatch is rejected") {
  mp::Lock lock;
  auto frame = mp::dumps(lock);
  REQUIRE_THROWS_AS(mp::loads<mp::RLock>(frame), mp::ProcessError);  // frame fingerprint differs
  frame.resize(frame.size() - 1);
  REQUIRE_THROWS_AS(mp::loads<mp::Lock>(frame), mp::ProcessError);
}

// ---------------------------------------------------------- signal storms

namespace {

std::atomic<int> g_alarms{0};

// SIGALRM every millisecond, handled without SA_RESTART, as a host
// program's profiler or watchdog might: every blocking system call gets
// EINTR about once a millisecond.
struct AlarmStorm {
  struct sigaction old{};
  AlarmStorm() {
    struct sigaction sa{};
    sa.sa_handler = [](int) { g_alarms.fetch_add(1, std::memory_order_relaxed); };
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    ::sigaction(SIGALRM, &sa, &old);
    const itimerval every_ms{{0, 1000}, {0, 1000}};
    ::setitimer(ITIMER_REAL, &every_ms, nullptr);
  }
  ~AlarmStorm() {
    const itimerval off{};
    ::setitimer(ITIMER_REAL, &off, nullptr);
    ::sigaction(SIGALRM, &old, nullptr);
  }
  AlarmStorm(const AlarmStorm&) = delete;
  AlarmStorm& operator=(const AlarmStorm&) = delete;
};

double process_cpu_seconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

}  // namespace

TEST_CASE("Sync: every timed wait keeps its deadline under a 1 ms SIGALRM storm, without spinning (#13)",
          "[failure-model]") {
  mp::Lock lock;
  mp::RLock rlock;
  mp::Semaphore sem(0);
  mp::BoundedSemaphore bsem(1);
  mp::Event event;
  mp::Condition cond;
  mp::Barrier barrier(2);
  mp::Lock doomed;  // held by a process that dies
  lock.acquire();   // held by this (parent) thread throughout
  rlock.acquire();
  const auto result = mproc_test::run_in_child([&] {
    int failures = 0;
    const auto check = [&](bool ok, const char* what) {
      if (!ok) {
        std::fprintf(stderr, "storm: %s\n", what);
        ++failures;
      }
    };
    // Times `f`, a wait of `timeout` that must fail, and checks it ended
    // neither early nor more than 200 ms late.
    constexpr auto kTimeout = 120ms;
    const auto timed = [&](const char* what, auto f) {
      const auto start = Clock::now();
      const bool ok = f();
      const auto took = Clock::now() - start;
      check(!ok, what);
      if (took < kTimeout || took > kTimeout + 200ms) {
        std::fprintf(stderr, "storm: %s took %lld ms\n", what,
                     static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));
        ++failures;
      }
    };
    if (!bsem.try_acquire()) return 90;
    const double cpu0 = process_cpu_seconds();
    const auto wall0 = Clock::now();
    {
      AlarmStorm storm;
      timed("Lock.acquire", [&] { return lock.acquire(kTimeout); });
      timed("RLock.acquire", [&] { return rlock.acquire(kTimeout); });
      timed("Lock.try_lock_for", [&] { return lock.try_lock_for(kTimeout); });
      timed("Semaphore.acquire", [&] { return sem.acquire(kTimeout); });
      timed("BoundedSemaphore.acquire", [&] { return bsem.acquire(kTimeout); });
      timed("Event.wait", [&] { return event.wait(kTimeout); });
      timed("Condition.wait", [&] {
        std::lock_guard guard(cond);
        return cond.wait(kTimeout);
      });
      timed("Condition.wait_for", [&] {
        std::lock_guard guard(cond);
        return cond.wait_for([] { return false; }, kTimeout);
      });
      timed("Barrier.wait", [&] {
        try {
          barrier.wait(kTimeout);
        } catch (const mp::BrokenBarrierError&) {
          return false;
        }
        return true;
      });
      // A holder that dies is still taken over within 100 ms: the storm
      // must not keep the waiter from checking on it.
      shm_test::Pipe ready;
      const pid_t holder = shm_test::spawn([&] {
        doomed.acquire();
        shm_test::send(ready.w.get(), 'h');
        ::raise(SIGKILL);
        return 0;
      });
      shm_test::recv<char>(ready.r.get());
      const auto start = Clock::now();
      const bool got = doomed.acquire(5s);
      const auto took = Clock::now() - start;
      check(got && doomed.recovered(), "recovering a dead holder's Lock");
      check(took < 100ms, "recovering a dead holder's Lock within 100 ms");
      if (got) doomed.release();
      check(shm_test::join(holder).exitcode == -SIGKILL, "the holder was killed");
    }
    const double wall = std::chrono::duration<double>(Clock::now() - wall0).count();
    const double cpu = process_cpu_seconds() - cpu0;
    check(g_alarms.load() > 500, "the storm interrupted the waits");
    check(cpu < 0.5 * wall, "the waits slept rather than spun");
    std::fprintf(stderr, "storm: %d alarms, %.0f ms CPU over %.0f ms\n", g_alarms.load(), cpu * 1e3, wall * 1e3);
    return failures;
  });
  lock.release();
  rlock.release();
  CHECK(result.exitcode == 0);
}
