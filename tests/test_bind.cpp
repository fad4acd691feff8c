// Tests of <mproc/bind.hpp>: mp::bind(f, state...) on Pool (map, starmap,
// map_async, imap, imap_unordered, apply_async, submit: the state decoded
// once per chunk in the worker, typed errors, undecodable state) and on
// ThreadPool.
#include <algorithm>
#include <cstddef>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <unistd.h>

#include <mproc/bind.hpp>
#include <mproc/pool.hpp>
#include <mproc/thread_pool.hpp>

#include "catch.hpp"

namespace mp = mproc;

namespace {

double weighted(const std::vector<double>& weights, int x) {
  return weights[static_cast<std::size_t>(x) % weights.size()] * x;
}

double weighted_view(std::span<const double> weights, int x) { return weights[static_cast<std::size_t>(x) % 3] * x; }

std::string label(const std::string& prefix, int sep, int x) {
  return prefix + static_cast<char>(sep) + std::to_string(x);
}

int must_be_positive(const std::string& what, int x) {
  if (x < 0) throw std::invalid_argument(what + ": " + std::to_string(x) + " is negative");
  return x;
}

std::vector<double> weights() { return {0.5, 2.0, 10.0}; }

std::vector<double> expected(const std::vector<int>& xs) {
  std::vector<double> out;
  for (int x : xs) out.push_back(weighted(weights(), x));
  return out;
}

std::vector<int> iota(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = i;
  return v;
}

}  // namespace

// State whose decoding is observable: each decode in a process takes the
// next serial number of that process.
struct Decoded {
  int serial = 0;
};
namespace {
int decodes_here = 0;
std::pair<int, int> which_decode(const Decoded& d, int) { return {static_cast<int>(::getpid()), d.serial}; }
}  // namespace
template <>
struct mproc::serializer<Decoded> {
  static void write(mproc::Writer& w, const Decoded& d) { w.write(d.serial); }
  static Decoded read(mproc::Reader& r) {
    (void)r.read<int>();
    return {++decodes_here};
  }
};

// State that a worker refuses to decode.
struct Refused {
  int value = 0;
};
namespace {
int use_refused(const Refused& r, int x) { return r.value + x; }
}  // namespace
template <>
struct mproc::serializer<Refused> {
  static void write(mproc::Writer& w, const Refused& s) { w.write(s.value); }
  static Refused read(mproc::Reader& r) {
    const int v = r.read<int>();
    if (v < 0) r.fail("a Refused state must not be negative");
    return {v};
  }
};

TEST_CASE("bind: calling a Bound passes the state first, by const reference") {
  const auto b = mp::bind(label, std::string("item"), '#');
  CHECK(b(7) == "item#7");
  CHECK(std::get<0>(b.state()) == "item");
  CHECK(b.function() == &label);
}

TEST_CASE("bind: Pool map, starmap and map_async give f(state..., x) in input order") {
  mp::Pool pool(2);
  const std::vector<int> xs = iota(100);
  CHECK(pool.map(mp::bind(weighted, weights()), xs) == expected(xs));
  CHECK(pool.map(mp::bind(weighted, weights()), xs, 7) == expected(xs));
  // A std::span<const double> parameter is fed from the decoded vector.
  CHECK(pool.map(mp::bind(weighted_view, weights()), xs) == expected(xs));
  CHECK(pool.map_async(mp::bind(weighted, weights()), xs, 9).get() == expected(xs));

  std::vector<std::tuple<int, int>> pairs{{'-', 1}, {':', 2}, {'/', 3}};
  CHECK(pool.starmap(mp::bind(label, std::string("n")), pairs) == std::vector<std::string>{"n-1", "n:2", "n/3"});
  CHECK(pool.starmap_async(mp::bind(label, std::string("m")), pairs).get() ==
        std::vector<std::string>{"m-1", "m:2", "m/3"});
}

TEST_CASE("bind: Pool imap, imap_unordered, apply_async and submit") {
  mp::Pool pool(2);
  const std::vector<int> xs = iota(40);
  std::vector<double> got;
  for (double v : pool.imap(mp::bind(weighted, weights()), xs, 3)) got.push_back(v);
  CHECK(got == expected(xs));

  got.clear();
  for (double v : pool.imap_unordered(mp::bind(weighted, weights()), xs)) got.push_back(v);
  std::ranges::sort(got);
  std::vector<double> want = expected(xs);
  std::ranges::sort(want);
  CHECK(got == want);

  CHECK(pool.apply_async(mp::bind(label, std::string("a")), '=', 4).get() == "a=4");
  CHECK(pool.submit(mp::bind(label, std::string("s")), '+', 5).get() == "s+5");
  CHECK(pool.apply(mp::bind(weighted, weights()), 2) == 20.0);
}

TEST_CASE("bind: Pool decodes the state once per chunk, not once per input") {
  mp::Pool pool(2);
  const std::vector<int> xs = iota(120);
  const auto seen = pool.map(mp::bind(which_decode, Decoded{}), xs, 12);
  REQUIRE(seen.size() == xs.size());
  std::set<std::pair<int, int>> distinct;
  for (std::size_t chunk = 0; chunk < 10; ++chunk) {
    for (std::size_t k = 1; k < 12; ++k) CHECK(seen[chunk * 12 + k] == seen[chunk * 12]);
    distinct.insert(seen[chunk * 12]);
  }
  CHECK(distinct.size() == 10);  // one decode per chunk, each a different one
}

TEST_CASE("bind: an exception in the bound function arrives typed, naming the input") {
  mp::Pool pool(2);
  try {
    (void)pool.map(mp::bind(must_be_positive, std::string("count")), std::vector<int>{1, 2, -3, 4});
    FAIL("map did not throw");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("count: -3 is negative") != std::string::npos);
  }
  // The pool is still usable.
  CHECK(pool.map(mp::bind(must_be_positive, std::string("n")), std::vector<int>{5, 6}) == std::vector<int>{5, 6});
}

TEST_CASE("bind: a state the worker cannot decode fails every input of its chunk with the reason") {
  mp::Pool pool(2);
  try {
    (void)pool.map(mp::bind(use_refused, Refused{-1}), iota(10));
    FAIL("map did not throw");
  } catch (const mp::ProcessError& e) {
    CHECK(std::string(e.what()).find("a Refused state must not be negative") != std::string::npos);
  }
  CHECK(pool.map(mp::bind(use_refused, Refused{10}), iota(3)) == std::vector<int>{10, 11, 12});
}

TEST_CASE("bind: ThreadPool map, submit and apply_async share the state") {
  mp::ThreadPool pool(2);
  const std::vector<int> xs = iota(1000);
  CHECK(pool.map(mp::bind(weighted, weights()), xs) == expected(xs));
  CHECK(pool.submit(mp::bind(label, std::string("t")), '*', 9).get() == "t*9");
  CHECK(pool.apply_async(mp::bind(weighted, weights()), 1).get() == 2.0);
  // A capturing lambda may be bound too on threads.
  int offset = 100;  // (not a constant: the capture is needed)
  CHECK(pool.map(mp::bind([offset](int a, int x) { return a + x + offset; }, 1), std::vector<int>{1, 2}) ==
        std::vector<int>{102, 103});
}
