// The pools' callback thread (detail/pool/callback_thread.hpp): jobs run one
// at a time in the order they were posted, also when thousands queue up
// behind a slow one and while its queue drops what has run; a job that
// throws is reported and the next ones still run; drain() waits for every
// job posted so far, and returns at once when called from a job.
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <mproc/detail/pool/callback_thread.hpp>

#include "catch.hpp"
#include "child.hpp"
#include "within.hpp"

namespace d = mproc::detail;
using mproc_test::within_10s;
using namespace std::chrono_literals;

TEST_CASE("CallbackThread runs thousands of queued jobs in posting order, including jobs posted by jobs",
          "[callback_thread]") {
  within_10s([] {
    d::CallbackThread thread;
    std::promise<void> release;
    std::shared_future<void> released = release.get_future().share();
    std::vector<int> order;  // written by the callback thread only, read after drain()
    std::atomic<bool> blocked_ok{false};
    thread.post([released, &blocked_ok] { blocked_ok = released.wait_for(5s) == std::future_status::ready; });
    constexpr int n = 5000;
    for (int i = 0; i < n; ++i) {
      thread.post([&order, &thread, i] {
        order.push_back(i);
        if (i % 1000 == 0) thread.post([&order, i] { order.push_back(n + i); });  // queued behind the rest
      });
    }
    release.set_value();
    thread.drain();
    CHECK(blocked_ok.load());
    REQUIRE(order.size() == static_cast<std::size_t>(n + n / 1000));
    for (int i = 0; i < n; ++i) CHECK(order[static_cast<std::size_t>(i)] == i);
    for (int k = 0; k < n / 1000; ++k) CHECK(order[static_cast<std::size_t>(n + k)] == n + 1000 * k);

    // After draining, the thread keeps taking jobs.
    std::atomic<int> later{0};
    for (int i = 0; i < 300; ++i) thread.post([&later] { later.fetch_add(1); });
    thread.drain();
    CHECK(later.load() == 300);
  });
}

TEST_CASE("CallbackThread: a job that throws is dropped and the next ones run, and drain() from a job returns",
          "[callback_thread]") {
  within_10s([] {
    d::CallbackThread thread;
    std::vector<int> order;
    thread.post([] { throw std::runtime_error("callback failed on purpose"); });
    thread.post([] { throw 7; });
    thread.post([&] {
      thread.drain();  // would wait for itself
      order.push_back(1);
    });
    thread.post([&] { order.push_back(2); });
    thread.drain();
    CHECK(order == std::vector<int>{1, 2});
    thread.stop();
    thread.stop();  // idempotent
  });
}

TEST_CASE(
    "CallbackThread stopped by its own job (a pool whose last owner a callback dropped): the program "
    "terminates, saying why",
    "[callback_thread]") {
  // (It cannot wait for itself, nor leave its thread running on a destroyed
  // object: it used to end in a bare std::terminate, the thread left joinable.)
  const auto child = mproc_test::run_in_child_to_abort([] {
    auto owner = std::make_unique<d::CallbackThread>();
    std::promise<void> posted;
    std::shared_future<void> ready = posted.get_future().share();
    owner->post([&owner, ready] {
      (void)ready.wait_for(5s);
      owner.reset();  // ~CallbackThread on its own thread
    });
    posted.set_value();
    std::this_thread::sleep_for(10s);
    return 0;
  });
  CHECK_FALSE(child.result.timed_out);
  CHECK(child.result.exitcode == -SIGABRT);
  CHECK_THAT(child.stderr_text, Catch::Matchers::Contains("mproc: a pool was destroyed by one of its own callbacks"));
}
