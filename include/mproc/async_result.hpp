// AsyncResult<R>: the handle Pool::apply_async / map_async and the
// ThreadPool's equivalents return (Python: multiprocessing.pool.AsyncResult).
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <utility>

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/util/chrono.hpp>
#include <mproc/errors.hpp>

namespace mproc {

namespace detail {

// Lets an executor run queued work while one of its own threads waits on a
// result, so nested waits cannot deadlock. Implemented by ThreadPool.
class WaitHelper {
 public:
  // Runs one queued task if the calling thread belongs to the executor and
  // work is available; returns whether it ran something. Never blocks long.
  virtual bool help_while_waiting() = 0;

 protected:
  ~WaitHelper() = default;
};

// The state an AsyncResult shares with the executor producing its value.
// The first set_value/set_exception wins; later ones are ignored.
template <class R>
class ResultState {
 public:
  explicit ResultState(WaitHelper* helper = nullptr) noexcept : helper_(helper) {}

  template <class... Args>
  bool set_value(Args&&... args) {
    {
      std::lock_guard lock(mutex_);
      if (done_) return false;
      if constexpr (!std::is_void_v<R>) value_.emplace(std::forward<Args>(args)...);
      done_ = true;
    }
    cv_.notify_all();
    return true;
  }

  bool set_exception(std::exception_ptr error) {
    {
      std::lock_guard lock(mutex_);
      if (done_) return false;
      error_ = std::move(error);
      done_ = true;
    }
    cv_.notify_all();
    return true;
  }

  bool ready() const {
    std::lock_guard lock(mutex_);
    return done_;
  }

  // Blocks until ready or until `deadline`; returns whether ready.
  bool wait_until(Clock::time_point deadline) {
    for (;;) {
      std::unique_lock lock(mutex_);
      if (done_) return true;
      if (helper_ == nullptr) {
        if (deadline == Clock::time_point::max()) {
          cv_.wait(lock, [&] { return done_; });
          return true;
        }
        return cv_.wait_until(lock, deadline, [&] { return done_; });
      }
      lock.unlock();
      if (helper_->help_while_waiting()) continue;
      lock.lock();
      // Nothing to help with right now: sleep briefly, then look again, since
      // work may be queued behind this wait later.
      const auto slice = std::min(deadline, Clock::now() + std::chrono::milliseconds(1));
      if (cv_.wait_until(lock, slice, [&] { return done_; })) return true;
      if (Clock::now() >= deadline) return false;
    }
  }

  void wait() { wait_until(Clock::time_point::max()); }

  // Precondition: ready. Copies the value out (or moves it, for move-only R)
  // or rethrows the stored exception.
  R get() {
    std::lock_guard lock(mutex_);
    if (error_) std::rethrow_exception(error_);
    if constexpr (!std::is_void_v<R>) {
      if constexpr (std::is_copy_constructible_v<R>) {
        return *value_;
      } else {
        if (!value_) throw ProcessError("mproc: AsyncResult::get: the move-only value was already taken");
        R out = std::move(*value_);
        value_.reset();
        return out;
      }
    }
  }

  bool successful() const {
    std::lock_guard lock(mutex_);
    if (!done_) throw ProcessError("mproc: AsyncResult::successful: the result is not ready");
    return !error_;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  WaitHelper* helper_;
  bool done_ = false;
  std::exception_ptr error_;
  std::conditional_t<std::is_void_v<R>, bool, std::optional<R>> value_{};
};

}  // namespace detail

// The pending result of a task submitted with apply_async or map_async.
// Copies share one state. Thread-safe: any thread may wait or get.
template <class R>
class AsyncResult {
 public:
  // An empty handle; every method but valid() throws ProcessError.
  AsyncResult() = default;
  explicit AsyncResult(std::shared_ptr<detail::ResultState<R>> state) noexcept : state_(std::move(state)) {}

  // Whether this handle refers to a task. Non-blocking.
  bool valid() const noexcept { return state_ != nullptr; }

  // Whether the task has finished (value or exception). Non-blocking.
  bool ready() const { return state().ready(); }

  // Whether the task finished without an exception. Non-blocking.
  // Throws ProcessError if the task is not finished yet (Python: ValueError).
  bool successful() const { return state().successful(); }

  // Blocks until the task finishes.
  void wait() const { state().wait(); }

  // Blocks until the task finishes or `timeout` passes; returns ready().
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) const {
    return state().wait_until(detail::deadline_after(timeout));
  }

  // Blocks until the task finishes, then returns its value or rethrows its
  // exception (RemoteException<E> / RemoteError / WorkerCrashed for a
  // process pool; the original
  // exception for a thread pool). Repeatable for copyable R.
  R get() const {
    state().wait();
    return state().get();
  }

  // As get(), but throws TimeoutError if the task is not finished within `timeout`.
  template <class Rep, class Period>
  R get(std::chrono::duration<Rep, Period> timeout) const {
    if (!wait(timeout)) throw TimeoutError("mproc: AsyncResult::get timed out");
    return state().get();
  }

 private:
  detail::ResultState<R>& state() const {
    if (!state_) throw ProcessError("mproc: AsyncResult: empty handle (no task is associated)");
    return *state_;
  }

  std::shared_ptr<detail::ResultState<R>> state_;
};

}  // namespace mproc
