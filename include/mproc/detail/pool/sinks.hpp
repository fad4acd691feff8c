// mproc/detail/pool/sinks.hpp — where a Pool call's results land: the
// TaskSink of apply_async (one AsyncResult), of map/starmap/map_async (every
// result in input order; the first failure ends the call) and of
// imap/imap_unordered (results taken one by one, reordered through
// ReorderBuffer). Layer detail/pool: the engine's I/O thread calls
// complete()/fail(); the caller's thread waits. Used by pool.hpp and mpi.hpp.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include <mproc/async_result.hpp>
#include <mproc/detail/pool/engine.hpp>
#include <mproc/detail/pool/protocol.hpp>
#include <mproc/detail/pool/reorder.hpp>
#include <mproc/detail/pool/scheduling.hpp>

namespace mproc::detail {

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
  bool claim() override { return state_->try_start(); }  // false: cancelled (AsyncResult::cancel)

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

  std::optional<std::size_t> first_input(std::size_t chunk) const override { return chunk * chunksize_; }

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
  // Counts a dispatch without a lock; wakes the room waiter only at its mark
  // (the waiter raises room_waiter_ and then reads dispatched_, this stores
  // dispatched_ and then reads room_waiter_: one of them sees the other).
  void dispatched() override {
    const std::size_t n = dispatched_.fetch_add(1, std::memory_order_seq_cst) + 1;
    if (room_waiter_.load(std::memory_order_seq_cst) && n >= room_at_.load(std::memory_order_relaxed)) {
      std::lock_guard lock(mutex_);
      cv_.notify_all();
    }
  }
  bool cancelled() const override { return failed_.load(std::memory_order_relaxed); }

  // Whether `submitted` chunks are too far ahead of the workers. Non-blocking, lock-free.
  bool ahead(std::size_t submitted, std::size_t bytes_per_chunk, Window window) const noexcept {
    const std::size_t waiting = submitted - dispatched_.load(std::memory_order_relaxed);
    return window.full(waiting, waiting * bytes_per_chunk);
  }

  // Blocks while `submitted` chunks are too far ahead of the workers.
  // Blocks until half of the chunks submitted but not yet dispatched have
  // been dispatched (waking at every dispatch would cost a context switch each).
  void wait_for_room(std::size_t submitted) {
    std::unique_lock lock(mutex_);
    const std::size_t done = dispatched_.load(std::memory_order_relaxed);
    room_at_.store(done + std::max<std::size_t>(1, (submitted - done) / 2), std::memory_order_relaxed);
    room_waiter_.store(true, std::memory_order_seq_cst);
    cv_.wait(lock, [&] { return error_ != nullptr || dispatched_.load(std::memory_order_seq_cst) >= room_at_; });
    room_waiter_.store(false, std::memory_order_relaxed);
  }

  bool failed() const { return cancelled(); }

  // Blocks until every chunk is done or one failed; returns the results or
  // rethrows the failure.
  auto wait_results() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return error_ != nullptr || done_.load(std::memory_order_acquire) == chunks_; });
    if (error_) std::rethrow_exception(error_);
    return take_results();
  }

 private:
  Out take_results() {
    if constexpr (!std::is_void_v<R>) {
      std::vector<R> out;
      out.reserve(results_.size());
      for (auto& r : results_) out.push_back(std::move(*r));
      return out;
    }
  }

  // A chunk is done: only the last one and failures take the lock (the
  // acq_rel count orders every chunk's results before the last one's).
  void finish(std::exception_ptr error) {
    const std::size_t done = done_.fetch_add(1, std::memory_order_acq_rel) + 1;
    if (!error && done != chunks_) return;
    bool publish_now = false;
    {
      std::lock_guard lock(mutex_);
      const bool was_over = over_;
      if (error && !error_) {
        error_ = std::move(error);
        failed_.store(true, std::memory_order_relaxed);
      }
      over_ = error_ != nullptr || done_.load(std::memory_order_relaxed) == chunks_;
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
  std::atomic<std::size_t> done_{0};
  std::atomic<std::size_t> dispatched_{0};
  std::atomic<bool> room_waiter_{false};
  std::atomic<std::size_t> room_at_{0};  // dispatched_ count that wakes the room waiter
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

  std::optional<std::size_t> first_input(std::size_t chunk) const override { return chunk * chunksize_; }

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

}  // namespace mproc::detail
