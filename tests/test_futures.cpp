// Tests of <mproc/futures.hpp>: mp::wait (FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED, timeouts) and
// mp::as_completed (completion order, timeout) over ThreadPool and Pool results.
#include <algorithm>
#include <chrono>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <mproc/futures.hpp>
#include <mproc/pool.hpp>
#include <mproc/thread_pool.hpp>
#include <mproc/threading.hpp>

#include "catch.hpp"
#include "within.hpp"

namespace mp = mproc;
using namespace std::chrono_literals;
using mproc_test::MessageContains;
using mproc_test::within_10s;

namespace {

// Three tasks, each blocked until its gate opens (or failing when told).
// (Members in this order: the pool is destroyed, joining its tasks, before
// the gates they wait on.)
struct Gated {
  std::vector<std::unique_ptr<mp::threading::Event>> gates;
  mp::ThreadPool pool{3};
  std::vector<mp::AsyncResult<int>> results;

  explicit Gated(int n, int failing = -1) {
    for (int i = 0; i < n; ++i) {
      gates.push_back(std::make_unique<mp::threading::Event>());
      mp::threading::Event* gate = gates.back().get();
      results.push_back(pool.apply_async([gate, i, failing] {
        if (!gate->wait(30s)) throw std::runtime_error("gate never opened");
        if (i == failing) throw std::invalid_argument("task " + std::to_string(i) + " failed");
        return i * 10;
      }));
    }
  }
  ~Gated() {
    for (auto& g : gates) g->set();
  }
};

}  // namespace

TEST_CASE("as_completed yields results in the order they complete") {
  within_10s([] {
    Gated g(3);
    auto order = mp::as_completed(g.results, 20s);
    g.gates[2]->set();
    auto it = order.begin();  // blocks for the first to complete
    REQUIRE(&*it == &g.results[2]);
    CHECK(it->get() == 20);
    g.gates[0]->set();
    ++it;
    REQUIRE(&*it == &g.results[0]);
    g.gates[1]->set();
    ++it;
    REQUIRE(&*it == &g.results[1]);
    CHECK(it->get() == 10);
    ++it;
    CHECK(it == order.end());

    std::vector<int> all;  // already complete: every one, at once
    for (const auto& r : mp::as_completed(g.results)) all.push_back(r.get());
    std::sort(all.begin(), all.end());
    CHECK(all == std::vector<int>{0, 10, 20});
    CHECK(mp::as_completed(std::vector<mp::AsyncResult<int>>{}).begin() == std::default_sentinel);
  });
}

TEST_CASE("as_completed throws TimeoutError naming how many were not ready") {
  within_10s([] {
    Gated g(3);
    g.gates[1]->set();
    auto order = mp::as_completed(g.results, 100ms);
    auto it = order.begin();
    CHECK(&*it == &g.results[1]);
    CHECK_THROWS_MATCHES(++it, mp::TimeoutError,
                         MessageContains("mproc::as_completed: 2 of 3 results were not ready in time"));
  });
}

TEST_CASE("wait: FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED and timeouts") {
  within_10s([] {
    Gated g(3, /*failing=*/1);
    auto none = mp::wait(g.results, 50ms, mp::FIRST_COMPLETED);
    CHECK(none.done.empty());
    CHECK(none.not_done == std::vector<std::size_t>{0, 1, 2});

    g.gates[2]->set();
    auto first = mp::wait(g.results, 20s, mp::FIRST_COMPLETED);
    CHECK(first.done == std::vector<std::size_t>{2});
    CHECK(first.not_done == std::vector<std::size_t>{0, 1});

    g.gates[1]->set();  // fails
    auto failed = mp::wait(g.results, 20s, mp::FIRST_EXCEPTION);
    CHECK(failed.done == std::vector<std::size_t>{1, 2});
    CHECK(failed.not_done == std::vector<std::size_t>{0});
    CHECK_THROWS_MATCHES(g.results[1].get(), std::invalid_argument, MessageContains("task 1 failed"));

    auto timed_out = mp::wait(g.results, 50ms);  // ALL_COMPLETED: 0 is still blocked
    CHECK(timed_out.not_done == std::vector<std::size_t>{0});
    g.gates[0]->set();
    auto all = mp::wait(g.results);
    CHECK(all.done == std::vector<std::size_t>{0, 1, 2});
    CHECK(all.not_done.empty());
  });
}

TEST_CASE("wait and as_completed over process-pool results, and an empty handle") {
  within_10s([] {
    mp::Pool pool(2);
    std::vector<mp::AsyncResult<int>> rs;
    for (int i = 0; i < 8; ++i) rs.push_back(pool.apply_async(+[](int x) { return x * x; }, i));
    std::multiset<int> seen;
    for (const auto& r : mp::as_completed(rs, 20s)) {
      CHECK(r.ready());
      seen.insert(r.get());
    }
    CHECK(seen == std::multiset<int>{0, 1, 4, 9, 16, 25, 36, 49});
    auto bad = pool.apply_async(+[](int x) -> int { throw std::out_of_range("no " + std::to_string(x)); }, 3);
    auto w = mp::wait(std::vector<mp::AsyncResult<int>>{bad, rs[0]}, 20s, mp::FIRST_EXCEPTION);
    CHECK(w.done.size() >= 1);
    CHECK(std::find(w.done.begin(), w.done.end(), 0) != w.done.end());

    const std::vector<mp::AsyncResult<int>> empty_handle(1);
    CHECK_THROWS_MATCHES(mp::wait(empty_handle), mp::ProcessError, MessageContains("empty handle"));
  });
}
