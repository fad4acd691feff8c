// LoopJob: one parallel loop of ThreadPool (map, starmap, map_async,
// parallel_for): the index range, its chunks claimed by atomic adds, the
// first exception, and the wake-up of a thread outside the pool waiting for
// the end. LoopRunner is the task that makes a worker join a loop. Layer:
// detail/threads; builds on detail/os/futex.hpp; used by the scheduler
// (scheduler.hpp, run_loop) and the map jobs (map.hpp).
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <utility>

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/os/futex.hpp>

namespace mproc::detail {

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
    for (int i = 0; i < finish_spins; ++i) {
      if (finished()) return true;
      cpu_relax();
    }
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    while (finished_.load(std::memory_order_seq_cst) == 0) {
      if (futex_wait(finished_, 0, deadline, FutexScope::process) == FutexWait::timed_out) break;
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
  // sleep_until_finished() spins this many times before its futex sleep:
  // the other threads' last chunks usually end within that, and a futex
  // wait plus wake-up costs more.
  static constexpr int finish_spins = 2048;

  void finish() noexcept {
    on_finish();
    finished_.store(1, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) != 0) {
      try {
        futex_wake(finished_, INT_MAX, FutexScope::process);
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

}  // namespace mproc::detail
