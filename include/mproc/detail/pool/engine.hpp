// The owner side of the process pool: a zygote, the worker
// processes forked from it, and one I/O thread that feeds tasks to workers,
// collects results, notices deaths, replaces workers and shuts down.
//
// Threads that submit tasks never touch a socket: they queue tasks under the
// engine's mutex and wake the I/O thread through an eventfd. Results and
// failures are delivered to each task's TaskSink on the I/O thread.
//
// Failures. A worker that dies fails only the task whose user code it had
// started (read from the status board); the tasks it held but never started
// run elsewhere. A worker that cannot be started (fork or descriptors
// refused) is retried with backoff while other workers serve; when none is
// left the pool breaks: pending and later calls fail with the cause. The I/O
// thread never lets an exception escape: an unexpected one breaks the pool.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <mproc/detail/os/oom.hpp>
#include <mproc/detail/pool/affinity.hpp>
#include <mproc/detail/pool/worker.hpp>
#include <mproc/detail/pool/zygote.hpp>
#include <mproc/detail/shm/transfer_heap.hpp>
#include <mproc/start_method.hpp>

namespace mproc::detail {

// Receives the outcome of tasks. Called on the pool's I/O thread; must not block.
class TaskSink {
 public:
  virtual ~TaskSink() = default;
  // The task's results arrived: `results` holds `count` items.
  virtual void complete(std::size_t chunk, Reader& results, std::uint64_t count) = 0;
  // The task failed as a whole (its worker died, the pool was terminated or broke).
  virtual void fail(std::size_t chunk, std::exception_ptr error) = 0;
  // The task was handed to a worker.
  virtual void dispatched() {}
  // Whether the task's results are no longer wanted (undispatched tasks are dropped).
  virtual bool cancelled() const { return false; }
  // Called just before the task is sent to a worker: false drops it instead.
  virtual bool claim() { return !cancelled(); }
  // The position of chunk `chunk`'s first input in the call's input
  // sequence (map, imap), or nullopt (apply_async).
  virtual std::optional<std::size_t> first_input(std::size_t /*chunk*/) const { return std::nullopt; }
};

struct PoolTask {
  std::vector<std::byte> payload;  // TaskHeader + encoded arguments (or their heap handle)
  TransferHeap::Block args;        // large arguments, freed with the task
  std::uint64_t count = 1;
  std::shared_ptr<TaskSink> sink;
  std::size_t chunk = 0;
  std::uint64_t locality = 0;  // key of the largest shared block it reads (affinity.hpp), or 0
  std::uint64_t locality_bytes = 0;  // that block's size
  // Set by the engine.
  std::uint64_t id = 0;
  Clock::time_point sent{};
};

struct EngineConfig {
  int processes = 1;
  StartMethod method = StartMethod::automatic;
  std::size_t maxtasksperchild = 0;   // 0: unlimited
  std::vector<std::byte> initializer;  // [trampoline][fn][encoded arguments], or empty
};

// The results of a task that came in a memfd, mapped read-only.
class ResultMapping {
 public:
  // Checks that `fd` is a sealed memfd of the size `payload` states; returns
  // the size. Throws ProcessError if not (the worker is broken).
  static std::size_t validate(const UniqueFd& fd, std::span<const std::byte> payload) {
    const std::optional<std::uint64_t> claimed = read_result_fd_payload(payload);
    if (!fd || !claimed) throw ProcessError("mproc: Pool: malformed large result frame");
    const std::uint64_t size = *claimed;
    struct stat st{};
    const int seals = ::fcntl(fd.get(), F_GET_SEALS);
    if (::fstat(fd.get(), &st) < 0 || !S_ISREG(st.st_mode) || static_cast<std::uint64_t>(st.st_size) != size ||
        size == 0 || seals < 0 || (seals & kResultSeals) != kResultSeals)
      throw ProcessError("mproc: Pool: a worker sent a large result that is not a sealed memfd of the stated size");
    return static_cast<std::size_t>(size);
  }

  // Maps `size` bytes of a validated `fd`. Throws ProcessError if this
  // process cannot map them (address space or memory exhausted).
  ResultMapping(const UniqueFd& fd, std::size_t size) : size_(size) {
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd.get(), 0);
    if (p == MAP_FAILED) throw_errno("Pool: cannot map a task's result of " + std::to_string(size) + " bytes");
    data_ = static_cast<const std::byte*>(p);
  }
  ~ResultMapping() { ::munmap(const_cast<std::byte*>(data_), size_); }
  ResultMapping(const ResultMapping&) = delete;
  ResultMapping& operator=(const ResultMapping&) = delete;
  std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }

 private:
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

class PoolEngine {
 public:
  // Starts the zygote and asks it for the workers. Blocks for the fork of
  // the zygote. Throws ProcessError (fork, descriptors, memory or the I/O
  // thread refused); nothing is left behind then.
  explicit PoolEngine(EngineConfig cfg) : cfg_(std::move(cfg)), owner_(::getpid()) {
    wake_ = std::move(PrivateFds::instance().create<1>("eventfd (process pool)", [](int* out) {
      out[0] = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      return out[0];
    })[0]);
    slots_.resize(static_cast<std::size_t>(cfg_.processes));
    board_ = create_segment(board_bytes(slots_.size()), "mproc:pool-board");
    std::vector<std::byte> config =
        encode_worker_config(board_->handle(ShmKind::shared_memory, 0, board_->size()), cfg_.initializer);
    // The workers run with the creator's signal mask; the I/O thread blocks
    // every signal, so the host's handlers never run on it.
    sigset_t creator_mask, all;
    ::pthread_sigmask(SIG_SETMASK, nullptr, &creator_mask);
    StartMethod method = cfg_.method;
    if (method == StartMethod::automatic) {
      method = thread_count() == 1 || !ForkServer::instance().running() ? StartMethod::fork : StartMethod::forkserver;
    }
    if (method == StartMethod::forkserver) {
      ForkServer::instance().start();
      auto [pid, fd] = ForkServer::instance().make_template(&pool_worker_main, config);
      template_ch_ = Channel(std::move(fd));
    } else {
      auto [child, fd] = fork_zygote(&pool_worker_main, std::move(config), creator_mask);
      zygote_ = std::move(child);
      template_ch_ = Channel(std::move(fd));
    }
    for (std::size_t i = 0; i < slots_.size(); ++i) spawn(i);
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, nullptr);
    try {
      io_ = std::make_unique<std::thread>([this] { io_main(); });
    } catch (const std::system_error& e) {
      ::pthread_sigmask(SIG_SETMASK, &creator_mask, nullptr);
      throw ProcessError(std::string("mproc: Pool: cannot start its I/O thread: ") + e.what());
    } catch (...) {
      ::pthread_sigmask(SIG_SETMASK, &creator_mask, nullptr);
      throw;
    }
    ::pthread_sigmask(SIG_SETMASK, &creator_mask, nullptr);
  }

  PoolEngine(const PoolEngine&) = delete;
  PoolEngine& operator=(const PoolEngine&) = delete;

  // Terminates if still running (the Pool decides close+join before this).
  // In a forked copy of the owner it touches nothing of the owner's.
  ~PoolEngine() {
    if (foreign()) {
      (void)io_.release();  // the thread exists only in the owner
      return;
    }
    terminate();
    join_io();
  }

  int processes() const noexcept { return cfg_.processes; }

  // Where submitters encode large arguments.
  TransferHeap& heap() noexcept { return *heap_; }

  // Queues tasks. Non-blocking. Throws ProcessError if the pool is closed,
  // terminated or broken, or used from another process than its owner.
  void submit(std::vector<PoolTask>& tasks) {
    if (tasks.empty()) return;
    {
      std::lock_guard lock(mutex_);
      check_accepting_locked();
      for (auto& t : tasks) pending_.push_back(std::move(t));
    }
    tasks.clear();
    wake_if_sleeping();
  }

  void submit(PoolTask task) {
    {
      std::lock_guard lock(mutex_);
      check_accepting_locked();
      pending_.push_back(std::move(task));
    }
    wake_if_sleeping();
  }

  // Throws the reason if the pool cannot accept work. Non-blocking.
  void check_accepting() {
    std::lock_guard lock(mutex_);
    check_accepting_locked();
  }

  // Stops accepting tasks; queued ones still run. Non-blocking, idempotent.
  // Throws ProcessError in another process than the owner.
  void close() {
    check_owner();
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
    }
    wake();
  }

  // Fails every queued and running task and kills the workers. Non-blocking;
  // join() waits for the teardown. Idempotent. Throws as close().
  void terminate() {
    check_owner();
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
      terminate_ = true;
    }
    wake();
  }

  // Blocks until every task has finished (or failed) and every process of the
  // pool has exited. Throws ProcessError if neither close() nor terminate()
  // was called first, or in another process than the owner.
  void join() {
    check_owner();
    {
      std::lock_guard lock(mutex_);
      if (!closed_)
        throw ProcessError(
            "mproc: Pool.join() called while the pool is still running (call close() or terminate() first)");
    }
    join_io();
  }

  bool closed() const {
    std::lock_guard lock(mutex_);
    return closed_;
  }

  // Pids of the live workers, for diagnostics and tests. Until every worker
  // of the pool has started once, waits for that (up to `deadline`, or until
  // the pool is broken, closed or terminated), so that a new pool reports
  // all of its workers, as Python's does. Blocking; thread-safe.
  std::vector<pid_t> worker_pids(Clock::time_point deadline) const {
    std::unique_lock lock(mutex_);
    pids_cv_.wait_until(lock, deadline, [&] { return all_started_ || broken_ || closed_ || terminate_; });
    return pids_;
  }

 private:
  enum class State { spawning, starting, ready, retiring, stopping, dead };

  struct Slot {
    State state = State::dead;
    pid_t pid = -1;
    Channel ch;
    std::deque<PoolTask> inflight;
    // Arguments of tasks failed while this worker may still read them: kept
    // until it is gone, so that the heap never hands their bytes to another task.
    std::vector<TransferHeap::Block> orphans;
    std::size_t dispatched = 0;  // tasks sent since spawn (maxtasksperchild)
    double ewma_ns = 1e6;  // mean service time of a task; seeded as slow (one at a time)
    Clock::time_point last_done{};
    int spawn_failures = 0;  // consecutive failures to start a worker here
    Clock::time_point respawn_at = Clock::time_point::max();  // dead slot: when to retry
    // Free, while the queued tasks wait for other workers (dispatch): since when.
    Clock::time_point waiting_since = Clock::time_point::max();
    // Being topped up to its inflight_limit (see has_room).
    bool filling = true;
    ResultRingReader ring;  // this worker's result ring
    bool ring_broken = false;  // it wrote nonsense there: read no more of it
    bool kill_ordered = false;  // kill_worker was called (done when the pid is known)
  };

  static bool alive(State s) noexcept { return s != State::dead; }

  bool foreign() const noexcept { return owner_ != ::getpid(); }

  void check_owner() const {
    if (foreign())
      throw ProcessError("mproc: Pool: this pool belongs to process " + std::to_string(owner_) +
                         "; a forked child cannot use it (create a pool in the child instead)");
  }

  void check_accepting_locked() const {
    check_owner();
    if (broken_) std::rethrow_exception(broken_);
    if (terminate_) throw ProcessError("mproc: Pool has been terminated: it accepts no new tasks");
    if (closed_) throw ProcessError("mproc: Pool is closed: it accepts no new tasks");
  }

  // The I/O thread raises io_sleeping_ before it looks at pending_ for the
  // last time and sleeps; a submitter that queued after that look sees the
  // flag (both go through mutex_), so no wake-up is lost and most are saved.
  void wake_if_sleeping() noexcept {
    if (io_sleeping_.load()) wake();
  }

  void wake() noexcept {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto r = ::write(wake_.get(), &one, sizeof one);
  }

  void join_io() {
    std::lock_guard lock(join_mutex_);
    if (io_ && io_->joinable()) io_->join();
  }

  SlotStatus& status(std::size_t index) noexcept { return BoardView(board_->data()).slot(index); }
  std::atomic<std::uint32_t>& owner_asleep() noexcept { return BoardView(board_->data()).header().owner_asleep; }

  // ---------------------------------------------------------------- I/O thread

  // Asks the zygote for a worker in slot `index`. A failure here (out of
  // descriptors or memory) counts as a failed spawn.
  void spawn(std::size_t index) {
    Slot& s = slots_[index];
    const int failures = s.spawn_failures;
    s = Slot{};
    affinity_.forget_slot(index);
    s.spawn_failures = failures;
    status(index).started.store(0, std::memory_order_relaxed);
    s.ring.reset(status(index).ring);
    try {
      auto [mine, theirs] = socket_pair();
      set_nonblocking(mine.get());
      s.ch = Channel(std::move(mine));
      template_ch_.put(tm_spawn, index, {}, std::move(theirs));
      s.state = State::spawning;
    } catch (const std::exception& e) {
      s.ch.close();
      spawn_failed(index, e.what());
    }
  }

  // A worker for slot `index` could not be started: retry with backoff while
  // other workers serve; with none left after a few tries, break the pool.
  void spawn_failed(std::size_t index, const std::string& why) {
    Slot& s = slots_[index];
    s.state = State::dead;
    s.pid = -1;
    s.ch.close();
    ++s.spawn_failures;
    if (stopping_ || broken_local_) return;
    const bool others = std::any_of(slots_.begin(), slots_.end(), [](const Slot& o) { return alive(o.state); });
    if (!others && s.spawn_failures >= kSpawnAttempts) {
      break_pool(std::make_exception_ptr(ProcessError("mproc: Pool: cannot start a worker process (" + why +
                                                      "); the pool has no worker left and cannot run tasks")));
      return;
    }
    const auto backoff = kSpawnBackoff * (1 << std::min(s.spawn_failures - 1, 4));
    s.respawn_at = Clock::now() + std::min<Clock::duration>(backoff, kSpawnBackoffMax);
  }

  // Attempts to start a worker before the pool gives up (none alive), and
  // the first pause between attempts (doubling, at most kSpawnBackoffMax):
  // a transient EAGAIN from fork() passes, a hard limit fails in ~0.7 s.
  static constexpr int kSpawnAttempts = 3;
  static constexpr auto kSpawnBackoff = std::chrono::milliseconds(100);
  static constexpr auto kSpawnBackoffMax = std::chrono::seconds(2);

  // Tasks sent ahead to a worker cover ~kAheadNs of its work: many for tiny
  // tasks (throughput), one for slow ones (>= kAheadNs), so that a short task
  // never waits behind a long one while another worker is idle, and a crash
  // fails only the running task. 400 us: a refill (and the owner's wake-up
  // that brings it) comes once per ~200 us of a worker's work. With 100 us,
  // tasks of 10 us and 100 us sent one by one ran 1.2-1.3x as long (the
  // wake-ups took a core of a 2-core machine), short maps and maps of mixed
  // task sizes too.
  static constexpr double kAheadNs = 400'000.0;

  std::size_t inflight_limit(const Slot& s) const noexcept {
    const double n = 1.0 + kAheadNs / std::max(s.ewma_ns, 1.0);
    return static_cast<std::size_t>(std::clamp(n, 1.0, 64.0));
  }

  static void fail_task(PoolTask& t, std::exception_ptr e) {
    if (t.sink) t.sink->fail(t.chunk, std::move(e));
  }

  // A worker takes tasks until it holds inflight_limit of them, then no more
  // until half of them are done: refills leave in batches (one write to the
  // worker, which then reads several tasks at once) instead of one task per
  // result. With a limit of 1 or 2 this is the plain rule.
  bool has_room(Slot& s) noexcept {
    if (s.state != State::ready) return false;
    if (s.inflight.size() <= refill_at(s)) s.filling = true;
    if (s.inflight.size() >= inflight_limit(s)) s.filling = false;
    return s.filling;
  }

  // The in-flight count at which a full worker takes tasks again (has_room).
  std::size_t refill_at(const Slot& s) const noexcept { return inflight_limit(s) / 2; }

  // Sends queued tasks to workers with room, the least loaded first. A task
  // that reads a large shared block goes to a worker that has that block
  // mapped (affinity.hpp) when one has room; if only busy workers have it, a
  // free worker waits for them about as long as mapping the block would take
  // it (locality_patience), then takes the task. Tasks within
  // locality_window of the front may overtake it.
  void dispatch() {
    steal_at_ = Clock::time_point::max();
    const auto now = Clock::now();  // one reading for the round: the tasks leave together (flush)
    for (;;) {
      while (!queue_.empty() && queue_.front().sink && queue_.front().sink->cancelled()) queue_.pop_front();
      if (queue_.empty()) {
        for (auto& s : slots_) s.waiting_since = Clock::time_point::max();
        return;
      }
      std::uint64_t ready_mask = 0, free_mask = 0;
      Slot* best = nullptr;
      for (std::size_t i = 0; i < slots_.size(); ++i) {
        Slot& s = slots_[i];
        if (s.state == State::ready) ready_mask |= SegmentAffinity::bit(i);
        if (!has_room(s)) continue;
        free_mask |= SegmentAffinity::bit(i);
        if (best == nullptr || s.inflight.size() < best->inflight.size()) best = &s;
      }
      if (best == nullptr) return;
      if (queue_.front().locality == 0) {
        send(*best, queue_.begin(), now);
        continue;
      }
      // Per free slot, the first task in the window it has mapped; else the
      // first task nobody (alive) has mapped.
      const std::size_t window = std::min(queue_.size(), locality_window);
      auto open = queue_.end();
      bool sent = false;
      for (std::size_t k = 0; k < window && !sent; ++k) {
        const auto it = queue_.begin() + static_cast<std::ptrdiff_t>(k);
        const std::uint64_t mapped = affinity_.mapped_by(it->locality) & ready_mask;
        if (mapped == 0) {
          if (open == queue_.end()) open = it;
        } else if ((mapped & free_mask) != 0) {
          send(slots_[static_cast<std::size_t>(std::countr_zero(mapped & free_mask))], it, now);
          sent = true;
        }
      }
      if (sent) continue;
      if (open != queue_.end()) {
        send(*best, open, now);
        continue;
      }
      // Only busy workers have these tasks' blocks: the free worker that has
      // waited longest takes the front task once its patience is out.
      Slot* longest = nullptr;
      for (auto& s : slots_) {
        if (!has_room(s)) continue;
        if (s.waiting_since == Clock::time_point::max()) s.waiting_since = now;
        if (longest == nullptr || s.waiting_since < longest->waiting_since) longest = &s;
      }
      const auto until = longest->waiting_since + locality_patience(queue_.front().locality_bytes);
      if (now < until) {
        steal_at_ = until;
        return;
      }
      send(*longest, queue_.begin(), now);
    }
  }

  // Sends the queued task at `it` to slot `s` (or drops it if its caller
  // cancelled it), and takes it off the queue; `now`: the time it leaves.
  void send(Slot& s, std::deque<PoolTask>::iterator it, Clock::time_point now) {
    PoolTask t = std::move(*it);
    queue_.erase(it);
    if (t.sink && !t.sink->claim()) return;
    t.id = ++next_id_;
    t.sent = now;
    s.waiting_since = Clock::time_point::max();
    s.ch.put(pm_task, t.id, t.payload);  // the payload stays for a possible requeue
    affinity_.note(t.locality, static_cast<std::size_t>(&s - slots_.data()));
    if (t.sink) t.sink->dispatched();
    if (s.inflight.empty()) s.last_done = t.sent;
    s.inflight.push_back(std::move(t));
    if (cfg_.maxtasksperchild != 0 && ++s.dispatched >= cfg_.maxtasksperchild) s.state = State::retiring;
  }

  // Folds the service time of `done` tasks that slot `s` finished between
  // `since` and `now` into its mean.
  static void record_service(Slot& s, Clock::time_point since, std::size_t done, Clock::time_point now) noexcept {
    const double sample =
        static_cast<double>(std::chrono::nanoseconds(now - since).count()) / static_cast<double>(done);
    for (std::size_t i = 0; i < done; ++i) s.ewma_ns = 0.75 * s.ewma_ns + 0.25 * sample;
    s.last_done = now;
  }

  // When slot `s` could start its front task.
  static Clock::time_point front_start(const Slot& s) noexcept {
    return std::max(s.last_done, s.inflight.front().sent);
  }

  // Delivers results (in `bytes`) of the front task of slot `s`, which
  // arrived at `now`.
  void complete_front(Slot& s, std::span<const std::byte> bytes, Clock::time_point now) {
    record_service(s, front_start(s), 1, now);
    deliver_front(s, bytes);
  }

  // Delivers results (in `bytes`) of the front task of slot `s` (its time is the caller's to record).
  void deliver_front(Slot& s, std::span<const std::byte> bytes) {
    PoolTask t = std::move(s.inflight.front());
    s.inflight.pop_front();
    if (t.sink) {
      Reader r(bytes);
      t.sink->complete(t.chunk, r, t.count);
    }
  }

  // Delivers the results waiting in worker `index`'s result ring, in order,
  // up to one whose task has an earlier result still in the socket (results
  // too large for the ring). Results found together share their time span
  // in the service-time mean. Returns false if the ring holds nonsense (the
  // worker is then killed).
  bool drain_ring(std::size_t index) {
    Slot& s = slots_[index];
    if (s.ring_broken) return false;
    SlotStatus& st = status(index);
    std::uint64_t id = 0;
    std::span<const std::byte> bytes;
    Clock::time_point since{};
    std::size_t done = 0;
    bool sane = true;
    for (;;) {
      const auto next = s.ring.peek(st.ring, BoardView(board_->data()).ring_data(index), id, bytes);
      if (next == ResultRingReader::Next::empty) break;
      if (next == ResultRingReader::Next::entry) {
        if (!s.inflight.empty() && s.inflight.front().id == id) {
          ring_copy_.assign(bytes.begin(), bytes.end());  // the worker may still write the ring
          s.ring.pop(st.ring);
          if (done++ == 0) since = front_start(s);
          deliver_front(s, ring_copy_);
          continue;
        }
        const bool later =
            std::any_of(s.inflight.begin(), s.inflight.end(), [&](const PoolTask& t) { return t.id == id; });
        if (later) break;  // after a result that comes through the socket
      }
      s.ring_broken = true;
      kill_worker(s);
      sane = false;
      break;
    }
    if (done != 0) record_service(s, since, done, Clock::now());
    return sane;
  }

  // Before the I/O thread sleeps: each worker is to wake it with the result
  // that lets it refill that worker (has_room), not with every result, if
  // the tasks it still holds then cover the wake-up (kWakeLeadNs); else, and
  // when it holds no more than that, with each result.
  void set_wake_marks() noexcept {
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      const Slot& s = slots_[i];
      const std::size_t n = s.inflight.size();
      const std::size_t keep = refill_at(s);
      const bool lead = static_cast<double>(keep) * s.ewma_ns >= kWakeLeadNs;
      const std::uint64_t mark = n == 0 ? 0 : s.inflight[lead && n > keep ? n - keep - 1 : 0].id;
      status(i).ring.wake_at.store(mark, std::memory_order_relaxed);
    }
  }

  // Work a worker must still hold when it wakes the owner for a refill: a
  // wake-up and a refill take ~10-25 us on a loaded 2-core machine; with
  // less left the worker would run dry first (tiny tasks).
  static constexpr double kWakeLeadNs = 25'000.0;

  // Drains every live worker's result ring.
  void drain_rings() {
    for (std::size_t i = 0; i < slots_.size(); ++i)
      if (slots_[i].state != State::dead) drain_ring(i);
  }

  bool rings_have_entries() noexcept {
    for (std::size_t i = 0; i < slots_.size(); ++i)
      if (slots_[i].state != State::dead && !slots_[i].ring_broken && slots_[i].ring.has_entries(status(i).ring))
        return true;
    return false;
  }

  void handle_worker_frames(std::size_t index) {
    Slot& s = slots_[index];
    Frame f;
    for (;;) {
      try {
        if (!s.ch.next(f)) return;
      } catch (const ProcessError&) {
        kill_worker(s);  // malformed stream: the worker is broken
        return;
      }
      switch (f.header.type) {
        case pm_ready:
          // May arrive before the zygote's tm_spawned: the pid comes later.
          if (s.state == State::starting || s.state == State::spawning) s.state = State::ready;
          startup_deaths_ = 0;
          s.spawn_failures = 0;
          break;
        case pm_init_failed: {
          ExceptionInfo info = decode_init_failure(f.payload);
          break_pool(std::make_exception_ptr(
              RemoteError(std::move(info.type_name), "in the pool initializer: " + info.message)));
          break;
        }
        case pm_results_ready:
          status(index).ring.wake_pending.store(0, std::memory_order_seq_cst);
          if (!drain_ring(index)) return;
          break;
        case pm_result:
        case pm_result_fd: {
          // Results the worker put in its ring before this one come first.
          if (!drain_ring(index)) return;
          if (s.inflight.empty() || s.inflight.front().id != f.header.id) {
            kill_worker(s);
            return;
          }
          // Ring entries now due wait for the next frame or round (both drain first).
          if (f.header.type == pm_result) {
            complete_front(s, f.payload, Clock::now());
            break;
          }
          std::size_t size = 0;
          try {
            size = ResultMapping::validate(f.fd, f.payload);
          } catch (const ProcessError&) {
            kill_worker(s);  // not a sealed memfd of the stated size: the worker is broken
            return;
          }
          std::unique_ptr<ResultMapping> big;
          std::exception_ptr unmappable;
          try {
            big = std::make_unique<ResultMapping>(f.fd, size);
          } catch (...) {
            unmappable = std::current_exception();
          }
          if (unmappable) {
            // This process cannot map the result (address space, memory): that task fails.
            // Failed after the handler ended, so the caller holds the only reference to the
            // error once it has it (the handler's, dropped in uninstrumented libstdc++,
            // would race the caller's read under TSan).
            PoolTask t = std::move(s.inflight.front());
            s.inflight.pop_front();
            fail_task(t, std::move(unmappable));
            break;
          }
          complete_front(s, big->bytes(), Clock::now());
          break;
        }
        default:
          kill_worker(s);
          return;
      }
    }
  }

  // Reads and handles what worker `index` sent. After poll() reported input,
  // a short read ends it (the next poll() reports the rest); `to_the_end`
  // reads until the socket is empty (a dead worker's last results).
  void read_worker(std::size_t index, bool to_the_end = false) {
    Slot& s = slots_[index];
    for (;;) {
      const auto io = s.ch.fill();
      handle_worker_frames(index);
      if (io == Channel::Io::would_block) return;
      if (io == Channel::Io::ok && s.ch.drained() && !to_the_end) return;
      if (io == Channel::Io::closed || io == Channel::Io::error) {
        s.ch.close();  // wait for the zygote's exit report
        return;
      }
    }
  }

  // Has the zygote SIGKILL the worker of slot `s`; if its pid is not known
  // yet (its first messages can arrive before the zygote's tm_spawned), as
  // soon as it is.
  void kill_worker(Slot& s) {
    s.kill_ordered = true;
    if (s.pid > 0) {
      const PidCode k{s.pid, SIGKILL};
      template_ch_.put(tm_kill, 0, as_bytes_of(k));
    }
  }

  // Whether a worker just SIGKILLed was the OOM killer's: one kill it
  // counted since the last claim is taken (nullopt: no count to read).
  std::optional<bool> claim_oom_kill() {
    const std::optional<std::uint64_t> now = oom_kill_count();
    if (!now || !oom_seen_) return std::nullopt;
    if (*now > *oom_seen_) oom_unclaimed_ += *now - *oom_seen_;
    oom_seen_ = now;
    if (oom_unclaimed_ == 0) return false;
    --oom_unclaimed_;
    return true;
  }

  void on_exited(pid_t pid, int code, std::int64_t peak_rss_kib) {
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      Slot& s = slots_[i];
      if (s.pid != pid || s.state == State::dead) continue;
      // Results it sent before dying still count.
      if (s.ch.valid()) read_worker(i, true);
      drain_ring(i);
      const bool never_ready = s.state == State::starting || s.state == State::spawning;
      // The task whose user code it started is lost; the others never
      // started: they run elsewhere, in order, first.
      const std::uint64_t started = status(i).started.load(std::memory_order_acquire);
      while (!s.inflight.empty()) {
        PoolTask t = std::move(s.inflight.back());
        s.inflight.pop_back();
        if (t.id == started) {
          const auto first = t.sink ? t.sink->first_input(t.chunk) : std::nullopt;
          const std::optional<bool> oom = code == -SIGKILL ? claim_oom_kill() : std::nullopt;
          const auto peak = peak_rss_kib > 0 ? std::optional<std::size_t>(static_cast<std::size_t>(peak_rss_kib) * 1024)
                                             : std::nullopt;
          fail_task(t, std::make_exception_ptr(
                           WorkerCrashed(pid, code, first, static_cast<std::size_t>(t.count), oom, peak)));
        } else {
          queue_.push_front(std::move(t));
        }
      }
      s.orphans.clear();
      s.ch.close();
      s.state = State::dead;
      s.pid = -1;
      update_pids();
      // Workers that keep dying before they are ready (a crashing
      // initializer) would be respawned forever: give up after a few.
      if (never_ready && !stopping_ && ++startup_deaths_ >= 3) {
        break_pool(std::make_exception_ptr(
            ProcessError("mproc: Pool: workers keep dying while starting up (last: " + describe_exitcode(code) +
                         "), in the initializer or before it; the pool cannot run tasks")));
      }
      if (!stopping_ && !broken_local_) spawn(i);
      return;
    }
  }

  void update_pids() {
    std::vector<pid_t> pids;
    for (const auto& s : slots_)
      if (s.pid > 0 && s.state != State::dead) pids.push_back(s.pid);
    std::lock_guard lock(mutex_);
    pids_ = std::move(pids);
    if (pids_.size() >= slots_.size()) all_started_ = true;
    pids_cv_.notify_all();
  }

  void break_pool(std::exception_ptr reason) {
    if (broken_local_) return;
    broken_local_ = true;
    {
      std::lock_guard lock(mutex_);
      broken_ = reason;
      pids_cv_.notify_all();
    }
    fail_everything(reason);
    begin_stop(true);
  }

  void fail_everything(std::exception_ptr reason) {
    {
      std::lock_guard lock(mutex_);
      for (auto& t : pending_) queue_.push_back(std::move(t));
      pending_.clear();
    }
    while (!queue_.empty()) {
      fail_task(queue_.front(), reason);
      queue_.pop_front();
    }
    for (auto& s : slots_) {
      while (!s.inflight.empty()) {
        PoolTask& t = s.inflight.front();
        if (t.args) s.orphans.push_back(std::move(t.args));  // the worker may still be reading them
        fail_task(t, reason);
        s.inflight.pop_front();
      }
    }
  }

  // Stops every worker: politely (pm_stop once idle) or by SIGKILL.
  void begin_stop(bool kill) {
    stopping_ = true;
    for (auto& s : slots_) {
      if (s.state == State::dead) continue;
      if (kill) {
        kill_worker(s);
      } else if (s.state != State::stopping && s.ch.valid()) {
        s.ch.put(pm_stop, 0, {});
      }
      s.state = State::stopping;
    }
  }

  // Milliseconds until the I/O thread's next timed event, for poll(): a
  // respawn, or a free worker's patience running out (dispatch); -1 if
  // none.
  int timeout_ms() const {
    auto next = steal_at_;
    for (const auto& s : slots_)
      if (s.state == State::dead) next = std::min(next, s.respawn_at);
    if (next == Clock::time_point::max()) return -1;
    return static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(remaining(next)).count());
  }

  void io_main() noexcept {
    std::exception_ptr reason;
    try {
      io_loop();
    } catch (...) {
      reason = std::current_exception();
    }
    if (reason) {
      // Out of memory or a failing syscall in the I/O thread itself: the
      // pool can no longer be trusted to run tasks. (Handled after the catch,
      // as in handle_worker_frames: callers then hold the last references.)
      try {
        {
          std::lock_guard lock(mutex_);
          if (!broken_) broken_ = reason;
        }
        broken_local_ = true;
        fail_everything(reason);
      } catch (...) {
      }
    }
    // Teardown: closing the channel makes the zygote kill its workers and exit.
    try {
      template_ch_.close();
      for (auto& s : slots_) {
        s.ch.close();
        s.state = State::dead;
        s.pid = -1;
        s.orphans.clear();
      }
      if (zygote_.valid()) {
        // Ours to wait for: it exits once it sees the channel close (and
        // never waits for anything but its own workers). Bounded anyway.
        if (!zygote_.wait_exited(Clock::now() + std::chrono::seconds(5))) zygote_.send_signal(SIGKILL);
        zygote_.wait_exited(Clock::time_point::max());
        zygote_.try_reap();
      }
      update_pids();
    } catch (...) {
    }
  }

  void io_loop() {
    oom_seen_ = oom_kill_count();  // the baseline, read here: off the creator's path
    std::vector<pollfd> fds;
    bool terminating = false;
    bool more_pending = false;  // submitted while the last poll ran: poll without sleeping
    for (;;) {
      bool closed = false, terminate = false;
      {
        std::lock_guard lock(mutex_);
        for (auto& t : pending_) queue_.push_back(std::move(t));
        pending_.clear();
        closed = closed_;
        terminate = terminate_;
      }
      if (terminate && !terminating) {
        terminating = true;
        fail_everything(std::make_exception_ptr(ProcessError("mproc: Pool was terminated before the task finished")));
        begin_stop(true);
      }
      drain_rings();
      if (!stopping_) {
        for (std::size_t i = 0; i < slots_.size(); ++i)
          if (slots_[i].state == State::dead && slots_[i].respawn_at <= Clock::now()) spawn(i);
        dispatch();
        // Retiring workers (maxtasksperchild) leave once idle; a fresh one takes the slot.
        for (auto& s : slots_) {
          if (s.state == State::retiring && s.inflight.empty()) {
            s.ch.put(pm_stop, 0, {});
            s.state = State::stopping;
          }
        }
        bool idle = queue_.empty();
        for (const auto& s : slots_) idle = idle && s.inflight.empty();
        if (closed && idle) begin_stop(false);
      }
      if (stopping_ && std::all_of(slots_.begin(), slots_.end(), [](const Slot& s) { return s.state == State::dead; }))
        return;

      // Flush what is queued for the zygote and the workers.
      if (template_ch_.flush() == Channel::Io::closed) {
        template_died();
        return;
      }
      for (auto& s : slots_)
        if (s.ch.valid() && s.ch.flush() == Channel::Io::closed) s.ch.close();

      fds.clear();
      fds.push_back({wake_.get(), POLLIN, 0});
      fds.push_back({template_ch_.fd(), static_cast<short>(POLLIN | (template_ch_.has_output() ? POLLOUT : 0)), 0});
      for (auto& s : slots_) {
        const short ev = s.ch.valid() ? static_cast<short>(POLLIN | (s.ch.has_output() ? POLLOUT : 0)) : 0;
        fds.push_back({s.ch.valid() ? s.ch.fd() : -1, ev, 0});
      }
      io_sleeping_.store(true);
      // Workers publishing results from now on wake this thread (from their
      // wake marks on); those published before are seen here (both sides:
      // store, then look).
      set_wake_marks();
      owner_asleep().store(1, std::memory_order_seq_cst);
      {
        std::lock_guard lock(mutex_);
        more_pending = !pending_.empty() || terminate_ != terminate || closed_ != closed;
      }
      more_pending = more_pending || rings_have_entries();
      const int rc = poll_fds(fds.data(), fds.size(), more_pending ? 0 : (stopping_ ? -1 : timeout_ms()));
      owner_asleep().store(0, std::memory_order_relaxed);
      io_sleeping_.store(false);
      if (rc < 0 && errno != EINTR) throw_errno("poll (process pool)");

      if (fds[0].revents & POLLIN) {
        std::uint64_t v;
        [[maybe_unused]] auto r = ::read(wake_.get(), &v, sizeof v);
      }
      for (std::size_t i = 0; i < slots_.size(); ++i) {
        if (fds[i + 2].revents != 0 && slots_[i].ch.valid()) read_worker(i);
      }
      if (fds[1].revents != 0) {
        const auto io = template_ch_.fill();
        Frame f;
        try {
          while (template_ch_.next(f)) handle_template_frame(f);
        } catch (const ProcessError&) {
        }
        if (io == Channel::Io::closed || io == Channel::Io::error) {
          template_died();
          return;
        }
      }
    }
  }

  void handle_template_frame(const Frame& f) {
    switch (f.header.type) {
      case tm_spawned: {
        const auto pid = read_pod<std::int32_t>(f.payload);
        if (!pid || f.header.id >= slots_.size()) return;
        Slot& s = slots_[f.header.id];
        s.pid = *pid;
        if (s.state == State::spawning) s.state = State::starting;
        if (s.kill_ordered) kill_worker(s);  // ordered before its pid came
        update_pids();
        break;
      }
      case tm_spawn_failed: {
        const auto err = read_pod<std::int32_t>(f.payload);
        if (f.header.id < slots_.size())
          spawn_failed(f.header.id, std::string("fork: ") + std::strerror(err ? *err : 0));
        break;
      }
      case tm_exited: {
        if (const auto e = read_pod<WorkerExit>(f.payload)) on_exited(e->pid, e->code, e->peak_rss_kib);
        break;
      }
      default:
        break;
    }
  }

  void template_died() {
    broken_local_ = true;
    auto reason = std::make_exception_ptr(ProcessError("mproc: Pool: its zygote died, and with it every worker"));
    {
      std::lock_guard lock(mutex_);
      if (!broken_) broken_ = reason;
    }
    fail_everything(reason);
  }

  EngineConfig cfg_;
  const pid_t owner_;  // the process whose pool this is
  std::optional<std::uint64_t> oom_seen_;  // the OOM-kill count last read (claim_oom_kill; I/O thread)
  std::uint64_t oom_unclaimed_ = 0;  // kills counted and not yet matched to a SIGKILLed worker
  std::shared_ptr<TransferHeap> heap_ = std::make_shared<TransferHeap>();
  std::shared_ptr<Mapping> board_;  // protocol.hpp's status board
  std::vector<std::byte> ring_copy_;  // a result taken out of a result ring
  UniqueFd wake_;
  Child zygote_;  // StartMethod::fork: the zygote is our child

  // Shared with submitting threads, under mutex_.
  mutable std::mutex mutex_;
  std::deque<PoolTask> pending_;
  bool closed_ = false;
  bool terminate_ = false;
  std::exception_ptr broken_;
  std::vector<pid_t> pids_;
  mutable std::condition_variable pids_cv_;  // pids_ changed, or the pool broke
  bool all_started_ = false;  // every slot has had a live worker
  std::atomic<bool> io_sleeping_{false};

  // Owned by the I/O thread (and the constructor before it starts).
  Channel template_ch_;
  std::vector<Slot> slots_;
  std::deque<PoolTask> queue_;
  SegmentAffinity affinity_;  // which slots have which shared blocks mapped
  Clock::time_point steal_at_ = Clock::time_point::max();  // see dispatch
  std::uint64_t next_id_ = 0;
  bool stopping_ = false;
  bool broken_local_ = false;
  int startup_deaths_ = 0;  // consecutive workers that died before becoming ready

  std::mutex join_mutex_;
  std::unique_ptr<std::thread> io_;
};

}  // namespace mproc::detail
