// AsyncResult<R>: the handle Pool::apply_async / map_async and the
// ThreadPool's equivalents return (Python: multiprocessing.pool.AsyncResult).
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <mutex>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/pool/callback_thread.hpp>
#include <mproc/detail/util/lean_std.hpp>
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

// One waiter over many results (mp::wait, mp::as_completed): each result
// that becomes ready appends its index to `ready` and wakes the waiter.
struct CompletionWaiter {
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<std::size_t> ready;

  void notify(std::size_t index) {
    {
      std::lock_guard lock(mutex);
      ready.push_back(index);
    }
    cv.notify_all();
  }
};

// The state an AsyncResult shares with the executor producing its value.
// The first set_value/set_exception wins; later ones are ignored. With a
// finisher (callbacks), the outcome is stored first, the finisher runs on
// the pool's CallbackThread, and only then does the result become ready
// (as in Python, a callback has run before get() returns).
template <class R>
class ResultState : public std::enable_shared_from_this<ResultState<R>> {
 public:
  explicit ResultState(WaitHelper* helper = nullptr) noexcept : helper_(helper) {}

  // Runs finish(*this) on `thread` once the outcome is set, before the
  // result becomes ready. Call before the task is submitted; the state
  // must be owned by a shared_ptr and `thread` outlive every set.
  void finish_on(CallbackThread& thread, std::function<void(ResultState&)> finish) {
    finish_thread_ = &thread;
    finish_ = std::move(finish);
  }

  template <class... Args>
  bool set_value(Args&&... args) {
    {
      std::lock_guard lock(mutex_);
      if (set_) return false;
      if constexpr (!std::is_void_v<R>) value_.emplace(std::forward<Args>(args)...);
      set_ = true;
    }
    settled();
    return true;
  }

  bool set_exception(std::exception_ptr error) {
    {
      std::lock_guard lock(mutex_);
      if (set_) return false;
      error_ = std::move(error);
      set_ = true;
    }
    settled();
    return true;
  }

  // Cancellation of a task not yet started (apply_async on Pool and
  // ThreadPool): the executor calls allow_cancel() when it submits the task
  // and try_start() just before running (or sending) it; a false
  // try_start() means cancelled: drop the task. Thread-safe.
  void allow_cancel() noexcept { cancellable_ = true; }
  bool try_start() noexcept {
    int expected = 0;
    return phase_.compare_exchange_strong(expected, 1) || expected == 1;
  }
  bool cancel() {
    if (!cancellable_) return false;
    int expected = 0;
    if (!phase_.compare_exchange_strong(expected, 2)) return expected == 2;
    set_exception(std::make_exception_ptr(CancelledError()));
    return true;
  }
  bool cancelled() const noexcept { return phase_.load() == 2; }

  // For a finisher: the stored outcome (set, not yet ready).
  std::exception_ptr stored_error() const {
    std::lock_guard lock(mutex_);
    return error_;
  }
  template <class T = R>
    requires(!std::is_void_v<T>)
  const T& stored_value() const {
    std::lock_guard lock(mutex_);
    return *value_;
  }

  bool ready() const {
    std::lock_guard lock(mutex_);
    return done_;
  }

  // Reports `index` to `waiter` once ready (at once if ready now).
  void add_waiter(const std::shared_ptr<CompletionWaiter>& waiter, std::size_t index) {
    {
      std::lock_guard lock(mutex_);
      if (!done_) {
        waiters_.emplace_back(waiter, index);
        return;
      }
    }
    waiter->notify(index);
  }

  bool failed() const {
    std::lock_guard lock(mutex_);
    return done_ && error_ != nullptr;
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
  // The outcome is stored: ready now, or after the finisher ran.
  void settled() {
    if (finish_thread_ == nullptr) {
      publish();
      return;
    }
    auto self = this->shared_from_this();
    try {
      finish_thread_->post([self] {
        struct Publish {
          ResultState& s;
          ~Publish() { s.publish(); }  // even if the finisher throws
        } publish{*self};
        self->finish_(*self);
      });
    } catch (...) {  // the thread could not start: ready without the callback
      publish();
    }
  }

  void publish() {
    std::vector<std::pair<std::shared_ptr<CompletionWaiter>, std::size_t>> waiters;
    {
      std::lock_guard lock(mutex_);
      done_ = true;
      waiters.swap(waiters_);
    }
    cv_.notify_all();
    for (auto& [waiter, index] : waiters) waiter->notify(index);
  }

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  WaitHelper* helper_;
  CallbackThread* finish_thread_ = nullptr;
  std::function<void(ResultState&)> finish_;
  bool cancellable_ = false;    // set before the task is submitted
  std::atomic<int> phase_{0};  // 0 not started, 1 started, 2 cancelled
  bool set_ = false;           // the outcome is stored
  bool done_ = false;  // and the result is ready
  std::exception_ptr error_;
  std::conditional_t<std::is_void_v<R>, bool, std::optional<R>> value_{};
  std::vector<std::pair<std::shared_ptr<CompletionWaiter>, std::size_t>> waiters_;
};

}  // namespace detail

// Callbacks for a pool's apply_async / map_async / starmap_async (Python:
// callback=, error_callback=). on_result(const R&) (on_result() for void R)
// runs when the task succeeded, on_error(std::exception_ptr) when it failed;
// either may be nullptr (none). They run in the pool's process, on the
// pool's callback thread: one at a time, in completion order, before the
// AsyncResult becomes ready. They must not wait for results of their own
// pool nor destroy it; an exception they throw is reported on stderr and
// dropped. The pool's join() and destructor wait for them.
template <class OnResult, class OnError>
struct Callbacks {
  OnResult on_result{};
  OnError on_error{};
};

// Callbacks{on_result, on_error}: pool.apply_async(mp::callbacks(ok, err), f, x).
template <class OnResult, class OnError = std::nullptr_t>
Callbacks<OnResult, OnError> callbacks(OnResult on_result, OnError on_error = nullptr) {
  return {std::move(on_result), std::move(on_error)};
}

namespace detail {

template <class T>
inline constexpr bool is_callbacks_v = false;
template <class C, class E>
inline constexpr bool is_callbacks_v<Callbacks<C, E>> = true;

// Makes `state` run `cb` on `thread` when it completes.
template <class R, class C, class E>
void attach_callbacks(ResultState<R>& state, CallbackThread& thread, Callbacks<C, E> cb) {
  if constexpr (!std::is_null_pointer_v<C>) {
    if constexpr (std::is_void_v<R>)
      static_assert(std::is_invocable_v<C&>,
                    "mproc: callbacks(on_result, ...): on_result must be callable as on_result()");
    else
      static_assert(std::is_invocable_v<C&, const R&>,
                    "mproc: callbacks(on_result, ...): on_result must be callable with the result (const R&)");
  }
  if constexpr (!std::is_null_pointer_v<E>)
    static_assert(std::is_invocable_v<E&, std::exception_ptr>,
                  "mproc: callbacks(..., on_error): on_error must be callable with a std::exception_ptr");
  if constexpr (!std::is_null_pointer_v<C> || !std::is_null_pointer_v<E>)  // (none: no finisher, no cost)
    state.finish_on(thread, [cb = std::move(cb)](ResultState<R>& s) mutable {
      if (std::exception_ptr error = s.stored_error()) {
        if constexpr (!std::is_null_pointer_v<E>) cb.on_error(error);
      } else if constexpr (!std::is_null_pointer_v<C>) {
        if constexpr (std::is_void_v<R>)
          cb.on_result();
        else
          cb.on_result(s.stored_value());
      }
    });
}

}  // namespace detail

namespace detail {
struct AsyncResultAccess;
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

  // Cancels the task if it has not started yet (Python: Future.cancel):
  // returns true, and get() then throws CancelledError (callbacks get it
  // as the error). Returns false when the task is running or finished, or
  // when its pool cannot cancel it (map_async, mpi::Pool). Non-blocking;
  // thread-safe.
  bool cancel() const { return state().cancel(); }
  // Whether cancel() succeeded. Non-blocking.
  bool cancelled() const { return state().cancelled(); }

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

  friend struct detail::AsyncResultAccess;

  std::shared_ptr<detail::ResultState<R>> state_;
};

namespace detail {
struct AsyncResultAccess {
  template <class R>
  static ResultState<R>& state(const AsyncResult<R>& r) {
    return r.state();
  }
};
// The shared state behind `r` (mp::wait, mp::as_completed). Throws
// ProcessError for an empty handle.
template <class R>
ResultState<R>& state_of(const AsyncResult<R>& r) {
  return AsyncResultAccess::state(r);
}
}  // namespace detail

}  // namespace mproc
