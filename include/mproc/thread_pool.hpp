// ThreadPool: the thread counterpart of Pool (Python:
// multiprocessing.pool.ThreadPool), plus submit/post/wait/parallel_for.
// Any callable; arguments are passed in memory, and a task's exception
// reaches the caller with its own type. Public header; its machinery lives
// in detail/threads/: the scheduler (worker threads, queues, work stealing,
// waits), the task types, the loop behind map/parallel_for, and imap's
// lazy side; the chunk-size policy is detail/pool/scheduling.hpp.
//
// Design in short: tasks live in a 48-byte small buffer (no allocation for
// small callables); tasks posted from outside go through one shared
// injection queue, taken a batch at a time, and tasks posted from inside a
// task go to the worker's own queue, where idle workers steal them; the
// queues' lock spins before it sleeps (spin_mutex.hpp); idle workers spin
// briefly, then sleep on a futex. map/parallel_for split the
// range into one contiguous segment of chunks per thread, each chunk
// claimed with one atomic add (loop_job.hpp); the calling thread works on
// them too.
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <concepts>
#include <cstddef>
#include <future>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <mproc/async_result.hpp>
#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/pool/lazy_results.hpp>
#include <mproc/detail/pool/scheduling.hpp>
#include <mproc/detail/threads/imap.hpp>
#include <mproc/detail/threads/map.hpp>
#include <mproc/detail/threads/scheduler.hpp>
#include <mproc/detail/threads/task.hpp>
#include <mproc/detail/util/lean_std.hpp>
#include <mproc/detail/util/type_name.hpp>
#include <mproc/errors.hpp>
#include <mproc/system.hpp>

namespace mproc {

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
// The pool is neither copyable nor movable. Its results may outlive it: the
// destructor runs every queued task and callback, so each AsyncResult is
// ready by then; a ThreadImapResult yields what was submitted (see there).
class ThreadPool final {
 public:
  // Starts `threads` workers (not given: cpu_count()). Throws ValueError for
  // 0 threads (or a count that is not a size, e.g. a negative int),
  // std::system_error if a thread cannot be started.
  explicit ThreadPool(std::optional<std::size_t> threads = std::nullopt)
      : scheduler_(detail::worker_count(threads, "ThreadPool")) {}

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // close() + join(): every queued task still runs (use terminate() first
  // to drop them). Blocks. Must not run in one of the pool's own tasks or
  // callbacks (one holding the pool's last owner): it cannot wait for
  // itself, and terminates the program with a message saying so.
  ~ThreadPool() = default;

  // Number of worker threads.
  [[nodiscard]] std::size_t size() const noexcept { return scheduler_.size(); }

  // Tasks posted or submitted and not finished yet (a snapshot; includes
  // running tasks). Non-blocking.
  [[nodiscard]] std::size_t pending() const noexcept { return scheduler_.pending(); }

  // ------------------------------------------------------------ tasks

  // Runs f() on a worker, fire and forget. If f throws, the first such
  // exception is rethrown by the next wait(). Non-blocking. Throws
  // ProcessError if the pool is not running.
  template <class F>
    requires std::invocable<std::decay_t<F>&>
  void post(F&& f) {
    scheduler_.push(detail::Task(std::forward<F>(f)), false);
  }

  // Runs f(args...) on a worker; the future yields its result or rethrows
  // its exception (ProcessError if terminate() dropped it). Non-blocking.
  // Throws ProcessError if the pool is not running.
  template <class F, class... Args>
    requires std::invocable<std::decay_t<F>, std::decay_t<Args>...>
  [[nodiscard]] auto submit(F&& f, Args&&... args) {
    using R = std::invoke_result_t<std::decay_t<F>, std::decay_t<Args>...>;
    std::promise<R> promise;
    auto future = promise.get_future();
    using Task = detail::CompletingTask<R, std::promise<R>, std::decay_t<F>, std::tuple<std::decay_t<Args>...>>;
    scheduler_.push(detail::Task(Task{std::move(promise), std::forward<F>(f), {std::forward<Args>(args)...}}), false);
    return future;
  }

  // Blocks until no task is pending: every task posted or submitted so far,
  // and the tasks they add, has finished (tasks other threads keep posting
  // meanwhile extend the wait). Then rethrows (and forgets) the first
  // exception a posted task threw since the last wait(). From inside one of
  // the pool's tasks, waits for all work except the tasks that are
  // themselves waiting, running queued tasks meanwhile.
  void wait() { scheduler_.wait(); }

  // f(args...) on a worker, without blocking; the AsyncResult yields the
  // result or rethrows f's exception (ProcessError if terminate() dropped
  // it). Throws ProcessError if the pool is not running.
  template <class F, class... Args>
    requires std::invocable<std::decay_t<F>, std::decay_t<Args>...>
  [[nodiscard]] auto apply_async(F&& f, Args&&... args) {
    return apply_async(Callbacks<std::nullptr_t, std::nullptr_t>{}, std::forward<F>(f), std::forward<Args>(args)...);
  }

  // As apply_async(f, args...), then cb.on_result(result) or
  // cb.on_error(exception) on the pool's callback thread (see Callbacks),
  // before the AsyncResult becomes ready (Python: callback=,
  // error_callback=). E.g. pool.apply_async(mp::callbacks(ok, err), f, x).
  template <class C, class E, class F, class... Args>
    requires std::invocable<std::decay_t<F>, std::decay_t<Args>...>
  [[nodiscard]] auto apply_async(Callbacks<C, E> cb, F&& f, Args&&... args) {
    using R = std::invoke_result_t<std::decay_t<F>, std::decay_t<Args>...>;
    auto state = std::make_shared<detail::ResultState<R>>(scheduler_.wait_helper());
    detail::attach_callbacks(*state, callbacks_, std::move(cb));
    state->allow_cancel();
    using Task = detail::CompletingTask<R, std::shared_ptr<detail::ResultState<R>>, std::decay_t<F>,
                                        std::tuple<std::decay_t<Args>...>>;
    scheduler_.push(detail::Task(Task{state, std::forward<F>(f), {std::forward<Args>(args)...}}), false);
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
  // skipped). Throws ProcessError if the pool is not running, ValueError for
  // a chunksize above PTRDIFF_MAX (a negative number converted; also in
  // starmap, the async forms and imap).
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
  // With `cb` (mp::callbacks(on_result, on_error)), on_result gets the
  // results, or on_error the exception, on the pool's callback thread (see
  // Callbacks) before the AsyncResult becomes ready.
  template <class F, std::ranges::input_range Range, class C = std::nullptr_t, class E = std::nullptr_t>
  [[nodiscard]] auto map_async(F&& f, Range&& inputs, std::size_t chunksize = 0, Callbacks<C, E> cb = {}) {
    return map_async_impl<false>(std::forward<F>(f), std::forward<Range>(inputs), chunksize, std::move(cb));
  }

  // starmap without blocking; `cb` as for map_async.
  template <class F, std::ranges::input_range Range, class C = std::nullptr_t, class E = std::nullptr_t>
  [[nodiscard]] auto starmap_async(F&& f, Range&& inputs, std::size_t chunksize = 0, Callbacks<C, E> cb = {}) {
    return map_async_impl<true>(std::forward<F>(f), std::forward<Range>(inputs), chunksize, std::move(cb));
  }

  // Lazy map: returns at once without computing anything; results come in
  // input order as they are iterated. Inputs are read and copied (moved from
  // an rvalue range) progressively, at most 2 × size() × chunksize items
  // ahead of the consumer. An lvalue range must outlive the result; an
  // rvalue range is moved into it. Throws ProcessError if the pool is not
  // running.
  template <class F, std::ranges::input_range Range>
  [[nodiscard]] auto imap(F&& f, Range&& inputs, std::size_t chunksize = 1) {
    return imap_impl(std::forward<F>(f), std::forward<Range>(inputs), chunksize, true);
  }

  // As imap, but results come in completion order.
  template <class F, std::ranges::input_range Range>
  [[nodiscard]] auto imap_unordered(F&& f, Range&& inputs, std::size_t chunksize = 1) {
    return imap_impl(std::forward<F>(f), std::forward<Range>(inputs), chunksize, false);
  }

  // f(i) for every i in [first, last), spread over the calling thread and
  // size() - 1 workers in chunks of an automatic size (8 per thread). The
  // bounds may have different integer types (parallel_for(0, v.size(), f)):
  // i has their common type. Blocks. Rethrows the first exception f threw
  // (remaining chunks are skipped). Throws ValueError if a bound does not fit
  // the common type (a negative first with an unsigned last), ProcessError if
  // the pool is not running.
  template <std::integral I, std::integral J, class F>
    requires std::invocable<F&, std::common_type_t<I, J>>
  void parallel_for(I first, J last, F&& f) {
    parallel_for(first, last, 0, f);
  }

  // As parallel_for(first, last, f), with chunks of `grain` indices (0:
  // automatic). Also throws ValueError for a grain above PTRDIFF_MAX.
  template <std::integral I, std::integral J, class F>
    requires std::invocable<F&, std::common_type_t<I, J>>
  void parallel_for(I first, J last, std::size_t grain, F&& f) {
    using C = std::common_type_t<I, J>;
    detail::check_chunksize(grain, "ThreadPool.parallel_for: grain");
    if (!std::in_range<C>(first) || !std::in_range<C>(last))
      throw ValueError("parallel_for: the bounds [" + std::to_string(first) + ", " + std::to_string(last) +
                       ") do not fit their common type " + std::string(detail::type_name_v<C>));
    loop(static_cast<C>(first), static_cast<C>(last), grain, f);
  }

  // ------------------------------------------------------------ lifecycle

  // No more tasks may be submitted from outside the pool; queued ones still
  // run. Non-blocking; idempotent.
  void close() { scheduler_.close(); }

  // Closes the pool and drops every queued task: their futures and
  // AsyncResults throw ProcessError ("terminated"), imap items too.
  // Running tasks finish. Non-blocking; follow with join().
  void terminate() { scheduler_.terminate(); }

  // Blocks until every worker has exited, i.e. all work is done (after
  // close()) or the running tasks finished (after terminate()), and every
  // callback has run. Throws
  // ProcessError if the pool is still open (Python: ValueError) or if
  // called from one of the pool's own tasks.
  void join() {
    scheduler_.join();
    callbacks_.drain();
  }

 private:
  template <class I, class F>
  void loop(I first, I last, std::size_t grain, F& f) {
    scheduler_.check_running();
    if (!(first < last)) return;
    using U = std::make_unsigned_t<I>;
    const auto n = static_cast<std::size_t>(static_cast<U>(static_cast<U>(last) - static_cast<U>(first)));
    auto body = [&](std::size_t b, std::size_t e) {
      for (std::size_t i = b; i < e; ++i) f(static_cast<I>(static_cast<U>(static_cast<U>(first) + static_cast<U>(i))));
    };
    scheduler_.run_loop(n, grain_for(n, grain), body);
  }

  // Chunk size: the given one, or about thread_chunks_per_worker chunks per thread.
  std::size_t grain_for(std::size_t n, std::size_t grain) const noexcept {
    if (grain != 0) return grain;
    return detail::auto_chunksize(n, size(), detail::thread_chunks_per_worker);
  }

  template <bool Star, class F, class Range>
  auto map_impl(F& f, Range& inputs, std::size_t chunksize) {
    scheduler_.check_running();
    detail::check_chunksize(chunksize, "ThreadPool: chunksize");
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
      scheduler_.run_loop(n, grain_for(n, chunksize), body);
    }
    return out.take();
  }

  template <bool Star, class F, class Range, class C, class E>
  auto map_async_impl(F&& f_in, Range&& inputs, std::size_t chunksize, Callbacks<C, E> cb) {
    scheduler_.check_running();
    detail::check_chunksize(chunksize, "ThreadPool: chunksize");
    using Fn = std::decay_t<F>;
    using V = std::ranges::range_value_t<Range>;
    using R = detail::item_result_t<Star, Fn, const V&>;
    using Job = detail::MapAsyncJob<Star, Fn, V, R>;
    using Out = typename Job::Out;

    std::vector<V> copied;
    if constexpr (std::ranges::sized_range<Range>) copied.reserve(static_cast<std::size_t>(std::ranges::size(inputs)));
    if constexpr (std::is_lvalue_reference_v<Range>) {
      for (auto&& x : inputs) copied.emplace_back(x);
    } else {
      for (auto&& x : inputs) copied.emplace_back(std::move(x));
    }
    auto state = std::make_shared<detail::ResultState<Out>>(scheduler_.wait_helper());
    detail::attach_callbacks(*state, callbacks_, std::move(cb));
    const std::size_t n = copied.size();
    if (n == 0) {
      state->set_value();  // void, or an empty vector
      return AsyncResult<Out>(std::move(state));
    }
    const std::size_t grain = grain_for(n, chunksize);
    auto job = std::make_shared<Job>(n, grain, size(), Fn(std::forward<F>(f_in)), std::move(copied), state);
    if (scheduler_.push_runners(job, job->threads()) == 0) scheduler_.check_running();
    return AsyncResult<Out>(std::move(state));
  }

  template <class F, class Range>
  auto imap_impl(F&& f_in, Range&& inputs, std::size_t chunksize, bool ordered);

  detail::CallbackThread callbacks_;  // destroyed after the scheduler: runs the callbacks of every result
  detail::ThreadScheduler scheduler_;
};

// The lazy result of ThreadPool::imap / imap_unordered: an input range of
// results (range-for) and Python's next(), next(timeout) (see
// detail::LazyResults). An item rethrows its task's exception, or
// ProcessError if the pool was terminated before it ran. Move-only; owned by
// one consuming thread. Once its pool is destroyed (which runs every queued
// task), it yields the results of the inputs already submitted, then throws
// ProcessError if inputs were left. Destroying it abandons the results not
// yet taken (tasks already queued still run).
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

  ThreadImapResult(detail::ThreadScheduler* scheduler, std::shared_ptr<detail::ThreadImapSink<R>> sink,
                   std::unique_ptr<detail::ImapProducer> producer, std::size_t window)
      : scheduler_(scheduler),
        pool_alive_(scheduler->liveness()),
        sink_(std::move(sink)),
        producer_(std::move(producer)),
        window_(window) {}

  bool pool_alive() const noexcept { return pool_alive_->load(std::memory_order_acquire); }

  void top_up() {
    if (!pool_alive()) return;  // nothing can be submitted any more
    while (!exhausted_ && submitted_ - consumed_ < window_) {
      const std::size_t n = input_error_.guard([&] { return producer_->produce(submitted_); });
      if (n == 0) {
        exhausted_ = true;
        break;
      }
      submitted_ += n;
    }
  }

  std::optional<R> next_until(detail::Clock::time_point deadline) {
    top_up();
    if (exhausted_ && consumed_ == submitted_) {
      input_error_.raise_if_held();
      return std::nullopt;
    }
    const bool alive = pool_alive();
    if (!alive && consumed_ == submitted_)
      throw ProcessError("mproc: ThreadPool.imap: the pool was destroyed before the remaining inputs were submitted");
    detail::ImapOutcome<R> outcome;
    {
      std::unique_lock lock(sink_->mutex);
      auto available = [&] { return sink_->available(); };
      // (A destroyed pool ran every submitted task: the results are there.)
      if (!(alive ? scheduler_->wait_helping(lock, sink_->cv, available, deadline) : available()))
        throw TimeoutError("mproc: ThreadPool.imap: no result within the timeout");
      outcome = sink_->take();
    }
    ++consumed_;
    top_up();
    if (outcome.error) std::rethrow_exception(outcome.error);
    return std::move(outcome.value);
  }

  detail::ThreadScheduler* scheduler_;  // used only while pool_alive()
  std::shared_ptr<const std::atomic<bool>> pool_alive_;
  std::shared_ptr<detail::ThreadImapSink<R>> sink_;
  std::unique_ptr<detail::ImapProducer> producer_;
  std::size_t window_;
  detail::DeferredInputError input_error_;
  std::size_t submitted_ = 0;
  std::size_t consumed_ = 0;
  bool exhausted_ = false;
};

template <class F, class Range>
auto ThreadPool::imap_impl(F&& f_in, Range&& inputs, std::size_t chunksize, bool ordered) {
  scheduler_.check_running();
  detail::check_chunksize(chunksize, "ThreadPool.imap: chunksize");
  using Fn = std::decay_t<F>;
  using V = std::ranges::range_value_t<Range>;
  using R = std::remove_cvref_t<std::invoke_result_t<Fn&, V&>>;
  static_assert(!std::is_void_v<R>, "mproc::ThreadPool::imap: f returns void; use map or apply_async");
  if (chunksize == 0) chunksize = 1;

  const std::optional<std::size_t> length = detail::input_length(inputs);
  using Feeder = detail::ImapFeeder<Range, Fn, V, R>;
  auto sink = std::make_shared<detail::ThreadImapSink<R>>(ordered);
  auto producer = std::make_unique<Feeder>(scheduler_, std::forward<Range>(inputs),
                                           std::make_shared<Fn>(std::forward<F>(f_in)), sink, chunksize);
  return detail::with_length_hint(
      ThreadImapResult<R>(&scheduler_, std::move(sink), std::move(producer), detail::imap_window(size(), chunksize)),
      length);
}

}  // namespace mproc
