// Process-shared Barrier (<mproc/barrier.hpp>): rounds, timeouts, abort
// and reset, use between threads, and parties that died (#10).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <signal.h>

#include <mproc/barrier.hpp>
#include <mproc/sharedctypes.hpp>

#include "catch.hpp"
#include "shm_children.hpp"
#include "sync_helpers.hpp"

namespace mp = mproc;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using mproc_test::MessageContains;
using sync_test::eventually;
using sync_test::kill_dead;
using sync_test::kSlack;
using sync_test::time_of;

// ---------------------------------------------------------------- Barrier

TEST_CASE("Barrier: distinct indices across processes, several rounds") {
  constexpr int kParties = 4, kRounds = 5;
  mp::Barrier barrier(kParties);
  CHECK(barrier.parties() == kParties);
  CHECK(barrier.n_waiting() == 0);
  mp::RawArray<int> seen(kParties * kRounds);  // bit per index, per round
  std::vector<pid_t> pids;
  for (int p = 0; p < kParties - 1; ++p)
    pids.push_back(shm_test::spawn([&] {
      for (int round = 0; round < kRounds; ++round) {
        const std::size_t index = barrier.wait(20s);
        std::atomic_ref<int>(seen[static_cast<std::size_t>(round * kParties) + index]).fetch_add(1);
      }
      return 0;
    }));
  for (int round = 0; round < kRounds; ++round) {
    const std::size_t index = barrier.wait(20s);
    std::atomic_ref<int>(seen[static_cast<std::size_t>(round * kParties) + index]).fetch_add(1);
  }
  for (pid_t pid : pids) CHECK(shm_test::join(pid).exitcode == 0);
  for (std::size_t i = 0; i < std::size_t{kParties * kRounds}; ++i) CHECK(seen[i] == 1);
  CHECK_FALSE(barrier.broken());
}

TEST_CASE("Barrier: a timeout breaks it for everyone until reset") {
  mp::Barrier barrier(3);
  shm_test::Pipe ready;
  const pid_t waiter = shm_test::spawn([&] {
    shm_test::send(ready.w.get(), 'w');
    try {
      barrier.wait(20s);
    } catch (const mp::BrokenBarrierError&) {
      return 0;  // broken by the parent's timeout
    }
    return 3;
  });
  shm_test::recv<char>(ready.r.get());
  const auto until = Clock::now() + 10s;
  while (barrier.n_waiting() != 1 && Clock::now() < until) std::this_thread::sleep_for(1ms);
  CHECK(barrier.n_waiting() == 1);
  const auto took = time_of(
      [&] { REQUIRE_THROWS_MATCHES(barrier.wait(80ms), mp::BrokenBarrierError, MessageContains("timed out")); });
  CHECK(took >= 80ms);
  CHECK(took < 80ms + kSlack);
  CHECK(shm_test::join(waiter).exitcode == 0);
  CHECK(barrier.broken());
  CHECK(barrier.n_waiting() == 0);
  REQUIRE_THROWS_MATCHES(barrier.wait(1s), mp::BrokenBarrierError,
                         MessageContains("the barrier is broken (a wait timed out)"));
  barrier.reset();
  CHECK_FALSE(barrier.broken());
  mp::Barrier one(1);
  CHECK(one.wait() == 0);
}

TEST_CASE("Barrier: abort breaks waiters, default timeout, bad parties") {
  mp::Barrier barrier(2);
  const pid_t waiter = shm_test::spawn([&] {
    try {
      barrier.wait(20s);
    } catch (const mp::BrokenBarrierError&) {
      return 0;
    }
    return 3;
  });
  const auto until = Clock::now() + 10s;
  while (barrier.n_waiting() != 1 && Clock::now() < until) std::this_thread::sleep_for(1ms);
  barrier.abort();
  CHECK(shm_test::join(waiter).exitcode == 0);
  CHECK(barrier.broken());
  REQUIRE_THROWS_MATCHES(barrier.wait(1s), mp::BrokenBarrierError, MessageContains("(abort() was called)"));
  barrier.reset();

  mp::Barrier timed(2, 50ms);
  const auto took = time_of([&] { REQUIRE_THROWS_AS(timed.wait(), mp::BrokenBarrierError); });
  CHECK(took >= 50ms);
  CHECK(timed.broken());
  REQUIRE_THROWS_MATCHES(mp::Barrier(0), mp::ValueError, MessageContains("parties must be between 1"));
}

namespace {
// The action's log, in shared memory: [0] calls so far, [1 + k] the pid
// that ran call k.
mp::RawArray<int>* action_log = nullptr;
void log_action() {
  auto& log = *action_log;
  const int k = log[0];
  log[static_cast<std::size_t>(1 + k)] = static_cast<int>(::getpid());
  log[0] = k + 1;
}
void failing_action() { throw std::runtime_error("the action failed"); }
}  // namespace

TEST_CASE("Barrier: the action runs once per round, in the last arriver's process, before anyone is released") {
  constexpr int kParties = 3, kRounds = 4;
  mp::RawArray<int> log(1 + kRounds);
  action_log = &log;
  mp::Barrier barrier(kParties, log_action);
  CHECK(barrier.has_action());
  CHECK_FALSE(mp::Barrier(2).has_action());
  std::vector<pid_t> pids;
  for (int p = 0; p < kParties - 1; ++p)
    pids.push_back(shm_test::spawn([&] {
      for (int round = 0; round < kRounds; ++round) {
        (void)barrier.wait(20s);
        if (log[0] != round + 1) return 10 + round;  // the action ran before the release
      }
      return 0;
    }));
  std::vector<int> parties{static_cast<int>(::getpid())};
  for (pid_t p : pids) parties.push_back(static_cast<int>(p));
  for (int round = 0; round < kRounds; ++round) {
    (void)barrier.wait(20s);
    CHECK(log[0] == round + 1);
  }
  for (pid_t p : pids) CHECK(shm_test::join(p).exitcode == 0);
  CHECK(log[0] == kRounds);
  for (int k = 0; k < kRounds; ++k)
    CHECK(std::find(parties.begin(), parties.end(), log[static_cast<std::size_t>(1 + k)]) != parties.end());
  action_log = nullptr;
}

TEST_CASE("Barrier: an action that throws breaks the barrier, its exception reaches the last arriver") {
  mp::Barrier barrier(2, failing_action, 20s);
  const pid_t waiter = shm_test::spawn([&] {
    try {
      (void)barrier.wait();
    } catch (const mp::BrokenBarrierError& e) {
      return std::string(e.what()).find("(its action threw an exception)") != std::string::npos ? 0 : 2;
    } catch (const std::runtime_error& e) {
      return std::string(e.what()) == "the action failed" ? 1 : 4;  // it arrived last
    }
    return 3;
  });
  bool threw_action = false;
  try {
    (void)barrier.wait();
  } catch (const mp::BrokenBarrierError& e) {
    CHECK_THAT(std::string(e.what()), mproc_test::Contains("(its action threw an exception)"));
  } catch (const std::runtime_error& e) {
    threw_action = true;
    CHECK(std::string(e.what()) == "the action failed");
  }
  const int child = shm_test::join(waiter).exitcode;
  CHECK((child == 0 || child == 1));
  CHECK((child == 1) != threw_action);  // exactly one party, the last, got the action's exception
  CHECK(barrier.broken());
  REQUIRE_THROWS_MATCHES(barrier.wait(1s), mp::BrokenBarrierError, MessageContains("(its action threw an exception)"));
}

TEST_CASE("Barrier: between threads") {
  mp::Barrier barrier(3);
  std::atomic<int> mask{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) threads.emplace_back([&] { mask |= 1 << barrier.wait(10s); });
  for (auto& t : threads) t.join();
  CHECK(mask == 7);
}

TEST_CASE("Barrier: a party killed while waiting breaks the barrier for the others (#10)", "[barrier][failure-model]") {
  for (const bool probe : {false, true}) {
    for (const bool reap : {false, true}) {
      INFO("probe mode: " << probe << ", dead party reaped: " << reap);
      mp::Barrier barrier(3);
      const auto party = [&](int broken_code) {
        return shm_test::spawn([&, broken_code] {
          mp::detail::SyncTesting::no_robust_list = probe;
          try {
            barrier.wait(30s);
          } catch (const mp::BrokenBarrierError& e) {
            return std::string(e.what()).find("a party died while waiting") != std::string::npos ? broken_code : 5;
          }
          return 3;
        });
      };
      const pid_t victim = party(0);
      REQUIRE(eventually([&] { return barrier.n_waiting() == 1; }));
      kill_dead(victim, reap);
      // The last arriver does not count the dead party as arrived.
      const auto took = time_of([&] {
        // (Normally "...; the barrier is now broken"; if the party died while
        // it held the barrier's lock, the barrier is already broken for that.)
        REQUIRE_THROWS_MATCHES(barrier.wait(10s), mp::BrokenBarrierError,
                               MessageContains("a party died while waiting"));
      });
      CHECK(took < 1s);
      CHECK(barrier.broken());
      REQUIRE_THROWS_MATCHES(barrier.wait(1s), mp::BrokenBarrierError,
                             MessageContains("the barrier is broken (a party died while waiting)"));
      if (!reap) CHECK(shm_test::join(victim).exitcode == -SIGKILL);

      // A waiting party learns of a death by itself, within a few slices,
      // though the last party never comes.
      barrier.reset();
      CHECK_FALSE(barrier.broken());
      CHECK(barrier.n_waiting() == 0);
      const pid_t victim2 = party(0);
      REQUIRE(eventually([&] { return barrier.n_waiting() == 1; }));
      const pid_t witness = party(0);
      REQUIRE(eventually([&] { return barrier.n_waiting() == 2; }));
      kill_dead(victim2, reap);
      const auto learned = time_of([&] { CHECK(eventually([&] { return barrier.broken(); })); });
      CHECK(learned < 200ms);
      CHECK(shm_test::join(witness).exitcode == 0);
      if (!reap) CHECK(shm_test::join(victim2).exitcode == -SIGKILL);

      // Broken until reset(); then whole rounds pass again.
      CHECK(barrier.broken());
      barrier.reset();
      const pid_t a = party(6), b = party(6);
      const std::size_t index = barrier.wait(30s);
      CHECK(index <= 2);
      CHECK(shm_test::join(a).exitcode == 3);  // returned normally
      CHECK(shm_test::join(b).exitcode == 3);
      CHECK_FALSE(barrier.broken());
    }
  }
}

TEST_CASE("Barrier: a last arriver killed while releasing the round breaks it, and reset() repairs it (#10)",
          "[barrier][failure-model]") {
  mp::Barrier barrier(3);
  const auto waiter = [&] {
    return shm_test::spawn([&] {
      try {
        barrier.wait(30s);
      } catch (const mp::BrokenBarrierError&) {
        return 0;
      }
      return 3;
    });
  };
  const pid_t a = waiter();
  const pid_t b = waiter();
  REQUIRE(eventually([&] { return barrier.n_waiting() == 2; }));
  // The last arriver dies holding the barrier's internal lock, after it
  // checked the others and before it let them go.
  const pid_t last = shm_test::spawn([&] {
    mp::detail::SyncTesting::barrier_releasing = [] { ::raise(SIGKILL); };
    barrier.wait(30s);
    return 3;
  });
  CHECK(shm_test::join(a, 10s).exitcode == 0);
  CHECK(shm_test::join(b, 10s).exitcode == 0);
  CHECK(shm_test::join(last).exitcode == -SIGKILL);
  CHECK(barrier.broken());
  barrier.reset();
  CHECK(barrier.n_waiting() == 0);
  const pid_t c = shm_test::spawn([&] { return barrier.wait(30s) <= 2 ? 0 : 3; });
  const pid_t d = shm_test::spawn([&] { return barrier.wait(30s) <= 2 ? 0 : 3; });
  CHECK(barrier.wait(30s) <= 2);
  CHECK(shm_test::join(c).exitcode == 0);
  CHECK(shm_test::join(d).exitcode == 0);
}

TEST_CASE("Barrier: a party killed after its round passed, before it left, does not stall the next round (#10)",
          "[barrier][failure-model]") {
  mp::Barrier barrier(2);
  const pid_t passed = shm_test::spawn([&] {
    barrier.wait(30s);
    return 0;
  });
  REQUIRE(eventually([&] { return barrier.n_waiting() == 1; }));
  // Stopped, the other party is alive when we arrive last and let the round
  // pass, but cannot leave; then it dies without having left.
  ::kill(passed, SIGSTOP);
  CHECK(barrier.wait(10s) == 1);
  kill_dead(passed, false);
  CHECK_FALSE(barrier.broken());
  // The next wait forgets the dead party instead of waiting forever for the
  // round to drain, and keeps its deadline.
  const auto took = time_of(
      [&] { REQUIRE_THROWS_MATCHES(barrier.wait(150ms), mp::BrokenBarrierError, MessageContains("timed out")); });
  CHECK(took >= 150ms);
  CHECK(took < 150ms + kSlack);
  barrier.reset();
  const pid_t next = shm_test::spawn([&] { return barrier.wait(30s) <= 1 ? 0 : 3; });
  CHECK(barrier.wait(30s) <= 1);
  CHECK(shm_test::join(next).exitcode == 0);
  CHECK(shm_test::join(passed).exitcode == -SIGKILL);
}

TEST_CASE("Barrier: a handle whose parties do not fit its block is rejected") {
  mp::Barrier barrier(2);
  auto h = barrier.handle();
  auto block = mp::detail::open_object(h, mp::detail::ShmKind::barrier, 0).first;
  auto* st = mp::detail::existing_state<mp::detail::BarrierState>(*block, mp::detail::kObjectStateOffset);
  st->parties = 1000;
  REQUIRE_THROWS_MATCHES(mp::Barrier::from_handle(h), mp::ProcessError, MessageContains("parties do not fit in its"));
  st->parties = 0;
  REQUIRE_THROWS_MATCHES(mp::Barrier::from_handle(h), mp::ProcessError, MessageContains("it has 0 parties"));
  st->parties = 2;
  CHECK(mp::Barrier::from_handle(h).parties() == 2);
}
