// mproc/detail/pool/callback_thread.hpp — the thread on which a pool runs
// the callbacks of apply_async / map_async (Python: the result handler).
//
// Layer: detail/pool, shared by Pool and ThreadPool. Each pool owns one
// CallbackThread, started on the first callback; callbacks run on it one at
// a time, in the order the results completed.
// SPDX-License-Identifier: MIT
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdio>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include <mproc/detail/util/lean_std.hpp>

namespace mproc::detail {

class CallbackThread {
 public:
  CallbackThread() = default;
  CallbackThread(const CallbackThread&) = delete;
  CallbackThread& operator=(const CallbackThread&) = delete;
  ~CallbackThread() { stop(); }

  // Queues `job` (noexcept in effect: what it throws is reported on stderr
  // and dropped) and starts the thread if needed. Non-blocking; thread-safe.
  // Throws std::system_error if the thread cannot start.
  void post(std::function<void()> job) {
    std::lock_guard lock(mutex_);
    jobs_.push_back(std::move(job));
    if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
    cv_.notify_all();
  }

  // Blocks until every job posted so far has run. From a job itself
  // (a callback waiting on its own pool) it returns at once instead.
  void drain() {
    std::unique_lock lock(mutex_);
    if (std::this_thread::get_id() == id_) return;
    idle_.wait(lock, [&] { return next_ == jobs_.size() && !running_; });
  }

  // Runs what is queued, then ends the thread. Blocks. Idempotent. From a
  // job itself (a callback held its pool's last owner) it cannot wait for
  // its own thread, nor leave it running on this object: it says so on
  // stderr and calls std::terminate().
  void stop() {
    std::thread t;
    {
      std::unique_lock lock(mutex_);
      if (std::this_thread::get_id() == id_) {
        std::fputs(
            "mproc: a pool was destroyed by one of its own callbacks (a callback held its last owner); "
            "it cannot wait for its own callback thread, so the program terminates\n",
            stderr);
        std::terminate();
      }
      stopping_ = true;
      cv_.notify_all();
      t = std::move(thread_);
    }
    if (t.joinable()) t.join();
  }

 private:
  void run() {
    std::unique_lock lock(mutex_);
    id_ = std::this_thread::get_id();
    for (;;) {
      cv_.wait(lock, [&] { return stopping_ || next_ < jobs_.size(); });
      if (next_ == jobs_.size()) break;  // stopping, all run
      std::function<void()> job = std::move(jobs_[next_++]);
      if (next_ == jobs_.size() || (next_ >= 256 && 2 * next_ >= jobs_.size())) {  // drop what has run
        jobs_.erase(jobs_.begin(), jobs_.begin() + static_cast<std::ptrdiff_t>(next_));
        next_ = 0;
      }
      running_ = true;
      lock.unlock();
      try {
        job();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "mproc: a pool callback threw (ignored): %s\n", e.what());
      } catch (...) {
        std::fprintf(stderr, "mproc: a pool callback threw a non-std exception (ignored)\n");
      }
      job = nullptr;
      lock.lock();
      running_ = false;
      if (next_ == jobs_.size()) idle_.notify_all();
    }
    id_ = {};
    idle_.notify_all();
  }

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::condition_variable idle_;
  std::vector<std::function<void()>> jobs_;  // a FIFO: jobs_[next_] runs next
  std::size_t next_ = 0;
  std::thread thread_;
  std::thread::id id_{};
  bool running_ = false;
  bool stopping_ = false;
};

}  // namespace mproc::detail
