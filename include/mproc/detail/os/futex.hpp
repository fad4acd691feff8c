// Futex wait/wake on 32-bit words that may live in memory shared between
// processes, with absolute steady-clock deadlines; words that only one
// process's threads use can say so (FutexScope::process), which is cheaper.
// Linux only.
// SPDX-License-Identifier: MIT
#pragma once

#if !defined(__linux__)
#error "mproc's process-shared synchronization needs Linux futexes; other systems are not supported yet"
#endif

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/os/error.hpp>
#include <mproc/detail/util/lean_std.hpp>

namespace mproc::detail {

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t) &&
                  std::atomic<std::uint32_t>::is_always_lock_free,
              "mproc: futex words need a plain 32-bit lock-free atomic");

// How a futex_wait ended. None of them means the caller's condition holds:
// `woken` also covers spurious wake-ups, so callers always re-check their
// condition and their deadline, and sleep again for the time left.
enum class FutexWait {
  woken,          // FUTEX_WAKE (or a spurious wake-up)
  value_changed,  // the word no longer held `expected` when the call began
  timed_out,      // the deadline passed
  interrupted,    // a signal handler ran (EINTR)
};

// Who may wait on and wake a futex word. A `process` word is used by the
// threads of one process only (FUTEX_PRIVATE_FLAG: the kernel keys it by
// address, with no shared-memory lookup); a wait and its wake must use the
// same scope.
enum class FutexScope { shared, process };

constexpr int futex_op(int op, FutexScope scope) noexcept {
  return scope == FutexScope::process ? (op | FUTEX_PRIVATE_FLAG) : op;
}

// Sleeps while the 32-bit word at `addr` holds `expected`, until woken,
// interrupted or `deadline` (steady clock, i.e. CLOCK_MONOTONIC;
// time_point::max() = no deadline). `addr` may be the low or high half of a
// 64-bit atomic. Blocking; thread- and process-safe. Throws ProcessError
// only on a kernel error (bad address), never on EINTR/EAGAIN/ETIMEDOUT.
inline FutexWait futex_wait(const std::uint32_t* addr, std::uint32_t expected, Clock::time_point deadline,
                            FutexScope scope = FutexScope::shared) {
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
  // of std::chrono::steady_clock on Linux), so a wait interrupted and begun
  // again keeps its deadline.
  const long rc = ::syscall(SYS_futex, addr, futex_op(FUTEX_WAIT_BITSET, scope), expected, timeout, nullptr,
                            FUTEX_BITSET_MATCH_ANY);
  if (rc == 0) return FutexWait::woken;
  switch (errno) {
    case EAGAIN:
      return FutexWait::value_changed;
    case ETIMEDOUT:
      return FutexWait::timed_out;
    case EINTR:
      return FutexWait::interrupted;
    default:
      throw_errno("futex(FUTEX_WAIT_BITSET)");
  }
}
inline FutexWait futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected, Clock::time_point deadline,
                            FutexScope scope = FutexScope::shared) {
  return futex_wait(reinterpret_cast<const std::uint32_t*>(&word), expected, deadline, scope);
}

// Wakes up to `n` waiters on the word at `addr` (INT_MAX: all).
// Non-blocking; thread- and process-safe. Returns how many were woken.
// Throws ProcessError only on a kernel error.
inline int futex_wake(const std::uint32_t* addr, int n = INT_MAX, FutexScope scope = FutexScope::shared) {
  const long rc = ::syscall(SYS_futex, addr, futex_op(FUTEX_WAKE, scope), n, nullptr, nullptr, 0);
  if (rc < 0) throw_errno("futex(FUTEX_WAKE)");
  return static_cast<int>(rc);
}
inline int futex_wake(std::atomic<std::uint32_t>& word, int n = INT_MAX, FutexScope scope = FutexScope::shared) {
  return futex_wake(reinterpret_cast<const std::uint32_t*>(&word), n, scope);
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
