// A port of CPython's behaviour checks for multiprocessing, from
// Lib/test/_test_multiprocessing.py (classes _TestPool, _TestPoolWorkerErrors,
// _TestPoolWorkerLifetime, _TestQueue, _TestLock, _TestSemaphore,
// _TestCondition, _TestEvent, _TestValue, _TestArray, _TestConnection,
// _TestPoll, _TestBarrier, _TestContainers, _TestRemoteManager,
// _TestManagerRestart), as documentation that mproc behaves as Python's
// module does. Each TEST_CASE is named after the CPython method it ports.
// CPython's `time.sleep(DELTA)` "let it settle" pauses are replaced by waits
// with timeouts; timings are asserted loosely (>= 0.9 x the timeout, < the
// timeout + 5 s) because the test machines are slow and shared.
//
// Where mproc deliberately differs, the test asserts mproc's documented
// behaviour and says so: misuse errors are mp::ProcessError where Python
// raises ValueError (releasing an unheld Lock, over-releasing a
// BoundedSemaphore, submitting to a closed Pool), and a closed queue raises
// mp::ShutDown (Python: ValueError "is closed").
//
// Not ported, with the reason:
//   _TestPool.test_apply's keyword-argument call       C++ has no keyword arguments
//   _TestPool.test_map_unplicklable                    a type that cannot be serialized is a compile error
//   _TestPool.test_release_task_refs, test_resource_warning  garbage collection and warnings
//   _TestPool.test_enter                               RAII: the destructor is close() + join()
//   _TestPool.test_map_no_failfast                     relies on a 1 MiB exception message and timing only
//   _TestPoolWorkerErrors.test_unpickleable_result     results that cannot be serialized do not compile
//   _TestQueue.test_no_import_lock_contention, test_queue_feeder_*  Python imports / the feeder thread (mproc has none)
//   _TestCondition.test_wait_result's SIGINT part      KeyboardInterrupt
//   _TestCondition, _TestBarrier with threading.Thread parties  processes only here (tests of threads live in
//   test_condition.cpp) _TestValue/_TestArray lock='navalue' AttributeError     a wrong lock type is a compile error
//   _TestConnection.test_sendbytes' ValueError cases   offsets are std::span::subspan, checked by the caller
//   _TestConnection.test_fd_transfer, test_large_fd_transfer, test_missing_fd_transfer  no reduction.send_handle
//   _TestBarrier.test_thousand                         1000 rounds x 5 processes: too slow for a 2-core CI machine
//   left out to keep this file short (each duplicates a ported check here, or one in tests/test_*.cpp):
//     _TestPool.test_async, test_starmap_async, test_map_chunksize, test_map_handle_iterable_exception,
//     _TestPoolWorkerLifetime.test_pool_worker_lifetime, _TestQueue.test_fork, test_qsize, test_timeout,
//     _TestLock.test_lock_context, _TestCondition.test_notify_all, test_wait_result,
//     _TestArray.test_array_from_size, test_getobj_getlock_obj, _TestConnection.test_context,
//     _TestPoll.test_empty_string, test_dont_merge, _TestBarrier.test_abort_and_reset,
//     test_default_timeout, test_single_thread
//   _TestContainers' slicing, +=, and str() checks    proxies have no slices or operators; items() copies
//   _TestMyManager, _TestManagerRestart's custom registered types  C++ registers no callables: Named objects instead
//   _TestPicklingConnections, Windows-only tests       no pickling
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <numeric>
#include <optional>
#include <ranges>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <mproc/async_result.hpp>
#include <mproc/barrier.hpp>
#include <mproc/condition.hpp>
#include <mproc/connection.hpp>
#include <mproc/event.hpp>
#include <mproc/lock.hpp>
#include <mproc/managers.hpp>
#include <mproc/pool.hpp>
#include <mproc/process.hpp>
#include <mproc/queue.hpp>
#include <mproc/semaphore.hpp>
#include <mproc/sharedctypes.hpp>

#include "catch.hpp"

namespace mp = mproc;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using mproc_test::MessageContains;

namespace {

constexpr auto kTimeout1 = 200ms;  // CPython's TIMEOUT1..3, DELTA: short measured timeouts
constexpr auto kTimeout2 = 300ms;

// ---- task functions (plain functions: they exist in every worker)
int sqr(int x) { return x * x; }
int sqr_after(int x, int wait_ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
  return x * x;
}
int mul(int x, int y) { return x * y; }
int parse_int(const std::string& s) { return std::stoi(s); }  // Python's int(s): std::invalid_argument for "a"
int raise_runtime_error_123() { throw std::runtime_error("123"); }
int raising() { throw std::out_of_range("key"); }  // CPython raises KeyError('key')

// ---- helpers
template <class F>
Clock::duration time_of(F&& f) {
  const auto start = Clock::now();
  f();
  return Clock::now() - start;
}
// CPython's assertTimingAlmostEqual(elapsed, timeout), loosely.
void check_about(Clock::duration took, Clock::duration timeout) {
  CHECK(took >= timeout * 9 / 10);
  CHECK(took < timeout + 5s);
}
void check_immediate(Clock::duration took) { CHECK(took < 5s); }

std::vector<int> squares(int n) {
  std::vector<int> out;
  for (int i = 0; i < n; ++i) out.push_back(i * i);
  return out;
}
std::vector<int> range(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

// Starts a child running f(args...) (its int result is the exit code).
template <class F, class... A>
mp::Process spawn(F&& f, A&&... a) {
  mp::Process p(std::forward<F>(f), std::forward<A>(a)...);
  p.start();
  return p;
}
// Joins `p` within 30 s (killing it if it overruns); returns its exit code.
int finish(mp::Process& p) {
  if (!p.join(30s)) {
    p.kill();
    (void)p.join(10s);
    FAIL("a child did not exit within 30 s");
  }
  return p.exitcode().value_or(-1000);
}

// CPython's exception_throwing_generator(total, when): 0..total-1, whose
// reading raises SayWhenError at position `when` (-1: at once).
auto exception_throwing_generator(int total, int when) {
  return std::views::iota(0, std::max(total, 1)) | std::views::transform([=](int i) {
           if (i == when || when == -1) throw std::domain_error("Somebody said when");
           return i;
         });
}

// CPython's _DummyList as used by the barrier tests: a process-shared count.
struct Count {
  mp::Value<int> v{0};
  void append() const {
    std::lock_guard g(v.get_lock());
    ++v.get_obj();
  }
  int len() const { return v.get(); }
};

// CPython's _TestBarrier.run_threads: f runs in N - 1 children and here;
// every party must return 0.
constexpr std::size_t kParties = 5;
template <class F>
void run_parties(F f) {
  std::vector<mp::Process> children;
  for (std::size_t i = 0; i + 1 < kParties; ++i) children.push_back(spawn(f));
  const int mine = f();
  for (auto& c : children) CHECK(finish(c) == 0);
  CHECK(mine == 0);
}

template <class T>
concept HasGetLock = requires(T& t) { t.get_lock(); };

mp::Value<int>* g_action_runs = nullptr;  // set before forking: children share it
void append_true() {
  std::lock_guard g(g_action_runs->get_lock());
  ++g_action_runs->get_obj();
}

}  // namespace

// =====================================================================  _TestPool

TEST_CASE("CPython _TestPool.test_apply: apply runs the function in a worker and returns its value") {
  mp::Pool pool(4);
  CHECK(pool.apply(sqr, 5) == 25);
  CHECK(pool.apply(mul, 6, 7) == 42);
}

TEST_CASE("CPython _TestPool.test_map: map over a range returns the squares in order") {
  mp::Pool pool(4);
  CHECK(pool.map(sqr, range(10)) == squares(10));
  CHECK(pool.map(sqr, range(100), 20) == squares(100));
}

TEST_CASE("CPython _TestPool.test_starmap: starmap unpacks each tuple into the arguments") {
  mp::Pool pool(4);
  for (const auto& [n, chunksize] : {std::pair{10, std::size_t{0}}, std::pair{100, std::size_t{20}}}) {
    std::vector<std::tuple<int, int>> tuples;
    std::vector<int> expected;
    for (int i = 0; i < n; ++i) {
      tuples.emplace_back(i, n - 1 - i);
      expected.push_back(i * (n - 1 - i));
    }
    CHECK(pool.starmap(mul, tuples, chunksize) == expected);
  }
}

TEST_CASE("CPython _TestPool.test_map_async: map_async(...).get() returns the squares in order") {
  mp::Pool pool(4);
  CHECK(pool.map_async(sqr, range(10)).get(30s) == squares(10));
}

TEST_CASE("CPython _TestPool.test_map_async_callbacks: the result or the error reaches exactly one callback") {
  mp::Pool pool(4);
  std::vector<std::vector<int>> results;
  std::vector<std::exception_ptr> errors;
  auto cb = mp::callbacks([&results](const std::vector<int>& v) { results.push_back(v); },
                          [&errors](std::exception_ptr e) { errors.push_back(e); });
  REQUIRE(pool.map_async(parse_int, std::vector<std::string>{"1"}, 0, cb).wait(30s));
  REQUIRE(results.size() == 1);
  CHECK(errors.empty());
  CHECK(results[0] == std::vector<int>{1});
  REQUIRE(pool.map_async(parse_int, std::vector<std::string>{"a"}, 0, cb).wait(30s));
  CHECK(results.size() == 1);
  REQUIRE(errors.size() == 1);
  CHECK_THROWS_AS(std::rethrow_exception(errors[0]), std::invalid_argument);  // Python: ValueError
}

TEST_CASE("CPython _TestPool.test_imap_handle_iterable_exception: results before the bad input, then its error") {
  mp::Pool pool(4);
  auto first = pool.imap(sqr, exception_throwing_generator(1, -1), 1);
  CHECK_THROWS_AS(first.next(30s), std::domain_error);
  auto it = pool.imap(sqr, exception_throwing_generator(10, 3), 1);
  for (int i = 0; i < 3; ++i) CHECK(it.next(30s) == i * i);
  CHECK_THROWS_MATCHES(it.next(30s), std::domain_error, MessageContains("Somebody said when"));
}

TEST_CASE("CPython _TestPool.test_async_timeout: get(timeout) raises TimeoutError after the timeout") {
  mp::Pool pool(4);
  auto res = pool.apply_async(sqr_after, 6, 1300);
  const auto took = time_of([&] { CHECK_THROWS_AS(res.get(kTimeout2), mp::TimeoutError); });
  check_about(took, kTimeout2);
  CHECK(res.get(30s) == 36);  // the result still arrives
}

TEST_CASE("CPython _TestPool.test_imap: imap yields the results in order, then ends") {
  mp::Pool pool(4);
  std::vector<int> all;
  for (int v : pool.imap(sqr, range(10))) all.push_back(v);
  CHECK(all == squares(10));
  auto it = pool.imap(sqr, range(10));
  for (int i = 0; i < 10; ++i) CHECK(it.next(30s) == i * i);
  CHECK_FALSE(it.next(30s).has_value());  // Python: StopIteration
  auto chunked = pool.imap(sqr, range(1000), 100);
  for (int i = 0; i < 1000; ++i) REQUIRE(chunked.next(30s) == i * i);
  CHECK_FALSE(chunked.next(30s).has_value());
}

TEST_CASE("CPython _TestPool.test_imap_unordered: imap_unordered yields every result once, in any order") {
  mp::Pool pool(4);
  for (const auto& [n, chunksize] : {std::pair{10, std::size_t{1}}, std::pair{1000, std::size_t{100}}}) {
    std::vector<int> got;
    for (int v : pool.imap_unordered(sqr, range(n), chunksize)) got.push_back(v);
    std::ranges::sort(got);
    CHECK(got == squares(n));
  }
}

TEST_CASE("CPython _TestPool.test_make_pool: Pool(0) and Pool(-1) raise ValueError, Pool(3) has 3 workers") {
  CHECK_THROWS_AS(mp::Pool(-1), mp::ValueError);
  CHECK_THROWS_MATCHES(mp::Pool(0), mp::ValueError, MessageContains("at least 1"));
  mp::Pool p(3);
  CHECK(p.size() == 3);
  CHECK(p.worker_pids().size() == 3);
}

TEST_CASE("CPython _TestPool.test_terminate: terminate abandons a long map_async and join is quick") {
  mp::Pool pool(4);
  std::vector<std::tuple<int, int>> work(10000, {1, 100});
  auto long_map = pool.starmap_async(sqr_after, work, 1);
  pool.terminate();
  const auto took = time_of([&] { pool.join(); });
  CHECK(took < 2s + 5s);  // CPython: < 2 s
  REQUIRE(long_map.ready());
  CHECK_THROWS_MATCHES(long_map.get(), mp::ProcessError, MessageContains("terminated"));
}

TEST_CASE("CPython _TestPool.test_empty_iterable: every map flavour over nothing returns nothing") {
  mp::Pool p(1);
  const std::vector<int> none;
  CHECK(p.map(sqr, none).empty());
  CHECK(std::ranges::distance(p.imap(sqr, none)) == 0);
  CHECK(std::ranges::distance(p.imap_unordered(sqr, none)) == 0);
  CHECK(p.map_async(sqr, none).get(30s).empty());
  p.close();
  p.join();
}

TEST_CASE("CPython _TestPool.test_context: after close and join the pool refuses work (mproc: ProcessError)") {
  mp::Pool p(2);
  auto r = p.map_async(sqr, range(10));
  CHECK(r.get(30s) == squares(10));
  p.close();
  p.join();
  CHECK_THROWS_MATCHES(p.map_async(sqr, range(10)), mp::ProcessError, MessageContains("closed"));
}

TEST_CASE("CPython _TestPool.test_traceback: a task's exception comes back with its type and message") {
  mp::Pool p(1);
  try {
    p.apply(raise_runtime_error_123);
    FAIL("expected std::runtime_error");
  } catch (const std::runtime_error& e) {
    CHECK_THAT(e.what(), Catch::Contains("123"));
    CHECK_THAT(e.what(), Catch::Contains("raised in worker process"));
    CHECK(dynamic_cast<const mp::RemoteTrace*>(&e) != nullptr);  // Python: __cause__ is a RemoteTraceback
  }
}

TEST_CASE("CPython _TestPoolWorkerErrors.test_async_error_callback: the error callback gets the task's exception") {
  mp::Pool p(2);
  std::exception_ptr scratchpad;
  auto res = p.apply_async(mp::callbacks(nullptr, [&scratchpad](std::exception_ptr e) { scratchpad = e; }), raising);
  CHECK_THROWS_AS(res.get(30s), std::out_of_range);  // Python: KeyError
  REQUIRE(scratchpad);
  CHECK_THROWS_MATCHES(std::rethrow_exception(scratchpad), std::out_of_range, MessageContains("key"));
}

// =====================================================================  _TestQueue

TEST_CASE("CPython _TestQueue.test_put: a full queue raises Full, at once or after the timeout") {
  constexpr int kMax = 6;
  mp::Queue<int> queue(kMax);
  mp::Event child_can_start, parent_can_continue;
  auto proc = spawn([&] {
    if (!child_can_start.wait(30s)) return 2;
    for (int i = 0; i < 6; ++i) (void)queue.get(30s);
    parent_can_continue.set();
    return 0;
  });
  CHECK(queue.empty());
  CHECK_FALSE(queue.full());
  queue.put(1);
  queue.put(2, 10s);
  queue.put(3);
  queue.put_nowait(4);
  queue.put_nowait(5);
  queue.put_nowait(6);
  CHECK_FALSE(queue.empty());
  CHECK(queue.full());
  check_immediate(time_of([&] { CHECK_THROWS_AS(queue.put_nowait(7), mp::Full); }));
  check_about(time_of([&] { CHECK_THROWS_AS(queue.put(7, kTimeout1), mp::Full); }), kTimeout1);
  check_about(time_of([&] { CHECK_THROWS_AS(queue.put(7, kTimeout2), mp::Full); }), kTimeout2);
  child_can_start.set();
  CHECK(parent_can_continue.wait(30s));
  CHECK(queue.empty());
  CHECK_FALSE(queue.full());
  CHECK(finish(proc) == 0);
}

TEST_CASE("CPython _TestQueue.test_get: an empty queue raises Empty, at once or after the timeout") {
  mp::Queue<int> queue;
  mp::Event child_can_start, parent_can_continue;
  auto proc = spawn([&] {
    if (!child_can_start.wait(30s)) return 2;
    for (int i = 2; i <= 5; ++i) queue.put(i);
    parent_can_continue.set();
    return 0;
  });
  CHECK(queue.empty());
  child_can_start.set();
  REQUIRE(parent_can_continue.wait(30s));
  CHECK_FALSE(queue.empty());
  CHECK(queue.get(30s) == 2);
  CHECK(queue.get(30s) == 3);
  CHECK(queue.get(1s) == 4);
  CHECK(queue.get_nowait() == 5);
  CHECK(queue.empty());
  check_immediate(time_of([&] { CHECK_THROWS_AS(queue.get_nowait(), mp::Empty); }));
  check_about(time_of([&] { CHECK_THROWS_AS(queue.get(kTimeout1), mp::Empty); }), kTimeout1);
  check_about(time_of([&] { CHECK_THROWS_AS(queue.get(kTimeout2), mp::Empty); }), kTimeout2);
  CHECK(finish(proc) == 0);
}

TEST_CASE("CPython _TestQueue.test_task_done: JoinableQueue.join returns once every item is task_done") {
  mp::JoinableQueue<int> queue;
  std::vector<mp::Process> workers;
  for (int w = 0; w < 4; ++w)
    workers.push_back(spawn([&] {
      for (int obj = queue.get(30s); obj != -1; obj = queue.get(30s)) queue.task_done();  // -1: Python's None
      return 0;
    }));
  for (int i = 0; i < 10; ++i) queue.put(i);
  CHECK(queue.join(30s));
  CHECK(queue.unfinished_tasks() == 0);
  for (std::size_t w = 0; w < workers.size(); ++w) queue.put(-1);
  for (auto& p : workers) CHECK(finish(p) == 0);
}

TEST_CASE("CPython _TestQueue.test_closed_queue_put_get_exceptions: put and get on a closed queue raise") {
  // Python raises ValueError("Queue ... is closed"); mproc's close() is shutdown(): mp::ShutDown.
  mp::Queue<std::string> q;
  mp::JoinableQueue<std::string> jq;
  q.close();
  jq.close();
  CHECK_THROWS_MATCHES(q.put("foo"), mp::ShutDown, MessageContains("shut down"));
  CHECK_THROWS_MATCHES(q.get(10s), mp::ShutDown, MessageContains("shut down"));
  CHECK_THROWS_AS(jq.put("foo"), mp::ShutDown);
  CHECK_THROWS_AS(jq.get(10s), mp::ShutDown);
}

// =====================================================================  _TestLock

TEST_CASE("CPython _TestLock.test_lock: acquire, a non-blocking acquire fails, release twice raises") {
  mp::Lock lock;
  CHECK(lock.acquire());
  CHECK_FALSE(lock.try_acquire());  // Python: acquire(False)
  lock.release();
  CHECK_THROWS_MATCHES(lock.release(), mp::ProcessError, MessageContains("release of an unheld Lock"));
}

TEST_CASE("CPython _TestLock.test_rlock: an RLock is acquired three times, released three times, then raises") {
  mp::RLock lock;
  CHECK(lock.acquire());
  CHECK(lock.acquire());
  CHECK(lock.acquire());
  lock.release();
  lock.release();
  lock.release();
  CHECK_THROWS_MATCHES(lock.release(), mp::ProcessError, MessageContains("release of an unheld RLock"));
}

// =====================================================================  _TestSemaphore

namespace {
void check_semaphore_of_two(mp::Semaphore& sem) {  // CPython's _TestSemaphore._test_semaphore
  CHECK(sem.get_value() == 2);
  CHECK(sem.acquire());
  CHECK(sem.get_value() == 1);
  CHECK(sem.acquire());
  CHECK(sem.get_value() == 0);
  CHECK_FALSE(sem.try_acquire());
  CHECK(sem.get_value() == 0);
  sem.release();
  CHECK(sem.get_value() == 1);
  sem.release();
  CHECK(sem.get_value() == 2);
}
}  // namespace

TEST_CASE("CPython _TestSemaphore.test_semaphore: the value counts acquires and releases, past the initial value") {
  mp::Semaphore sem(2);
  check_semaphore_of_two(sem);
  sem.release();
  CHECK(sem.get_value() == 3);
  sem.release();
  CHECK(sem.get_value() == 4);
}

TEST_CASE("CPython _TestSemaphore.test_bounded_semaphore: as a Semaphore up to its bound, which it keeps") {
  mp::BoundedSemaphore sem(2);
  check_semaphore_of_two(sem);
  // Beyond CPython's method (Python: ValueError): mproc raises ProcessError past the bound.
  CHECK_THROWS_MATCHES(sem.release(), mp::ProcessError, MessageContains("released too many times"));
  CHECK(sem.get_value() == 2);
}

TEST_CASE("CPython _TestSemaphore.test_timeout: acquire on a zero semaphore fails at once or after the timeout") {
  mp::Semaphore sem(0);
  check_immediate(time_of([&] { CHECK_FALSE(sem.try_acquire()); }));
  check_immediate(time_of([&] { CHECK_FALSE(sem.acquire(0s)); }));
  check_about(time_of([&] { CHECK_FALSE(sem.acquire(kTimeout2)); }), kTimeout2);
  check_about(time_of([&] { CHECK_FALSE(sem.acquire(kTimeout1)); }), kTimeout1);
}

// =====================================================================  _TestCondition

namespace {
// CPython's _TestCondition.f: waits on `cond`, telling `sleeping` before and `woken` after.
template <class Timeout>
int cond_sleeper(mp::Condition& cond, mp::Semaphore& sleeping, mp::Semaphore& woken, Timeout timeout) {
  cond.acquire();
  sleeping.release();
  (void)cond.wait(timeout);
  woken.release();
  cond.release();
  return 0;
}
constexpr auto kForever = 60s;  // CPython's f waits without a timeout
}  // namespace

TEST_CASE("CPython _TestCondition.test_notify: each notify wakes one waiting process") {
  mp::Condition cond;
  mp::Semaphore sleeping(0), woken(0);
  std::vector<mp::Process> ps;
  for (int i = 0; i < 2; ++i) ps.push_back(spawn([&] { return cond_sleeper(cond, sleeping, woken, kForever); }));
  REQUIRE(sleeping.acquire(30s));
  REQUIRE(sleeping.acquire(30s));
  CHECK(woken.get_value() == 0);
  for (int round = 0; round < 2; ++round) {
    cond.acquire();  // a sleeper holds the lock until it waits
    cond.notify();
    cond.release();
    CHECK(woken.acquire(30s));
    CHECK_FALSE(woken.acquire(kTimeout1));  // CPython: get_value(woken) == round + 1 after DELTA
  }
  for (auto& p : ps) CHECK(finish(p) == 0);
}

TEST_CASE("CPython _TestCondition.test_notify_n: notify(n) wakes n waiters, at most the number waiting") {
  mp::Condition cond;
  mp::Semaphore sleeping(0), woken(0);
  std::vector<mp::Process> ps;
  for (int i = 0; i < 4; ++i) ps.push_back(spawn([&] { return cond_sleeper(cond, sleeping, woken, kForever); }));
  for (int i = 0; i < 4; ++i) REQUIRE(sleeping.acquire(30s));
  cond.acquire();
  cond.notify(2);
  cond.release();
  for (int i = 0; i < 2; ++i) CHECK(woken.acquire(30s));
  CHECK_FALSE(woken.acquire(kTimeout1));  // only two woke
  cond.acquire();
  cond.notify(4);  // two are left
  cond.release();
  for (int i = 0; i < 2; ++i) CHECK(woken.acquire(30s));
  cond.acquire();
  cond.notify(3);  // nobody waits: nothing happens
  cond.release();
  CHECK(woken.get_value() == 0);
  for (auto& p : ps) CHECK(finish(p) == 0);
}

TEST_CASE("CPython _TestCondition.test_timeout: wait(timeout) with no notify returns false after it") {
  mp::Condition cond;
  cond.acquire();
  bool res = true;
  check_about(time_of([&] { res = cond.wait(kTimeout1); }), kTimeout1);
  cond.release();
  CHECK_FALSE(res);
}

TEST_CASE("CPython _TestCondition.test_waitfor: wait_for returns once the predicate holds, in both processes") {
  mp::Condition cond;
  mp::Value<int> state(-1);
  auto p = spawn([&] {
    std::lock_guard g(cond);
    state.set(0);
    cond.notify();
    const bool result = cond.wait_for([&] { return state.get() == 4; }, 30s);
    return result && state.get() == 4 ? 0 : 1;
  });
  {
    std::lock_guard g(cond);
    CHECK(cond.wait_for([&] { return state.get() == 0; }, 30s));
    CHECK(state.get() == 0);
  }
  for (int i = 0; i < 4; ++i) {
    std::lock_guard g(cond);
    state.set(state.get() + 1);
    cond.notify();
  }
  CHECK(finish(p) == 0);
}

TEST_CASE("CPython _TestCondition.test_waitfor_timeout: wait_for returns false after its timeout") {
  mp::Condition cond;
  mp::Value<int> state(0);
  mp::Semaphore sem(0);
  auto p = spawn([&] {
    sem.release();
    std::lock_guard g(cond);
    const auto expected = 100ms;
    const auto t0 = Clock::now();
    const bool result = cond.wait_for([&] { return state.get() == 4; }, expected);
    const auto dt = Clock::now() - t0;
    if (result) return 2;
    return dt >= expected * 9 / 10 && dt < expected + 5s ? 0 : 3;
  });
  REQUIRE(sem.acquire(30s));
  for (int i = 0; i < 3; ++i) {
    std::lock_guard g(cond);
    state.set(state.get() + 1);
    cond.notify();
  }
  CHECK(finish(p) == 0);
}

// =====================================================================  _TestEvent

TEST_CASE("CPython _TestEvent.test_event: wait times out while clear, returns at once when set, wakes on set") {
  mp::Event event;
  CHECK_FALSE(event.is_set());
  check_immediate(time_of([&] { CHECK_FALSE(event.wait(0s)); }));
  check_about(time_of([&] { CHECK_FALSE(event.wait(kTimeout1)); }), kTimeout1);
  event.set();
  CHECK(event.is_set());
  check_immediate(time_of([&] { CHECK(event.wait()); }));
  check_immediate(time_of([&] { CHECK(event.wait(kTimeout1)); }));
  event.clear();
  CHECK_FALSE(event.is_set());
  auto p = spawn([&] {
    event.set();
    return 0;
  });
  CHECK(event.wait(30s));
  CHECK(finish(p) == 0);
}

// =====================================================================  _TestValue

namespace {
template <template <class> class V>
void check_values_set_by_child() {  // CPython's _TestValue.test_value(raw)
  V<int> i(4343);
  V<double> d(3.625);
  V<short> h(-232);
  V<long long> q(1LL << 33);
  V<char> c('x');
  CHECK(i.get() == 4343);
  CHECK(d.get() == 3.625);
  CHECK(h.get() == -232);
  CHECK(q.get() == 1LL << 33);
  CHECK(c.get() == 'x');
  auto proc = spawn([&] {
    i.set(24234);
    d.set(-4.25);
    h.set(234);
    q.set(1LL << 34);
    c.set('y');
    return 0;
  });
  CHECK(finish(proc) == 0);
  CHECK(i.get() == 24234);
  CHECK(d.get() == -4.25);
  CHECK(h.get() == 234);
  CHECK(q.get() == 1LL << 34);
  CHECK(c.get() == 'y');
}
template <class T>
using LockedValue = mp::Value<T>;
}  // namespace

TEST_CASE("CPython _TestValue.test_value: values of several types set by a child are seen by the parent") {
  check_values_set_by_child<LockedValue>();
}

TEST_CASE("CPython _TestValue.test_rawvalue: the same with RawValue") { check_values_set_by_child<mp::RawValue>(); }

TEST_CASE("CPython _TestValue.test_getobj_getlock: a Value has its own lock or the given one, a RawValue none") {
  mp::Value<int> val1(5);
  CHECK(val1.get_obj() == 5);
  CHECK_FALSE(val1.has_given_lock());
  {
    std::lock_guard g(val1.get_lock());
    CHECK(val1.get_lock().locked());
  }
  mp::Lock lock;
  mp::Value val3(5, lock);
  CHECK(val3.has_given_lock());
  CHECK(val3.get_obj() == 5);
  lock.acquire();
  CHECK(val3.get_lock().locked());  // the same lock (Python: lock == lock3)
  lock.release();
  STATIC_REQUIRE_FALSE(HasGetLock<mp::RawValue<int>>);  // Python: no get_lock attribute
  STATIC_REQUIRE(HasGetLock<mp::Value<int>>);
}

// =====================================================================  _TestArray

namespace {
template <class A>
void check_array_prefix_sums() {  // CPython's _TestArray.test_array(raw)
  std::vector<int> seq{680, 626, 934, 821, 150, 233, 548, 982, 714, 831};
  A arr(seq);
  CHECK(arr.size() == seq.size());
  CHECK(arr[3] == seq[3]);
  std::span<int> s(arr.get_obj());
  CHECK(std::vector<int>(s.begin() + 2, s.begin() + 7) == std::vector<int>(seq.begin() + 2, seq.begin() + 7));
  for (std::size_t k = 4; k < 8; ++k) arr[k] = seq[k] = static_cast<int>(k) - 3;  // arr[4:8] = [1, 2, 3, 4]
  CHECK(std::vector<int>(s.begin(), s.end()) == seq);
  for (std::size_t k = 1; k < seq.size(); ++k) seq[k] += seq[k - 1];
  auto p = spawn([&] {
    for (std::size_t k = 1; k < arr.size(); ++k) arr[k] += arr[k - 1];
    return 0;
  });
  CHECK(finish(p) == 0);
  CHECK(std::vector<int>(s.begin(), s.end()) == seq);
}
}  // namespace

TEST_CASE("CPython _TestArray.test_array: slices and a child's prefix sums over a shared Array") {
  check_array_prefix_sums<mp::Array<int>>();
}

TEST_CASE("CPython _TestArray.test_rawarray: the same with RawArray") { check_array_prefix_sums<mp::RawArray<int>>(); }

// =====================================================================  _TestConnection, _TestPoll

namespace {
std::vector<std::byte> bytes_of(std::string_view s) {
  const auto b = std::as_bytes(std::span(s));
  return {b.begin(), b.end()};
}
// CPython's _TestConnection._echo: echoes messages until an empty one.
int echo(mp::Connection& conn) {
  for (auto msg = conn.recv_bytes(); !msg.empty(); msg = conn.recv_bytes()) conn.send_bytes(msg);
  conn.close();
  return 0;
}
}  // namespace

TEST_CASE("CPython _TestConnection.test_connection: objects, bytes, recv_bytes_into, poll, and EOF through an echo") {
  auto [conn, child_conn] = mp::Pipe();
  mp::Process p(echo, std::move(child_conn));
  p.start();  // drops the parent's child_conn (Python: child_conn.close())
  CHECK(conn.fileno() >= 0);

  const std::tuple<int, double, std::optional<int>> seq{1, 2.25, std::nullopt};
  conn.send(seq);
  CHECK(conn.recv<std::tuple<int, double, std::optional<int>>>() == seq);

  const std::string msg = "hello world";
  conn.send_bytes(msg);
  CHECK(conn.recv_bytes() == bytes_of(msg));

  const std::vector<int> arr{0, 1, 2, 3};
  std::vector<int> buffer(10, 0);
  conn.send_bytes(std::as_bytes(std::span(arr)));
  CHECK(conn.recv_bytes_into(std::as_writable_bytes(std::span(buffer))) == 4 * sizeof(int));
  CHECK(buffer == std::vector<int>{0, 1, 2, 3, 0, 0, 0, 0, 0, 0});
  std::ranges::fill(buffer, 0);
  conn.send_bytes(std::as_bytes(std::span(arr)));
  CHECK(conn.recv_bytes_into(std::as_writable_bytes(std::span(buffer)), 3 * sizeof(int)) == 4 * sizeof(int));
  CHECK(buffer == std::vector<int>{0, 0, 0, 0, 1, 2, 3, 0, 0, 0});

  std::string longmsg;
  for (int i = 0; i < 10; ++i) longmsg += msg;
  std::vector<std::byte> small(40);
  conn.send_bytes(longmsg);
  try {
    (void)conn.recv_bytes_into(std::span<std::byte>(small));
    FAIL("expected BufferTooShort");
  } catch (const mp::BufferTooShort& e) {
    CHECK(e.message() == bytes_of(longmsg));  // Python: e.args == (longmsg,)
  }

  check_immediate(time_of([&] { CHECK_FALSE(conn.poll()); }));
  check_about(time_of([&] { CHECK_FALSE(conn.poll(kTimeout1)); }), kTimeout1);
  conn.send(0);
  CHECK(conn.poll(30s));
  CHECK(conn.recv<int>() == 0);

  const std::string really_big_msg(std::size_t{16} << 20, 'X');
  conn.send_bytes(really_big_msg);
  CHECK(conn.recv_bytes() == bytes_of(really_big_msg));

  conn.send_bytes(std::string_view{});  // tell the child to quit
  CHECK(finish(p) == 0);
  CHECK(conn.readable());
  CHECK(conn.writable());
  CHECK_THROWS_AS(conn.recv<int>(), mp::EOFError);
  CHECK_THROWS_AS(conn.recv_bytes(), mp::EOFError);
}

TEST_CASE("CPython _TestConnection.test_duplex_false: a simplex Pipe is a reader and a writer") {
  auto [reader, writer] = mp::Pipe(false);
  writer.send(1);
  CHECK(reader.recv<int>() == 1);
  CHECK(reader.readable());
  CHECK_FALSE(reader.writable());
  CHECK_FALSE(writer.readable());
  CHECK(writer.writable());
  CHECK_THROWS_MATCHES(reader.send(2), mp::ProcessError, MessageContains("read-only"));  // Python: OSError
  CHECK_THROWS_AS(writer.recv<int>(), mp::ProcessError);
}

TEST_CASE("CPython _TestConnection.test_sendbytes: a slice of a buffer is sent as one message") {
  const std::string_view msg = "abcdefghijklmnopqrstuvwxyz";
  auto [a, b] = mp::Pipe();
  const auto all = std::as_bytes(std::span(msg));
  a.send_bytes(all);
  CHECK(b.recv_bytes() == bytes_of(msg));
  a.send_bytes(all.subspan(5));  // Python: send_bytes(msg, 5)
  CHECK(b.recv_bytes() == bytes_of(msg.substr(5)));
  a.send_bytes(all.subspan(7, 8));
  CHECK(b.recv_bytes() == bytes_of(msg.substr(7, 8)));
  a.send_bytes(all.subspan(26));
  CHECK(b.recv_bytes().empty());
  a.send_bytes(all.subspan(26, 0));
  CHECK(b.recv_bytes().empty());
}

// =====================================================================  _TestBarrier

namespace {
void check_multipass(int passes) {  // CPython's _TestBarrier.test_barrier(passes)
  mp::Barrier barrier(kParties, 30s);
  Count results0, results1;
  run_parties([&] {
    const int m = static_cast<int>(barrier.parties());
    for (int i = 0; i < passes; ++i) {
      results0.append();
      if (results1.len() != i * m) return 1;
      (void)barrier.wait();
      results1.append();
      if (results0.len() != (i + 1) * m) return 2;
      (void)barrier.wait();
    }
    return barrier.broken() ? 3 : 0;
  });
  CHECK(results0.len() == passes * static_cast<int>(kParties));
  CHECK(barrier.n_waiting() == 0);
}
}  // namespace

TEST_CASE("CPython _TestBarrier.test_barrier: five processes pass the barrier in lockstep") { check_multipass(1); }

TEST_CASE("CPython _TestBarrier.test_barrier_10: ten consecutive rounds in lockstep") { check_multipass(10); }

TEST_CASE("CPython _TestBarrier.test_wait_return: wait returns a distinct index to each party, one of them 0") {
  mp::Barrier barrier(kParties, 30s);
  mp::Queue<int> queue;
  run_parties([&] {
    queue.put(static_cast<int>(barrier.wait()));
    return 0;
  });
  std::vector<int> results;
  for (std::size_t i = 0; i < kParties; ++i) results.push_back(queue.get(30s));
  CHECK(std::ranges::count(results, 0) == 1);
  std::ranges::sort(results);
  CHECK(results == range(static_cast<int>(kParties)));
}

TEST_CASE("CPython _TestBarrier.test_action: the action runs once, before any party is released") {
  mp::Value<int> runs(0);
  g_action_runs = &runs;
  mp::Barrier barrier(kParties, append_true);
  CHECK(barrier.has_action());
  run_parties([&] {
    (void)barrier.wait(30s);
    return runs.get() == 1 ? 0 : 1;
  });
  CHECK(runs.get() == 1);
  g_action_runs = nullptr;
}

TEST_CASE("CPython _TestBarrier.test_abort: abort breaks the barrier for every other party") {
  mp::Barrier barrier(kParties, 30s);
  Count results1, results2;
  run_parties([&] {
    try {
      if (barrier.wait() == kParties / 2) {
        barrier.abort();  // CPython: raise RuntimeError, then abort()
        return 0;
      }
      (void)barrier.wait();
      results1.append();
    } catch (const mp::BrokenBarrierError&) {
      results2.append();
    }
    return 0;
  });
  CHECK(results1.len() == 0);
  CHECK(results2.len() == static_cast<int>(kParties) - 1);
  CHECK(barrier.broken());
}

TEST_CASE("CPython _TestBarrier.test_reset: reset frees the waiting parties with BrokenBarrierError") {
  mp::Barrier barrier(kParties, 30s);
  Count results1, results2, results3;
  run_parties([&] {
    if (barrier.wait() == kParties / 2) {
      const auto deadline = Clock::now() + 30s;
      while (barrier.n_waiting() < kParties - 1) {  // polling shared state, as CPython does
        if (Clock::now() > deadline) return 1;
        std::this_thread::sleep_for(1ms);
      }
      barrier.reset();
    } else {
      try {
        (void)barrier.wait();
        results1.append();
      } catch (const mp::BrokenBarrierError&) {
        results2.append();
      }
    }
    (void)barrier.wait();
    results3.append();
    return 0;
  });
  CHECK(results1.len() == 0);
  CHECK(results2.len() == static_cast<int>(kParties) - 1);
  CHECK(results3.len() == static_cast<int>(kParties));
}

TEST_CASE("CPython _TestBarrier.test_timeout: a wait(timeout) that expires breaks the barrier for all") {
  mp::Barrier barrier(kParties, 30s);
  Count results;
  run_parties([&] {
    if (barrier.wait() == kParties / 2) std::this_thread::sleep_for(1s);  // CPython's timing: late by 1 s
    try {
      (void)barrier.wait(500ms);
    } catch (const mp::BrokenBarrierError&) {
      results.append();
    }
    return 0;
  });
  CHECK(results.len() == static_cast<int>(barrier.parties()));
}

// ---------------------------------------------------------------- Manager

TEST_CASE("CPython _TestContainers.test_list: a managed list holds copies, extends, and nests proxies") {
  mp::Manager manager;
  auto a = manager.list<int>();
  a.extend({0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  CHECK(a.items() == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  auto b = manager.list<int>();
  CHECK(b.items().empty());
  b.extend({0, 1, 2, 3, 4});
  CHECK(b.get(2) == 2);
  b.extend(b.items());  // b *= 2
  CHECK(b.items() == std::vector<int>{0, 1, 2, 3, 4, 0, 1, 2, 3, 4});
  // A list of proxies: its items are the other lists, not copies of them.
  auto f = manager.list<mp::ListProxy<int>>();
  f.append(a);
  a.append(10);
  CHECK(f.get(0).items() == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
}

TEST_CASE("CPython _TestContainers.test_dict: keys, values and items of a managed dict") {
  mp::Manager manager;
  auto d = manager.dict<int, std::string>();
  std::vector<int> indices{65, 66, 67, 68, 69};
  for (int i : indices) d.set(i, std::string(1, static_cast<char>(i)));
  CHECK(d.keys() == indices);
  CHECK(d.values() == std::vector<std::string>{"A", "B", "C", "D", "E"});
  CHECK(d.items() == std::vector<std::pair<int, std::string>>{{65, "A"}, {66, "B"}, {67, "C"}, {68, "D"}, {69, "E"}});
}

TEST_CASE("CPython _TestContainers.test_dict_proxy_nested: a dict holding a proxy of another dict") {
  mp::Manager manager;
  auto pets = manager.dict<std::string, int>();
  pets.update({{"ferrets", 2}, {"hamsters", 4}});
  auto supplies = manager.dict<std::string, int>();
  supplies.set("water", 7);
  auto outer = manager.dict<std::string, mp::DictProxy<std::string, int>>();
  outer.set("pets", pets);
  outer.set("supplies", supplies);
  CHECK(outer.keys() == std::vector<std::string>{"pets", "supplies"});
  CHECK(outer.get("pets").get("hamsters") == 4);
  outer.get("supplies").set("water", 8);
  CHECK(supplies.get("water") == 8);
  pets.clear();
  CHECK(outer.get("pets").size() == 0);
}

TEST_CASE("CPython _TestContainers.test_namespace: set, read, delete and test attributes") {
  mp::Manager manager;
  auto n = manager.Namespace();
  n.set("name", std::string("Bob"));
  n.set("job", std::string("Builder"));
  n.set("_hidden", std::string("hidden"));
  CHECK(n.get<std::string>("name") == "Bob");
  CHECK(n.get<std::string>("job") == "Builder");
  CHECK(n.erase("job"));
  CHECK(n.contains("name"));
  CHECK_FALSE(n.contains("job"));
  CHECK(n.names() == std::vector<std::string>{"_hidden", "name"});
}

namespace {
using RemoteItem = std::tuple<std::string, std::optional<int>, bool, double, std::string>;
}  // namespace

TEST_CASE("CPython _TestRemoteManager.test_remote: a TCP manager with an authkey, reached by connect()") {
  mp::Manager manager("127.0.0.1:0", "remote authkey");
  mp::Process putter(
      [](std::string address) {
        auto remote = mp::Manager::connect(address, "remote authkey");
        remote.Queue<RemoteItem>(0, mp::Named{"queue"})
            .put({"hello world", std::nullopt, true, 2.25, "hall\xc3\xa5 v\xc3\xa4rld"});
      },
      manager.address());
  putter.start();
  auto queue = mp::Manager::connect(manager.address(), "remote authkey").Queue<RemoteItem>(0, mp::Named{"queue"});
  CHECK(queue.get(10s) == RemoteItem{"hello world", std::nullopt, true, 2.25, "hall\xc3\xa5 v\xc3\xa4rld"});
  REQUIRE(putter.join(10s));
  CHECK(putter.exitcode() == 0);
  CHECK_THROWS_AS(mp::Manager::connect(manager.address(), "another key"), mp::AuthenticationError);
}

TEST_CASE("CPython _TestManagerRestart.test_rapid_restart: a new manager binds the address just shut down") {
  std::string address;
  {
    mp::Manager manager("127.0.0.1:0", "k");
    address = manager.address();
    mp::Process putter(
        [](std::string a) { mp::Manager::connect(a, "k").Queue<std::string>(0, mp::Named{"q"}).put("hello world"); },
        address);
    putter.start();
    REQUIRE(putter.join(10s));
    CHECK(manager.Queue<std::string>(0, mp::Named{"q"}).get(10s) == "hello world");
    manager.shutdown();
  }
  mp::Manager again(address, "k");  // TCP: SO_REUSEADDR; a Unix socket's file was removed
  CHECK(again.address() == address);
  const std::string path = "unix:/tmp/mproc-conformance-" + std::to_string(::getpid()) + ".sock";
  mp::Manager("unix:" + path.substr(5), "k").shutdown();
  mp::Manager reuse(path, "k");
  CHECK(reuse.dict<int, int>().size() == 0);
}
