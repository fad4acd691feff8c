// Test support: run a scenario that could deadlock, and fail loudly instead
// of hanging when it does.
#pragma once

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <utility>

namespace mproc_test {

// Runs `f` on its own thread; aborts the test program with a message if it
// does not finish within 10 s (a stuck thread can be neither joined nor
// abandoned). Rethrows what `f` throws.
template <class F>
void within_10s(F f) {
  auto done = std::async(std::launch::async, std::move(f));
  if (done.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    std::fprintf(stderr, "FAILED: the scenario did not finish within 10 s (deadlock?)\n");
    std::abort();
  }
  done.get();
}

}  // namespace mproc_test
