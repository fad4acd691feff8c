// Tests of <mproc/context.hpp>: get_context(method) makes pools with that start method whatever the
// process-wide default (observed through what the workers inherit), leaves the default alone, and its
// other factories make the module's objects.
#include <chrono>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <mproc/context.hpp>

#include "catch.hpp"

namespace mp = mproc;
using namespace std::chrono_literals;

namespace {

int g_marker = 0;  // set by the test after the fork server started: forks of it do not see the change
int read_marker(int) { return g_marker; }
int twice(int x) { return 2 * x; }

}  // namespace

TEST_CASE("get_context(forkserver).Pool forks workers from the fork server, fork and the default fork the creator") {
  // Created first, as a program would at the top of main(): the server starts now.
  const mp::Context server_ctx = mp::get_context(mp::StartMethod::forkserver);
  CHECK(server_ctx.get_start_method() == mp::StartMethod::forkserver);
  CHECK(mp::get_start_method() == mp::StartMethod::automatic);  // the process-wide default is untouched
  CHECK(mp::get_context() == mp::get_context(mp::StartMethod::automatic));
  g_marker = 42;  // after the server started

  const auto fork_ctx = mp::get_context(mp::StartMethod::fork);
  {
    auto from_server = server_ctx.Pool(2);
    CHECK(from_server.map(read_marker, std::vector<int>{0, 1, 2}) == std::vector<int>{0, 0, 0});
    // The context's method wins over one set in the options.
    auto still_server = server_ctx.Pool(1, mp::PoolOptions().start_method(mp::StartMethod::fork));
    CHECK(still_server.apply(read_marker, 0) == 0);

    // Other pools' threads run now, yet fork_ctx forks the creator.
    auto forked = fork_ctx.Pool(2);
    CHECK(forked.map(read_marker, std::vector<int>{0, 1}) == std::vector<int>{42, 42});
    REQUIRE_THROWS_AS(fork_ctx.Pool(0), mp::ValueError);
  }
  // The default context (automatic) starts workers as a plain Pool does (fork
  // when this process is single-threaded, else the running fork server: under
  // a sanitizer whose runtime runs a thread, the server).
  int seen_by_plain_pool = -1;
  {
    mp::Pool plain(1);
    seen_by_plain_pool = plain.apply(read_marker, 0);
  }
  auto by_default = mp::get_context().Pool(std::size_t{1});
  CHECK(by_default.apply(read_marker, 0) == seen_by_plain_pool);
  CHECK(by_default.size() == 1);
}

TEST_CASE("a context's other factories make the module's objects") {
  const auto ctx = mp::get_context(mp::StartMethod::fork);
  auto q = ctx.Queue<std::string>();
  auto value = ctx.Value<int>(5);
  auto locked_by = ctx.Lock();
  auto shared = ctx.Value<long>(0, locked_by);  // deduces the lock type
  static_assert(std::is_same_v<decltype(shared), mp::Value<long, mp::Lock>>);
  auto arr = ctx.Array<double>(std::vector<double>{1.5, 2.5});
  auto raw = ctx.RawArray<int>(3);
  auto [a, b] = ctx.Pipe();
  auto done = ctx.Event();
  auto p = ctx.Process(
      [&](int n) {
        q.put("from the child");
        value.set(value.get() + n);
        shared.set(7);
        arr[1] = -arr[1];
        raw[2] = 9;
        b.send(n * 10);
        done.set();
        return 0;
      },
      3);
  p.start();
  REQUIRE(p.join(10s));
  CHECK(p.exitcode() == 0);
  CHECK(q.get(10s) == "from the child");
  CHECK(value.get() == 8);
  CHECK(shared.get() == 7);
  CHECK(shared.get_lock() == locked_by);
  CHECK(arr[1] == -2.5);
  CHECK(raw[2] == 9);
  REQUIRE(a.poll(10s));
  CHECK(a.recv<int>() == 30);
  CHECK(done.is_set());

  auto sem = ctx.BoundedSemaphore(1);
  CHECK(sem.acquire(0s));
  const int parties = 1;  // an int, as users write it
  auto barrier = ctx.Barrier(parties);
  CHECK(barrier.wait(1s) == 0);
  auto jq = ctx.JoinableQueue<int>();
  jq.put(1);
  CHECK(jq.get(1s) == 1);
  jq.task_done();
  auto sq = ctx.SimpleQueue<int>();
  sq.put(2);
  CHECK(sq.get() == 2);
  auto rl = ctx.RLock();
  auto cond = ctx.Condition(rl);
  {
    std::lock_guard g(cond);
    CHECK(rl.locked());
  }
  auto pool = ctx.Pool(1);
  CHECK(pool.map(twice, std::vector<int>{1, 2}) == std::vector<int>{2, 4});
}
