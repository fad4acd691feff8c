// Tests of <mproc/threading.hpp>: the thread Queue, Event, Barrier and Condition of mproc::threading.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <memory>
#include <numeric>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <mproc/threading.hpp>

#include "catch.hpp"
#include "within.hpp"

namespace th = mproc::threading;
using namespace std::chrono_literals;
using mproc_test::MessageContains;
using mproc_test::within_10s;

TEST_CASE("threading::Queue: FIFO order, qsize/empty/full, nowait errors", "[threading][queue]") {
  th::Queue<int> q(3);
  CHECK(q.maxsize() == 3);
  CHECK(q.empty());
  CHECK_FALSE(q.full());
  q.put(1);
  q.put(2);
  q.put_nowait(3);
  CHECK(q.qsize() == 3);
  CHECK(q.full());
  CHECK_THROWS_AS(q.put_nowait(4), mproc::Full);
  CHECK_THROWS_AS(q.put(4, 10ms), mproc::Full);
  CHECK(q.get() == 1);
  CHECK(q.get_nowait() == 2);
  CHECK(q.get(10ms) == 3);
  CHECK(q.empty());
  CHECK_THROWS_AS(q.get_nowait(), mproc::Empty);
  const auto t0 = std::chrono::steady_clock::now();
  CHECK_THROWS_MATCHES(q.get(30ms), mproc::Empty, MessageContains("timed out"));
  CHECK(std::chrono::steady_clock::now() - t0 >= 30ms);

  th::Queue<std::unique_ptr<int>> moves;  // move-only items, unbounded
  moves.put(std::make_unique<int>(7));
  CHECK_FALSE(moves.full());
  CHECK(*moves.get() == 7);
}

TEST_CASE("threading::Queue: bounded producers and consumers, exact counts, task_done/join", "[threading][queue]") {
  within_10s([] {
    th::Queue<int> q(4);
    constexpr int producers = 3, consumers = 3, per_producer = 2000;
    std::vector<std::thread> threads;
    std::vector<long long> sums(consumers, 0);
    std::vector<int> counts(consumers, 0);
    for (int p = 0; p < producers; ++p)
      threads.emplace_back([&q, p] {
        for (int i = 0; i < per_producer; ++i) q.put(p * per_producer + i);
      });
    for (int c = 0; c < consumers; ++c)
      threads.emplace_back([&, c] {
        for (;;) {
          const int x = q.get();
          if (x < 0) {
            q.task_done();
            return;
          }
          sums[static_cast<std::size_t>(c)] += x;
          ++counts[static_cast<std::size_t>(c)];
          q.task_done();
        }
      });
    for (int p = 0; p < producers; ++p) threads[static_cast<std::size_t>(p)].join();
    q.join();  // every item put so far was processed
    CHECK(q.empty());
    for (int c = 0; c < consumers; ++c) q.put(-1);
    for (auto& t : threads)
      if (t.joinable()) t.join();
    constexpr int total = producers * per_producer;
    CHECK(std::accumulate(counts.begin(), counts.end(), 0) == total);
    CHECK(std::accumulate(sums.begin(), sums.end(), 0LL) == static_cast<long long>(total) * (total - 1) / 2);
  });
}

TEST_CASE("threading::Queue: a blocked put resumes when a consumer makes room", "[threading][queue]") {
  within_10s([] {
    th::Queue<int> q(1);
    q.put(1);
    auto producer = std::async(std::launch::async, [&] { q.put(2); });
    CHECK(producer.wait_for(20ms) == std::future_status::timeout);
    CHECK(q.get() == 1);
    REQUIRE(producer.wait_for(5s) == std::future_status::ready);
    producer.get();
    CHECK(q.get() == 2);
  });
}

TEST_CASE("threading::Queue: task_done too often throws", "[threading][queue]") {
  th::Queue<int> q;
  q.put(1);
  (void)q.get();
  q.task_done();
  CHECK_THROWS_MATCHES(q.task_done(), mproc::ProcessError, MessageContains("task_done"));
}

TEST_CASE("threading::Queue: close wakes blocked callers, get drains then throws", "[threading][queue]") {
  within_10s([] {
    th::Queue<int> q(2);
    th::Queue<int> e;
    auto getter = std::async(std::launch::async, [&] { return e.get(); });
    CHECK(getter.wait_for(20ms) == std::future_status::timeout);
    e.close();
    REQUIRE(getter.wait_for(5s) == std::future_status::ready);
    CHECK_THROWS_AS(getter.get(), th::ShutDown);

    q.put(1);
    q.put(2);
    auto putter = std::async(std::launch::async, [&] { q.put(3); });
    CHECK(putter.wait_for(20ms) == std::future_status::timeout);
    q.close();
    REQUIRE(putter.wait_for(5s) == std::future_status::ready);
    CHECK_THROWS_AS(putter.get(), th::ShutDown);
    CHECK(q.closed());
    CHECK_THROWS_AS(q.put(9), th::ShutDown);
    CHECK_THROWS_AS(q.put_nowait(9), mproc::ProcessError);
    CHECK(q.get() == 1);
    CHECK(q.get_nowait() == 2);
    CHECK_THROWS_MATCHES(q.get(), th::ShutDown, MessageContains("shut down and empty"));
    CHECK_THROWS_AS(q.get(1s), th::ShutDown);
  });
}

TEST_CASE("threading::Queue: try_get, range-for until shut down, shutdown(immediate) drops and releases join",
          "[threading][queue]") {
  within_10s([] {
    th::Queue<std::string> q;
    CHECK_FALSE(q.try_get().has_value());
    q.put("a");
    CHECK(q.try_get() == std::optional<std::string>("a"));

    auto producer = std::async(std::launch::async, [&] {
      for (int i = 0; i < 100; ++i) q.put(std::to_string(i));
      q.shutdown();
    });
    std::vector<std::string> got;
    for (std::string& s : q) got.push_back(std::move(s));  // ends when shut down and drained
    producer.get();
    REQUIRE(got.size() == 100);
    for (int i = 0; i < 100; ++i) CHECK(got[static_cast<std::size_t>(i)] == std::to_string(i));
    CHECK_THROWS_AS(q.try_get(), mproc::ShutDown);
    CHECK_THROWS_MATCHES(q.put("late"), mproc::ShutDown, MessageContains("shut down"));

    th::Queue<int> j;
    for (int i = 0; i < 5; ++i) j.put(i);
    (void)j.get();  // taken, not yet done
    auto joiner = std::async(std::launch::async, [&] { j.join(); });
    j.shutdown(true);  // drops the 4 queued; the taken one is still unfinished
    CHECK(j.qsize() == 0);
    CHECK_THROWS_AS(j.get_nowait(), th::ShutDown);
    CHECK(joiner.wait_for(50ms) == std::future_status::timeout);
    j.task_done();
    REQUIRE(joiner.wait_for(5s) == std::future_status::ready);
    joiner.get();
  });
}

TEST_CASE("threading::Event: set/clear/is_set, wait with and without timeout", "[threading][event]") {
  within_10s([] {
    th::Event ev;
    CHECK_FALSE(ev.is_set());
    const auto t0 = std::chrono::steady_clock::now();
    CHECK_FALSE(ev.wait(30ms));
    CHECK(std::chrono::steady_clock::now() - t0 >= 30ms);
    std::atomic<int> woken{0};
    std::vector<std::thread> waiters;
    for (int i = 0; i < 4; ++i)
      waiters.emplace_back([&] {
        if (ev.wait()) woken.fetch_add(1);
      });
    ev.set();
    for (auto& t : waiters) t.join();
    CHECK(woken.load() == 4);
    CHECK(ev.is_set());
    CHECK(ev.wait(0ms));
    ev.clear();
    CHECK_FALSE(ev.is_set());
    CHECK_FALSE(ev.wait(1ms));
  });
}

TEST_CASE("threading::Barrier: indices are distinct, several rounds", "[threading][barrier]") {
  within_10s([] {
    constexpr std::size_t parties = 4;
    std::atomic<int> actions{0};
    th::Barrier b(parties, [&] { actions.fetch_add(1); });
    CHECK(b.parties() == parties);
    std::mutex m;
    std::vector<std::multiset<std::size_t>> rounds(3);
    std::vector<std::thread> threads;
    for (std::size_t t = 0; t < parties; ++t)
      threads.emplace_back([&] {
        for (auto& round : rounds) {
          const std::size_t i = b.wait(5s);
          std::lock_guard lock(m);
          round.insert(i);
        }
      });
    for (auto& t : threads) t.join();
    for (const auto& round : rounds) CHECK(round == std::multiset<std::size_t>{0, 1, 2, 3});
    CHECK(actions.load() == 3);
    CHECK_FALSE(b.broken());
    CHECK(b.n_waiting() == 0);
  });
}

TEST_CASE("threading::Barrier: 0 parties is a ValueError", "[threading][barrier]") {
  CHECK_THROWS_MATCHES(th::Barrier(0), mproc::ValueError, MessageContains("parties must be at least 1, not 0"));
}

TEST_CASE("threading::Barrier: a timeout breaks it for every waiter, reset repairs it", "[threading][barrier]") {
  within_10s([] {
    th::Barrier b(3);
    auto other = std::async(std::launch::async, [&] { return b.wait(); });  // waits without timeout
    // The waiter without timeout is counted before we time out.
    for (int i = 0; i < 5000 && b.n_waiting() != 1; ++i) std::this_thread::sleep_for(1ms);
    REQUIRE(b.n_waiting() == 1);
    CHECK_THROWS_MATCHES(b.wait(20ms), mproc::BrokenBarrierError, MessageContains("timed out"));
    REQUIRE(other.wait_for(5s) == std::future_status::ready);
    CHECK_THROWS_AS(other.get(), mproc::BrokenBarrierError);
    CHECK(b.broken());
    CHECK_THROWS_AS(b.wait(), mproc::BrokenBarrierError);  // later callers too
    b.reset();
    CHECK_FALSE(b.broken());
    auto a1 = std::async(std::launch::async, [&] { return b.wait(5s); });
    auto a2 = std::async(std::launch::async, [&] { return b.wait(5s); });
    const std::size_t mine = b.wait(5s);
    std::multiset<std::size_t> got{mine, a1.get(), a2.get()};
    CHECK(got == std::multiset<std::size_t>{0, 1, 2});
  });
}

TEST_CASE("threading::Barrier: abort and reset wake waiters with BrokenBarrierError", "[threading][barrier]") {
  within_10s([] {
    th::Barrier b(2);
    auto w1 = std::async(std::launch::async, [&] { return b.wait(); });
    for (int i = 0; i < 5000 && b.n_waiting() != 1; ++i) std::this_thread::sleep_for(1ms);
    b.abort();
    REQUIRE(w1.wait_for(5s) == std::future_status::ready);
    CHECK_THROWS_AS(w1.get(), mproc::BrokenBarrierError);
    CHECK(b.broken());
    b.reset();
    auto w2 = std::async(std::launch::async, [&] { return b.wait(); });
    for (int i = 0; i < 5000 && b.n_waiting() != 1; ++i) std::this_thread::sleep_for(1ms);
    b.reset();  // while a thread waits: it gets BrokenBarrierError, the barrier is usable again
    REQUIRE(w2.wait_for(5s) == std::future_status::ready);
    CHECK_THROWS_AS(w2.get(), mproc::BrokenBarrierError);
    CHECK_FALSE(b.broken());
    auto w3 = std::async(std::launch::async, [&] { return b.wait(5s); });
    const std::size_t mine = b.wait(5s);
    CHECK(mine + w3.get() == 1);
  });
}

TEST_CASE("threading::Barrier: a throwing action breaks the barrier", "[threading][barrier]") {
  within_10s([] {
    th::Barrier b(2, [] { throw std::runtime_error("action failed"); });
    auto w = std::async(std::launch::async, [&] { return b.wait(5s); });
    std::string first_error;
    try {
      b.wait(5s);
    } catch (const std::runtime_error& e) {
      first_error = e.what();
    }
    std::string second_error;
    try {
      w.get();
    } catch (const std::runtime_error& e) {
      second_error = e.what();
    }
    // One thread ran the action and sees its exception; the other is released broken.
    std::multiset<std::string> got{first_error, second_error};
    CHECK(got.count("action failed") == 1);
    CHECK(got.count("mproc: barrier is broken") == 1);
    CHECK(b.broken());
  });
}
