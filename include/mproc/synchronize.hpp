// mproc — Python's multiprocessing model for C++20.
// SPDX-License-Identifier: MIT
//
// Process-shared synchronization (Python: multiprocessing.synchronize):
// Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition, Barrier.
//
// Each object lives in shared memory and works between processes and
// between threads. Objects created before fork() are inherited (the child
// uses the same object); objects created later reach another process
// through a Pipe or Queue (they travel as a handle, never as bytes).
//
// Copies are handles: copying a Lock (or moving it: moves copy) gives
// another reference to the same lock, like a second Python reference.
// An object is never empty. The process that created an object owns its
// memory: its copies elsewhere keep the mapping alive, but the creator must
// outlive their use (as in Python); a handle received from a creator that
// exited fails with ProcessError, never a crash.
//
// Every blocking call has a timed variant taking a std::chrono duration.
// Locks are recoverable: when the thread holding a Lock or RLock dies (its
// process was killed, or it exited holding the lock), the next acquirer
// takes it over within about 20 ms of blocking, acquire() returns true as
// usual, and recovered() tells the new holder that the data it protects may
// be inconsistent. Locks satisfy Lockable/TimedLockable, so std::lock_guard,
// std::unique_lock and std::scoped_lock work.
#pragma once

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <type_traits>
#include <utility>

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/shm/handle_serialize.hpp>
#include <mproc/detail/shm/object.hpp>
#include <mproc/detail/shm/sync_state.hpp>
#include <mproc/errors.hpp>

namespace mproc {

class Condition;

namespace detail {

// A steady-clock deadline for a time_point of any clock.
template <class C, class D>
Clock::time_point steady_deadline(std::chrono::time_point<C, D> tp) {
  if constexpr (std::is_same_v<C, Clock>) {
    if (tp >= std::chrono::time_point<C, D>::max()) return Clock::time_point::max();
  }
  return deadline_after(tp - C::now());
}

// A State constructed at `offset` of `block` (fresh object) or found there
// (object received by handle).
template <class State>
State* construct_state(ShmBlock& block, std::size_t offset) {
  return ::new (static_cast<void*>(block.data() + offset)) State{};
}
template <class State>
State* existing_state(ShmBlock& block, std::size_t offset) {
  return std::launder(reinterpret_cast<State*>(block.data() + offset));
}

// The machinery shared by Lock, RLock and the lock of a Condition, Value or
// Array: a MutexState sub-object (header + state) at `offset` of a block.
class LockCore {
 public:
  static constexpr std::size_t kSize = kObjectStateOffset + sizeof(MutexState);

  // A new lock of `kind` (lock or rlock) in a block of its own.
  explicit LockCore(ShmKind kind)
      : LockCore(allocate_object(kind, kObjectStateOffset, sizeof(MutexState), alignof(MutexState)), 0, kind, true) {}

  // The lock sub-object at `offset` of `block`; `construct` writes a fresh one.
  LockCore(std::shared_ptr<ShmBlock> block, std::size_t offset, ShmKind kind, bool construct)
      : block_(std::move(block)), offset_(offset), kind_(kind) {
    if (construct) {
      write_header(block_->data() + offset, kind);
      state_ = construct_state<MutexState>(*block_, offset + kObjectStateOffset);
    } else {
      state_ = existing_state<MutexState>(*block_, offset + kObjectStateOffset);
    }
  }

  // The lock a received handle describes. Throws ProcessError.
  static LockCore open(const ShmHandle& h, ShmKind kind) {
    auto opened = open_object(h, kind, kSize);
    return LockCore(std::move(opened.first), 0, kind, false);
  }

  bool recursive() const noexcept { return kind_ == ShmKind::rlock; }
  const char* name() const noexcept { return shm_kind_name(kind_); }

  bool try_acquire() {
    const std::uint64_t me = current_identity();
    if (recursive() && state_->held_by(me)) return bump();
    if (!state_->try_lock_id(me)) return false;
    if (recursive()) state_->count = 1;
    return true;
  }

  bool acquire(Clock::time_point deadline) {
    const std::uint64_t me = current_identity();
    if (recursive() && state_->held_by(me)) return bump();
    if (!state_->lock_id(me, deadline)) return false;
    if (recursive()) state_->count = 1;
    return true;
  }

  template <class Rep, class Period>
  bool acquire_for(std::chrono::duration<Rep, Period> timeout) {
    if (timeout <= timeout.zero()) return try_acquire();
    return acquire(deadline_after(timeout));
  }

  void release() {
    const std::uint32_t owner = state_->owner();
    if (owner == 0) throw ProcessError(std::string("mproc: ") + name() + ".release(): release of an unheld " + name());
    if (recursive()) {
      if (!state_->held_by(current_identity()))
        throw ProcessError("mproc: RLock.release(): the RLock is held by another thread (tid " + std::to_string(owner) +
                           "); only its owner may release it");
      if (--state_->count > 0) return;
    }
    if ((state_->unlock() & MutexState::kOwnerMask) == 0)
      throw ProcessError(std::string("mproc: ") + name() + ".release(): release of an unheld " + name());
  }

  bool held_by_caller() const noexcept { return state_->held_by(current_identity()); }
  bool recovered() const noexcept { return state_->recovered(); }

  // For Condition::wait: release completely, then take back at the same depth.
  std::uint32_t release_all() {
    const std::uint32_t saved = recursive() ? state_->count : 1;
    if (recursive()) state_->count = 0;
    state_->unlock();
    return saved;
  }
  void reacquire(std::uint32_t saved) {
    state_->lock_id(current_identity(), Clock::time_point::max());
    if (recursive()) state_->count = saved;
  }

  ShmHandle handle() const noexcept { return block_->handle(kind_, offset_, kSize); }
  bool same_as(const LockCore& other) const noexcept { return state_ == other.state_; }

 private:
  bool bump() {
    if (state_->count == UINT32_MAX) throw ProcessError("mproc: RLock.acquire(): recursion too deep");
    ++state_->count;
    return true;
  }

  std::shared_ptr<ShmBlock> block_;
  std::size_t offset_ = 0;
  ShmKind kind_;
  MutexState* state_ = nullptr;
};

// What Lock and RLock have in common: acquire/release, the standard
// Lockable/TimedLockable names (std::lock_guard, std::unique_lock,
// std::scoped_lock), owner-death reporting and the handle.
class LockBase {
 public:
  // Blocks until acquired; returns true (as Python's acquire()). Takes the
  // lock over if its holder died (see recovered()). Thread- and process-safe.
  bool acquire() { return core_.acquire(Clock::time_point::max()); }
  // Blocks up to `timeout`; returns whether acquired. A timeout <= 0 tries
  // once, like try_acquire().
  template <class Rep, class Period>
  [[nodiscard]] bool acquire(std::chrono::duration<Rep, Period> timeout) {
    return core_.acquire_for(timeout);
  }
  // Acquires if free, without blocking (and without checking whether the
  // holder died). Returns whether acquired.
  [[nodiscard]] bool try_acquire() { return core_.try_acquire(); }
  // Releases (one level, for an RLock). Non-blocking. Throws ProcessError
  // naming the misuse if the lock is not held (for an RLock: by this thread).
  void release() { core_.release(); }
  // True while the lock is held by an acquirer that took it over from a
  // thread that died holding it: the data it guards may be half-updated.
  // Cleared by the release. Non-blocking.
  bool recovered() const noexcept { return core_.recovered(); }

  // Lockable / TimedLockable.
  void lock() { acquire(); }
  void unlock() { release(); }
  bool try_lock() { return core_.try_acquire(); }
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> timeout) {
    return core_.acquire_for(timeout);
  }
  template <class C, class D>
  bool try_lock_until(std::chrono::time_point<C, D> tp) {
    return core_.acquire(steady_deadline(tp));
  }

  // The handle that identifies this lock to another process (from_handle).
  ShmHandle handle() const noexcept { return core_.handle(); }

 protected:
  explicit LockBase(LockCore core) : core_(std::move(core)) {}
  ~LockBase() = default;
  LockBase(const LockBase&) = default;
  LockBase& operator=(const LockBase&) = default;

  LockCore core_;
};

}  // namespace detail

// A non-recursive process-shared lock (Python: multiprocessing.Lock).
// Any thread of any process may release it while it is held (as in Python);
// acquiring it twice from one thread blocks.
class Lock : public detail::LockBase {
 public:
  // Creates an unlocked lock in shared memory. Throws ProcessError.
  Lock() : LockBase(detail::LockCore(detail::ShmKind::lock)) {}
  Lock(const Lock&) = default;
  Lock& operator=(const Lock&) = default;

  // The lock a handle from another process describes. Throws ProcessError
  // if the handle is malformed or its creator is gone.
  static Lock from_handle(const detail::ShmHandle& h) { return Lock(detail::LockCore::open(h, detail::ShmKind::lock)); }

  // Whether two objects are the same shared lock.
  friend bool operator==(const Lock& a, const Lock& b) noexcept { return a.core_.same_as(b.core_); }

 private:
  friend class Condition;
  explicit Lock(detail::LockCore core) : LockBase(std::move(core)) {}
};

// A recursive process-shared lock (Python: multiprocessing.RLock): the
// owning thread may acquire it again and must release it as many times.
// Only the owner may release it.
class RLock : public detail::LockBase {
 public:
  // Creates an unlocked recursive lock in shared memory. Throws ProcessError.
  RLock() : LockBase(detail::LockCore(detail::ShmKind::rlock)) {}
  RLock(const RLock&) = default;
  RLock& operator=(const RLock&) = default;

  // The lock a handle from another process describes (also the lock of a
  // Value or Array sent alone). Throws ProcessError.
  static RLock from_handle(const detail::ShmHandle& h) {
    return RLock(detail::LockCore::open(h, detail::ShmKind::rlock));
  }

  friend bool operator==(const RLock& a, const RLock& b) noexcept { return a.core_.same_as(b.core_); }

 private:
  friend class Condition;
  template <class>
  friend class Value;
  template <class>
  friend class Array;
  explicit RLock(detail::LockCore core) : LockBase(std::move(core)) {}
};

// A process-shared counting semaphore (Python: multiprocessing.Semaphore).
// Not owned: any thread or process may release it.
class Semaphore {
 public:
  // Largest value a semaphore can hold (SEM_VALUE_MAX).
  static constexpr int kMaxValue = INT_MAX;

  // Creates a semaphore with `value` permits. Throws ProcessError if value < 0.
  explicit Semaphore(int value = 1) : Semaphore(detail::ShmKind::semaphore, value, kMaxValue) {}
  Semaphore(const Semaphore&) = default;
  Semaphore& operator=(const Semaphore&) = default;

  // Blocks until a permit is available and takes it; returns true.
  bool acquire() { return state_->acquire(detail::Clock::time_point::max()); }
  // Blocks up to `timeout`; returns whether a permit was taken.
  template <class Rep, class Period>
  [[nodiscard]] bool acquire(std::chrono::duration<Rep, Period> timeout) {
    if (timeout <= timeout.zero()) return state_->try_acquire();
    return state_->acquire(detail::deadline_after(timeout));
  }
  // Takes a permit if one is available, without blocking.
  [[nodiscard]] bool try_acquire() { return state_->try_acquire(); }
  // Returns `n` permits (n >= 1), waking up to n waiters. Non-blocking.
  // Throws ProcessError if n < 1 or the value would pass its bound (for a
  // BoundedSemaphore: its initial value).
  void release(int n = 1) {
    if (n < 1) throw ProcessError(std::string("mproc: ") + name() + ".release(): n must be one or more");
    if (!state_->release(static_cast<std::uint32_t>(n))) {
      if (kind_ == detail::ShmKind::bounded_semaphore)
        throw ProcessError("mproc: BoundedSemaphore.release(): released too many times (its value would exceed " +
                           std::to_string(state_->bound) + ")");
      throw ProcessError("mproc: Semaphore.release(): the value would exceed SEM_VALUE_MAX (" +
                         std::to_string(kMaxValue) + ")");
    }
  }
  // The current number of permits (a snapshot). Non-blocking.
  int get_value() const noexcept { return static_cast<int>(state_->value.load(std::memory_order_relaxed)); }

  // Lockable / TimedLockable, so std::lock_guard<Semaphore> works.
  void lock() { acquire(); }
  void unlock() { release(); }
  bool try_lock() { return state_->try_acquire(); }
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> timeout) {
    return acquire(timeout);
  }
  template <class C, class D>
  bool try_lock_until(std::chrono::time_point<C, D> tp) {
    return state_->acquire(detail::steady_deadline(tp));
  }

  detail::ShmHandle handle() const noexcept { return block_->handle(kind_); }
  static Semaphore from_handle(const detail::ShmHandle& h) { return Semaphore(h, detail::ShmKind::semaphore); }

 protected:
  Semaphore(detail::ShmKind kind, int value, int bound) : kind_(kind) {
    if (value < 0)
      throw ProcessError(std::string("mproc: ") + detail::shm_kind_name(kind) + "(" + std::to_string(value) +
                         "): the initial value must be >= 0");
    block_ = detail::allocate_object(kind, detail::kObjectStateOffset, sizeof(detail::SemaphoreState),
                                     alignof(detail::SemaphoreState));
    state_ = detail::construct_state<detail::SemaphoreState>(*block_, detail::kObjectStateOffset);
    state_->value.store(static_cast<std::uint32_t>(value), std::memory_order_relaxed);
    state_->bound = static_cast<std::uint32_t>(bound);
  }
  Semaphore(const detail::ShmHandle& h, detail::ShmKind kind) : kind_(kind) {
    auto opened = detail::open_object(h, kind, detail::kObjectStateOffset + sizeof(detail::SemaphoreState));
    block_ = std::move(opened.first);
    state_ = detail::existing_state<detail::SemaphoreState>(*block_, detail::kObjectStateOffset);
  }

 private:
  const char* name() const noexcept { return detail::shm_kind_name(kind_); }

  std::shared_ptr<detail::ShmBlock> block_;
  detail::SemaphoreState* state_ = nullptr;
  detail::ShmKind kind_;
};

// A semaphore whose value may never exceed its initial value (Python:
// multiprocessing.BoundedSemaphore): release() past it throws ProcessError.
class BoundedSemaphore : public Semaphore {
 public:
  explicit BoundedSemaphore(int value = 1) : Semaphore(detail::ShmKind::bounded_semaphore, value, value) {}
  static BoundedSemaphore from_handle(const detail::ShmHandle& h) { return BoundedSemaphore(h); }

 private:
  explicit BoundedSemaphore(const detail::ShmHandle& h) : Semaphore(h, detail::ShmKind::bounded_semaphore) {}
};

// A process-shared flag threads and processes can wait for (Python:
// multiprocessing.Event).
class Event {
 public:
  // Creates a cleared event. Throws ProcessError.
  Event() {
    block_ = detail::allocate_object(detail::ShmKind::event, detail::kObjectStateOffset, sizeof(detail::EventState),
                                     alignof(detail::EventState));
    state_ = detail::construct_state<detail::EventState>(*block_, detail::kObjectStateOffset);
  }
  Event(const Event&) = default;
  Event& operator=(const Event&) = default;

  // Sets the flag and wakes every waiter. Non-blocking.
  void set() { state_->set(); }
  // Clears the flag. Non-blocking.
  void clear() noexcept { state_->clear(); }
  // Whether the flag is set. Non-blocking.
  bool is_set() const noexcept { return state_->is_set(); }
  // Blocks until the flag is set; returns true.
  bool wait() { return state_->wait(detail::Clock::time_point::max()); }
  // Blocks up to `timeout`; returns whether the flag was set (a set()
  // during the wait counts even if clear() followed).
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) {
    return state_->wait(detail::deadline_after(timeout));
  }

  detail::ShmHandle handle() const noexcept { return block_->handle(detail::ShmKind::event); }
  static Event from_handle(const detail::ShmHandle& h) { return Event(h); }

 private:
  explicit Event(const detail::ShmHandle& h) {
    auto opened =
        detail::open_object(h, detail::ShmKind::event, detail::kObjectStateOffset + sizeof(detail::EventState));
    block_ = std::move(opened.first);
    state_ = detail::existing_state<detail::EventState>(*block_, detail::kObjectStateOffset);
  }

  std::shared_ptr<detail::ShmBlock> block_;
  detail::EventState* state_ = nullptr;
};

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

// A process-shared barrier for a fixed number of parties (Python:
// multiprocessing.Barrier, without the action callable). wait() returns a
// distinct index in [0, parties) per round. A wait that times out breaks
// the barrier: every waiter, present and future, gets BrokenBarrierError
// until reset(). So does a party that dies while waiting (its process is
// killed): it never counts as arrived; the others learn it within about
// 20 ms, and the last arriver checks every party before it lets the round
// pass. A party that dies holding the barrier's internal lock breaks it
// too; one that dies after its round passed, before it left, is forgotten
// when the next round starts.
class Barrier {
 public:
  // Creates a barrier for `parties` (1 to 65536) and an optional default
  // timeout for wait(). Throws ProcessError for another number of parties.
  explicit Barrier(std::size_t parties) : Barrier(parties, -1) {}
  template <class Rep, class Period>
  Barrier(std::size_t parties, std::chrono::duration<Rep, Period> timeout)
      : Barrier(parties, std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::max(timeout, std::chrono::duration<Rep, Period>::zero()))
                             .count()) {}
  Barrier(const Barrier&) = default;
  Barrier& operator=(const Barrier&) = default;

  // Blocks until all parties have called wait() (for at most the default
  // timeout, if any); returns this caller's index in [0, parties).
  // Throws BrokenBarrierError if the barrier is or becomes broken (a
  // timeout, or a party's death, breaks it). Thread- and process-safe.
  std::size_t wait() {
    const std::int64_t ns = state_->default_timeout_ns;
    return wait_until_steady(ns < 0 ? detail::Clock::time_point::max()
                                    : detail::deadline_after(std::chrono::nanoseconds(ns)));
  }
  // As wait(), for at most `timeout` (which also bounds the wait for the
  // previous round to end).
  template <class Rep, class Period>
  std::size_t wait(std::chrono::duration<Rep, Period> timeout) {
    return wait_until_steady(detail::deadline_after(timeout));
  }

  // Returns the barrier to its initial state; current waiters get
  // BrokenBarrierError. Blocks only on the internal lock.
  void reset() {
    Guard g(*this);
    auto& st = *state_;
    if (st.count > 0) {
      if (st.state == detail::BarrierState::kFilling || st.state == detail::BarrierState::kBroken)
        st.state = detail::BarrierState::kResetting;
      reap_dead();  // parties that died never leave
    } else {
      st.state = detail::BarrierState::kFilling;
    }
    broadcast();
  }
  // Breaks the barrier: current and future waiters get BrokenBarrierError
  // until reset(). Blocks only on the internal lock.
  void abort() {
    Guard g(*this);
    break_barrier(State::kAborted);
  }
  // Whether the barrier is broken. Blocks only on the internal lock.
  bool broken() const {
    Guard g(*this);
    return state_->state == detail::BarrierState::kBroken;
  }
  // Number of parties currently waiting. Blocks only on the internal lock.
  std::size_t n_waiting() const {
    Guard g(*this);
    return state_->state == detail::BarrierState::kFilling ? state_->count : 0;
  }
  // Number of parties needed to pass the barrier.
  std::size_t parties() const noexcept { return parties_; }

  detail::ShmHandle handle() const noexcept { return block_->handle(detail::ShmKind::barrier); }
  // The barrier a handle from another process describes. Throws
  // ProcessError if the handle is malformed or its creator is gone.
  static Barrier from_handle(const detail::ShmHandle& h) { return Barrier(h); }

 private:
  using State = detail::BarrierState;

  Barrier(std::size_t parties, std::int64_t timeout_ns) {
    if (parties < 1 || parties > State::kMaxParties)
      throw ProcessError("mproc: Barrier(" + std::to_string(parties) + "): parties must be between 1 and " +
                         std::to_string(State::kMaxParties));
    const auto n = static_cast<std::uint32_t>(parties);
    block_ = detail::allocate_object(detail::ShmKind::barrier, detail::kObjectStateOffset, State::size_for(n),
                                     alignof(State));
    state_ = detail::construct_state<State>(*block_, detail::kObjectStateOffset);
    for (std::uint32_t i = 0; i < n; ++i) ::new (static_cast<void*>(state_->slots() + i)) detail::WaiterSlot{};
    state_->parties = n;
    state_->default_timeout_ns = timeout_ns;
    parties_ = n;
  }
  explicit Barrier(const detail::ShmHandle& h) {
    auto opened = detail::open_object(h, detail::ShmKind::barrier, detail::kObjectStateOffset + sizeof(State));
    block_ = std::move(opened.first);
    state_ = detail::existing_state<State>(*block_, detail::kObjectStateOffset);
    const std::uint32_t n = state_->parties;
    if (n < 1 || n > State::kMaxParties)
      throw ProcessError("mproc: invalid handle for Barrier: it has " + std::to_string(n) + " parties");
    if (detail::kObjectStateOffset + State::size_for(n) > block_->length())
      throw ProcessError("mproc: invalid handle for Barrier: " + std::to_string(n) + " parties do not fit in its " +
                         std::to_string(block_->length()) + "-byte block");
    parties_ = n;
  }

  // Holds the internal lock; a recovered lock (a party died holding it)
  // breaks the barrier.
  class Guard {
   public:
    explicit Guard(const Barrier& b) : b_(b) { b_.lock_internal(); }
    ~Guard() { b_.state_->mutex.unlock(); }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    const Barrier& b_;
  };

  detail::WaiterSlot& slot(std::uint32_t i) const noexcept { return state_->slots()[i]; }

  void lock_internal() const {
    state_->mutex.lock_id(detail::current_identity(), detail::Clock::time_point::max());
    if (state_->mutex.recovered()) break_barrier(State::kPartyDied);
  }
  void broadcast() const {
    state_->seq.fetch_add(1, std::memory_order_release);
    detail::futex_wake(state_->seq);
  }
  // Marks the barrier broken for `reason`, forgets dead parties and wakes
  // everyone. Under the internal lock.
  void break_barrier(std::uint32_t reason) const {
    state_->state = State::kBroken;
    state_->reason = reason;
    reap_dead();
    broadcast();
  }
  // Whether a party of the round being filled, other than the caller (in
  // slot `mine`), died. Under the internal lock.
  bool party_died(std::uint32_t mine) const noexcept {
    const std::uint32_t n = std::min(state_->count, static_cast<std::uint32_t>(parties_));
    for (std::uint32_t i = 0; i < n; ++i)
      if (i != mine && slot(i).state.load(std::memory_order_relaxed) != detail::WaiterSlot::kFree &&
          slot(i).owner_dead())
        return true;
    return false;
  }
  [[noreturn]] void throw_broken(const char* what) const {
    throw BrokenBarrierError(std::string("mproc: Barrier.wait(): ") + what + state_->reason_text());
  }
  // Frees the slots of parties that died and recounts the others; a round
  // that only dead parties kept from ending ends. Not while filling (where
  // slot indices are arrival indices). Under the internal lock.
  void reap_dead() const {
    auto& st = *state_;
    std::uint32_t live = 0;
    for (std::uint32_t i = 0; i < parties_; ++i) {
      detail::WaiterSlot& s = slot(i);
      if (s.state.load(std::memory_order_relaxed) == detail::WaiterSlot::kFree) continue;
      if (s.owner_dead())
        s.reap();
      else
        ++live;
    }
    st.count = live;
    if (live == 0 && (st.state == State::kDraining || st.state == State::kResetting)) {
      st.state = State::kFilling;
      broadcast();
    }
  }
  // Releases the internal lock, sleeps until a broadcast, `deadline` or a
  // slice (to look for dead parties) is over, and re-locks. Signals only
  // end the sleep early.
  void sleep(detail::Clock::time_point deadline) const {
    const std::uint32_t seq = state_->seq.load(std::memory_order_relaxed);
    state_->mutex.unlock();
    const auto until = std::min(deadline, detail::Clock::now() + detail::kDeathCheckSlice);
    try {
      while (state_->seq.load(std::memory_order_acquire) == seq && detail::Clock::now() < until)
        detail::futex_wait(state_->seq, seq, until);
    } catch (...) {
      lock_internal();
      throw;
    }
    lock_internal();
  }
  // The party in slot `index` leaves (under the internal lock); the last
  // one out of a passed or reset round opens the next.
  void leave(std::uint32_t index) const {
    auto& st = *state_;
    detail::WaiterSlot& s = slot(index);
    if (!s.mine()) return;  // forgotten as dead meanwhile: it cannot be, but the count stays right
    s.release();
    if (st.count > 0) --st.count;
    if (st.count == 0 && (st.state == State::kResetting || st.state == State::kDraining)) {
      st.state = State::kFilling;
      broadcast();
    }
  }

  std::size_t wait_until_steady(detail::Clock::time_point deadline) {
    Guard g(*this);
    auto& st = *state_;
    // The previous round must drain (or a reset end) first; parties that
    // died before leaving are forgotten.
    while (st.state == State::kDraining || st.state == State::kResetting) {
      if (detail::Clock::now() >= deadline) {
        break_barrier(State::kTimedOut);
        throw BrokenBarrierError(
            "mproc: Barrier.wait(): timed out waiting for the previous round to end; the barrier is now broken");
      }
      sleep(deadline);
      if (st.state == State::kDraining || st.state == State::kResetting) reap_dead();
    }
    if (st.state == State::kBroken) throw_broken("the barrier is broken");
    const std::uint32_t index = st.count;
    if (index >= parties_ || slot(index).state.load(std::memory_order_relaxed) != detail::WaiterSlot::kFree) {
      break_barrier(State::kInconsistent);
      throw BrokenBarrierError("mproc: Barrier.wait(): the barrier's shared state is inconsistent; it is now broken");
    }
    slot(index).claim(detail::WaiterSlot::kWaiting, index);
    ++st.count;
    struct Leave {
      const Barrier& b;
      std::uint32_t index;
      ~Leave() { b.leave(index); }
    } leave{*this, index};
    if (index + 1 == parties_) {
      // The last arriver: a party that died while waiting did not arrive.
      if (party_died(index)) {
        break_barrier(State::kPartyDied);
        throw BrokenBarrierError("mproc: Barrier.wait(): a party died while waiting; the barrier is now broken");
      }
      if (auto hook = detail::SyncTesting::barrier_releasing) hook();
      st.state = State::kDraining;
      broadcast();
      return index;
    }
    while (st.state == State::kFilling) {
      if (detail::Clock::now() >= deadline) {
        break_barrier(State::kTimedOut);
        throw BrokenBarrierError("mproc: Barrier.wait(): timed out; the barrier is now broken");
      }
      sleep(deadline);
      if (st.state == State::kFilling && party_died(index)) {
        break_barrier(State::kPartyDied);
        throw BrokenBarrierError("mproc: Barrier.wait(): a party died while waiting; the barrier is now broken");
      }
    }
    if (st.state == State::kResetting) throw BrokenBarrierError("mproc: Barrier.wait(): the barrier was reset");
    if (st.state < 0) throw_broken("the barrier was broken");
    return index;
  }

  std::shared_ptr<detail::ShmBlock> block_;
  State* state_ = nullptr;
  std::size_t parties_ = 0;
};

// The synchronization objects cross processes (Pipe, Queue, Pool arguments)
// by handle: the receiver uses the same lock, semaphore, event or barrier.
template <>
struct serializer<Lock> : detail::handle_serializer<Lock> {};
template <>
struct serializer<RLock> : detail::handle_serializer<RLock> {};
template <>
struct serializer<Semaphore> : detail::handle_serializer<Semaphore> {};
template <>
struct serializer<BoundedSemaphore> : detail::handle_serializer<BoundedSemaphore> {};
template <>
struct serializer<Event> : detail::handle_serializer<Event> {};
template <>
struct serializer<Barrier> : detail::handle_serializer<Barrier> {};
// A Condition travels as its own handle and its lock's.
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
