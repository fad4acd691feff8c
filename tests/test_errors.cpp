// Tests of <mproc/errors.hpp>: the exception hierarchy, messages, and how exit codes and signals are described.
#include <csignal>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>

#include <mproc/errors.hpp>

#include "catch.hpp"

namespace mp = mproc;

TEST_CASE("every mproc error derives from ProcessError, itself a runtime_error") {
  STATIC_REQUIRE(std::is_base_of_v<std::runtime_error, mp::ProcessError>);
  STATIC_REQUIRE(std::is_base_of_v<mp::ProcessError, mp::Empty>);
  STATIC_REQUIRE(std::is_base_of_v<mp::ProcessError, mp::Full>);
  STATIC_REQUIRE(std::is_base_of_v<mp::ProcessError, mp::TimeoutError>);
  STATIC_REQUIRE(std::is_base_of_v<mp::ProcessError, mp::EOFError>);
  STATIC_REQUIRE(std::is_base_of_v<mp::ProcessError, mp::BrokenBarrierError>);
  STATIC_REQUIRE(std::is_base_of_v<mp::ProcessError, mp::RemoteError>);
  STATIC_REQUIRE(std::is_base_of_v<mp::ProcessError, mp::WorkerCrashed>);
}

TEST_CASE("errors are caught through the base class with their message") {
  auto throw_and_catch = [](auto error) -> std::string {
    try {
      throw error;
    } catch (const mp::ProcessError& e) {
      return e.what();
    }
  };
  CHECK(throw_and_catch(mp::Empty()) == "mproc: queue is empty");
  CHECK(throw_and_catch(mp::Full()) == "mproc: queue is full");
  CHECK(throw_and_catch(mp::TimeoutError()) == "mproc: operation timed out");
  CHECK(throw_and_catch(mp::EOFError()) == "mproc: end of file (the other end was closed)");
  CHECK(throw_and_catch(mp::BrokenBarrierError()) == "mproc: barrier is broken");
  CHECK(throw_and_catch(mp::TimeoutError("custom")) == "custom");
}

TEST_CASE("RemoteError keeps the remote type and message apart") {
  const mp::RemoteError e("std::invalid_argument", "bad shard 7");
  CHECK(e.type_name() == "std::invalid_argument");
  CHECK(e.message() == "bad shard 7");
  CHECK(std::string(e.what()) == "std::invalid_argument: bad shard 7");
}

TEST_CASE("RemoteError is a RemoteTrace: the same parts, and the process when known") {
  STATIC_REQUIRE(std::is_base_of_v<mp::RemoteTrace, mp::RemoteError>);
  STATIC_REQUIRE_FALSE(std::is_base_of_v<std::exception, mp::RemoteTrace>);
  STATIC_REQUIRE(std::is_nothrow_copy_constructible_v<mp::RemoteError>);
  const mp::RemoteError e("Oops", "no luck", 4321);
  CHECK(std::string(e.what()) == "Oops: no luck");  // unchanged by the pid
  const mp::RemoteTrace& trace = e;
  CHECK(trace.type_name() == "Oops");
  CHECK(trace.message() == "no luck");
  CHECK(trace.pid() == 4321);
  CHECK(std::string(trace.what()) == "Oops: no luck");
  CHECK(mp::RemoteError("T", "m").pid() == 0);
}

TEST_CASE("RemoteException<E> is an E and a RemoteTrace, not a ProcessError, and what() names the process") {
  using Typed = mp::RemoteException<std::out_of_range>;
  STATIC_REQUIRE(std::is_base_of_v<std::out_of_range, Typed>);
  STATIC_REQUIRE(std::is_base_of_v<std::logic_error, Typed>);
  STATIC_REQUIRE(std::is_base_of_v<mp::RemoteTrace, Typed>);
  STATIC_REQUIRE_FALSE(std::is_base_of_v<mp::ProcessError, Typed>);
  STATIC_REQUIRE(std::is_nothrow_copy_constructible_v<Typed>);
  const auto thrown = [](int pid) -> std::exception_ptr {
    return std::make_exception_ptr(Typed(std::out_of_range("index 12"), "std::out_of_range", "index 12", pid));
  };
  // Caught as the original type, as std::exception, and as RemoteTrace, with one what().
  const std::string expected = "std::out_of_range: index 12 (raised in worker process 77)";
  try {
    std::rethrow_exception(thrown(77));
  } catch (const std::out_of_range& e) {
    CHECK(std::string(e.what()) == expected);
  }
  try {
    std::rethrow_exception(thrown(77));
  } catch (const std::exception& e) {
    CHECK(std::string(e.what()) == expected);
  }
  try {
    std::rethrow_exception(thrown(77));
  } catch (const mp::RemoteTrace& e) {
    CHECK(std::string(e.what()) == expected);
    CHECK(e.type_name() == "std::out_of_range");
    CHECK(e.message() == "index 12");
    CHECK(e.pid() == 77);
  }
  // Not caught as an mproc error.
  bool as_process_error = false;
  try {
    try {
      std::rethrow_exception(thrown(77));
    } catch (const mp::ProcessError&) {
      as_process_error = true;
    }
  } catch (const std::out_of_range&) {
  }
  CHECK_FALSE(as_process_error);
  // An unknown process: no parenthesis.
  try {
    std::rethrow_exception(thrown(0));
  } catch (const std::exception& e) {
    CHECK(std::string(e.what()) == "std::out_of_range: index 12");
  }
}

TEST_CASE("WorkerCrashed reports exit codes and signals the Python way") {
  const mp::WorkerCrashed killed(1234, -SIGKILL);
  CHECK(killed.pid() == 1234);
  CHECK(killed.exitcode() == -SIGKILL);
  CHECK(killed.signal() == SIGKILL);
  CHECK(std::string(killed.what()) ==
        "mproc: worker process 1234 died (killed by SIGKILL) while running a task (apply_async)");
  CHECK_FALSE(killed.first_input().has_value());

  const mp::WorkerCrashed exited(99, 3);
  CHECK(exited.exitcode() == 3);
  CHECK(exited.signal() == 0);
  CHECK(std::string(exited.what()) == "mproc: worker process 99 died (exit code 3) while running a task (apply_async)");

  const mp::WorkerCrashed one(7, -SIGSEGV, 41, 1);
  CHECK(one.first_input() == std::optional<std::size_t>(41));
  CHECK(one.input_count() == 1);
  CHECK(std::string(one.what()) ==
        "mproc: worker process 7 died (killed by SIGSEGV) while running input 41 (its position in the inputs)");
  const mp::WorkerCrashed oom(8, -SIGKILL, std::nullopt, 0, true, std::size_t{300} << 20);
  CHECK(oom.peak_memory() == std::optional<std::size_t>(std::size_t{300} << 20));
  CHECK(std::string(oom.what()) ==
        "mproc: worker process 8 died (killed by SIGKILL) while running a task (apply_async); the kernel's OOM "
        "killer killed it (the oom_kill count of the memory cgroup rose): the task needed more memory than there "
        "was; its peak resident memory was 300 MiB");
  CHECK_FALSE(killed.peak_memory().has_value());
  const mp::WorkerCrashed chunk(7, -SIGKILL, 40, 20);
  CHECK(std::string(chunk.what()) ==
        "mproc: worker process 7 died (killed by SIGKILL) while running inputs 40..59 "
        "(positions in the inputs: one chunk; chunksize=1 names the input exactly)");
}

TEST_CASE("signal names") {
  CHECK(mp::detail::signal_name(SIGSEGV) == "SIGSEGV");
  CHECK(mp::detail::signal_name(SIGABRT) == "SIGABRT");
  CHECK(mp::detail::signal_name(SIGRTMIN + 1) == "signal " + std::to_string(SIGRTMIN + 1));
  CHECK(mp::detail::describe_exitcode(0) == "exit code 0");
  CHECK(mp::detail::describe_exitcode(-SIGTERM) == "killed by SIGTERM");
}
