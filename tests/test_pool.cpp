// Tests of <mproc/pool.hpp>: Pool's map/imap/starmap/apply_async, options, worker replacement and the
// failure model (crashed workers, large results, two pools, resource limits: the "(#N)" cases).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <limits>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <ranges>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <mproc/pool.hpp>
#include <mproc/process.hpp>
#include <mproc/sharedctypes.hpp>

#include "catch.hpp"
#include "child.hpp"
#include "imap_input_error.hpp"
#include "proc.hpp"
#include "within.hpp"

namespace mp = mproc;
using namespace std::chrono_literals;

namespace {

int square(int x) { return x * x; }
double mean(std::span<const double> v) {
  return v.empty() ? 0.0 : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}
std::string shout(const std::string& s) {
  std::string out = s;
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return out + "!";
}
int add(int a, int b) { return a + b; }
int fail_on_seven(int x) {
  if (x == 7) throw std::invalid_argument("bad item " + std::to_string(x));
  return x;
}
int my_pid(int) { return static_cast<int>(::getpid()); }
int pid_reading(const mp::Array<const double>& a) { return a[0] >= 0 ? static_cast<int>(::getpid()) : -1; }
// Resident KiB, in this process's page tables, of the mapping that holds
// `a`'s elements (from /proc/self/smaps), read without touching them.
long mapped_kib(const mp::Array<const double>& a) {
  const auto addr = reinterpret_cast<std::uintptr_t>(a.data());
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find(' ') > line.find('-')) {
      inside = lo <= addr && addr < hi;
    } else if (inside && line.rfind("Rss:", 0) == 0) {
      return std::stol(line.substr(4));
    }
  }
  return -1;
}
// Sums `a`, then sets every element to `v`.
double sum_then_fill(const mp::Array<double>& a, double v) {
  double sum = 0;
  for (double x : a) sum += x;
  for (double& x : a) x = v;
  return sum;
}
int pid_after_ms(const mp::Array<const double>& a, int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));  // the task's work
  return a[0] >= 0 ? static_cast<int>(::getpid()) : -1;
}
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
    case 1:
      std::abort();
    case 2:
      std::exit(3);
    case 3:
      ::raise(SIGSEGV);
      break;
    case 4:
      ::raise(SIGKILL);
      break;
    case 5:
      throw std::runtime_error("plain exception");
    default:
      break;
  }
  return how;
}

// Touches `mib` MiB of fresh memory, then exits with code 4 (no exit
// handlers: the mapping is not a leak report).
int touch_then_exit(int mib) {
  const std::size_t bytes = static_cast<std::size_t>(mib) << 20;
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return -1;
  for (std::size_t k = 0; k < bytes; k += 4096) static_cast<volatile char*>(p)[k] = 1;
  ::_exit(4);
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

namespace {
// A result whose size depends on x: small ones travel in the worker's result
// ring, ones over its limit (16 KiB) through the socket.
std::string sized_result(int x) {
  const std::size_t sizes[] = {3, 20'000, 0, 16'000, 40, 70'000, 8'000, 1};
  return std::string(sizes[static_cast<std::size_t>(x) % std::size(sizes)], static_cast<char>('a' + x % 26));
}
}  // namespace

TEST_CASE("results through the result ring and the socket, mixed, arrive whole and in order") {
  mp::Pool pool(2);
  const auto inputs = iota_vec(400);
  std::vector<std::string> expected;
  for (int x : inputs) expected.push_back(sized_result(x));
  // chunksize 1: every task alone, so consecutive results take different
  // paths, and the 16 KB ones fill the ring (the rest then take the socket).
  for (int round = 0; round < 3; ++round) CHECK(pool.map(sized_result, inputs, 1) == expected);
  CHECK(pool.map(sized_result, inputs, 3) == expected);
  std::multiset<std::string> unordered;
  for (auto&& r : pool.imap_unordered(sized_result, inputs, 1)) unordered.insert(r);
  CHECK(unordered == std::multiset<std::string>(expected.begin(), expected.end()));
  // Many tiny results in a row: the ring wraps many times.
  const auto many = iota_vec(20'000);
  std::vector<int> squares_expected(many.size());
  std::transform(many.begin(), many.end(), squares_expected.begin(), square);
  CHECK(pool.map(square, many, 1) == squares_expected);
}

namespace {
// ~20 us of work: enough that a worker holds several in flight and the
// owner sleeps until the result at its wake mark, not each result.
int spin_20us_then_inc(int x) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(20);
  while (std::chrono::steady_clock::now() < until) {
  }
  return x + 1;
}
}  // namespace

TEST_CASE("tasks of ~20 us sent one by one: the owner sleeps until a worker's wake mark, every result arrives") {
  mproc_test::within_10s([] {
    mp::Pool pool(2);
    const auto inputs = iota_vec(3000);
    std::vector<int> expected(inputs.size());
    std::transform(inputs.begin(), inputs.end(), expected.begin(), [](int x) { return x + 1; });
    for (int round = 0; round < 2; ++round) CHECK(pool.map(spin_20us_then_inc, inputs, 1) == expected);
    std::vector<int> streamed;
    for (int v : pool.imap(spin_20us_then_inc, iota_vec(1000))) streamed.push_back(v);
    CHECK(streamed == std::vector<int>(expected.begin(), expected.begin() + 1000));
    std::vector<mp::AsyncResult<int>> pending;
    for (int x = 0; x < 200; ++x) pending.push_back(pool.apply_async(spin_20us_then_inc, x));
    for (int x = 0; x < 200; ++x) CHECK(pending[static_cast<std::size_t>(x)].get() == x + 1);
  });
}

TEST_CASE("map carries strings, containers and views across processes") {
  mp::Pool pool(2);
  CHECK(pool.map(shout, std::vector<std::string>{"a", "bc", ""}) == std::vector<std::string>{"A!", "BC!", "!"});
  std::vector<std::vector<double>> data;
  for (int i = 0; i < 6; ++i) data.emplace_back(100'000, static_cast<double>(i));
  const auto means = pool.map(mean, data);
  REQUIRE(means.size() == 6);
  for (int i = 0; i < 6; ++i) CHECK(means[static_cast<std::size_t>(i)] == mproc_test::Approx(static_cast<double>(i)));
}

TEST_CASE("std::string_view inputs reach a std::string parameter in map, starmap, imap and apply_async") {
  // They travel as they are (a view shares its owning type's encoding), not
  // as std::string copies made first.
  mp::Pool pool(2);
  const std::string text = "alpha beta gamma " + std::string(300'000, 'z');
  const std::vector<std::string_view> words{std::string_view(text).substr(0, 5), std::string_view(text).substr(6, 4),
                                            std::string_view(text).substr(10, 0), std::string_view(text).substr(17)};
  const std::vector<std::string> expected{"ALPHA!", "BETA!", "!", std::string(300'000, 'Z') + "!"};
  CHECK(pool.map(shout, words, 3) == expected);
  std::vector<std::string> lazy;
  for (auto& s : pool.imap(shout, words, 2)) lazy.push_back(std::move(s));
  CHECK(lazy == expected);
  const std::vector<std::tuple<std::string_view, int>> pairs{{words[0], 2}, {words[1], 0}};
  CHECK(pool.starmap([](const std::string& s, int n) { return static_cast<int>(s.size()) * n; }, pairs) ==
        std::vector<int>{10, 0});
  CHECK(pool.apply_async(shout, words[3]).get(10s) == expected[3]);
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
  REQUIRE_THROWS_MATCHES(failed.get(), std::invalid_argument, mproc_test::MessageContains("bad item 7"));

  auto none = pool.map_async(square, std::vector<int>{});
  CHECK(none.get(1s).empty());
}

TEST_CASE("exceptions arrive with the original type and message") {
  mp::Pool pool(2);
  try {
    pool.map(fail_on_seven, iota_vec(20), 1);
    FAIL("map should have thrown");
  } catch (const mp::RemoteTrace& e) {
    CHECK(e.type_name() == "std::invalid_argument");
    CHECK(e.message() == "bad item 7");
    CHECK(std::string(e.what()) ==
          "std::invalid_argument: bad item 7 (raised in worker process " + std::to_string(e.pid()) + ")");
    CHECK(dynamic_cast<const std::invalid_argument*>(&e) != nullptr);
  }
  // The pool is still usable.
  CHECK(pool.apply(square, 9) == 81);
}

TEST_CASE("imap is ordered and lazy, imap_unordered yields in completion order") {
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

TEST_CASE("imap holds its input as std::views::all would: an lvalue view copied, an rvalue range moved in") {
  mp::Pool pool(2);
  // The view is a local of the lambda: the results outlive it.
  auto from_view = [&pool] {
    auto halves = std::views::iota(0, 40) | std::views::transform([](int x) { return x / 2; });
    return pool.imap(square, halves, 3);
  };
  auto results = from_view();
  std::vector<int> got;
  for (int v : results) got.push_back(v);
  REQUIRE(got.size() == 40);
  for (int i = 0; i < 40; ++i) CHECK(got[static_cast<std::size_t>(i)] == (i / 2) * (i / 2));

  auto moved = pool.imap_unordered(square, iota_vec(30));
  std::multiset<int> unordered, expected;
  for (int v : moved) unordered.insert(v);
  for (int i = 0; i < 30; ++i) expected.insert(i * i);
  CHECK(unordered == expected);
}

TEST_CASE("a Pool destroyed by one of its own callbacks: the program terminates, saying why") {
  const auto child = mproc_test::run_in_child_to_abort([] {
    auto pool = std::make_shared<mp::Pool>(2);
    auto holder = std::make_shared<std::shared_ptr<mp::Pool>>(pool);
    std::promise<void> released;
    std::shared_future<void> go = released.get_future().share();
    auto r = pool->apply_async(mp::callbacks([holder, go](int) {
                                 (void)go.wait_for(5s);
                                 holder->reset();  // ~Pool on its callback thread
                               }),
                               square, 3);
    pool.reset();
    released.set_value();
    std::this_thread::sleep_for(10s);
    return 0;
  });
  CHECK_FALSE(child.result.timed_out);
  CHECK(child.result.exitcode == -SIGABRT);
  CHECK_THAT(child.stderr_text, Catch::Matchers::Contains("mproc: a pool was destroyed by one of its own callbacks"));
}

TEST_CASE("imap: a moved-from result throws ProcessError, the one moved to yields all") {
  mp::Pool pool(2);
  auto first = pool.imap(square, std::vector<int>{1, 2, 3});
  auto second = std::move(first);
  CHECK_THROWS_MATCHES(first.next(), mp::ProcessError,
                       mproc_test::MessageContains("imap result was used after it was moved from"));
  CHECK_THROWS_AS(first.begin(), mp::ProcessError);
  std::vector<int> got;
  for (int r : second) got.push_back(r);
  CHECK(got == std::vector<int>{1, 4, 9});
}

TEST_CASE("imap rethrows an item's exception at that item and continues") {
  mp::Pool pool(2);
  auto results = pool.imap(fail_on_seven, iota_vec(10));
  for (int i = 0; i < 10; ++i) {
    if (i == 7) {
      REQUIRE_THROWS_MATCHES(results.next(), std::invalid_argument, mproc_test::MessageContains("bad item 7"));
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
        REQUIRE_THROWS_AS(chunked.next(), std::invalid_argument);
      } else {
        CHECK(chunked.next() == i);
      }
    }
  }
}

TEST_CASE("a crashing task fails with WorkerCrashed, the pool replaces the worker") {
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
  REQUIRE_THROWS_MATCHES(pool.apply(crash, 5), std::runtime_error,
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

TEST_CASE("WorkerCrashed gives the dead worker's peak memory") {
  mp::Pool pool(1);
  try {
    (void)pool.apply(touch_then_exit, 96);
    FAIL("expected WorkerCrashed");
  } catch (const mp::WorkerCrashed& e) {
    CHECK(e.exitcode() == 4);
    REQUIRE(e.peak_memory().has_value());
    CHECK(*e.peak_memory() >= (std::size_t{96} << 20));
    CHECK(*e.peak_memory() < (std::size_t{8} << 30));
    CHECK_THAT(std::string(e.what()), mproc_test::Contains("; its peak resident memory was " +
                                                           std::to_string(*e.peak_memory() >> 20) + " MiB"));
  }
}

TEST_CASE("WorkerCrashed names the lost inputs: their positions in a map or imap, or apply_async") {
  DefaultCrashSignals plain;
  mp::Pool pool(2);
  std::vector<int> inputs;
  for (int i = 0; i < 12; ++i) inputs.push_back(i == 5 ? 2 : 100 + i);  // input 5 exits with code 3
  try {
    (void)pool.map(crash, inputs, 1);
    FAIL("expected WorkerCrashed");
  } catch (const mp::WorkerCrashed& e) {
    CHECK(e.first_input() == std::optional<std::size_t>(5));
    CHECK(e.input_count() == 1);
    CHECK(e.exitcode() == 3);
    CHECK_THAT(std::string(e.what()), mproc_test::Contains("died (exit code 3) while running input 5 "));
  }
  try {
    (void)pool.map(crash, inputs, 4);
    FAIL("expected WorkerCrashed");
  } catch (const mp::WorkerCrashed& e) {
    CHECK(e.first_input() == std::optional<std::size_t>(4));
    CHECK(e.input_count() == 4);
    CHECK_THAT(std::string(e.what()), mproc_test::Contains("while running inputs 4..7 "));
  }
  auto lazy = pool.imap(crash, inputs, 1);
  for (int i = 0; i < 5; ++i) CHECK(lazy.next(10s) == 100 + i);
  try {
    (void)lazy.next(10s);
    FAIL("expected WorkerCrashed");
  } catch (const mp::WorkerCrashed& e) {
    CHECK(e.first_input() == std::optional<std::size_t>(5));
  }
  try {
    (void)pool.apply(crash, 2);
    FAIL("expected WorkerCrashed");
  } catch (const mp::WorkerCrashed& e) {
    CHECK_FALSE(e.first_input().has_value());
    CHECK_THAT(std::string(e.what()), mproc_test::Contains("while running a task (apply_async)"));
  }
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

TEST_CASE("initializer runs in every worker, a failing one breaks the pool") {
  {
    mp::Pool pool(2, mp::PoolOptions().initializer(set_initialized, 41));
    const auto seen = pool.map(read_initialized, iota_vec(10), 1);
    CHECK(std::all_of(seen.begin(), seen.end(), [](int v) { return v == 41; }));
  }
  mp::Pool broken(2, mp::PoolOptions().initializer(failing_initializer));
  REQUIRE_THROWS_MATCHES(broken.apply(square, 2), mp::RemoteError, mproc_test::MessageContains("model file missing"));
  REQUIRE_THROWS_MATCHES(broken.apply(square, 2), mp::RemoteError, mproc_test::MessageContains("initializer"));
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

TEST_CASE("Pool(0) and maxtasksperchild(0) are errors, as in Python, not given means cpu_count() and none") {
  REQUIRE_THROWS_MATCHES(mp::Pool(0), mp::ValueError,
                         mproc_test::MessageContains("Pool: the number of workers must be at least 1"));
  REQUIRE_THROWS_MATCHES(mp::Pool(-1), mp::ValueError, mproc_test::MessageContains("(a negative count?)"));
  REQUIRE_THROWS_MATCHES(mp::PoolOptions().maxtasksperchild(0), mp::ValueError,
                         mproc_test::MessageContains("maxtasksperchild: must be at least 1, not 0"));
  mp::Pool def;
  CHECK(def.size() == static_cast<std::size_t>(mp::cpu_count()));
  mp::Pool one(std::size_t{1}, mp::PoolOptions().maxtasksperchild(1));
  CHECK(one.size() == 1);
  CHECK(one.map(square, iota_vec(4)) == std::vector<int>{0, 1, 4, 9});
}

TEST_CASE("bad arguments are reported clearly") {
  REQUIRE_THROWS_MATCHES(mp::Pool(-1), mp::ProcessError, mproc_test::MessageContains("at least 1"));
  {
    // A negative chunksize converted to std::size_t: refused before anything
    // runs (it used to wrap the chunk count and return zeros), in every form.
    mp::Pool pool(2);
    const std::vector<int> xs{1, 2, 3, 4, 5};
    const auto negative = static_cast<std::size_t>(-1);
    const auto refused = mproc_test::MessageContains("chunksize 18446744073709551615 is more than any range holds");
    REQUIRE_THROWS_MATCHES(pool.map(square, xs, negative), mp::ValueError, refused);
    REQUIRE_THROWS_MATCHES(pool.map_async(square, xs, negative), mp::ValueError, refused);
    REQUIRE_THROWS_MATCHES(pool.starmap(add, std::vector<std::tuple<int, int>>{{1, 2}}, negative), mp::ValueError,
                           refused);
    REQUIRE_THROWS_MATCHES((void)pool.imap(square, xs, negative), mp::ValueError, refused);
    REQUIRE_THROWS_MATCHES((void)pool.imap_unordered(square, xs, negative), mp::ValueError, refused);
    // The largest valid one makes one chunk of everything, as in Python.
    const auto largest = static_cast<std::size_t>(std::numeric_limits<std::ptrdiff_t>::max());
    CHECK(pool.map(square, xs, largest) == std::vector<int>{1, 4, 9, 16, 25});
    CHECK(pool.map_async(square, xs, largest).get(10s) == std::vector<int>{1, 4, 9, 16, 25});
    std::vector<int> lazy;
    for (int r : pool.imap(square, xs, largest)) lazy.push_back(r);
    CHECK(lazy == std::vector<int>{1, 4, 9, 16, 25});
    CHECK(pool.map(square, xs) == std::vector<int>{1, 4, 9, 16, 25});  // still serving
  }
  STATIC_REQUIRE(mp::detail::is_portable_callable_v<int (*)(int)>);
  auto captureless = [](int x) { return x; };
  int state = 3;
  auto capturing = [state](int x) { return x + state; };
  STATIC_REQUIRE(mp::detail::is_portable_callable_v<decltype(captureless)>);
  STATIC_REQUIRE_FALSE(mp::detail::is_portable_callable_v<decltype(capturing)>);
  (void)capturing(0);
}

// ------------------------------------------------------- reliability round 2

namespace {

// The sockets and pipes of this process that mproc keeps private (pool
// channels, status pipes), as /proc names them: "socket:[inode]". (Other
// private descriptors, pidfds and eventfds, have no distinguishing name.)
std::set<std::string> private_fd_targets() {
  std::set<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    const int fd = std::stoi(e.path().filename().string());
    if (!mp::detail::PrivateFds::instance().registered(fd)) continue;
    for (auto& t : mproc_test::fd_targets(::getpid(), fd))
      if (t.rfind("socket:", 0) == 0 || t.rfind("pipe:", 0) == 0) out.insert(t);
  }
  return out;
}

// Waits for a pool to show `n` workers; returns their pids.
std::vector<int> wait_for_workers(const mp::Pool& pool, std::size_t n) {
  const auto deadline = mp::detail::deadline_after(10s);
  auto pids = pool.worker_pids();
  while (pids.size() < n && mp::detail::Clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);  // polling the pool's state, with a deadline
    pids = pool.worker_pids();
  }
  REQUIRE(pids.size() == n);
  return pids;
}

std::string big_string(int mib) {
  std::string s(static_cast<std::size_t>(mib) << 20, 'x');
  for (std::size_t i = 0; i < s.size(); i += 4096) s[i] = static_cast<char>('a' + (i / 4096) % 26);
  return s;
}
bool big_string_ok(const std::string& s, int mib) {
  if (s.size() != static_cast<std::size_t>(mib) << 20) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char want = i % 4096 == 0 ? static_cast<char>('a' + (i / 4096) % 26) : 'x';
    if (s[i] != want) return false;
  }
  return true;
}

// Initializer: results written to files (memfds) are limited to 1 MiB in
// this worker, and exceeding the limit is an error, not SIGXFSZ.
void limit_file_size() {
  std::signal(SIGXFSZ, SIG_IGN);
  const rlimit lim{1 << 20, 1 << 20};
  if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) throw std::runtime_error("setrlimit(RLIMIT_FSIZE) failed");
}

bool is_odd(int x) { return x % 2 != 0; }
bool both_odd(int a, int b) { return a % 2 != 0 && b % 2 != 0; }
std::vector<bool> bit_pattern(int n) {
  std::vector<bool> v(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < v.size(); i += 3) v[i] = true;
  return v;
}

int init_returns_value(int v) {
  initialized_value = v;
  return v * 2;  // ignored, as Python ignores what an initializer returns
}
std::string init_returns_string() { return "ignored"; }

std::uint64_t checksum(std::span<const std::uint64_t> data) {
  std::uint64_t sum = 0;
  for (std::uint64_t x : data) sum = sum * 31 + x;
  return sum;
}

// Announces itself on fd `announce`, waits for a byte on `go`, then reads
// its (large, zero-copy) argument and writes the checksum to `report`.
int checksum_after_go(int announce, int go, int report, std::span<const std::uint64_t> data) {
  const char c = 'r';
  if (::write(announce, &c, 1) != 1) return 1;
  char g = 0;
  if (::read(go, &g, 1) != 1) return 2;
  const std::uint64_t sum = checksum(data);
  return ::write(report, &sum, sizeof sum) == sizeof sum ? 0 : 3;
}

}  // namespace

TEST_CASE("two pools: destroying the first while the second lives returns, and no descriptor crosses (#1)",
          "[failure-model]") {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  mp::detail::UniqueFd rd(fds[0]), wr(fds[1]);
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  mp::detail::UniqueFd ready_rd(fds[0]), ready_wr(fds[1]);
  auto a = std::make_unique<mp::Pool>(2);
  CHECK(a->map(square, iota_vec(8)) == std::vector<int>{0, 1, 4, 9, 16, 25, 36, 49});
  const auto a_private = private_fd_targets();
  REQUIRE_FALSE(a_private.empty());
  mp::Pool b(2);
  // A child started while both pools live: it says it runs (so it is past
  // fork()'s child handlers, which close private descriptors: a child that
  // has not been scheduled yet still shows the parent's table in /proc),
  // then blocks until this test writes.
  mp::Process p([&rd, &ready_wr] {
    char c = 'r';
    if (::write(ready_wr.get(), &c, 1) != 1) return 2;
    return ::read(rd.get(), &c, 1) == 1 ? 0 : 1;
  });
  p.start();
  REQUIRE(mp::detail::poll_until(ready_rd.get(), POLLIN, mp::detail::deadline_after(10s)) != 0);
  CHECK(b.map(square, iota_vec(4)) == std::vector<int>{0, 1, 4, 9});
  const auto b_workers = wait_for_workers(b, 2);
  std::vector<int> others(b_workers.begin(), b_workers.end());
  others.push_back(mproc_test::parent_of(b_workers[0]));  // b's zygote
  others.push_back(*p.pid());
  for (std::size_t k = 0; k < others.size(); ++k) {
    const int pid = others[k];
    const char* role = k < b_workers.size() ? "a worker of b" : k == b_workers.size() ? "b's zygote" : "the Process";
    for (const auto& target : mproc_test::fd_targets(pid)) {
      INFO("process " << pid << " (" << role << ", parent " << mproc_test::parent_of(pid) << ", this process "
                      << ::getpid() << ") holds " << target);
      CHECK(a_private.count(target) == 0);
    }
  }
  const auto t0 = mp::detail::Clock::now();
  mproc_test::within_10s([&] { a.reset(); });
  CHECK(mp::detail::Clock::now() - t0 < 2s);
  CHECK(b.map(square, iota_vec(3)) == std::vector<int>{0, 1, 4});
  REQUIRE(::write(wr.get(), "x", 1) == 1);
  REQUIRE(p.join(10s));
  CHECK(p.exitcode() == 0);
}

TEST_CASE("a pool created on a thread that exits keeps serving, also after a worker is replaced (#4)",
          "[failure-model]") {
  std::unique_ptr<mp::Pool> pool;
  std::thread maker([&] { pool = std::make_unique<mp::Pool>(2); });
  maker.join();
  CHECK(pool->map(square, iota_vec(6)) == std::vector<int>{0, 1, 4, 9, 16, 25});
  const auto before = wait_for_workers(*pool, 2);
  REQUIRE(::kill(before[0], SIGKILL) == 0);
  // The replacement is forked by the zygote, whose owner thread is gone.
  const auto deadline = mp::detail::deadline_after(10s);
  std::vector<int> now;
  do {
    std::this_thread::sleep_for(1ms);  // polling the pool's state, with a deadline
    now = pool->worker_pids();
  } while ((now.size() != 2 || std::count(now.begin(), now.end(), before[0]) != 0) &&
           mp::detail::Clock::now() < deadline);
  REQUIRE(now.size() == 2);
  CHECK(std::count(now.begin(), now.end(), before[0]) == 0);
  CHECK(pool->map(square, iota_vec(6), 1) == std::vector<int>{0, 1, 4, 9, 16, 25});
}

TEST_CASE("a 300 MiB result arrives whole and no sibling worker dies (#5)", "[failure-model]") {
  mp::Pool pool(2);
  const auto workers = wait_for_workers(pool, 2);
  auto small = pool.apply_async(sleep_ms_then, 50);
  const std::string r = pool.apply(big_string, 300);
  CHECK(big_string_ok(r, 300));
  CHECK(small.get(10s) == 50);
  CHECK(pool.worker_pids() == workers);
  // Many large results in one map, in order.
  const auto many = pool.map(big_string, std::vector<int>{3, 1, 2, 5}, 1);
  REQUIRE(many.size() == 4);
  CHECK(big_string_ok(many[0], 3));
  CHECK(big_string_ok(many[1], 1));
  CHECK(big_string_ok(many[2], 2));
  CHECK(big_string_ok(many[3], 5));
  CHECK(pool.worker_pids() == workers);
}

TEST_CASE("a result that cannot be sent fails that task alone, with a clear error (#5)", "[failure-model]") {
  mp::Pool pool(2, mp::PoolOptions().initializer(limit_file_size));
  const auto workers = wait_for_workers(pool, 2);
  REQUIRE_THROWS_MATCHES(pool.apply(big_string, 65), mp::RemoteError,  // 65 MiB: sent in a memfd
                         mproc_test::MessageContains("could not be sent"));
  CHECK(pool.apply(shout, std::string("still here")) == "STILL HERE!");
  CHECK(pool.worker_pids() == workers);
}

TEST_CASE("bool results: std::vector<bool> from map, imap, starmap and apply (#8)", "[failure-model]") {
  mp::Pool pool(2);
  CHECK(pool.map(is_odd, iota_vec(7)) == std::vector<bool>{false, true, false, true, false, true, false});
  CHECK(pool.map(is_odd, iota_vec(7), 2) == std::vector<bool>{false, true, false, true, false, true, false});
  std::vector<bool> lazy;
  for (bool b : pool.imap(is_odd, iota_vec(5))) lazy.push_back(b);
  CHECK(lazy == std::vector<bool>{false, true, false, true, false});
  const std::vector<std::tuple<int, int>> pairs{{1, 3}, {1, 2}, {5, 7}};
  CHECK(pool.starmap(both_odd, pairs) == std::vector<bool>{true, false, true});
  CHECK(pool.apply(is_odd, 3) == true);
  CHECK(pool.apply(bit_pattern, 7) == std::vector<bool>{true, false, false, true, false, false, true});
  CHECK(pool.map_async(is_odd, iota_vec(3)).get(10s) == std::vector<bool>{false, true, false});
}

TEST_CASE("an initializer's return value is ignored, as in Python (#9)", "[failure-model]") {
  {
    mp::Pool pool(2, mp::PoolOptions().initializer(init_returns_value, 7));
    const auto seen = pool.map(read_initialized, iota_vec(6), 1);
    CHECK(std::all_of(seen.begin(), seen.end(), [](int v) { return v == 7; }));
  }
  // One pool at a time: this case is about initializers. (With both alive, it
  // hung once in an AddressSanitizer run, not reproduced since; pools
  // created beside a running one are tested on their own.)
  mp::Pool other(1, mp::PoolOptions().initializer(init_returns_string));
  CHECK(other.apply(square, 5) == 25);
}

TEST_CASE("a transfer-heap block is not reused while a worker may still read it (#16)", "[failure-model]") {
  // The worker of a terminated task is kept alive (its zygote is stopped,
  // so the kill order waits) while this process encodes new arguments of the
  // same size: they must not land in the block the worker still reads.
  int ann[2], go[2], rep[2];
  REQUIRE(::pipe2(ann, O_CLOEXEC) == 0);
  REQUIRE(::pipe2(go, O_CLOEXEC) == 0);
  REQUIRE(::pipe2(rep, O_CLOEXEC) == 0);
  mp::detail::UniqueFd ann_rd(ann[0]), ann_wr(ann[1]), go_rd(go[0]), go_wr(go[1]), rep_rd(rep[0]), rep_wr(rep[1]);
  std::vector<std::uint64_t> data(64 * 1024);  // 512 KiB: through the transfer heap
  std::iota(data.begin(), data.end(), std::uint64_t{1});

  mp::Pool pool(1, mp::PoolOptions().start_method(mp::StartMethod::fork));  // workers inherit the pipes
  const int worker = wait_for_workers(pool, 1)[0];
  const int templ = mproc_test::parent_of(worker);
  REQUIRE(templ > 1);
  auto r = pool.apply_async(checksum_after_go, ann_wr.get(), go_rd.get(), rep_wr.get(), data);
  char c;
  REQUIRE(mp::detail::poll_until(ann_rd.get(), POLLIN, mp::detail::deadline_after(10s)) != 0);
  REQUIRE(::read(ann_rd.get(), &c, 1) == 1);
  REQUIRE(::kill(templ, SIGSTOP) == 0);
  pool.terminate();
  REQUIRE_THROWS_MATCHES(r.get(10s), mp::ProcessError, mproc_test::MessageContains("terminated"));
  const std::vector<std::uint64_t> other(data.size(), 0xdeadbeef);
  CHECK_THROWS_AS(pool.apply_async(checksum_after_go, ann_wr.get(), go_rd.get(), rep_wr.get(), other),
                  mp::ProcessError);  // encoded, then refused: the pool is terminated
  // The worker reads its arguments now and reports what it saw.
  REQUIRE(::write(go_wr.get(), "g", 1) == 1);
  std::uint64_t seen = 0;
  const bool reported = mp::detail::poll_until(rep_rd.get(), POLLIN, mp::detail::deadline_after(10s)) != 0 &&
                        ::read(rep_rd.get(), &seen, sizeof seen) == sizeof seen;
  REQUIRE(::kill(templ, SIGCONT) == 0);
  pool.join();
  REQUIRE(reported);
  CHECK(seen == checksum(data));
}

TEST_CASE("a pool used in a forked child refuses with a clear error, destroying the copy there is harmless",
          "[failure-model]") {
  auto pool = std::make_unique<mp::Pool>(2);
  CHECK(pool->map(square, iota_vec(3)) == std::vector<int>{0, 1, 4});
  const auto result = mproc_test::run_in_child(
      [&pool] {
        try {
          (void)pool->apply(square, 2);
          return 10;
        } catch (const mp::ProcessError& e) {
          if (std::string(e.what()).find("forked child cannot use it") == std::string::npos) return 11;
        }
        pool.reset();  // the child's copy: must neither hang nor touch the owner's workers
        return 0;
      },
      10s);
  CHECK_FALSE(result.timed_out);
  CHECK(result.exitcode == 0);
  CHECK(pool->map(square, iota_vec(4), 1) == std::vector<int>{0, 1, 4, 9});
}

TEST_CASE("imap over an input range that throws: every earlier result, then the error at its position") {
  mp::Pool pool(2);
  mproc_test::check_imap_input_error(pool, square);
  CHECK(pool.map(square, iota_vec(3)) == std::vector<int>{0, 1, 4});  // the pool is unharmed
}

TEST_CASE("a new Pool reports all of its workers as soon as it is asked (Python: Pool(3) has 3 worker pids)") {
  mp::Pool pool(3);
  const auto pids = pool.worker_pids();  // waits for the start-up, not for tasks
  REQUIRE(pids.size() == 3);
  CHECK(std::set<int>(pids.begin(), pids.end()).size() == 3);
  for (int pid : pids) CHECK(::kill(pid, 0) == 0);
  CHECK(pool.map(square, iota_vec(3)) == std::vector<int>{0, 1, 4});
}

// Locality: a task that reads a large shared block goes back to the worker
// that read it before (whose page tables hold it), whatever the input order.
TEST_CASE("Pool sends a task reading a large Array to the worker that read it before") {
  std::vector<mp::Array<double>> arrays;
  for (int i = 0; i < 2; ++i) arrays.emplace_back(std::vector<double>(std::size_t{1} << 17, 1.0));  // 1 MiB
  // The first tasks give each worker one array: the first task keeps its
  // worker busy until the other worker is ready for the second (a pool whose
  // second worker was not ready within 300 ms is replaced).
  std::optional<mp::Pool> pool;
  std::vector<int> first;
  for (int attempt = 0; attempt < 10 && (first.empty() || first[0] == first[1]); ++attempt) {
    pool.emplace(2);
    auto a = pool->apply_async(pid_after_ms, mp::Array<const double>(arrays[0]), 300);
    auto b = pool->apply_async(pid_after_ms, mp::Array<const double>(arrays[1]), 300);
    first = {a.get(), b.get()};
  }
  REQUIRE(first[0] != first[1]);
  for (int round = 0; round < 5; ++round) {
    // Both workers are free at the start of each map: each takes its own.
    const std::vector<int> again =
        pool->map(pid_reading, std::vector<mp::Array<double>>(arrays.rbegin(), arrays.rend()));
    CHECK(again[0] == first[1]);
    CHECK(again[1] == first[0]);
    CHECK(pool->map(pid_reading, arrays) == first);
  }
}

TEST_CASE("Pool spreads tasks that all read the same large Array over its workers") {
  // Waiting for the one worker that mapped it would serialize the map.
  mp::Pool pool(2);
  REQUIRE(pool.worker_pids().size() == 2);
  mp::Array<double> shared(std::vector<double>(std::size_t{1} << 17, 1.0));
  const std::vector<int> pids =
      pool.map(mp::bind(pid_after_ms, mp::Array<const double>(shared)), std::vector<int>(8, 20), 1);
  CHECK(std::set<int>(pids.begin(), pids.end()).size() == 2);
}

TEST_CASE("Pool runs a task whose Array's worker died on another worker") {
  mp::Pool pool(2);
  REQUIRE(pool.worker_pids().size() == 2);
  std::vector<mp::Array<double>> arrays;
  for (int i = 0; i < 2; ++i) arrays.emplace_back(std::vector<double>(std::size_t{1} << 17, 1.0));
  const std::vector<int> first = pool.map(pid_reading, arrays);
  REQUIRE(::kill(first[0], SIGKILL) == 0);
  mproc_test::within_10s([&] {
    const std::vector<int> again = pool.map(pid_reading, arrays);
    CHECK(again[0] != first[0]);
    CHECK(again[1] > 0);
  });
}

// A worker maps an Array's segment with its page tables filled when the
// segment has no hole (reads then fault nothing), also one it inherited
// through fork; a sparse segment is mapped on demand, so mapping it in a
// worker allocates none of its pages.
TEST_CASE("Pool workers map a written Array prefaulted and a sparse one on demand") {
  constexpr std::size_t n = std::size_t{1} << 18;  // 2 MiB
  const long full = static_cast<long>(n * sizeof(double) / 1024);
  mp::Array<double> written_before(std::vector<double>(n, 2.0));  // the worker inherits this mapping
  mp::Pool pool(1);
  mp::Array<double> written_after(std::vector<double>(n, 3.0));  // opened through its creator's descriptor
  mp::Array<double> sparse(n);                                    // zero pages, never written: holes
  CHECK(pool.apply(mapped_kib, mp::Array<const double>(written_before)) >= full);
  CHECK(pool.apply(mapped_kib, mp::Array<const double>(written_after)) >= full);
  CHECK(pool.apply(mapped_kib, mp::Array<const double>(sparse)) < full / 4);
  // The prefaulted mappings are the same memory, and writable.
  CHECK(pool.apply(sum_then_fill, mp::Array<double>(written_before), 5.0) == 2.0 * static_cast<double>(n));
  CHECK(pool.apply(sum_then_fill, mp::Array<double>(written_after), 6.0) == 3.0 * static_cast<double>(n));
  CHECK(pool.apply(sum_then_fill, mp::Array<double>(sparse), 7.0) == 0.0);
  CHECK(std::all_of(written_before.begin(), written_before.end(), [](double x) { return x == 5.0; }));
  CHECK(std::all_of(written_after.begin(), written_after.end(), [](double x) { return x == 6.0; }));
  CHECK(std::all_of(sparse.begin(), sparse.end(), [](double x) { return x == 7.0; }));
}

// A worker that cannot map an inherited segment anew (its creator has exited,
// so /proc/<creator>/fd no longer has it) uses the mapping it inherited.
TEST_CASE("a Pool worker reads an inherited Array whose creator has exited") {
  int to_parent[2], to_child[2];
  REQUIRE(::pipe(to_parent) == 0);
  REQUIRE(::pipe(to_child) == 0);
  mp::detail::UniqueFd parent_rd(to_parent[0]), child_wr(to_parent[1]), child_rd(to_child[0]), parent_wr(to_child[1]);
  mp::Process creator([&] {
    mp::Array<double> a(std::vector<double>(std::size_t{1} << 18, 4.0));  // 2 MiB, written
    const auto h = a.handle();
    char c = 0;
    if (::write(child_wr.get(), &h, sizeof h) != static_cast<ssize_t>(sizeof h)) return 2;
    return ::read(child_rd.get(), &c, 1) == 1 ? 0 : 1;  // holds the Array until told
  });
  creator.start();
  mp::detail::ShmHandle h;
  REQUIRE(mp::detail::poll_until(parent_rd.get(), POLLIN, mp::detail::deadline_after(10s)) != 0);
  REQUIRE(::read(parent_rd.get(), &h, sizeof h) == static_cast<ssize_t>(sizeof h));
  const auto received = mp::Array<double>::from_handle(h);  // mapped here through the creator's descriptor
  REQUIRE(::write(parent_wr.get(), "x", 1) == 1);
  creator.join(10s);
  REQUIRE(creator.exitcode() == 0);
  mp::Pool pool(1);  // its worker inherits this process's mapping
  CHECK(pool.apply(sum_then_fill, received, 5.0) == 4.0 * static_cast<double>(received.size()));
  CHECK(pool.apply(sum_then_fill, received, 6.0) == 5.0 * static_cast<double>(received.size()));
  CHECK(received[0] == 6.0);
}
