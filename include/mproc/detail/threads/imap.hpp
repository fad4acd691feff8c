// The lazy side of ThreadPool::imap / imap_unordered: the sink where item
// tasks deliver their outcomes (in input order through a ReorderBuffer, or
// in arrival order), the task computing one chunk of items, and the feeder
// that reads the input range chunk by chunk as the consumer advances.
// Layer: detail/threads; builds on scheduler.hpp (to queue the chunks) and
// detail/pool/reorder.hpp; used by thread_pool.hpp (ThreadImapResult).
// SPDX-License-Identifier: MIT
#pragma once

#include <condition_variable>
#include <cstddef>
#include <exception>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include <mproc/detail/pool/lazy_results.hpp>
#include <mproc/detail/pool/reorder.hpp>
#include <mproc/detail/threads/scheduler.hpp>
#include <mproc/detail/threads/task.hpp>
#include <mproc/detail/util/lean_std.hpp>
#include <mproc/errors.hpp>

namespace mproc::detail {

// One outcome of an imap item.
template <class R>
struct ImapOutcome {
  std::optional<R> value;
  std::exception_ptr error;
};

// Where imap tasks deliver their outcomes; the consumer takes them in input
// order (ordered) or arrival order. put() is thread-safe; available() and
// take() need `mutex` held.
template <class R>
class ThreadImapSink {
 public:
  explicit ThreadImapSink(bool ordered) noexcept : ordered_(ordered) {}

  // Stores the outcome of item `index` (its input position) and wakes the consumer.
  void put(std::size_t index, ImapOutcome<R> outcome) {
    {
      std::lock_guard lock(mutex);
      // Unordered: the same buffer as a FIFO, items numbered as they arrive.
      buffer_.put(ordered_ ? index : arrivals_++, std::move(outcome));
    }
    cv.notify_all();
  }

  // Whether the next outcome is there. Precondition: mutex held.
  bool available() const noexcept { return buffer_.ready(); }

  // Takes the next outcome. Precondition: mutex held and available().
  ImapOutcome<R> take() { return buffer_.take(); }

  std::mutex mutex;
  std::condition_variable cv;

 private:
  bool ordered_;
  std::size_t arrivals_ = 0;  // unordered: the number given to the next arrival
  ReorderBuffer<ImapOutcome<R>> buffer_;
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
        out.value.emplace(apply_invoke(*f, items[j]));
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

// Queues an imap's next chunk (type-erased for ThreadImapResult).
class ImapProducer {
 public:
  virtual ~ImapProducer() = default;
  // Reads the next chunk of inputs and queues its task, its first item
  // numbered `first`; returns the chunk's size, 0 at the end of the input.
  // Throws ProcessError if the pool no longer runs.
  virtual std::size_t produce(std::size_t first) = 0;
};

// The ImapProducer of an imap over the caller's `Range` (held by an
// InputCursor), copying its items into chunks of `chunksize` tasks of f.
template <class Range, class Fn, class V, class R>
class ImapFeeder final : public ImapProducer {
 public:
  ImapFeeder(ThreadScheduler& scheduler, Range&& inputs, std::shared_ptr<Fn> f, std::shared_ptr<ThreadImapSink<R>> sink,
             std::size_t chunksize)
      : scheduler_(scheduler),
        input_(std::forward<Range>(inputs)),
        f_(std::move(f)),
        sink_(std::move(sink)),
        chunksize_(chunksize) {}
  ImapFeeder(const ImapFeeder&) = delete;
  ImapFeeder& operator=(const ImapFeeder&) = delete;

  std::size_t produce(std::size_t first) override {
    std::vector<V> items;
    input_.take(chunksize_, [&](auto&& x) { items.push_back(std::forward<decltype(x)>(x)); });
    if (items.empty()) return 0;
    const std::size_t n = items.size();
    if (!scheduler_.push(Task(ImapTask<R, Fn, V>{f_, sink_, std::move(items), first}), true))
      throw ProcessError("mproc: ThreadPool.imap: the pool is no longer running (terminated or joined)");
    return n;
  }

 private:
  ThreadScheduler& scheduler_;
  InputCursor<Range> input_;
  std::shared_ptr<Fn> f_;
  std::shared_ptr<ThreadImapSink<R>> sink_;
  std::size_t chunksize_;
};

}  // namespace mproc::detail
