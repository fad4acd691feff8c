// mproc — Python's multiprocessing model for C++20.
// SPDX-License-Identifier: MIT
//
// Futex wait/wake on 32-bit words that may live in memory shared between
// processes (no FUTEX_PRIVATE_FLAG), with absolute steady-clock deadlines.
// Linux only.
#pragma once

#if !defined(__linux__)
#error "mproc's process-shared synchronization needs Linux futexes; other systems are not supported yet"
#endif

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "deadline.hpp"
#include "fd.hpp"

namespace mproc::detail {

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t) &&
                  std::atomic<std::uint32_t>::is_always_lock_free,
              "mproc: futex words need a plain 32-bit lock-free atomic");

// How a futex_wait ended. `woken` includes spurious wake-ups and signals:
// callers always re-check their condition.
enum class FutexWait { woken, value_changed, timed_out };

// Sleeps while `word == expected`, until woken or `deadline` (steady clock,
// i.e. CLOCK_MONOTONIC; time_point::max() = no deadline). Blocking;
// thread- and process-safe. Throws ProcessError only on a kernel error
// (bad address), never on EINTR/EAGAIN/ETIMEDOUT.
inline FutexWait futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                            Clock::time_point deadline) {
  timespec ts{};
  const timespec* timeout = nullptr;
  if (deadline != Clock::time_point::max()) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.time_since_epoch()).count();
    if (ns <= 0) return FutexWait::timed_out;
    ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
    ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
    timeout = &ts;
  }
  // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC timeout (the clock
  // of std::chrono::steady_clock on Linux) and, without FUTEX_PRIVATE_FLAG,
  // works across processes sharing the page.
  const long rc = ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT_BITSET, expected,
                            timeout, nullptr, FUTEX_BITSET_MATCH_ANY);
  if (rc == 0) return FutexWait::woken;
  switch (errno) {
    case EAGAIN: return FutexWait::value_changed;
    case ETIMEDOUT: return FutexWait::timed_out;
    case EINTR: return FutexWait::woken;
    default: throw_errno("futex(FUTEX_WAIT_BITSET)");
  }
}

// Wakes up to `n` waiters on `word` (INT_MAX: all). Non-blocking; thread-
// and process-safe. Returns how many were woken. Throws ProcessError only on
// a kernel error.
inline int futex_wake(std::atomic<std::uint32_t>& word, int n = INT_MAX) {
  const long rc = ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, n, nullptr, nullptr, 0);
  if (rc < 0) throw_errno("futex(FUTEX_WAKE)");
  return static_cast<int>(rc);
}

// Tells the CPU we are spinning (x86 PAUSE, ARM YIELD).
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  asm volatile("yield" ::: "memory");
#else
  std::atomic_signal_fence(std::memory_order_seq_cst);
#endif
}

}  // namespace mproc::detail
