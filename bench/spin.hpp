// The scaling study's task (bench_scaling.cpp, and bench_mpi.cpp's scaling
// benchmark): a dependent floating-point chain whose length sets the task's
// duration, and its calibration on this machine.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdlib>

#include <benchmark/benchmark.h>

namespace mproc_bench {

// `iters` steps of the chain.
inline double spin(std::int64_t iters) {
  double x = 1.0;
  for (std::int64_t k = 0; k < iters; ++k) x = x * 0.999999 + 1e-7;
  return x;
}

// Iterations of spin() per µs on this machine, measured once in the calling
// process, or MPROC_BENCH_SPIN_ITERS_PER_US (bench/scaling.py passes
// bench_scaling's to bench_mpi, so that tasks are as long in both programs).
inline std::int64_t spin_iters_per_us() {
  static const std::int64_t n = [] {
    if (const char* env = std::getenv("MPROC_BENCH_SPIN_ITERS_PER_US"))
      if (const long given = std::strtol(env, nullptr, 10); given > 0) return std::int64_t{given};
    const auto t0 = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(spin(20'000'000));
    const auto us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    return static_cast<std::int64_t>(20'000'000 / us);
  }();
  return n;
}

}  // namespace mproc_bench
