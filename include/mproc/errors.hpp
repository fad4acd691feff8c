// mproc — Python's multiprocessing model for C++20.
// SPDX-License-Identifier: MIT
//
// The exception hierarchy. Every exception mproc throws derives from
// mproc::ProcessError, itself a std::runtime_error, so `catch (const
// mp::ProcessError&)` catches them all. The names mirror Python's.
#pragma once

#include <csignal>
#include <stdexcept>
#include <string>
#include <utility>

namespace mproc {

// Base of every mproc error; also thrown directly for misuse (starting a
// process twice, submitting to a closed pool, ...) and for malformed data
// received from another process. The message names the object and the fault.
class ProcessError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A non-blocking or timed get() found the queue empty (Python: queue.Empty).
class Empty : public ProcessError {
 public:
  Empty() : ProcessError("mproc: queue is empty") {}
  using ProcessError::ProcessError;
};

// A non-blocking or timed put() found the queue full (Python: queue.Full).
class Full : public ProcessError {
 public:
  Full() : ProcessError("mproc: queue is full") {}
  using ProcessError::ProcessError;
};

// An argument has a value the call cannot take: a pool of 0 workers,
// maxtasksperchild(0), a Barrier of 0 parties (Python: ValueError). Thrown
// before anything is created.
class ValueError : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

// A timed wait expired (Python: multiprocessing.TimeoutError).
class TimeoutError : public ProcessError {
 public:
  TimeoutError() : ProcessError("mproc: operation timed out") {}
  using ProcessError::ProcessError;
};

// The peer closed its end and nothing is left to read (Python: EOFError).
class EOFError : public ProcessError {
 public:
  EOFError() : ProcessError("mproc: end of file (the other end was closed)") {}
  using ProcessError::ProcessError;
};

// A Barrier was broken by a timeout, an abort() or a reset() while waiting
// (Python: threading.BrokenBarrierError).
class BrokenBarrierError : public ProcessError {
 public:
  BrokenBarrierError() : ProcessError("mproc: barrier is broken") {}
  using ProcessError::ProcessError;
};

// A task raised an exception in another process. what() is
// "<type>: <message>"; the parts are available separately.
class RemoteError : public ProcessError {
 public:
  RemoteError(std::string type_name, std::string message)
      : ProcessError(type_name + ": " + message), type_name_(std::move(type_name)), message_(std::move(message)) {}

  // The exception's type as the remote process named it, e.g. "std::invalid_argument".
  const std::string& type_name() const noexcept { return type_name_; }
  // The exception's what() in the remote process.
  const std::string& message() const noexcept { return message_; }

 private:
  std::string type_name_;
  std::string message_;
};

namespace detail {

// "SIGKILL" for 9 and so on; "signal N" for signals without a portable name.
inline std::string signal_name(int sig) {
  switch (sig) {
    case SIGHUP:
      return "SIGHUP";
    case SIGINT:
      return "SIGINT";
    case SIGQUIT:
      return "SIGQUIT";
    case SIGILL:
      return "SIGILL";
    case SIGTRAP:
      return "SIGTRAP";
    case SIGABRT:
      return "SIGABRT";
    case SIGBUS:
      return "SIGBUS";
    case SIGFPE:
      return "SIGFPE";
    case SIGKILL:
      return "SIGKILL";
    case SIGUSR1:
      return "SIGUSR1";
    case SIGSEGV:
      return "SIGSEGV";
    case SIGUSR2:
      return "SIGUSR2";
    case SIGPIPE:
      return "SIGPIPE";
    case SIGALRM:
      return "SIGALRM";
    case SIGTERM:
      return "SIGTERM";
    default:
      return "signal " + std::to_string(sig);
  }
}

// Describes a Python-style exit code: "exit code 3" or "killed by SIGKILL".
inline std::string describe_exitcode(int exitcode) {
  if (exitcode < 0) return "killed by " + signal_name(-exitcode);
  return "exit code " + std::to_string(exitcode);
}

}  // namespace detail

// The process running a task died before finishing it (signal, abort(),
// exit(), segfault). Only the tasks that process held fail with it.
class WorkerCrashed : public ProcessError {
 public:
  // `exitcode` follows Python's convention: N for exit(N), -N for signal N.
  WorkerCrashed(int pid, int exitcode)
      : ProcessError("mproc: worker process " + std::to_string(pid) + " died (" + detail::describe_exitcode(exitcode) +
                     ") while running a task"),
        pid_(pid),
        exitcode_(exitcode) {}

  // The dead worker's process id.
  int pid() const noexcept { return pid_; }
  // N for exit(N), -N when killed by signal N.
  int exitcode() const noexcept { return exitcode_; }
  // The signal that killed the worker, or 0 when it exited.
  int signal() const noexcept { return exitcode_ < 0 ? -exitcode_ : 0; }

 private:
  int pid_;
  int exitcode_;
};

}  // namespace mproc
