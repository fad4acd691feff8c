// mproc/detail/shm/mutex_state.hpp — MutexState, the process-shared mutex
// in shared memory that survives a dead holder: the owner's identity in one
// futex word, spin then sleep, take-over when the holder died. Layer
// detail/shm, on thread_identity.hpp and detail/os/futex.hpp; used by Lock,
// RLock (lock_core.hpp), the states of sync_state.hpp and the shm Queue.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdint>

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/os/futex.hpp>
#include <mproc/detail/shm/thread_identity.hpp>
#include <mproc/detail/util/lean_std.hpp>

namespace mproc::detail {

// ------------------------------------------------------------------ mutex

// How long a sleeping waiter sleeps before checking whether the thread it
// waits for died (R5 asks for recovery within 100 ms). Signals do not
// stretch it: the check runs when the slice is over, however the sleep ended.
inline constexpr std::chrono::milliseconds kDeathCheckSlice{20};
// Spin iterations before sleeping (each a PAUSE and a relaxed load).
inline constexpr int kMutexSpin = 200;

// The 32-bit half of a 64-bit atomic that holds its low bits (the futex word).
inline const std::uint32_t* low_word(const std::atomic<std::uint64_t>& a) noexcept {
  static_assert(sizeof(std::atomic<std::uint64_t>) == 8 && std::atomic<std::uint64_t>::is_always_lock_free);
  return reinterpret_cast<const std::uint32_t*>(&a) + (std::endian::native == std::endian::little ? 0 : 1);
}

// A process-shared mutex. One 64-bit atomic holds the owner's identity
// (tid and stamp, see current_identity), a waiters bit (someone sleeps:
// unlock must wake) and a recovered bit (the owner took the lock over from
// a holder that died); its low half, tid and bits, is the futex word.
// Uncontended lock and unlock are one atomic operation each. A waiter
// checks every kDeathCheckSlice whether the owner died (identity_dead, so
// a reused tid does not keep a dead owner alive) and then takes the lock
// over. Any thread may unlock (Python's Lock allows it). Also correct
// between threads. Used by Lock, RLock, Barrier and the queues.
struct MutexState {
  static constexpr std::uint32_t kOwnerMask = 0x3fffffffu;  // pid_max <= 2^22
  static constexpr std::uint32_t kRecovered = 1u << 30;
  static constexpr std::uint32_t kWaiters = 1u << 31;
  static constexpr std::uint64_t kFlags = kRecovered | kWaiters;

  std::atomic<std::uint64_t> state{0};
  std::uint32_t count = 0;  // RLock recursion depth; touched by the owner only
  std::uint32_t reserved = 0;

  // The owner's tid (0: free).
  std::uint32_t owner() const noexcept {
    return static_cast<std::uint32_t>(state.load(std::memory_order_relaxed)) & kOwnerMask;
  }
  // Whether the thread of identity `id` holds the lock.
  bool held_by(std::uint64_t id) const noexcept { return (state.load(std::memory_order_relaxed) & ~kFlags) == id; }
  bool recovered() const noexcept { return (state.load(std::memory_order_relaxed) & kRecovered) != 0; }

  // Acquires if free, for the calling thread (`me`: its current_tid()).
  // Non-blocking; does not check whether the holder died.
  bool try_lock(std::uint32_t me) noexcept {
    (void)me;
    return try_lock_id(current_identity());
  }
  bool try_lock_id(std::uint64_t id) noexcept {
    std::uint64_t expected = 0;
    return state.compare_exchange_strong(expected, id, std::memory_order_acquire, std::memory_order_relaxed);
  }

  // Acquires for the calling thread (`me`: its current_tid()) until
  // `deadline`: spins briefly, then sleeps, taking the lock over when its
  // holder is found dead. Returns false on timeout. Blocking.
  bool lock(std::uint32_t me, Clock::time_point deadline) {
    (void)me;
    return lock_id(current_identity(), deadline);
  }
  bool lock_id(std::uint64_t id, Clock::time_point deadline) {
    if (try_lock_id(id)) return true;
    return lock_slow(id, deadline);
  }

  // Releases; wakes one sleeper if there is any. Returns the futex word as
  // it was (owner bits 0: the lock was not held).
  std::uint32_t unlock() {
    const auto old = static_cast<std::uint32_t>(state.exchange(0, std::memory_order_release));
    if (old & kWaiters) futex_wake(low_word(state), 1);
    return old;
  }

 private:
  bool take_over_if_dead(std::uint64_t seen, std::uint64_t id) noexcept {
    if (!identity_dead(seen & ~kFlags)) return false;
    return state.compare_exchange_strong(seen, id | kWaiters | kRecovered, std::memory_order_acquire,
                                         std::memory_order_relaxed);
  }

  bool lock_slow(std::uint64_t id, Clock::time_point deadline) {
    for (int i = 0; i < kMutexSpin; ++i) {
      cpu_relax();
      if (state.load(std::memory_order_relaxed) == 0 && try_lock_id(id)) return true;
    }
    Clock::time_point next_check{};  // set on the first pass
    for (;;) {
      std::uint64_t v = state.load(std::memory_order_relaxed);
      if (v == 0) {
        // Others may sleep too: keep the waiters bit so our unlock wakes them.
        if (state.compare_exchange_weak(v, id | kWaiters, std::memory_order_acquire, std::memory_order_relaxed))
          return true;
        continue;
      }
      if (!(v & kWaiters)) {
        if (!state.compare_exchange_weak(v, v | kWaiters, std::memory_order_relaxed)) continue;
        v |= kWaiters;
      }
      const auto now = Clock::now();
      if (next_check == Clock::time_point{}) next_check = now + kDeathCheckSlice;
      if (now >= next_check || now >= deadline) {
        if (take_over_if_dead(v, id)) return true;
        if (now >= deadline) return false;
        next_check = now + kDeathCheckSlice;
        continue;  // the probe took time: look at the word again
      }
      futex_wait(low_word(state), static_cast<std::uint32_t>(v), std::min(deadline, next_check));
    }
  }
};

}  // namespace mproc::detail
