// What ThreadPool queues: Task, a type-erased move-only `void()` callable
// with a small buffer, and CompletingTask, the task behind submit() and
// apply_async() that hands its outcome to a promise or an AsyncResult.
// Layer: detail/threads, the bottom of ThreadPool's machinery; builds on
// errors.hpp only. Used by the scheduler (scheduler.hpp), the loop and imap
// tasks, and thread_pool.hpp.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <cstring>
#include <exception>
#include <new>
#include <tuple>
#include <type_traits>
#include <utility>

#include <mproc/detail/util/lean_std.hpp>
#include <mproc/errors.hpp>

namespace mproc::detail {

// The message of the exception a task dropped by ThreadPool::terminate() reports.
inline constexpr const char* thread_pool_terminated_message = "mproc: ThreadPool was terminated before the task ran";

inline std::exception_ptr thread_pool_terminated_error() {
  return std::make_exception_ptr(ProcessError(thread_pool_terminated_message));
}

// std::invoke(f, args...) without <functional>, which alone costs
// libstdc++ users about a tenth of a ThreadPool TU's compile time: a plain
// call, and for member pointers std::apply, which the standard defines as
// INVOKE.
template <class F, class... Args>
decltype(auto) apply_invoke(F&& f, Args&&... args) {
  if constexpr (std::is_member_pointer_v<std::remove_cvref_t<F>>) {
    return std::apply(std::forward<F>(f), std::forward_as_tuple(std::forward<Args>(args)...));
  } else {
    return std::forward<F>(f)(std::forward<Args>(args)...);
  }
}

// A type-erased, move-only `void()` callable with a 48-byte small buffer.
// A callable with a noexcept `on_cancel()` member is told when it is dropped
// unrun (ThreadPool::terminate()).
class Task {
 public:
  static constexpr std::size_t inline_size = 48;

  Task() noexcept = default;

  template <class F>
    requires(!std::is_same_v<std::remove_cvref_t<F>, Task>)
  explicit Task(F&& f) {
    using Fn = std::decay_t<F>;
    if constexpr (fits<Fn>) {
      ::new (static_cast<void*>(buf_)) Fn(std::forward<F>(f));
      ops_ = &inline_ops<Fn>;
    } else {
      Fn* p = new Fn(std::forward<F>(f));
      std::memcpy(buf_, &p, sizeof p);
      ops_ = &heap_ops<Fn>;
    }
  }

  Task(Task&& other) noexcept { take(other); }
  Task& operator=(Task&& other) noexcept {
    if (this != &other) {
      reset();
      take(other);
    }
    return *this;
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  ~Task() { reset(); }

  explicit operator bool() const noexcept { return ops_ != nullptr; }

  // Invokes the callable once and destroys it, also when it throws.
  // Precondition: non-empty.
  void run() { std::exchange(ops_, nullptr)->run(buf_); }

  // Destroys the callable unrun, calling its on_cancel() first if it has
  // one. Precondition: non-empty.
  void cancel() noexcept { std::exchange(ops_, nullptr)->cancel(buf_); }

 private:
  struct Ops {
    void (*run)(void*);
    void (*cancel)(void*) noexcept;
    void (*relocate)(void* dst, void* src) noexcept;  // nullptr: memcpy
    void (*destroy)(void*) noexcept;                  // nullptr: trivial
  };

  template <class Fn>
  static constexpr bool fits =
      sizeof(Fn) <= inline_size && alignof(Fn) <= alignof(std::max_align_t) && std::is_nothrow_move_constructible_v<Fn>;

  template <class Fn>
  static Fn* inline_ptr(void* b) noexcept {
    return std::launder(static_cast<Fn*>(b));
  }
  template <class Fn>
  static Fn* heap_ptr(void* b) noexcept {
    Fn* p;
    std::memcpy(&p, b, sizeof p);
    return p;
  }
  template <class Fn>
  static void notify_cancel(Fn& f) noexcept {
    if constexpr (requires { f.on_cancel(); }) f.on_cancel();
  }

  template <class Fn>
  static constexpr Ops inline_ops{
      [](void* b) {
        Fn* f = inline_ptr<Fn>(b);
        struct Destroy {
          Fn* f;
          ~Destroy() { std::destroy_at(f); }
        } destroy{f};
        (*f)();
      },
      [](void* b) noexcept {
        Fn* f = inline_ptr<Fn>(b);
        notify_cancel(*f);
        std::destroy_at(f);
      },
      std::is_trivially_copyable_v<Fn> ? nullptr
                                        : +[](void* dst, void* src) noexcept {
                                            Fn* s = inline_ptr<Fn>(src);
                                            ::new (dst) Fn(std::move(*s));
                                            std::destroy_at(s);
                                          },
      std::is_trivially_destructible_v<Fn> ? nullptr : +[](void* b) noexcept { std::destroy_at(inline_ptr<Fn>(b)); }};

  template <class Fn>
  static constexpr Ops heap_ops{[](void* b) {
                                  std::unique_ptr<Fn> f(heap_ptr<Fn>(b));
                                  (*f)();
                                },
                                [](void* b) noexcept {
                                  std::unique_ptr<Fn> f(heap_ptr<Fn>(b));
                                  notify_cancel(*f);
                                },
                                nullptr, [](void* b) noexcept { delete heap_ptr<Fn>(b); }};

  void take(Task& other) noexcept {
    ops_ = other.ops_;
    if (ops_ == nullptr) return;
    if (ops_->relocate != nullptr) {
      ops_->relocate(buf_, other.buf_);
    } else {
      std::memcpy(buf_, other.buf_, inline_size);
    }
    other.ops_ = nullptr;
  }
  void reset() noexcept {
    if (ops_ == nullptr) return;
    if (ops_->destroy != nullptr) ops_->destroy(buf_);
    ops_ = nullptr;
  }

  alignas(std::max_align_t) unsigned char buf_[inline_size];
  const Ops* ops_ = nullptr;
};

// A task that completes `sink` with the outcome of f(args...): a
// std::promise<R> (ThreadPool::submit) or a shared_ptr<ResultState<R>>
// (ThreadPool::apply_async).
template <class R, class Sink, class F, class Args>
struct CompletingTask {
  Sink sink;
  F f;
  Args args;

  auto& target() noexcept {
    if constexpr (requires { *sink; })
      return *sink;
    else
      return sink;
  }
  void operator()() {
    if constexpr (requires { target().try_start(); })
      if (!target().try_start()) return;  // cancelled before it started (AsyncResult::cancel)
    try {
      if constexpr (std::is_void_v<R>) {
        std::apply(std::move(f), std::move(args));
        target().set_value();
      } else {
        target().set_value(std::apply(std::move(f), std::move(args)));
      }
    } catch (...) {
      target().set_exception(std::current_exception());
    }
  }
  void on_cancel() noexcept {
    try {
      target().set_exception(thread_pool_terminated_error());
    } catch (...) {
    }
  }
};

}  // namespace mproc::detail
