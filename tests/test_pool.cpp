#include <mproc/pool.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <mutex>
#include <numeric>
#include <ranges>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <poll.h>
#include <unistd.h>

#include "catch.hpp"
#include "child.hpp"

namespace mp = mproc;
using namespace std::chrono_literals;

namespace {

int square(int x) { return x * x; }
double mean(std::span<const double> v) {
  return v.empty() ? 0.0 : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}
std::string shout(const std::string& s) {
  std::string out = s;
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return out + "!";
}
int add(int a, int b) { return a + b; }
int fail_on_seven(int x) {
  if (x == 7) throw std::invalid_argument("bad item " + std::to_string(x));
  return x;
}
int my_pid(int) { return static_cast<int>(::getpid()); }
int sleep_ms_then(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));  // the task's work
  return ms;
}
// Writes the worker's pid to `fd` (a pipe the test made before the pool),
// then works for 300 ms.
int announce_then_sleep(int fd) {
  const int pid = static_cast<int>(::getpid());
  if (::write(fd, &pid, sizeof pid) != sizeof pid) return -1;
  return sleep_ms_then(300);
}

// Crashes the calling worker the way `how` says; returns otherwise.
int crash(int how) {
  switch (how) {
    case 1: std::abort();
    case 2: std::exit(3);
    case 3: ::raise(SIGSEGV); break;
    case 4: ::raise(SIGKILL); break;
    case 5: throw std::runtime_error("plain exception");
    default: break;
  }
  return how;
}

// Catch2's fatal-signal handlers would make crashing workers print reports.
struct DefaultCrashSignals {
  DefaultCrashSignals() {
    for (int i = 0; i < 3; ++i) saved[i] = std::signal(sigs[i], SIG_DFL);
  }
  ~DefaultCrashSignals() {
    for (int i = 0; i < 3; ++i) std::signal(sigs[i], saved[i]);
  }
  static constexpr int sigs[3] = {SIGSEGV, SIGABRT, SIGTERM};
  void (*saved[3])(int);
};

int initialized_value = 0;
void set_initialized(int v) { initialized_value = v; }
int read_initialized(int) { return initialized_value; }
void failing_initializer() { throw std::logic_error("model file missing"); }

template <class T>
std::vector<T> iota_vec(T n) {
  std::vector<T> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), T{});
  return v;
}

}  // namespace

TEST_CASE("default chunksize follows Python") {
  CHECK(mp::detail::default_chunksize(10, 4) == 1);
  CHECK(mp::detail::default_chunksize(100'000, 2) == 12'500);
  CHECK(mp::detail::default_chunksize(100'001, 2) == 12'501);
  CHECK(mp::detail::default_chunksize(3, 8) == 1);
}

TEST_CASE("map returns results in input order for any chunksize") {
  mp::Pool pool(2);
  CHECK(pool.size() == 2);
  const auto inputs = iota_vec(1000);
  std::vector<int> expected(inputs.size());
  std::transform(inputs.begin(), inputs.end(), expected.begin(), square);
  CHECK(pool.map(square, inputs) == expected);
  for (std::size_t cs : {1u, 7u, 999u, 5000u}) CHECK(pool.map(square, inputs, cs) == expected);
  CHECK(pool.map(square, std::vector<int>{}).empty());
  // Lambdas without captures, non-sized input ranges.
  auto odd = inputs | std::views::filter([](int x) { return x % 2 == 1; });
  const auto cubes = pool.map([](int x) { return x * x * x; }, odd);
  REQUIRE(cubes.size() == 500);
  CHECK(cubes[0] == 1);
  CHECK(cubes[499] == 999 * 999 * 999);
}

TEST_CASE("map carries strings, containers and views across processes") {
  mp::Pool pool(2);
  CHECK(pool.map(shout, std::vector<std::string>{"a", "bc", ""}) ==
        std::vector<std::string>{"A!", "BC!", "!"});
  std::vector<std::vector<double>> data;
  for (int i = 0; i < 6; ++i) data.emplace_back(100'000, static_cast<double>(i));
  const auto means = pool.map(mean, data);
  REQUIRE(means.size() == 6);
  for (int i = 0; i < 6; ++i) CHECK(means[static_cast<std::size_t>(i)] == mproc_test::Approx(static_cast<double>(i)));
}

namespace {
std::vector<double> ramp(int n) {
  std::vector<double> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0.5);
  return v;
}
double sum_view(std::span<const double> v) { return std::accumulate(v.begin(), v.end(), 0.0); }
}  // namespace

TEST_CASE("chunks of unevenly sized arrays keep their alignment both ways") {
  mp::Pool pool(2);
  const auto ramps = pool.map(ramp, std::vector<int>{1, 2, 3, 0, 5, 7, 11, 13}, 3);
  REQUIRE(ramps.size() == 8);
  for (std::size_t i = 0; i < ramps.size(); ++i) CHECK(ramps[i] == ramp(std::vector<int>{1, 2, 3, 0, 5, 7, 11, 13}[i]));
  // The same arrays back as zero-copy views of the task's bytes.
  const auto sums = pool.map(sum_view, ramps, 3);
  for (std::size_t i = 0; i < ramps.size(); ++i) CHECK(sums[i] == sum_view(ramps[i]));
}

TEST_CASE("large arguments travel through shared memory, in every call form") {
  mp::Pool pool(2);
  std::vector<std::vector<double>> big;
  for (int i = 0; i < 5; ++i) big.emplace_back(200'000 + static_cast<std::size_t>(i), static_cast<double>(i) + 0.25);
  const auto means = pool.map(mean, big, 2);
  for (int i = 0; i < 5; ++i) CHECK(means[static_cast<std::size_t>(i)] == mproc_test::Approx(i + 0.25));
  CHECK(pool.apply(mean, big[3]) == mproc_test::Approx(3.25));
  std::vector<double> seen;
  for (double m : pool.imap(mean, big)) seen.push_back(m);
  CHECK(seen == means);
  std::vector<std::tuple<std::vector<double>, int>> pairs{{big[1], 2}, {big[4], 3}};
  const auto scaled = pool.starmap([](const std::vector<double>& v, int k) { return v.back() * k; }, pairs);
  CHECK(scaled == std::vector<double>{2.5, 12.75});
  // Repeated large maps reuse the heap: nothing accumulates.
  for (int round = 0; round < 20; ++round) REQUIRE(pool.map(mean, big).size() == 5);
}

TEST_CASE("starmap and apply unpack arguments") {
  mp::Pool pool(2);
  std::vector<std::tuple<int, int>> pairs{{1, 2}, {3, 4}, {10, -10}};
  CHECK(pool.starmap(add, pairs) == std::vector<int>{3, 7, 0});
  CHECK(pool.apply(add, 20, 22) == 42);
  CHECK(pool.apply([](const std::string& s, int n) { return std::string(static_cast<std::size_t>(n), s[0]); },
                   std::string("xyz"), 3) == "xxx");
}

TEST_CASE("apply_async and map_async report through AsyncResult") {
  mp::Pool pool(2);
  auto slow = pool.apply_async(sleep_ms_then, 300);
  CHECK_FALSE(slow.ready());
  REQUIRE_THROWS_AS(slow.get(10ms), mp::TimeoutError);
  CHECK(slow.get(10s) == 300);
  CHECK(slow.successful());

  auto squares = pool.map_async(square, iota_vec(100));
  REQUIRE(squares.wait(10s));
  CHECK(squares.get()[99] == 99 * 99);

  auto failed = pool.apply_async(fail_on_seven, 7);
  REQUIRE(failed.wait(10s));
  CHECK_FALSE(failed.successful());
  REQUIRE_THROWS_MATCHES(failed.get(), mp::RemoteError, mproc_test::MessageContains("bad item 7"));

  auto none = pool.map_async(square, std::vector<int>{});
  CHECK(none.get(1s).empty());
}

TEST_CASE("exceptions become RemoteError with the original type and message") {
  mp::Pool pool(2);
  try {
    pool.map(fail_on_seven, iota_vec(20), 1);
    FAIL("map should have thrown");
  } catch (const mp::RemoteError& e) {
    CHECK(e.type_name() == "std::invalid_argument");
    CHECK(e.message() == "bad item 7");
    CHECK(std::string(e.what()) == "std::invalid_argument: bad item 7");
  }
  // The pool is still usable.
  CHECK(pool.apply(square, 9) == 81);
}

TEST_CASE("imap is ordered and lazy; imap_unordered yields in completion order") {
  mp::Pool pool(2);
  std::vector<int> got;
  for (int v : pool.imap(square, iota_vec(50))) got.push_back(v);
  REQUIRE(got.size() == 50);
  for (int i = 0; i < 50; ++i) CHECK(got[static_cast<std::size_t>(i)] == i * i);

  // Item 0 works for 600 ms while the others finish at once: it comes last.
  // (A fresh pool: one that has learnt its tasks are tiny sends several
  // ahead to each worker, and those could queue behind item 0.)
  mp::Pool fresh(2);
  std::vector<int> durations{600, 0, 0, 0, 0, 0, 0, 0};
  std::vector<int> order;
  for (int v : fresh.imap_unordered(sleep_ms_then, durations)) order.push_back(v);
  REQUIRE(order.size() == durations.size());
  CHECK(order.back() == 600);
  // imap keeps input order regardless.
  std::vector<int> ordered;
  for (int v : pool.imap(sleep_ms_then, durations)) ordered.push_back(v);
  CHECK(ordered == durations);

  // Laziness: an unbounded input is consumed only a window ahead.
  std::atomic<int> consumed{0};
  auto counted = std::views::iota(0) | std::views::transform([&](int x) {
                   ++consumed;
                   return x;
                 });
  auto results = pool.imap(square, counted);
  int taken = 0;
  for (int v : results) {
    CHECK(v == taken * taken);
    if (++taken == 20) break;
  }
  CHECK(consumed.load() < 2000);
}

TEST_CASE("imap rethrows an item's exception at that item and continues") {
  mp::Pool pool(2);
  auto results = pool.imap(fail_on_seven, iota_vec(10));
  for (int i = 0; i < 10; ++i) {
    if (i == 7) {
      REQUIRE_THROWS_MATCHES(results.next(), mp::RemoteError, mproc_test::MessageContains("bad item 7"));
    } else {
      CHECK(results.next() == i);
    }
  }
  CHECK_FALSE(results.next().has_value());

  // The same inside chunks: the calls around the failing one keep their values.
  for (std::size_t cs : {3u, 4u, 10u}) {
    auto chunked = pool.imap(fail_on_seven, iota_vec(10), cs);
    for (int i = 0; i < 10; ++i) {
      if (i == 7) {
        REQUIRE_THROWS_AS(chunked.next(), mp::RemoteError);
      } else {
        CHECK(chunked.next() == i);
      }
    }
  }
}

TEST_CASE("a crashing task fails with WorkerCrashed; the pool replaces the worker") {
  DefaultCrashSignals plain;
  mp::Pool pool(2);
  struct Case {
    int how;
    int exitcode;
  };
  for (Case c : {Case{1, -SIGABRT}, Case{2, 3}, Case{3, -SIGSEGV}, Case{4, -SIGKILL}}) {
    CAPTURE(c.how);
    auto r = pool.apply_async(crash, c.how);
    REQUIRE(r.wait(10s));
    try {
      r.get();
      FAIL("expected WorkerCrashed");
    } catch (const mp::WorkerCrashed& e) {
      CHECK(e.exitcode() == c.exitcode);
      CHECK(e.pid() > 0);
    }
    CHECK(pool.apply(square, c.how) == c.how * c.how);
  }
  REQUIRE_THROWS_MATCHES(pool.apply(crash, 5), mp::RemoteError,
                         mproc_test::MessageContains("std::runtime_error: plain exception"));
  // Other tasks submitted alongside a crash all succeed.
  std::vector<mp::AsyncResult<int>> many;
  for (int i = 0; i < 20; ++i) many.push_back(pool.apply_async(crash, i == 10 ? 3 : 100 + i));
  int crashed = 0;
  for (int i = 0; i < 20; ++i) {
    try {
      const int v = many[static_cast<std::size_t>(i)].get(10s);
      CHECK(v == 100 + i);
    } catch (const mp::WorkerCrashed&) {
      ++crashed;
      CHECK(i == 10);
    }
  }
  CHECK(crashed == 1);
}

TEST_CASE("R1: SIGKILL of a worker mid-map fails only its task, within 1 s, 100 times") {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  mp::detail::UniqueFd rd(fds[0]), wr(fds[1]);
  mp::Pool pool(2);
  for (int round = 0; round < 100; ++round) {
    // Two long tasks occupy both workers; short ones queue behind them.
    std::vector<mp::AsyncResult<int>> results;
    results.push_back(pool.apply_async(announce_then_sleep, wr.get()));
    results.push_back(pool.apply_async(announce_then_sleep, wr.get()));
    for (int i = 0; i < 6; ++i) results.push_back(pool.apply_async(square, i));
    // Both long tasks have started once both workers announced themselves.
    int pids[2] = {};
    for (int& pid : pids) {
      REQUIRE(mp::detail::poll_until(rd.get(), POLLIN, mp::detail::deadline_after(10s)) != 0);
      REQUIRE(mp::detail::read_full(rd.get(), &pid, sizeof pid) == sizeof pid);
    }
    const auto killed_at = mp::detail::Clock::now();
    REQUIRE(::kill(pids[round % 2], SIGKILL) == 0);
    int crashed = 0;
    for (std::size_t i = 0; i < results.size(); ++i) {
      try {
        const int v = results[i].get(10s);
        CHECK(v == (i < 2 ? 300 : static_cast<int>((i - 2) * (i - 2))));
      } catch (const mp::WorkerCrashed& e) {
        ++crashed;
        CHECK(e.signal() == SIGKILL);
        CHECK(i < 2);  // only a task that was running
        CHECK(mp::detail::Clock::now() - killed_at < 1s);
      }
    }
    CHECK(crashed == 1);
  }
  CHECK(pool.map(square, iota_vec(10)) == std::vector<int>{0, 1, 4, 9, 16, 25, 36, 49, 64, 81});
}

TEST_CASE("R1: a map whose worker is killed throws WorkerCrashed and the pool keeps serving") {
  // Each task writes its worker's pid to a pipe the workers inherit; the
  // killer kills the first worker that announces itself, in mid-task.
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  mp::detail::UniqueFd rd(fds[0]), wr(fds[1]);
  mp::Pool pool(2);
  std::atomic<bool> killed{false};
  std::thread killer([&] {
    int pid = 0;
    if (mp::detail::poll_until(rd.get(), POLLIN, mp::detail::deadline_after(10s)) != 0 &&
        mp::detail::read_full(rd.get(), &pid, sizeof pid) == sizeof pid)
      killed = ::kill(pid, SIGKILL) == 0;
  });
  const auto start = mp::detail::Clock::now();
  CHECK_THROWS_AS(pool.map(announce_then_sleep, std::vector<int>(8, wr.get()), 1), mp::WorkerCrashed);
  killer.join();
  CHECK(killed);
  CHECK(mp::detail::Clock::now() - start < 1500ms);
  CHECK(pool.map(square, iota_vec(4)) == std::vector<int>{0, 1, 4, 9});
}

TEST_CASE("R3: killing the pool's owner takes every worker down within 1 s") {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  mp::detail::UniqueFd rd(fds[0]), wr(fds[1]);
  const pid_t owner = ::fork();
  if (owner == 0) {
    try {
      rd.reset();
      mp::Pool pool(3);
      auto busy = pool.map_async(sleep_ms_then, std::vector<int>(6, 10'000), 1);
      std::vector<int> pids;
      while (pids.size() < 3) pids = pool.worker_pids();
      mp::detail::write_all(wr.get(), pids.data(), pids.size() * sizeof(int));
      ::pause();
    } catch (...) {
    }
    ::_exit(1);
  }
  wr.reset();
  int pids[3] = {};
  REQUIRE(mp::detail::read_full(rd.get(), pids, sizeof pids) == sizeof pids);
  REQUIRE(::kill(owner, SIGKILL) == 0);
  REQUIRE(::waitpid(owner, nullptr, 0) == owner);
  const auto start = mp::detail::Clock::now();
  auto gone = [](int pid) {
    if (::kill(pid, 0) != 0) return true;
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE* f = std::fopen(path, "r");
    if (f == nullptr) return true;
    char buf[256] = {};
    const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    const char* p = std::strrchr(buf, ')');
    return n == 0 || p == nullptr || p[2] == 'Z' || p[2] == 'X';
  };
  std::set<int> alive(std::begin(pids), std::end(pids));
  while (!alive.empty() && mp::detail::Clock::now() - start < 3s) {
    std::erase_if(alive, gone);
    std::this_thread::sleep_for(1ms);
  }
  CHECK(alive.empty());
  CHECK(mp::detail::Clock::now() - start < 1s);
}

TEST_CASE("initializer runs in every worker; a failing one breaks the pool") {
  {
    mp::Pool pool(2, mp::PoolOptions().initializer(set_initialized, 41));
    const auto seen = pool.map(read_initialized, iota_vec(10), 1);
    CHECK(std::all_of(seen.begin(), seen.end(), [](int v) { return v == 41; }));
  }
  mp::Pool broken(2, mp::PoolOptions().initializer(failing_initializer));
  REQUIRE_THROWS_MATCHES(broken.apply(square, 2), mp::RemoteError,
                         mproc_test::MessageContains("model file missing"));
  REQUIRE_THROWS_MATCHES(broken.apply(square, 2), mp::RemoteError,
                         mproc_test::MessageContains("initializer"));
}

TEST_CASE("maxtasksperchild replaces workers after that many tasks") {
  mp::Pool pool(2, mp::PoolOptions().maxtasksperchild(2));
  const auto pids = pool.map(my_pid, iota_vec(12), 1);
  std::map<int, int> per_pid;
  for (int p : pids) ++per_pid[p];
  CHECK(per_pid.size() >= 6);
  for (const auto& [pid, n] : per_pid) CHECK(n <= 2);
}

TEST_CASE("close, join and terminate") {
  SECTION("submitting after close throws; join waits for queued work") {
    mp::Pool pool(2);
    auto r = pool.apply_async(sleep_ms_then, 100);
    pool.close();
    REQUIRE_THROWS_MATCHES(pool.apply_async(square, 1), mp::ProcessError, mproc_test::MessageContains("closed"));
    REQUIRE_THROWS_MATCHES(pool.map(square, iota_vec(3)), mp::ProcessError, mproc_test::MessageContains("closed"));
    pool.join();
    CHECK(r.ready());
    CHECK(r.get() == 100);
  }
  SECTION("join before close is a misuse") {
    mp::Pool pool(1);
    REQUIRE_THROWS_MATCHES(pool.join(), mp::ProcessError, mproc_test::MessageContains("still running"));
  }
  SECTION("terminate fails queued and running tasks") {
    mp::Pool pool(1);
    std::vector<mp::AsyncResult<int>> results;
    for (int i = 0; i < 5; ++i) results.push_back(pool.apply_async(sleep_ms_then, 2000));
    pool.terminate();
    pool.join();
    for (auto& r : results) {
      REQUIRE(r.ready());
      REQUIRE_THROWS_MATCHES(r.get(), mp::ProcessError, mproc_test::MessageContains("terminated"));
    }
    REQUIRE_THROWS_MATCHES(pool.apply_async(square, 1), mp::ProcessError, mproc_test::MessageContains("terminated"));
    CHECK(pool.worker_pids().empty());
  }
  SECTION("the destructor loses no submitted task") {
    std::vector<mp::AsyncResult<int>> results;
    {
      mp::Pool pool(2);
      for (int i = 0; i < 20; ++i) results.push_back(pool.apply_async(sleep_ms_then, 10 + i));
    }
    for (int i = 0; i < 20; ++i) {
      REQUIRE(results[static_cast<std::size_t>(i)].ready());
      CHECK(results[static_cast<std::size_t>(i)].get() == 10 + i);
    }
  }
}

TEST_CASE("a pool created while other threads run stays healthy") {
  // Threads churning the allocator and stdio while pools fork.
  std::atomic<bool> stop{false};
  std::vector<std::thread> churn;
  for (int t = 0; t < 2; ++t) {
    churn.emplace_back([&] {
      while (!stop) {
        std::vector<std::string> v(64, std::string(100, 'x'));
        std::fflush(stdout);
      }
    });
  }
  for (int i = 0; i < 20; ++i) {
    mp::Pool pool(2);
    CHECK(pool.map(shout, std::vector<std::string>(8, "a")) == std::vector<std::string>(8, "A!"));
  }
  stop = true;
  for (auto& t : churn) t.join();
}

namespace {
std::mutex user_lock;
int lock_and_square(int x) {
  std::lock_guard guard(user_lock);
  return x * x;
}
}  // namespace

TEST_CASE("forkserver: workers do not inherit a lock another thread holds") {
  // As a program would at the top of main(), before starting threads.
  mp::set_start_method(mp::StartMethod::forkserver);
  CHECK(mp::get_start_method() == mp::StartMethod::forkserver);
  std::unique_lock held(user_lock);  // held by this thread for the whole test
  std::thread other([] { std::this_thread::sleep_for(1ms); });
  mp::Pool pool(2);
  auto r = pool.map_async(lock_and_square, iota_vec(8));
  REQUIRE(r.wait(10s));
  CHECK(r.get() == std::vector<int>{0, 1, 4, 9, 16, 25, 36, 49});
  other.join();
  mp::set_start_method(mp::StartMethod::automatic);
}

TEST_CASE("bad arguments are reported clearly") {
  REQUIRE_THROWS_MATCHES(mp::Pool(-1), mp::ProcessError, mproc_test::MessageContains("at least 1"));
  STATIC_REQUIRE(mp::detail::is_portable_callable_v<int (*)(int)>);
  auto captureless = [](int x) { return x; };
  int state = 3;
  auto capturing = [state](int x) { return x + state; };
  STATIC_REQUIRE(mp::detail::is_portable_callable_v<decltype(captureless)>);
  STATIC_REQUIRE_FALSE(mp::detail::is_portable_callable_v<decltype(capturing)>);
  (void)capturing(0);
}
