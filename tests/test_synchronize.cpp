// Process-shared Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition
// and Barrier: methods, errors, timeouts, use between processes and
// between threads, and recovery from a holder that died (R5).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mproc/sharedctypes.hpp>
#include <mproc/synchronize.hpp>

#include "catch.hpp"
#include "shm_children.hpp"

namespace mp = mproc;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using mproc_test::MessageContains;

namespace {

// Upper slack for "returns after about the timeout" on a noisy shared machine.
constexpr auto kSlack = 400ms;

template <class F>
Clock::duration time_of(F&& f) {
  const auto start = Clock::now();
  f();
  return Clock::now() - start;
}

// A child that holds `lock` until told to let go; the parent talks to it
// through pipes. The child's exit code is 0 if all went as expected.
template <class L>
struct Holder {
  shm_test::Pipe ready, go;
  pid_t pid;
  explicit Holder(L& lock) {
    pid = shm_test::spawn([&] {
      lock.acquire();
      shm_test::send(ready.w.get(), 'h');
      shm_test::recv<char>(go.r.get());
      lock.release();
      return 0;
    });
    shm_test::recv<char>(ready.r.get());
  }
  int finish() {
    shm_test::send(go.w.get(), 'g');
    return shm_test::join(pid).exitcode;
  }
};

// Polls `pred` (shared state, not settling) until true or 10 s passed.
template <class Pred>
bool eventually(Pred pred) {
  const auto deadline = Clock::now() + 10s;
  while (!pred()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// SIGKILLs `pid` and returns once it is dead, leaving it a zombie (unreaped)
// unless `reap`. Its exit status, when reaped, is returned (-1 otherwise).
int kill_dead(pid_t pid, bool reap) {
  ::kill(pid, SIGKILL);
  if (reap) return shm_test::join(pid, 10s).exitcode;
  const auto deadline = Clock::now() + 10s;
  for (;;) {
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid)
      return -1;
    if (Clock::now() > deadline) throw std::runtime_error("child did not die");
    std::this_thread::sleep_for(1ms);  // polling a child's death, not settling
  }
}

// The shared state of `lock`, to plant an owner in it.
mp::detail::MutexState& mutex_state_of(const mp::Lock& lock, std::shared_ptr<mp::detail::ShmBlock>& keep) {
  keep = mp::detail::open_object(lock.handle(), mp::detail::ShmKind::lock, mp::detail::LockCore::kSize).first;
  return *mp::detail::existing_state<mp::detail::MutexState>(*keep, mp::detail::kObjectStateOffset);
}

// The identity of a thread that has exited, stamped by `method`.
std::uint64_t dead_thread_identity(std::uint32_t method) {
  mp::detail::SyncTesting::identity_method = static_cast<int>(method);
  std::uint64_t id = 0;
  std::thread([&] { id = mp::detail::current_identity(); }).join();
  mp::detail::SyncTesting::identity_method = -1;
  return id;
}

// Whether this kernel gives pidfds unique inode numbers (pidfs, Linux >= 6.9).
bool have_pidfs() { return mp::detail::identity_stamp(dead_thread_identity(mp::detail::kStampPidfs)) >> 30 == 1; }

}  // namespace

// ------------------------------------------------------------------- Lock

TEST_CASE("Lock: acquire, release, try_acquire, and Lockable") {
  mp::Lock lock;
  CHECK(lock.acquire());
  CHECK_FALSE(lock.recovered());
  bool other_got = true;
  std::thread([&] { other_got = lock.try_acquire(); }).join();
  CHECK_FALSE(other_got);
  lock.release();
  CHECK(lock.try_acquire());
  lock.release();
  {
    std::lock_guard guard(lock);
    CHECK_FALSE(lock.try_lock());
  }
  {
    std::unique_lock guard(lock, 10ms);
    CHECK(guard.owns_lock());
  }
  mp::Lock other;
  {
    std::scoped_lock both(lock, other);
    CHECK_FALSE(other.try_lock());
  }
  CHECK(lock.try_lock_until(std::chrono::system_clock::now() + 10ms));
  lock.unlock();
}

TEST_CASE("Lock: release of an unheld lock throws, any thread may release a held one") {
  mp::Lock lock;
  REQUIRE_THROWS_MATCHES(lock.release(), mp::ProcessError, MessageContains("release of an unheld Lock"));
  lock.acquire();
  std::thread([&] { lock.release(); }).join();  // Python allows this for Lock
  CHECK(lock.try_acquire());
  lock.release();
  REQUIRE_THROWS_MATCHES(lock.release(), mp::ProcessError, MessageContains("Lock.release()"));
}

TEST_CASE("Lock: timed acquire fails after about the timeout, not before") {
  mp::Lock lock;
  Holder holder(lock);
  bool got = true;
  const auto took = time_of([&] { got = lock.acquire(150ms); });
  CHECK_FALSE(got);
  CHECK(took >= 150ms);
  CHECK(took < 150ms + kSlack);
  CHECK_FALSE(lock.try_acquire());
  CHECK_FALSE(lock.try_lock_for(0ms));
  const auto took2 = time_of([&] { got = lock.try_lock_until(std::chrono::system_clock::now() + 60ms); });
  CHECK_FALSE(got);
  CHECK(took2 >= 55ms);  // system_clock -> steady conversion may lose a little
  CHECK(holder.finish() == 0);
  CHECK(lock.acquire(5s));
  lock.release();
}

TEST_CASE("Lock: counters incremented by several processes under the lock are exact") {
  mp::Lock lock;
  mp::RawValue<long> counter(0);
  constexpr int kProcs = 4, kIters = 20000;
  std::vector<pid_t> pids;
  for (int p = 0; p < kProcs; ++p)
    pids.push_back(shm_test::spawn([&] {
      for (int i = 0; i < kIters; ++i) {
        std::lock_guard guard(lock);
        const long v = counter.get();  // non-atomic read-modify-write
        counter.set(v + 1);
      }
      return 0;
    }));
  for (int i = 0; i < kIters; ++i) {
    std::lock_guard guard(lock);
    counter.set(counter.get() + 1);
  }
  for (pid_t pid : pids) CHECK(shm_test::join(pid).exitcode == 0);
  CHECK(counter.get() == long{kProcs + 1} * kIters);
}

TEST_CASE("Lock: counters incremented by several threads under the lock are exact") {
  mp::Lock lock;
  long counter = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 20000; ++i) {
        std::lock_guard guard(lock);
        ++counter;
      }
    });
  for (auto& t : threads) t.join();
  CHECK(counter == 80000);
}

TEST_CASE("Lock: a process killed while holding it is recovered within 100 ms (R5)") {
  mp::Lock lock;
  shm_test::Pipe ready;
  const pid_t pid = shm_test::spawn([&] {
    lock.acquire();
    shm_test::send(ready.w.get(), 'h');
    ::raise(SIGKILL);
    return 0;
  });
  shm_test::recv<char>(ready.r.get());
  // The parent blocks while the holder dies; it stays a zombie (unreaped)
  // meanwhile, which must count as dead.
  bool got = false;
  const auto took = time_of([&] { got = lock.acquire(5s); });
  CHECK(got);
  CHECK(took < 100ms);
  CHECK(lock.recovered());
  lock.release();
  CHECK(shm_test::join(pid).exitcode == -SIGKILL);
  CHECK(lock.try_acquire());
  CHECK_FALSE(lock.recovered());  // a normal acquisition again
  lock.release();
}

TEST_CASE("Lock: a reaped dead holder is recovered by a timed and a plain acquire") {
  mp::Lock lock;
  CHECK(mproc_test::run_in_child([&] {
          lock.acquire();
          return 0;  // exits holding it
        }).exitcode == 0);
  CHECK_FALSE(lock.try_acquire());  // non-blocking: no liveness check
  CHECK(lock.acquire(1s));
  CHECK(lock.recovered());
  lock.release();

  mp::RLock rlock;
  CHECK(mproc_test::run_in_child([&] {
          rlock.acquire();
          rlock.acquire();
          return 0;
        }).exitcode == 0);
  rlock.acquire();  // takes over at depth 1, whatever the dead owner's depth
  CHECK(rlock.recovered());
  rlock.release();
  REQUIRE_THROWS_AS(rlock.release(), mp::ProcessError);
}

TEST_CASE("Lock: a thread that exits holding it is recovered") {
  mp::Lock lock;
  std::thread([&] { lock.acquire(); }).join();
  CHECK(lock.acquire(2s));
  CHECK(lock.recovered());
  lock.release();
}

// ------------------------------------------------------------------ RLock

TEST_CASE("RLock: recursion, ownership and errors") {
  mp::RLock rlock;
  REQUIRE_THROWS_MATCHES(rlock.release(), mp::ProcessError, MessageContains("release of an unheld RLock"));
  rlock.acquire();
  CHECK(rlock.acquire(10ms));
  CHECK(rlock.try_acquire());
  bool other_got = true;
  std::string error;
  std::thread([&] {
    other_got = rlock.acquire(20ms);
    try {
      rlock.release();
    } catch (const mp::ProcessError& e) {
      error = e.what();
    }
  }).join();
  CHECK_FALSE(other_got);
  CHECK(error.find("held by another thread") != std::string::npos);
  rlock.release();
  rlock.release();
  std::thread([&] { other_got = rlock.try_acquire(); }).join();
  CHECK_FALSE(other_got);  // still held once
  rlock.release();
  std::thread([&] {
    other_got = rlock.try_acquire();
    if (other_got) rlock.release();
  }).join();
  CHECK(other_got);
}

TEST_CASE("RLock: exclusive between processes, recursive within one") {
  mp::RLock rlock;
  mp::RawValue<int> inside(0), overlap(0);
  std::vector<pid_t> pids;
  for (int p = 0; p < 3; ++p)
    pids.push_back(shm_test::spawn([&] {
      for (int i = 0; i < 2000; ++i) {
        std::lock_guard outer(rlock);
        std::lock_guard inner(rlock);
        if (inside.get() != 0) overlap.set(1);
        inside.set(1);
        inside.set(0);
      }
      return 0;
    }));
  for (pid_t pid : pids) CHECK(shm_test::join(pid).exitcode == 0);
  CHECK(overlap.get() == 0);
  CHECK(rlock.try_acquire());
  rlock.release();
}

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
  REQUIRE_THROWS_MATCHES(sem.release(0), mp::ProcessError, MessageContains("n must be one or more"));
  REQUIRE_THROWS_MATCHES(mp::Semaphore(-1), mp::ProcessError, MessageContains("initial value must be >= 0"));
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

// ------------------------------------------------------------------ Event

TEST_CASE("Event: set, clear, is_set, timed wait") {
  mp::Event event;
  CHECK_FALSE(event.is_set());
  bool result = true;
  const auto took = time_of([&] { result = event.wait(100ms); });
  CHECK_FALSE(result);
  CHECK(took >= 100ms);
  CHECK(took < 100ms + kSlack);
  event.set();
  CHECK(event.is_set());
  CHECK(event.wait());
  CHECK(event.wait(0ms));
  event.set();  // idempotent
  event.clear();
  CHECK_FALSE(event.is_set());
  CHECK_FALSE(event.wait(0ms));
}

TEST_CASE("Event: set wakes every waiting process") {
  mp::Event event;
  mp::Semaphore started(0);
  std::vector<pid_t> pids;
  for (int p = 0; p < 4; ++p)
    pids.push_back(shm_test::spawn([&] {
      started.release();
      return event.wait(10s) ? 0 : 3;
    }));
  for (int p = 0; p < 4; ++p) REQUIRE(started.acquire(10s));
  event.set();
  for (pid_t pid : pids) CHECK(shm_test::join(pid).exitcode == 0);
}

TEST_CASE("Event: a waiter sees a set() even if clear() follows at once") {
  mp::Event event;
  mp::Semaphore started(0);
  bool result = false;
  std::thread waiter([&] {
    started.release();
    result = event.wait(10s);
  });
  REQUIRE(started.acquire(10s));
  std::this_thread::sleep_for(20ms);  // let the waiter reach its sleep (the test passes either way)
  event.set();
  event.clear();
  waiter.join();
  CHECK(result);
  CHECK_FALSE(event.is_set());
}

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

// ---------------------------------------------------------------- Barrier

TEST_CASE("Barrier: distinct indices across processes, several rounds") {
  constexpr int kParties = 4, kRounds = 5;
  mp::Barrier barrier(kParties);
  CHECK(barrier.parties() == kParties);
  CHECK(barrier.n_waiting() == 0);
  mp::RawArray<int> seen(kParties * kRounds);  // bit per index, per round
  std::vector<pid_t> pids;
  for (int p = 0; p < kParties - 1; ++p)
    pids.push_back(shm_test::spawn([&] {
      for (int round = 0; round < kRounds; ++round) {
        const std::size_t index = barrier.wait(20s);
        std::atomic_ref<int>(seen[static_cast<std::size_t>(round * kParties) + index]).fetch_add(1);
      }
      return 0;
    }));
  for (int round = 0; round < kRounds; ++round) {
    const std::size_t index = barrier.wait(20s);
    std::atomic_ref<int>(seen[static_cast<std::size_t>(round * kParties) + index]).fetch_add(1);
  }
  for (pid_t pid : pids) CHECK(shm_test::join(pid).exitcode == 0);
  for (std::size_t i = 0; i < std::size_t{kParties * kRounds}; ++i) CHECK(seen[i] == 1);
  CHECK_FALSE(barrier.broken());
}

TEST_CASE("Barrier: a timeout breaks it for everyone until reset") {
  mp::Barrier barrier(3);
  shm_test::Pipe ready;
  const pid_t waiter = shm_test::spawn([&] {
    shm_test::send(ready.w.get(), 'w');
    try {
      barrier.wait(20s);
    } catch (const mp::BrokenBarrierError&) {
      return 0;  // broken by the parent's timeout
    }
    return 3;
  });
  shm_test::recv<char>(ready.r.get());
  const auto until = Clock::now() + 10s;
  while (barrier.n_waiting() != 1 && Clock::now() < until) std::this_thread::sleep_for(1ms);
  CHECK(barrier.n_waiting() == 1);
  const auto took = time_of(
      [&] { REQUIRE_THROWS_MATCHES(barrier.wait(80ms), mp::BrokenBarrierError, MessageContains("timed out")); });
  CHECK(took >= 80ms);
  CHECK(took < 80ms + kSlack);
  CHECK(shm_test::join(waiter).exitcode == 0);
  CHECK(barrier.broken());
  CHECK(barrier.n_waiting() == 0);
  REQUIRE_THROWS_MATCHES(barrier.wait(1s), mp::BrokenBarrierError,
                         MessageContains("the barrier is broken (a wait timed out)"));
  barrier.reset();
  CHECK_FALSE(barrier.broken());
  mp::Barrier one(1);
  CHECK(one.wait() == 0);
}

TEST_CASE("Barrier: abort breaks waiters, default timeout, bad parties") {
  mp::Barrier barrier(2);
  const pid_t waiter = shm_test::spawn([&] {
    try {
      barrier.wait(20s);
    } catch (const mp::BrokenBarrierError&) {
      return 0;
    }
    return 3;
  });
  const auto until = Clock::now() + 10s;
  while (barrier.n_waiting() != 1 && Clock::now() < until) std::this_thread::sleep_for(1ms);
  barrier.abort();
  CHECK(shm_test::join(waiter).exitcode == 0);
  CHECK(barrier.broken());
  REQUIRE_THROWS_MATCHES(barrier.wait(1s), mp::BrokenBarrierError, MessageContains("(abort() was called)"));
  barrier.reset();

  mp::Barrier timed(2, 50ms);
  const auto took = time_of([&] { REQUIRE_THROWS_AS(timed.wait(), mp::BrokenBarrierError); });
  CHECK(took >= 50ms);
  CHECK(timed.broken());
  REQUIRE_THROWS_MATCHES(mp::Barrier(0), mp::ProcessError, MessageContains("parties must be between 1"));
}

TEST_CASE("Barrier: between threads") {
  mp::Barrier barrier(3);
  std::atomic<int> mask{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) threads.emplace_back([&] { mask |= 1 << barrier.wait(10s); });
  for (auto& t : threads) t.join();
  CHECK(mask == 7);
}

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

// ------------------------------------------------- dead parties (#10-#13)

TEST_CASE("Lock: an owner whose tid now belongs to a live process is judged dead by its stamp (#13)",
          "[lock][failure-model]") {
  // Deterministic tid reuse: the lock's word names the tid of a live,
  // unrelated process with the stamp of a thread that has died, exactly
  // what a dead owner's word looks like once the kernel gave its tid to a
  // newcomer. The reverse (that tid with its own stamp) is a live owner.
  std::vector<std::uint32_t> methods{mp::detail::kStampProc};
  if (have_pidfs()) methods.push_back(mp::detail::kStampPidfs);
  for (const std::uint32_t method : methods) {
    INFO("stamp method " << method);
    mp::Lock lock;
    std::shared_ptr<mp::detail::ShmBlock> keep;
    auto& st = mutex_state_of(lock, keep);
    shm_test::Pipe go;
    const pid_t unrelated = shm_test::spawn([&] {
      shm_test::recv<char>(go.r.get());
      return 0;
    });
    const auto tid = static_cast<std::uint32_t>(unrelated);
    mp::detail::SyncTesting::identity_method = static_cast<int>(method);
    const std::uint64_t live_stamp = mp::detail::thread_stamp(tid);
    mp::detail::SyncTesting::identity_method = -1;
    REQUIRE(live_stamp >> 30 == method);
    // A start-time stamp counts clock ticks: the dead thread must have
    // started in another tick than the live process (as a reused tid always
    // does: pids come round only after pid_max others).
    std::uint64_t dead = 0;
    REQUIRE(eventually([&] {
      dead = dead_thread_identity(method);
      return mp::detail::identity_stamp(dead) != live_stamp;
    }));
    st.state.store((dead & 0xffffffff00000000u) | tid);
    bool got = false;
    auto took = time_of([&] { got = lock.acquire(5s); });
    CHECK(got);
    CHECK(took < 100ms);
    CHECK(lock.recovered());
    lock.release();

    st.state.store((live_stamp << 32) | tid);
    took = time_of([&] { got = lock.acquire(150ms); });
    CHECK_FALSE(got);  // never granted while the owner lives
    CHECK(took >= 150ms);
    shm_test::send(go.w.get(), 'g');
    CHECK(shm_test::join(unrelated).exitcode == 0);
    got = false;
    took = time_of([&] { got = lock.acquire(5s); });
    CHECK(got);  // the owner is gone now
    CHECK(took < 100ms);
    CHECK(lock.recovered());
    lock.release();
  }
}

TEST_CASE("Lock: a killed holder is recovered within 100 ms whatever its stamp (#13)", "[lock][failure-model]") {
  for (const std::uint32_t method : {mp::detail::kStampPidfs, mp::detail::kStampProc, mp::detail::kStampNone}) {
    for (const bool reap : {false, true}) {
      INFO("stamp method " << method << ", holder reaped: " << reap);
      mp::RLock lock;
      shm_test::Pipe ready;
      const pid_t pid = shm_test::spawn([&] {
        mp::detail::SyncTesting::identity_method = static_cast<int>(method);
        lock.acquire();
        shm_test::send(ready.w.get(), 'h');
        ::pause();
        return 0;
      });
      shm_test::recv<char>(ready.r.get());
      kill_dead(pid, reap);
      bool got = false;
      const auto took = time_of([&] { got = lock.acquire(5s); });
      CHECK(got);
      CHECK(took < 100ms);
      CHECK(lock.recovered());
      lock.release();
      if (!reap) CHECK(shm_test::join(pid).exitcode == -SIGKILL);
    }
  }
}

TEST_CASE("Lock: held by a main thread that exited while its process runs on, it is recovered (#13)",
          "[lock][failure-model]") {
  // The exited leader stays a zombie until the whole process ends; its
  // pidfd does not report it, /proc does.
  mp::Lock lock;
  shm_test::Pipe ready, go;
  const pid_t pid = shm_test::spawn([&] {
    lock.acquire();
    std::thread([&] {
      shm_test::recv<char>(go.r.get());
      ::_exit(0);
    }).detach();
    shm_test::send(ready.w.get(), 'h');
    ::syscall(SYS_exit, 0);  // only this thread ends, without unwinding
    return 3;
  });
  shm_test::recv<char>(ready.r.get());
  bool got = false;
  const auto took = time_of([&] { got = lock.acquire(5s); });
  CHECK(got);
  CHECK(took < 2s);
  CHECK(lock.recovered());
  lock.release();
  shm_test::send(go.w.get(), 'g');
  CHECK(shm_test::join(pid).exitcode == 0);
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

TEST_CASE("Barrier: a party killed while waiting breaks the barrier for the others (#10)", "[barrier][failure-model]") {
  for (const bool probe : {false, true}) {
    for (const bool reap : {false, true}) {
      INFO("probe mode: " << probe << ", dead party reaped: " << reap);
      mp::Barrier barrier(3);
      const auto party = [&](int broken_code) {
        return shm_test::spawn([&, broken_code] {
          mp::detail::SyncTesting::no_robust_list = probe;
          try {
            barrier.wait(30s);
          } catch (const mp::BrokenBarrierError& e) {
            return std::string(e.what()).find("a party died while waiting") != std::string::npos ? broken_code : 5;
          }
          return 3;
        });
      };
      const pid_t victim = party(0);
      REQUIRE(eventually([&] { return barrier.n_waiting() == 1; }));
      kill_dead(victim, reap);
      // The last arriver does not count the dead party as arrived.
      const auto took = time_of([&] {
        // (Normally "...; the barrier is now broken"; if the party died while
        // it held the barrier's lock, the barrier is already broken for that.)
        REQUIRE_THROWS_MATCHES(barrier.wait(10s), mp::BrokenBarrierError,
                               MessageContains("a party died while waiting"));
      });
      CHECK(took < 1s);
      CHECK(barrier.broken());
      REQUIRE_THROWS_MATCHES(barrier.wait(1s), mp::BrokenBarrierError,
                             MessageContains("the barrier is broken (a party died while waiting)"));
      if (!reap) CHECK(shm_test::join(victim).exitcode == -SIGKILL);

      // A waiting party learns of a death by itself, within a few slices,
      // though the last party never comes.
      barrier.reset();
      CHECK_FALSE(barrier.broken());
      CHECK(barrier.n_waiting() == 0);
      const pid_t victim2 = party(0);
      REQUIRE(eventually([&] { return barrier.n_waiting() == 1; }));
      const pid_t witness = party(0);
      REQUIRE(eventually([&] { return barrier.n_waiting() == 2; }));
      kill_dead(victim2, reap);
      const auto learned = time_of([&] { CHECK(eventually([&] { return barrier.broken(); })); });
      CHECK(learned < 200ms);
      CHECK(shm_test::join(witness).exitcode == 0);
      if (!reap) CHECK(shm_test::join(victim2).exitcode == -SIGKILL);

      // Broken until reset(); then whole rounds pass again.
      CHECK(barrier.broken());
      barrier.reset();
      const pid_t a = party(6), b = party(6);
      const std::size_t index = barrier.wait(30s);
      CHECK(index <= 2);
      CHECK(shm_test::join(a).exitcode == 3);  // returned normally
      CHECK(shm_test::join(b).exitcode == 3);
      CHECK_FALSE(barrier.broken());
    }
  }
}

TEST_CASE("Barrier: a last arriver killed while releasing the round breaks it, and reset() repairs it (#10)",
          "[barrier][failure-model]") {
  mp::Barrier barrier(3);
  const auto waiter = [&] {
    return shm_test::spawn([&] {
      try {
        barrier.wait(30s);
      } catch (const mp::BrokenBarrierError&) {
        return 0;
      }
      return 3;
    });
  };
  const pid_t a = waiter();
  const pid_t b = waiter();
  REQUIRE(eventually([&] { return barrier.n_waiting() == 2; }));
  // The last arriver dies holding the barrier's internal lock, after it
  // checked the others and before it let them go.
  const pid_t last = shm_test::spawn([&] {
    mp::detail::SyncTesting::barrier_releasing = [] { ::raise(SIGKILL); };
    barrier.wait(30s);
    return 3;
  });
  CHECK(shm_test::join(a, 10s).exitcode == 0);
  CHECK(shm_test::join(b, 10s).exitcode == 0);
  CHECK(shm_test::join(last).exitcode == -SIGKILL);
  CHECK(barrier.broken());
  barrier.reset();
  CHECK(barrier.n_waiting() == 0);
  const pid_t c = shm_test::spawn([&] { return barrier.wait(30s) <= 2 ? 0 : 3; });
  const pid_t d = shm_test::spawn([&] { return barrier.wait(30s) <= 2 ? 0 : 3; });
  CHECK(barrier.wait(30s) <= 2);
  CHECK(shm_test::join(c).exitcode == 0);
  CHECK(shm_test::join(d).exitcode == 0);
}

TEST_CASE("Barrier: a party killed after its round passed, before it left, does not stall the next round (#10)",
          "[barrier][failure-model]") {
  mp::Barrier barrier(2);
  const pid_t passed = shm_test::spawn([&] {
    barrier.wait(30s);
    return 0;
  });
  REQUIRE(eventually([&] { return barrier.n_waiting() == 1; }));
  // Stopped, the other party is alive when we arrive last and let the round
  // pass, but cannot leave; then it dies without having left.
  ::kill(passed, SIGSTOP);
  CHECK(barrier.wait(10s) == 1);
  kill_dead(passed, false);
  CHECK_FALSE(barrier.broken());
  // The next wait forgets the dead party instead of waiting forever for the
  // round to drain, and keeps its deadline.
  const auto took = time_of(
      [&] { REQUIRE_THROWS_MATCHES(barrier.wait(150ms), mp::BrokenBarrierError, MessageContains("timed out")); });
  CHECK(took >= 150ms);
  CHECK(took < 150ms + kSlack);
  barrier.reset();
  const pid_t next = shm_test::spawn([&] { return barrier.wait(30s) <= 1 ? 0 : 3; });
  CHECK(barrier.wait(30s) <= 1);
  CHECK(shm_test::join(next).exitcode == 0);
  CHECK(shm_test::join(passed).exitcode == -SIGKILL);
}

TEST_CASE("Barrier: a handle whose parties do not fit its block is rejected") {
  mp::Barrier barrier(2);
  auto h = barrier.handle();
  auto block = mp::detail::open_object(h, mp::detail::ShmKind::barrier, 0).first;
  auto* st = mp::detail::existing_state<mp::detail::BarrierState>(*block, mp::detail::kObjectStateOffset);
  st->parties = 1000;
  REQUIRE_THROWS_MATCHES(mp::Barrier::from_handle(h), mp::ProcessError, MessageContains("parties do not fit in its"));
  st->parties = 0;
  REQUIRE_THROWS_MATCHES(mp::Barrier::from_handle(h), mp::ProcessError, MessageContains("it has 0 parties"));
  st->parties = 2;
  CHECK(mp::Barrier::from_handle(h).parties() == 2);
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
