// Tests of <mproc/progress.hpp>: the progress bar over lazy results and ranges.
#include <cstdio>
#include <string>
#include <vector>

#include <mproc/progress.hpp>

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
