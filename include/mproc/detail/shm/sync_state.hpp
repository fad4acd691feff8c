// mproc/detail/shm/sync_state.hpp — the states of the semaphore, event,
// condition and barrier as they lie in shared memory, and the futex
// algorithms that operate on them. No allocation, no exceptions except futex
// errors. Layer detail/shm, on MutexState (mutex_state.hpp) and WaiterSlot
// (waiter_slot.hpp); the public semaphore.hpp, event.hpp, condition.hpp and
// barrier.hpp wrap them.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/os/futex.hpp>
#include <mproc/detail/shm/mutex_state.hpp>
#include <mproc/detail/shm/waiter_slot.hpp>
#include <mproc/detail/util/lean_std.hpp>

namespace mproc::detail {

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

// A condition variable's shared part: one record per waiting thread, all
// under the condition's lock. notify() marks the oldest waiting records
// whose owners are alive as notified and wakes them one by one, so a dead
// waiter neither absorbs a notification nor leaves one for a later waiter.
struct ConditionState {
  static constexpr std::uint32_t kMaxWaiters = 192;

  std::uint32_t next_ticket = 0;
  std::uint32_t used = 0;  // slots [used, kMaxWaiters) have never been used
  WaiterSlot slots[kMaxWaiters];

  // How many slots to look at (`used`, checked: it lies in shared memory).
  std::uint32_t in_use_bound() const noexcept { return std::min(used, kMaxWaiters); }

  // A free record, after freeing those of dead waiters if none is free;
  // nullptr if all are in use by live waiters. Blocking only on probes.
  WaiterSlot* free_slot() noexcept {
    const std::uint32_t n = in_use_bound();
    for (std::uint32_t i = 0; i < n; ++i)
      if (slots[i].state.load(std::memory_order_relaxed) == WaiterSlot::kFree) return &slots[i];
    if (n < kMaxWaiters) {
      used = n + 1;
      return &slots[n];
    }
    WaiterSlot* found = nullptr;
    for (auto& s : slots)
      if (s.owner_dead()) {
        s.reap();
        if (!found) found = &s;
      }
    return found;
  }
  // The waiting record that arrived first, or nullptr.
  WaiterSlot* oldest_waiting() noexcept {
    WaiterSlot* best = nullptr;
    const std::uint32_t n = in_use_bound();
    for (std::uint32_t i = 0; i < n; ++i) {
      WaiterSlot& s = slots[i];
      if (s.state.load(std::memory_order_relaxed) == WaiterSlot::kWaiting &&
          (!best || static_cast<std::int32_t>(s.ticket - best->ticket) < 0))
        best = &s;
    }
    return best;
  }
};

// ---------------------------------------------------------------- barrier

// A barrier's shared part (Python's threading.Barrier algorithm): an
// internal mutex, a broadcast sequence word, the counters it guards, and,
// right after it in the block, one WaiterSlot per party: slot i holds the
// party that arrived i-th in the current round until it leaves.
struct BarrierState {
  static constexpr std::int32_t kFilling = 0;
  static constexpr std::int32_t kDraining = 1;
  static constexpr std::int32_t kResetting = -1;
  static constexpr std::int32_t kBroken = -2;
  static constexpr std::uint32_t kMaxParties = 1u << 16;
  // Why the barrier broke (`reason`, shown in BrokenBarrierError).
  static constexpr std::uint32_t kTimedOut = 1;
  static constexpr std::uint32_t kAborted = 2;
  static constexpr std::uint32_t kPartyDied = 3;
  static constexpr std::uint32_t kInconsistent = 4;
  static constexpr std::uint32_t kActionFailed = 5;

  MutexState mutex;
  std::atomic<std::uint32_t> seq{0};
  std::uint32_t parties = 0;
  std::uint32_t count = 0;  // parties in slots (arrived, or released and not yet left)
  std::int32_t state = kFilling;
  std::int64_t default_timeout_ns = -1;  // -1: none
  std::uint32_t reason = 0;              // of the last break
  std::uint32_t reserved = 0;
  // The action's address (a void (*)() of the program every party runs:
  // they are forks of one process); 0: none.
  std::uint64_t action = 0;

  // Why the barrier broke, for an error message.
  const char* reason_text() const noexcept {
    switch (reason) {
      case kTimedOut:
        return " (a wait timed out)";
      case kAborted:
        return " (abort() was called)";
      case kPartyDied:
        return " (a party died while waiting)";
      case kInconsistent:
        return " (its shared state was inconsistent)";
      case kActionFailed:
        return " (its action threw an exception)";
      default:
        return "";
    }
  }

  // Bytes of a barrier's state with its slots.
  static constexpr std::size_t size_for(std::uint32_t parties) noexcept {
    return sizeof(BarrierState) + std::size_t{parties} * sizeof(WaiterSlot);
  }
  WaiterSlot* slots() noexcept {
    return std::launder(reinterpret_cast<WaiterSlot*>(reinterpret_cast<std::byte*>(this) + sizeof(BarrierState)));
  }
};
static_assert(sizeof(BarrierState) % alignof(WaiterSlot) == 0);

}  // namespace mproc::detail
