// Tests of <mproc/progress.hpp>: the progress bar over lazy results and ranges, its total from a sized
// range or an imap's length_hint() on both pools.
#include <cstdio>
#include <optional>
#include <ranges>
#include <string>
#include <utility>
#include <vector>

#include <mproc/pool.hpp>
#include <mproc/progress.hpp>
#include <mproc/thread_pool.hpp>

#include "catch.hpp"

namespace mp = mproc;

static std::string read_all(std::FILE* f) {
  std::rewind(f);
  std::string s;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) s.append(buf, n);
  return s;
}

TEST_CASE("progress passes every element through and draws the final state") {
  std::FILE* log = std::tmpfile();
  REQUIRE(log != nullptr);
  std::vector<int> values{1, 2, 3, 4};
  int sum = 0;
  {
    auto p = mp::progress(values, values.size(), mp::ProgressOptions("shards").force().stream(log).width(8));
    for (int v : p) sum += v;
    CHECK(p.done() == 4);
  }
  CHECK(sum == 10);
  const std::string out = read_all(log);
  CHECK_THAT(out, mproc_test::Contains("shards [########] 4/4 100.0%"));
  CHECK(out.back() == '\n');
  std::fclose(log);
}

TEST_CASE("progress stays silent when the stream is not a terminal") {
  std::FILE* log = std::tmpfile();
  REQUIRE(log != nullptr);
  int n = 0;
  for (int v : mp::progress(std::vector<int>{5, 6}, 2, mp::ProgressOptions().stream(log))) n += v;
  CHECK(n == 11);
  CHECK(read_all(log).empty());
  std::fclose(log);
}

TEST_CASE("progress takes its total from a sized range, and from imap over a sized input on both pools") {
  const auto drawn = [](auto&& range) {
    std::FILE* log = std::tmpfile();
    REQUIRE(log != nullptr);
    long sum = 0;
    for (auto v :
         mp::progress(std::forward<decltype(range)>(range), mp::ProgressOptions().force().stream(log).width(4)))
      sum += v;
    std::string out = read_all(log);
    std::fclose(log);
    return std::make_pair(sum, out);
  };
  const std::vector<int> xs{1, 2, 3, 4, 5};
  const auto [sum, out] = drawn(xs);
  CHECK(sum == 15);
  CHECK_THAT(out, mproc_test::Contains("[####] 5/5 100.0%"));
  CHECK_THAT(drawn(std::views::iota(0, 7)).second, mproc_test::Contains("7/7 100.0%"));

  mp::ThreadPool threads(2);
  auto timg = threads.imap([](int x) { return x * 2; }, xs);
  CHECK(timg.length_hint() == std::optional<std::size_t>(5));
  const auto [tsum, tout] = drawn(std::move(timg));
  CHECK(tsum == 30);
  CHECK_THAT(tout, mproc_test::Contains("5/5 100.0%"));

  mp::Pool pool(2);
  const auto [psum, pout] = drawn(pool.imap(+[](int x) { return x * 3; }, xs));
  CHECK(psum == 45);
  CHECK_THAT(pout, mproc_test::Contains("5/5 100.0%"));
  const auto [usum, uout] = drawn(pool.imap_unordered(+[](int x) { return x; }, std::vector<int>{4, 5}));
  CHECK(usum == 9);
  CHECK_THAT(uout, mproc_test::Contains("2/2 100.0%"));

  // An input that is not sized: no hint, and the bar counts steps only.
  auto unsized = std::views::iota(0) | std::views::take_while([](int x) { return x < 3; });
  auto lazy = threads.imap([](int x) { return x; }, unsized);
  CHECK_FALSE(lazy.length_hint().has_value());
  const auto [lsum, lout] = drawn(std::move(lazy));
  CHECK(lsum == 3);
  CHECK_THAT(lout, mproc_test::Contains("\r3 "));
  CHECK_THAT(lout, mproc_test::Contains(" it/s"));
}
