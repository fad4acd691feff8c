// Fork plumbing shared by Process, the process Pool and the Manager: stdio
// flushing around fork(), the child's run-then-_exit routine, Python exit
// codes, dying with the process a child serves (watch_owner), and `Child`,
// a handle that reaps its process exactly once so no zombie is left behind.
// Nothing here knows about Process names, registries or pools.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <initializer_list>
#include <iostream>  // std::cout/clog/cerr: flushed around fork() and before _exit()
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>

#include <poll.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/os/fd.hpp>
#include <mproc/detail/util/demangle.hpp>
#include <mproc/detail/util/lean_std.hpp>

namespace mproc::detail {

// Python exit code from the siginfo_t filled by waitid(WEXITED): N for
// exit(N), -N for signal N.
inline int exitcode_from_siginfo(const siginfo_t& info) noexcept {
  return info.si_code == CLD_EXITED ? info.si_status : -info.si_status;
}

// The same from a waitpid() status.
inline int exitcode_from_status(int status) noexcept {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return 255;
}

// Exit code of a process of mproc's own (a pool worker, a template) whose
// machinery failed in a way it could not report otherwise (out of memory in
// mproc's code, for instance). Distinct from what user code commonly uses.
inline constexpr int worker_exit_internal = 70;

// Flushes C stdio and std::cout/clog/cerr. Call before fork(), so the child
// does not inherit (and write out a second time) what the parent buffered,
// and in the child before _exit(). Never throws.
inline void flush_stdio() noexcept {
  try {
    std::cout.flush();
    std::clog.flush();
    std::cerr.flush();
  } catch (...) {  // a stream with exceptions() enabled; nothing useful to do
  }
  std::fflush(nullptr);
}

// Gives a freshly forked child predictable signal handling: default SIGTERM
// and SIGCHLD dispositions, so that terminate() terminates and the child can
// reap its own children, then an empty signal mask (the forking thread may
// block signals that a dedicated signal thread, absent in the child, used to
// take). Every other disposition and handler is inherited, as with fork().
inline void reset_child_signals() noexcept {
  struct sigaction dfl{};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(SIGTERM, &dfl, nullptr);
  ::sigaction(SIGCHLD, &dfl, nullptr);
  sigset_t none;
  sigemptyset(&none);
  ::pthread_sigmask(SIG_SETMASK, &none, nullptr);
}

// fork() with stdio flushed first (see flush_stdio) and every signal blocked
// across it, so the child cannot run one of the parent's handlers before it
// has called reset_child_signals() (or chosen its own mask) — which it must,
// first thing. The child inherits none of mproc's private descriptors but
// those in `keep` (see PrivateFds). Returns the child's pid in the parent
// (with the caller's signal mask restored) and 0 in the child. Throws
// ProcessError naming `who` if fork() fails (e.g. EAGAIN: process limit).
inline pid_t fork_child(const std::string& who, std::initializer_list<int> keep = {}) {
  flush_stdio();
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t pid;
  {
    PrivateFds::Keep kept(keep);
    pid = ::fork();
  }
  if (pid == 0) return 0;
  const int err = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) throw_errno(who + ": fork()", err);
  return pid;
}

// Calls `f()` and turns its result into an exit code: an integral result
// (except bool) is the code, anything else (void included) gives 0 — Python
// likewise ignores a target's return value. The OS keeps the low 8 bits.
template <class F>
int call_for_exit_code(F&& f) {
  using R = std::invoke_result_t<F&&>;
  if constexpr (std::is_integral_v<R> && !std::is_same_v<R, bool>) {
    return static_cast<int>(std::invoke(std::forward<F>(f)));
  } else {
    std::invoke(std::forward<F>(f));
    return 0;
  }
}

// Child side of a fork: runs `body`, flushes stdio and ends the process with
// _exit(), so the parent's atexit handlers and static destructors never run
// in the child. Exit code: body's result as call_for_exit_code() maps it;
// 1 if body throws, after printing "Process <label>: <type>: <message>" to
// stderr (Python prints a traceback ending in that line). The code is also
// written to `status_fd` (if valid) just before exiting, so that the parent
// learns it even if something else reaps the child. Never returns.
template <class F>
[[noreturn]] void run_child_and_exit(std::string_view label, F&& body, int status_fd = -1) noexcept {
  int code = 1;
  try {
    code = call_for_exit_code(std::forward<F>(body));
  } catch (...) {
    try {
      const ExceptionInfo e = describe_current_exception();
      std::string line = "Process " + std::string(label) + ": " + e.type_name;
      if (!e.message.empty()) line += ": " + e.message;
      line += '\n';
      flush_stdio();  // keep the child's earlier output before the error line
      std::fputs(line.c_str(), stderr);
    } catch (...) {  // out of memory while reporting: the exit code still says it
    }
    code = 1;
  }
  flush_stdio();
  if (status_fd >= 0) {
    const std::int32_t status = code & 0xff;  // what the OS keeps
    [[maybe_unused]] const auto n = ::write(status_fd, &status, sizeof status);
  }
  ::_exit(code);
}

// In a freshly forked child: die with the parent, and bail out if the parent
// already died between fork() and prctl(). Only for a single-threaded
// parent: the signal fires when the forking thread exits.
inline void die_with_parent(pid_t expected_parent) noexcept {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != expected_parent) ::_exit(1);
}

// In a process forked on behalf of `owner` (its parent when
// `owner_is_parent`): a pidfd that becomes readable when the owner process
// exits, whichever of its threads forked us. Exits at once if the owner is
// already gone. Without pidfds (kernel < 5.3), falls back to
// die_with_parent() and returns an invalid fd.
inline UniqueFd watch_owner(pid_t owner, bool owner_is_parent) noexcept {
  UniqueFd fd;
  int err = 0;
  try {
    fd = std::move(PrivateFds::instance().create<1>("pidfd_open", [owner, &err](int* out) {
      out[0] = static_cast<int>(::syscall(SYS_pidfd_open, owner, 0));
      if (out[0] < 0) err = errno;
      return out[0];
    })[0]);
  } catch (...) {
    if (err == ESRCH) ::_exit(0);  // the owner is gone
    if (owner_is_parent) die_with_parent(owner);
    return {};
  }
  // The owner may have died and its pid been reused before pidfd_open.
  if (owner_is_parent && ::getppid() != owner) ::_exit(0);
  return fd;
}

// One child process, owned by the process that forked it. Reaps it exactly
// once (waitid) and keeps its exit code; waits and signals go through a pidfd
// when the kernel has them (Linux >= 5.3), so a signal can never reach a
// recycled pid, with a waitid(WNOWAIT) polling fallback elsewhere.
//
// Not thread-safe: callers serialize every member, except that wait_exited()
// may run concurrently with anything but destruction and move. A copy of this
// object inherited by a forked grandchild is inert (never signals or waits).
class Child {
 public:
  Child() noexcept = default;

  // Takes charge of `pid`, a child just forked by this process.
  explicit Child(pid_t pid) noexcept : pid_(pid), owner_(::getpid()) {
#if defined(SYS_pidfd_open)
    try {
      pidfd_ = std::move(PrivateFds::instance().create<1>("pidfd_open", [pid](int* out) {
        out[0] = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));  // O_CLOEXEC implied
        return out[0];
      })[0]);
    } catch (...) {  // ENOSYS, EMFILE, ...: fall back to polling
    }
#endif
  }

  Child(Child&& other) noexcept { swap(other); }
  Child& operator=(Child&& other) noexcept {
    if (this != &other) {
      Child(std::move(other)).swap(*this);
    }
    return *this;
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  // A child still unreaped is killed (SIGKILL) and reaped here: owners decide
  // earlier whether to join or terminate it; this is the no-zombie backstop.
  ~Child() {
    if (pid_ > 0 && state_ == State::running && owned_here()) {
      send_signal(SIGKILL);
      siginfo_t info{};
      while (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED) < 0 && errno == EINTR) {
      }
    }
  }

  void swap(Child& other) noexcept {
    std::swap(pid_, other.pid_);
    std::swap(owner_, other.owner_);
    std::swap(pidfd_, other.pidfd_);
    std::swap(state_, other.state_);
    std::swap(exitcode_, other.exitcode_);
  }

  // True if this handle refers to a child (it may have ended).
  bool valid() const noexcept { return pid_ > 0; }
  pid_t pid() const noexcept { return pid_; }
  // The pidfd (readable once the child has exited), or -1 without one. Stays
  // open until destruction, reaped or not.
  int pidfd() const noexcept { return pidfd_.get(); }
  // True in the process that forked the child (false in a forked copy).
  bool owned_here() const noexcept { return owner_ == ::getpid(); }

  // The exit status was collected — by us, or lost to someone else.
  bool reaped() const noexcept { return state_ != State::running; }
  // Someone else collected the status (SIGCHLD set to SIG_IGN, or a
  // waitpid(-1) elsewhere): the exit code is unknown.
  bool lost() const noexcept { return state_ == State::lost; }
  // Python exit code once reaped; nullopt while running or when lost.
  std::optional<int> exitcode() const noexcept {
    return state_ == State::reaped ? std::optional<int>(exitcode_) : std::nullopt;
  }

  // Collects the exit status if the child has ended. Non-blocking; returns
  // reaped(). Never throws.
  bool try_reap() noexcept {
    if (state_ != State::running || !owned_here()) return reaped();
    for (;;) {
      siginfo_t info{};
      if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG) == 0) {
        if (info.si_pid == 0) return false;  // still running
        exitcode_ = exitcode_from_siginfo(info);
        state_ = State::reaped;
        return true;
      }
      if (errno == EINTR) continue;
      if (errno == ECHILD) state_ = State::lost;
      return reaped();
    }
  }

  // Blocks until the child has exited (it is not reaped here) or `deadline`
  // passes; returns whether it has exited. Safe to call concurrently with
  // every other member except destruction and move. Throws ProcessError if
  // poll() fails.
  bool wait_exited(Clock::time_point deadline) const {
    if (pidfd_) return poll_until(pidfd_.get(), POLLIN, deadline) != 0;
    // No pidfd: peek with WNOWAIT, backing off from 50 us to 5 ms.
    for (auto pause = std::chrono::microseconds(50);; pause = std::min(pause * 2, std::chrono::microseconds(5000))) {
      siginfo_t info{};
      const int rc = ::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT);
      if (rc == 0 && info.si_pid != 0) return true;
      if (rc < 0 && errno == ECHILD) return true;  // already reaped
      const auto left = remaining(deadline);
      if (left == Clock::duration::zero()) return false;
      std::this_thread::sleep_for(std::min<Clock::duration>(pause, left));
    }
  }

  // Sends `sig` unless the child was already reaped. Returns false if it was
  // (or is otherwise gone). Never throws.
  bool send_signal(int sig) noexcept {
    if (pid_ <= 0 || state_ != State::running || !owned_here()) return false;
#if defined(SYS_pidfd_send_signal)
    if (pidfd_) return ::syscall(SYS_pidfd_send_signal, pidfd_.get(), sig, nullptr, 0) == 0;
#endif
    return ::kill(pid_, sig) == 0;  // safe: an unreaped child's pid is not recycled
  }

 private:
  enum class State { running, reaped, lost };
  pid_t pid_ = -1;
  pid_t owner_ = -1;
  UniqueFd pidfd_;
  State state_ = State::running;
  int exitcode_ = 0;
};

}  // namespace mproc::detail
