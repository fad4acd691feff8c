// The zygotes pool workers are forked from (detail layer).
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <thread>

#include <mproc/detail/pool/zygote.hpp>
#include <mproc/start_method.hpp>

#include "catch.hpp"
#include "child.hpp"

namespace d = mproc::detail;
using namespace std::chrono_literals;

namespace {

enum : std::uint16_t { echo = 100, quit = 101, crash = 102 };

// A worker that echoes frames back, prefixed with its config.
int echo_entry(d::UniqueFd fd, std::uint64_t, std::span<const std::byte> config) {
  d::Channel ch{std::move(fd)};
  d::Frame f;
  while (ch.receive_blocking(f)) {
    if (f.header.type == quit) return static_cast<int>(f.header.id);
    if (f.header.type == crash) ::raise(SIGSEGV);
    std::vector<std::byte> reply(config.begin(), config.end());
    reply.insert(reply.end(), f.payload.begin(), f.payload.end());
    ch.put(echo, f.header.id, reply);
    if (!ch.flush_blocking()) return 2;
  }
  return 0;
}

std::vector<std::byte> bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), reinterpret_cast<const std::byte*>(s.data() + s.size())};
}
std::string text(std::span<const std::byte> b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

// Receives the next frame on a non-blocking channel within `timeout`.
bool receive(d::Channel& ch, d::Frame& f, std::chrono::milliseconds timeout = 5s) {
  const auto deadline = d::deadline_after(timeout);
  for (;;) {
    if (ch.next(f)) return true;
    const auto io = ch.fill();
    if (io == d::Channel::Io::closed || io == d::Channel::Io::error) return ch.next(f);
    if (io == d::Channel::Io::would_block && d::poll_until(ch.fd(), POLLIN, deadline) == 0) return false;
  }
}

// Catch2's fatal-signal handlers would be inherited by the processes forked
// here and report their deliberate crashes as test failures: use the default
// dispositions while a test runs.
struct DefaultCrashSignals {
  DefaultCrashSignals() {
    for (int i = 0; i < 3; ++i) saved[i] = std::signal(sigs[i], SIG_DFL);
  }
  ~DefaultCrashSignals() {
    for (int i = 0; i < 3; ++i) std::signal(sigs[i], saved[i]);
  }
  static constexpr int sigs[3] = {SIGSEGV, SIGTERM, SIGABRT};
  void (*saved[3])(int);
};

struct Zygote {
  pid_t pid;
  d::Channel ch;
  d::Child child;  // StartMethod::fork: the zygote is our child
};

Zygote start(mproc::StartMethod method) {
  if (method == mproc::StartMethod::forkserver) {
    auto [pid, fd] = d::ForkServer::instance().make_template(&echo_entry, bytes("cfg:"));
    return {pid, d::Channel(std::move(fd)), {}};
  }
  auto [child, fd] = d::fork_zygote(&echo_entry, bytes("cfg:"));
  const pid_t pid = child.pid();
  return {pid, d::Channel(std::move(fd)), std::move(child)};
}

pid_t spawn(Zygote& t, std::uint64_t slot, d::Channel& worker) {
  auto [mine, theirs] = d::socket_pair();
  t.ch.put(d::tm_spawn, slot, {}, std::move(theirs));
  REQUIRE(t.ch.flush_blocking());
  d::Frame f;
  REQUIRE(receive(t.ch, f));
  REQUIRE(f.header.type == d::tm_spawned);
  REQUIRE(f.header.id == slot);
  worker = d::Channel(std::move(mine));
  return *d::read_pod<std::int32_t>(f.payload);
}

d::WorkerExit next_exit(Zygote& t) {
  d::Frame f;
  REQUIRE(receive(t.ch, f));
  REQUIRE(f.header.type == d::tm_exited);
  return *d::read_pod<d::WorkerExit>(f.payload);
}

// Dead: no such process, or a zombie waiting for a reaper that is not us
// (orphans are reaped by PID 1 at its own pace).
bool process_gone(pid_t pid) {
  if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE* f = std::fopen(path, "r");
  if (f == nullptr) return true;
  char buf[512] = {};
  const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  const char* p = std::strrchr(buf, ')');
  return n == 0 || p == nullptr || p[1] == '\0' || p[2] == 'Z' || p[2] == 'X';
}

}  // namespace

TEST_CASE("thread_count sees this process's threads") {
  const int before = d::thread_count();
  REQUIRE(before >= 1);
  std::atomic<bool> stop{false};
  std::thread t([&] {
    while (!stop) std::this_thread::yield();
  });
  CHECK(d::thread_count() >= before + 1);  // TSan may add its own helper thread
  stop = true;
  t.join();
}

TEST_CASE("exit codes follow Python's convention") {
  CHECK(mproc_test::run_in_child([] { return 0; }).exitcode == 0);
  int status = 0;
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(42);
  ::waitpid(pid, &status, 0);
  CHECK(d::exitcode_from_status(status) == 42);
  const pid_t pid2 = ::fork();
  if (pid2 == 0) {
    ::raise(SIGKILL);
    ::_exit(0);
  }
  ::waitpid(pid2, &status, 0);
  CHECK(d::exitcode_from_status(status) == -SIGKILL);
}

TEST_CASE("a zygote forks workers, reports their exits, and takes them down with it") {
  const auto method = GENERATE(mproc::StartMethod::fork, mproc::StartMethod::forkserver);
  DefaultCrashSignals plain_crashes;
  if (method == mproc::StartMethod::forkserver) mproc::set_start_method(mproc::StartMethod::forkserver);
  Zygote t = start(method);

  d::Channel w1, w2;
  const pid_t p1 = spawn(t, 1, w1);
  const pid_t p2 = spawn(t, 2, w2);
  CHECK(p1 != p2);

  // Each worker runs the entry with the config and its own channel.
  w1.put(echo, 7, bytes("hello"));
  REQUIRE(w1.flush_blocking());
  d::Frame f;
  REQUIRE(receive(w1, f));
  CHECK(f.header.id == 7);
  CHECK(text(f.payload) == "cfg:hello");

  // A worker's exit code and a crash's signal come back as exited{pid, code}.
  w1.put(quit, 3, {});
  REQUIRE(w1.flush_blocking());
  auto e = next_exit(t);
  CHECK(e.pid == p1);
  CHECK(e.code == 3);
  w2.put(crash, 0, {});
  REQUIRE(w2.flush_blocking());
  e = next_exit(t);
  CHECK(e.pid == p2);
  CHECK(e.code == -SIGSEGV);

  // kill{pid, signal} is delivered to live workers only.
  d::Channel w3;
  const pid_t p3 = spawn(t, 3, w3);
  const d::PidCode k{p3, SIGTERM};
  t.ch.put(d::tm_kill, 0, d::as_bytes_of(k));
  REQUIRE(t.ch.flush_blocking());
  e = next_exit(t);
  CHECK(e.pid == p3);
  CHECK(e.code == -SIGTERM);

  // Closing the channel: the zygote kills its workers and exits.
  d::Channel w4;
  const pid_t p4 = spawn(t, 4, w4);
  t.ch.close();
  if (method == mproc::StartMethod::fork) {
    REQUIRE(t.child.wait_exited(d::deadline_after(5s)));
    REQUIRE(t.child.try_reap());
    CHECK(t.child.exitcode() == 0);
  }
  // The worker's channel reports end of stream once it is gone.
  CHECK_FALSE(w4.receive_blocking(f));
  const auto deadline = d::deadline_after(2s);
  while (!process_gone(p4) && d::Clock::now() < deadline) std::this_thread::sleep_for(1ms);
  CHECK(process_gone(p4));
}

TEST_CASE("killing the owner takes the zygote and its workers down within 1 s") {
  DefaultCrashSignals plain_crashes;
  int pids[2];
  REQUIRE(::pipe(pids) == 0);
  d::UniqueFd rd(pids[0]), wr(pids[1]);
  const pid_t owner = ::fork();
  if (owner == 0) {
    try {
      rd.reset();
      Zygote t = start(mproc::StartMethod::fork);
      d::Channel w;
      pid_t list[3] = {t.pid, spawn(t, 1, w), 0};
      d::Channel w2;
      list[2] = spawn(t, 2, w2);
      d::write_all(wr.get(), list, sizeof list);
      ::pause();
    } catch (...) {
    }
    ::_exit(1);
  }
  wr.reset();
  pid_t list[3] = {};
  REQUIRE(d::read_full(rd.get(), list, sizeof list) == sizeof list);
  ::kill(owner, SIGKILL);
  int status = 0;
  REQUIRE(::waitpid(owner, &status, 0) == owner);
  const auto start_time = d::Clock::now();
  std::set<pid_t> alive(std::begin(list), std::end(list));
  while (!alive.empty() && d::Clock::now() - start_time < 2s) {
    std::erase_if(alive, process_gone);
    std::this_thread::sleep_for(1ms);
  }
  CHECK(alive.empty());
  CHECK(d::Clock::now() - start_time < 1s);
}

TEST_CASE("a channel grows its buffer only as a frame's bytes arrive, and gives a huge one back (#17)",
          "[failure-model]") {
  auto [a, b] = d::socket_pair();
  d::set_nonblocking(b.get());
  d::Channel rx(std::move(b));
  // A header claiming 200 MiB, and 4 bytes of it.
  const d::FrameHeader h{200u << 20, 1, 0, 7};
  REQUIRE(::write(a.get(), &h, sizeof h) == sizeof h);
  REQUIRE(::write(a.get(), "abcd", 4) == 4);
  d::Frame f;
  while (rx.fill() == d::Channel::Io::ok) {
  }
  CHECK_FALSE(rx.next(f));
  CHECK(rx.buffer_capacity() < (1u << 20));
  // A whole 32 MiB frame, then small ones: the buffer shrinks again.
  d::Channel tx(std::move(a));
  auto [c, e] = d::socket_pair();
  d::set_nonblocking(e.get());
  d::Channel out(std::move(c)), in(std::move(e));
  const std::vector<std::byte> big(32u << 20, std::byte{1});
  std::thread sender([&] {
    out.put(2, 1, big);
    REQUIRE(out.flush_blocking());
    for (int i = 0; i < 40; ++i) {
      out.put(3, 2, std::vector<std::byte>(16));
      REQUIRE(out.flush_blocking());
    }
  });
  int got = 0;
  std::size_t peak = 0;
  while (got < 41) {
    if (in.next(f)) {
      if (got == 0) CHECK(f.payload.size() == big.size());
      ++got;
      continue;
    }
    REQUIRE(d::poll_until(in.fd(), POLLIN, d::deadline_after(10s)) != 0);
    in.fill();
    peak = std::max(peak, in.buffer_capacity());
  }
  sender.join();
  in.fill();
  CHECK(peak >= big.size());
  CHECK(in.buffer_capacity() < (8u << 20));
}
