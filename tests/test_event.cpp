// Process-shared Event (<mproc/event.hpp>): set, clear, timed wait, and
// waking waiters in other processes.
#include <chrono>
#include <thread>
#include <vector>

#include <mproc/event.hpp>
#include <mproc/semaphore.hpp>

#include "catch.hpp"
#include "shm_children.hpp"
#include "sync_helpers.hpp"

namespace mp = mproc;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using mproc_test::MessageContains;
using sync_test::kSlack;
using sync_test::time_of;

// ------------------------------------------------------------------ Event

TEST_CASE("Event: set, clear, is_set, timed wait") {
  mp::Event event;
  CHECK_FALSE(event.is_set());
  bool result = true;
  const auto took = time_of([&] { result = event.wait(100ms); });
  CHECK_FALSE(result);
  CHECK(took >= 100ms);
  CHECK(took < 100ms + kSlack);
  event.set();
  CHECK(event.is_set());
  CHECK(event.wait());
  CHECK(event.wait(0ms));
  event.set();  // idempotent
  event.clear();
  CHECK_FALSE(event.is_set());
  CHECK_FALSE(event.wait(0ms));
}

TEST_CASE("Event: set wakes every waiting process") {
  mp::Event event;
  mp::Semaphore started(0);
  std::vector<pid_t> pids;
  for (int p = 0; p < 4; ++p)
    pids.push_back(shm_test::spawn([&] {
      started.release();
      return event.wait(10s) ? 0 : 3;
    }));
  for (int p = 0; p < 4; ++p) REQUIRE(started.acquire(10s));
  event.set();
  for (pid_t pid : pids) CHECK(shm_test::join(pid).exitcode == 0);
}

TEST_CASE("Event: a waiter sees a set() even if clear() follows at once") {
  mp::Event event;
  mp::Semaphore started(0);
  bool result = false;
  std::thread waiter([&] {
    started.release();
    result = event.wait(10s);
  });
  REQUIRE(started.acquire(10s));
  std::this_thread::sleep_for(20ms);  // let the waiter reach its sleep (the test passes either way)
  event.set();
  event.clear();
  waiter.join();
  CHECK(result);
  CHECK_FALSE(event.is_set());
}
