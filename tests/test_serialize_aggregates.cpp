// tests/test_serialize_aggregates.cpp — plain structs across real process
// boundaries: as Pool task arguments and results, and as Queue items put by
// a worker process, with no serializer written for them.
//
// The encoding itself (nesting, containers, errors, fingerprints) is tested
// in test_serialize.cpp; this file proves the Pool's and Queue's paths.
// SPDX-License-Identifier: MIT

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <mproc/pool.hpp>
#include <mproc/queue.hpp>

#include "catch.hpp"

namespace mp = mproc;

namespace {

// Not trivially copyable: sent member by member, with nothing written for it.
struct Sample {
  std::string path;
  std::vector<float> x;
  int label = 0;
  bool operator==(const Sample&) const = default;
};

struct Batch {
  std::vector<Sample> samples;
  std::map<std::string, int> counts;
  std::optional<Sample> first;
  std::tuple<Sample, double> weighted;
  bool operator==(const Batch&) const = default;
};

struct Summary {
  std::string name;
  double total = 0;
  std::size_t n = 0;
  bool operator==(const Summary&) const = default;
};

Summary summarize(const Sample& s) {
  double total = 0;
  for (const float v : s.x) total += v;
  return Summary{s.path + "!", total, s.x.size()};
}

Batch relabel(Batch b, int delta) {
  for (Sample& s : b.samples) s.label += delta;
  if (b.first) b.first->label += delta;
  std::get<0>(b.weighted).label += delta;
  ++b.counts["relabelled"];
  return b;
}

void send_back(mp::Queue<Sample> q, Sample s) {
  s.label *= 2;
  q.put(s);
}

}  // namespace

TEST_CASE("plain structs are Pool task arguments and results without a serializer") {
  mp::Pool pool(2);
  const std::vector<Sample> inputs{{"a", {1, 2, 3}, 1}, {"b", {}, 2}, {std::string(5000, 'c'), {0.5f}, 3}};
  const std::vector<Summary> expected{{"a!", 6, 3}, {"b!", 0, 0}, {std::string(5000, 'c') + "!", 0.5, 1}};
  CHECK(pool.map(summarize, inputs) == expected);

  Batch batch{inputs, {{"seen", 3}}, inputs[0], {inputs[1], 0.25}};
  Batch want = batch;
  for (Sample& s : want.samples) s.label += 10;
  want.first->label += 10;
  std::get<0>(want.weighted).label += 10;
  want.counts["relabelled"] = 1;
  CHECK(pool.apply(relabel, batch, 10) == want);
}

TEST_CASE("plain structs are Queue items, put by a worker process") {
  mp::Queue<Sample> q;
  mp::Pool pool(1);
  const Sample s{"img/0001.png", std::vector<float>(1000, 0.25f), 21};
  pool.apply(send_back, q, s);
  const Sample got = q.get(std::chrono::seconds(30));
  CHECK(got.path == s.path);
  CHECK(got.x == s.x);
  CHECK(got.label == 42);
}
