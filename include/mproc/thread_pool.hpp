// mproc — Python's multiprocessing model for C++20.
// SPDX-License-Identifier: MIT
//
// ThreadPool: the thread counterpart of Pool (Python:
// multiprocessing.pool.ThreadPool), plus submit/post/wait/parallel_for.
// Any callable; arguments are passed in memory, and a task's exception
// reaches the caller with its own type.
//
// Design: each worker owns a stealable queue (tasks posted from inside a
// task go there, LIFO for the owner, FIFO for thieves) and a private batch
// refilled from one shared injection queue (tasks posted from outside), so
// the shared lock is taken once per batch, not once per task. Tasks live in
// a 48-byte small buffer (no allocation for small callables). Completed
// tasks are counted per batch. Idle workers spin briefly, then sleep on a
// futex; a post wakes a sleeper only when one sleeps and no wake-up is
// already on its way. map/parallel_for split the range into chunks claimed
// with one atomic add each; the calling thread works on them too.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <future>
#include <iterator>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <ranges>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <mproc/async_result.hpp>
#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/os/futex.hpp>
#include <mproc/detail/pool/lazy_results.hpp>
#include <mproc/errors.hpp>
#include <mproc/system.hpp>

namespace mproc {

class ThreadPool;

namespace detail {

// The message of the exception a task dropped by ThreadPool::terminate() reports.
inline constexpr const char* thread_pool_terminated_message =
    "mproc: ThreadPool was terminated before the task ran";

inline std::exception_ptr thread_pool_terminated_error() {
  return std::make_exception_ptr(ProcessError(thread_pool_terminated_message));
}

// A type-erased, move-only `void()` callable with a 48-byte small buffer.
// A callable with a noexcept `on_cancel()` member is told when it is dropped
// unrun (ThreadPool::terminate()).
class Task {
 public:
  static constexpr std::size_t inline_size = 48;

  Task() noexcept = default;

  template <class F>
  requires(!std::is_same_v<std::remove_cvref_t<F>, Task>) explicit Task(F&& f) {
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
      sizeof(Fn) <= inline_size &&
      alignof(Fn) <= alignof(std::max_align_t) && std::is_nothrow_move_constructible_v<Fn>;

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
        std::invoke(*f);
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
                                  std::invoke(*f);
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

// A growable FIFO/LIFO ring of Tasks. Not thread-safe.
class TaskRing {
 public:
  TaskRing() : buf_(std::make_unique<Task[]>(16)), mask_(15) {}
  std::size_t size() const noexcept { return tail_ - head_; }
  bool empty() const noexcept { return tail_ == head_; }
  void push_back(Task&& t) {
    if (size() == mask_ + 1) grow();
    buf_[tail_++ & mask_] = std::move(t);
  }
  Task pop_front() noexcept { return std::move(buf_[head_++ & mask_]); }
  Task pop_back() noexcept { return std::move(buf_[--tail_ & mask_]); }

 private:
  void grow() {
    const std::size_t cap = (mask_ + 1) * 2;
    auto bigger = std::make_unique<Task[]>(cap);
    const std::size_t n = size();
    for (std::size_t i = 0; i < n; ++i) bigger[i] = std::move(buf_[(head_ + i) & mask_]);
    buf_ = std::move(bigger);
    mask_ = cap - 1;
    head_ = 0;
    tail_ = n;
  }

  std::unique_ptr<Task[]> buf_;
  std::size_t mask_;
  std::size_t head_ = 0;
  std::size_t tail_ = 0;
};

// A loop over [0, n) split into chunks of `grain` claimed with one atomic
// add each by any number of threads (the caller and runner tasks). The
// thread completing the last index finishes the job. After the first
// exception, remaining chunks are skipped.
class LoopJob {
 public:
  LoopJob(std::size_t n, std::size_t grain) noexcept : n_(n), grain_(grain) {}
  LoopJob(const LoopJob&) = delete;
  LoopJob& operator=(const LoopJob&) = delete;
  virtual ~LoopJob() = default;

  // Claims and runs chunks until none is left. Never throws.
  void work() noexcept {
    for (;;) {
      const std::size_t b = next_.fetch_add(grain_, std::memory_order_relaxed);
      if (b >= n_) return;
      const std::size_t e = std::min(n_, b + grain_);
      if (!failed_.load(std::memory_order_relaxed)) {
        try {
          run_range(b, e);
        } catch (...) {
          fail(std::current_exception());
        }
      }
      if (done_.fetch_add(e - b, std::memory_order_acq_rel) + (e - b) == n_) finish();
    }
  }

  // Whether every chunk has been run or skipped (acquire).
  bool finished() const noexcept { return finished_.load(std::memory_order_acquire) != 0; }

  // Blocks until finished() or `deadline`; returns finished(). For threads
  // outside the pool (pool threads help instead, see ThreadPool).
  bool sleep_until_finished(Clock::time_point deadline) {
    for (int i = 0; i < 2048; ++i) {
      if (finished()) return true;
      cpu_relax();
    }
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    while (finished_.load(std::memory_order_seq_cst) == 0) {
      if (futex_wait(finished_, 0, deadline) == FutexWait::timed_out) break;
    }
    sleepers_.fetch_sub(1, std::memory_order_relaxed);
    return finished();
  }

  // The first exception a chunk threw (read after finished()).
  std::exception_ptr error() const {
    std::lock_guard lock(error_mutex_);
    return error_;
  }

  // As error(), moving it out, so the exception's lifetime ends in the
  // caller's thread rather than with the last runner holding the job.
  std::exception_ptr take_error() {
    std::lock_guard lock(error_mutex_);
    return std::exchange(error_, nullptr);
  }

  // A runner task of this job was dropped by terminate().
  virtual void cancel() noexcept {}

 protected:
  virtual void run_range(std::size_t begin, std::size_t end) = 0;
  // Called once, by the thread that finishes the job.
  virtual void on_finish() noexcept {}

  void fail(std::exception_ptr e) noexcept {
    {
      std::lock_guard lock(error_mutex_);
      if (!error_) error_ = std::move(e);
    }
    failed_.store(true, std::memory_order_relaxed);
  }

 private:
  void finish() noexcept {
    on_finish();
    finished_.store(1, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) != 0) {
      try {
        futex_wake(finished_);
      } catch (...) {
      }
    }
  }

  const std::size_t n_;
  const std::size_t grain_;
  alignas(64) std::atomic<std::size_t> next_{0};
  alignas(64) std::atomic<std::size_t> done_{0};
  std::atomic<bool> failed_{false};
  std::atomic<std::uint32_t> finished_{0};
  std::atomic<int> sleepers_{0};
  mutable std::mutex error_mutex_;
  std::exception_ptr error_;
};

// A task running a LoopJob's chunks.
struct LoopRunner {
  std::shared_ptr<LoopJob> job;
  void operator()() const noexcept { job->work(); }
  void on_cancel() noexcept { job->cancel(); }
};

// Result slots of a map: the values themselves when default-constructible
// (bool excepted: vector<bool> elements share bytes), else optionals.
template <class R>
class MapOutput {
  static constexpr bool direct = std::is_default_constructible_v<R> && !std::is_same_v<R, bool>;
  using Slot = std::conditional_t<direct, R, std::optional<R>>;

 public:
  using Out = std::vector<R>;
  explicit MapOutput(std::size_t n) : slots_(n) {}
  template <class G>
  void set(std::size_t i, G&& produce) {
    if constexpr (direct) {
      slots_[i] = std::forward<G>(produce)();
    } else {
      slots_[i].emplace(std::forward<G>(produce)());
    }
  }
  Out take() {
    if constexpr (direct) {
      return std::move(slots_);
    } else {
      Out out;
      out.reserve(slots_.size());
      for (auto& s : slots_) out.push_back(std::move(*s));
      return out;
    }
  }

 private:
  std::vector<Slot> slots_;
};

template <>
class MapOutput<void> {
 public:
  using Out = void;
  explicit MapOutput(std::size_t) noexcept {}
  template <class G>
  void set(std::size_t, G&& produce) {
    std::forward<G>(produce)();
  }
  void take() noexcept {}
};

// Indexed access to a map's inputs by reference: random-access sized ranges
// directly, forward ranges through a vector of iterators, single-pass ranges
// through a vector of their values (moved or copied out once).
template <class Range>
class MapInputs {
 public:
  explicit MapInputs(Range& r) {
    if constexpr (direct) {
      first_ = std::ranges::begin(r);
      size_ = static_cast<std::size_t>(std::ranges::size(r));
    } else if constexpr (std::ranges::forward_range<Range>) {
      for (auto it = std::ranges::begin(r); it != std::ranges::end(r); ++it) store_.push_back(it);
      size_ = store_.size();
    } else {
      for (auto&& x : r) store_.push_back(std::forward<decltype(x)>(x));
      size_ = store_.size();
    }
  }
  std::size_t size() const noexcept { return size_; }
  decltype(auto) operator[](std::size_t i) const {
    if constexpr (direct) {
      return first_[static_cast<std::ranges::range_difference_t<Range>>(i)];
    } else if constexpr (std::ranges::forward_range<Range>) {
      return *store_[i];
    } else {
      return static_cast<const std::ranges::range_value_t<Range>&>(store_[i]);
    }
  }

 private:
  static constexpr bool direct =
      std::ranges::random_access_range<Range> && std::ranges::sized_range<Range>;
  using Store =
      std::conditional_t<direct, std::monostate,
                         std::conditional_t<std::ranges::forward_range<Range>,
                                            std::vector<std::ranges::iterator_t<Range>>,
                                            std::vector<std::ranges::range_value_t<Range>>>>;
  std::conditional_t<direct, std::ranges::iterator_t<Range>, std::monostate> first_{};
  Store store_{};
  std::size_t size_ = 0;
};

// f(x), or std::apply(f, x) for starmap.
template <bool Star, class F, class X>
decltype(auto) call_item(F& f, X&& x) {
  if constexpr (Star) {
    return std::apply(f, std::forward<X>(x));
  } else {
    return std::invoke(f, std::forward<X>(x));
  }
}

template <bool Star, class F, class X>
struct item_result;
template <class F, class X>
struct item_result<false, F, X> {
  using type = std::remove_cvref_t<std::invoke_result_t<F&, X>>;
};
template <class F, class X>
struct item_result<true, F, X> {
  using type = std::remove_cvref_t<decltype(std::apply(std::declval<F&>(), std::declval<X>()))>;
};
template <bool Star, class F, class X>
using item_result_t = typename item_result<Star, F, X>::type;

// One outcome of an imap item.
template <class R>
struct ImapOutcome {
  std::optional<R> value;
  std::exception_ptr error;
};

// Where imap tasks deliver their outcomes; the consumer takes them in input
// order (ordered) or arrival order. Thread-safe.
template <class R>
class ThreadImapSink {
 public:
  explicit ThreadImapSink(bool ordered) noexcept : ordered_(ordered) {}

  void put(std::size_t index, ImapOutcome<R> outcome) {
    {
      std::lock_guard lock(mutex);
      if (ordered_) {
        const std::size_t at = index - base_;
        if (slots_.size() <= at) slots_.resize(at + 1);
        slots_[at].emplace(std::move(outcome));
      } else {
        arrived_.push_back(std::move(outcome));
      }
    }
    cv.notify_all();
  }

  // Precondition: mutex held.
  bool available() const noexcept {
    return ordered_ ? (!slots_.empty() && slots_.front().has_value()) : !arrived_.empty();
  }

  // Precondition: mutex held and available().
  ImapOutcome<R> take() {
    ImapOutcome<R> out;
    if (ordered_) {
      out = std::move(*slots_.front());
      slots_.pop_front();
      ++base_;
    } else {
      out = std::move(arrived_.front());
      arrived_.pop_front();
    }
    return out;
  }

  std::mutex mutex;
  std::condition_variable cv;

 private:
  bool ordered_;
  std::size_t base_ = 0;
  std::deque<std::optional<ImapOutcome<R>>> slots_;
  std::deque<ImapOutcome<R>> arrived_;
};

// A task computing consecutive imap items [first, first + items.size()).
template <class R, class F, class V>
struct ImapTask {
  std::shared_ptr<F> f;
  std::shared_ptr<ThreadImapSink<R>> sink;
  std::vector<V> items;
  std::size_t first;

  void operator()() {
    for (std::size_t j = 0; j < items.size(); ++j) {
      ImapOutcome<R> out;
      try {
        out.value.emplace(std::invoke(*f, items[j]));
      } catch (...) {
        out.error = std::current_exception();
      }
      sink->put(first + j, std::move(out));
    }
  }
  void on_cancel() noexcept {
    try {
      for (std::size_t j = 0; j < items.size(); ++j)
        sink->put(first + j, ImapOutcome<R>{std::nullopt, thread_pool_terminated_error()});
    } catch (...) {
    }
  }
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

}  // namespace detail

template <class R>
class ThreadImapResult;

// A pool of worker threads (Python: multiprocessing.pool.ThreadPool).
//
// Tasks are any callables; arguments are decay-copied (moved when rvalues)
// like std::thread's; a task's exception reaches the caller unchanged
// (same type) through its future, AsyncResult, map, imap or wait().
// All methods are thread-safe. Waiting on the pool from one of its own
// tasks (wait, map, parallel_for, AsyncResult::get, imap) runs other
// queued tasks meanwhile instead of deadlocking; std::future::get() cannot
// do that, so inside tasks prefer apply_async over submit.
//
// After close(), calls from outside the pool throw ProcessError ("pool not
// running", Python's ValueError); the pool's own tasks may still add work
// until the pool has drained. After terminate(), every submission throws.
// The pool is neither copyable nor movable; its results (AsyncResult,
// ThreadImapResult) must not be waited on after it is destroyed.
class ThreadPool final : private detail::WaitHelper {
 public:
  // Starts `threads` workers (default: cpu_count()). Throws
  // std::invalid_argument if threads == 0, std::system_error if a thread
  // cannot be started.
  explicit ThreadPool(std::size_t threads = static_cast<std::size_t>(cpu_count())) {
    if (threads == 0)
      throw std::invalid_argument(
          "mproc: ThreadPool: the number of threads must be at least 1, not 0");
    workers_.reserve(threads);
    for (std::size_t i = 0; i < threads; ++i) workers_.push_back(std::make_unique<Worker>(i));
    try {
      for (auto& w : workers_) w->thread = std::thread([this, wp = w.get()] { worker_main(*wp); });
    } catch (...) {
      terminate();
      join_threads();
      throw;
    }
  }

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // close() + join(): every queued task still runs (use terminate() first
  // to drop them). Blocks.
  ~ThreadPool() {
    close();
    join_threads();
  }

  // Number of worker threads.
  std::size_t size() const noexcept { return workers_.size(); }

  // Tasks posted or submitted and not finished yet (a snapshot; includes
  // running tasks). Non-blocking.
  std::size_t pending() const noexcept {
    const auto p = pending_.load(std::memory_order_acquire);
    return p > 0 ? static_cast<std::size_t>(p) : 0;
  }

  // ------------------------------------------------------------ tasks

  // Runs f() on a worker, fire and forget. If f throws, the first such
  // exception is rethrown by the next wait(). Non-blocking. Throws
  // ProcessError if the pool is not running.
  template <class F>
  requires std::invocable < std::decay_t<F>
  & > void post(F&& f) { push(detail::Task(std::forward<F>(f)), false); }

  // Runs f(args...) on a worker; the future yields its result or rethrows
  // its exception (ProcessError if terminate() dropped it). Non-blocking.
  // Throws ProcessError if the pool is not running.
  template <class F, class... Args>
  requires std::invocable<std::decay_t<F>, std::decay_t<Args>...>
  auto submit(F&& f, Args&&... args) {
    using R = std::invoke_result_t<std::decay_t<F>, std::decay_t<Args>...>;
    std::promise<R> promise;
    auto future = promise.get_future();
    using Task = detail::CompletingTask<R, std::promise<R>, std::decay_t<F>,
                                        std::tuple<std::decay_t<Args>...>>;
    push(detail::Task(Task{std::move(promise), std::forward<F>(f), {std::forward<Args>(args)...}}),
         false);
    return future;
  }

  // Blocks until no task is pending: every task posted or submitted so far,
  // and the tasks they add, has finished (tasks other threads keep posting
  // meanwhile extend the wait). Then rethrows (and forgets) the first
  // exception a posted task threw since the last wait(). From inside one of
  // the pool's tasks, waits for all work except the tasks that are
  // themselves waiting, running queued tasks meanwhile.
  void wait() {
    if (Worker* w = current_worker()) {
      flush(*w);
      inside_waiters_.fetch_add(1, std::memory_order_seq_cst);
      waiters_.fetch_add(1, std::memory_order_seq_cst);
      struct Leave {
        ThreadPool& p;
        ~Leave() {
          p.waiters_.fetch_sub(1, std::memory_order_seq_cst);
          p.inside_waiters_.fetch_sub(1, std::memory_order_seq_cst);
        }
      } leave{*this};
      for (;;) {
        if (pending_.load(std::memory_order_seq_cst) <=
            inside_waiters_.load(std::memory_order_seq_cst))
          break;
        if (help_once(*w)) continue;
        const std::uint32_t seq = done_word_.load(std::memory_order_seq_cst);
        if (pending_.load(std::memory_order_seq_cst) <=
            inside_waiters_.load(std::memory_order_seq_cst))
          break;
        detail::futex_wait(done_word_, seq, detail::Clock::now() + std::chrono::milliseconds(1));
      }
    } else {
      waiters_.fetch_add(1, std::memory_order_seq_cst);
      for (;;) {
        const std::uint32_t seq = done_word_.load(std::memory_order_seq_cst);
        if (pending_.load(std::memory_order_seq_cst) <= 0) break;
        detail::futex_wait(done_word_, seq, detail::Clock::time_point::max());
      }
      waiters_.fetch_sub(1, std::memory_order_seq_cst);
    }
    std::exception_ptr error;
    {
      std::lock_guard lock(error_mutex_);
      error = std::exchange(first_error_, nullptr);
    }
    if (error) std::rethrow_exception(error);
  }

  // f(args...) on a worker, without blocking; the AsyncResult yields the
  // result or rethrows f's exception (ProcessError if terminate() dropped
  // it). Throws ProcessError if the pool is not running.
  template <class F, class... Args>
  requires std::invocable<std::decay_t<F>, std::decay_t<Args>...>
  auto apply_async(F&& f, Args&&... args) {
    using R = std::invoke_result_t<std::decay_t<F>, std::decay_t<Args>...>;
    auto state = std::make_shared<detail::ResultState<R>>(static_cast<detail::WaitHelper*>(this));
    using Task = detail::CompletingTask<R, std::shared_ptr<detail::ResultState<R>>, std::decay_t<F>,
                                        std::tuple<std::decay_t<Args>...>>;
    push(detail::Task(Task{state, std::forward<F>(f), {std::forward<Args>(args)...}}), false);
    return AsyncResult<R>(std::move(state));
  }

  // f(args...) on a worker; blocks for the result (Python: apply). Throws
  // what f throws, or ProcessError if the pool is not running.
  template <class F, class... Args>
  requires std::invocable<std::decay_t<F>, std::decay_t<Args>...>
  auto apply(F&& f, Args&&... args) {
    return apply_async(std::forward<F>(f), std::forward<Args>(args)...).get();
  }

  // ------------------------------------------------------------ maps

  // f(x) for every x of `inputs` (passed by reference, not copied), results
  // in input order (void if f returns void). Chunks of `chunksize` items
  // (0: automatic) are spread over the calling thread and size() - 1 workers.
  // Blocks. Rethrows the first exception f threw (remaining chunks are
  // skipped). Throws ProcessError if the pool is not running.
  template <class F, std::ranges::input_range Range>
  auto map(F&& f, Range&& inputs, std::size_t chunksize = 0) {
    return map_impl<false>(f, inputs, chunksize);
  }

  // map with each input a tuple unpacked into f's arguments (Python: starmap).
  template <class F, std::ranges::input_range Range>
  auto starmap(F&& f, Range&& inputs, std::size_t chunksize = 0) {
    return map_impl<true>(f, inputs, chunksize);
  }

  // map without blocking: copies the inputs (moves them from an rvalue
  // range) and f, returns at once. The AsyncResult yields the vector of
  // results or the first exception. Throws ProcessError if the pool is not
  // running.
  template <class F, std::ranges::input_range Range>
  auto map_async(F&& f, Range&& inputs, std::size_t chunksize = 0) {
    return map_async_impl<false>(std::forward<F>(f), std::forward<Range>(inputs), chunksize);
  }

  // starmap without blocking.
  template <class F, std::ranges::input_range Range>
  auto starmap_async(F&& f, Range&& inputs, std::size_t chunksize = 0) {
    return map_async_impl<true>(std::forward<F>(f), std::forward<Range>(inputs), chunksize);
  }

  // Lazy map: returns at once without computing anything; results come in
  // input order as they are iterated. Inputs are read and copied (moved from
  // an rvalue range) progressively, at most 2 × size() × chunksize items
  // ahead of the consumer. An lvalue range must outlive the result; an
  // rvalue range is moved into it. Throws ProcessError if the pool is not
  // running.
  template <class F, std::ranges::input_range Range>
  auto imap(F&& f, Range&& inputs, std::size_t chunksize = 1) {
    return imap_impl(std::forward<F>(f), std::forward<Range>(inputs), chunksize, true);
  }

  // As imap, but results come in completion order.
  template <class F, std::ranges::input_range Range>
  auto imap_unordered(F&& f, Range&& inputs, std::size_t chunksize = 1) {
    return imap_impl(std::forward<F>(f), std::forward<Range>(inputs), chunksize, false);
  }

  // f(i) for every i in [first, last), spread over the calling thread and
  // size() - 1 workers in chunks of an automatic size (8 per thread).
  // Blocks. Rethrows the first exception f threw (remaining chunks are
  // skipped). Throws ProcessError if the pool is not running.
  template <std::integral I, class F>
  requires std::invocable<F&, I>
  void parallel_for(I first, I last, F&& f) { parallel_for(first, last, 0, f); }

  // As parallel_for(first, last, f), with chunks of `grain` indices (0: automatic).
  template <std::integral I, class F>
  requires std::invocable<F&, I>
  void parallel_for(I first, I last, std::size_t grain, F&& f) {
    check_running();
    if (!(first < last)) return;
    using U = std::make_unsigned_t<I>;
    const auto n =
        static_cast<std::size_t>(static_cast<U>(static_cast<U>(last) - static_cast<U>(first)));
    auto body = [&](std::size_t b, std::size_t e) {
      for (std::size_t i = b; i < e; ++i)
        f(static_cast<I>(static_cast<U>(static_cast<U>(first) + static_cast<U>(i))));
    };
    run_loop(n, grain_for(n, grain), body);
  }

  // ------------------------------------------------------------ lifecycle

  // No more tasks may be submitted from outside the pool; queued ones still
  // run. Non-blocking; idempotent.
  void close() {
    {
      std::lock_guard lock(inj_mutex_);
      closed_.store(true, std::memory_order_seq_cst);
    }
    wake_workers(INT_MAX);
  }

  // Closes the pool and drops every queued task: their futures and
  // AsyncResults throw ProcessError ("terminated"), imap items too.
  // Running tasks finish. Non-blocking; follow with join().
  void terminate() {
    std::vector<detail::Task> dropped;
    {
      std::lock_guard lock(inj_mutex_);
      terminated_.store(true, std::memory_order_seq_cst);
      closed_.store(true, std::memory_order_seq_cst);
      while (!inj_.empty()) dropped.push_back(inj_.pop_front());
      inj_size_.store(0, std::memory_order_relaxed);
    }
    for (auto& w : workers_) {
      std::lock_guard lock(w->mutex);
      while (!w->local.empty()) dropped.push_back(w->local.pop_front());
      w->local_size.store(0, std::memory_order_relaxed);
    }
    for (auto& t : dropped) t.cancel();
    retire(static_cast<std::int64_t>(dropped.size()));
    wake_workers(INT_MAX);
  }

  // Blocks until every worker has exited, i.e. all work is done (after
  // close()) or the running tasks finished (after terminate()). Throws
  // ProcessError if the pool is still open (Python: ValueError) or if
  // called from one of the pool's own tasks.
  void join() {
    if (!closed_.load(std::memory_order_acquire))
      throw ProcessError(
          "mproc: ThreadPool::join: the pool is still running; call close() or terminate() first");
    if (current_worker() != nullptr)
      throw ProcessError(
          "mproc: ThreadPool::join called from one of the pool's own tasks (it would wait for "
          "itself)");
    join_threads();
  }

 private:
  template <class R>
  friend class ThreadImapResult;

  static constexpr std::size_t batch_capacity = 64;

  struct Worker {
    explicit Worker(std::size_t i) noexcept : index(i) {}
    // Shared: tasks posted from this worker's tasks, stealable.
    std::mutex mutex;
    detail::TaskRing local;
    std::atomic<std::size_t> local_size{0};
    // Owner only: a batch taken from the injection queue, and completions
    // not yet subtracted from pending_.
    alignas(64) std::array<detail::Task, batch_capacity> batch{};
    std::size_t head = 0;
    std::size_t tail = 0;
    std::int64_t done = 0;
    std::size_t index;
    std::thread thread;
  };

  struct Current {
    const ThreadPool* pool = nullptr;
    Worker* worker = nullptr;
  };
  static Current& current() noexcept {
    thread_local Current c;
    return c;
  }
  Worker* current_worker() const noexcept {
    const Current& c = current();
    return c.pool == this ? c.worker : nullptr;
  }

  void check_running() const {
    if (terminated_.load(std::memory_order_acquire))
      throw ProcessError("mproc: ThreadPool: pool not running (terminate() was called)");
    if (closed_.load(std::memory_order_acquire) && current_worker() == nullptr)
      throw ProcessError("mproc: ThreadPool: pool not running (close() was called)");
  }

  // Queues one task. `internal`: work of an operation already accepted
  // (imap top-ups, loop runners), allowed after close() until the workers
  // exit. Returns false only for internal pushes that were refused.
  bool push(detail::Task&& t, bool internal) {
    if (Worker* w = current_worker()) {
      if (terminated_.load(std::memory_order_acquire)) {
        if (internal) return false;
        check_running();
      }
      pending_.fetch_add(1, std::memory_order_relaxed);
      {
        std::lock_guard lock(w->mutex);
        w->local.push_back(std::move(t));
        w->local_size.store(w->local.size(), std::memory_order_seq_cst);
      }
    } else {
      std::unique_lock lock(inj_mutex_);
      if (closed_.load(std::memory_order_relaxed) &&
          (!internal || exiting_ || terminated_.load(std::memory_order_relaxed))) {
        lock.unlock();
        if (internal) return false;
        check_running();
      }
      pending_.fetch_add(1, std::memory_order_relaxed);
      inj_.push_back(std::move(t));
      inj_size_.store(inj_.size(), std::memory_order_seq_cst);
    }
    notify_one();
    return true;
  }

  // Queues `count` runners of `job` with one lock; returns how many were queued.
  std::size_t push_runners(const std::shared_ptr<detail::LoopJob>& job, std::size_t count) {
    if (count == 0) return 0;
    if (Worker* w = current_worker()) {
      if (terminated_.load(std::memory_order_acquire)) return 0;
      pending_.fetch_add(static_cast<std::int64_t>(count), std::memory_order_relaxed);
      std::lock_guard lock(w->mutex);
      for (std::size_t i = 0; i < count; ++i)
        w->local.push_back(detail::Task(detail::LoopRunner{job}));
      w->local_size.store(w->local.size(), std::memory_order_seq_cst);
    } else {
      std::lock_guard lock(inj_mutex_);
      if (exiting_ || terminated_.load(std::memory_order_relaxed)) return 0;
      pending_.fetch_add(static_cast<std::int64_t>(count), std::memory_order_relaxed);
      for (std::size_t i = 0; i < count; ++i) inj_.push_back(detail::Task(detail::LoopRunner{job}));
      inj_size_.store(inj_.size(), std::memory_order_seq_cst);
    }
    wake_workers(static_cast<int>(count));
    return count;
  }

  // Wakes one sleeping worker, unless none sleeps or a wake-up is on its way.
  void notify_one() {
    if (sleepers_.load(std::memory_order_seq_cst) == 0) return;
    if (wake_pending_.exchange(true, std::memory_order_seq_cst)) return;
    epoch_.fetch_add(1, std::memory_order_seq_cst);
    detail::futex_wake(epoch_, 1);
  }

  void wake_workers(int n) {
    if (sleepers_.load(std::memory_order_seq_cst) == 0) return;
    epoch_.fetch_add(1, std::memory_order_seq_cst);
    detail::futex_wake(epoch_, n);
  }

  bool has_work() const noexcept {
    if (inj_size_.load(std::memory_order_seq_cst) != 0) return true;
    for (const auto& w : workers_)
      if (w->local_size.load(std::memory_order_seq_cst) != 0) return true;
    return false;
  }

  // Takes the next task for worker `w` (owner thread): its batch, its own
  // queue (newest first), a new batch from the injection queue, or another
  // worker's queue (oldest first).
  bool try_get(Worker& w, detail::Task& out) {
    if (w.head < w.tail) {
      out = std::move(w.batch[w.head++]);
      return true;
    }
    if (w.local_size.load(std::memory_order_relaxed) != 0) {
      std::lock_guard lock(w.mutex);
      if (!w.local.empty()) {
        out = w.local.pop_back();
        w.local_size.store(w.local.size(), std::memory_order_relaxed);
        return true;
      }
    }
    if (inj_size_.load(std::memory_order_relaxed) != 0 && grab(w, out)) return true;
    const std::size_t n = workers_.size();
    for (std::size_t k = 1; k < n; ++k) {
      Worker& v = *workers_[(w.index + k) % n];
      if (v.local_size.load(std::memory_order_relaxed) == 0) continue;
      std::lock_guard lock(v.mutex);
      if (!v.local.empty()) {
        out = v.local.pop_front();
        v.local_size.store(v.local.size(), std::memory_order_relaxed);
        return true;
      }
    }
    return false;
  }

  // Moves up to a batch of tasks from the injection queue to `w`: about
  // half of a fair share, so long tasks are not hoarded by one worker.
  bool grab(Worker& w, detail::Task& out) {
    std::size_t left;
    {
      std::lock_guard lock(inj_mutex_);
      const std::size_t n = inj_.size();
      if (n == 0) return false;
      const std::size_t k = std::clamp<std::size_t>(n / (2 * workers_.size()), 1, batch_capacity);
      out = inj_.pop_front();
      for (std::size_t i = 1; i < k; ++i) w.batch[i - 1] = inj_.pop_front();
      w.head = 0;
      w.tail = k - 1;
      left = n - k;
      inj_size_.store(left, std::memory_order_relaxed);
    }
    if (left != 0) notify_one();
    return true;
  }

  void execute(Worker& w, detail::Task& t) {
    if (terminated_.load(std::memory_order_relaxed)) {
      t.cancel();
    } else {
      try {
        t.run();
      } catch (...) {
        std::lock_guard lock(error_mutex_);
        if (!first_error_) first_error_ = std::current_exception();
      }
    }
    ++w.done;
    if (w.head == w.tail) flush(w);
  }

  // Runs one task on the calling worker, if one is available.
  bool help_once(Worker& w) {
    detail::Task t;
    if (!try_get(w, t)) return false;
    execute(w, t);
    flush(w);
    return true;
  }

  void flush(Worker& w) {
    if (w.done == 0) return;
    retire(std::exchange(w.done, 0));
  }

  // Subtracts `count` finished (or dropped) tasks from pending_ and wakes
  // waiters that may now be satisfied.
  void retire(std::int64_t count) {
    if (count == 0) return;
    const std::int64_t left = pending_.fetch_sub(count, std::memory_order_seq_cst) - count;
    if (waiters_.load(std::memory_order_seq_cst) != 0 &&
        left <= inside_waiters_.load(std::memory_order_seq_cst)) {
      done_word_.fetch_add(1, std::memory_order_seq_cst);
      detail::futex_wake(done_word_);
    }
    if (left == 0 && closed_.load(std::memory_order_seq_cst)) wake_workers(INT_MAX);
  }

  // detail::WaitHelper: lets AsyncResult::get() run queued tasks when
  // called on one of this pool's workers.
  bool help_while_waiting() override {
    Worker* w = current_worker();
    return w != nullptr && help_once(*w);
  }

  // Waits on `cv` for `pred` until `deadline`; on a worker of this pool,
  // runs queued tasks meanwhile. Returns pred().
  template <class Pred>
  bool wait_helping(std::unique_lock<std::mutex>& lock, std::condition_variable& cv, Pred pred,
                    detail::Clock::time_point deadline) {
    Worker* w = current_worker();
    if (w == nullptr) {
      if (deadline == detail::Clock::time_point::max()) {
        cv.wait(lock, pred);
        return true;
      }
      return cv.wait_until(lock, deadline, pred);
    }
    for (;;) {
      if (pred()) return true;
      if (detail::Clock::now() >= deadline) return false;
      lock.unlock();
      const bool ran = help_once(*w);
      lock.lock();
      if (ran) continue;
      cv.wait_until(lock, std::min(deadline, detail::Clock::now() + std::chrono::milliseconds(1)),
                    pred);
    }
  }

  // Whether the worker should exit: closed and nothing left to do.
  bool should_exit() {
    if (!closed_.load(std::memory_order_seq_cst)) return false;
    {
      std::lock_guard lock(inj_mutex_);
      if (!exiting_) {
        if (pending_.load(std::memory_order_seq_cst) != 0) return false;
        exiting_ = true;
      }
    }
    wake_workers(INT_MAX);
    return true;
  }

  // Spins, then yields, for a short while; returns whether work appeared.
  bool idle_spin() const {
    const auto start = detail::Clock::now();
    for (unsigned i = 1;; ++i) {
      if (has_work()) return true;
      if ((i & 63) == 0) {
        const auto spent = detail::Clock::now() - start;
        if (spent > std::chrono::microseconds(200)) return false;
        if (spent > std::chrono::microseconds(20)) std::this_thread::yield();
      }
      detail::cpu_relax();
    }
  }

  void park() {
    wake_pending_.store(false, std::memory_order_seq_cst);
    const std::uint32_t seen = epoch_.load(std::memory_order_seq_cst);
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    if (!has_work() &&
        !(closed_.load(std::memory_order_seq_cst) && pending_.load(std::memory_order_seq_cst) == 0))
      detail::futex_wait(epoch_, seen, detail::Clock::time_point::max());
    sleepers_.fetch_sub(1, std::memory_order_seq_cst);
    wake_pending_.store(false, std::memory_order_seq_cst);
  }

  void worker_main(Worker& w) {
    current() = Current{this, &w};
    detail::Task t;
    for (;;) {
      if (try_get(w, t)) {
        execute(w, t);
        continue;
      }
      flush(w);
      if (idle_spin()) continue;
      if (should_exit()) break;
      park();
    }
  }

  void join_threads() {
    std::lock_guard lock(join_mutex_);
    for (auto& w : workers_)
      if (w->thread.joinable()) w->thread.join();
  }

  // Chunk size: the given one, or about 8 chunks per thread.
  std::size_t grain_for(std::size_t n, std::size_t grain) const noexcept {
    if (grain != 0) return grain;
    const std::size_t chunks = 8 * size();
    return std::max<std::size_t>(1, (n + chunks - 1) / chunks);
  }

  // Runs body(b, e) over [0, n) in chunks on the workers and the calling
  // thread; blocks until done; rethrows the first exception.
  template <class Body>
  void run_loop(std::size_t n, std::size_t grain, Body& body) {
    if (n <= grain) {
      body(std::size_t{0}, n);
      return;
    }
    struct Job final : detail::LoopJob {
      Job(std::size_t count, std::size_t g, Body* b) noexcept : LoopJob(count, g), body(b) {}
      void run_range(std::size_t b, std::size_t e) override { (*body)(b, e); }
      Body* body;
    };
    auto job = std::make_shared<Job>(n, grain, &body);
    const std::size_t chunks = (n + grain - 1) / grain;
    // The calling thread is one of size() threads at work (as in TBB and
    // OpenMP), so a loop never oversubscribes the cores the pool was sized for.
    push_runners(job, std::min(size() - 1, chunks - 1));
    job->work();
    wait_job(*job);
    if (auto error = job->take_error()) std::rethrow_exception(error);
  }

  void wait_job(detail::LoopJob& job) {
    if (job.finished()) return;
    Worker* w = current_worker();
    if (w == nullptr) {
      job.sleep_until_finished(detail::Clock::time_point::max());
      return;
    }
    flush(*w);
    while (!job.finished()) {
      if (help_once(*w)) continue;
      job.sleep_until_finished(detail::Clock::now() + std::chrono::milliseconds(1));
    }
  }

  template <bool Star, class F, class Range>
  auto map_impl(F& f, Range& inputs, std::size_t chunksize) {
    check_running();
    const detail::MapInputs<Range> in(inputs);
    using X = decltype(in[0]);
    using R = detail::item_result_t<Star, F, X>;
    const std::size_t n = in.size();
    detail::MapOutput<R> out(n);
    if (n != 0) {
      auto body = [&](std::size_t b, std::size_t e) {
        for (std::size_t i = b; i < e; ++i)
          out.set(i, [&]() -> decltype(auto) { return detail::call_item<Star>(f, in[i]); });
      };
      run_loop(n, grain_for(n, chunksize), body);
    }
    return out.take();
  }

  template <bool Star, class F, class Range>
  auto map_async_impl(F&& f_in, Range&& inputs, std::size_t chunksize) {
    check_running();
    using Fn = std::decay_t<F>;
    using V = std::ranges::range_value_t<Range>;
    using R = detail::item_result_t<Star, Fn, const V&>;
    using Out = typename detail::MapOutput<R>::Out;

    struct Job final : detail::LoopJob {
      Job(std::size_t count, std::size_t g, Fn fn, std::vector<V> in,
          std::shared_ptr<detail::ResultState<Out>> st)
          : LoopJob(count, g),
            f(std::move(fn)),
            inputs(std::move(in)),
            out(count),
            state(std::move(st)) {}
      void run_range(std::size_t b, std::size_t e) override {
        for (std::size_t i = b; i < e; ++i)
          out.set(i, [&]() -> decltype(auto) {
            return detail::call_item<Star>(f, std::as_const(inputs[i]));
          });
      }
      void on_finish() noexcept override {
        try {
          if (auto e = error()) {
            state->set_exception(e);
          } else if constexpr (std::is_void_v<Out>) {
            state->set_value();
          } else {
            state->set_value(out.take());
          }
        } catch (...) {
          state->set_exception(std::current_exception());
        }
      }
      void cancel() noexcept override {
        try {
          state->set_exception(detail::thread_pool_terminated_error());
        } catch (...) {
        }
      }
      Fn f;
      std::vector<V> inputs;
      detail::MapOutput<R> out;
      std::shared_ptr<detail::ResultState<Out>> state;
    };

    std::vector<V> copied;
    if constexpr (std::ranges::sized_range<Range>)
      copied.reserve(static_cast<std::size_t>(std::ranges::size(inputs)));
    if constexpr (std::is_lvalue_reference_v<Range>) {
      for (auto&& x : inputs) copied.emplace_back(x);
    } else {
      for (auto&& x : inputs) copied.emplace_back(std::move(x));
    }
    auto state = std::make_shared<detail::ResultState<Out>>(static_cast<detail::WaitHelper*>(this));
    const std::size_t n = copied.size();
    if (n == 0) {
      state->set_value();  // void, or an empty vector
      return AsyncResult<Out>(std::move(state));
    }
    const std::size_t grain = grain_for(n, chunksize);
    auto job = std::make_shared<Job>(n, grain, Fn(std::forward<F>(f_in)), std::move(copied), state);
    const std::size_t chunks = (n + grain - 1) / grain;
    if (push_runners(job, std::min(size(), chunks)) == 0) check_running();
    return AsyncResult<Out>(std::move(state));
  }

  template <class F, class Range>
  auto imap_impl(F&& f_in, Range&& inputs, std::size_t chunksize, bool ordered);

  std::vector<std::unique_ptr<Worker>> workers_;

  alignas(64) std::mutex inj_mutex_;
  detail::TaskRing inj_;
  bool exiting_ = false;  // guarded by inj_mutex_
  std::atomic<std::size_t> inj_size_{0};
  std::atomic<bool> closed_{false};
  std::atomic<bool> terminated_{false};

  alignas(64) std::atomic<std::int64_t> pending_{0};

  alignas(64) std::atomic<std::uint32_t> epoch_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> wake_pending_{false};

  alignas(64) std::atomic<std::uint32_t> done_word_{0};
  std::atomic<int> waiters_{0};
  std::atomic<std::int64_t> inside_waiters_{0};

  std::mutex error_mutex_;
  std::exception_ptr first_error_;
  std::mutex join_mutex_;
};

// The lazy result of ThreadPool::imap / imap_unordered: an input range of
// results (range-for) and Python's next(), next(timeout) (see
// detail::LazyResults). An item rethrows its task's exception, or
// ProcessError if the pool was terminated before it ran. Move-only; owned by
// one consuming thread. Must not outlive its pool. Destroying it abandons
// the results not yet taken (tasks already queued still run).
template <class R>
class ThreadImapResult : public detail::LazyResults<ThreadImapResult<R>, R> {
 public:
  ThreadImapResult(ThreadImapResult&&) noexcept = default;
  ThreadImapResult& operator=(ThreadImapResult&&) noexcept = default;
  ThreadImapResult(const ThreadImapResult&) = delete;
  ThreadImapResult& operator=(const ThreadImapResult&) = delete;
  ~ThreadImapResult() = default;

 private:
  friend class ThreadPool;
  friend class detail::LazyResults<ThreadImapResult<R>, R>;
  // Queues the next chunk, its first item numbered `first`; returns its
  // size, 0 at the end of the input.
  using Produce = std::function<std::size_t(std::size_t first)>;

  ThreadImapResult(ThreadPool* pool, std::shared_ptr<detail::ThreadImapSink<R>> sink,
                   Produce produce, std::size_t window)
      : pool_(pool), sink_(std::move(sink)), produce_(std::move(produce)), window_(window) {}

  void top_up() {
    while (!exhausted_ && submitted_ - consumed_ < window_) {
      const std::size_t n = produce_(submitted_);
      if (n == 0) {
        exhausted_ = true;
        break;
      }
      submitted_ += n;
    }
  }

  std::optional<R> next_until(detail::Clock::time_point deadline) {
    top_up();
    if (exhausted_ && consumed_ == submitted_) return std::nullopt;
    detail::ImapOutcome<R> outcome;
    {
      std::unique_lock lock(sink_->mutex);
      if (!pool_->wait_helping(
              lock, sink_->cv, [&] { return sink_->available(); }, deadline))
        throw TimeoutError("mproc: ThreadPool.imap: no result within the timeout");
      outcome = sink_->take();
    }
    ++consumed_;
    top_up();
    if (outcome.error) std::rethrow_exception(outcome.error);
    return std::move(outcome.value);
  }

  ThreadPool* pool_;
  std::shared_ptr<detail::ThreadImapSink<R>> sink_;
  Produce produce_;
  std::size_t window_;
  std::size_t submitted_ = 0;
  std::size_t consumed_ = 0;
  bool exhausted_ = false;
};

template <class F, class Range>
auto ThreadPool::imap_impl(F&& f_in, Range&& inputs, std::size_t chunksize, bool ordered) {
  check_running();
  using Fn = std::decay_t<F>;
  using V = std::ranges::range_value_t<Range>;
  using R = std::remove_cvref_t<std::invoke_result_t<Fn&, V&>>;
  static_assert(!std::is_void_v<R>,
                "mproc::ThreadPool::imap: f returns void; use map or apply_async");
  if (chunksize == 0) chunksize = 1;

  auto view = std::views::all(std::forward<Range>(inputs));
  using View = decltype(view);
  struct Source {
    View view;
    std::ranges::iterator_t<View> it;
  };
  auto source = std::make_shared<Source>(Source{std::move(view), {}});
  source->it = std::ranges::begin(source->view);
  auto f = std::make_shared<Fn>(std::forward<F>(f_in));
  auto sink = std::make_shared<detail::ThreadImapSink<R>>(ordered);
  auto produce = [this, source, f, sink, chunksize](std::size_t first) -> std::size_t {
    std::vector<V> items;
    for (; items.size() < chunksize && source->it != std::ranges::end(source->view); ++source->it)
      items.push_back(*source->it);
    if (items.empty()) return 0;
    const std::size_t n = items.size();
    if (!push(detail::Task(detail::ImapTask<R, Fn, V>{f, sink, std::move(items), first}), true))
      throw ProcessError(
          "mproc: ThreadPool.imap: the pool is no longer running (terminated or joined)");
    return n;
  };
  return ThreadImapResult<R>(this, std::move(sink), std::move(produce), 2 * size() * chunksize);
}

}  // namespace mproc
