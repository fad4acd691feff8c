// Process-shared Lock and RLock (<mproc/lock.hpp>): methods, errors,
// timeouts, use between processes and between threads, and recovery from a
// holder that died (R5), also when its tid was reused (#13).
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

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

namespace {

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

TEST_CASE("Lock and RLock: locked() tells whether anyone holds it, in this process or another") {
  mp::Lock lock;
  CHECK_FALSE(lock.locked());
  lock.acquire();
  CHECK(lock.locked());
  lock.release();
  CHECK_FALSE(lock.locked());

  mp::RLock rlock;
  rlock.acquire();
  rlock.acquire();
  CHECK(rlock.locked());
  rlock.release();
  CHECK(rlock.locked());  // one level still held
  rlock.release();
  CHECK_FALSE(rlock.locked());

  // Held by another process: seen from here; and from there, held by us.
  shm_test::Pipe ready, done;
  const pid_t pid = shm_test::spawn([&] {
    lock.acquire();
    shm_test::send(ready.w.get(), 'h');
    (void)shm_test::recv<char>(done.r.get());
    lock.release();
    return rlock.locked() ? 1 : 0;
  });
  (void)shm_test::recv<char>(ready.r.get());
  CHECK(lock.locked());
  rlock.acquire();
  shm_test::send(done.w.get(), 'd');
  CHECK(shm_test::join(pid).exitcode == 1);
  rlock.release();
  CHECK_FALSE(lock.locked());
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
