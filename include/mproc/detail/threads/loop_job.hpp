// LoopJob: one parallel loop of ThreadPool (map, starmap, map_async,
// parallel_for): the index range, its chunks claimed by atomic adds, the
// first exception, and the wake-up of a thread outside the pool waiting for
// the end. LoopRunner is the task that makes a worker join a loop. Layer:
// detail/threads; builds on detail/os/futex.hpp; used by the scheduler
// (scheduler.hpp, run_loop) and the map jobs (map.hpp).
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <utility>

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/os/futex.hpp>
#include <mproc/detail/util/lean_std.hpp>

namespace mproc::detail {

// A loop over [0, n) split into chunks of `grain` claimed with one atomic
// add each by any number of threads (the caller and runner tasks). The
// chunks are dealt out in `threads` contiguous segments, one per thread
// expected: a thread claims the chunks of its own segment in order, then
// those left in the others'. So each thread walks one run of memory, as
// with TBB's and OpenMP's splitting (threads claiming from one shared
// counter took every other chunk, and parallel_for over 1M doubles ran
// 1.2x as long as with two halves); a thread that starts late or never
// comes only leaves its segment to the others. `threads` (a pool's size)
// is clamped to [1, chunks]; threads() says how many are worth starting.
// The last thread to add its count of done indices finishes the job. After
// the first exception, remaining chunks are skipped. Throws std::bad_alloc.
class LoopJob {
 public:
  LoopJob(std::size_t n, std::size_t grain, std::size_t threads) : n_(n), grain_(grain) {
    const std::size_t chunks = n / grain + (n % grain != 0 ? 1 : 0);
    segment_count_ = std::min(std::max<std::size_t>(threads, 1), std::max<std::size_t>(chunks, 1));
    segments_ = std::make_unique<Segment[]>(segment_count_);
    // Segment i starts at chunk i * per + min(i, extra): the first `extra`
    // segments have one chunk more.
    const std::size_t per = chunks / segment_count_, extra = chunks % segment_count_;
    auto start = [&](std::size_t i) {
      const std::size_t chunk = i * per + std::min(i, extra);
      return chunk < chunks ? chunk * grain : n;
    };
    for (std::size_t i = 0; i < segment_count_; ++i) {
      segments_[i].next.store(start(i), std::memory_order_relaxed);
      segments_[i].end = start(i + 1);
    }
  }
  LoopJob(const LoopJob&) = delete;
  LoopJob& operator=(const LoopJob&) = delete;
  virtual ~LoopJob() = default;

  // The number of segments: threads worth running this loop (the pool size
  // given, at most one per chunk). Never throws.
  std::size_t threads() const noexcept { return segment_count_; }

  // Claims and runs chunks until none is left, starting with the next
  // segment no thread has started with. Never throws.
  void work() noexcept {
    const std::size_t first = entered_.fetch_add(1, std::memory_order_relaxed);
    std::size_t ran = 0;
    for (std::size_t k = 0; k < segment_count_; ++k) {
      Segment& seg = segments_[(first + k) % segment_count_];
      while (seg.next.load(std::memory_order_relaxed) < seg.end) {
        const std::size_t b = seg.next.fetch_add(grain_, std::memory_order_relaxed);
        if (b >= seg.end) break;
        const std::size_t e = b + std::min(grain_, seg.end - b);
        if (!failed_.load(std::memory_order_relaxed)) {
          try {
            run_range(b, e);
          } catch (...) {
            fail(std::current_exception());
          }
        }
        ran += e - b;
      }
    }
    if (ran != 0 && done_.fetch_add(ran, std::memory_order_acq_rel) + ran == n_) finish();
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

  // One thread's run of chunks: [next, end), claimed from the front.
  struct alignas(64) Segment {
    std::atomic<std::size_t> next{0};
    std::size_t end = 0;
  };

  const std::size_t n_;
  const std::size_t grain_;
  std::size_t segment_count_ = 1;
  std::unique_ptr<Segment[]> segments_;
  std::atomic<std::size_t> entered_{0};
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
