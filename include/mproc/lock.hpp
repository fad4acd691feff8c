// mproc/lock.hpp — process-shared Lock and RLock (Python: multiprocessing.Lock,
// multiprocessing.RLock).
// Public layer, part of <mproc/synchronize.hpp>: thin handles over
// detail/shm/lock_core.hpp; Condition (condition.hpp) and Value/Array
// (sharedctypes.hpp) build on them. Copies are handles to the same lock.
// Locks are recoverable: when the thread holding one dies (its process was
// killed, or it exited holding the lock), the next acquirer takes it over
// within about 20 ms of blocking, acquire() returns true as usual, and
// recovered() tells the new holder that the data it protects may be
// inconsistent. Both satisfy Lockable/TimedLockable, so std::lock_guard,
// std::unique_lock and std::scoped_lock work.
// SPDX-License-Identifier: MIT
#pragma once

#include <utility>

#include <mproc/detail/shm/handle_serialize.hpp>
#include <mproc/detail/shm/lock_core.hpp>
#include <mproc/detail/shm/sync_object.hpp>
#include <mproc/detail/util/lean_std.hpp>

namespace mproc {

class Condition;

namespace detail {

struct LockAccess;

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
  // Whether some thread of some process holds the lock now (Python 3.14:
  // Lock.locked()); a snapshot that may change at once. Still true after
  // its holder died, until a waiter takes it over. Non-blocking.
  [[nodiscard]] bool locked() const noexcept { return core_.locked(); }

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
  friend struct detail::LockAccess;
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
  friend struct detail::LockAccess;
  explicit RLock(detail::LockCore core) : LockBase(std::move(core)) {}
};

namespace detail {

// Builds a Lock or RLock over a lock sub-object of another object's block
// (the embedded lock of a Value or Array).
struct LockAccess {
  template <class L>
  static L make(LockCore core) {
    return L(std::move(core));
  }
};

}  // namespace detail

// Locks cross processes (Pipe, Queue, Pool arguments) by handle: the
// receiver uses the same lock.
template <>
struct serializer<Lock> : detail::handle_serializer<Lock> {};
template <>
struct serializer<RLock> : detail::handle_serializer<RLock> {};

}  // namespace mproc
