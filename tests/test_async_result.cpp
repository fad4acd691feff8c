// Tests of <mproc/async_result.hpp>: AsyncResult's get/wait/ready/successful, timeouts and errors.
#include <chrono>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include <mproc/async_result.hpp>

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
