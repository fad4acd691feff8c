// mproc/errors.hpp — the exception hierarchy, and how a task's exception
// from another process is reported.
//
// The bottom of the public layer: every other header throws these. Every
// exception mproc itself throws derives from mproc::ProcessError, itself a
// std::runtime_error, so `catch (const mp::ProcessError&)` catches them all.
// The names mirror Python's. One exception: an exception a *task* threw in a
// worker process of a Pool (or mpi::Pool) arrives as the task's own type when
// that type is known (the standard ones, and those registered with
// mp::register_exception, remote_exception.hpp), as RemoteException<E>, which
// is an E and not a ProcessError; any other arrives as RemoteError, a
// ProcessError. Both derive from RemoteTrace, so `catch (const
// mp::RemoteTrace&)` catches every task failure from another process.
// SPDX-License-Identifier: MIT
#pragma once

#include <csignal>
#include <cstddef>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <mproc/detail/util/lean_std.hpp>

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

// put() on a shut-down queue, or get() on a shut-down and drained one
// (Python 3.13: queue.ShutDown). Distinct from Empty: a consumer that
// retries on Empty stops on ShutDown.
class ShutDown : public ProcessError {
 public:
  ShutDown() : ProcessError("mproc: queue is shut down") {}
  using ProcessError::ProcessError;
};

// An argument has a value the call cannot take: a pool of 0 workers,
// maxtasksperchild(0), a Barrier of 0 parties (Python: ValueError). Thrown
// before anything is created.
class ValueError : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

// The task was cancelled before it started (Python:
// concurrent.futures.CancelledError): AsyncResult::get() after cancel().
class CancelledError : public ProcessError {
 public:
  CancelledError() : ProcessError("mproc: the task was cancelled before it started") {}
  using ProcessError::ProcessError;
};

// A timed wait expired (Python: multiprocessing.TimeoutError).
class TimeoutError : public ProcessError {
 public:
  TimeoutError() : ProcessError("mproc: operation timed out") {}
  using ProcessError::ProcessError;
};

// The authkey handshake of a connection::Listener / Client failed: a wrong
// key on either side, a malformed or oversized handshake frame, or a peer
// that closed or stalled mid-handshake (Python:
// multiprocessing.AuthenticationError).
class AuthenticationError : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

// The peer closed its end and nothing is left to read (Python: EOFError).
class EOFError : public ProcessError {
 public:
  EOFError() : ProcessError("mproc: end of file (the other end was closed)") {}
  using ProcessError::ProcessError;
};

// Connection::recv_bytes_into: the message did not fit in the buffer
// (Python: multiprocessing.BufferTooShort). The message was received all
// the same: message() holds it whole.
class BufferTooShort : public ProcessError {
 public:
  BufferTooShort(std::vector<std::byte> message, std::size_t room)
      : ProcessError("mproc: Connection.recv_bytes_into(): a message of " + std::to_string(message.size()) +
                     " bytes does not fit in the buffer's " + std::to_string(room) +
                     " bytes after the offset; BufferTooShort::message() holds it"),
        message_(std::make_shared<const std::vector<std::byte>>(std::move(message))) {}
  // The message that did not fit. Never throws.
  const std::vector<std::byte>& message() const noexcept { return *message_; }

 private:
  std::shared_ptr<const std::vector<std::byte>> message_;  // shared: exceptions are copied
};

// A Barrier was broken by a timeout, an abort() or a reset() while waiting
// (Python: threading.BrokenBarrierError).
class BrokenBarrierError : public ProcessError {
 public:
  BrokenBarrierError() : ProcessError("mproc: barrier is broken") {}
  using ProcessError::ProcessError;
};

// What every exception a task raised in another process carries: the
// exception's type as that process named it, its what() there, and the
// process it was raised in. A mixin, not a std::exception (the exceptions
// that carry it are RemoteError, a ProcessError, and RemoteException<E>, an
// E), so `catch (const mp::RemoteTrace&)` catches every task failure from
// another process, whatever its type. Copying never throws.
class RemoteTrace {
 public:
  // `pid` 0: the process is not known.
  RemoteTrace(std::string type_name, std::string message, int pid = 0)
      : parts_(std::make_shared<const Parts>(describe(std::move(type_name), std::move(message), pid))) {}
  virtual ~RemoteTrace() = default;

  // The exception's type as the remote process named it, e.g. "std::invalid_argument".
  const std::string& type_name() const noexcept { return parts_->type_name; }
  // The exception's what() in the remote process.
  const std::string& message() const noexcept { return parts_->message; }
  // The id of the process the exception was raised in (a pool worker, an
  // MPI rank's process); 0 when not known.
  int pid() const noexcept { return parts_->pid; }
  // The what() of the exception carrying this trace.
  virtual const char* what() const noexcept = 0;

 protected:
  RemoteTrace(const RemoteTrace&) noexcept = default;
  RemoteTrace& operator=(const RemoteTrace&) noexcept = default;

  // "<type>: <message> (raised in worker process <pid>)" ("<type>:
  // <message>" when the process is not known).
  const char* description() const noexcept { return parts_->description.c_str(); }

 private:
  struct Parts {
    std::string type_name;
    std::string message;
    int pid;
    std::string description;
  };
  static Parts describe(std::string type_name, std::string message, int pid) {
    std::string description = type_name + ": " + message;
    if (pid != 0) description += " (raised in worker process " + std::to_string(pid) + ")";
    return {std::move(type_name), std::move(message), pid, std::move(description)};
  }
  std::shared_ptr<const Parts> parts_;
};

// A task raised an exception in another process whose type is not known to
// mproc (neither standard nor registered with mp::register_exception), or
// the machinery moving a task's arguments or results failed there (a
// serializer threw, memory ran out, the result could not be sent). what()
// is "<type>: <message>"; the parts are available separately (RemoteTrace).
class RemoteError : public ProcessError, public RemoteTrace {
 public:
  RemoteError(std::string type_name, std::string message, int pid = 0)
      : ProcessError(type_name + ": " + message), RemoteTrace(std::move(type_name), std::move(message), pid) {}

  const char* what() const noexcept override { return ProcessError::what(); }
};

// A task raised an exception of a known type E in another process (a
// standard exception such as std::invalid_argument, or a type registered
// with mp::register_exception): rethrown in this process as this, an E
// holding the remote exception's fields, so `catch (const E&)` works. what()
// is "<type>: <message> (raised in worker process <pid>)". Not a
// ProcessError: `catch (const mp::RemoteError&)` and `catch (const
// mp::ProcessError&)` do not catch it; `catch (const mp::RemoteTrace&)` does.
// Matching is by exact type: an unregistered subclass of a known type
// arrives as RemoteError, not as its base.
template <class E>
class RemoteException final : public E, public RemoteTrace {
  static_assert(std::is_base_of_v<std::exception, E>, "mproc::RemoteException<E>: E must derive from std::exception");
  static_assert(!std::is_final_v<E>, "mproc::RemoteException<E>: E must not be final");

 public:
  // `original`: the exception rebuilt from what crossed; the rest as for RemoteTrace.
  RemoteException(E original, std::string type_name, std::string message, int pid)
      : E(std::move(original)), RemoteTrace(std::move(type_name), std::move(message), pid) {}

  const char* what() const noexcept override { return description(); }
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
// exit(), segfault). Only the tasks that process held fail with it. Names
// the inputs that were lost, so the poison input can be found.
class WorkerCrashed : public ProcessError {
 public:
  // `exitcode` follows Python's convention: N for exit(N), -N for signal N.
  // `first_input`/`input_count`: the lost chunk's positions in a map's or
  // imap's input sequence (none for apply_async).
  // `oom_killed`: whether the kernel's OOM killer did it (nullopt: unknown).
  // `peak_memory`: the worker's peak resident memory in bytes (nullopt: unknown).
  WorkerCrashed(int pid, int exitcode, std::optional<std::size_t> first_input = std::nullopt,
                std::size_t input_count = 0, std::optional<bool> oom_killed = std::nullopt,
                std::optional<std::size_t> peak_memory = std::nullopt)
      : ProcessError(
            "mproc: worker process " + std::to_string(pid) + " died (" + detail::describe_exitcode(exitcode) +
            ") while running " + lost_text(first_input, input_count) +
            (oom_killed == true ? "; the kernel's OOM killer killed it (the oom_kill count of the memory "
                                  "cgroup rose): the task needed more memory than there was"
                                : "") +
            (peak_memory ? "; its peak resident memory was " + std::to_string(*peak_memory >> 20) + " MiB" : "")),
        pid_(pid),
        exitcode_(exitcode),
        first_input_(first_input),
        input_count_(input_count),
        oom_killed_(oom_killed),
        peak_memory_(peak_memory) {}

  // The dead worker's process id.
  int pid() const noexcept { return pid_; }
  // N for exit(N), -N when killed by signal N.
  int exitcode() const noexcept { return exitcode_; }
  // The signal that killed the worker, or 0 when it exited.
  int signal() const noexcept { return exitcode_ < 0 ? -exitcode_ : 0; }
  // For map/starmap/imap: the position in the input sequence of the first
  // input of the chunk the worker was running (input_count() inputs; one of
  // them killed it — with chunksize 1, exactly that one). nullopt for
  // apply_async, whose AsyncResult names the call.
  std::optional<std::size_t> first_input() const noexcept { return first_input_; }
  std::size_t input_count() const noexcept { return input_count_; }
  // For a SIGKILLed worker: whether the kernel's OOM killer killed it (the
  // oom_kill count of the pool's memory cgroup rose, cgroup v1 or v2);
  // nullopt when unknown (another death, or no readable count).
  std::optional<bool> oom_killed() const noexcept { return oom_killed_; }
  // The worker's peak resident set size in bytes (its own pages and the
  // shared ones it touched, as getrusage's ru_maxrss counts them); nullopt
  // when unknown.
  std::optional<std::size_t> peak_memory() const noexcept { return peak_memory_; }

 private:
  static std::string lost_text(std::optional<std::size_t> first, std::size_t count) {
    if (!first) return "a task (apply_async)";
    if (count == 1) return "input " + std::to_string(*first) + " (its position in the inputs)";
    return "inputs " + std::to_string(*first) + ".." + std::to_string(*first + count - 1) +
           " (positions in the inputs: one chunk; chunksize=1 names the input exactly)";
  }

  int pid_;
  int exitcode_;
  std::optional<std::size_t> first_input_;
  std::size_t input_count_;
  std::optional<bool> oom_killed_;
  std::optional<std::size_t> peak_memory_;
};

}  // namespace mproc
