// mproc/condition.hpp — process-shared Condition (Python:
// multiprocessing.Condition).
// Public layer, part of <mproc/synchronize.hpp>: a ConditionState
// (detail/shm/sync_state.hpp, one record per waiting thread) in a shared
// block, over the LockCore (detail/shm/lock_core.hpp) of a Lock or RLock
// (lock.hpp). Copies are handles to the same condition and lock.
// SPDX-License-Identifier: MIT
#pragma once

#include <climits>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/os/futex.hpp>
#include <mproc/detail/shm/handle_serialize.hpp>
#include <mproc/detail/shm/lock_core.hpp>
#include <mproc/detail/shm/object.hpp>
#include <mproc/detail/shm/sync_object.hpp>
#include <mproc/detail/shm/sync_state.hpp>
#include <mproc/detail/util/lean_std.hpp>
#include <mproc/errors.hpp>
#include <mproc/lock.hpp>

namespace mproc {

// A process-shared condition variable (Python: multiprocessing.Condition),
// over an RLock of its own or a given Lock or RLock. wait() and notify()
// require the calling thread to hold that lock. notify(n) wakes at most n
// waiters, oldest first; wait() has no spurious wake-ups visible to the
// caller. A waiter that died (its process killed inside wait()) is skipped:
// it neither absorbs a notify() nor makes another waiter's wait() return
// true without one. At most ConditionState::kMaxWaiters (192) threads may
// wait at once.
class Condition {
 public:
  // A condition over a new RLock. Throws ProcessError.
  Condition() : Condition(RLock()) {}
  // A condition over `lock` (shared with the caller's copy).
  explicit Condition(Lock lock) : lock_(std::move(lock.core_)) { create(); }
  explicit Condition(RLock lock) : lock_(std::move(lock.core_)) { create(); }
  Condition(const Condition&) = default;
  Condition& operator=(const Condition&) = default;

  // The underlying lock's operations (Lockable / TimedLockable).
  bool acquire() { return lock_.acquire(detail::Clock::time_point::max()); }
  template <class Rep, class Period>
  [[nodiscard]] bool acquire(std::chrono::duration<Rep, Period> timeout) {
    return lock_.acquire_for(timeout);
  }
  void release() { lock_.release(); }
  void lock() { acquire(); }
  void unlock() { release(); }
  bool try_lock() { return lock_.try_acquire(); }
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> timeout) {
    return lock_.acquire_for(timeout);
  }
  template <class C, class D>
  bool try_lock_until(std::chrono::time_point<C, D> tp) {
    return lock_.acquire(detail::steady_deadline(tp));
  }

  // Releases the lock (all recursion levels), blocks until notified, then
  // re-acquires it at the same depth. Returns true. Throws ProcessError if
  // the calling thread does not hold the lock, or if 192 threads wait
  // already.
  bool wait() { return wait_until_steady(detail::Clock::time_point::max()); }
  // As wait(), for at most `timeout`; returns false on timeout (the lock is
  // re-acquired either way; a notify() that reached this waiter before it
  // re-acquired the lock still counts: true).
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) {
    return wait_until_steady(detail::deadline_after(timeout));
  }
  // Waits until pred() is true (checked first, then after each wake-up);
  // returns pred()'s last result. Python: wait_for(predicate, timeout).
  template <class Pred>
  bool wait_for(Pred pred) {
    while (!pred()) wait();
    return true;
  }
  template <class Pred, class Rep, class Period>
  bool wait_for(Pred pred, std::chrono::duration<Rep, Period> timeout) {
    const auto deadline = detail::deadline_after(timeout);
    bool result = pred();
    while (!result) {
      if (detail::Clock::now() >= deadline) break;
      wait_until_steady(deadline);
      result = pred();
    }
    return result;
  }

  // Wakes up to `n` waiting threads (n >= 0), those that began waiting
  // first, skipping (and forgetting) waiters that died. Non-blocking.
  // Throws ProcessError if the calling thread does not hold the lock.
  void notify(int n = 1) {
    check_held("notify");
    if (n < 0) throw ProcessError("mproc: Condition.notify(): n must be >= 0");
    for (int woken = 0; woken < n;) {
      detail::WaiterSlot* slot = state_->oldest_waiting();
      if (!slot) break;
      slot->state.store(detail::WaiterSlot::kNotified, std::memory_order_release);
      // A waiter the kernel woke is alive; one that was not asleep is
      // either about to look at its record or dead.
      if (detail::futex_wake(slot->state, 1) == 0 && slot->owner_dead()) {
        slot->reap();
        continue;
      }
      ++woken;
    }
  }
  // Wakes every waiting thread. Same rules as notify().
  void notify_all() { notify(INT_MAX); }

  // The condition's own handle and its lock's; both are needed to rebuild
  // it in another process (from_handle).
  detail::ShmHandle handle() const noexcept { return block_->handle(detail::ShmKind::condition); }
  detail::ShmHandle lock_handle() const noexcept { return lock_.handle(); }
  static Condition from_handle(const detail::ShmHandle& h, const detail::ShmHandle& lock) {
    if (lock.kind != static_cast<std::uint16_t>(detail::ShmKind::lock) &&
        lock.kind != static_cast<std::uint16_t>(detail::ShmKind::rlock))
      throw ProcessError("mproc: invalid handle for Condition: its lock handle describes a " +
                         std::string(detail::shm_kind_name(static_cast<detail::ShmKind>(lock.kind))));
    return Condition(h, detail::LockCore::open(lock, static_cast<detail::ShmKind>(lock.kind)));
  }

 private:
  Condition(const detail::ShmHandle& h, detail::LockCore lock) : lock_(std::move(lock)) {
    auto opened =
        detail::open_object(h, detail::ShmKind::condition, detail::kObjectStateOffset + sizeof(detail::ConditionState));
    block_ = std::move(opened.first);
    state_ = detail::existing_state<detail::ConditionState>(*block_, detail::kObjectStateOffset);
  }
  void create() {
    block_ = detail::allocate_object(detail::ShmKind::condition, detail::kObjectStateOffset,
                                     sizeof(detail::ConditionState), alignof(detail::ConditionState));
    state_ = detail::construct_state<detail::ConditionState>(*block_, detail::kObjectStateOffset);
  }
  void check_held(const char* what) const {
    if (!lock_.held_by_caller())
      throw ProcessError(std::string("mproc: Condition.") + what +
                         "(): the condition's lock is not held by this thread");
  }

  bool wait_until_steady(detail::Clock::time_point deadline) {
    check_held("wait");
    detail::WaiterSlot* slot = state_->free_slot();
    if (!slot)
      throw ProcessError("mproc: Condition.wait(): too many waiting threads (at most " +
                         std::to_string(detail::ConditionState::kMaxWaiters) + ")");
    slot->claim(detail::WaiterSlot::kWaiting, state_->next_ticket++);
    const std::uint32_t saved = lock_.release_all();
    // Sleep on our own record until notify() marks it or the deadline
    // passes; signals and spurious wake-ups send us back to sleep.
    try {
      while (slot->state.load(std::memory_order_acquire) == detail::WaiterSlot::kWaiting &&
             detail::Clock::now() < deadline)
        detail::futex_wait(slot->state, detail::WaiterSlot::kWaiting, deadline);
    } catch (...) {
      lock_.reacquire(saved);
      slot->release();
      throw;
    }
    lock_.reacquire(saved);
    const bool notified = slot->state.load(std::memory_order_relaxed) == detail::WaiterSlot::kNotified;
    slot->release();
    return notified;
  }

  detail::LockCore lock_;
  std::shared_ptr<detail::ShmBlock> block_;
  detail::ConditionState* state_ = nullptr;
};

// A Condition crosses processes (Pipe, Queue, Pool arguments) as its own
// handle and its lock's: the receiver uses the same condition and lock.
template <>
struct serializer<Condition> {
  static constexpr std::size_t min_size = 2 * sizeof(detail::ShmHandle);
  static void write(Writer& w, const Condition& c) {
    detail::write_shm_handle(w, c.handle());
    detail::write_shm_handle(w, c.lock_handle());
  }
  static Condition read(Reader& r) {
    const auto h = detail::read_shm_handle(r, "mproc::Condition");
    const auto lock = detail::read_shm_handle(r, "mproc::Condition's lock");
    return Condition::from_handle(h, lock);
  }
};

}  // namespace mproc
