// Tests of <mproc/async_result.hpp>: AsyncResult's get/wait/ready/successful, timeouts and errors, and
// the callbacks of apply_async / map_async and cancel() on Pool and ThreadPool.
#include <atomic>
#include <chrono>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <mproc/async_result.hpp>
#include <mproc/pool.hpp>
#include <mproc/thread_pool.hpp>

#include "catch.hpp"

namespace mp = mproc;
using namespace std::chrono_literals;

template <class R>
static std::pair<mp::AsyncResult<R>, std::shared_ptr<mp::detail::ResultState<R>>> make() {
  auto state = std::make_shared<mp::detail::ResultState<R>>();
  return {mp::AsyncResult<R>(state), state};
}

TEST_CASE("AsyncResult delivers a value set from another thread") {
  auto [result, state] = make<std::string>();
  CHECK_FALSE(result.ready());
  std::thread producer([s = state] { s->set_value("done"); });
  CHECK(result.get() == "done");
  producer.join();
  CHECK(result.ready());
  CHECK(result.successful());
  CHECK(result.get() == "done");  // repeatable, like Python
}

TEST_CASE("AsyncResult rethrows the task's exception with its own type") {
  auto [result, state] = make<int>();
  state->set_exception(std::make_exception_ptr(std::out_of_range("index 12")));
  CHECK(result.ready());
  CHECK_FALSE(result.successful());
  REQUIRE_THROWS_MATCHES(result.get(), std::out_of_range, mproc_test::MessageContains("index 12"));
}

TEST_CASE("AsyncResult timeouts") {
  auto [result, state] = make<int>();
  CHECK_FALSE(result.wait(10ms));
  REQUIRE_THROWS_AS(result.get(5ms), mp::TimeoutError);
  REQUIRE_THROWS_MATCHES(result.successful(), mp::ProcessError, mproc_test::MessageContains("not ready"));
  state->set_value(7);
  CHECK(result.wait(0ms));
  CHECK(result.get(0ms) == 7);
  CHECK(result.get(std::chrono::hours::max()) == 7);  // huge timeouts saturate
}

TEST_CASE("the first completion wins") {
  auto [result, state] = make<int>();
  CHECK(state->set_value(1));
  CHECK_FALSE(state->set_value(2));
  CHECK_FALSE(state->set_exception(std::make_exception_ptr(std::runtime_error("late"))));
  CHECK(result.get() == 1);
}

TEST_CASE("void and move-only results") {
  auto [done, done_state] = make<void>();
  done_state->set_value();
  done.get();
  CHECK(done.successful());

  auto [owned, owned_state] = make<std::unique_ptr<int>>();
  owned_state->set_value(std::make_unique<int>(5));
  CHECK(*owned.get() == 5);
  REQUIRE_THROWS_MATCHES(owned.get(), mp::ProcessError, mproc_test::MessageContains("already taken"));
}

TEST_CASE("an empty AsyncResult says so") {
  mp::AsyncResult<int> empty;
  CHECK_FALSE(empty.valid());
  REQUIRE_THROWS_MATCHES(empty.get(), mp::ProcessError, mproc_test::MessageContains("empty handle"));
  REQUIRE_THROWS_AS(empty.ready(), mp::ProcessError);
}

namespace {
// Runs the queued job when asked, as a thread pool's worker would.
struct InlineHelper final : mp::detail::WaitHelper {
  std::function<void()> job;
  int calls = 0;
  bool help_while_waiting() override {
    ++calls;
    if (!job) return false;
    auto j = std::move(job);
    job = nullptr;
    j();
    return true;
  }
};
}  // namespace

TEST_CASE("a waiting executor thread helps instead of blocking") {
  InlineHelper helper;
  auto state = std::make_shared<mp::detail::ResultState<int>>(&helper);
  mp::AsyncResult<int> result(state);
  helper.job = [state] { state->set_value(42); };
  CHECK(result.get(1s) == 42);
  CHECK(helper.calls >= 1);
}

// ------------------------------------------------------------ callbacks (both pools)

namespace {

int square_or_throw(int x) {
  if (x < 0) throw std::invalid_argument("negative: " + std::to_string(x));
  return x * x;
}

// What the callbacks of one pool saw.
struct Seen {
  std::mutex m;
  std::vector<int> values;
  std::vector<std::string> errors;
  std::set<std::thread::id> threads;
  std::atomic<int> inside{0};
  std::atomic<bool> overlapped{false};

  void enter() {
    if (inside.fetch_add(1) != 0) overlapped = true;
    std::lock_guard g(m);
    threads.insert(std::this_thread::get_id());
  }
  void leave() { inside.fetch_sub(1); }
};

std::string what_of(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::invalid_argument& x) {
    return std::string("invalid_argument: ") + x.what();
  } catch (const std::exception& x) {
    return std::string("other: ") + x.what();
  }
}

template <class Pool>
void check_callbacks(Pool& pool) {
  Seen seen;
  auto on_value = [&seen](const int& v) {
    seen.enter();
    std::this_thread::sleep_for(1ms);  // (widens the window in which a second callback could overlap)
    {
      std::lock_guard g(seen.m);
      seen.values.push_back(v);
    }
    seen.leave();
  };
  auto on_error = [&seen](std::exception_ptr e) {
    seen.enter();
    {
      std::lock_guard g(seen.m);
      seen.errors.push_back(what_of(e));
    }
    seen.leave();
  };

  // The callback has run before get() returns, as in Python.
  auto one = pool.apply_async(mp::callbacks(on_value, on_error), square_or_throw, 7);
  CHECK(one.get(30s) == 49);
  {
    std::lock_guard g(seen.m);
    REQUIRE(seen.values == std::vector<int>{49});
  }
  auto bad = pool.apply_async(mp::callbacks(on_value, on_error), square_or_throw, -2);
  CHECK_THROWS_AS(bad.get(30s), std::invalid_argument);
  {
    std::lock_guard g(seen.m);
    REQUIRE(seen.errors.size() == 1);
    CHECK(seen.errors[0].find("invalid_argument: ") == 0);
    CHECK(seen.errors[0].find("negative: -2") != std::string::npos);
  }

  // map_async: the whole vector once; an error callback alone.
  std::vector<int> mapped;
  auto m = pool.map_async(square_or_throw, std::vector<int>{1, 2, 3}, 0,
                          mp::callbacks([&mapped](const std::vector<int>& v) { mapped = v; }));
  CHECK(m.get(30s) == std::vector<int>{1, 4, 9});
  CHECK(mapped == std::vector<int>{1, 4, 9});
  std::string map_error;
  auto mf = pool.map_async(square_or_throw, std::vector<int>{1, -5, 3}, 1,
                           mp::callbacks(nullptr, [&map_error](std::exception_ptr e) { map_error = what_of(e); }));
  CHECK_THROWS_AS(mf.get(30s), std::invalid_argument);
  CHECK(map_error.find("negative: -5") != std::string::npos);

  // Many at once: one at a time, all on one thread (not this one), and
  // join() waits for every callback.
  std::vector<mp::AsyncResult<int>> results;
  for (int i = 0; i < 40; ++i)
    results.push_back(pool.apply_async(mp::callbacks(on_value, on_error), square_or_throw, i % 10 == 9 ? -i : i));
  pool.close();
  pool.join();
  std::lock_guard g(seen.m);
  CHECK(seen.values.size() == 1 + 36);
  CHECK(seen.errors.size() == 1 + 4);
  CHECK_FALSE(seen.overlapped.load());
  CHECK(seen.threads.size() == 1);
  CHECK(seen.threads.count(std::this_thread::get_id()) == 0);
  for (auto& r : results) CHECK(r.ready());
}

}  // namespace

TEST_CASE("callbacks: Pool runs them on one thread, one at a time, before the result is ready, join waits") {
  mp::Pool pool(2);
  check_callbacks(pool);
}

TEST_CASE("callbacks: ThreadPool runs them on one thread, one at a time, before the result is ready, join waits") {
  mp::ThreadPool pool(2);
  check_callbacks(pool);
}

TEST_CASE("callbacks: one that throws is reported and dropped, the result and the pool are unaffected") {
  mp::ThreadPool pool(2);
  auto r = pool.apply_async(
      mp::callbacks([](const int&) { throw std::runtime_error("callback failed"); }), [](int x) { return x + 1; }, 1);
  CHECK(r.get(30s) == 2);
  CHECK(r.successful());
  int later = 0;
  auto r2 = pool.apply_async(mp::callbacks([&later](const int& v) { later = v; }), [](int x) { return x * 3; }, 5);
  CHECK(r2.get(30s) == 15);
  CHECK(later == 15);
}

TEST_CASE("callbacks: a pool destroyed with pending results still runs their callbacks") {
  std::atomic<int> ran{0};
  {
    mp::ThreadPool pool(1);
    for (int i = 0; i < 10; ++i)
      (void)pool.apply_async(mp::callbacks([&ran]() { ran.fetch_add(1); }), [] { std::this_thread::sleep_for(1ms); });
  }
  CHECK(ran.load() == 10);
}

// ------------------------------------------------------------ cancel

TEST_CASE("cancel: a ThreadPool task not yet started is dropped, a running one is not") {
  mp::ThreadPool pool(1);
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  std::atomic<int> ran{0};
  auto running = pool.apply_async([gate] {
    gate.wait();
    return 1;
  });
  auto queued = pool.apply_async([&ran] {
    ran.fetch_add(1);
    return 2;
  });
  auto kept = pool.apply_async([&ran] {
    ran.fetch_add(10);
    return 3;
  });
  CHECK(queued.cancel());
  CHECK(queued.cancel());  // again: still cancelled
  CHECK(queued.cancelled());
  CHECK(queued.ready());
  CHECK_THROWS_MATCHES(queued.get(), mp::CancelledError, mproc_test::MessageContains("cancelled before it started"));
  release.set_value();
  CHECK(running.get(30s) == 1);
  CHECK_FALSE(running.cancel());  // finished
  CHECK(kept.get(30s) == 3);
  pool.close();
  pool.join();
  CHECK(ran.load() == 10);  // the cancelled task never ran
  CHECK_FALSE(running.cancelled());
}

namespace {
int slow_square(int x) {
  if (x < 0) ::usleep(500'000);
  return x * x;
}
}  // namespace

TEST_CASE("cancel: a Pool task still queued is never sent, map_async cannot be cancelled") {
  mp::Pool pool(1);
  auto first = pool.apply_async(slow_square, -3);  // occupies the worker for 0.5 s
  std::vector<mp::AsyncResult<int>> rest;
  for (int i = 0; i < 80; ++i) rest.push_back(pool.apply_async(slow_square, i));  // at most 64 are sent ahead
  CHECK(rest.back().cancel());
  CHECK_THROWS_AS(rest.back().get(), mp::CancelledError);
  CHECK(first.get(30s) == 9);
  for (int i = 0; i < 79; ++i) CHECK(rest[static_cast<std::size_t>(i)].get(30s) == i * i);
  CHECK_FALSE(first.cancel());
  auto whole = pool.map_async(slow_square, std::vector<int>{1, 2});
  CHECK_FALSE(whole.cancel());
  CHECK(whole.get(30s) == std::vector<int>{1, 4});
}
