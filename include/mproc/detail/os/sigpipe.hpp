// Writing to a pipe whose reader is gone raises SIGPIPE, which kills the
// process by default. Sockets avoid it with MSG_NOSIGNAL; for pipes,
// SigpipeGuard blocks SIGPIPE in the calling thread only and discards a
// SIGPIPE the guarded write raised, leaving the process's dispositions and
// the other threads alone.
// SPDX-License-Identifier: MIT
#pragma once

#include <cerrno>
#include <csignal>
#include <ctime>

#include <pthread.h>
#include <signal.h>

namespace mproc::detail {

// Scope guard: SIGPIPE is blocked in this thread while it lives. After a
// write fails with EPIPE, call discard() to drop the SIGPIPE it raised.
// Two cheap syscalls per scope; never throws.
class SigpipeGuard {
 public:
  SigpipeGuard() noexcept {
    sigemptyset(&set_);
    sigaddset(&set_, SIGPIPE);
    sigset_t old;
    ::pthread_sigmask(SIG_BLOCK, &set_, &old);
    was_blocked_ = sigismember(&old, SIGPIPE) == 1;
    if (was_blocked_) {
      // The caller blocks SIGPIPE itself: a pending one is theirs, keep it.
      sigset_t pending;
      sigemptyset(&pending);
      ::sigpending(&pending);
      was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    }
  }
  ~SigpipeGuard() {
    if (!was_blocked_) ::pthread_sigmask(SIG_UNBLOCK, &set_, nullptr);
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

  // Consumes the SIGPIPE raised by a write in this scope (if it was not
  // already pending before the scope began).
  void discard() noexcept {
    if (was_pending_) return;
    const timespec zero{0, 0};
    while (::sigtimedwait(&set_, nullptr, &zero) < 0 && errno == EINTR) {
    }
  }

 private:
  sigset_t set_{};
  bool was_blocked_ = false;
  bool was_pending_ = false;
};

}  // namespace mproc::detail
