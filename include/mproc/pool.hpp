// mproc — Python's multiprocessing model for C++20.
// SPDX-License-Identifier: MIT
//
// mproc::Pool — a pool of worker processes (Python: multiprocessing.Pool).
//
//   mp::Pool pool(4);
//   std::vector<double> means = pool.map(analyze_data, data_sets);
//
// Workers are forked processes. A worker that dies fails only the task it
// was running (WorkerCrashed) and is replaced; an exception thrown by a task
// reaches the caller as RemoteError; no call hangs because a worker died.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <mproc/async_result.hpp>
#include <mproc/detail/pool/engine.hpp>
#include <mproc/detail/pool/lazy_results.hpp>
#include <mproc/detail/pool/reorder.hpp>
#include <mproc/detail/pool/scheduling.hpp>
#include <mproc/errors.hpp>
#include <mproc/serialize.hpp>
#include <mproc/system.hpp>

namespace mproc {

namespace detail {

template <class F>
constexpr void check_pool_callable() {
  static_assert(is_portable_callable_v<F>,
                "mproc::Pool: the task function must be a function pointer or a captureless lambda, "
                "because it runs in another process. A capturing lambda or a stateful function object "
                "cannot cross: pass the state as a task argument (pool.apply(f, state, x), "
                "pool.starmap(f, pairs)), or load it once per worker with PoolOptions::initializer.");
}

// Return type of calling F on a decoded Arg (a tuple of arguments when Star).
template <class F, class Arg, bool Star>
struct pool_result {
  using type = std::remove_cvref_t<decltype(call_with(std::declval<F&>(), std::declval<Arg&>()))>;
};
template <class F, class Arg>
struct pool_result<F, Arg, true> {
  using type = std::remove_cvref_t<decltype(apply_with(std::declval<F&>(), std::declval<Arg&>()))>;
};
template <class F, class Arg, bool Star>
using pool_result_t = typename pool_result<F, Arg, Star>::type;

template <class R>
constexpr void check_pool_result() {
  static_assert(std::is_void_v<R> || serializable<R>,
                "mproc::Pool: the task function's return type cannot cross a process boundary; "
                "return a serializable type or specialize mproc::serializer<T> (see serialize.hpp).");
  static_assert(check_owning_decodable<R, decode_site::pool_result>());  // no views into the worker
}

template <class Arg>
constexpr void check_pool_argument() {
  static_assert(serializable<Arg>,
                "mproc::Pool: a task argument's type cannot cross a process boundary; pass a "
                "serializable type or specialize mproc::serializer<T> (see serialize.hpp).");
}

// The address of the trampoline that runs F on Arg in a worker.
template <class F, class Arg, bool Star>
std::uint64_t trampoline_bits() noexcept {
  return reinterpret_cast<std::uint64_t>(&task_trampoline<F, Arg, Star>);
}

// Encodes the next `n` inputs from `it` as one task.
template <class F, class Arg, bool Star, class It>
PoolTask encode_chunk(TransferHeap& heap, F f, It& it, std::size_t n, std::shared_ptr<TaskSink> sink,
                      std::size_t chunk) {
  PoolTask t;
  t.count = n;
  t.sink = std::move(sink);
  t.chunk = chunk;
  std::size_t size = 0;
  if constexpr (std::forward_iterator<It>) {
    Writer counter(Writer::count_only);
    It probe = it;
    for (std::size_t k = 0; k < n; ++k, ++probe) write_as<Arg>(counter, *probe);
    size = counter.size();
  }
  encode_task(t.payload, t.args, heap, trampoline_bits<F, Arg, Star>(), callable_bits(f), size,
              [&](Writer& w) -> std::uint64_t {
                for (std::size_t k = 0; k < n; ++k, ++it) write_as<Arg>(w, *it);
                return n;
              });
  return t;
}

// Results of apply_async: one item into an AsyncResult's state.
template <class R>
class ApplySink final : public TaskSink {
 public:
  explicit ApplySink(std::shared_ptr<ResultState<R>> state) : state_(std::move(state)) {}
  void complete(std::size_t, Reader& r, std::uint64_t) override {
    try {
      if constexpr (std::is_void_v<R>) {
        read_results<R>(
            r, 1, [&](std::uint64_t) { state_->set_value(); },
            [&](std::uint64_t, std::exception_ptr e) { state_->set_exception(e); });
      } else {
        read_results<R>(
            r, 1, [&](std::uint64_t, R&& v) { state_->set_value(std::move(v)); },
            [&](std::uint64_t, std::exception_ptr e) { state_->set_exception(e); });
      }
    } catch (...) {
      state_->set_exception(std::current_exception());
    }
  }
  void fail(std::size_t, std::exception_ptr e) override { state_->set_exception(std::move(e)); }

 private:
  std::shared_ptr<ResultState<R>> state_;
};

// Results of map/starmap: every item, in input order; the first failure (in
// completion order, as Python) ends the call and cancels undispatched chunks.
template <class R>
class MapSink final : public TaskSink {
 public:
  using Out = std::conditional_t<std::is_void_v<R>, void, std::vector<R>>;

  MapSink(std::size_t items, std::size_t chunksize, std::size_t chunks) : chunksize_(chunksize), chunks_(chunks) {
    if constexpr (!std::is_void_v<R>) results_.resize(items);
  }

  // For map_async: the state completed when the map is done. Call before submitting.
  void complete_into(std::shared_ptr<ResultState<Out>> state) {
    async_ = std::move(state);
    if (chunks_ == 0) publish();
  }

  void complete(std::size_t chunk, Reader& r, std::uint64_t count) override {
    std::exception_ptr error;
    try {
      auto on_error = [&](std::uint64_t, std::exception_ptr e) {
        if (!error) error = e;
      };
      if constexpr (std::is_void_v<R>) {
        read_results<R>(r, count, [](std::uint64_t) {}, on_error);
      } else {
        const std::size_t base = chunk * chunksize_;
        if (base + count > results_.size()) throw ProcessError("mproc: Pool: result index out of range");
        read_results<R>(r, count, [&](std::uint64_t i, R&& v) { results_[base + i].emplace(std::move(v)); }, on_error);
      }
    } catch (...) {
      error = std::current_exception();
    }
    finish(error);
  }
  void fail(std::size_t, std::exception_ptr e) override { finish(std::move(e)); }
  void dispatched() override {
    std::lock_guard lock(mutex_);
    ++dispatched_;
    if (room_waiter_ && dispatched_ >= room_at_) cv_.notify_all();
  }
  bool cancelled() const override { return failed_.load(std::memory_order_relaxed); }

  // Whether `submitted` chunks are too far ahead of the workers. Non-blocking.
  bool ahead(std::size_t submitted, std::size_t bytes_per_chunk, Window window) const {
    std::lock_guard lock(mutex_);
    return ahead_locked(submitted, bytes_per_chunk, window);
  }

  // Blocks while `submitted` chunks are too far ahead of the workers.
  // Blocks until half of the chunks submitted but not yet dispatched have
  // been dispatched (waking at every dispatch would cost a context switch each).
  void wait_for_room(std::size_t submitted) {
    std::unique_lock lock(mutex_);
    const std::size_t waiting = submitted - dispatched_;
    room_at_ = dispatched_ + std::max<std::size_t>(1, waiting / 2);
    room_waiter_ = true;
    cv_.wait(lock, [&] { return error_ != nullptr || dispatched_ >= room_at_; });
    room_waiter_ = false;
  }

  bool failed() const { return cancelled(); }

  // Blocks until every chunk is done or one failed; returns the results or
  // rethrows the failure.
  auto wait_results() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return error_ != nullptr || done_ == chunks_; });
    if (error_) std::rethrow_exception(error_);
    return take_results();
  }

 private:
  bool ahead_locked(std::size_t submitted, std::size_t bytes_per_chunk, Window window) const {
    const std::size_t waiting = submitted - dispatched_;
    return window.full(waiting, waiting * bytes_per_chunk);
  }

  Out take_results() {
    if constexpr (!std::is_void_v<R>) {
      std::vector<R> out;
      out.reserve(results_.size());
      for (auto& r : results_) out.push_back(std::move(*r));
      return out;
    }
  }

  void finish(std::exception_ptr error) {
    bool publish_now = false;
    {
      std::lock_guard lock(mutex_);
      ++done_;
      const bool was_over = over_;
      if (error && !error_) {
        error_ = std::move(error);
        failed_.store(true, std::memory_order_relaxed);
      }
      over_ = error_ != nullptr || done_ == chunks_;
      publish_now = async_ && over_ && !was_over;
      if (over_ && !was_over) cv_.notify_all();
    }
    if (publish_now) publish();
  }

  // Completes the map_async state (on the I/O thread, once).
  void publish() {
    if (error_) {
      async_->set_exception(error_);
    } else if constexpr (std::is_void_v<R>) {
      async_->set_value();
    } else {
      async_->set_value(take_results());
    }
  }

  const std::size_t chunksize_;
  const std::size_t chunks_;
  std::conditional_t<std::is_void_v<R>, char, std::vector<std::optional<R>>> results_{};
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::size_t done_ = 0;
  std::size_t dispatched_ = 0;
  bool room_waiter_ = false;
  std::size_t room_at_ = 0;  // dispatched_ count that wakes the room waiter
  bool over_ = false;
  std::atomic<bool> failed_{false};
  std::exception_ptr error_;
  std::shared_ptr<ResultState<Out>> async_;
};

// Results of imap / imap_unordered, consumed one by one.
template <class R>
class ImapSink final : public TaskSink {
 public:
  ImapSink(bool ordered, std::size_t chunksize) : ordered_(ordered), chunksize_(chunksize) {}

  struct Outcome {
    std::optional<R> value;
    std::exception_ptr error;
  };

  void complete(std::size_t chunk, Reader& r, std::uint64_t count) override {
    std::vector<Outcome> items(count);
    try {
      read_results<R>(
          r, count, [&](std::uint64_t i, R&& v) { items[i].value.emplace(std::move(v)); },
          [&](std::uint64_t i, std::exception_ptr e) { items[i].error = e; });
    } catch (...) {
      // Malformed results: the items not yet read are lost.
      for (auto& item : items)
        if (!item.value && !item.error) item.error = std::current_exception();
    }
    deliver(chunk, std::move(items));
  }
  void fail(std::size_t chunk, std::exception_ptr e) override {
    std::size_t count = 0;
    {
      std::lock_guard lock(mutex_);
      auto it = counts_.find(chunk);
      count = it == counts_.end() ? 0 : it->second;
    }
    std::vector<Outcome> items(count);
    for (auto& item : items) item.error = e;
    deliver(chunk, std::move(items));
  }
  bool cancelled() const override {
    std::lock_guard lock(mutex_);
    return abandoned_;
  }

  void submitted(std::size_t chunk, std::size_t count) {
    std::lock_guard lock(mutex_);
    counts_[chunk] = count;
    outstanding_ += count;
  }
  void abandon() {
    std::lock_guard lock(mutex_);
    abandoned_ = true;
  }
  std::size_t outstanding() const {
    std::lock_guard lock(mutex_);
    return outstanding_;
  }

  // Takes the next outcome if one is ready (in input order when ordered).
  std::optional<Outcome> try_take() {
    std::lock_guard lock(mutex_);
    return take_locked();
  }

  // Waits until an outcome is ready or `deadline`; nullopt on timeout.
  std::optional<Outcome> take_until(Clock::time_point deadline) {
    std::unique_lock lock(mutex_);
    for (;;) {
      if (auto o = take_locked()) return o;
      if (deadline == Clock::time_point::max()) {
        cv_.wait(lock);
      } else if (cv_.wait_until(lock, deadline) == std::cv_status::timeout) {
        return take_locked();
      }
    }
  }

 private:
  void deliver(std::size_t chunk, std::vector<Outcome> items) {
    std::lock_guard lock(mutex_);
    counts_.erase(chunk);
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (ordered_) {
        ready_.put(chunk * chunksize_ + i, std::move(items[i]));
      } else {
        fifo_.push_back(std::move(items[i]));
      }
    }
    cv_.notify_all();
  }

  std::optional<Outcome> take_locked() {
    std::optional<Outcome> out;
    if (ordered_) {
      if (!ready_.ready()) return out;
      out.emplace(ready_.take());
    } else {
      if (fifo_.empty()) return out;
      out.emplace(std::move(fifo_.front()));
      fifo_.pop_front();
    }
    --outstanding_;
    return out;
  }

  const bool ordered_;
  const std::size_t chunksize_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::map<std::size_t, std::size_t> counts_;  // chunk -> items, while pending
  ReorderBuffer<Outcome> ready_;                // ordered: by item index
  std::deque<Outcome> fifo_;                    // unordered
  std::size_t outstanding_ = 0;
  bool abandoned_ = false;
};

}  // namespace detail

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
    detail::check_pool_callable<F>();
    using Arg = typename detail::tuple_wire_args<F, std::tuple<std::remove_cvref_t<Args>...>>::type;
    detail::check_pool_argument<Arg>();
    config_ = detail::encode_initializer(reinterpret_cast<std::uint64_t>(&detail::init_trampoline<F, Arg>),
                                         detail::callable_bits(f),
                                         [&](Writer& w) { w.write(Arg(std::forward<Args>(args)...)); });
    return *this;
  }

  // A worker exits after this many tasks (chunks) and a fresh one replaces
  // it (Python: maxtasksperchild). 0 (default): workers live as long as the pool.
  PoolOptions& maxtasksperchild(std::size_t n) {
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
  std::size_t maxtasks_ = 0;
  // Not a std::optional: GCC 12 with sanitizers warns maybe-uninitialized on
  // a defaulted optional enum copied out of PoolOptions.
  StartMethod method_ = StartMethod::automatic;
  bool method_set_ = false;
};

// The lazily computed results of imap / imap_unordered: an input range whose
// iterator yields each task's value (in input order for imap, in completion
// order for imap_unordered) and rethrows an item's RemoteError /
// WorkerCrashed when that item is reached. Inputs are encoded and submitted
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
      const std::size_t bytes = produce_(*sink_);
      if (bytes == 0) {
        exhausted_ = true;
        break;
      }
      bytes_per_item_ = std::max(bytes_per_item_, bytes);
    }
  }

  std::optional<R> next_until(detail::Clock::time_point deadline) {
    top_up();
    if (exhausted_ && sink_->outstanding() == 0) return std::nullopt;
    auto outcome = sink_->take_until(deadline);
    if (!outcome) throw TimeoutError("mproc: Pool.imap: no result within the timeout");
    top_up();
    if (outcome->error) std::rethrow_exception(outcome->error);
    return std::move(outcome->value);
  }

  std::shared_ptr<detail::ImapSink<R>> sink_;
  Produce produce_;
  detail::Window window_;
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
  // Starts `processes` workers (0: cpu_count()). Blocks only to fork the
  // pool's zygote. Throws ProcessError (e.g. fork failed, negative count).
  explicit Pool(int processes = 0, PoolOptions options = {}) {
    if (processes < 0)
      throw ProcessError("mproc: Pool: the number of processes must be at least 1, not " + std::to_string(processes));
    detail::EngineConfig cfg;
    cfg.processes = processes == 0 ? cpu_count() : processes;
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
  // terminate() to abandon work). Blocks.
  ~Pool() {
    if (!engine_) return;
    try {
      engine_->close();
      engine_->join();
    } catch (...) {
    }
  }

  // Number of worker processes.
  int size() const noexcept { return engine_->processes(); }

  // f applied to every input, results in input order (Python: Pool.map).
  // Inputs are sent in chunks of `chunksize` (0: Python's default,
  // ceil(n / (4 * processes))). Blocks. Throws the first failure: RemoteError
  // (f threw), WorkerCrashed (the process running a chunk died), ProcessError.
  template <class F, std::ranges::input_range Range>
  auto map(F f, Range&& inputs, std::size_t chunksize = 0) {
    return map_impl<false>(f, std::forward<Range>(inputs), chunksize);
  }

  // map with each input a tuple unpacked into f's arguments (Python: starmap).
  template <class F, std::ranges::input_range Range>
  auto starmap(F f, Range&& inputs, std::size_t chunksize = 0) {
    return map_impl<true>(f, std::forward<Range>(inputs), chunksize);
  }

  // map without blocking: encodes every input now, returns at once.
  template <class F, std::ranges::input_range Range>
  auto map_async(F f, Range&& inputs, std::size_t chunksize = 0) {
    return map_async_impl<false>(f, std::forward<Range>(inputs), chunksize);
  }

  // starmap without blocking.
  template <class F, std::ranges::input_range Range>
  auto starmap_async(F f, Range&& inputs, std::size_t chunksize = 0) {
    return map_async_impl<true>(f, std::forward<Range>(inputs), chunksize);
  }

  // Lazy map: returns at once; results come in input order as they are
  // iterated; inputs are consumed progressively (a bounded window ahead of
  // the consumer). An lvalue range must outlive the returned ImapResult; an
  // rvalue range is moved into it.
  template <class F, std::ranges::input_range Range>
  auto imap(F f, Range&& inputs, std::size_t chunksize = 1) {
    return imap_impl(f, std::forward<Range>(inputs), chunksize, true);
  }

  // As imap, but results come in completion order.
  template <class F, std::ranges::input_range Range>
  auto imap_unordered(F f, Range&& inputs, std::size_t chunksize = 1) {
    return imap_impl(f, std::forward<Range>(inputs), chunksize, false);
  }

  // f(args...) in a worker, without blocking. Throws ProcessError if the
  // pool is closed; the task's own failure is reported by the AsyncResult.
  template <class F, class... Args>
  auto apply_async(F f, Args&&... args) {
    detail::check_pool_callable<F>();
    using Arg = typename detail::tuple_wire_args<F, std::tuple<std::remove_cvref_t<Args>...>>::type;
    detail::check_pool_argument<Arg>();
    using R = detail::pool_result_t<F, Arg, true>;
    detail::check_pool_result<R>();
    auto state = std::make_shared<detail::ResultState<R>>();
    detail::PoolTask task;
    task.sink = std::make_shared<detail::ApplySink<R>>(state);
    const Arg packed(std::forward<Args>(args)...);
    detail::encode_task(task.payload, task.args, engine_->heap(), detail::trampoline_bits<F, Arg, true>(),
                        detail::callable_bits(f), encoded_size(packed), [&](Writer& w) -> std::uint64_t {
                          w.write(packed);
                          return 1;
                        });
    engine_->submit(std::move(task));
    return AsyncResult<R>(std::move(state));
  }

  // f(args...) in a worker; blocks for the result (Python: Pool.apply).
  template <class F, class... Args>
  auto apply(F f, Args&&... args) {
    return apply_async(f, std::forward<Args>(args)...).get();
  }

  // No more tasks may be submitted; queued ones still run. Non-blocking.
  void close() { engine_->close(); }

  // Fails every queued and running task with ProcessError and kills the
  // workers now. Non-blocking; follow with join().
  void terminate() { engine_->terminate(); }

  // Blocks until every task has finished and every worker has exited.
  // Throws ProcessError unless close() or terminate() was called first.
  void join() { engine_->join(); }

  // Pids of the current workers (diagnostics; they change as workers are replaced).
  std::vector<int> worker_pids() const {
    auto pids = engine_->worker_pids();
    return {pids.begin(), pids.end()};
  }

 private:
  template <bool Star, class F, class Range>
  static auto wire_type() {
    using In = std::ranges::range_value_t<Range>;
    if constexpr (Star) {
      return std::type_identity<typename detail::tuple_wire_args<F, std::remove_cvref_t<In>>::type>{};
    } else {
      return std::type_identity<typename detail::single_wire_arg<F, In>::type>{};
    }
  }

  template <class Range>
  static decltype(auto) sized(Range&& inputs) {
    if constexpr (std::ranges::sized_range<Range> && std::ranges::forward_range<Range>) {
      return std::forward<Range>(inputs);
    } else {
      using V = std::ranges::range_value_t<Range>;
      std::vector<V> all;
      for (auto&& x : inputs) all.push_back(std::forward<decltype(x)>(x));
      return all;
    }
  }

  template <bool Star, class F, class Range>
  auto map_impl(F f, Range&& inputs_in, std::size_t chunksize) {
    detail::check_pool_callable<F>();
    using Arg = typename decltype(wire_type<Star, F, Range>())::type;
    detail::check_pool_argument<Arg>();
    using R = detail::pool_result_t<F, Arg, Star>;
    detail::check_pool_result<R>();
    engine_->check_accepting();

    decltype(auto) inputs = sized(std::forward<Range>(inputs_in));
    const std::size_t n = static_cast<std::size_t>(std::ranges::distance(inputs));
    const std::size_t cs =
        chunksize == 0 ? detail::auto_chunksize(n, static_cast<std::size_t>(size()), detail::process_chunks_per_worker)
                       : chunksize;
    const std::size_t chunks = (n + cs - 1) / cs;
    auto sink = std::make_shared<detail::MapSink<R>>(n, cs, chunks);
    const detail::Window window{detail::imap_window(static_cast<std::size_t>(size()), 1)};
    auto it = std::ranges::begin(inputs);
    // Chunks are submitted in batches (one lock and at most one wake-up each),
    // small enough that workers start while later chunks are being encoded.
    std::size_t bytes_per_chunk = 0;
    std::size_t batch_bytes = 0;
    std::vector<detail::PoolTask> batch;
    for (std::size_t c = 0; c < chunks; ++c) {
      if (sink->ahead(c, bytes_per_chunk, window)) {
        engine_->submit(batch);
        sink->wait_for_room(c);
      }
      if (sink->failed()) break;
      batch.push_back(detail::encode_chunk<F, Arg, Star>(engine_->heap(), f, it, std::min(cs, n - c * cs), sink, c));
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

  template <bool Star, class F, class Range>
  auto map_async_impl(F f, Range&& inputs_in, std::size_t chunksize) {
    detail::check_pool_callable<F>();
    using Arg = typename decltype(wire_type<Star, F, Range>())::type;
    detail::check_pool_argument<Arg>();
    using R = detail::pool_result_t<F, Arg, Star>;
    detail::check_pool_result<R>();

    decltype(auto) inputs = sized(std::forward<Range>(inputs_in));
    const std::size_t n = static_cast<std::size_t>(std::ranges::distance(inputs));
    const std::size_t cs =
        chunksize == 0 ? detail::auto_chunksize(n, static_cast<std::size_t>(size()), detail::process_chunks_per_worker)
                       : chunksize;
    const std::size_t chunks = (n + cs - 1) / cs;
    auto sink = std::make_shared<detail::MapSink<R>>(n, cs, chunks);
    std::vector<detail::PoolTask> tasks;
    tasks.reserve(chunks);
    auto it = std::ranges::begin(inputs);
    for (std::size_t c = 0; c < chunks; ++c)
      tasks.push_back(detail::encode_chunk<F, Arg, Star>(engine_->heap(), f, it, std::min(cs, n - c * cs), sink, c));
    auto state = std::make_shared<detail::ResultState<typename detail::MapSink<R>::Out>>();
    sink->complete_into(state);
    engine_->submit(tasks);
    return AsyncResult<typename detail::MapSink<R>::Out>(std::move(state));
  }

  template <class F, class Range>
  auto imap_impl(F f, Range&& inputs, std::size_t chunksize, bool ordered) {
    detail::check_pool_callable<F>();
    using Arg = typename decltype(wire_type<false, F, Range>())::type;
    detail::check_pool_argument<Arg>();
    using R = detail::pool_result_t<F, Arg, false>;
    detail::check_pool_result<R>();
    static_assert(!std::is_void_v<R>, "mproc::Pool::imap: f returns void; use map or apply_async");
    engine_->check_accepting();
    if (chunksize == 0) chunksize = 1;

    auto view = std::views::all(std::forward<Range>(inputs));
    using View = decltype(view);
    struct Source {
      View view;
      std::ranges::iterator_t<View> it;
      std::size_t chunk = 0;
    };
    auto source = std::make_shared<Source>(Source{std::move(view), {}, 0});
    source->it = std::ranges::begin(source->view);
    auto sink = std::make_shared<detail::ImapSink<R>>(ordered, chunksize);
    std::shared_ptr<detail::PoolEngine> engine = engine_;
    auto produce = [engine, source, f, chunksize,
                    sink_weak = std::weak_ptr<detail::ImapSink<R>>(sink)](detail::ImapSink<R>& s) -> std::size_t {
      detail::PoolTask t;
      const std::uint64_t n =
          detail::encode_task(t.payload, t.args, engine->heap(), detail::trampoline_bits<F, Arg, false>(),
                              detail::callable_bits(f), 0, [&](Writer& w) -> std::uint64_t {
                                std::uint64_t k = 0;
                                for (; k < chunksize && source->it != std::ranges::end(source->view); ++k, ++source->it)
                                  detail::write_as<Arg>(w, *source->it);
                                return k;
                              });
      if (n == 0) return 0;
      t.count = n;
      t.chunk = source->chunk++;
      t.sink = sink_weak.lock();
      const std::size_t per_item = std::max<std::size_t>(1, t.payload.size() / n);
      s.submitted(t.chunk, n);
      engine->submit(std::move(t));
      return per_item;
    };
    return ImapResult<R>(sink, std::move(produce),
                         detail::Window{detail::imap_window(static_cast<std::size_t>(size()), chunksize)});
  }

  std::shared_ptr<detail::PoolEngine> engine_;
};

}  // namespace mproc
