// Tests of <mproc/managers.hpp>: Manager's server and its proxies (dict, list, Namespace, Queue,
// Lock, Event, Value) from this process, from child processes and from Pool tasks; object
// lifetime and names; remote use over TCP with an authkey, from a freshly exec'd program; and
// the failures: a server shut down or killed, an owner killed, a client killed while it waits,
// malformed requests, wrong keys, 1,000 connections (no fd or thread left behind).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mproc/managers.hpp>
#include <mproc/pool.hpp>
#include <mproc/process.hpp>

#include "catch.hpp"

namespace mp = mproc;
using namespace std::chrono_literals;
using mproc_test::MessageContains;
using Clock = std::chrono::steady_clock;

namespace {

// Entries of /proc/PID/DIR (fd, task), or -1 if the process is gone.
int proc_entries(int pid, const char* dir) {
  std::error_code ec;
  int n = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/" + dir, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    ++n;
  return ec ? -1 : n;
}

// Waits up to `timeout` for `pred`; returns its last value.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = 5s) {
  const auto deadline = Clock::now() + timeout;
  while (!pred()) {
    if (Clock::now() >= deadline) return pred();
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

// Whether the process `pid` (not necessarily our child) has ended, waiting up to `timeout`.
bool ended_within(int pid, std::chrono::milliseconds timeout) {
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return errno == ESRCH;
  pollfd p{fd, POLLIN, 0};
  const int rc = ::poll(&p, 1, static_cast<int>(timeout.count()));
  ::close(fd);
  return rc == 1;
}

int append_square(mp::ListProxy<int> squares, int x) {
  squares.append(x * x);
  return x;
}

}  // namespace

TEST_CASE("dict: Python's operations, KeyError as std::out_of_range", "[managers]") {
  mp::Manager mgr;
  auto d = mgr.dict<std::string, int>();
  CHECK(d.size() == 0);
  d.set("b", 2);
  d.set("a", 1);
  d.set("b", 3);
  CHECK(d.get("b") == 3);
  CHECK(d.get("zz", -1) == -1);
  CHECK(d.contains("a"));
  CHECK_FALSE(d.contains("zz"));
  CHECK_THROWS_MATCHES(d.get("zz"), std::out_of_range, MessageContains("key not found"));
  CHECK(d.setdefault("c", 7) == 7);
  CHECK(d.setdefault("c", 8) == 7);
  d.update({{"d", 4}, {"a", 10}});
  CHECK(d.keys() == std::vector<std::string>{"a", "b", "c", "d"});
  CHECK(d.values() == std::vector<int>{10, 3, 7, 4});
  CHECK(d.items() == std::vector<std::pair<std::string, int>>{{"a", 10}, {"b", 3}, {"c", 7}, {"d", 4}});
  CHECK(d.pop("a") == 10);
  CHECK_THROWS_AS(d.pop("a"), std::out_of_range);
  CHECK(d.erase("b"));
  CHECK_FALSE(d.erase("b"));
  CHECK(d.size() == 2);
  d.clear();
  CHECK(d.size() == 0);
}

TEST_CASE("list: negative indexes, IndexError as std::out_of_range, insert clamps", "[managers]") {
  mp::Manager mgr;
  auto l = mgr.list<std::string>();
  l.append("a");
  l.extend({"b", "c"});
  CHECK(l.get(0) == "a");
  CHECK(l.get(-1) == "c");
  l.set(-2, "B");
  l.insert(100, "end");
  l.insert(-100, "start");
  CHECK(l.items() == std::vector<std::string>{"start", "a", "B", "c", "end"});
  CHECK_THROWS_MATCHES(l.get(5), std::out_of_range,
                       MessageContains("index 5 out of range for a list of 5 (Python: IndexError)"));
  CHECK_THROWS_AS(l.get(-6), std::out_of_range);
  CHECK(l.pop() == "end");
  CHECK(l.pop(0) == "start");
  CHECK(l.size() == 3);
  l.clear();
  CHECK_THROWS_AS(l.pop(), std::out_of_range);
}

TEST_CASE("Namespace: attributes of any type, checked on the way out", "[managers]") {
  mp::Manager mgr;
  auto ns = mgr.Namespace();
  ns.set("epoch", 3);
  ns.set("weights", std::vector<double>{0.5, 0.25});
  CHECK(ns.get<int>("epoch") == 3);
  CHECK(ns.get<std::vector<double>>("weights") == std::vector<double>{0.5, 0.25});
  CHECK(ns.names() == std::vector<std::string>{"epoch", "weights"});
  CHECK_THROWS_MATCHES(ns.get<std::string>("epoch"), mp::ProcessError,
                       MessageContains("attribute 'epoch' is not a std::string"));
  CHECK_THROWS_MATCHES(ns.get<int>("nope"), std::out_of_range, MessageContains("no attribute 'nope'"));
  CHECK(ns.erase("epoch"));
  CHECK_FALSE(ns.contains("epoch"));
}

TEST_CASE("Queue: FIFO across processes, bounded, Full and Empty on timeout", "[managers]") {
  mp::Manager mgr;
  auto q = mgr.Queue<std::string>(2);
  q.put("x");
  q.put("y");
  CHECK(q.full());
  CHECK(q.qsize() == 2);
  const auto t0 = Clock::now();
  CHECK_THROWS_MATCHES(q.put("z", 100ms), mp::Full, MessageContains("the queue is full"));
  CHECK(Clock::now() - t0 >= 90ms);
  CHECK_THROWS_AS(q.put_nowait("z"), mp::Full);
  CHECK(q.get() == "x");
  CHECK(q.get_nowait() == "y");
  CHECK(q.empty());
  CHECK_THROWS_MATCHES(q.get(50ms), mp::Empty, MessageContains("the queue is empty"));

  // A get blocks on the server until another process puts.
  auto ready = mgr.Event();
  mp::Process producer(
      [](mp::QueueProxy<std::string> out, mp::EventProxy go) {
        if (!go.wait(10s)) return 2;
        for (int i = 0; i < 5; ++i) out.put("item" + std::to_string(i));
        return 0;
      },
      q, ready);
  producer.start();
  ready.set();
  std::vector<std::string> got;
  for (int i = 0; i < 5; ++i) got.push_back(q.get(10s));
  CHECK(got == std::vector<std::string>{"item0", "item1", "item2", "item3", "item4"});
  REQUIRE(producer.join(10s));
  CHECK(producer.exitcode() == 0);
}

TEST_CASE("Lock and Value: a counter incremented by 4 processes loses no update", "[managers]") {
  mp::Manager mgr;
  auto lock = mgr.Lock();
  auto counter = mgr.Value<long>(0);
  CHECK_FALSE(lock.locked());
  CHECK_THROWS_MATCHES(lock.release(), mp::ProcessError, MessageContains("release of an unheld Lock"));
  std::vector<mp::Process> workers;
  for (int i = 0; i < 4; ++i)
    workers.emplace_back(
        [](mp::LockProxy l, mp::ValueProxy<long> c) {
          for (int k = 0; k < 50; ++k) {
            std::lock_guard guard(l);
            c.set(c.get() + 1);
          }
        },
        lock, counter);
  for (auto& w : workers) w.start();
  for (auto& w : workers) {
    REQUIRE(w.join(30s));
    CHECK(w.exitcode() == 0);
  }
  CHECK(counter.get() == 200);
  CHECK(counter.exchange(-1) == 200);
  CHECK(counter.get() == -1);

  REQUIRE(lock.acquire());
  CHECK(lock.locked());
  CHECK_FALSE(lock.try_acquire());
  const auto t0 = Clock::now();
  CHECK_FALSE(lock.acquire(100ms));
  CHECK(Clock::now() - t0 >= 90ms);
  lock.release();
  CHECK(lock.try_acquire());
  lock.release();
}

TEST_CASE("Event: wait times out, a set from another process wakes it", "[managers]") {
  mp::Manager mgr;
  auto e = mgr.Event();
  CHECK_FALSE(e.is_set());
  CHECK_FALSE(e.wait(50ms));
  mp::Process setter([](mp::EventProxy ev) { ev.set(); }, e);
  setter.start();
  CHECK(e.wait(10s));
  CHECK(e.is_set());
  REQUIRE(setter.join(10s));
  e.clear();
  CHECK_FALSE(e.is_set());
}

TEST_CASE("proxies as Pool task arguments — threads share a proxy", "[managers]") {
  mp::Manager mgr;
  auto squares = mgr.list<int>();
  {
    mp::Pool pool(2);
    std::vector<int> xs{1, 2, 3, 4, 5, 6};
    const auto out = pool.starmap(append_square, [&] {
      std::vector<std::tuple<mp::ListProxy<int>, int>> args;
      for (int x : xs) args.emplace_back(squares, x);
      return args;
    }());
    CHECK(out == xs);
  }
  auto got = squares.items();
  std::sort(got.begin(), got.end());
  CHECK(got == std::vector<int>{1, 4, 9, 16, 25, 36});

  auto counts = mgr.dict<int, int>();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([counts, t] {
      for (int k = 0; k < 100; ++k) counts.set(t * 1000 + k, k);
    });
  for (auto& t : threads) t.join();
  CHECK(counts.size() == 400);
}

TEST_CASE("a proxy that outlives its thread's connections (thread_local) is destroyed safely", "[managers]") {
  mp::Manager mgr;
  std::vector<std::byte> borrowed;
  std::thread([&] {
    thread_local std::optional<mp::DictProxy<int, int>> held;  // constructed before the connections: destroyed after
    held.emplace(mgr.dict<int, int>());
    held->set(1, 1);
    borrowed = mp::dumps(*held);
  }).join();
  // Its release could not be sent from the exiting thread: the object stays until the server ends.
  CHECK(mp::loads<mp::DictProxy<int, int>>(borrowed).get(1) == 1);
}

TEST_CASE("lifetime: the creator's last proxy releases the object — a named one stays", "[managers]") {
  mp::Manager mgr;
  std::vector<std::byte> borrowed;
  {
    auto d = mgr.dict<int, int>();
    d.set(1, 1);
    borrowed = mp::dumps(d);
    const auto received = mp::loads<mp::DictProxy<int, int>>(borrowed);
    CHECK(received.get(1) == 1);
    CHECK(received.id() == d.id());
  }
  const auto received = mp::loads<mp::DictProxy<int, int>>(borrowed);
  CHECK_THROWS_MATCHES(received.get(1), mp::ProcessError, MessageContains("does not exist on the server"));

  {
    auto jobs = mgr.Queue<int>(0, mp::Named{"jobs"});
    jobs.put(42);
  }
  auto again = mgr.Queue<int>(0, mp::Named{"jobs"});
  CHECK(again.get_nowait() == 42);
  const auto as_dict = [&] { return mgr.dict<int, int>(mp::Named{"jobs"}); };
  CHECK_THROWS_MATCHES(as_dict(), mp::ValueError, MessageContains("the name \"jobs\" is a"));
  // A proxy decoded as another proxy type is refused by the frame's type check.
  CHECK_THROWS_AS(mp::loads<mp::ListProxy<int>>(mp::dumps(again)), mp::ProcessError);
}

TEST_CASE("a server that is shut down or killed: calls fail at once, never hang", "[managers][failure-model]") {
  mp::Manager mgr;
  auto d = mgr.dict<int, int>();
  auto q = mgr.Queue<int>();
  d.set(1, 1);
  const int pid = mgr.pid();
  REQUIRE(pid > 0);

  // Killed while this thread waits in a get: the wait ends with ProcessError.
  std::thread killer([pid] {
    std::this_thread::sleep_for(100ms);
    ::kill(pid, SIGKILL);
  });
  const auto t0 = Clock::now();
  CHECK_THROWS_MATCHES(q.get(), mp::ProcessError, MessageContains("the server process is gone"));
  killer.join();
  CHECK(Clock::now() - t0 < 1s);
  CHECK_THROWS_MATCHES(d.get(1), mp::ProcessError, MessageContains("it is not running"));
  mgr.shutdown();  // reaps the killed server, removes the socket
  CHECK_FALSE(std::filesystem::exists(mgr.address().substr(5)));

  mp::Manager second;
  auto e = second.Event();
  const std::string dir = std::filesystem::path(second.address().substr(5)).parent_path();
  second.shutdown();
  CHECK_THROWS_AS(e.is_set(), mp::ProcessError);
  CHECK_FALSE(std::filesystem::exists(dir));
  CHECK(ended_within(second.pid(), 1s));
}

TEST_CASE("the server dies with its owner, even a SIGKILLed one", "[managers][failure-model]") {
  auto [r, w] = mp::Pipe(false);
  mp::Process owner(
      [](mp::Connection out) {
        mp::Manager mgr;
        out.send(mgr.pid());
        out.send(mgr.address());
        ::pause();
      },
      std::move(w));
  owner.start();
  const int server = r.recv<int>();
  const std::string address = r.recv<std::string>();
  CHECK(proc_entries(server, "task") >= 1);
  owner.kill();
  REQUIRE(owner.join(10s));
  CHECK(ended_within(server, 5s));
  CHECK(eventually([&] { return !std::filesystem::exists(address.substr(5)); }));
}

TEST_CASE("a client killed while it waits leaves the server serving, and takes nothing", "[managers][failure-model]") {
  mp::Manager mgr;
  auto q = mgr.Queue<int>();
  auto lock = mgr.Lock();
  auto getting = mgr.Event();
  auto acquiring = mgr.Event();
  REQUIRE(lock.acquire());  // held here: the second waiter waits for it
  const int threads_before = proc_entries(mgr.pid(), "task");
  mp::Process get_waiter(
      [](mp::QueueProxy<int> in, mp::EventProxy ready) {
        ready.set();
        in.get();  // never answered: killed while waiting
      },
      q, getting);
  mp::Process lock_waiter(
      [](mp::LockProxy l, mp::EventProxy ready) {
        ready.set();
        l.acquire();  // never answered: killed while waiting
      },
      lock, acquiring);
  get_waiter.start();
  lock_waiter.start();
  REQUIRE(getting.wait(10s));
  REQUIRE(acquiring.wait(10s));
  get_waiter.kill();
  lock_waiter.kill();
  REQUIRE(get_waiter.join(10s));
  REQUIRE(lock_waiter.join(10s));
  // Their server threads notice, take no item and no lock, and end.
  CHECK(eventually([&] { return proc_entries(mgr.pid(), "task") == threads_before; }));
  q.put(1);
  CHECK(q.get_nowait() == 1);
  lock.release();
  CHECK(lock.try_acquire());
  lock.release();
}

TEST_CASE("the server keeps none of its owner's descriptors: a pipe closed here reaches EOF",
          "[managers][failure-model]") {
  auto [r, w] = mp::Pipe(false);
  mp::Manager mgr;
  const int server_fds = proc_entries(mgr.pid(), "fd");
  CHECK(server_fds > 0);
  CHECK(server_fds <= 8);  // stdio, the listener, the owner's pidfd, the poll set: no pipe of ours
  w.close();
  CHECK(r.poll(5s));
  CHECK_THROWS_AS(r.recv_bytes(), mp::EOFError);
}

TEST_CASE("an address the server cannot listen on: ProcessError from the constructor", "[managers]") {
  CHECK_THROWS_MATCHES(mp::Manager("unix:/nonexistent-dir/m.sock", "k"), mp::ProcessError,
                       MessageContains("Listener(\"unix:/nonexistent-dir/m.sock\"): bind()"));
  CHECK_THROWS_AS(mp::Manager("no-port-here", "k"), mp::ValueError);
}

TEST_CASE("malformed requests get an error reply — the connection serves on", "[managers]") {
  mp::Manager mgr("127.0.0.1:0", "k");
  auto d = mgr.dict<int, int>();
  d.set(1, 10);
  mp::Connection c = mp::connection::Client(mgr.address(), "k");
  const auto ask = [&](const std::vector<std::byte>& request) {
    c.send_bytes(request);
    const auto reply = c.recv_bytes();
    REQUIRE(!reply.empty());
    return std::make_pair(static_cast<int>(reply[0]),
                          std::string(reinterpret_cast<const char*>(reply.data()) + 1, reply.size() - 1));
  };
  const auto header = [](std::uint64_t kind, std::uint64_t object, std::uint32_t op) {
    const mp::detail::manager::RequestHeader h{kind, object, op, 0};
    std::vector<std::byte> out(sizeof h);
    std::memcpy(out.data(), &h, sizeof h);
    return out;
  };
  const int process_error = static_cast<int>(mp::detail::manager::Status::process_error);
  using Dict = mp::DictProxy<int, int>;
  using Op = mp::detail::manager::DictObject<int, int>::Op;

  auto [status, message] = ask(std::vector<std::byte>(5, std::byte{0xff}));
  CHECK(status == process_error);
  CHECK(message == "mproc: Manager: a request of 5 bytes, shorter than its header");

  std::tie(status, message) = ask(header(Dict::kind(), 999, Op::get));
  CHECK(message == "mproc: Manager: object 999 does not exist on the server (its creator released it)");

  std::tie(status, message) = ask(header(0x1234, d.id(), Op::get));
  CHECK_THAT(message, Catch::Matchers::Contains("DictObject<int, int>, not the type the proxy expects"));

  auto create = header(0x1234, 0, mp::detail::manager::op_create);
  mp::detail::manager::append_args(create, std::string("Unheard"), std::string());
  std::tie(status, message) = ask(create);
  CHECK(message ==
        "mproc: Manager: the server cannot hold a Unheard: its program never uses that type "
        "(a server of another program?)");

  auto wrong_type = header(Dict::kind(), d.id(), Op::get);
  mp::detail::manager::append_args(wrong_type, std::string("not an int"));
  std::tie(status, message) = ask(wrong_type);
  CHECK(status == process_error);

  std::tie(status, message) = ask(header(Dict::kind(), d.id(), 77));
  CHECK_THAT(message, Catch::Matchers::Contains("operation 77 is not one of dict's"));

  auto truncated = header(Dict::kind(), d.id(), Op::get);
  mp::detail::manager::append_args(truncated, 1);
  truncated.resize(truncated.size() - 3);
  std::tie(status, message) = ask(truncated);
  CHECK_THAT(message, Catch::Matchers::Contains("truncated"));

  auto good = header(Dict::kind(), d.id(), Op::get);
  mp::detail::manager::append_args(good, 1);
  std::tie(status, message) = ask(good);
  CHECK(status == 0);
  CHECK(mp::loads<int>(std::as_bytes(std::span(message.data(), message.size()))) == 10);
  CHECK(d.get(1) == 10);
}

// A freshly exec'd copy of this program started by the test below, with MPROC_TEST_MANAGER_CLIENT
// set, is a remote client and nothing else: before Catch runs, it finds the named objects on the
// server at that address, works on them and exits (0 if all went well).
[[maybe_unused]] const int remote_client_entry = [] {
  const char* address = std::getenv("MPROC_TEST_MANAGER_CLIENT");
  if (address == nullptr) return 0;
  int code = 0;
  try {
    auto remote = mp::Manager::connect(address, "remote-key");
    if (remote.pid() != 0) code = 3;
    auto jobs = remote.Queue<int>(0, mp::Named{"jobs"});
    auto results = remote.dict<int, std::string>(mp::Named{"results"});
    for (;;) {
      const int job = jobs.get(10s);
      if (job < 0) break;
      results.set(job, "done " + std::to_string(job));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "remote client: %s\n", e.what());
    code = 2;
  }
  std::fflush(nullptr);
  std::_Exit(code);
}();

TEST_CASE("remote use: BaseManager(address, authkey) over TCP, connect() from another program", "[managers]") {
  mp::Manager mgr("127.0.0.1:0", "remote-key");
  auto jobs = mgr.Queue<int>(0, mp::Named{"jobs"});
  auto results = mgr.dict<int, std::string>(mp::Named{"results"});
  for (int i = 0; i < 3; ++i) jobs.put(i);
  jobs.put(-1);
  std::vector<std::string> env{"MPROC_TEST_MANAGER_CLIENT=" + mgr.address()};
  for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string self = std::filesystem::read_symlink("/proc/self/exe");
  char* argv[] = {self.data(), nullptr};
  pid_t child = 0;
  REQUIRE(::posix_spawn(&child, self.c_str(), nullptr, nullptr, argv, envp.data()) == 0);
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, child, 0));
  pollfd p{pidfd, POLLIN, 0};
  const bool ended = ::poll(&p, 1, 30000) == 1;
  if (!ended) ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  ::close(pidfd);
  REQUIRE(ended);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(results.items() == std::vector<std::pair<int, std::string>>{{0, "done 0"}, {1, "done 1"}, {2, "done 2"}});
}

TEST_CASE("1,000 connections come and go: no fd or thread left in the server", "[managers][failure-model]") {
  mp::Manager mgr("127.0.0.1:0", "secret");
  auto d = mgr.dict<int, int>(mp::Named{"d"});
  d.set(0, 0);
  const int fds_before = proc_entries(mgr.pid(), "fd");
  const int threads_before = proc_entries(mgr.pid(), "task");
  for (int i = 0; i < 1000; ++i) {
    mp::Connection c = mp::connection::Client(mgr.address(), "secret");
    c.close();
  }
  for (int i = 0; i < 20; ++i) {
    std::thread([&] {
      auto remote = mp::Manager::connect(mgr.address(), "secret");
      auto rd = remote.dict<int, int>(mp::Named{"d"});
      rd.set(1, rd.get(1, 0) + 1);
    }).join();
  }
  CHECK(d.get(1) == 20);
  CHECK(eventually([&] { return proc_entries(mgr.pid(), "fd") == fds_before; }));
  CHECK(eventually([&] { return proc_entries(mgr.pid(), "task") == threads_before; }));
  CHECK_THROWS_AS(mp::Manager::connect(mgr.address(), "wrong"), mp::AuthenticationError);
}
