// mproc::mpi::Pool under `mpiexec -n 3`: rank 0 is the client, ranks 1 and 2
// serve. Every rank runs every test case (see mpi_catch_main.cpp); pools are
// made with servers_return(), and the client-side part of a test follows
// `if (!pool) return;`.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <map>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

#include <mproc/mpi.hpp>

#include "catch.hpp"
#include "imap_input_error.hpp"

namespace mp = mproc;
using namespace std::chrono_literals;
using mproc_test::MessageContains;

namespace {

mp::mpi::PoolOptions opts() { return mp::mpi::PoolOptions().servers_return(); }

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

int square(int x) { return x * x; }
int plus_one(int x) { return x + 1; }
int plus_two(int x) { return x + 2; }
int add(int a, int b) { return a + b; }
int my_rank(int) { return world_rank(); }
std::string shout(const std::string& s) { return s + "!"; }
double sum_view(std::span<const double> v) { return std::accumulate(v.begin(), v.end(), 0.0); }

int fails_on_three(int x) {
  if (x == 3) throw std::invalid_argument("three is not allowed");
  return x;
}

// Rank 1 is slow: a dynamically balanced pool gives rank 2 more tasks.
int rank_slowly(int) {
  if (world_rank() == 1) std::this_thread::sleep_for(20ms);
  return world_rank();
}

// Item 0 is slow: in completion order it comes last.
int slow_first(int x) {
  if (x == 0) std::this_thread::sleep_for(300ms);
  return x;
}

int sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}

std::vector<double> scaled(const std::vector<double>& v, double k) {
  std::vector<double> out(v);
  for (double& x : out) x *= k;
  return out;
}

// The address of this rank's copy of a broadcast value, and its size.
std::pair<std::uintptr_t, std::size_t> where_is(const mp::mpi::Shared<std::vector<double>>& h, int) {
  return {reinterpret_cast<std::uintptr_t>(h->data()), h->size()};
}
double element(const mp::mpi::Shared<std::vector<double>>& h, std::size_t i) { return (*h)[i]; }

}  // namespace

TEST_CASE("mpi::Pool: map returns every result in input order, across both serving ranks", "[mpi]") {
  mp::mpi::Pool pool(opts());
  if (!pool) return;
  REQUIRE(pool.size() == 2);
  REQUIRE(pool.rank() == 0);
  std::vector<int> xs(1000);
  std::iota(xs.begin(), xs.end(), 0);
  for (std::size_t chunksize : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{5000}}) {
    const auto out = pool.map(square, xs, chunksize);
    REQUIRE(out.size() == xs.size());
    for (int i = 0; i < 1000; ++i) REQUIRE(out[static_cast<std::size_t>(i)] == i * i);
  }
  const auto ranks = pool.map(my_rank, xs, 1);
  REQUIRE(std::set<int>(ranks.begin(), ranks.end()) == std::set<int>{1, 2});
  REQUIRE(pool.map(square, std::vector<int>{}).empty());
}

TEST_CASE("mpi::Pool: function pointers are told apart on the serving ranks (address-independent identity)", "[mpi]") {
  mp::mpi::Pool pool(opts());
  if (!pool) return;
  const std::vector<int> xs{1, 2, 3};
  REQUIRE(pool.map(plus_one, xs) == std::vector<int>{2, 3, 4});
  REQUIRE(pool.map(plus_two, xs) == std::vector<int>{3, 4, 5});
  REQUIRE(pool.map([](int x) { return x * 10; }, xs) == std::vector<int>{10, 20, 30});
  REQUIRE(pool.map([](int x) { return x * 100; }, xs) == std::vector<int>{100, 200, 300});
}

TEST_CASE("mpi::Pool: starmap, strings, span parameters and vector results cross ranks", "[mpi]") {
  mp::mpi::Pool pool(opts());
  if (!pool) return;
  const std::vector<std::tuple<int, int>> pairs{{1, 2}, {3, 4}, {5, 6}};
  REQUIRE(pool.starmap(add, pairs) == std::vector<int>{3, 7, 11});
  REQUIRE(pool.map(shout, std::vector<std::string>{"a", "bc"}) == std::vector<std::string>{"a!", "bc!"});
  const std::vector<std::vector<double>> sets{{1, 2, 3}, {4.5}, {}};
  REQUIRE(pool.map(sum_view, sets) == std::vector<double>{6, 4.5, 0});
  REQUIRE(pool.apply(scaled, std::vector<double>{1, 2}, 3.0) == std::vector<double>{3, 6});
}

TEST_CASE("mpi::Pool: std::string_view inputs reach a std::string parameter in map, imap and apply", "[mpi]") {
  mp::mpi::Pool pool(opts());
  if (!pool) return;
  const std::string text = "alpha beta " + std::string(100'000, 'z');
  const std::vector<std::string_view> words{std::string_view(text).substr(0, 5), std::string_view(text).substr(5, 0),
                                            std::string_view(text).substr(11)};
  const std::vector<std::string> expected{"alpha!", "!", std::string(100'000, 'z') + "!"};
  REQUIRE(pool.map(shout, words) == expected);
  std::vector<std::string> lazy;
  for (auto& s : pool.imap(shout, words, 2)) lazy.push_back(std::move(s));
  REQUIRE(lazy == expected);
  REQUIRE(pool.apply(shout, words[0]) == expected[0]);
}

TEST_CASE("mpi::Pool: imap yields input order, imap_unordered completion order", "[mpi]") {
  mp::mpi::Pool pool(opts());
  if (!pool) return;
  std::vector<int> xs(8);
  std::iota(xs.begin(), xs.end(), 0);
  std::vector<int> ordered;
  for (int r : pool.imap(slow_first, xs)) ordered.push_back(r);
  REQUIRE(ordered == xs);
  std::vector<int> unordered;
  for (int r : pool.imap_unordered(slow_first, xs)) unordered.push_back(r);
  REQUIRE(unordered.size() == xs.size());
  // Item 0 sleeps 300 ms; the others overtake it (but for the one queued
  // behind it on its rank: each rank holds up to 2 tasks).
  REQUIRE(unordered.front() != 0);
  REQUIRE(std::find(unordered.begin(), unordered.end(), 0) - unordered.begin() >= 6);
  std::sort(unordered.begin(), unordered.end());
  REQUIRE(unordered == xs);
  // A moved-from result refuses clearly; the one moved to yields all.
  auto first = pool.imap(square, std::vector<int>{1, 2, 3});
  auto second = std::move(first);
  REQUIRE_THROWS_MATCHES(first.next(), mp::ProcessError, MessageContains("used after it was moved from"));
  std::vector<int> got;
  for (int r : second) got.push_back(r);
  REQUIRE(got == std::vector<int>{1, 4, 9});
  // Chunked, and from an input range that is not sized.
  auto lazy = pool.imap(square, std::views::iota(0, 50) | std::views::filter([](int x) { return x % 2 == 0; }), 4);
  std::vector<int> evens;
  while (auto r = lazy.next(10s)) evens.push_back(*r);
  REQUIRE(evens.size() == 25);
  REQUIRE(evens[24] == 48 * 48);
}

TEST_CASE("mpi::Pool: tasks are pulled dynamically, so a fast rank takes more of them", "[mpi]") {
  mp::mpi::Pool pool(opts());
  if (!pool) return;
  const auto ranks = pool.map(rank_slowly, std::vector<int>(60, 0), 1);
  const auto on1 = std::count(ranks.begin(), ranks.end(), 1);
  const auto on2 = std::count(ranks.begin(), ranks.end(), 2);
  INFO("rank 1 (slow) ran " << on1 << " tasks, rank 2 ran " << on2);
  REQUIRE(on1 + on2 == 60);
  REQUIRE(on2 > 2 * on1);
}

TEST_CASE("mpi::Pool: apply_async completes in the background, get(timeout) times out", "[mpi]") {
  mp::mpi::Pool pool(opts());
  if (!pool) return;
  REQUIRE(pool.apply(add, 2, 3) == 5);
  auto r = pool.apply_async(square, 9);
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!r.ready() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
  REQUIRE(r.ready());  // nobody waited on it: the progress thread completed it
  REQUIRE(r.successful());
  REQUIRE(r.get() == 81);
  auto slow = pool.apply_async(sleep_ms, 500);
  REQUIRE_THROWS_AS(slow.get(50ms), mp::TimeoutError);
  REQUIRE(slow.get(10s) == 500);
  auto all = pool.map_async(square, std::vector<int>{1, 2, 3});
  REQUIRE(all.get(10s) == std::vector<int>{1, 4, 9});
}

TEST_CASE("mpi::Pool: a task's exception comes back as its own type, with its type and message", "[mpi]") {
  mp::mpi::Pool pool(opts());
  if (!pool) return;
  try {
    pool.apply(fails_on_three, 3);
    FAIL("no exception");
  } catch (const std::invalid_argument& e) {
    const auto* trace = dynamic_cast<const mp::RemoteTrace*>(&e);
    REQUIRE(trace != nullptr);
    REQUIRE(trace->type_name() == "std::invalid_argument");
    REQUIRE(trace->message() == "three is not allowed");
    REQUIRE(trace->pid() > 0);
  }
  REQUIRE_THROWS_MATCHES(pool.map(fails_on_three, std::vector<int>{1, 2, 3, 4}, 1), std::invalid_argument,
                         MessageContains("std::invalid_argument: three is not allowed (raised in worker process"));
  // The other items of an imap are unaffected.
  auto it = pool.imap(fails_on_three, std::vector<int>{2, 3, 4});
  REQUIRE(it.next() == 2);
  REQUIRE_THROWS_AS(it.next(), mp::RemoteException<std::invalid_argument>);
  REQUIRE(it.next() == 4);
  // And the pool serves on.
  REQUIRE(pool.map(square, std::vector<int>{5}) == std::vector<int>{25});
}

TEST_CASE("mpi::Pool: broadcast sends a value once per rank, tasks get that rank's copy by reference", "[mpi]") {
  mp::mpi::Pool pool(opts());
  if (!pool) return;
  std::vector<double> big(1 << 20);
  std::iota(big.begin(), big.end(), 0.0);
  const auto h = pool.broadcast(big);
  REQUIRE(h->size() == big.size());
  std::vector<std::tuple<mp::mpi::Shared<std::vector<double>>, int>> calls;
  for (int i = 0; i < 40; ++i) calls.emplace_back(h, i);
  const auto where = pool.starmap(where_is, calls, 1);
  std::set<std::uintptr_t> copies;
  for (const auto& [addr, size] : where) {
    REQUIRE(size == big.size());
    copies.insert(addr);
  }
  REQUIRE(copies.size() == 2);  // one copy on each serving rank, used by all of its tasks
  REQUIRE(pool.apply(element, h, std::size_t{12345}) == 12345.0);
}

TEST_CASE("mpi::Pool: a broadcast handle is unknown to a later pool: a clear RemoteError", "[mpi]") {
  mp::mpi::Shared<std::vector<double>> stale;
  {
    mp::mpi::Pool pool(opts());
    if (pool) stale = pool.broadcast(std::vector<double>{1, 2, 3});
  }
  mp::mpi::Pool pool(opts());
  if (!pool) return;
  REQUIRE_THROWS_MATCHES(pool.apply(element, stale, std::size_t{0}), mp::RemoteError,
                         MessageContains("is unknown on this rank"));
}

TEST_CASE("mpi::Pool: map sends large inputs from the caller's vectors, of every size around the first part's",
          "[mpi]") {
  mp::mpi::Pool pool(opts());
  if (!pool) return;
  // Sizes around the gather threshold (16 KiB), the first part (64 KiB) and large.
  std::vector<std::vector<double>> sets;
  for (std::size_t n : {std::size_t{100}, std::size_t{2047}, std::size_t{2048}, std::size_t{5000}, std::size_t{8180},
                        std::size_t{8192}, std::size_t{8200}, std::size_t{200000}}) {
    std::vector<double> v(n);
    std::iota(v.begin(), v.end(), 1.0);
    sets.push_back(std::move(v));
  }
  for (std::size_t chunksize : {std::size_t{1}, std::size_t{3}}) {
    const auto sums = pool.map(sum_view, sets, chunksize);
    for (std::size_t i = 0; i < sets.size(); ++i) {
      const double n = static_cast<double>(sets[i].size());
      REQUIRE(sums[i] == n * (n + 1) / 2);
    }
  }
  std::vector<std::tuple<std::vector<double>, double>> pairs;
  for (const auto& v : sets) pairs.emplace_back(v, 2.0);
  const auto scaled_sets = pool.starmap(scaled, pairs, 2);
  for (std::size_t i = 0; i < sets.size(); ++i) REQUIRE(scaled_sets[i].back() == 2.0 * sets[i].back());
}

TEST_CASE("mpi::Pool: messages larger than one MPI message travel in parts", "[mpi]") {
  const std::size_t saved = mp::detail::mpi::max_message_bytes();
  mp::detail::mpi::max_message_bytes() = 4096;  // on every rank, before the pool exists
  struct Restore {
    std::size_t v;
    ~Restore() { mp::detail::mpi::max_message_bytes() = v; }
  } restore{saved};
  mp::mpi::Pool pool(opts());
  if (!pool) return;
  std::vector<std::vector<double>> sets;
  for (int i = 0; i < 6; ++i) sets.emplace_back(10000 + i, 1.5);
  const auto sums = pool.map(sum_view, sets, 1);
  for (int i = 0; i < 6; ++i) REQUIRE(sums[static_cast<std::size_t>(i)] == 1.5 * (10000 + i));
  const auto back = pool.apply(scaled, sets[5], 2.0);
  REQUIRE(back == std::vector<double>(10005, 3.0));
  const auto h = pool.broadcast(sets[3]);
  REQUIRE(pool.apply(element, h, std::size_t{10002}) == 1.5);
}

TEST_CASE("mpi::Pool: close, join and terminate", "[mpi]") {
  {
    mp::mpi::Pool pool(opts());
    if (pool) {
      REQUIRE_THROWS_MATCHES(pool.join(), mp::ProcessError, MessageContains("call close() or terminate() first"));
      auto r = pool.apply_async(square, 4);
      pool.close();
      REQUIRE_THROWS_MATCHES(pool.apply(square, 1), mp::ProcessError, MessageContains("the pool is closed"));
      pool.join();
      REQUIRE(r.get() == 16);  // submitted before close(): it ran
      pool.join();             // idempotent
    }
  }
  {
    mp::mpi::Pool pool(opts());
    if (pool) {
      std::vector<mp::AsyncResult<int>> slow;
      for (int i = 0; i < 6; ++i) slow.push_back(pool.apply_async(sleep_ms, 200));
      const auto start = std::chrono::steady_clock::now();
      pool.terminate();
      for (auto& r : slow) REQUIRE_THROWS_MATCHES(r.get(), mp::ProcessError, MessageContains("terminated"));
      pool.join();
      REQUIRE(std::chrono::steady_clock::now() - start < 5s);
    }
  }
}

TEST_CASE("mpi::Pool: misuse gives clear errors", "[mpi]") {
  // A communicator of one rank has nobody to serve.
  REQUIRE_THROWS_MATCHES(mp::mpi::Pool(mp::mpi::PoolOptions().comm(MPI_COMM_SELF)), mp::ProcessError,
                         MessageContains("a pool needs a client and at least one serving rank"));
  REQUIRE_THROWS_MATCHES(mp::mpi::Pool(mp::mpi::PoolOptions().root(7)), mp::ProcessError,
                         MessageContains("root 7 is not a rank"));
  // MPI is initialized once per process.
  {
    mp::mpi::Environment env;  // MPI is already initialized by main(): used, not owned
    REQUIRE_FALSE(env.owns_mpi());
    REQUIRE_THROWS_MATCHES(mp::mpi::Environment(), mp::ProcessError, MessageContains("another Environment is alive"));
  }
  mp::mpi::Pool pool(opts());
  if (!pool) {
    // A serving rank, back from serving: it cannot use the pool.
    REQUIRE_THROWS_MATCHES(pool.map(square, std::vector<int>{1}), mp::ProcessError,
                           MessageContains("this is serving rank"));
    REQUIRE_THROWS_AS(pool.apply(square, 1), mp::ProcessError);
    REQUIRE_THROWS_AS(pool.close(), mp::ProcessError);
    return;
  }
  // Serving ranks serve one pool at a time: a second open pool would wait forever for them.
  REQUIRE_THROWS_MATCHES(mp::mpi::Pool(opts()), mp::ProcessError, MessageContains("another pool is open"));
  REQUIRE(pool.apply(square, 3) == 9);
  // A negative chunksize converted to std::size_t: refused before anything is sent.
  const std::vector<int> xs{1, 2, 3};
  const auto negative = static_cast<std::size_t>(-1);
  REQUIRE_THROWS_MATCHES(pool.map(square, xs, negative), mp::ValueError,
                         MessageContains("mpi::Pool: chunksize 18446744073709551615 is more than any range holds"));
  REQUIRE_THROWS_AS(pool.map_async(square, xs, negative), mp::ValueError);
  REQUIRE_THROWS_MATCHES((void)pool.imap(square, xs, negative), mp::ValueError,
                         MessageContains("mpi::Pool.imap: chunksize"));
  const auto largest = static_cast<std::size_t>(std::numeric_limits<std::ptrdiff_t>::max());
  REQUIRE(pool.map(square, xs, largest) == std::vector<int>{1, 4, 9});
  REQUIRE(pool.map_async(square, xs, largest).get(10s) == std::vector<int>{1, 4, 9});
}

TEST_CASE("mpi::Pool: a task naming code this rank does not have, or a corrupted count, is refused, never run",
          "[mpi]") {
  // No pool: the serving side's task runner, fed tampered messages.
  namespace d = mp::detail::mpi;
  const auto good = d::task_code_ref<int (*)(int), int, false>();
  const auto check = d::task_code<int (*)(int), int, false>.check;
  auto run = [](std::vector<std::byte> msg, d::CodeRef tramp, std::uint64_t chk, d::CodeRef fn,
                std::uint64_t count = 1) {
    d::TaskRef ref{tramp, chk, fn, count};
    std::memcpy(msg.data() + sizeof(d::MsgHeader), &ref, sizeof ref);
    std::vector<std::byte> out;
    d::run_task_message(msg, out, 1);
    mp::Reader r(std::span<const std::byte>(out).subspan(sizeof(d::MsgHeader)));
    int value = 0;
    std::string error;
    mp::detail::read_results<int>(
        r, 1, [&](std::uint64_t, int&& v) { value = v; },
        [&](std::uint64_t, std::exception_ptr e) {
          try {
            std::rethrow_exception(e);
          } catch (const mp::RemoteError& x) {
            error = x.what();
          }
        });
    return std::pair(value, error);
  };
  const auto fn = d::function_ref(&square);
  const auto base = mp::mpi::detail::encode_task<int (*)(int), int, false>(fn, 1, 0, [](mp::Writer& w) { w.write(5); });
  REQUIRE(run(base, good, check, fn) == std::pair(25, std::string()));
  // Another function of the same type: the identity is exact.
  REQUIRE(run(base, good, check, d::function_ref(&plus_one)).first == 6);
  // A wrong type hash: the record does not match.
  REQUIRE_THAT(run(base, good, check ^ 1, fn).second, mproc_test::Contains("does not match on this rank"));
  // An offset that does not point at a record (here: 8 bytes off).
  REQUIRE_THAT(run(base, {good.object, good.offset + 8}, check, fn).second,
               mproc_test::Contains("does not match on this rank"));
  // An offset outside the object.
  REQUIRE_THAT(run(base, {good.object, std::uint64_t{1} << 46}, check, fn).second,
               mproc_test::Contains("is outside the object"));
  // An object this rank has not loaded (another build).
  REQUIRE_THAT(run(base, {good.object ^ 0x10, good.offset}, check, fn).second,
               mproc_test::Contains("that this rank has not loaded"));
  // A call count the bytes cannot hold: refused, not looped over.
  REQUIRE_THAT(run(base, good, check, fn, std::uint64_t{1} << 40).second,
               mproc_test::Contains("malformed task (1099511627776 calls for 4 bytes"));
  // A function pointer outside the code.
  REQUIRE_THAT(run(base, good, check, {fn.object, std::uint64_t{1} << 46}).second,
               mproc_test::Contains("is outside the object"));
}

TEST_CASE("mpi::Pool: imap over an input range that throws: every earlier result, then the error at its position",
          "[mpi]") {
  mp::mpi::Pool pool(opts());
  if (!pool) return;
  mproc_test::check_imap_input_error(pool, square);
  REQUIRE(pool.map(square, std::vector<int>{1, 2}) == std::vector<int>{1, 4});
}
