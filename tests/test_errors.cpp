#include <csignal>
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

TEST_CASE("WorkerCrashed reports exit codes and signals the Python way") {
  const mp::WorkerCrashed killed(1234, -SIGKILL);
  CHECK(killed.pid() == 1234);
  CHECK(killed.exitcode() == -SIGKILL);
  CHECK(killed.signal() == SIGKILL);
  CHECK(std::string(killed.what()) == "mproc: worker process 1234 died (killed by SIGKILL) while running a task");

  const mp::WorkerCrashed exited(99, 3);
  CHECK(exited.exitcode() == 3);
  CHECK(exited.signal() == 0);
  CHECK(std::string(exited.what()) == "mproc: worker process 99 died (exit code 3) while running a task");
}

TEST_CASE("signal names") {
  CHECK(mp::detail::signal_name(SIGSEGV) == "SIGSEGV");
  CHECK(mp::detail::signal_name(SIGABRT) == "SIGABRT");
  CHECK(mp::detail::signal_name(SIGRTMIN + 1) == "signal " + std::to_string(SIGRTMIN + 1));
  CHECK(mp::detail::describe_exitcode(0) == "exit code 0");
  CHECK(mp::detail::describe_exitcode(-SIGTERM) == "killed by SIGTERM");
}
