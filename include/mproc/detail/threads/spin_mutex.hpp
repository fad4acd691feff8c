// SpinMutex: the lock of ThreadPool's task queues, held for a few dozen
// nanoseconds at a time. Layer: detail/threads; builds on
// detail/os/futex.hpp; used by the scheduler (scheduler.hpp).
//
// Why not std::mutex: glibc's mutex sleeps in the kernel at the first
// contention and its unlock then makes a wake-up syscall, so a thread
// posting a million tiny tasks while the workers take them paid two
// syscalls per clash (on a VM, microseconds each) for a lock held for
// nanoseconds. SpinMutex spins first, then yields, and sleeps on a private
// futex only when the holder stays away (e.g. it was preempted).
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <cstdint>

#include <sched.h>

#include <mproc/detail/os/futex.hpp>

namespace mproc::detail {

// A mutex (BasicLockable + try_lock) for short critical sections within one
// process. Thread-safe; not recursive; never throws.
class SpinMutex {
 public:
  SpinMutex() noexcept = default;
  SpinMutex(const SpinMutex&) = delete;
  SpinMutex& operator=(const SpinMutex&) = delete;

  // Takes the lock without waiting; returns whether it did.
  bool try_lock() noexcept {
    std::uint32_t expected = unlocked;
    return state_.compare_exchange_strong(expected, locked, std::memory_order_acquire, std::memory_order_relaxed);
  }

  // Takes the lock: spins, yields, then sleeps until it is free. Blocks.
  void lock() noexcept {
    if (!try_lock()) lock_slow();
  }

  // Releases the lock and wakes one sleeper if there is one. Non-blocking.
  void unlock() noexcept {
    if (state_.exchange(unlocked, std::memory_order_release) == contended) wake();
  }

 private:
  static constexpr std::uint32_t unlocked = 0;
  static constexpr std::uint32_t locked = 1;
  static constexpr std::uint32_t contended = 2;  // locked, and someone may sleep
  // About a microsecond of PAUSEs (several critical sections), then a few
  // yields to let a preempted holder run, then the futex.
  static constexpr int spins = 128;
  static constexpr int yields = 4;

  void lock_slow() noexcept {
    for (int i = 0; i < spins; ++i) {
      if (state_.load(std::memory_order_relaxed) == unlocked && try_lock()) return;
      cpu_relax();
    }
    for (int i = 0; i < yields; ++i) {
      ::sched_yield();
      if (state_.load(std::memory_order_relaxed) == unlocked && try_lock()) return;
    }
    // A sleeper marks the lock contended so that the holder's unlock wakes it.
    // (futex_wait/futex_wake throw only for a bad address: not this word.)
    while (state_.exchange(contended, std::memory_order_acquire) != unlocked)
      futex_wait(state_, contended, Clock::time_point::max(), FutexScope::process);
  }

  void wake() noexcept { futex_wake(state_, 1, FutexScope::process); }

  std::atomic<std::uint32_t> state_{unlocked};
};

}  // namespace mproc::detail
