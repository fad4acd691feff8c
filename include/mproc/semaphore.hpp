// mproc/semaphore.hpp — process-shared Semaphore and BoundedSemaphore
// (Python: multiprocessing.Semaphore, multiprocessing.BoundedSemaphore).
// Public layer, part of <mproc/synchronize.hpp>: handles over a
// SemaphoreState (detail/shm/sync_state.hpp) in a shared block
// (detail/shm/object.hpp). Copies are handles to the same semaphore.
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <climits>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/shm/handle_serialize.hpp>
#include <mproc/detail/shm/object.hpp>
#include <mproc/detail/shm/sync_object.hpp>
#include <mproc/detail/shm/sync_state.hpp>
#include <mproc/detail/util/lean_std.hpp>
#include <mproc/errors.hpp>

namespace mproc {

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
    if (n < 1) throw ValueError(std::string("mproc: ") + name() + ".release(): n must be one or more");
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
      throw ValueError(std::string("mproc: ") + detail::shm_kind_name(kind) + "(" + std::to_string(value) +
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

// Semaphores cross processes (Pipe, Queue, Pool arguments) by handle: the
// receiver uses the same semaphore.
template <>
struct serializer<Semaphore> : detail::handle_serializer<Semaphore> {};
template <>
struct serializer<BoundedSemaphore> : detail::handle_serializer<BoundedSemaphore> {};

}  // namespace mproc
