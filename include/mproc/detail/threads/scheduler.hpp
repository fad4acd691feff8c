// ThreadScheduler: the engine under ThreadPool — the worker threads, the
// shared injection queue and each worker's stealable queue, the count of
// pending tasks, idle workers' spinning and futex sleep, the waits (wait(),
// a loop's end, an imap item) that run queued tasks when made from a worker,
// close/terminate/join, and run_loop, which spreads a LoopJob over the
// workers and the calling thread. Layer: detail/threads; builds on
// task.hpp, task_ring.hpp, loop_job.hpp and detail/os/futex.hpp; used by
// thread_pool.hpp and imap.hpp.
//
// Design: each worker owns a stealable queue (tasks posted from inside a
// task go there, LIFO for the owner, FIFO for thieves) and a private batch
// refilled from one shared injection queue (tasks posted from outside), so
// the shared lock is taken once per batch, not once per task. Completed
// tasks are counted per batch. Idle workers spin briefly, then sleep on a
// futex; a post wakes a sleeper only when one sleeps and no wake-up is
// already on its way.
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <climits>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include <mproc/async_result.hpp>
#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/os/futex.hpp>
#include <mproc/detail/threads/loop_job.hpp>
#include <mproc/detail/threads/spin_mutex.hpp>
#include <mproc/detail/threads/task.hpp>
#include <mproc/detail/threads/task_ring.hpp>
#include <mproc/detail/util/lean_std.hpp>
#include <mproc/errors.hpp>

namespace mproc::detail {

// All public members are thread-safe; ThreadPool documents the behaviour
// its users see. Neither copyable nor movable (the workers point to it).
class ThreadScheduler final : public WaitHelper {
 public:
  // Starts `threads` workers (>= 1: ThreadPool checks it). Throws
  // std::system_error if a thread cannot be started.
  explicit ThreadScheduler(std::size_t threads) {
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

  ThreadScheduler(const ThreadScheduler&) = delete;
  ThreadScheduler& operator=(const ThreadScheduler&) = delete;

  // close(), then joins the workers: every queued task still runs. Blocks.
  // On one of its own workers (a task dropped the pool's last owner) it
  // cannot wait for itself: it says so on stderr and calls std::terminate().
  ~ThreadScheduler() {
    if (current_worker() != nullptr) {
      std::fputs(
          "mproc: a ThreadPool was destroyed by one of its own tasks (a task held its last owner); it "
          "cannot wait for its own thread, so the program terminates\n",
          stderr);
      std::terminate();
    }
    close();
    join_threads();
    alive_->store(false, std::memory_order_release);
  }

  // Number of worker threads.
  std::size_t size() const noexcept { return workers_.size(); }

  // Tasks queued and not finished yet (a snapshot). Non-blocking.
  std::size_t pending() const noexcept {
    const auto p = pending_.load(std::memory_order_acquire);
    return p > 0 ? static_cast<std::size_t>(p) : 0;
  }

  // A flag that stays true while this scheduler exists, for what may outlive
  // it (an imap result): false once every task has run and the workers are
  // gone. Non-blocking.
  std::shared_ptr<const std::atomic<bool>> liveness() const { return alive_; }

  // This scheduler as the WaitHelper of the AsyncResults it completes.
  WaitHelper* wait_helper() noexcept { return this; }

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
        ThreadScheduler& p;
        ~Leave() {
          p.waiters_.fetch_sub(1, std::memory_order_seq_cst);
          p.inside_waiters_.fetch_sub(1, std::memory_order_seq_cst);
        }
      } leave{*this};
      for (;;) {
        if (pending_.load(std::memory_order_seq_cst) <= inside_waiters_.load(std::memory_order_seq_cst)) break;
        if (help_once(*w)) continue;
        const std::uint32_t seq = done_word_.load(std::memory_order_seq_cst);
        if (pending_.load(std::memory_order_seq_cst) <= inside_waiters_.load(std::memory_order_seq_cst)) break;
        futex_wait(done_word_, seq, Clock::now() + help_slice, FutexScope::process);
      }
    } else {
      waiters_.fetch_add(1, std::memory_order_seq_cst);
      for (;;) {
        const std::uint32_t seq = done_word_.load(std::memory_order_seq_cst);
        if (pending_.load(std::memory_order_seq_cst) <= 0) break;
        futex_wait(done_word_, seq, Clock::time_point::max(), FutexScope::process);
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
    TaskRing dropped;
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
    const std::size_t count = dropped.size();
    while (!dropped.empty()) dropped.pop_front().cancel();
    retire(static_cast<std::int64_t>(count));
    wake_workers(INT_MAX);
  }

  // Blocks until every worker has exited, i.e. all work is done (after
  // close()) or the running tasks finished (after terminate()). Throws
  // ProcessError if the pool is still open (Python: ValueError) or if
  // called from one of the pool's own tasks.
  void join() {
    if (!closed_.load(std::memory_order_acquire))
      throw ProcessError("mproc: ThreadPool::join: the pool is still running; call close() or terminate() first");
    if (current_worker() != nullptr)
      throw ProcessError(
          "mproc: ThreadPool::join called from one of the pool's own tasks (it would wait for "
          "itself)");
    join_threads();
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
  bool push(Task&& t, bool internal) {
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
  std::size_t push_runners(const std::shared_ptr<LoopJob>& job, std::size_t count) {
    if (count == 0) return 0;
    if (Worker* w = current_worker()) {
      if (terminated_.load(std::memory_order_acquire)) return 0;
      pending_.fetch_add(static_cast<std::int64_t>(count), std::memory_order_relaxed);
      std::lock_guard lock(w->mutex);
      for (std::size_t i = 0; i < count; ++i) w->local.push_back(Task(LoopRunner{job}));
      w->local_size.store(w->local.size(), std::memory_order_seq_cst);
    } else {
      std::lock_guard lock(inj_mutex_);
      if (exiting_ || terminated_.load(std::memory_order_relaxed)) return 0;
      pending_.fetch_add(static_cast<std::int64_t>(count), std::memory_order_relaxed);
      for (std::size_t i = 0; i < count; ++i) inj_.push_back(Task(LoopRunner{job}));
      inj_size_.store(inj_.size(), std::memory_order_seq_cst);
    }
    // Spinning workers take runners without a wake-up. Waking a parked one
    // besides cost every loop a futex call and a woken thread that spun on a
    // core the loop needed (~8x the context switches, 5-18 % slower, for
    // parallel_for over 1M doubles). A runner nobody takes is harmless: the
    // loop's other threads do its chunks, and a spinner that leaves without
    // it sees it in park() and runs it (it finds the loop done).
    const int wake = static_cast<int>(count) - spinners_.load(std::memory_order_seq_cst);
    if (wake > 0) wake_workers(wake);
    return count;
  }

  // Waits on `cv` for `pred` until `deadline`; on a worker of this pool,
  // runs queued tasks meanwhile. Returns pred().
  template <class Pred>
  bool wait_helping(std::unique_lock<std::mutex>& lock, std::condition_variable& cv, Pred pred,
                    Clock::time_point deadline) {
    Worker* w = current_worker();
    if (w == nullptr) {
      if (deadline == Clock::time_point::max()) {
        cv.wait(lock, pred);
        return true;
      }
      return cv.wait_until(lock, deadline, pred);
    }
    for (;;) {
      if (pred()) return true;
      if (Clock::now() >= deadline) return false;
      lock.unlock();
      const bool ran = help_once(*w);
      lock.lock();
      if (ran) continue;
      cv.wait_until(lock, std::min(deadline, Clock::now() + help_slice), pred);
    }
  }

  // Runs body(b, e) over [0, n) in chunks on the workers and the calling
  // thread; blocks until done; rethrows the first exception.
  template <class Body>
  void run_loop(std::size_t n, std::size_t grain, Body& body) {
    if (n <= grain) {
      body(std::size_t{0}, n);
      return;
    }
    struct Job final : LoopJob {
      Job(std::size_t count, std::size_t g, std::size_t threads, Body* b) : LoopJob(count, g, threads), body(b) {}
      void run_range(std::size_t b, std::size_t e) override { (*body)(b, e); }
      Body* body;
    };
    // The calling thread is one of size() threads at work (as in TBB and
    // OpenMP), so a loop never oversubscribes the cores the pool was sized for.
    auto job = std::make_shared<Job>(n, grain, size(), &body);
    push_runners(job, job->threads() - 1);
    job->work();
    wait_job(*job);
    if (auto error = job->take_error()) std::rethrow_exception(error);
  }

 private:
  // Tasks a worker takes from the injection queue under one lock, at most
  // (grab() takes about half a fair share, so long tasks are not hoarded):
  // 64 makes the shared lock cost negligible per task for empty tasks.
  static constexpr std::size_t batch_capacity = 64;
  // An idle worker spins for idle_yield_after (work posted in bursts comes
  // back within it, and a futex wake-up costs more), then yields until
  // idle_spin_limit, then sleeps on the futex.
  static constexpr std::chrono::microseconds idle_yield_after{20};
  static constexpr std::chrono::microseconds idle_spin_limit{200};
  // A worker waiting for something that other threads complete runs queued
  // tasks, and otherwise sleeps at most this long before looking again.
  static constexpr std::chrono::milliseconds help_slice{1};

  struct Worker {
    explicit Worker(std::size_t i) noexcept : index(i) {}
    // Shared: tasks posted from this worker's tasks, stealable.
    SpinMutex mutex;
    TaskRing local;
    std::atomic<std::size_t> local_size{0};
    // Owner only: a batch taken from the injection queue, and completions
    // not yet subtracted from pending_.
    alignas(64) Task batch[batch_capacity];
    std::size_t head = 0;
    std::size_t tail = 0;
    std::int64_t done = 0;
    std::size_t index;
    std::thread thread;
  };

  struct Current {
    const ThreadScheduler* scheduler = nullptr;
    Worker* worker = nullptr;
  };
  static Current& current() noexcept {
    thread_local Current c;
    return c;
  }
  Worker* current_worker() const noexcept {
    const Current& c = current();
    return c.scheduler == this ? c.worker : nullptr;
  }

  // Wakes one sleeping worker, unless none sleeps or a wake-up is on its way.
  void notify_one() {
    if (sleepers_.load(std::memory_order_seq_cst) == 0) return;
    if (wake_pending_.exchange(true, std::memory_order_seq_cst)) return;
    epoch_.fetch_add(1, std::memory_order_seq_cst);
    futex_wake(epoch_, 1, FutexScope::process);
  }

  void wake_workers(int n) {
    if (sleepers_.load(std::memory_order_seq_cst) == 0) return;
    epoch_.fetch_add(1, std::memory_order_seq_cst);
    futex_wake(epoch_, n, FutexScope::process);
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
  bool try_get(Worker& w, Task& out) {
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
  bool grab(Worker& w, Task& out) {
    std::size_t left;
    {
      std::lock_guard lock(inj_mutex_);
      const std::size_t n = inj_.size();
      if (n == 0) return false;
      const std::size_t k = std::min(std::max<std::size_t>(n / (2 * workers_.size()), 1), batch_capacity);
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

  void execute(Worker& w, Task& t) {
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
    Task t;
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
    if (waiters_.load(std::memory_order_seq_cst) != 0 && left <= inside_waiters_.load(std::memory_order_seq_cst)) {
      done_word_.fetch_add(1, std::memory_order_seq_cst);
      futex_wake(done_word_, INT_MAX, FutexScope::process);
    }
    if (left == 0 && closed_.load(std::memory_order_seq_cst)) wake_workers(INT_MAX);
  }

  // WaitHelper: lets AsyncResult::get() run queued tasks when
  // called on one of this pool's workers.
  bool help_while_waiting() override {
    Worker* w = current_worker();
    return w != nullptr && help_once(*w);
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
  bool idle_spin() {
    spinners_.fetch_add(1, std::memory_order_seq_cst);
    const bool found = spin_for_work();
    spinners_.fetch_sub(1, std::memory_order_seq_cst);
    return found;
  }

  // idle_spin's loop: whether work appeared within idle_spin_limit.
  bool spin_for_work() const noexcept {
    const auto start = Clock::now();
    for (unsigned i = 1;; ++i) {
      if (has_work()) return true;
      if ((i & 63) == 0) {
        const auto spent = Clock::now() - start;
        if (spent > idle_spin_limit) return false;
        if (spent > idle_yield_after) std::this_thread::yield();
      }
      cpu_relax();
    }
  }

  void park() {
    wake_pending_.store(false, std::memory_order_seq_cst);
    const std::uint32_t seen = epoch_.load(std::memory_order_seq_cst);
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    if (!has_work() && !(closed_.load(std::memory_order_seq_cst) && pending_.load(std::memory_order_seq_cst) == 0))
      futex_wait(epoch_, seen, Clock::time_point::max(), FutexScope::process);
    sleepers_.fetch_sub(1, std::memory_order_seq_cst);
    wake_pending_.store(false, std::memory_order_seq_cst);
  }

  void worker_main(Worker& w) {
    current() = Current{this, &w};
    Task t;
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

  void wait_job(LoopJob& job) {
    if (job.finished()) return;
    Worker* w = current_worker();
    if (w == nullptr) {
      job.sleep_until_finished(Clock::time_point::max());
      return;
    }
    flush(*w);
    while (!job.finished()) {
      if (help_once(*w)) continue;
      job.sleep_until_finished(Clock::now() + help_slice);
    }
  }

  std::vector<std::unique_ptr<Worker>> workers_;

  alignas(64) SpinMutex inj_mutex_;
  TaskRing inj_;
  bool exiting_ = false;  // guarded by inj_mutex_
  std::atomic<std::size_t> inj_size_{0};
  std::atomic<bool> closed_{false};
  std::atomic<bool> terminated_{false};

  alignas(64) std::atomic<std::int64_t> pending_{0};

  alignas(64) std::atomic<std::uint32_t> epoch_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> wake_pending_{false};
  alignas(64) std::atomic<int> spinners_{0};  // workers in idle_spin(); apart from what posts read

  alignas(64) std::atomic<std::uint32_t> done_word_{0};
  std::atomic<int> waiters_{0};
  std::atomic<std::int64_t> inside_waiters_{0};

  std::mutex error_mutex_;
  std::exception_ptr first_error_;
  std::mutex join_mutex_;
  const std::shared_ptr<std::atomic<bool>> alive_ = std::make_shared<std::atomic<bool>>(true);
};

}  // namespace mproc::detail
