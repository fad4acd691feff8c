// examples/plain_struct.cpp — plain structs cross process boundaries as they
// are, like pickled Python objects; a class with private members takes one
// MPROC_SERIALIZE line.
//
// A Pool of worker processes receives `Sample`s (a std::string, a
// std::vector<float>, an int: nothing written for it) and returns `Stats`,
// another plain struct. `geo::Box` keeps its members private, so it is
// declared with MPROC_SERIALIZE at global scope. A `Model` every call needs
// is bound to the task function with mp::bind (Python: functools.partial):
// it travels once per chunk of samples, not with each sample.
// SPDX-License-Identifier: MIT
//
// expect-output: img/0.png: 4 values, mean 1.5, label 0
// expect-output: img/2.png: 4 values, mean 3.5, label 2
// expect-output: box \[0, 2\] x \[1, 3\] "roi" came back whole
// expect-output: scores with the bound model: 1 1.4 1.8

#include <cstdio>
#include <string>
#include <vector>

#include <mproc/bind.hpp>
#include <mproc/pool.hpp>

namespace mp = mproc;

struct Sample {  // a plain struct: sent member by member
  std::string path;
  std::vector<float> x;
  int label;
};

struct Stats {
  std::string path;
  std::size_t n;
  double mean;
  int label;
};

Stats describe(const Sample& s) {
  double sum = 0;
  for (const float v : s.x) sum += v;
  return {s.path, s.x.size(), s.x.empty() ? 0.0 : sum / static_cast<double>(s.x.size()), s.label};
}

struct Model {  // state every call needs: bound once, not sent per sample
  std::vector<float> weights;
  float bias;
};

double score(const Model& m, const Sample& s) {
  double sum = m.bias;
  for (std::size_t k = 0; k < s.x.size() && k < m.weights.size(); ++k) sum += m.weights[k] * s.x[k];
  return sum;
}

namespace geo {

class Box {  // not an aggregate: its members are private
 public:
  Box() = default;
  Box(double x0, double x1, double y0, double y1, std::string name)
      : x0_(x0), x1_(x1), y0_(y0), y1_(y1), name_(std::move(name)) {}
  void print() const {
    std::printf("box [%g, %g] x [%g, %g] \"%s\" came back whole\n", x0_, x1_, y0_, y1_, name_.c_str());
  }
  Box grown(double by) const { return {x0_ - by, x1_ + by, y0_ - by, y1_ + by, name_}; }

 private:
  friend struct mproc::serializer<Box>;
  double x0_ = 0, x1_ = 0, y0_ = 0, y1_ = 0;
  std::string name_;
};

}  // namespace geo

// At global scope, naming the type with its namespace.
MPROC_SERIALIZE(geo::Box, x0_, x1_, y0_, y1_, name_);

int main() {
  std::vector<Sample> samples;
  for (int i = 0; i < 3; ++i) {
    const auto f = static_cast<float>(i);
    samples.push_back({"img/" + std::to_string(i) + ".png", {f, f + 1, f + 2, f + 3}, i});
  }
  mp::Pool pool(2);
  for (const Stats& s : pool.map(describe, samples))
    std::printf("%s: %zu values, mean %g, label %d\n", s.path.c_str(), s.n, s.mean, s.label);

  const geo::Box box = pool.apply([](const geo::Box& b) { return b.grown(1); }, geo::Box(1, 1, 2, 2, "roi"));
  box.print();

  const Model model{{0.1f, 0.1f, 0.1f, 0.1f}, 0.4f};
  std::printf("scores with the bound model:");
  for (const double v : pool.map(mp::bind(score, model), samples)) std::printf(" %.2g", v);
  std::printf("\n");
  return 0;
}
