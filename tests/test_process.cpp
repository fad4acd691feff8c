// Tests of <mproc/process.hpp>: Process start/join/terminate/kill, exit codes, daemons, names, and
// active_children/current_process.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mproc/connection.hpp>
#include <mproc/process.hpp>

#include "catch.hpp"
#include "child.hpp"

namespace mp = mproc;
using namespace std::chrono_literals;
using mproc_test::MessageContains;
using Clock = std::chrono::steady_clock;

namespace {

std::string as_string(const std::vector<std::byte>& bytes) {
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

// Receives one message, failing the test instead of hanging.
std::string recv_string(mp::Connection& c, std::chrono::milliseconds timeout = 10s) {
  REQUIRE(c.poll(timeout));
  return as_string(c.recv_bytes());
}

// This process has no child at all, not even a zombie.
bool no_children() {
  errno = 0;
  return ::waitpid(-1, nullptr, WNOHANG) == -1 && errno == ECHILD;
}

std::size_t open_fd_count() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

// The number N in "Process-N".
unsigned process_number(const std::string& name) {
  REQUIRE(name.rfind("Process-", 0) == 0);
  return static_cast<unsigned>(std::stoul(name.substr(8)));
}

// Runs `start` with this process's stderr redirected to a pipe, so that a
// child started meanwhile writes its stderr there; `finish` runs after
// stderr is restored (it should join the child). Returns what the child wrote.
template <class Start, class Finish>
std::string capture_child_stderr(Start&& start, Finish&& finish) {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  std::fflush(stderr);
  const int saved = ::dup(STDERR_FILENO);
  REQUIRE(saved >= 0);
  ::dup2(fds[1], STDERR_FILENO);
  ::close(fds[1]);
  start();
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  finish();
  std::string out;
  char buf[256];
  for (;;) {
    REQUIRE(mp::detail::poll_until(fds[0], POLLIN, mp::detail::deadline_after(10s)) != 0);
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  return out;
}

}  // namespace

TEST_CASE("hello process: the target runs in a child with its arguments") {
  mp::Connection parent_end, child_end;
  std::tie(parent_end, child_end) = mp::Pipe();
  mp::Process p(
      [](mp::Connection& conn, const std::string& who, int n) {
        conn.send_bytes("hello " + who + " " + std::to_string(n) + " from " + std::to_string(::getpid()));
      },
      std::move(child_end), std::string("world"), 42);
  p.start();
  REQUIRE(p.pid().has_value());
  CHECK(*p.pid() != ::getpid());
  CHECK(recv_string(parent_end) == "hello world 42 from " + std::to_string(*p.pid()));
  REQUIRE(p.join(10s));
  CHECK(p.exitcode() == 0);
  CHECK(no_children());
}

TEST_CASE("captures reach the child, by value and by reference") {
  mp::Connection parent_end, child_end;
  std::tie(parent_end, child_end) = mp::Pipe();
  std::vector<int> by_ref{1, 2, 3};
  const std::string by_value = "copied";
  auto owned = std::make_unique<int>(7);  // move-only argument
  mp::Process p(
      [&by_ref, by_value, &child_end](std::unique_ptr<int> v) {
        by_ref.push_back(*v);  // the child's copy of the parent's memory
        std::string msg = by_value;
        for (int x : by_ref) {
          msg += ' ';  // (not `" " + to_string(x)`: GCC 12 -Wrestrict false positive)
          msg += std::to_string(x);
        }
        child_end.send_bytes(msg);
      },
      std::move(owned));
  p.start();
  child_end.close();
  CHECK(recv_string(parent_end) == "copied 1 2 3 7");
  REQUIRE(p.join(10s));
  CHECK(by_ref == std::vector<int>{1, 2, 3});  // the parent's vector is untouched
  CHECK(p.exitcode() == 0);
}

TEST_CASE("start() drops the parent's copy of the arguments") {
  mp::Connection parent_end, child_end;
  std::tie(parent_end, child_end) = mp::Pipe();
  mp::Process p([](mp::Connection conn) { conn.send_bytes("x"); }, std::move(child_end));
  p.start();
  CHECK(recv_string(parent_end) == "x");
  // The only other copy of the child's end died with the child: EOF, no hang.
  REQUIRE(parent_end.poll(10s));
  CHECK_THROWS_AS(parent_end.recv_bytes(), mp::EOFError);
  REQUIRE(p.join(10s));
}

TEST_CASE("exit codes follow Python: 0, N, 1 for an exception, -N for signal N") {
  mp::Process ok([] {});
  mp::Process three([] { return 3; });
  mp::Process wraps([] { return 256 + 5; });  // the OS keeps the low 8 bits
  mp::Process ignored([] { return std::string("not an exit code"); });
  mp::Process boolean([] { return true; });
  mp::Process aborts([] {
    std::signal(SIGABRT, SIG_DFL);  // not Catch's handler, inherited through fork()
    std::abort();
  });
  for (auto* p : {&ok, &three, &wraps, &ignored, &boolean, &aborts}) p->start();
  for (auto* p : {&ok, &three, &wraps, &ignored, &boolean, &aborts}) REQUIRE(p->join(10s));
  CHECK(ok.exitcode() == 0);
  CHECK(three.exitcode() == 3);
  CHECK(wraps.exitcode() == 5);
  CHECK(ignored.exitcode() == 0);
  CHECK(boolean.exitcode() == 0);
  CHECK(aborts.exitcode() == -SIGABRT);
  CHECK(no_children());
}

namespace {
// Python's class Greeter(Process): def run(self): ...
class Greeter : public mp::Process {
 public:
  Greeter(mp::Connection out, std::string who) : mp::Process({.name = "greeter"}), out_(std::move(out)), who_(who) {}
  void run() override {
    out_.send_bytes("hello " + who_ + " from " + mp::current_process().name);
    if (who_ == "nobody") throw std::invalid_argument("no one to greet");
  }

 private:
  mp::Connection out_;
  std::string who_;
};
}  // namespace

TEST_CASE("a Process subclass overriding run() runs it in the child") {
  auto [parent_end, child_end] = mp::Pipe();
  Greeter g(std::move(child_end), "world");
  CHECK(g.name() == "greeter");
  g.start();
  CHECK(recv_string(parent_end) == "hello world from greeter");
  REQUIRE(g.join(10s));
  CHECK(g.exitcode() == 0);

  auto [parent2, child2] = mp::Pipe();
  Greeter bad(std::move(child2), "nobody");
  const std::string err = capture_child_stderr([&] { bad.start(); }, [&] { REQUIRE(bad.join(10s)); });
  CHECK(recv_string(parent2) == "hello nobody from greeter");
  CHECK(err == "Process greeter: std::invalid_argument: no one to greet\n");
  CHECK(bad.exitcode() == 1);

  // run() called directly runs the target here, as in Python.
  int ran_in = 0;
  mp::Process direct([&ran_in] { ran_in = static_cast<int>(::getpid()); });
  direct.run();
  CHECK(ran_in == static_cast<int>(::getpid()));
  CHECK(no_children());
}

TEST_CASE("an uncaught exception exits 1 and prints its type and message") {
  mp::Process p([] { throw std::runtime_error("boom"); });
  const std::string err = capture_child_stderr([&] { p.start(); }, [&] { REQUIRE(p.join(10s)); });
  CHECK(err == "Process " + p.name() + ": std::runtime_error: boom\n");
  CHECK(p.exitcode() == 1);

  mp::Process q(mp::ProcessOptions{.name = "thrower"}, [] { throw 42; });
  const std::string err2 = capture_child_stderr([&] { q.start(); }, [&] { REQUIRE(q.join(10s)); });
  CHECK(err2 == "Process thrower: int\n");
  CHECK(q.exitcode() == 1);
}

TEST_CASE("the child's buffered output is flushed, the parent's is not duplicated") {
  mp::Process p([] { std::printf("child line without newline flush"); });
  const std::string out = [&] {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    std::fflush(stdout);
    const int saved = ::dup(STDOUT_FILENO);
    ::dup2(fds[1], STDOUT_FILENO);
    ::close(fds[1]);
    std::printf("parent-before-fork;");  // buffered (stdout is a pipe now)
    p.start();
    std::fflush(stdout);
    ::dup2(saved, STDOUT_FILENO);
    ::close(saved);
    REQUIRE(p.join(10s));
    std::string s;
    char buf[256];
    ssize_t n;
    while ((n = ::read(fds[0], buf, sizeof buf)) > 0) s.append(buf, static_cast<std::size_t>(n));
    ::close(fds[0]);
    return s;
  }();
  CHECK(out == "parent-before-fork;child line without newline flush");
  CHECK(p.exitcode() == 0);
}

TEST_CASE("terminate() and kill() give -15 and -9") {
  mp::Connection parent_end, child_end;
  std::tie(parent_end, child_end) = mp::Pipe(false);  // two writers: small pipe writes are atomic
  auto sleeper = [&child_end] {
    child_end.send_bytes("ready");
    for (;;) ::pause();
  };
  mp::Process t(sleeper), k(sleeper);
  t.start();
  k.start();
  child_end.close();
  CHECK(recv_string(parent_end) == "ready");
  CHECK(recv_string(parent_end) == "ready");
  CHECK(t.is_alive());
  CHECK(k.is_alive());
  t.terminate();
  k.kill();
  REQUIRE(t.join(10s));
  REQUIRE(k.join(10s));
  CHECK(t.exitcode() == -SIGTERM);
  CHECK(k.exitcode() == -SIGKILL);
  // Signalling an exited process is a no-op.
  t.kill();
  k.terminate();
  CHECK(t.exitcode() == -SIGTERM);
  CHECK(no_children());
}

TEST_CASE("join(timeout) on a running child returns false on time") {
  mp::Process p([] {
    for (;;) ::pause();
  });
  p.start();
  const auto t0 = Clock::now();
  CHECK_FALSE(p.join(100ms));
  const auto waited = Clock::now() - t0;
  CHECK(waited >= 100ms);
  CHECK(waited < 2s);
  CHECK(p.is_alive());
  CHECK(p.exitcode() == std::nullopt);
  CHECK_FALSE(p.join(0ms));
  p.terminate();
  REQUIRE(p.join(10s));
  CHECK(p.exitcode() == -SIGTERM);
  CHECK(p.join(0ms));  // joining again is fine
  p.join();
}

TEST_CASE("is_alive() goes false -> true -> false") {
  mp::Connection parent_end, child_end;
  std::tie(parent_end, child_end) = mp::Pipe();
  mp::Process p([&child_end] {
    (void)child_end.poll(30s);  // wait for the go signal
    return static_cast<int>(child_end.recv_bytes().size());
  });
  CHECK_FALSE(p.is_alive());
  CHECK(p.pid() == std::nullopt);
  CHECK(p.exitcode() == std::nullopt);
  p.start();
  child_end.close();
  CHECK(p.is_alive());
  CHECK(p.exitcode() == std::nullopt);
  parent_end.send_bytes("four");
  p.join();
  CHECK_FALSE(p.is_alive());
  CHECK(p.exitcode() == 4);
  CHECK(p.pid().has_value());  // kept after the child exited
}

TEST_CASE("misuse throws ProcessError naming the process") {
  mp::Process p(mp::ProcessOptions{.name = "worker"}, [] {});
  REQUIRE_THROWS_MATCHES(p.join(), mp::ProcessError, MessageContains("worker: can only join() a started process"));
  REQUIRE_THROWS_MATCHES(p.join(1ms), mp::ProcessError, MessageContains("worker: can only join() a started process"));
  REQUIRE_THROWS_MATCHES(p.terminate(), mp::ProcessError, MessageContains("worker: terminate() before start()"));
  REQUIRE_THROWS_MATCHES(p.kill(), mp::ProcessError, MessageContains("worker: kill() before start()"));
  p.start();
  REQUIRE_THROWS_MATCHES(p.start(), mp::ProcessError, MessageContains("worker: start() called twice"));
  REQUIRE_THROWS_MATCHES(p.set_daemon(true), mp::ProcessError, MessageContains("worker: set_daemon() after start()"));
  p.join();

  mp::Process q([] {});
  q.start();
  REQUIRE_THROWS_MATCHES(q.start(), mp::ProcessError, MessageContains(q.name() + ": start() called twice"));
  q.join();
  CHECK(q.exitcode() == 0);
}

TEST_CASE("close(): refused while running, then the object is closed") {
  mp::Connection parent_end, child_end;
  std::tie(parent_end, child_end) = mp::Pipe();
  mp::Process p([&child_end] { (void)child_end.poll(30s); });
  p.start();
  child_end.close();
  REQUIRE_THROWS_MATCHES(p.close(), mp::ProcessError,
                         MessageContains(p.name() + ": close() while the process is still running"));
  parent_end.send_bytes("go");
  p.join();
  p.close();
  p.close();  // idempotent
  CHECK(p.pid().has_value());
  REQUIRE_THROWS_MATCHES(p.is_alive(), mp::ProcessError,
                         MessageContains(p.name() + ": is_alive() on a closed process"));
  REQUIRE_THROWS_MATCHES(p.join(), mp::ProcessError, MessageContains(p.name() + ": join() on a closed process"));
  REQUIRE_THROWS_AS(p.exitcode(), mp::ProcessError);
  REQUIRE_THROWS_AS(p.start(), mp::ProcessError);

  mp::Process never([] {});
  never.close();  // closing an unstarted process is fine
  REQUIRE_THROWS_AS(never.start(), mp::ProcessError);
  CHECK(no_children());
}

TEST_CASE("names: Process-N by default, settable, seen by the child") {
  mp::Process a([] {}), b([] {});
  CHECK(process_number(b.name()) == process_number(a.name()) + 1);
  CHECK_FALSE(a.daemon());
  mp::Process c(mp::ProcessOptions{.name = "custom", .daemon = true}, [] {});
  CHECK(c.name() == "custom");
  CHECK(c.daemon());
  a.set_name("renamed");
  CHECK(a.name() == "renamed");
  b.set_daemon(true);
  CHECK(b.daemon());
  CHECK(mp::current_process().name == "MainProcess");
  CHECK(mp::current_process().pid == ::getpid());
  CHECK_FALSE(mp::current_process().daemon);
  CHECK(mp::parent_process() == std::nullopt);

  mp::Connection parent_end, child_end;
  std::tie(parent_end, child_end) = mp::Pipe();
  mp::Process child(mp::ProcessOptions{.name = "outer", .daemon = false}, [&child_end] {
    const auto me = mp::current_process();
    const auto parent = mp::parent_process();
    std::string msg = me.name + "|" + std::to_string(me.pid == ::getpid()) + "|" +
                      (parent ? parent->name + "|" + std::to_string(parent->pid == ::getppid()) : std::string("none"));
    // A grandchild is named after its parent's identity: Process-<n>:1.
    mp::Process grandchild([&child_end] { child_end.send_bytes(mp::current_process().name); });
    msg += "|" + grandchild.name();
    child_end.send_bytes(msg);
    grandchild.start();
    grandchild.join();
    return *grandchild.exitcode();
  });
  const unsigned n = process_number(mp::Process([] {}).name()) - 1;  // child's number
  child.start();
  child_end.close();
  const std::string expected_grandchild = "Process-" + std::to_string(n) + ":1";
  CHECK(recv_string(parent_end) == "outer|1|MainProcess|1|" + expected_grandchild);
  CHECK(recv_string(parent_end) == expected_grandchild);
  REQUIRE(child.join(10s));
  CHECK(child.exitcode() == 0);
  CHECK(no_children());
}

TEST_CASE("a copy of a Process in a child refuses to act on its sibling") {
  mp::Connection parent_end, child_end;
  std::tie(parent_end, child_end) = mp::Pipe();
  mp::Process sibling([] {
    for (;;) ::pause();
  });
  sibling.start();
  mp::Process p([&] {
    try {
      sibling.join();
    } catch (const mp::ProcessError& e) {
      child_end.send_bytes(e.what());
    }
    try {
      sibling.kill();
    } catch (const mp::ProcessError& e) {
      child_end.send_bytes(e.what());
    }
    child_end.send_bytes(std::to_string(mp::active_children().size()));
  });
  p.start();
  child_end.close();
  CHECK(recv_string(parent_end) == sibling.name() + ": join() can only be used on a child of this process");
  CHECK(recv_string(parent_end) == sibling.name() + ": kill() can only be used on a child of this process");
  CHECK(recv_string(parent_end) == "0");  // the registry is emptied in a fork
  REQUIRE(p.join(10s));
  CHECK(p.exitcode() == 0);
  CHECK(sibling.is_alive());  // untouched
  sibling.kill();
  REQUIRE(sibling.join(10s));
}

TEST_CASE("active_children() lists live children in start order and reaps the rest") {
  // One simplex pipe per child: each child waits for its own message.
  std::vector<mp::Connection> go(3), wait(3);
  for (std::size_t i = 0; i < 3; ++i) std::tie(wait[i], go[i]) = mp::Pipe(false);
  std::vector<mp::Process> procs;
  for (std::size_t i = 0; i < 3; ++i) {
    procs.emplace_back([&go, &wait, i] {
      for (auto& g : go) g.close();  // else this child's copies keep its channel open
      (void)wait[i].poll(30s);
      try {
        return static_cast<int>(wait[i].recv_bytes().size());
      } catch (const mp::EOFError&) {
        return 100;
      }
    });
  }
  procs[1].set_daemon(true);
  CHECK(mp::active_children().empty());
  for (auto& p : procs) p.start();
  for (auto& w : wait) w.close();
  auto children = mp::active_children();
  REQUIRE(children.size() == 3);
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(children[i].pid == *procs[i].pid());
    CHECK(children[i].name == procs[i].name());
    CHECK(children[i].daemon == (i == 1));
  }
  // The middle child exits; active_children() reaps it without join().
  go[1].send_bytes("xy");
  const auto deadline = Clock::now() + 10s;
  while (mp::active_children().size() != 2 && Clock::now() < deadline)
    std::this_thread::sleep_for(1ms);  // polling a child's exit
  children = mp::active_children();
  REQUIRE(children.size() == 2);
  CHECK(children[0].pid == *procs[0].pid());
  CHECK(children[1].pid == *procs[2].pid());
  errno = 0;
  CHECK(::waitpid(*procs[1].pid(), nullptr, WNOHANG) == -1);  // already reaped
  CHECK(errno == ECHILD);
  CHECK_FALSE(procs[1].is_alive());
  CHECK(procs[1].exitcode() == 2);  // the status reaped by active_children() is kept
  for (auto& g : go) g.close();     // the others get EOF and exit 100
  for (std::size_t i = 0; i < 3; ++i) {
    REQUIRE(procs[i].join(10s));
    CHECK(procs[i].exitcode() == (i == 1 ? 2 : 100));
  }
  CHECK(mp::active_children().empty());
  CHECK(no_children());
}

TEST_CASE("active_children() is thread-safe against start/join in another thread") {
  std::atomic<bool> stop{false};
  std::atomic<std::size_t> calls{0}, most{0};
  std::thread watcher([&] {  // (Catch assertions are not thread-safe: no CHECK here)
    while (!stop.load()) {
      const std::size_t n = mp::active_children().size();
      if (n > most.load()) most = n;
      calls.fetch_add(1);
    }
  });
  for (int round = 0; round < 25; ++round) {
    std::vector<mp::Process> procs;
    for (int i = 0; i < 4; ++i) procs.emplace_back([i] { return i; });
    for (auto& p : procs) p.start();
    for (std::size_t i = 0; i < procs.size(); ++i) {
      REQUIRE(procs[i].join(10s));
      CHECK(procs[i].exitcode() == static_cast<int>(i));
    }
  }
  stop = true;
  watcher.join();
  CHECK(calls.load() > 0);
  CHECK(most.load() <= 4);
  CHECK(no_children());
}

TEST_CASE("destructor: a running non-daemon child is joined") {
  mp::Connection parent_end, child_end;
  std::tie(parent_end, child_end) = mp::Pipe();
  pid_t pid = 0;
  {
    mp::Process p([&child_end] {
      std::this_thread::sleep_for(200ms);
      child_end.send_bytes("finished");
    });
    p.start();
    pid = *p.pid();
  }  // blocks until the child is done
  child_end.close();
  REQUIRE(parent_end.poll(0s));  // the child's message is already there
  CHECK(as_string(parent_end.recv_bytes()) == "finished");
  errno = 0;
  CHECK(::waitpid(pid, nullptr, WNOHANG) == -1);
  CHECK(errno == ECHILD);
  CHECK(no_children());
}

TEST_CASE("destructor: a running daemon is terminated, or killed after 1 s") {
  mp::Connection parent_end, child_end;
  std::tie(parent_end, child_end) = mp::Pipe();
  auto t0 = Clock::now();
  {
    mp::Process p(mp::ProcessOptions{.daemon = true}, [] {
      for (;;) ::pause();
    });
    p.start();
  }
  CHECK(Clock::now() - t0 < 900ms);  // SIGTERM was enough
  CHECK(no_children());

  {
    mp::Process stubborn(mp::ProcessOptions{.daemon = true}, [&child_end] {
      std::signal(SIGTERM, SIG_IGN);
      child_end.send_bytes("ignoring SIGTERM");
      for (;;) ::pause();
    });
    stubborn.start();
    CHECK(recv_string(parent_end) == "ignoring SIGTERM");
    t0 = Clock::now();
  }
  const auto took = Clock::now() - t0;
  CHECK(took >= 1s);
  CHECK(took < 5s);
  CHECK(no_children());
}

TEST_CASE("destructor during stack unwinding terminates instead of joining") {
  mp::Connection parent_end, child_end;
  std::tie(parent_end, child_end) = mp::Pipe();
  const auto t0 = Clock::now();
  try {
    mp::Process p([&] {
      parent_end.close();
      (void)child_end.recv_bytes();  // waits for the parent, which fails first
    });
    p.start();
    throw std::runtime_error("the parent failed before sending");
  } catch (const std::runtime_error&) {
  }
  CHECK(Clock::now() - t0 < 900ms);  // SIGTERM, no join (which would hang)
  CHECK(no_children());
}

TEST_CASE("moving a Process keeps one owner of the child") {
  std::vector<mp::Process> procs;
  for (int i = 0; i < 4; ++i) procs.emplace_back([i] { return 10 + i; });
  for (auto& p : procs) p.start();
  mp::Process moved = std::move(procs[0]);
  REQUIRE_THROWS_AS(procs[0].join(), mp::ProcessError);  // moved-from
  REQUIRE(moved.join(10s));
  CHECK(moved.exitcode() == 10);
  mp::Process other([] { return 99; });
  other.start();
  other = std::move(procs[1]);  // finishes (joins) the child `other` held
  REQUIRE(other.join(10s));
  CHECK(other.exitcode() == 11);
  for (std::size_t i = 2; i < procs.size(); ++i) REQUIRE(procs[i].join(10s));
  CHECK(no_children());
}

TEST_CASE("the child gets an empty signal mask and a default SIGTERM") {
  const auto result = mproc_test::run_in_child([] {
    // A parent that blocks SIGTERM and handles it itself...
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
    std::signal(SIGTERM, [](int) {});
    std::signal(SIGCHLD, SIG_IGN);
    mp::Connection parent_end, child_end;
    std::tie(parent_end, child_end) = mp::Pipe();
    mp::Process p([&child_end] {
      sigset_t mask;
      ::pthread_sigmask(SIG_SETMASK, nullptr, &mask);
      child_end.send_bytes(sigismember(&mask, SIGTERM) ? "blocked" : "unblocked");
      for (;;) ::pause();
    });
    p.start();
    child_end.close();
    if (!parent_end.poll(10s) || as_string(parent_end.recv_bytes()) != "unblocked") return 10;
    p.terminate();  // ...can still terminate its children
    if (!p.join(10s)) return 11;
    // SIGCHLD ignored in this process: the kernel reaped the child for us,
    // yet the exit code is known (the signal terminate() sent).
    if (p.exitcode() != -SIGTERM) return 12;
    return 0;
  });
  CHECK_FALSE(result.timed_out);
  CHECK(result.exitcode == 0);
}

TEST_CASE("without pidfd_open (old kernel, seccomp), joins fall back to polling") {
  const auto result = mproc_test::run_in_child([] {
    // Make pidfd_open fail with ENOSYS, as on Linux < 5.3 or under a
    // container's seccomp profile.
    sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_pidfd_open, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog prog{static_cast<unsigned short>(std::size(filter)), filter};
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return 20;
    if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) return 21;
    errno = 0;
    if (::syscall(SYS_pidfd_open, ::getpid(), 0) != -1 || errno != ENOSYS) return 22;

    const std::size_t fds_before = open_fd_count();
    mp::Process p([] {
      for (;;) ::pause();
    });
    mp::Process quick([] { return 6; });
    p.start();
    quick.start();
    if (open_fd_count() != fds_before + 2) return 23;  // a status pipe each, indeed no pidfd
    if (!quick.join(10s) || quick.exitcode() != 6) return 24;
    const auto t0 = Clock::now();
    if (p.join(50ms)) return 25;
    if (Clock::now() - t0 < 50ms || Clock::now() - t0 > 2s) return 26;
    if (!p.is_alive()) return 27;
    p.kill();
    if (!p.join(10s) || p.exitcode() != -SIGKILL) return 28;
    return no_children() ? 0 : 29;
  });
  CHECK_FALSE(result.timed_out);
  CHECK(result.exitcode == 0);
}

// The children below, kept reachable (for LeakSanitizer) but never destroyed;
// external linkage, so the stores to it are not optimized away.
extern mp::Process* at_exit_children[2];
mp::Process* at_exit_children[2] = {nullptr, nullptr};

TEST_CASE("at exit, daemons are terminated and other children joined") {
  mp::Connection parent_end, child_end;
  std::tie(parent_end, child_end) = mp::Pipe();
  const auto result = mproc_test::run_in_child([&]() -> int {
    // Leaked on purpose: only the atexit handler can reach these children.
    auto* daemon = new mp::Process(mp::ProcessOptions{.daemon = true}, [] {
      for (;;) ::pause();
    });
    auto* normal = new mp::Process([&child_end] {
      std::this_thread::sleep_for(200ms);
      child_end.send_bytes("normal child finished");
    });
    at_exit_children[0] = daemon;
    at_exit_children[1] = normal;
    daemon->start();
    normal->start();
    child_end.send_bytes(std::to_string(*daemon->pid()));
    std::exit(0);
  });
  child_end.close();
  CHECK_FALSE(result.timed_out);
  CHECK(result.exitcode == 0);
  const pid_t daemon_pid = std::stoi(recv_string(parent_end));
  // Joined before exit: its message is already there.
  REQUIRE(parent_end.poll(0s));
  CHECK(as_string(parent_end.recv_bytes()) == "normal child finished");
  // Terminated and reaped before exit (a zombie would still accept kill(pid, 0)).
  errno = 0;
  CHECK(::kill(daemon_pid, 0) == -1);
  CHECK(errno == ESRCH);
}

TEST_CASE("R4: 1000 x start/join and Pipe create/close leak no fd and no zombie") {
  const std::size_t fds_before = open_fd_count();
  for (int i = 0; i < 1000; ++i) {
    mp::Connection a, b;
    std::tie(a, b) = mp::Pipe(i % 2 == 0);
    mp::Process p([&b, i] { b.send_bytes(std::to_string(i)); });
    p.start();
    REQUIRE(recv_string(a) == std::to_string(i));
    REQUIRE(p.join(10s));
    REQUIRE(p.exitcode() == 0);
  }
  CHECK(open_fd_count() == fds_before);
  CHECK(mp::active_children().empty());
  CHECK(no_children());
}
