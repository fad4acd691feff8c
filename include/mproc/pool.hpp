// mproc::Pool — a pool of worker processes (Python: multiprocessing.Pool).
//
//   mp::Pool pool(4);
//   std::vector<double> means = pool.map(analyze_data, data_sets);
//
// Workers are forked processes. A worker that dies fails only the task it
// was running (WorkerCrashed) and is replaced; an exception thrown by a task
// reaches the caller typed (RemoteException<E> for a standard or registered
// E) or as RemoteError; no call hangs because a worker died.
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <mproc/async_result.hpp>
#include <mproc/detail/pool/engine.hpp>
#include <mproc/detail/pool/lazy_results.hpp>
#include <mproc/detail/pool/scheduling.hpp>
#include <mproc/detail/pool/sinks.hpp>
#include <mproc/detail/pool/submit.hpp>
#include <mproc/detail/util/lean_std.hpp>
#include <mproc/errors.hpp>
#include <mproc/serialize.hpp>
#include <mproc/system.hpp>

namespace mproc {

// Options of a process pool, set fluently:
//   mp::Pool pool(4, mp::PoolOptions().initializer(load_model, "model.bin").maxtasksperchild(100));
class PoolOptions {
 public:
  // Runs f(args...) once in each worker before it takes tasks (Python:
  // initializer/initargs); what f returns is ignored. f follows the
  // task-function rule (function pointer or captureless lambda); args are
  // serialized. If it throws, the pool breaks: pending and later calls fail
  // with RemoteError naming the exception.
  template <class F, class... Args>
  PoolOptions& initializer(F f, Args&&... args) {
    static_assert(!detail::is_bound_v<F>,
                  "mproc::PoolOptions::initializer: pass the function and its arguments, initializer(f, args...), "
                  "not mp::bind(f, args...) (the initializer's arguments are sent once per worker already)");
    if constexpr (!detail::is_bound_v<F>) {
      detail::check_pool_callable<F>();
      using Arg = typename detail::tuple_wire_args<F, std::tuple<std::remove_cvref_t<Args>...>>::type;
      detail::check_pool_argument<Arg>();
      config_ = detail::encode_initializer(reinterpret_cast<std::uint64_t>(&detail::init_trampoline<F, Arg>),
                                           detail::callable_bits(f),
                                           [&](Writer& w) { w.write(Arg(std::forward<Args>(args)...)); });
    }
    return *this;
  }

  // A worker exits after this many tasks (chunks) and a fresh one replaces
  // it (Python: maxtasksperchild). Not set (default): workers live as long
  // as the pool. Throws ValueError for 0.
  PoolOptions& maxtasksperchild(std::size_t n) {
    if (n == 0)
      throw ValueError("mproc: PoolOptions.maxtasksperchild: must be at least 1, not 0 (leave it unset for none)");
    maxtasks_ = n;
    return *this;
  }

  // How workers are started; default: get_start_method() when the pool is created.
  PoolOptions& start_method(StartMethod method) {
    method_ = method;
    method_set_ = true;
    return *this;
  }

 private:
  friend class Pool;
  std::vector<std::byte> config_;
  std::size_t maxtasks_ = 0;  // 0: not set
  // Not a std::optional: GCC 12 with sanitizers warns maybe-uninitialized on
  // a defaulted optional enum copied out of PoolOptions.
  StartMethod method_ = StartMethod::automatic;
  bool method_set_ = false;
};

// The lazily computed results of imap / imap_unordered: an input range whose
// iterator yields each task's value (in input order for imap, in completion
// order for imap_unordered) and rethrows an item's failure (the task's
// exception, WorkerCrashed) when that item is reached. Inputs are encoded and submitted
// progressively as results are consumed. Use from one thread at a time.
template <class R>
class ImapResult : public detail::LazyResults<ImapResult<R>, R> {
 public:
  ImapResult(ImapResult&&) noexcept = default;
  ImapResult& operator=(ImapResult&&) noexcept = default;
  ImapResult(const ImapResult&) = delete;
  ImapResult& operator=(const ImapResult&) = delete;
  // Abandons the remaining results: undispatched tasks are dropped.
  ~ImapResult() {
    if (sink_) sink_->abandon();
  }

 private:
  friend class Pool;
  friend class detail::LazyResults<ImapResult<R>, R>;
  // Submits one chunk; returns its encoded bytes per item, 0 at the end of the input.
  using Produce = std::function<std::size_t(detail::ImapSink<R>&)>;

  ImapResult(std::shared_ptr<detail::ImapSink<R>> sink, Produce produce, detail::Window window)
      : sink_(std::move(sink)), produce_(std::move(produce)), window_(window) {}

  void top_up() {
    while (!exhausted_) {
      const std::size_t out = sink_->outstanding();
      if (window_.full(out, out * bytes_per_item_)) break;
      const std::size_t bytes = input_error_.guard([&] { return produce_(*sink_); });
      if (bytes == 0) {
        exhausted_ = true;
        break;
      }
      bytes_per_item_ = std::max(bytes_per_item_, bytes);
    }
  }

  std::optional<R> next_until(detail::Clock::time_point deadline) {
    top_up();
    if (exhausted_ && sink_->outstanding() == 0) {
      input_error_.raise_if_held();
      return std::nullopt;
    }
    auto outcome = sink_->take_until(deadline);
    if (!outcome) throw TimeoutError("mproc: Pool.imap: no result within the timeout");
    top_up();
    if (outcome->error) std::rethrow_exception(outcome->error);
    return std::move(outcome->value);
  }

  std::shared_ptr<detail::ImapSink<R>> sink_;
  Produce produce_;
  detail::Window window_;
  detail::DeferredInputError input_error_;
  std::size_t bytes_per_item_ = 0;
  bool exhausted_ = false;
};

// A pool of worker processes (Python: multiprocessing.Pool).
//
// Task functions are function pointers or captureless lambdas (they exist in
// every worker, which shares the program image); a capturing lambda is a
// compile error. Arguments and results cross through mproc's serialization
// (serialize.hpp); Value/Array/SharedMemory arguments arrive as the same
// shared memory. All methods are thread-safe.
class Pool {
 public:
  // Starts `processes` workers (not given: cpu_count()). Blocks only to fork
  // the pool's zygote. Throws ValueError for 0 workers (or a count that is
  // not a size, e.g. a negative int), ProcessError if the zygote cannot start.
  explicit Pool(std::optional<std::size_t> processes = std::nullopt, PoolOptions options = {}) {
    detail::EngineConfig cfg;
    cfg.processes = static_cast<int>(detail::worker_count(processes, "Pool"));
    cfg.method = options.method_set_ ? options.method_ : get_start_method();
    cfg.maxtasksperchild = options.maxtasks_;
    cfg.initializer = std::move(options.config_);
    engine_ = std::make_shared<detail::PoolEngine>(std::move(cfg));
  }

  Pool(Pool&&) noexcept = default;
  Pool& operator=(Pool&&) = delete;
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  // close() + join(): every submitted task runs to completion (use
  // terminate() to abandon work). Blocks. Must not run in one of the pool's
  // callbacks (one holding the pool's last owner): it cannot wait for its
  // own callback thread, and terminates the program with a message saying so.
  ~Pool() {
    if (!engine_) return;
    try {
      engine_->close();
      engine_->join();
    } catch (...) {
    }
    callbacks_->stop();
  }

  // Number of worker processes. Non-blocking; thread-safe.
  [[nodiscard]] std::size_t size() const noexcept { return static_cast<std::size_t>(engine_->processes()); }

  // f applied to every input, results in input order (Python: Pool.map).
  // Inputs are sent in chunks of `chunksize` (0: Python's default,
  // ceil(n / (4 * processes)); more than n: one chunk). Blocks. Throws the
  // first failure: the task's exception (RemoteException<E> or RemoteError),
  // WorkerCrashed (the process running a chunk died), ProcessError; before
  // anything runs, ValueError for a chunksize above PTRDIFF_MAX (a negative
  // number converted). The same holds for starmap, the async forms and imap.
  template <class F, std::ranges::input_range Range>
  auto map(F f, Range&& inputs, std::size_t chunksize = 0) {
    return map_impl<false>(f, std::forward<Range>(inputs), chunksize);
  }

  // map with each input a tuple unpacked into f's arguments (Python: starmap).
  template <class F, std::ranges::input_range Range>
  auto starmap(F f, Range&& inputs, std::size_t chunksize = 0) {
    return map_impl<true>(f, std::forward<Range>(inputs), chunksize);
  }

  // map without blocking: encodes every input now, returns at once. With
  // `cb` (mp::callbacks(on_result, on_error)), on_result gets the vector of
  // results, or on_error the failure, on the pool's callback thread (see
  // Callbacks) before the AsyncResult becomes ready.
  template <class F, std::ranges::input_range Range, class C = std::nullptr_t, class E = std::nullptr_t>
  [[nodiscard]] auto map_async(F f, Range&& inputs, std::size_t chunksize = 0, Callbacks<C, E> cb = {}) {
    return map_async_impl<false>(f, std::forward<Range>(inputs), chunksize, std::move(cb));
  }

  // starmap without blocking; `cb` as for map_async.
  template <class F, std::ranges::input_range Range, class C = std::nullptr_t, class E = std::nullptr_t>
  [[nodiscard]] auto starmap_async(F f, Range&& inputs, std::size_t chunksize = 0, Callbacks<C, E> cb = {}) {
    return map_async_impl<true>(f, std::forward<Range>(inputs), chunksize, std::move(cb));
  }

  // Lazy map: returns at once; results come in input order as they are
  // iterated; inputs are consumed progressively (a bounded window ahead of
  // the consumer). An lvalue range must outlive the returned ImapResult; an
  // rvalue range is moved into it.
  template <class F, std::ranges::input_range Range>
  [[nodiscard]] auto imap(F f, Range&& inputs, std::size_t chunksize = 1) {
    return imap_impl(f, std::forward<Range>(inputs), chunksize, true);
  }

  // As imap, but results come in completion order.
  template <class F, std::ranges::input_range Range>
  [[nodiscard]] auto imap_unordered(F f, Range&& inputs, std::size_t chunksize = 1) {
    return imap_impl(f, std::forward<Range>(inputs), chunksize, false);
  }

  // f(args...) in a worker, without blocking. Throws ProcessError if the
  // pool is closed; the task's own failure is reported by the AsyncResult.
  template <class F, class... Args>
    requires(!detail::is_callbacks_v<F>)
  [[nodiscard]] auto apply_async(F f, Args&&... args) {
    return apply_async(Callbacks<std::nullptr_t, std::nullptr_t>{}, std::move(f), std::forward<Args>(args)...);
  }

  // As apply_async(f, args...), then cb.on_result(result) or
  // cb.on_error(failure) on the pool's callback thread (see Callbacks),
  // before the AsyncResult becomes ready (Python: callback=,
  // error_callback=). E.g. pool.apply_async(mp::callbacks(ok, err), f, x).
  template <class C, class E, class F, class... Args>
  [[nodiscard]] auto apply_async(Callbacks<C, E> cb, F f, Args&&... args) {
    detail::check_pool_callable<F>();
    using Arg = typename detail::tuple_wire_args<F, std::tuple<std::remove_cvref_t<Args>...>>::type;
    detail::check_pool_argument<Arg>();
    using R = detail::pool_result_t<F, Arg, true>;
    detail::check_pool_result<R>();
    auto state = std::make_shared<detail::ResultState<R>>();
    detail::attach_callbacks(*state, *callbacks_, std::move(cb));
    state->allow_cancel();
    detail::PoolTask task;
    task.sink = std::make_shared<detail::ApplySink<R>>(state);
    const Arg packed(std::forward<Args>(args)...);
    detail::encode_call<F, Arg, true>(task, engine_->heap(), f, encoded_size(packed), [&](Writer& w) -> std::uint64_t {
      w.write(packed);
      return 1;
    });
    engine_->submit(std::move(task));
    return AsyncResult<R>(std::move(state));
  }

  // f(args...) in a worker; blocks for the result (Python: Pool.apply).
  template <class F, class... Args>
  auto apply(F f, Args&&... args) {
    return apply_async(std::move(f), std::forward<Args>(args)...).get();
  }

  // apply_async under concurrent.futures' name (Python: Executor.submit):
  // f(args...) in a worker; the AsyncResult is the future. Non-blocking;
  // throws ProcessError if the pool is closed.
  template <class F, class... Args>
    requires(!detail::is_callbacks_v<F>)
  [[nodiscard]] auto submit(F f, Args&&... args) {
    return apply_async(std::move(f), std::forward<Args>(args)...);
  }

  // No more tasks may be submitted; queued ones still run. Non-blocking.
  void close() { engine_->close(); }

  // Fails every queued and running task with ProcessError and kills the
  // workers now. Non-blocking; follow with join().
  void terminate() { engine_->terminate(); }

  // Blocks until every task has finished, every worker has exited and
  // every callback has run. Throws ProcessError unless close() or
  // terminate() was called first.
  void join() {
    engine_->join();
    callbacks_->drain();
  }

  // Pids of the current workers (diagnostics; they change as workers are
  // replaced). On a new pool, blocks until every worker has started (at most
  // 10 s), so Pool(3).worker_pids() has 3 pids, as in Python. Thread-safe.
  [[nodiscard]] std::vector<int> worker_pids() const {
    auto pids = engine_->worker_pids(detail::deadline_after(std::chrono::seconds(10)));
    return {pids.begin(), pids.end()};
  }

 private:
  template <bool Star, class F, class Range>
  auto map_impl(const F& f, Range&& inputs_in, std::size_t chunksize) {
    detail::check_pool_callable<F>();
    using Arg = typename decltype(detail::wire_type<Star, F, Range>())::type;
    detail::check_pool_argument<Arg>();
    using R = detail::pool_result_t<F, Arg, Star>;
    detail::check_pool_result<R>();
    engine_->check_accepting();

    detail::check_chunksize(chunksize, "Pool: chunksize");
    decltype(auto) inputs = detail::sized(std::forward<Range>(inputs_in));
    const auto plan = detail::plan_chunks(static_cast<std::size_t>(std::ranges::distance(inputs)), chunksize, size());
    auto sink = std::make_shared<detail::MapSink<R>>(plan.items, plan.size, plan.count);
    const detail::Window window{detail::imap_window(size(), 1)};
    auto it = std::ranges::begin(inputs);
    // Chunks are submitted in batches (one lock and at most one wake-up each),
    // small enough that workers start while later chunks are being encoded.
    std::size_t bytes_per_chunk = 0;
    std::size_t batch_bytes = 0;
    std::vector<detail::PoolTask> batch;
    for (std::size_t c = 0; c < plan.count; ++c) {
      if (sink->ahead(c, bytes_per_chunk, window)) {
        engine_->submit(batch);
        sink->wait_for_room(c);
      }
      if (sink->failed()) break;
      batch.push_back(detail::encode_chunk<F, Arg, Star>(engine_->heap(), f, it, plan.items_in(c), sink, c));
      const std::size_t bytes = batch.back().payload.size() + batch.back().args.bytes().size();
      bytes_per_chunk = std::max(bytes_per_chunk, bytes);
      batch_bytes += bytes;
      if (batch.size() >= detail::map_batch_tasks || batch_bytes >= detail::map_batch_bytes) {
        engine_->submit(batch);
        batch_bytes = 0;
      }
    }
    engine_->submit(batch);
    return sink->wait_results();
  }

  template <bool Star, class F, class Range, class C, class E>
  auto map_async_impl(const F& f, Range&& inputs_in, std::size_t chunksize, Callbacks<C, E> cb) {
    detail::check_pool_callable<F>();
    using Arg = typename decltype(detail::wire_type<Star, F, Range>())::type;
    detail::check_pool_argument<Arg>();
    using R = detail::pool_result_t<F, Arg, Star>;
    detail::check_pool_result<R>();

    detail::check_chunksize(chunksize, "Pool: chunksize");
    decltype(auto) inputs = detail::sized(std::forward<Range>(inputs_in));
    const auto plan = detail::plan_chunks(static_cast<std::size_t>(std::ranges::distance(inputs)), chunksize, size());
    auto sink = std::make_shared<detail::MapSink<R>>(plan.items, plan.size, plan.count);
    std::vector<detail::PoolTask> tasks;
    tasks.reserve(plan.count);
    auto it = std::ranges::begin(inputs);
    for (std::size_t c = 0; c < plan.count; ++c)
      tasks.push_back(detail::encode_chunk<F, Arg, Star>(engine_->heap(), f, it, plan.items_in(c), sink, c));
    auto state = std::make_shared<detail::ResultState<typename detail::MapSink<R>::Out>>();
    detail::attach_callbacks(*state, *callbacks_, std::move(cb));
    sink->complete_into(state);
    engine_->submit(tasks);
    return AsyncResult<typename detail::MapSink<R>::Out>(std::move(state));
  }

  template <class F, class Range>
  auto imap_impl(const F& f, Range&& inputs, std::size_t chunksize, bool ordered) {
    detail::check_pool_callable<F>();
    using Arg = typename decltype(detail::wire_type<false, F, Range>())::type;
    detail::check_pool_argument<Arg>();
    using R = detail::pool_result_t<F, Arg, false>;
    detail::check_pool_result<R>();
    static_assert(!std::is_void_v<R>, "mproc::Pool::imap: f returns void; use map or apply_async");
    engine_->check_accepting();
    detail::check_chunksize(chunksize, "Pool.imap: chunksize");
    if (chunksize == 0) chunksize = 1;

    const std::optional<std::size_t> length = detail::input_length(inputs);
    auto source = std::make_shared<detail::InputCursor<Range>>(std::forward<Range>(inputs));
    auto sink = std::make_shared<detail::ImapSink<R>>(ordered, chunksize);
    std::shared_ptr<detail::PoolEngine> engine = engine_;
    auto produce = [engine, source, f, chunksize,
                    sink_weak = std::weak_ptr<detail::ImapSink<R>>(sink)](detail::ImapSink<R>& s) -> std::size_t {
      detail::PoolTask t;
      const std::uint64_t n =
          detail::encode_call<F, Arg, false>(t, engine->heap(), f, 0, [&](Writer& w) -> std::uint64_t {
            return source->take(chunksize, [&](const auto& x) { detail::write_as<Arg>(w, x); });
          });
      if (n == 0) return 0;
      t.count = n;
      t.chunk = source->chunks++;
      t.sink = sink_weak.lock();
      const std::size_t per_item = std::max<std::size_t>(1, t.payload.size() / n);
      s.submitted(t.chunk, n);
      engine->submit(std::move(t));
      return per_item;
    };
    return detail::with_length_hint(
        ImapResult<R>(sink, std::move(produce), detail::Window{detail::imap_window(size(), chunksize)}), length);
  }

  std::unique_ptr<detail::CallbackThread> callbacks_ = std::make_unique<detail::CallbackThread>();
  std::shared_ptr<detail::PoolEngine> engine_;
};

}  // namespace mproc
