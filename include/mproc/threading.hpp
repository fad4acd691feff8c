// Thread-only synchronization (Python: queue.Queue, threading.Event,
// threading.Barrier), in namespace mproc::threading. These live in ordinary
// process memory and serve threads of one process only; the process-shared
// Lock/Event/Barrier/Queue of mproc:: also work between threads, at a higher
// cost.
// SPDX-License-Identifier: MIT
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <iterator>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/util/lean_std.hpp>
#include <mproc/detail/util/queue_iterator.hpp>
#include <mproc/errors.hpp>

namespace mproc::threading {

// The error of a shut-down queue; the same type as mproc::ShutDown.
using ShutDown = mproc::ShutDown;

// A FIFO queue for threads (Python: queue.Queue). maxsize <= 0 means
// unbounded. Every method is thread-safe.
template <class T>
class Queue {
 public:
  using value_type = T;

  // A queue holding at most `maxsize` items (<= 0: unbounded). Non-blocking.
  explicit Queue(std::ptrdiff_t maxsize = 0) noexcept : maxsize_(maxsize > 0 ? static_cast<std::size_t>(maxsize) : 0) {}
  Queue(const Queue&) = delete;
  Queue& operator=(const Queue&) = delete;

  // Appends `item`, blocking while the queue is full. Throws ShutDown if the
  // queue is (or becomes, while waiting) closed.
  void put(T item) { put_until(std::move(item), detail::Clock::time_point::max()); }

  // As put(), but throws Full if no room appears within `timeout`.
  template <class Rep, class Period>
  void put(T item, std::chrono::duration<Rep, Period> timeout) {
    put_until(std::move(item), detail::deadline_after(timeout));
  }

  // Appends without blocking; throws Full if the queue is full, ShutDown if closed.
  void put_nowait(T item) { put_until(std::move(item), detail::Clock::time_point::min()); }

  // Removes and returns the oldest item, blocking while the queue is empty.
  // Throws ShutDown once the queue is shut down and empty.
  T get() { return get_until(detail::Clock::time_point::max()); }

  // As get(), but throws Empty if no item arrives within `timeout`.
  template <class Rep, class Period>
  T get(std::chrono::duration<Rep, Period> timeout) {
    return get_until(detail::deadline_after(timeout));
  }

  // Removes the oldest item without blocking; throws Empty if there is none
  // (ShutDown if shut down and empty).
  T get_nowait() { return get_until(detail::Clock::time_point::min()); }

  // As get_nowait(), but returns nullopt where it throws Empty. Throws
  // ShutDown once the queue is shut down and drained.
  [[nodiscard]] std::optional<T> try_get() {
    std::unique_lock lock(mutex_);
    if (items_.empty()) {
      if (closed_) throw ShutDown("mproc: threading::Queue is shut down and empty");
      return std::nullopt;
    }
    return pop_front(lock);
  }

  // Range-for over the items: each step is a blocking get(); the range ends
  // when the queue is shut down and drained. begin() blocks for the first.
  detail::QueueIterator<Queue> begin() { return detail::QueueIterator<Queue>(*this); }
  std::default_sentinel_t end() const noexcept { return {}; }

  // Number of items queued now (a snapshot). Non-blocking.
  std::size_t qsize() const {
    std::lock_guard lock(mutex_);
    return items_.size();
  }
  // Whether no item is queued now (a snapshot). Non-blocking.
  bool empty() const { return qsize() == 0; }
  // Whether a bounded queue is at maxsize now (a snapshot). Non-blocking.
  bool full() const {
    std::lock_guard lock(mutex_);
    return maxsize_ != 0 && items_.size() >= maxsize_;
  }
  // The bound given at construction (0: unbounded).
  std::size_t maxsize() const noexcept { return maxsize_; }

  // Marks one item taken by get() as processed (for join()). Non-blocking.
  // Throws ProcessError if called more times than items were put.
  void task_done() {
    std::lock_guard lock(mutex_);
    if (unfinished_ == 0)
      throw ProcessError("mproc: threading::Queue::task_done() called more times than items were put");
    if (--unfinished_ == 0) all_done_.notify_all();
  }

  // Blocks until every item ever put has been marked with task_done().
  void join() {
    std::unique_lock lock(mutex_);
    all_done_.wait(lock, [&] { return unfinished_ == 0; });
  }

  // Shuts the queue down (Python 3.13: shutdown): later put()s throw
  // ShutDown; get()s return the items still queued, then throw ShutDown.
  // immediate: the queued items are dropped instead and count as done for
  // join(). Wakes every blocked put/get. Non-blocking; idempotent.
  void shutdown(bool immediate = false) {
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
      if (immediate) {
        unfinished_ -= items_.size();
        items_.clear();
        if (unfinished_ == 0) all_done_.notify_all();
      }
    }
    not_empty_.notify_all();
    not_full_.notify_all();
  }
  // The same as shutdown().
  void close() { shutdown(); }

  // Whether the queue was shut down. Non-blocking.
  bool closed() const {
    std::lock_guard lock(mutex_);
    return closed_;
  }

 private:
  // deadline == time_point::min(): do not wait at all.
  void put_until(T&& item, detail::Clock::time_point deadline) {
    std::unique_lock lock(mutex_);
    auto room = [&] { return closed_ || maxsize_ == 0 || items_.size() < maxsize_; };
    if (!room()) {
      if (deadline == detail::Clock::time_point::min()) throw Full();
      if (deadline == detail::Clock::time_point::max()) {
        not_full_.wait(lock, room);
      } else if (!not_full_.wait_until(lock, deadline, room)) {
        throw Full("mproc: threading::Queue::put timed out (the queue stayed full)");
      }
    }
    if (closed_) throw ShutDown("mproc: threading::Queue is shut down");
    items_.push_back(std::move(item));
    ++unfinished_;
    lock.unlock();
    not_empty_.notify_one();
  }

  T get_until(detail::Clock::time_point deadline) {
    std::unique_lock lock(mutex_);
    auto ready = [&] { return closed_ || !items_.empty(); };
    if (!ready()) {
      if (deadline == detail::Clock::time_point::min()) throw Empty();
      if (deadline == detail::Clock::time_point::max()) {
        not_empty_.wait(lock, ready);
      } else if (!not_empty_.wait_until(lock, deadline, ready)) {
        throw Empty("mproc: threading::Queue::get timed out (the queue stayed empty)");
      }
    }
    if (items_.empty()) throw ShutDown("mproc: threading::Queue is shut down and empty");
    return pop_front(lock);
  }

  T pop_front(std::unique_lock<std::mutex>& lock) {
    T item = std::move(items_.front());
    items_.pop_front();
    lock.unlock();
    not_full_.notify_one();
    return item;
  }

  mutable std::mutex mutex_;
  std::condition_variable not_empty_;
  std::condition_variable not_full_;
  std::condition_variable all_done_;
  std::deque<T> items_;
  std::size_t maxsize_;
  std::size_t unfinished_ = 0;
  bool closed_ = false;
};

// A flag threads can wait for (Python: threading.Event). Thread-safe.
class Event {
 public:
  Event() = default;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  // Whether the flag is set. Non-blocking.
  bool is_set() const {
    std::lock_guard lock(mutex_);
    return flag_;
  }
  // Sets the flag and wakes every waiter. Non-blocking.
  void set() {
    {
      std::lock_guard lock(mutex_);
      flag_ = true;
    }
    cv_.notify_all();
  }
  // Clears the flag. Non-blocking.
  void clear() {
    std::lock_guard lock(mutex_);
    flag_ = false;
  }
  // Blocks until the flag is set; returns true.
  bool wait() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return flag_; });
    return true;
  }
  // Blocks until the flag is set or `timeout` passes; returns the flag.
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) {
    const auto deadline = detail::deadline_after(timeout);
    std::unique_lock lock(mutex_);
    if (deadline == detail::Clock::time_point::max()) {
      cv_.wait(lock, [&] { return flag_; });
      return true;
    }
    return cv_.wait_until(lock, deadline, [&] { return flag_; });
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  bool flag_ = false;
};

// A rendezvous of `parties` threads (Python: threading.Barrier). Thread-safe.
class Barrier {
 public:
  // A barrier for `parties` threads. Throws ValueError for 0 parties.
  // `action`, if given, runs in one of the threads when all have arrived,
  // before any is released; if it throws, the barrier breaks and wait()
  // rethrows in that thread.
  explicit Barrier(std::size_t parties, std::function<void()> action = {})
      : parties_(parties), action_(std::move(action)) {
    if (parties == 0) throw ValueError("mproc: threading::Barrier: parties must be at least 1, not 0");
  }
  Barrier(const Barrier&) = delete;
  Barrier& operator=(const Barrier&) = delete;

  // Blocks until `parties` threads have called wait(); returns this
  // thread's arrival index, distinct in 0..parties-1. Throws
  // BrokenBarrierError if the barrier is or becomes broken (abort(), reset()
  // while waiting, or another waiter's timeout).
  std::size_t wait() { return wait_until(detail::Clock::time_point::max()); }

  // As wait(), but if `timeout` passes first the barrier breaks: this and
  // every other waiter (and later callers, until reset()) get BrokenBarrierError.
  template <class Rep, class Period>
  std::size_t wait(std::chrono::duration<Rep, Period> timeout) {
    return wait_until(detail::deadline_after(timeout));
  }

  // Returns the barrier to its initial state; threads waiting now get
  // BrokenBarrierError. Non-blocking.
  void reset() {
    std::lock_guard lock(mutex_);
    if (count_ > 0) {
      if (state_ == filling || state_ == broken_state) state_ = resetting;
    } else {
      state_ = filling;
    }
    cv_.notify_all();
  }

  // Breaks the barrier: current and later waiters get BrokenBarrierError
  // until reset(). Non-blocking.
  void abort() {
    std::lock_guard lock(mutex_);
    break_locked();
  }

  // Number of threads required to pass the barrier.
  std::size_t parties() const noexcept { return parties_; }
  // Number of threads waiting now. Non-blocking.
  std::size_t n_waiting() const {
    std::lock_guard lock(mutex_);
    return state_ == filling ? count_ : 0;
  }
  // Whether the barrier is broken. Non-blocking.
  bool broken() const {
    std::lock_guard lock(mutex_);
    return state_ == broken_state;
  }

 private:
  // Python's states: 0 filling, 1 draining, -1 resetting, -2 broken.
  enum State { filling, draining, resetting, broken_state };

  void break_locked() {
    state_ = broken_state;
    cv_.notify_all();
  }

  std::size_t wait_until(detail::Clock::time_point deadline) {
    std::unique_lock lock(mutex_);
    // Wait while a previous round drains or a reset completes.
    cv_.wait(lock, [&] { return state_ != draining && state_ != resetting; });
    if (state_ == broken_state) throw BrokenBarrierError();
    const std::size_t index = count_++;
    struct Exit {
      Barrier& b;
      ~Exit() {
        if (--b.count_ == 0 && (b.state_ == draining || b.state_ == resetting)) {
          b.state_ = filling;
          b.cv_.notify_all();
        }
      }
    } exit{*this};
    if (index + 1 == parties_) {
      if (action_) {
        try {
          action_();
        } catch (...) {
          break_locked();
          throw;
        }
      }
      state_ = draining;
      cv_.notify_all();
      return index;
    }
    auto released = [&] { return state_ != filling; };
    bool ok = true;
    if (deadline == detail::Clock::time_point::max()) {
      cv_.wait(lock, released);
    } else {
      ok = cv_.wait_until(lock, deadline, released);
    }
    if (!ok) {
      break_locked();
      throw BrokenBarrierError("mproc: threading::Barrier::wait timed out; the barrier is now broken");
    }
    if (state_ != draining) throw BrokenBarrierError();
    return index;
  }

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::size_t parties_;
  std::function<void()> action_;
  std::size_t count_ = 0;
  State state_ = filling;
};

}  // namespace mproc::threading
