// Tests of detail/os/fd.hpp: owning descriptors, EINTR-safe I/O, deadlines, and private descriptors
// that no forked child inherits.
#include <chrono>
#include <csignal>
#include <stdexcept>

#include <mproc/detail/os/fd.hpp>
#include <mproc/detail/util/demangle.hpp>

#include "catch.hpp"

namespace d = mproc::detail;
using namespace std::chrono_literals;

TEST_CASE("UniqueFd closes, moves and releases") {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  {
    d::UniqueFd r(fds[0]);
    d::UniqueFd w(fds[1]);
    d::UniqueFd moved = std::move(w);
    CHECK_FALSE(w.valid());
    CHECK(moved.get() == fds[1]);
    CHECK(d::write_all(moved.get(), "abc", 3));
    char buf[3];
    CHECK(d::read_full(r.get(), buf, 3) == 3);
    moved.reset();
    CHECK(d::read_full(r.get(), buf, 3) == 0);  // EOF after the writer closed
  }
  CHECK(::fcntl(fds[0], F_GETFD) == -1);  // closed by the destructor
  CHECK(errno == EBADF);
}

TEST_CASE("poll_until times out, then sees data") {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  d::UniqueFd r(fds[0]), w(fds[1]);
  const auto start = d::Clock::now();
  CHECK(d::poll_until(r.get(), POLLIN, d::deadline_after(30ms)) == 0);
  CHECK(d::Clock::now() - start >= 30ms);
  REQUIRE(d::write_all(w.get(), "x", 1));
  CHECK((d::poll_until(r.get(), POLLIN, d::deadline_after(1s)) & POLLIN) != 0);
}

TEST_CASE("write_all reports a vanished reader instead of raising SIGPIPE") {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  d::UniqueFd w(fds[1]);
  ::close(fds[0]);
  auto old = std::signal(SIGPIPE, SIG_IGN);
  CHECK_FALSE(d::write_all(w.get(), "x", 1));
  std::signal(SIGPIPE, old);
}

TEST_CASE("throw_errno names the call and the error") {
  REQUIRE_THROWS_MATCHES(d::throw_errno("open(/nowhere)", ENOENT), mproc::ProcessError,
                         mproc_test::MessageContains("mproc: open(/nowhere): No such file or directory"));
}

TEST_CASE("deadline_after saturates and clamps") {
  CHECK(d::deadline_after(std::chrono::hours::max()) == d::Clock::time_point::max());
  const auto before = d::Clock::now();
  const auto negative = d::deadline_after(-5s);
  const auto after = d::Clock::now();
  CHECK(negative >= before);
  CHECK(negative <= after);
  CHECK(d::remaining(before - 1s) == d::Clock::duration::zero());
}

TEST_CASE("exception descriptions carry the demangled type") {
  try {
    throw std::invalid_argument("bad shard");
  } catch (...) {
    const auto info = d::describe_current_exception();
    CHECK(info.type_name == "std::invalid_argument");
    CHECK(info.message == "bad shard");
  }
  try {
    throw 42;
  } catch (...) {
    CHECK(d::describe_current_exception().type_name == "int");
  }
}

#include "child.hpp"

TEST_CASE("run_in_child reports exit codes, signals and timeouts") {
  CHECK(mproc_test::run_in_child([] { return 7; }).exitcode == 7);
  CHECK(mproc_test::run_in_child([]() -> int { throw std::runtime_error("boom"); }).exitcode == 1);
  // Catch2 installs a SIGABRT handler (which allocates: TSan objects); the child restores the default.
  CHECK(mproc_test::run_in_child([]() -> int {
          ::signal(SIGABRT, SIG_DFL);
          ::raise(SIGABRT);
          return 0;
        }).exitcode == -SIGABRT);
  const auto hung = mproc_test::run_in_child(
      []() -> int {
        ::pause();
        return 0;
      },
      50ms);
  CHECK(hung.timed_out);
  CHECK(hung.exitcode == -SIGKILL);
}
