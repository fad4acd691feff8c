// How the two sides of the shared-memory Queue wait for and wake each other,
// and order their stores: QueueLock (a robust process-shared mutex held for
// a scope), crash_order (the order in which a killed process's stores
// land), and queue_wait/queue_notify, an eventcount on a futex word that
// spins adaptively, yields, then sleeps in slices. Layer detail/shm, on
// detail/os/futex.hpp and MutexState (mutex_state.hpp); used by queue_ring.hpp.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>

#include <sched.h>

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/os/futex.hpp>
#include <mproc/detail/shm/mutex_state.hpp>
#include <mproc/detail/shm/queue_layout.hpp>
#include <mproc/detail/util/lean_std.hpp>

namespace mproc::detail {

// Holds a MutexState (robust: taken over from a dead holder) once lock()
// succeeded; releases it on destruction.
class QueueLock {
 public:
  explicit QueueLock(MutexState& m) noexcept : m_(m) {}
  QueueLock(const QueueLock&) = delete;
  QueueLock& operator=(const QueueLock&) = delete;
  ~QueueLock() {
    if (held_) m_.unlock();
  }
  // Acquires until `deadline`; false on timeout.
  bool lock(Clock::time_point deadline) {
    held_ = m_.lock(current_tid(), deadline);
    return held_;
  }
  void unlock() {
    held_ = false;
    m_.unlock();
  }

 private:
  MutexState& m_;
  bool held_ = false;
};

// Keeps the compiler from swapping the stores around it, so that a process
// killed between them has done the first and not the second (the kernel
// stops a process at an instruction boundary, its earlier stores done).
inline void crash_order() noexcept { std::atomic_signal_fence(std::memory_order_seq_cst); }

// This thread's current spin time before yielding, in nanoseconds.
inline std::int64_t& queue_spin_budget() noexcept {
  thread_local std::int64_t budget = std::chrono::nanoseconds(kQueueSpin).count();
  return budget;
}

// Waits until ready() or `deadline`: checks, spins briefly, yields, then
// sleeps on `word` for at most a slice. `word` is an eventcount: its low
// bit says a sleeper is armed; whoever makes ready() true publishes, then
// (after a store-load barrier) calls queue_notify(), which bumps and wakes
// `word` only if armed — one system call per sleep, not per item.
// `waiting` counts sleepers. Returns false if the deadline passed with
// ready() false; true otherwise (the caller re-checks under its lock).
// While spinning it waits for spin_ready() (e.g. room for a batch of items,
// so a producer facing a full queue does not advance in lockstep with the
// consumer), which implies ready().
template <class Ready, class SpinReady>
bool queue_wait(std::atomic<std::uint32_t>& word, std::atomic<std::uint32_t>& waiting, Clock::time_point deadline,
                Ready&& ready, SpinReady&& spin_ready) {
  if (ready()) {
    if (spin_ready()) return true;
  } else if (Clock::now() >= deadline) {
    return false;
  }
  // Adaptive: spinning pays only when the other side runs on another CPU
  // at the same time, so a thread whose spins keep failing spins less.
  std::int64_t& budget = queue_spin_budget();
  const auto spin_end = std::min(deadline, Clock::now() + std::chrono::nanoseconds(budget));
  bool spun = false;
  while (!(spun = spin_ready())) {
    // Poll the other side's cache line gently: each poll takes the line
    // away from its writer.
    for (int k = 0; k < kQueuePollPauses; ++k) cpu_relax();
    if (Clock::now() >= spin_end) break;
  }
  const std::int64_t max_ns = std::chrono::nanoseconds(kQueueSpin).count();
  budget = spun ? std::min(max_ns, 2 * budget + 500) : budget / 2;
  // Then let the other side run if it shares our CPU: cheaper than a
  // futex sleep and wake-up, and it lets the queue fill or drain in batches.
  for (int y = 0; y < kQueueYields && !spin_ready(); ++y) ::sched_yield();
  if (ready()) return true;
  auto now = Clock::now();
  std::uint32_t armed = word.load(std::memory_order_seq_cst);
  while (!(armed & 1u) && !word.compare_exchange_weak(armed, armed | 1u, std::memory_order_seq_cst)) {
  }
  armed |= 1u;
  waiting.fetch_add(1, std::memory_order_seq_cst);
  // Sleep until woken (the word moved on), ready() or the end of the slice.
  // A sleep cut short by a signal (or a spurious wake-up) resumes here, at
  // the cost of one check: no spinning, yielding or locking again.
  const auto slice_end = deadline - now > kQueueWaitSlice ? now + kQueueWaitSlice : deadline;
  while (now < slice_end && word.load(std::memory_order_seq_cst) == armed && !ready()) {
    futex_wait(word, armed, slice_end);
    now = Clock::now();
  }
  waiting.fetch_sub(1, std::memory_order_seq_cst);
  return true;
}

template <class Ready>
bool queue_wait(std::atomic<std::uint32_t>& word, std::atomic<std::uint32_t>& waiting, Clock::time_point deadline,
                Ready&& ready) {
  return queue_wait(word, waiting, deadline, ready, ready);
}

// Orders the caller's publishing store (before the unlock that precedes
// this) before its next load, as the eventcount needs (a store-load
// barrier). On x86 the unlock's locked exchange already is a full barrier:
// only the compiler must be kept from moving the load above it. Elsewhere,
// a sequentially consistent fence.
inline void fence_after_unlock() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  std::atomic_signal_fence(std::memory_order_seq_cst);
#else
  std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
}

// Wakes the sleepers of `word` if one is armed (after the caller's seq_cst
// store that made their condition true).
inline void queue_notify(std::atomic<std::uint32_t>& word) {
  std::uint32_t v = word.load(std::memory_order_seq_cst);
  if (!(v & 1u)) return;
  if (word.compare_exchange_strong(v, v + 1u, std::memory_order_seq_cst)) futex_wake(word);
}

}  // namespace mproc::detail
