// mproc::Process — run a callable in a forked child process, like Python's
// multiprocessing.Process with the "fork" start method — plus
// active_children(), current_process() and parent_process().
//
//   mp::Process p(f, "world");   // any callable, arguments copied into the child
//   p.start();
//   p.join();
//   p.exitcode();                // 0
//
// Children and signals: the child is a fork() of the caller (only the calling
// thread is duplicated: a mutex another thread held at that moment stays
// locked in the child, as with Python's fork start method). It starts with an empty signal mask and default
// SIGTERM/SIGCHLD dispositions (see detail::reset_child_signals; signals are
// blocked across fork() so none reaches a parent's handler in the child first);
// other handlers are inherited. It ends with _exit(), never running the parent's
// atexit handlers; stdio is flushed before fork() and before _exit().
//
// Lifetime: every started child is reaped — by join(), is_alive(), exitcode(),
// close(), active_children() or the destructor — so no zombie is ever left.
// Destroying a Process whose child still runs:
//   - non-daemon: joins it (blocks until it exits, like std::jthread, and like
//     Python joining non-daemon children at exit) — no work is lost;
//   - daemon: terminates it (SIGTERM, then SIGKILL after 1 s) and reaps it;
//   - during stack unwinding (an exception is propagating through the
//     Process's scope): terminates it like a daemon, whatever the flag — the
//     child may be waiting for this process, so joining could hang forever.
// Hence, on the normal path, a child that waits for input from this process
// needs that input (or EOF: close your Connection) before the Process dies.
// When the program exits normally (exit() or return from main), children
// still referenced by live Process objects are handled as Python does:
// daemons terminated, the others joined.
//
// The host program may collect a child's exit status before we do (SIGCHLD
// set to SIG_IGN or SA_NOCLDWAIT, or a reaper calling waitpid(-1)): join()
// and is_alive() still work (they watch the child through a pidfd), and
// exitcode() reports the code the child wrote to a status pipe just before
// exiting (its target's result, 1 for an exception) or, if it was killed by
// terminate()/kill(), that signal. Only a child killed by someone else's
// signal then has an unknown exit code: exitcode() throws ProcessError.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/os/fd.hpp>
#include <mproc/detail/os/spawn.hpp>
#include <mproc/detail/util/lean_std.hpp>
#include <mproc/errors.hpp>

namespace mproc {

// A snapshot describing a process: what active_children(), current_process()
// and parent_process() return.
struct ProcessInfo {
  int pid = 0;
  std::string name;
  bool daemon = false;
};

// Construction options for Process (Python's `name=` and `daemon=` keywords).
struct ProcessOptions {
  std::string name{};   // empty: "Process-N" (N counts the Processes created by this process)
  bool daemon = false;  // terminated rather than joined when its Process dies or the program exits
};

namespace detail {

// What the registry knows of one started child. Guarded by ProcessRegistry::mutex.
struct ProcessRecord {
  std::string name;
  bool daemon = false;
  Child child;
  UniqueFd status;      // read end of the pipe the child writes its exit code to
  int signal_sent = 0;  // the last signal terminate()/kill() sent
};

// The exit code a child reported through its status pipe (see
// run_child_and_exit), for a child whose status someone else collected:
// what it wrote, else -signal if we signalled it, else nullopt. Never throws.
inline std::optional<int> reported_exitcode(ProcessRecord& rec) noexcept {
  if (rec.status) {
    std::int32_t code = 0;
    ssize_t n;
    do {
      n = ::read(rec.status.get(), &code, sizeof code);
    } while (n < 0 && errno == EINTR);
    if (n == static_cast<ssize_t>(sizeof code)) return static_cast<int>(code);
  }
  if (rec.signal_sent != 0) return -rec.signal_sent;
  return std::nullopt;
}

// Children started by this process and not yet reaped (start order). A fork
// of this process (by mproc or anyone) starts with an empty registry.
struct ProcessRegistry {
  std::mutex mutex;
  std::vector<std::shared_ptr<ProcessRecord>> live;
};

inline ProcessRegistry& process_registry() {
  static auto* registry = new ProcessRegistry;  // never destroyed: used by atexit/atfork handlers
  return *registry;
}

// Who this process is. Written only in a freshly forked child (single-threaded).
struct CurrentProcess {
  std::string name = "MainProcess";
  std::string identity;  // "" for the main process, "2", "2:1", ... for children
  bool daemon = false;
  std::optional<ProcessInfo> parent;
  std::atomic<unsigned> counter{0};  // Processes created here, for "Process-N"
};

inline CurrentProcess& current_process_state() {
  static auto* current = new CurrentProcess;
  return *current;
}

// Removes `record` from the registry. Caller holds the registry mutex.
inline void unregister_locked(ProcessRegistry& reg, const ProcessRecord* record) {
  std::erase_if(reg.live, [record](const auto& r) { return r.get() == record; });
}

// Sends SIGTERM, waits up to `grace`, then SIGKILL; reaps the child and drops
// it from the registry. Blocks (briefly after SIGKILL). Throws ProcessError if poll() fails.
inline void stop_child(ProcessRegistry& reg, ProcessRecord& rec, Clock::duration grace) {
  {
    std::lock_guard lock(reg.mutex);
    if (!rec.child.try_reap() && rec.child.send_signal(SIGTERM)) rec.signal_sent = SIGTERM;
  }
  if (!rec.child.wait_exited(Clock::now() + grace)) {
    std::lock_guard lock(reg.mutex);
    if (!rec.child.try_reap() && rec.child.send_signal(SIGKILL)) rec.signal_sent = SIGKILL;
  }
  rec.child.wait_exited(Clock::time_point::max());
  std::lock_guard lock(reg.mutex);
  rec.child.try_reap();
  unregister_locked(reg, &rec);
}

// How long a terminated child may take to exit before it is killed.
inline constexpr auto stop_grace = std::chrono::seconds(1);

// At normal exit: terminate the daemons, then join the others (Python's
// multiprocessing.util._exit_function).
inline void process_at_exit() noexcept {
  auto& reg = process_registry();
  try {
    std::vector<std::shared_ptr<ProcessRecord>> records;
    {
      std::lock_guard lock(reg.mutex);
      records = reg.live;
    }
    for (bool daemons : {true, false}) {
      for (auto& rec : records) {
        if (rec->daemon != daemons) continue;
        try {
          if (daemons) {
            stop_child(reg, *rec, stop_grace);
          } else {
            rec->child.wait_exited(Clock::time_point::max());
            std::lock_guard lock(reg.mutex);
            rec->child.try_reap();
            unregister_locked(reg, rec.get());
          }
        } catch (const ProcessError&) {  // poll() failed: the Child's destructor still reaps
        }
      }
    }
  } catch (...) {  // out of memory at exit: the children outlive us, as with a crash
  }
}

// Installs, once per program, the atexit handler and the fork handlers that
// keep the registry's mutex consistent and empty the registry in a child.
inline void install_process_hooks() {
  static const bool installed = [] {
    process_registry();
    current_process_state();
    std::atexit([] { process_at_exit(); });
    ::pthread_atfork([] { process_registry().mutex.lock(); }, [] { process_registry().mutex.unlock(); },
                     [] {
                       auto& reg = process_registry();
                       reg.mutex.unlock();
                       reg.live.clear();  // the parent's children are not ours
                     });
    return true;
  }();
  (void)installed;
}

// The callable and its arguments, type-erased.
struct ProcessTarget {
  virtual ~ProcessTarget() = default;
  virtual int run() = 0;  // exit code
};

template <class F, class... Args>
inline constexpr bool process_invocable_v = std::is_invocable_v<F, Args...> || std::is_invocable_v<F&, Args&...>;

template <class F, class... Args>
struct BoundTarget final : ProcessTarget {
  template <class G, class... A>
  explicit BoundTarget(G&& g, A&&... a) : f(std::forward<G>(g)), args(std::forward<A>(a)...) {}

  int run() override {
    return std::apply(
        [this](Args&... a) {
          // Arguments are moved in (they are used once), or passed as lvalues
          // when the target takes them by non-const reference.
          if constexpr (std::is_invocable_v<F, Args...>) {
            return call_for_exit_code([&]() -> decltype(auto) { return std::invoke(std::move(f), std::move(a)...); });
          } else {
            return call_for_exit_code([&]() -> decltype(auto) { return std::invoke(f, a...); });
          }
        },
        args);
  }

  F f;
  std::tuple<Args...> args;
};

}  // namespace detail

// A callable run in a child process (Python: multiprocessing.Process).
//
// Thread-safety: a Process object is used by one thread at a time;
// active_children() may run concurrently with any Process member.
class Process {
 public:
  // Binds `target` and copies of `args` (decayed, like std::thread); the
  // child calls target(args...) — by value parameters receive the copies
  // moved, `T&` parameters bind to them. Does not start the process.
  // Throws std::bad_alloc.
  template <class F, class... Args>
    requires detail::process_invocable_v<std::decay_t<F>, std::decay_t<Args>...>
  explicit Process(F&& target, Args&&... args)
      : Process(ProcessOptions{}, std::forward<F>(target), std::forward<Args>(args)...) {}

  // Same, with a name and/or the daemon flag.
  template <class F, class... Args>
    requires detail::process_invocable_v<std::decay_t<F>, std::decay_t<Args>...>
  Process(ProcessOptions options, F&& target, Args&&... args) : Process(std::move(options)) {
    target_ = std::make_unique<detail::BoundTarget<std::decay_t<F>, std::decay_t<Args>...>>(
        std::forward<F>(target), std::forward<Args>(args)...);
  }

  Process(Process&& other) noexcept = default;
  // Finishes the process held here as the destructor does, then takes `other`'s.
  Process& operator=(Process&& other) noexcept {
    if (this != &other) {
      finish();
      target_ = std::move(other.target_);
      record_ = std::move(other.record_);
      identity_ = std::move(other.identity_);
      creator_ = other.creator_;
      uncaught_ = other.uncaught_;
      started_ = other.started_;
      closed_ = other.closed_;
      exit_code_ = other.exit_code_;
    }
    return *this;
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  // A running child is joined if non-daemon; terminated (SIGTERM, SIGKILL
  // after 1 s) and reaped if daemon or if an exception is unwinding the
  // stack (see the file comment). Nothing happens in a process other than
  // the one that started it.
  virtual ~Process() { finish(); }

  // What the child runs (Python: Process.run): the target with its
  // arguments; an int the target returns becomes the exit code. A subclass
  // may override it (then construct the base without a target); in the
  // child, an exception escaping it gives exit code 1. Called directly, it
  // runs in the calling process (before start() only: start() drops the
  // target). Blocks while it runs; throws what the target throws.
  virtual void run() {
    if (target_) exit_code_ = target_->run();
  }

  // Forks the child, which runs the target and exits (see exitcode()).
  // Non-blocking. After start() the parent drops its copy of
  // the target and arguments (as Python does), closing e.g. a Connection
  // moved into them. Throws ProcessError on a second call ("Process-3:
  // start() called twice"), on a closed process, or if fork() fails.
  void start() {
    auto& rec = record("start");
    if (started_) throw ProcessError(rec.name + ": start() called twice");
    if (creator_ != ::getpid())
      throw ProcessError(rec.name + ": can only start a process object created by this process");
    detail::install_process_hooks();
    auto status = detail::PrivateFds::instance().create<2>("pipe (Process status)",
                                                           [](int* fds) { return ::pipe2(fds, O_CLOEXEC); });
    const pid_t pid = detail::fork_child(rec.name, {status[1].get()});
    if (pid == 0) run_in_child(status[1].get());
    rec.child = detail::Child(pid);
    rec.status = std::move(status[0]);
    status[1].reset();
    detail::set_nonblocking(rec.status.get());
    started_ = true;
    {
      auto& reg = detail::process_registry();
      std::lock_guard lock(reg.mutex);
      reg.live.push_back(record_);
    }
    target_.reset();
  }

  // Blocks until the child exits, and reaps it. Throws ProcessError if the
  // process was never started, is closed, or is not a child of this process.
  void join() { wait_for(Clock::time_point::max(), "join"); }

  // Waits at most `timeout`; returns true if the child has exited (and was
  // reaped), false on timeout. Throws as join().
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) {
    return wait_for(detail::deadline_after(timeout), "join");
  }

  // True from start() until the child exits; false before start(). Reaps an
  // exited child. Non-blocking. Throws ProcessError if closed or not a child
  // of this process.
  bool is_alive() {
    auto& rec = record("is_alive");
    if (!started_) return false;
    check_child(rec, "is_alive");
    return !poll_reap();
  }

  // The child's pid once started (kept after it exits); nullopt before start().
  std::optional<int> pid() const noexcept {
    if (!started_ || !record_) return std::nullopt;
    return record_->child.pid();
  }

  // A descriptor that becomes readable when the child exits (Python:
  // Process.sentinel), for poll() or mp::connection::wait; owned by this
  // Process. nullopt before start() or where the kernel has no pidfd (Linux
  // < 5.3). Non-blocking.
  std::optional<int> sentinel() const noexcept {
    if (!started_ || !record_ || record_->child.pidfd() < 0) return std::nullopt;
    return record_->child.pidfd();
  }

  // nullopt before start() and while running; then 0 for success, N when the
  // target returned the int N (low 8 bits), 1 for an uncaught exception, -N
  // when killed by signal N. Reaps an exited child. Non-blocking. Throws
  // ProcessError if closed, not a child of this process, or if the exit
  // status was collected by someone else (see the file comment).
  std::optional<int> exitcode() {
    auto& rec = record("exitcode");
    if (!started_) return std::nullopt;
    check_child(rec, "exitcode");
    if (!poll_reap()) return std::nullopt;
    if (rec.child.lost()) {
      if (const auto code = detail::reported_exitcode(rec)) return code;
      throw ProcessError(rec.name + ": pid " + std::to_string(rec.child.pid()) +
                         " was killed by a signal mproc did not send, and its exit status was collected "
                         "by someone else (SIGCHLD ignored, or waitpid(-1) elsewhere)");
    }
    return rec.child.exitcode();
  }

  // Sends SIGTERM (terminate) or SIGKILL (kill) to the child; a no-op once it
  // has exited. Non-blocking: join() afterwards. Throws ProcessError before
  // start(), when closed, or when not a child of this process.
  void terminate() { send("terminate", SIGTERM); }
  void kill() { send("kill", SIGKILL); }

  // Releases the process's resources (Python's close()). Afterwards every
  // member but name(), daemon(), pid() and the destructor throws
  // ProcessError. Throws ProcessError if the child is still running.
  void close() {
    if (!record_ || closed_) return;
    auto& rec = *record_;
    if (started_ && creator_ == ::getpid()) {
      auto& reg = detail::process_registry();
      std::lock_guard lock(reg.mutex);
      if (!rec.child.try_reap())
        throw ProcessError(rec.name +
                           ": close() while the process is still running; join() or "
                           "terminate() it first");
      detail::unregister_locked(reg, &rec);
    }
    target_.reset();
    closed_ = true;
  }

  // The name: "Process-N" unless set. In the child, current_process().name.
  const std::string& name() const {
    if (!record_) throw ProcessError("mproc: Process::name() on a moved-from Process");
    return record_->name;
  }
  // Renames the object (any time; a running child keeps the name it started with).
  void set_name(std::string name) {
    auto& rec = record_or_throw("set_name");
    std::lock_guard lock(detail::process_registry().mutex);
    rec.name = std::move(name);
  }

  bool daemon() const {
    if (!record_) throw ProcessError("mproc: Process::daemon() on a moved-from Process");
    return record_->daemon;
  }
  // Sets the daemon flag. Throws ProcessError after start().
  void set_daemon(bool daemon) {
    auto& rec = record_or_throw("set_daemon");
    if (started_) throw ProcessError(rec.name + ": set_daemon() after start()");
    rec.daemon = daemon;
  }

 private:
  using Clock = detail::Clock;

  detail::ProcessRecord& record_or_throw(const char* what) const {
    if (!record_) throw ProcessError(std::string("mproc: Process::") + what + "() on a moved-from Process");
    return *record_;
  }
  detail::ProcessRecord& record(const char* what) const {
    auto& rec = record_or_throw(what);
    if (closed_) throw ProcessError(rec.name + ": " + what + "() on a closed process");
    return rec;
  }
  void check_child(const detail::ProcessRecord& rec, const char* what) const {
    if (creator_ != ::getpid())
      throw ProcessError(rec.name + ": " + what + "() can only be used on a child of this process");
  }

  // try_reap() under the registry lock; drops a reaped child from the registry.
  bool poll_reap() {
    auto& reg = detail::process_registry();
    std::lock_guard lock(reg.mutex);
    if (!record_->child.try_reap()) return false;
    detail::unregister_locked(reg, record_.get());
    return true;
  }

  bool wait_for(Clock::time_point deadline, const char* what) {
    auto& rec = record(what);
    if (!started_) throw ProcessError(rec.name + ": can only " + what + "() a started process");
    check_child(rec, what);
    for (;;) {
      if (poll_reap()) return true;
      if (!rec.child.wait_exited(deadline)) return poll_reap();
      if (poll_reap()) return true;
      // Exited but not yet reapable (not expected): retry shortly.
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }

  void send(const char* what, int sig) {
    auto& rec = record(what);
    if (!started_) throw ProcessError(rec.name + ": " + what + "() before start()");
    check_child(rec, what);
    std::lock_guard lock(detail::process_registry().mutex);
    if (!rec.child.try_reap() && rec.child.send_signal(sig)) rec.signal_sent = sig;
  }

 protected:
  // The base of a subclass that overrides run() (Python: class
  // Worker(Process) with def run(self)), named and flagged by `options`. A
  // subclass object is used in place: moving it into a Process slices it.
  // Does not start the process. Throws std::bad_alloc.
  explicit Process(ProcessOptions options = {})
      : record_(std::make_shared<detail::ProcessRecord>()), creator_(::getpid()) {
    auto& current = detail::current_process_state();
    const unsigned n = current.counter.fetch_add(1, std::memory_order_relaxed) + 1;
    identity_ = current.identity.empty() ? std::to_string(n) : current.identity + ":" + std::to_string(n);
    record_->name = options.name.empty() ? "Process-" + identity_ : std::move(options.name);
    record_->daemon = options.daemon;
  }

 private:
  [[noreturn]] void run_in_child(int status_fd) noexcept {
    // Single-threaded here: the fork handlers already emptied the registry.
    detail::reset_child_signals();
    auto& current = detail::current_process_state();
    current.parent = ProcessInfo{static_cast<int>(::getppid()), current.name, current.daemon};
    current.name = record_->name;
    current.identity = identity_;
    current.daemon = record_->daemon;
    current.counter.store(0, std::memory_order_relaxed);
    detail::run_child_and_exit(
        record_->name,
        [this] {
          run();
          return exit_code_;
        },
        status_fd);
  }

  void finish() noexcept {
    if (!record_) return;
    if (started_ && !closed_ && creator_ == ::getpid()) {
      auto& reg = detail::process_registry();
      try {
        if (record_->daemon || std::uncaught_exceptions() > uncaught_) {
          detail::stop_child(reg, *record_, detail::stop_grace);
        } else {
          join();
        }
      } catch (...) {  // poll() failed: the Child's destructor still reaps
      }
      std::lock_guard lock(reg.mutex);
      detail::unregister_locked(reg, record_.get());
    }
    record_.reset();
    target_.reset();
  }

  std::unique_ptr<detail::ProcessTarget> target_;
  std::shared_ptr<detail::ProcessRecord> record_;
  std::string identity_;
  pid_t creator_ = 0;
  int uncaught_ = std::uncaught_exceptions();  // to detect destruction by unwinding
  bool started_ = false;
  bool closed_ = false;
  int exit_code_ = 0;  // set by the default run() from the target's result
};

// The children started by this process that are still running, in start
// order; reaps the ones that have exited. Non-blocking, thread-safe, never
// throws except std::bad_alloc.
inline std::vector<ProcessInfo> active_children() {
  auto& reg = detail::process_registry();
  std::vector<ProcessInfo> out;
  std::lock_guard lock(reg.mutex);
  std::erase_if(reg.live, [&](const std::shared_ptr<detail::ProcessRecord>& rec) {
    if (rec->child.try_reap()) return true;
    out.push_back(ProcessInfo{static_cast<int>(rec->child.pid()), rec->name, rec->daemon});
    return false;
  });
  return out;
}

// This process: "MainProcess" in the program's original process, else the
// name of the Process whose child it is. Thread-safe, non-blocking.
inline ProcessInfo current_process() {
  const auto& current = detail::current_process_state();
  return ProcessInfo{static_cast<int>(::getpid()), current.name, current.daemon};
}

// The process that started this one through mproc::Process, as it was at
// start(); nullopt in the main process. Thread-safe, non-blocking.
inline std::optional<ProcessInfo> parent_process() { return detail::current_process_state().parent; }

}  // namespace mproc
