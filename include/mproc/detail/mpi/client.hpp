// mproc/detail/mpi/client.hpp — the client side of an MPI pool: task queue,
// dispatch and progress.
//
// Layer detail/mpi, over the transport (base.hpp) and the image check of
// the hello (image.hpp). Used by mpi.hpp's Pool, and by encode.hpp and
// imap_result.hpp (OutTask, TaskRef).
// SPDX-License-Identifier: MIT
//
// The client side of an MPI pool: the queue of encoded tasks, the dispatch to
// serving ranks, and the progress of the pool's MPI traffic.
//
// Dispatch is credit-based: each serving rank holds at most `prefetch` tasks
// (its next task waits in its MPI queue while it runs the current one); a
// result returns one credit to its rank, so a fast rank takes more tasks.
//
// Progress: every MPI call on the pool's communicator is made under one
// mutex, by whichever thread drives the pool at that moment. A thread that
// blocks in the pool (map, imap's next, AsyncResult::get through WaitHelper)
// drives it itself: results reach it without a thread hand-off. When no
// thread waits but work is outstanding (apply_async, map_async), the pool's
// progress thread drives it, so results complete in the background as with
// mproc::Pool. The progress thread sleeps on a condition variable while the
// pool is idle or another thread drives.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <mproc/detail/mpi/base.hpp>
#include <mproc/detail/mpi/image.hpp>

namespace mproc::detail::mpi {

// What follows the MsgHeader of a task: 48 bytes, so the arguments start
// 16-byte aligned (32 + 48 = 80).
struct TaskRef {
  CodeRef trampoline;     // the trampoline's CodeInfo record
  std::uint64_t check;    // what the record's check must be
  CodeRef fn;             // the function pointer ({0, 0}: a captureless callable)
  std::uint64_t count;    // calls in this task
};
static_assert(sizeof(TaskRef) == 48);

// Hello: what a client tells each serving rank first.
struct Hello {
  std::uint64_t image = 0;  // Image::main_id() of the client
  std::uint64_t has_build_id = 0;
};

// An encoded task waiting for a serving rank.
struct OutTask {
  // The sealed message (its id is set when dispatched); or, when `pieces`
  // is not empty, its header and TaskRef followed by the small parts the
  // pieces refer to.
  std::vector<std::byte> msg;
  // A gathered message: its pieces in order, the first being msg's header
  // and TaskRef; the others refer to msg or to the caller's own data.
  std::vector<std::span<const std::byte>> pieces;
  // For gathered messages: sends of the same call still reading the
  // caller's data (the call waits until it is 0 before returning).
  std::shared_ptr<std::atomic<std::size_t>> borrowing;
  std::shared_ptr<TaskSink> sink;
  std::size_t chunk = 0;
  std::uint64_t count = 1;
};

// Counts the tasks of one call that have finished (completed or failed)
// and forwards to the call's sink.
class CountingSink final : public TaskSink {
 public:
  explicit CountingSink(std::shared_ptr<TaskSink> inner) : inner_(std::move(inner)) {}
  void complete(std::size_t chunk, Reader& r, std::uint64_t count) override {
    inner_->complete(chunk, r, count);
    finished_.fetch_add(1, std::memory_order_acq_rel);
  }
  void fail(std::size_t chunk, std::exception_ptr e) override {
    inner_->fail(chunk, std::move(e));
    finished_.fetch_add(1, std::memory_order_acq_rel);
  }
  void dispatched() override { inner_->dispatched(); }
  bool cancelled() const override { return inner_->cancelled(); }
  std::size_t finished() const noexcept { return finished_.load(std::memory_order_acquire); }

 private:
  std::shared_ptr<TaskSink> inner_;
  std::atomic<std::size_t> finished_{0};
};

class Client final : public WaitHelper {
 public:
  // Takes `comm` (the pool's duplicated communicator; freed by join()).
  // Greets every serving rank and checks they run the same program image.
  // Blocks until they all answered. Throws ProcessError if one does not
  // match (the serving ranks have then been stopped and `comm` freed).
  Client(MPI_Comm comm, int root, std::size_t prefetch)
      : comm_(comm), root_(root), prefetch_(std::max<std::size_t>(prefetch, 1)) {
    int size = 0;
    check(MPI_Comm_size(comm_, &size), "MPI_Comm_size");
    size_ = size;
    slots_.resize(static_cast<std::size_t>(size));
    for (int r = 0; r < size; ++r) slots_[static_cast<std::size_t>(r)].rank = r;
    inbox_ = std::make_unique<Inbox>(comm_, MPI_ANY_SOURCE);
    std::string errors;
    try {
      errors = handshake();
    } catch (...) {
      ::MPI_Abort(comm_, 70);  // the serving ranks cannot be released cleanly
      throw;
    }
    if (!errors.empty()) {
      closed_ = true;
      stop_servers();
      throw ProcessError("mproc::mpi::Pool: " + errors);
    }
    for (std::size_t k = 0; k < prefetch_; ++k)
      for (int r = 0; r < size_; ++r)
        if (r != root_) credits_.push_back(r);
    thread_ = std::thread([this] { progress_thread(); });
  }

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  ~Client() {
    stop_thread();
    // Every pending result must be complete before the states that refer to
    // this WaitHelper outlive it.
    std::lock_guard lock(mutex_);
    fail_all_locked(std::make_exception_ptr(ProcessError("mproc::mpi::Pool: the pool was destroyed")));
  }

  // Number of serving ranks.
  int servers() const noexcept { return size_ - 1; }
  int root() const noexcept { return root_; }

  // Throws ProcessError unless tasks may be submitted.
  void check_accepting() {
    std::lock_guard lock(mutex_);
    check_accepting_locked();
  }

  // Queues tasks and dispatches what the serving ranks have room for. Thread-safe.
  void submit(OutTask task) {
    std::lock_guard lock(mutex_);
    check_accepting_locked();
    queue_.push_back(std::move(task));
    guarded_locked([&] { dispatch_locked(); });
    wake_locked();
  }
  void submit(std::vector<OutTask>& tasks) {
    if (tasks.empty()) return;
    std::lock_guard lock(mutex_);
    check_accepting_locked();
    for (auto& t : tasks) queue_.push_back(std::move(t));
    tasks.clear();
    guarded_locked([&] { dispatch_locked(); });
    wake_locked();
  }

  // Sends `msg` (a sealed broadcast message of handle `id`) to every serving
  // rank now, ahead of any task submitted later. Throws ProcessError if the
  // pool is closed or broken.
  void broadcast(std::uint64_t id, std::vector<std::byte> msg) {
    std::lock_guard lock(mutex_);
    check_accepting_locked();
    shared_ids_.push_back(id);
    auto buf = std::make_shared<const std::vector<std::byte>>(std::move(msg));
    guarded_locked([&] {
      for (int r = 0; r < size_; ++r) {
        if (r == root_) continue;
        Send s{buf, {}, nullptr};
        isend_message(comm_, r, *buf, s.requests);
        sends_.push_back(std::move(s));
      }
    });
    if (broken_) std::rethrow_exception(broken_);
    wake_locked();
  }

  // The ids of the handles broadcast so far (the client's SharedStore
  // entries to drop when the pool is joined).
  std::vector<std::uint64_t> shared_ids() const {
    std::lock_guard lock(mutex_);
    return shared_ids_;
  }

  // Whether an MPI or protocol failure broke the pool. Non-blocking.
  bool broken() const {
    std::lock_guard lock(mutex_);
    return broken_ != nullptr;
  }

  // Tasks queued but not yet handed to a serving rank.
  std::size_t backlog() const {
    std::lock_guard lock(mutex_);
    return queue_.size();
  }

  // One round of progress: completes sends, receives results, dispatches.
  // Returns whether anything happened. Thread-safe; never throws (an MPI or
  // protocol failure breaks the pool: every pending task fails with it).
  bool poll() {
    std::lock_guard lock(mutex_);
    return poll_locked();
  }

  // Marks the calling thread as driving the pool (the progress thread stands
  // by) for the scope of the object.
  class Driver {
   public:
    explicit Driver(Client& c) noexcept : c_(c) { c_.drivers_.fetch_add(1, std::memory_order_acq_rel); }
    ~Driver() { c_.drivers_.fetch_sub(1, std::memory_order_acq_rel); }
    Driver(const Driver&) = delete;
    Driver& operator=(const Driver&) = delete;

   private:
    Client& c_;
  };

  // Whether join() has completed (nothing will arrive any more). Non-blocking.
  bool joined() const noexcept { return joined_.load(std::memory_order_acquire); }

  // Drives the pool until pred() holds, `deadline` passes or the pool is
  // joined; returns pred().
  template <class Pred>
  bool drive_until(Pred&& pred, Clock::time_point deadline = Clock::time_point::max()) {
    Driver driving(*this);
    Backoff backoff;
    for (;;) {
      if (pred()) return true;
      if (Clock::now() >= deadline || joined()) return pred();
      if (poll()) {
        backoff.reset();
      } else {
        backoff.pause();
      }
    }
  }

  // WaitHelper (AsyncResult::get): drives the pool for up to 200 µs; returns
  // whether anything happened. When it returns false the waiter sleeps up to
  // 1 ms on its result while the progress thread drives.
  bool help_while_waiting() override {
    Driver driving(*this);
    const auto until = Clock::now() + std::chrono::microseconds(200);
    for (unsigned n = 1;; ++n) {
      if (poll()) return true;
      if (Clock::now() >= until) return false;
      if (n % 16 == 0) {
        ::sched_yield();  // let a rank that shares this core run
      } else {
        cpu_relax();
      }
    }
  }

  // No more tasks. Non-blocking.
  void close() {
    std::lock_guard lock(mutex_);
    closed_ = true;
  }

  // Fails every queued and running task with ProcessError; results still
  // on their way are discarded. A task already running on a serving rank runs
  // to its end there (MPI cannot interrupt it): join() waits for it.
  void terminate() {
    std::lock_guard lock(mutex_);
    closed_ = true;
    terminated_ = true;
    fail_all_locked(std::make_exception_ptr(ProcessError("mproc::mpi::Pool: the pool was terminated")));
  }

  // Blocks until every task has finished, then stops the serving ranks and
  // frees the communicator. Throws ProcessError unless close() or
  // terminate() was called first. Idempotent.
  void join() {
    {
      std::lock_guard lock(mutex_);
      if (!closed_) throw ProcessError("mproc::mpi::Pool.join: call close() or terminate() first");
      if (joined_) return;
    }
    drive_until([&] {
      std::lock_guard lock(mutex_);
      return broken_ || (queue_.empty() && in_flight_locked() == 0);
    });
    stop_servers();
    stop_thread();
    std::lock_guard lock(mutex_);
    if (broken_) std::rethrow_exception(broken_);
  }

 private:
  struct InFlight {
    std::uint64_t id;
    std::shared_ptr<TaskSink> sink;  // null once failed (terminate)
    std::size_t chunk;
    std::uint64_t count;
  };
  struct Slot {
    int rank = 0;
    std::deque<InFlight> in_flight;
    bool bye = false;
  };
  struct Send {
    std::shared_ptr<const std::vector<std::byte>> buf;
    std::vector<MPI_Request> requests;
    std::shared_ptr<std::atomic<std::size_t>> borrowing;  // decremented when done
    void done() noexcept {
      if (borrowing) borrowing->fetch_sub(1, std::memory_order_acq_rel);
      borrowing.reset();
    }
  };

  void check_accepting_locked() const {
    if (broken_) std::rethrow_exception(broken_);
    if (closed_) throw ProcessError("mproc::mpi::Pool: the pool is closed; no more tasks can be submitted");
  }

  std::size_t in_flight_locked() const {
    std::size_t n = 0;
    for (const Slot& s : slots_) n += s.in_flight.size();
    return n;
  }

  bool has_work_locked() const {
    return !queue_.empty() || !sends_.empty() || in_flight_locked() != 0 || (stopping_ && byes_ < servers());
  }

  // Runs f; an exception breaks the pool.
  template <class F>
  bool guarded_locked(F&& f) {
    try {
      f();
      return true;
    } catch (...) {
      break_locked(std::current_exception());
      return false;
    }
  }

  void break_locked(std::exception_ptr e) {
    if (!broken_) broken_ = e;
    closed_ = true;
    fail_all_locked(e);
  }

  void fail_all_locked(const std::exception_ptr& e) {
    std::deque<OutTask> queued;
    queued.swap(queue_);
    for (OutTask& t : queued)
      if (t.sink) fail_sink(*t.sink, t.chunk, e);
    for (Slot& s : slots_)
      for (InFlight& f : s.in_flight)
        if (f.sink) fail_sink(*std::exchange(f.sink, nullptr), f.chunk, e);
  }

  static void fail_sink(TaskSink& sink, std::size_t chunk, const std::exception_ptr& e) noexcept {
    try {
      sink.fail(chunk, e);
    } catch (...) {
    }
  }

  bool poll_locked() {
    if (joined_) return false;  // the communicator is gone
    last_poll_.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
    bool did = false;
    guarded_locked([&] {
      // Sends that completed free their buffers.
      for (auto it = sends_.begin(); it != sends_.end();) {
        int done = 0;
        check(MPI_Testall(static_cast<int>(it->requests.size()), it->requests.data(), &done, MPI_STATUSES_IGNORE),
              "MPI_Testall");
        if (done) {
          it->done();
          it = sends_.erase(it);
          did = true;
        } else {
          ++it;
        }
      }
      // One result per round, never a second look: a look that finds
      // nothing may yield the CPU (OpenMPI does when ranks outnumber cores),
      // which would delay the waiter of the result just taken by that
      // system call (apply round trip over 3 ranks on 2 cores: 1.9 -> 1.2 x
      // a raw MPI round trip).
      // Drive loops call poll() again at once while it reports progress.
      int from = -1;
      if (const auto msg = inbox_->take(from, peer_name); !msg.empty()) {
        did = true;
        handle_locked(from, msg);
      }
      if (dispatch_locked()) did = true;
    });
    return did || !sends_.empty();
  }

  static std::string peer_name(int rank) { return "serving " + rank_name(rank); }

  void handle_locked(int from, std::span<const std::byte> msg) {
    if (from < 0 || from >= size_ || from == root_)
      throw ProcessError("mproc::mpi::Pool: a message from an unexpected rank " + std::to_string(from));
    const MsgHeader h = header_of(msg);
    Slot& slot = slots_[static_cast<std::size_t>(from)];
    switch (static_cast<Kind>(h.kind)) {
      case Kind::result: {
        if (slot.in_flight.empty() || slot.in_flight.front().id != h.id)
          throw ProcessError("mproc::mpi::Pool: " + peer_name(from) + " sent the result of task " +
                             std::to_string(h.id) + ", which it was not running");
        InFlight f = std::move(slot.in_flight.front());
        slot.in_flight.pop_front();
        // The rank that just finished takes the next task first: a lone
        // caller's tasks stay on one warm rank, the others can idle.
        if (!stopping_) credits_.push_front(from);
        if (f.sink) {
          try {
            Reader r(msg.subspan(sizeof(MsgHeader)));
            f.sink->complete(f.chunk, r, f.count);
          } catch (...) {
            fail_sink(*f.sink, f.chunk, std::current_exception());
          }
        }
        break;
      }
      case Kind::bye:
        if (!slot.bye) {
          slot.bye = true;
          ++byes_;
        }
        break;
      default:
        throw ProcessError("mproc::mpi::Pool: " + peer_name(from) + " sent an unexpected message (kind " +
                           std::to_string(h.kind) + ")");
    }
    inbox_->trim(std::size_t{64} << 20);
  }

  // Hands queued tasks to ranks with a free credit. Returns whether it sent any.
  bool dispatch_locked() {
    bool did = false;
    while (!queue_.empty() && !credits_.empty()) {
      OutTask& t = queue_.front();
      if (t.sink && t.sink->cancelled()) {
        queue_.pop_front();
        continue;
      }
      const int rank = credits_.front();
      const std::uint64_t id = ++next_task_;
      set_message_id(t.msg, id);
      // The send starts from t.msg's buffer, which moving the vector keeps.
      Send s{nullptr, {}, nullptr};
      if (t.pieces.empty()) {
        isend_message(comm_, rank, t.msg, s.requests);
      } else {
        isend_gathered(comm_, rank, t.pieces, s.requests);
        s.borrowing = std::move(t.borrowing);
        s.borrowing->fetch_add(1, std::memory_order_acq_rel);
      }
      int done = 0;
      check(MPI_Testall(static_cast<int>(s.requests.size()), s.requests.data(), &done, MPI_STATUSES_IGNORE),
            "MPI_Testall");
      if (done) {
        s.done();
      } else {
        s.buf = std::make_shared<const std::vector<std::byte>>(std::move(t.msg));
        sends_.push_back(std::move(s));
      }
      credits_.pop_front();
      slots_[static_cast<std::size_t>(rank)].in_flight.push_back({id, t.sink, t.chunk, t.count});
      if (t.sink) t.sink->dispatched();
      queue_.pop_front();
      did = true;
    }
    return did;
  }

  // Says hello to every serving rank; returns the errors they report ("" if none).
  std::string handshake() {
    Hello hello{Image::instance().main_id(), Image::instance().main_has_build_id() ? 1u : 0u};
    auto msg = new_message(Kind::hello, 0, sizeof hello);
    const auto* p = reinterpret_cast<const std::byte*>(&hello);
    msg.insert(msg.end(), p, p + sizeof hello);
    seal_message(msg);
    std::vector<MPI_Request> requests;
    for (int r = 0; r < size_; ++r)
      if (r != root_) isend_message(comm_, r, msg, requests);
    std::string errors;
    Backoff backoff;
    for (int answered = 0; answered < servers();) {
      int from = -1;
      const auto answer = inbox_->wait(from, peer_name, backoff);
      const MsgHeader h = header_of(answer);
      if (h.kind == static_cast<std::uint16_t>(Kind::hello_error)) {
        if (!errors.empty()) errors += "; ";
        errors += rank_name(from) + ": " +
                  std::string(reinterpret_cast<const char*>(answer.data()) + sizeof h, answer.size() - sizeof h);
      } else if (h.kind != static_cast<std::uint16_t>(Kind::hello_ok)) {
        throw ProcessError("mproc::mpi::Pool: " + peer_name(from) + " answered the greeting with message kind " +
                           std::to_string(h.kind));
      }
      ++answered;
    }
    check(MPI_Waitall(static_cast<int>(requests.size()), requests.data(), MPI_STATUSES_IGNORE), "MPI_Waitall");
    return errors;
  }

  // Tells every serving rank to stop, waits for their goodbyes and frees the
  // communicator. Idempotent. If the pool broke, the job cannot be left in a
  // known state: it is aborted with the reason.
  void stop_servers() {
    {
      std::lock_guard lock(mutex_);
      if (joined_) return;
      if (broken_) abort_broken_locked();
      if (!stopping_) {
        stopping_ = true;
        credits_.clear();
        guarded_locked([&] {
          stop_msg_ = std::make_shared<const std::vector<std::byte>>([] {
            auto m = new_message(Kind::stop, 0);
            seal_message(m);
            return m;
          }());
          for (int r = 0; r < size_; ++r) {
            if (r == root_) continue;
            Send s{stop_msg_, {}, nullptr};
            isend_message(comm_, r, *stop_msg_, s.requests);
            sends_.push_back(std::move(s));
          }
        });
      }
    }
    drive_until([&] {
      std::lock_guard lock(mutex_);
      return broken_ || (byes_ == servers() && sends_.empty());
    });
    std::lock_guard lock(mutex_);
    if (broken_) abort_broken_locked();
    inbox_->cancel();
    MPI_Comm_free(&comm_);
    joined_ = true;
  }

  [[noreturn]] void abort_broken_locked() {
    std::string what = "unknown error";
    try {
      std::rethrow_exception(broken_);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    std::fprintf(stderr, "mproc::mpi::Pool: the pool's communication failed (%s); aborting the MPI job\n",
                 what.c_str());
    std::fflush(stderr);
    ::MPI_Abort(comm_, 70);
    std::abort();
  }

  // Drives the pool while work is outstanding and no other thread has
  // polled for kStandBy (a thread that submits and then waits drives it
  // itself: the progress thread stays out of its way). Sleeps on the
  // condition variable while there is no work.
  //
  // Submitting tasks wakes it only when it sleeps for want of work; after
  // its last piece of work it stays in timed waits for a while, so a program
  // that submits again and again does not wake it each time.
  void progress_thread() {
    static constexpr auto kStandBy = std::chrono::microseconds(100);
    static constexpr auto kLinger = std::chrono::milliseconds(2);
    Backoff backoff;
    std::unique_lock lock(mutex_);
    auto last_work = Clock::now();
    for (;;) {
      if (stop_thread_) return;
      if (!has_work_locked()) {
        if (Clock::now() - last_work < kLinger) {
          cv_.wait_for(lock, kLinger / 4);
        } else {
          idle_ = true;
          cv_.wait(lock, [&] { return stop_thread_ || has_work_locked(); });
          idle_ = false;
        }
        continue;
      }
      last_work = Clock::now();
      const auto since = Clock::now() - Clock::time_point(Clock::duration(last_poll_.load(std::memory_order_relaxed)));
      if (drivers_.load(std::memory_order_acquire) != 0) {
        cv_.wait_for(lock, kLinger / 2);  // another thread drives: look again later
        continue;
      }
      if (since < kStandBy) {
        cv_.wait_for(lock, kStandBy - since);
        continue;
      }
      const bool did = poll_locked();
      lock.unlock();
      if (did) {
        backoff.reset();
      } else {
        backoff.pause();
      }
      lock.lock();
    }
  }

  // Wakes the progress thread if it sleeps for want of work.
  void wake_locked() {
    if (idle_) cv_.notify_all();
  }

  void stop_thread() {
    {
      std::lock_guard lock(mutex_);
      stop_thread_ = true;
      cv_.notify_all();
    }
    if (thread_.joinable()) thread_.join();
  }

  MPI_Comm comm_;
  const int root_;
  int size_ = 0;
  const std::size_t prefetch_;

  mutable std::mutex mutex_;  // everything below, and every MPI call on comm_
  std::condition_variable cv_;
  std::atomic<int> drivers_{0};
  std::atomic<Clock::rep> last_poll_{0};  // when a thread last polled (steady clock ticks)
  std::deque<OutTask> queue_;
  std::vector<Slot> slots_;  // by rank (the root's is unused)
  std::deque<int> credits_;  // a rank once per task it may still take
  std::deque<Send> sends_;
  std::unique_ptr<Inbox> inbox_;  // results and goodbyes from every serving rank
  std::shared_ptr<const std::vector<std::byte>> stop_msg_;
  std::vector<std::uint64_t> shared_ids_;
  std::uint64_t next_task_ = 0;
  int byes_ = 0;
  bool closed_ = false;
  bool terminated_ = false;
  bool stopping_ = false;
  std::atomic<bool> joined_{false};  // written under mutex_
  bool stop_thread_ = false;
  bool idle_ = false;  // the progress thread waits for work without a timeout
  std::exception_ptr broken_;
  std::thread thread_;
};

}  // namespace mproc::detail::mpi
