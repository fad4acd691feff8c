// An AI-flavoured preprocessing pipeline: a batch of synthetic RGB images
// lives in shared memory; a producer hands out image indices through a work
// queue, worker processes normalise each image in place of a shared output
// tensor (per-channel (x/255 - mean) / std, as torchvision's Normalize does),
// and report per-image statistics through a result queue. No image is copied
// between processes: only indices and three numbers per image cross.
//
//   Python                                         C++
//   images = Array('B', n * 3 * h * w)             mp::Array<std::uint8_t> images(n * kPixels);
//   tasks, results = Queue(), Queue()              mp::Queue<int> tasks; mp::Queue<Stat> results;
//   ps = [Process(target=worker, args=...) ...]    std::vector<mp::Process> ps; ...
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <tuple>
#include <vector>

#include <mproc/process.hpp>
#include <mproc/queue.hpp>
#include <mproc/sharedctypes.hpp>

namespace mp = mproc;
using namespace std::chrono_literals;

constexpr int kImages = 64;
constexpr int kWorkers = 4;
constexpr std::size_t kSide = 96;
constexpr std::size_t kPlane = kSide * kSide;
constexpr std::size_t kPixels = 3 * kPlane;  // CHW layout
constexpr std::array<float, 3> kMean{0.485f, 0.456f, 0.406f};
constexpr std::array<float, 3> kStd{0.229f, 0.224f, 0.225f};

// (image index, mean, standard deviation of the normalised image)
using Stat = std::tuple<int, double, double>;

// Normalises image `i` from `in` into `out`; returns its statistics.
Stat normalise(const mp::Array<std::uint8_t>& in, const mp::Array<float>& out, int i) {
  const std::size_t base = static_cast<std::size_t>(i) * kPixels;
  double sum = 0, sum_sq = 0;
  for (std::size_t c = 0; c < 3; ++c) {
    for (std::size_t p = 0; p < kPlane; ++p) {
      const std::size_t k = base + c * kPlane + p;
      const float x = (static_cast<float>(in[k]) / 255.0f - kMean[c]) / kStd[c];
      out[k] = x;
      sum += x;
      sum_sq += static_cast<double>(x) * x;
    }
  }
  const double n = static_cast<double>(kPixels);
  const double mean = sum / n;
  return {i, mean, std::sqrt(sum_sq / n - mean * mean)};
}

// A worker process: takes indices until it gets -1.
void worker(const mp::Array<std::uint8_t>& in, const mp::Array<float>& out, mp::Queue<int>& tasks,
            mp::Queue<Stat>& results) {
  for (int i = tasks.get(10s); i >= 0; i = tasks.get(10s)) results.put(normalise(in, out, i));
}

// expect-output: normalised 64 images \(3x96x96\) with 4 worker processes
// expect-output: image  0: mean -?[0-9]\.[0-9]+ std [0-9]\.[0-9]+
// expect-output: every image matches the serial result
int main() {
  // The producer: deterministic synthetic images (a gradient plus noise).
  mp::Array<std::uint8_t> images(kImages * kPixels);
  std::uint32_t seed = 12345;
  for (std::size_t k = 0; k < images.size(); ++k) {
    seed = seed * 1664525u + 1013904223u;
    images[k] = static_cast<std::uint8_t>((k % kSide) + (seed >> 26));
  }
  mp::Array<float> tensor(kImages * kPixels);

  mp::Queue<int> tasks;
  mp::Queue<Stat> results;
  std::vector<mp::Process> workers;
  for (int w = 0; w < kWorkers; ++w) {
    workers.emplace_back(worker, images, tensor, tasks, results);
    workers.back().start();
  }
  for (int i = 0; i < kImages; ++i) tasks.put(i);
  for (int w = 0; w < kWorkers; ++w) tasks.put(-1);

  std::vector<Stat> stats(kImages);
  for (int n = 0; n < kImages; ++n) {
    Stat s = results.get(30s);  // throws mp::Empty rather than hang if a worker died
    stats[static_cast<std::size_t>(std::get<0>(s))] = s;
  }
  for (auto& p : workers) {
    p.join();
    if (p.exitcode() != 0) {
      std::printf("%s failed with exit code %d\n", p.name().c_str(), p.exitcode().value_or(-1));
      return 1;
    }
  }

  std::printf("normalised %d images (3x%zux%zu) with %d worker processes\n", kImages, kSide, kSide, kWorkers);
  for (int i = 0; i < 3; ++i)
    std::printf("image %2d: mean %.4f std %.4f\n", i, std::get<1>(stats[static_cast<std::size_t>(i)]),
                std::get<2>(stats[static_cast<std::size_t>(i)]));

  // Check against a serial pass in this process.
  mp::Array<float> serial(kImages * kPixels);
  for (int i = 0; i < kImages; ++i) {
    if (normalise(images, serial, i) != stats[static_cast<std::size_t>(i)]) {
      std::printf("image %d: statistics differ from the serial result\n", i);
      return 1;
    }
  }
  for (std::size_t k = 0; k < serial.size(); ++k) {
    if (serial[k] != tensor[k]) {
      std::printf("element %zu differs from the serial result\n", k);
      return 1;
    }
  }
  std::printf("every image matches the serial result\n");
  return 0;
}
