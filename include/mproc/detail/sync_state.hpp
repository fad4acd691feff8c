// mproc — Python's multiprocessing model for C++20.
// SPDX-License-Identifier: MIT
//
// The states of process-shared synchronization objects, as they lie in
// shared memory, and the futex algorithms that operate on them. No
// allocation, no exceptions except futex errors. The public classes in
// synchronize.hpp wrap them.
#pragma once

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>

#include <fcntl.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "deadline.hpp"
#include "futex.hpp"

namespace mproc::detail {

// ------------------------------------------------------------ thread ids

inline std::uint32_t& cached_tid() noexcept {
  thread_local std::uint32_t tid = 0;
  return tid;
}

// The kernel thread id of the calling thread (unique among live threads of
// all processes in the pid namespace), cached per thread and reset in a
// forked child. Thread-safe, non-blocking.
inline std::uint32_t current_tid() noexcept {
  std::uint32_t& tid = cached_tid();
  if (tid == 0) [[unlikely]] {
    static const bool registered = ::pthread_atfork(nullptr, nullptr, [] { cached_tid() = 0; }) == 0;
    (void)registered;
    tid = static_cast<std::uint32_t>(::syscall(SYS_gettid));
  }
  return tid;
}

// Whether thread `tid` still runs: /proc/<tid>/stat exists and its state is
// not zombie or dead (a killed but unreaped process is a zombie: dead).
// A thread we may not inspect counts as alive. Blocking only on /proc.
inline bool thread_alive(std::uint32_t tid) noexcept {
  char path[40];
  std::snprintf(path, sizeof path, "/proc/%u/stat", tid);
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno != ENOENT && errno != ESRCH;
  char buf[512];
  ssize_t n;
  do {
    n = ::read(fd, buf, sizeof buf - 1);
  } while (n < 0 && errno == EINTR);
  ::close(fd);
  if (n <= 0) return n < 0 && errno != ESRCH;
  buf[n] = '\0';
  // "<pid> (<comm>) <state> ...": comm may hold ')' itself, so take the last one.
  const char* close_paren = nullptr;
  for (const char* p = buf; *p; ++p)
    if (*p == ')') close_paren = p;
  if (!close_paren || close_paren[1] != ' ') return true;
  const char state = close_paren[2];
  return state != 'Z' && state != 'X' && state != 'x';
}

// ------------------------------------------------------------------ mutex

// How long a sleeping lock waiter sleeps before checking whether the holder
// died (R5 asks for recovery within 100 ms).
inline constexpr std::chrono::milliseconds kOwnerCheckSlice{20};
// Spin iterations before sleeping (each a PAUSE and a relaxed load).
inline constexpr int kMutexSpin = 200;

// A process-shared mutex: the futex word holds the owner's thread id, a
// waiters bit (someone sleeps: unlock must wake) and a recovered bit (the
// owner took the lock over from a holder that died). Also correct between
// threads. Used by Lock, RLock and Barrier.
struct MutexState {
  static constexpr std::uint32_t kOwnerMask = 0x3fffffffu;  // pid_max <= 2^22
  static constexpr std::uint32_t kRecovered = 1u << 30;
  static constexpr std::uint32_t kWaiters = 1u << 31;

  std::atomic<std::uint32_t> word{0};
  std::uint32_t count = 0;  // RLock recursion depth; touched by the owner only

  std::uint32_t owner() const noexcept { return word.load(std::memory_order_relaxed) & kOwnerMask; }
  bool recovered() const noexcept { return (word.load(std::memory_order_relaxed) & kRecovered) != 0; }

  bool try_lock(std::uint32_t me) noexcept {
    std::uint32_t expected = 0;
    return word.compare_exchange_strong(expected, me, std::memory_order_acquire, std::memory_order_relaxed);
  }

  // Acquires until `deadline`: spins briefly, then sleeps in slices,
  // taking the lock over when its holder thread is found dead. Returns
  // false on timeout. Blocking.
  bool lock(std::uint32_t me, Clock::time_point deadline) {
    if (try_lock(me)) return true;
    return lock_slow(me, deadline);
  }

  // Releases; wakes one sleeper if there is any. Returns the word as it
  // was (owner bits 0: the lock was not held).
  std::uint32_t unlock() {
    const std::uint32_t old = word.exchange(0, std::memory_order_release);
    if (old & kWaiters) futex_wake(word, 1);
    return old;
  }

 private:
  bool take_over_if_dead(std::uint32_t seen, std::uint32_t me) noexcept {
    if (thread_alive(seen & kOwnerMask)) return false;
    return word.compare_exchange_strong(seen, me | kWaiters | kRecovered, std::memory_order_acquire,
                                        std::memory_order_relaxed);
  }

  bool lock_slow(std::uint32_t me, Clock::time_point deadline) {
    for (int i = 0; i < kMutexSpin; ++i) {
      cpu_relax();
      if (word.load(std::memory_order_relaxed) == 0 && try_lock(me)) return true;
    }
    for (;;) {
      std::uint32_t v = word.load(std::memory_order_relaxed);
      if (v == 0) {
        // Others may sleep too: keep the waiters bit so our unlock wakes them.
        if (word.compare_exchange_weak(v, me | kWaiters, std::memory_order_acquire, std::memory_order_relaxed))
          return true;
        continue;
      }
      if (!(v & kWaiters)) {
        if (!word.compare_exchange_weak(v, v | kWaiters, std::memory_order_relaxed)) continue;
        v |= kWaiters;
      }
      const auto now = Clock::now();
      if (now >= deadline) return take_over_if_dead(v, me);
      const auto slice_end = deadline - now > kOwnerCheckSlice ? now + kOwnerCheckSlice : deadline;
      if (futex_wait(word, v, slice_end) == FutexWait::timed_out && take_over_if_dead(v, me)) return true;
    }
  }
};

// -------------------------------------------------------------- semaphore

// A counting semaphore: `value` is the futex word; `waiters` counts
// sleepers so release() only makes a system call when someone sleeps.
struct SemaphoreState {
  std::atomic<std::uint32_t> value{0};
  std::atomic<std::uint32_t> waiters{0};
  std::uint32_t bound = 0;  // largest value release() may reach

  bool try_acquire() noexcept {
    std::uint32_t v = value.load(std::memory_order_relaxed);
    while (v > 0)
      if (value.compare_exchange_weak(v, v - 1, std::memory_order_acquire, std::memory_order_relaxed)) return true;
    return false;
  }

  bool acquire(Clock::time_point deadline) {
    if (try_acquire()) return true;
    if (Clock::now() >= deadline) return false;
    waiters.fetch_add(1, std::memory_order_seq_cst);
    bool got = false;
    for (;;) {
      std::uint32_t v = value.load(std::memory_order_seq_cst);
      if (v > 0) {
        if (value.compare_exchange_weak(v, v - 1, std::memory_order_acquire, std::memory_order_relaxed)) {
          got = true;
          break;
        }
        continue;
      }
      if (Clock::now() >= deadline) break;
      futex_wait(value, 0, deadline);
    }
    waiters.fetch_sub(1, std::memory_order_relaxed);
    return got;
  }

  // Adds `n`; false (and no change) if that would pass `bound`.
  bool release(std::uint32_t n) {
    std::uint32_t v = value.load(std::memory_order_relaxed);
    do {
      if (v > bound || n > bound - v) return false;
    } while (!value.compare_exchange_weak(v, v + n, std::memory_order_seq_cst, std::memory_order_relaxed));
    if (waiters.load(std::memory_order_seq_cst) > 0) futex_wake(value, n > INT_MAX ? INT_MAX : static_cast<int>(n));
    return true;
  }
};

// ------------------------------------------------------------------ event

// A flag with a generation count in one futex word (bit 0: set; bits 1..31:
// number of set() calls), so a waiter woken by set() returns true even if
// clear() follows at once.
struct EventState {
  std::atomic<std::uint32_t> word{0};
  std::atomic<std::uint32_t> waiters{0};

  bool is_set() const noexcept { return (word.load(std::memory_order_acquire) & 1u) != 0; }

  void set() {
    std::uint32_t v = word.load(std::memory_order_relaxed);
    do {
      if (v & 1u) return;
    } while (!word.compare_exchange_weak(v, (v + 2u) | 1u, std::memory_order_seq_cst, std::memory_order_relaxed));
    if (waiters.load(std::memory_order_seq_cst) > 0) futex_wake(word);
  }

  void clear() noexcept { word.fetch_and(~1u, std::memory_order_seq_cst); }

  bool wait(Clock::time_point deadline) {
    std::uint32_t v = word.load(std::memory_order_acquire);
    if (v & 1u) return true;
    if (Clock::now() >= deadline) return false;
    waiters.fetch_add(1, std::memory_order_seq_cst);
    bool set_seen = false;
    const std::uint32_t generation = v >> 1;
    for (;;) {
      v = word.load(std::memory_order_seq_cst);
      if ((v & 1u) || (v >> 1) != generation) {
        set_seen = true;
        break;
      }
      if (Clock::now() >= deadline) break;
      futex_wait(word, v, deadline);
    }
    waiters.fetch_sub(1, std::memory_order_relaxed);
    return set_seen;
  }
};

// -------------------------------------------------------------- condition

// A condition variable's shared part. `waiters` (not yet notified) and
// `signals` (notified, not yet woken) change only under the condition's
// lock; `seq` changes on every notify and is what sleepers wait on.
struct ConditionState {
  std::atomic<std::uint32_t> seq{0};
  std::uint32_t waiters = 0;
  std::uint32_t signals = 0;
};

// ---------------------------------------------------------------- barrier

// A barrier's shared part (Python's threading.Barrier algorithm): an
// internal mutex, a broadcast sequence word, and the counters it guards.
struct BarrierState {
  static constexpr std::int32_t kFilling = 0;
  static constexpr std::int32_t kDraining = 1;
  static constexpr std::int32_t kResetting = -1;
  static constexpr std::int32_t kBroken = -2;

  MutexState mutex;
  std::atomic<std::uint32_t> seq{0};
  std::uint32_t parties = 0;
  std::uint32_t count = 0;
  std::int32_t state = kFilling;
  std::int64_t default_timeout_ns = -1;  // -1: none
};

}  // namespace mproc::detail
