// Queue<T>, JoinableQueue<T>, SimpleQueue<T>: every member, FIFO order,
// bounds and timeouts, close, large items and wrap-around, serialization
// failures, corrupted rings, several producer and consumer processes and
// threads, passing by handle and by fork, robustness against a process
// killed holding the internal lock (R5-style), the R4 leak loop and R8
// permissions; and the failure model of #11: a producer or consumer killed
// at every step of put and get (stopped there through the test hooks), waits
// that keep their deadlines under a signal storm, untrusted ring bytes.
//
// Stops a process inside put/get at a chosen step (see QueueStep in
// detail/shm/queue_hooks.hpp): tests/CMakeLists.txt defines MPROC_TEST_HOOKS.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <map>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>

#include <mproc/connection.hpp>
#include <mproc/pool.hpp>
#include <mproc/process.hpp>
#include <mproc/queue.hpp>
#include <mproc/sharedctypes.hpp>

#include "catch.hpp"
#include "shm_children.hpp"

namespace mp = mproc;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using mproc_test::MessageContains;

namespace {

// A type whose serializer throws for negative values.
struct Picky {
  int v = 0;
};

// Elapsed time of f().
template <class F>
Clock::duration timed(F&& f) {
  const auto t0 = Clock::now();
  f();
  return Clock::now() - t0;
}

std::string text_of(int i) { return "item-" + std::to_string(i) + std::string(static_cast<std::size_t>(i % 97), '#'); }

}  // namespace

template <>
struct mproc::serializer<Picky> {
  static void write(mproc::Writer& w, const Picky& p) {
    if (p.v < 0) throw std::invalid_argument("Picky: negative values cannot be sent");
    w.write(p.v);
  }
  static Picky read(mproc::Reader& r) { return Picky{r.read<int>()}; }
};

TEST_CASE("Queue: FIFO order, qsize, empty, full and the nowait variants") {
  mp::Queue<std::int64_t> q;
  CHECK(q.empty());
  CHECK_FALSE(q.full());
  CHECK(q.qsize() == 0);
  CHECK(q.maxsize() == 0);
  for (std::int64_t i = 0; i < 1000; ++i) q.put(i * 3);
  CHECK(q.qsize() == 1000);
  CHECK_FALSE(q.empty());
  CHECK_FALSE(q.full());  // unbounded: never full
  for (std::int64_t i = 0; i < 1000; ++i) REQUIRE(q.get() == i * 3);
  CHECK(q.empty());
  REQUIRE_THROWS_AS(q.get_nowait(), mp::Empty);

  mp::Queue<std::string> b(3);
  CHECK(b.maxsize() == 3);
  b.put_nowait("a");
  b.put("b", 10ms);
  b.put_nowait("c");
  CHECK(b.full());
  CHECK(b.qsize() == 3);
  REQUIRE_THROWS_AS(b.put_nowait("d"), mp::Full);
  REQUIRE_THROWS_MATCHES(b.put_nowait("d"), mp::Full, MessageContains("queue is full"));
  CHECK(b.get_nowait() == "a");
  CHECK_FALSE(b.full());
  CHECK(b.get(10ms) == "b");
  CHECK(b.get() == "c");
  REQUIRE_THROWS_MATCHES(b.get_nowait(), mp::Empty, MessageContains("queue is empty"));
  // Errors derive from ProcessError.
  REQUIRE_THROWS_AS(b.get_nowait(), mp::ProcessError);
}

TEST_CASE("Queue: timed put and get wait their timeout, then throw Full and Empty") {
  mp::Queue<int> q(1);
  q.put(1);
  const auto put_wait = timed([&] { REQUIRE_THROWS_AS(q.put(2, 80ms), mp::Full); });
  CHECK(put_wait >= 80ms);
  CHECK(put_wait < 5s);
  CHECK(q.get() == 1);
  const auto get_wait = timed([&] { REQUIRE_THROWS_AS(q.get(80ms), mp::Empty); });
  CHECK(get_wait >= 80ms);
  CHECK(get_wait < 5s);
  // Zero and negative timeouts poll once.
  REQUIRE_THROWS_AS(q.get(0ms), mp::Empty);
  REQUIRE_THROWS_AS(q.get(-5s), mp::Empty);
  q.put(7, 0ms);
  REQUIRE_THROWS_AS(q.put(8, -1s), mp::Full);
  CHECK(q.get(std::chrono::hours::max()) == 7);
}

TEST_CASE("Queue: a blocked put resumes when a getter makes room, a blocked get when an item arrives") {
  mp::Queue<int> q(2);
  q.put(1);
  q.put(2);
  std::thread getter([q]() mutable {
    std::this_thread::sleep_for(30ms);  // let the put block (the test checks it did)
    (void)q.get();
  });
  const auto waited = timed([&] { q.put(3, 10s); });
  getter.join();
  CHECK(waited >= 20ms);
  CHECK(q.get() == 2);
  CHECK(q.get() == 3);

  std::thread putter([q]() mutable {
    std::this_thread::sleep_for(30ms);
    q.put(42);
  });
  CHECK(q.get(10s) == 42);
  putter.join();
}

TEST_CASE("Queue: close makes put throw ShutDown, get drain then throw ShutDown, and wakes waiters") {
  mp::Queue<int> q;
  q.put(1);
  q.put(2);
  CHECK_FALSE(q.closed());
  q.close();
  CHECK(q.closed());
  q.close();  // idempotent
  REQUIRE_THROWS_MATCHES(q.put(3), mp::ShutDown, MessageContains("Queue.put(): the queue is shut down"));
  CHECK(q.get() == 1);
  CHECK(q.get(1s) == 2);
  const auto t = timed([&] { REQUIRE_THROWS_MATCHES(q.get(), mp::ShutDown, MessageContains("shut down and empty")); });
  CHECK(t < 1s);  // no waiting on a closed, empty queue

  mp::Queue<int> w;
  std::atomic<int> woke{0};
  std::thread waiter([w, &woke]() mutable {
    try {
      (void)w.get(30s);
    } catch (const mp::ShutDown&) {
      woke = 1;
    }
  });
  std::this_thread::sleep_for(20ms);  // give the waiter time to block (either way the result is the same)
  w.close();
  waiter.join();
  CHECK(woke == 1);
}

TEST_CASE("Queue: shutdown ends range-for in other processes, try_get, shutdown(true) drops and releases join") {
  mp::Queue<std::string> q;
  CHECK_FALSE(q.try_get().has_value());
  q.put("x");
  CHECK(q.try_get() == std::optional<std::string>("x"));
  CHECK_FALSE(q.try_get().has_value());

  mp::Queue<std::vector<std::string>> results;
  std::vector<pid_t> consumers;
  for (int c = 0; c < 2; ++c)
    consumers.push_back(shm_test::spawn([q, results]() mutable {
      std::vector<std::string> got;
      for (std::string& s : q) got.push_back(std::move(s));  // until shut down and drained
      results.put(got);
      return 0;
    }));
  for (int i = 0; i < 500; ++i) q.put(std::to_string(i), 30s);
  q.shutdown();
  std::vector<int> all;
  for (int c = 0; c < 2; ++c)
    for (const std::string& s : results.get(30s)) all.push_back(std::stoi(s));
  for (pid_t pid : consumers) CHECK(shm_test::join(pid).exitcode == 0);
  std::sort(all.begin(), all.end());
  REQUIRE(all.size() == 500);
  for (int i = 0; i < 500; ++i) CHECK(all[static_cast<std::size_t>(i)] == i);  // each once
  CHECK_THROWS_AS(q.try_get(), mp::ShutDown);
  CHECK_THROWS_AS(q.get(1s), mp::ShutDown);  // not Empty: a retry-on-Empty loop stops
  q.shutdown(true);                          // idempotent

  mp::JoinableQueue<int> j;
  for (int i = 0; i < 6; ++i) j.put(i);
  CHECK(j.get() == 0);  // taken, not yet done
  j.shutdown(true);     // drops the other five: they count as done
  CHECK(j.qsize() == 0);
  CHECK(j.unfinished_tasks() == 1);
  CHECK_THROWS_AS(j.get_nowait(), mp::ShutDown);
  CHECK_THROWS_AS(j.put(7), mp::ShutDown);
  CHECK_FALSE(j.join(50ms));
  j.task_done();
  CHECK(j.join(5s));

  mp::SimpleQueue<int> sq;
  for (int i = 1; i <= 3; ++i) sq.put(i);
  sq.shutdown();
  int sum = 0;
  for (int v : sq) sum += v;
  CHECK(sum == 6);
}

TEST_CASE("Queue: strings and 1 MiB vectors of doubles, in order, with wrap-around in a small ring") {
  mp::Queue<std::vector<double>> big;
  std::vector<double> v(std::size_t{1} << 17);  // 1 MiB
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(i) * 0.5;
  for (int k = 0; k < 5; ++k) {
    v[0] = k;
    big.put(v);
  }
  for (int k = 0; k < 5; ++k) {
    auto got = big.get(10s);
    REQUIRE(got.size() == v.size());
    CHECK(got[0] == k);
    CHECK(got.back() == v.back());
  }
  // A 4 MiB item goes through the default ring too.
  std::vector<double> huge(std::size_t{1} << 19, 1.25);
  big.put(huge);
  CHECK(big.get() == huge);

  // Items of many sizes through a 64 KiB ring: every record wraps sooner or later.
  mp::Queue<std::string> small(0, 64 * 1024);
  int next_get = 0;
  for (int i = 0; i < 3000; ++i) {
    while (true) {
      try {
        small.put_nowait(text_of(i) + std::string(static_cast<std::size_t>((i * 7919) % 9000), 'z'));
        break;
      } catch (const mp::Full&) {
        const std::string s = small.get_nowait();
        REQUIRE(s.rfind(text_of(next_get), 0) == 0);
        ++next_get;
      }
    }
  }
  while (!small.empty()) {
    REQUIRE(small.get_nowait().rfind(text_of(next_get), 0) == 0);
    ++next_get;
  }
  CHECK(next_get == 3000);
  // An item of most of the ring fits into the empty queue wherever its
  // positions stand.
  for (int i = 0; i < 5; ++i) {
    small.put(std::string(static_cast<std::size_t>(10000 + 3001 * i), 'p'));
    CHECK(small.get().size() == static_cast<std::size_t>(10000 + 3001 * i));
    small.put_nowait(std::string(50 * 1024, static_cast<char>('a' + i)));
    CHECK(small.get_nowait() == std::string(50 * 1024, static_cast<char>('a' + i)));
  }
  // An item that can never fit fails at once, queue unchanged.
  small.put("kept");
  REQUIRE_THROWS_MATCHES(small.put(std::string(70 * 1024, 'x')), mp::ProcessError,
                         MessageContains("does not fit in the queue's"));
  CHECK(small.qsize() == 1);
  CHECK(small.get() == "kept");
}

TEST_CASE("Queue: an unbounded queue holds megabytes of unread items and gives them back in order") {
  mp::Queue<std::string> q;
  const std::string chunk(100 * 1024, 'q');
  for (int i = 0; i < 60; ++i) q.put(std::to_string(i) + chunk);  // 6 MiB, beyond the hot region
  CHECK(q.qsize() == 60);
  for (int i = 0; i < 60; ++i) {
    const std::string s = q.get();
    REQUIRE(s == std::to_string(i) + chunk);
  }
  CHECK(q.empty());
  // Reused after draining (pages beyond the hot region were given back).
  q.put("again");
  CHECK(q.get() == "again");
}

TEST_CASE("Queue: pages beyond the hot region are given back once a large backlog is drained") {
  mp::Queue<std::string> q;
  const std::string chunk(512 * 1024, 'b');
  for (int i = 0; i < 64; ++i) q.put(std::to_string(i) + chunk);  // 32 MiB of unread items
  for (int i = 0; i < 64; ++i) REQUIRE(q.get() == std::to_string(i) + chunk);
  q.put("wrap");  // the producer wraps to the start; the consumer passes the skip record
  CHECK(q.get() == "wrap");
  const auto ring = q.core_for_testing().ring_for_testing();
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  const std::size_t from = mp::detail::kQueueHotBytes + page, to = std::size_t{30} << 20;
  std::vector<unsigned char> resident((to - from) / page);
  REQUIRE(::mincore(ring.data() + from, to - from, resident.data()) == 0);
  std::size_t kept = 0;
  for (unsigned char r : resident) kept += r & 1u;
  CHECK(kept == 0);
  q.put("still works");
  CHECK(q.get() == "still works");
}

TEST_CASE("Queue: a put that cannot serialize throws from put and leaves the queue unchanged") {
  mp::Queue<Picky> q;
  q.put(Picky{1});
  REQUIRE_THROWS_MATCHES(q.put(Picky{-1}), std::invalid_argument, MessageContains("cannot be sent"));
  REQUIRE_THROWS_AS(q.put_nowait(Picky{-2}), std::invalid_argument);
  CHECK(q.qsize() == 1);
  q.put(Picky{2});
  CHECK(q.get().v == 1);
  CHECK(q.get().v == 2);
  CHECK(q.empty());
}

TEST_CASE("Queue: corrupted bytes in the ring make get throw ProcessError, never crash") {
  SECTION("a corrupted record header: the queue is emptied") {
    mp::Queue<std::string> q;
    q.put("first");
    q.put("second");
    auto ring = q.core_for_testing().ring_for_testing();
    std::memset(ring.data(), 0xA5, sizeof(mp::detail::QueueRecord));  // the first record's header
    REQUIRE_THROWS_MATCHES(q.get(), mp::ProcessError, MessageContains("corrupted queue (bad record header"));
    CHECK(q.empty());
    q.put("after");
    CHECK(q.get() == "after");
  }
  SECTION("a record size pointing past the data") {
    mp::Queue<std::int64_t> q;
    q.put(5);
    auto ring = q.core_for_testing().ring_for_testing();
    const std::uint32_t size = 1u << 20;
    const std::uint32_t check = size ^ mp::detail::QueueRecord::kItem;
    std::memcpy(ring.data(), &size, 4);
    std::memcpy(ring.data() + 4, &check, 4);
    REQUIRE_THROWS_MATCHES(q.get(), mp::ProcessError, MessageContains("corrupted queue (bad record size"));
    CHECK(q.empty());
  }
  SECTION("a corrupted payload: that item is dropped, the next one is fine") {
    mp::Queue<std::vector<int>> q;
    q.put({1, 2, 3});
    q.put({4, 5});
    auto ring = q.core_for_testing().ring_for_testing();
    // Inside the first frame: its header (magic) right after the record header.
    for (std::size_t i = sizeof(mp::detail::QueueRecord); i < sizeof(mp::detail::QueueRecord) + 8; ++i)
      ring[i] = std::byte{0xFF};
    REQUIRE_THROWS_AS(q.get(), mp::ProcessError);
    CHECK(q.qsize() == 1);
    CHECK(q.get() == std::vector<int>{4, 5});
  }
  SECTION("a raw item of the wrong size") {
    mp::Queue<std::int64_t> q;
    q.put(9);
    auto ring = q.core_for_testing().ring_for_testing();
    const std::uint32_t size = 4;
    const std::uint32_t check = size ^ mp::detail::QueueRecord::kItem;
    std::memcpy(ring.data(), &size, 4);
    std::memcpy(ring.data() + 4, &check, 4);
    REQUIRE_THROWS_MATCHES(q.get(), mp::ProcessError, MessageContains("corrupted item"));
    CHECK(q.empty());
  }
}

TEST_CASE("Queue: several producer processes and consumer threads and processes, exact multiset, per-producer FIFO") {
  using Item = std::pair<int, int>;  // (producer, sequence); producer -1: stop
  constexpr int kProducers = 3;
  constexpr int kPerProducer = 4000;
  constexpr int kThreadConsumers = 2;
  constexpr int kProcessConsumers = 2;
  mp::Queue<Item> q(64);  // bounded: producers block now and then
  mp::Queue<std::vector<Item>> results;

  std::vector<pid_t> producers;
  for (int p = 0; p < kProducers; ++p)
    producers.push_back(shm_test::spawn([q, p]() mutable {
      for (int i = 0; i < kPerProducer; ++i) q.put({p, i}, 30s);
      return 0;
    }));
  const auto consume = [](mp::Queue<Item> queue) {
    std::vector<Item> got;
    for (;;) {
      const Item it = queue.get(30s);
      if (it.first < 0) break;
      got.push_back(it);
    }
    return got;
  };
  std::vector<pid_t> consumer_pids;
  for (int c = 0; c < kProcessConsumers; ++c)
    consumer_pids.push_back(shm_test::spawn([q, results, consume]() mutable {
      results.put(consume(q));
      return 0;
    }));
  std::vector<std::vector<Item>> seen(kThreadConsumers);
  std::vector<std::thread> threads;
  for (int c = 0; c < kThreadConsumers; ++c)
    threads.emplace_back([&seen, c, q, consume] { seen[static_cast<std::size_t>(c)] = consume(q); });

  for (pid_t pid : producers) CHECK(shm_test::join(pid).exitcode == 0);
  for (int c = 0; c < kThreadConsumers + kProcessConsumers; ++c) q.put({-1, 0}, 30s);
  for (auto& t : threads) t.join();
  for (int c = 0; c < kProcessConsumers; ++c) seen.push_back(results.get(30s));
  for (pid_t pid : consumer_pids) CHECK(shm_test::join(pid).exitcode == 0);

  std::map<int, std::vector<int>> by_producer;
  for (const auto& consumer : seen) {
    std::map<int, int> last;
    for (const auto& [p, i] : consumer) {
      REQUIRE((p >= 0 && p < kProducers));
      if (last.count(p)) REQUIRE(i > last[p]);  // FIFO per producer, as each consumer sees it
      last[p] = i;
      by_producer[p].push_back(i);
    }
  }
  REQUIRE(by_producer.size() == kProducers);
  for (auto& [p, seqs] : by_producer) {
    std::sort(seqs.begin(), seqs.end());
    REQUIRE(seqs.size() == kPerProducer);
    for (int i = 0; i < kPerProducer; ++i) REQUIRE(seqs[static_cast<std::size_t>(i)] == i);
  }
  CHECK(q.empty());
  CHECK_FALSE(shm_test::has_zombie_children());
}

TEST_CASE("Queue: many threads put and get concurrently, nothing lost or duplicated") {
  mp::Queue<std::int64_t> q(16);
  constexpr int kThreads = 4;
  constexpr int kEach = 5000;
  std::atomic<std::int64_t> sum{0};
  std::atomic<int> count{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([q, t]() mutable {
      for (int i = 0; i < kEach; ++i) q.put(std::int64_t{t} * kEach + i, 30s);
    });
    ts.emplace_back([q, &sum, &count]() mutable {
      for (int i = 0; i < kEach; ++i) {
        sum += q.get(30s);
        ++count;
      }
    });
  }
  for (auto& t : ts) t.join();
  const std::int64_t n = std::int64_t{kThreads} * kEach;
  CHECK(count == n);
  CHECK(sum == n * (n - 1) / 2);
  CHECK(q.empty());
}

TEST_CASE("Queue: inherited by an mp::Process, and items outlive the process that put them") {
  mp::Queue<std::string> q;
  mp::Process p([q]() mutable {
    for (int i = 0; i < 100; ++i) q.put(text_of(i));
  });
  p.start();
  REQUIRE(p.join(30s));
  CHECK(p.exitcode() == 0);
  CHECK(q.qsize() == 100);  // the producer exited; its items are still here
  for (int i = 0; i < 100; ++i) REQUIRE(q.get(1s) == text_of(i));
}

TEST_CASE("Queue: sent through a Pipe to a process started before it existed, and used both ways") {
  auto ends = mp::Pipe();
  mp::Connection& parent_end = ends.first;
  mp::Connection& child_end = ends.second;
  const pid_t child = shm_test::spawn([&child_end]() {
    auto q = child_end.recv<mp::Queue<int>>();
    auto back = child_end.recv<mp::Queue<std::string>>();
    int total = 0;
    for (int i = 0; i < 10; ++i) total += q.get(30s);
    back.put("sum=" + std::to_string(total));
    return 0;
  });
  mp::Queue<int> q;  // created after the child started
  mp::Queue<std::string> back;
  parent_end.send(q);
  parent_end.send(back);
  for (int i = 1; i <= 10; ++i) q.put(i);
  CHECK(back.get(30s) == "sum=55");
  CHECK(shm_test::join(child).exitcode == 0);
}

TEST_CASE("Queue: a Pool task argument reaches the worker as the same queue") {
  mp::Pool pool(2);
  mp::Queue<std::string> q;  // created after the workers started
  const int n = pool.apply(
      [](mp::Queue<std::string> queue, int k) {
        for (int i = 0; i < k; ++i) queue.put(text_of(i));
        return k;
      },
      q, 5);
  CHECK(n == 5);
  for (int i = 0; i < 5; ++i) CHECK(q.get(10s) == text_of(i));
  CHECK(q.empty());
}

TEST_CASE("Queue: from_handle rejects another item type or another kind of queue") {
  mp::Queue<int> q;
  REQUIRE_THROWS_MATCHES(mp::Queue<long>::from_handle(q.handle()), mp::ProcessError,
                         MessageContains("item type differs"));
  REQUIRE_THROWS_MATCHES(mp::JoinableQueue<int>::from_handle(q.handle()), mp::ProcessError,
                         MessageContains("describes a Queue"));
  REQUIRE_THROWS_AS(mp::Queue<std::string>::from_handle(mp::Value<int>(1).handle()), mp::ProcessError);
  auto same = mp::Queue<int>::from_handle(q.handle());
  same.put(4);
  CHECK(q.get() == 4);
  // A queue of handles: a Value travels through a Queue.
  mp::Queue<mp::Value<int>> qv;
  mp::Value<int> v(10);
  qv.put(v);
  qv.get().set(11);
  CHECK(v.get() == 11);
}

TEST_CASE("JoinableQueue: join returns only after every task_done, across processes") {
  mp::JoinableQueue<int> q;
  for (int i = 0; i < 20; ++i) q.put(i);
  CHECK(q.unfinished_tasks() == 20);
  CHECK_FALSE(q.join(30ms));  // nobody works yet
  mp::Value<int> processed(0);
  std::vector<pid_t> workers;
  for (int w = 0; w < 2; ++w)
    workers.push_back(shm_test::spawn([q, processed]() mutable {
      for (;;) {
        int item = 0;
        try {
          item = q.get(30s);
        } catch (const mp::Empty&) {
          return 0;
        }
        if (item < 0) {
          q.task_done();
          return 0;
        }
        {
          std::lock_guard g(processed.get_lock());
          processed.get_obj() += 1;
        }
        q.task_done();
      }
    }));
  REQUIRE(q.join(30s));
  CHECK(processed.get() == 20);  // join returned after all 20 task_done
  CHECK(q.unfinished_tasks() == 0);
  q.put(-1);
  q.put(-1);
  q.join();
  for (pid_t pid : workers) CHECK(shm_test::join(pid).exitcode == 0);
  REQUIRE_THROWS_MATCHES(q.task_done(), mp::ProcessError, MessageContains("called more times than there were items"));
  CHECK(q.join(0ms));
}

TEST_CASE("JoinableQueue: items discarded as corrupt or undecodable count as done") {
  mp::JoinableQueue<std::string> q;
  q.put("a");
  q.put("b");
  q.put("c");
  CHECK(q.get() == "a");
  q.task_done();
  auto ring = q.core_for_testing().ring_for_testing();
  // The second record's frame: corrupt its magic; the item is dropped.
  const std::size_t second = mp::detail::QueueCore::record_bytes(mp::encoded_size(std::string("a")));
  for (std::size_t i = 0; i < 4; ++i) ring[second + sizeof(mp::detail::QueueRecord) + i] = std::byte{0xEE};
  REQUIRE_THROWS_AS(q.get(), mp::ProcessError);
  CHECK(q.unfinished_tasks() == 1);
  // The third record's header: the queue is emptied.
  const std::size_t third = second + mp::detail::QueueCore::record_bytes(mp::encoded_size(std::string("b")));
  std::memset(ring.data() + third, 0x5A, sizeof(mp::detail::QueueRecord));
  REQUIRE_THROWS_MATCHES(q.get(), mp::ProcessError, MessageContains("corrupted queue"));
  CHECK(q.unfinished_tasks() == 0);
  CHECK(q.join(1s));
}

TEST_CASE("SimpleQueue: put, get, empty, close, across processes") {
  mp::SimpleQueue<std::string> q;
  CHECK(q.empty());
  const pid_t child = shm_test::spawn([q]() mutable {
    for (int i = 0; i < 50; ++i) q.put(text_of(i));
    return 0;
  });
  for (int i = 0; i < 50; ++i) REQUIRE(q.get() == text_of(i));
  CHECK(shm_test::join(child).exitcode == 0);
  CHECK(q.empty());
  q.put("last");
  q.close();
  REQUIRE_THROWS_AS(q.put("more"), mp::ShutDown);
  CHECK(q.get() == "last");
  REQUIRE_THROWS_AS(q.get(), mp::ShutDown);
  auto other = mp::SimpleQueue<std::string>::from_handle(q.handle());
  CHECK(other.empty());
}

TEST_CASE("Queue: a consumer killed while blocked in get, or while holding the internal lock, blocks nobody") {
  mp::Queue<int> q;
  SECTION("killed while blocked in get") {
    shm_test::Pipe ready;
    const pid_t child = shm_test::spawn([q, &ready]() mutable {
      shm_test::send(ready.w.get(), 1);
      (void)q.get(60s);
      return 0;
    });
    CHECK(shm_test::recv<int>(ready.r.get()) == 1);
    std::this_thread::sleep_for(20ms);  // let it block in get (either way the test holds)
    ::kill(child, SIGKILL);
    CHECK(shm_test::join(child).exitcode == -SIGKILL);
    q.put(1);
    q.put(2);
    CHECK(q.get(5s) == 1);
    CHECK(q.get(5s) == 2);
  }
  SECTION("a consumer killed while holding the consumers' lock (mid-get)") {
    q.put(5);
    shm_test::Pipe ready;
    const pid_t child = shm_test::spawn([q, &ready]() mutable {
      q.core_for_testing().lock_for_testing(false);
      shm_test::send(ready.w.get(), 1);
      ::pause();
      return 0;
    });
    CHECK(shm_test::recv<int>(ready.r.get()) == 1);
    std::thread getter([q]() mutable { CHECK(q.get(10s) == 5); });  // blocks on the lock
    std::this_thread::sleep_for(30ms);  // let it block (the result is the same either way)
    ::kill(child, SIGKILL);
    CHECK(shm_test::join(child).exitcode == -SIGKILL);
    getter.join();
    q.put(6);
    int got = 0;
    const auto t = timed([&] { got = q.get(5s); });
    CHECK(got == 6);
    CHECK(t < 2s);
  }
  SECTION("a producer killed while holding the producers' lock (mid-put)") {
    shm_test::Pipe ready;
    const pid_t child = shm_test::spawn([q, &ready]() mutable {
      q.core_for_testing().lock_for_testing(true);
      shm_test::send(ready.w.get(), 1);
      ::pause();
      return 0;
    });
    CHECK(shm_test::recv<int>(ready.r.get()) == 1);
    std::thread putter([q]() mutable { q.put(77, 10s); });  // blocks on the lock
    std::this_thread::sleep_for(30ms);
    ::kill(child, SIGKILL);
    CHECK(shm_test::join(child).exitcode == -SIGKILL);
    putter.join();
    CHECK(q.get(5s) == 77);
    CHECK(q.empty());
  }
}

TEST_CASE("Queue: R4, 1000 queues created, used and destroyed leak no descriptor, /dev/shm entry or child") {
  const std::size_t fds_before = shm_test::open_fd_count();
  const auto shm_before = shm_test::dev_shm_entries();
  for (int i = 0; i < 1000; ++i) {
    mp::Queue<std::string> q(4);
    mp::JoinableQueue<int> j;
    q.put(text_of(i));
    j.put(i);
    REQUIRE(q.get() == text_of(i));
    REQUIRE(j.get() == i);
    j.task_done();
    if (i % 100 == 0) {  // now and then with another process
      const pid_t child = shm_test::spawn([q]() mutable {
        q.put("from child");
        return 0;
      });
      REQUIRE(q.get(30s) == "from child");
      REQUIRE(shm_test::join(child).exitcode == 0);
    }
  }
  CHECK(shm_test::open_fd_count() == fds_before);
  CHECK(shm_test::dev_shm_entries() == shm_before);
  CHECK_FALSE(shm_test::has_zombie_children());
}

TEST_CASE("Queue: R8, its memory is owner-only (0600) and nothing is left in /dev/shm after a crash") {
  const auto shm_before = shm_test::dev_shm_entries();
  mp::Queue<int> q;
  const auto h = q.handle();
  REQUIRE(h.pid == ::getpid());
  struct stat st{};
  REQUIRE(::stat(("/proc/self/fd/" + std::to_string(h.fd)).c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  // A process that creates queues and is killed leaves nothing behind.
  shm_test::Pipe ready;
  const pid_t child = shm_test::spawn([&ready]() {
    mp::Queue<std::string> a;
    mp::JoinableQueue<int> b(5);
    a.put(std::string(1 << 20, 'x'));
    b.put(1);
    shm_test::send(ready.w.get(), 1);
    ::pause();
    return 0;
  });
  CHECK(shm_test::recv<int>(ready.r.get()) == 1);
  ::kill(child, SIGKILL);
  CHECK(shm_test::join(child).exitcode == -SIGKILL);
  CHECK(shm_test::dev_shm_entries() == shm_before);
}

// ------------------------------------------------- failure model (#11)

namespace {

using Step = mp::detail::QueueStep;
using mp::detail::QueueCore;

const char* step_name(Step step) {
  static const char* const names[] = {"put_locked",    "put_room_found", "put_header_written", "put_written",
                                      "put_journaled", "put_counted",    "put_published",      "get_locked",
                                      "get_skipped",   "get_taken",      "get_journaled",      "get_counted",
                                      "get_published", "realign_locked", "realign_half"};
  return names[static_cast<int>(step)];
}

// The step a child stops at, and the pipe it says so on (see kill_at_step).
std::atomic<int> g_stop_step{-1};
int g_stop_fd = -1;

void stop_at_step(Step step) {
  if (static_cast<int>(step) != g_stop_step.load(std::memory_order_relaxed)) return;
  shm_test::send(g_stop_fd, static_cast<int>(step));
  for (;;) ::pause();  // until the test kills this process
}

// Forks a child that runs op() and stops inside it at `step` (through the
// queue's test hook); once the child says it is there, SIGKILLs and reaps
// it. Fails if the child finished op(), or died, without reaching `step`.
template <class Op>
void kill_at_step(Step step, Op op) {
  shm_test::Pipe pipe;
  const pid_t child = shm_test::spawn([&]() {
    g_stop_fd = pipe.w.get();
    g_stop_step.store(static_cast<int>(step));
    mp::detail::TestHook<mp::detail::QueueStep>::at_step.store(stop_at_step);
    op();
    shm_test::send(pipe.w.get(), -1);
    return 0;
  });
  pipe.w.reset();  // only the child writes: if it dies early, the read sees the pipe closed
  int reached = -2;
  try {
    reached = shm_test::recv<int>(pipe.r.get(), 30s);
  } catch (const std::exception&) {
  }
  ::kill(child, SIGKILL);
  const auto result = shm_test::join(child);
  INFO("the child stopped at step " << reached);
  REQUIRE(reached == static_cast<int>(step));
  REQUIRE(result.exitcode == -SIGKILL);
}

std::uint64_t record_of(const std::string& s) { return QueueCore::record_bytes(mp::encoded_size(s)); }

// A string item whose record takes exactly `bytes` bytes in a queue's ring.
std::string item_of_record(std::uint64_t bytes) {
  for (std::size_t n = 0; n <= bytes; ++n) {
    std::string s(n, 'f');
    if (record_of(s) == bytes) return s;
  }
  throw std::logic_error("no string item has a record of " + std::to_string(bytes) + " bytes");
}

template <class Q>
void task_done_if_joinable(Q& q) {
  if constexpr (requires { q.task_done(); }) q.task_done();
}

// Moves the positions of an empty queue of strings `bytes` forward (one
// item of that record size put and got).
template <class Q>
void advance_positions(Q& q, std::uint64_t bytes) {
  q.put(item_of_record(bytes));
  (void)q.get();
  task_done_if_joinable(q);
}

// Pumps 300 strings of up to ~900 bytes through a queue of strings with a
// 4096-byte ring and a bound of 3 (wrapping the ring many times), keeping
// up to 3 queued: each put must find room at once, each get returns the
// oldest item. Proves the positions and counts are consistent.
template <class Q>
void pump_through(Q& q) {
  std::vector<std::string> sent;
  std::size_t next = 0;
  for (int i = 0; i < 300; ++i) {
    if (sent.size() - next == 3) {
      REQUIRE(q.get_nowait() == sent[next++]);
      task_done_if_joinable(q);
    }
    sent.push_back(text_of(i) + std::string(static_cast<std::size_t>((i * 7919) % 800), 'x'));
    q.put_nowait(sent.back());
  }
  while (next < sent.size()) {
    REQUIRE(q.get_nowait() == sent[next++]);
    task_done_if_joinable(q);
  }
  CHECK(q.empty());
  CHECK(q.qsize() == 0);
}

// Checks that a bounded queue of strings (maxsize 3) holds exactly 3 items.
template <class Q>
void check_holds_exactly_3(Q& q) {
  for (int i = 0; i < 3; ++i) q.put_nowait(text_of(i));
  CHECK(q.full());
  CHECK(q.qsize() == 3);
  REQUIRE_THROWS_AS(q.put_nowait("one too many"), mp::Full);
  for (int i = 0; i < 3; ++i) {
    REQUIRE(q.get_nowait() == text_of(i));
    task_done_if_joinable(q);
  }
  CHECK(q.empty());
}

}  // namespace

TEST_CASE(
    "JoinableQueue: a producer killed at any step of put leaves no phantom item, join returns, the bound frees (#11)",
    "[queue][failure-model]") {
  const Step step = GENERATE(Step::put_locked, Step::put_room_found, Step::put_header_written, Step::put_written,
                             Step::put_journaled, Step::put_counted, Step::put_published);
  const bool wrap = GENERATE(false, true);
  CAPTURE(step_name(step), wrap);
  // The item is queued if and only if its one publishing store was done.
  const bool published = step >= Step::put_counted;
  mp::JoinableQueue<std::string> q(3, 4096);
  const std::string first = "real-1", killed(1000, 'k'), second = "real-2";
  if (wrap) {
    // The killed put's record does not fit before the end of the ring: it
    // writes a skip record there and goes to offset 0.
    const std::uint64_t tail = 4096 - record_of(killed) / 16 * 8;
    advance_positions(q, tail - record_of(first));
  }
  q.put(first);
  kill_at_step(step, [&] { q.put(killed); });

  CHECK(q.qsize() == (published ? 2u : 1u));
  CHECK(q.unfinished_tasks() == (published ? 2u : 1u));
  CHECK_FALSE(q.full());
  // The next put takes the dead producer's lock over, within its deadline.
  const auto put_time = timed([&] { q.put(second, 5s); });
  CHECK(put_time < 1s);
  CHECK(q.get(1s) == first);
  q.task_done();
  if (published) {
    CHECK(q.get(1s) == killed);
    q.task_done();
  }
  CHECK(q.get(1s) == second);
  q.task_done();
  CHECK(q.empty());
  REQUIRE_THROWS_AS(q.get_nowait(), mp::Empty);
  CHECK(q.join(1s));  // every real item is done
  check_holds_exactly_3(q);
  pump_through(q);
  CHECK(q.join(1s));
}

TEST_CASE(
    "JoinableQueue: a consumer killed at any step of get leaves its item queued or consumed, never half or twice (#11)",
    "[queue][failure-model]") {
  const auto [step, wrap] = GENERATE(table<Step, bool>({{Step::get_locked, false},
                                                        {Step::get_taken, false},
                                                        {Step::get_journaled, false},
                                                        {Step::get_counted, false},
                                                        {Step::get_published, false},
                                                        {Step::get_locked, true},
                                                        {Step::get_skipped, true},
                                                        {Step::get_taken, true},
                                                        {Step::get_journaled, true},
                                                        {Step::get_counted, true},
                                                        {Step::get_published, true}}));
  CAPTURE(step_name(step), wrap);
  // The item is consumed if and only if its one consuming store was done.
  const bool consumed = step >= Step::get_counted;
  mp::JoinableQueue<std::string> q(3, 4096);
  const std::string first(200, '1'), second = "item-2";
  if (wrap) advance_positions(q, 4096 - 40);  // `first` does not fit in the last 40 bytes: a skip record precedes it
  q.put(first);
  q.put(second);
  kill_at_step(step, [&] { (void)q.get(); });

  CHECK(q.qsize() == (consumed ? 1u : 2u));
  CHECK(q.unfinished_tasks() == 2u);  // the dead consumer did not call task_done
  std::string got;
  const auto get_time = timed([&] { got = q.get(5s); });
  CHECK(get_time < 1s);
  CHECK(got == (consumed ? second : first));
  q.task_done();
  if (!consumed) {
    CHECK(q.get(1s) == second);
    q.task_done();
  }
  CHECK(q.empty());
  REQUIRE_THROWS_AS(q.get_nowait(), mp::Empty);  // nothing is delivered twice
  if (consumed) {
    // The dead consumer got `first` and never reported it done: join waits
    // for it (as Python's does); join(timeout) says so, and whoever knows
    // the consumer died may report the task done in its place.
    CHECK(q.unfinished_tasks() == 1u);
    CHECK_FALSE(q.join(50ms));
    q.task_done();
  }
  CHECK(q.join(1s));
  check_holds_exactly_3(q);
  pump_through(q);
  CHECK(q.join(1s));
}

TEST_CASE(
    "Queue: a consumer killed after consuming gives the item's bytes back to a waiting put, with no consumer to come "
    "(#11)",
    "[queue][failure-model]") {
  mp::Queue<std::string> q(0, 4096);
  // Items whose records fit twice in the ring but not three times.
  const std::string a = item_of_record(1800), b(a.size(), 'b'), c(a.size(), 'c');
  q.put(a);
  q.put(b);
  REQUIRE_THROWS_AS(q.put_nowait(c), mp::Full);
  // Killed after the store that consumes `a`, before the one that gives
  // its bytes back.
  kill_at_step(Step::get_counted, [&] { (void)q.get(); });
  CHECK(q.qsize() == 1u);
  const auto put_time = timed([&] { REQUIRE_NOTHROW(q.put(c, 5s)); });
  CHECK(put_time < 1s);
  CHECK(q.get(1s) == b);
  CHECK(q.get(1s) == c);
  CHECK(q.empty());
}

TEST_CASE("JoinableQueue: a consumer killed while dropping an undecodable item does not keep join waiting (#11)",
          "[queue][failure-model]") {
  mp::JoinableQueue<std::vector<int>> q;
  q.put({1, 2, 3});
  auto ring = q.core_for_testing().ring_for_testing();
  for (std::size_t i = sizeof(mp::detail::QueueRecord); i < sizeof(mp::detail::QueueRecord) + 4; ++i)
    ring[i] = std::byte{0xEE};  // the frame's magic: the item does not decode and is dropped
  // Killed after the store that consumes (drops) it, before the one that
  // counts it dropped.
  kill_at_step(Step::get_counted, [&] {
    try {
      (void)q.get();
    } catch (const mp::ProcessError&) {
    }
  });
  CHECK(q.empty());
  bool joined = false;
  const auto join_time = timed([&] { joined = q.join(5s); });
  CHECK(joined);
  CHECK(join_time < 1s);
  CHECK(q.unfinished_tasks() == 0u);
  q.put({4});
  CHECK(q.get(1s) == std::vector<int>{4});
  q.task_done();
  CHECK(q.join(1s));
}

TEST_CASE("Queue: a producer killed while it realigns an empty queue under both locks leaves the ring consistent (#11)",
          "[queue][failure-model]") {
  const Step step = GENERATE(Step::realign_locked, Step::realign_half);
  CAPTURE(step_name(step));
  mp::Queue<std::string> q(3, 4096);
  advance_positions(q, 2048);
  const std::string big = item_of_record(3000);  // fits neither in the ring's last 2048 bytes nor in its first
  kill_at_step(step, [&] { q.put(big); });

  CHECK(q.empty());
  const auto put_time = timed([&] { q.put(big, 5s); });
  CHECK(put_time < 1s);
  CHECK(q.get(1s) == big);
  REQUIRE_THROWS_AS(q.get_nowait(), mp::Empty);
  check_holds_exactly_3(q);
  pump_through(q);
}

TEST_CASE(
    "JoinableQueue: a consumer killed between get() and task_done() leaves its task unfinished, join(timeout) says so "
    "(#11)",
    "[queue][failure-model]") {
  mp::JoinableQueue<int> q;
  q.put(1);
  q.put(2);
  shm_test::Pipe got;
  const pid_t child = shm_test::spawn([&] {
    shm_test::send(got.w.get(), q.get());
    for (;;) ::pause();
    return 0;
  });
  CHECK(shm_test::recv<int>(got.r.get()) == 1);
  ::kill(child, SIGKILL);
  CHECK(shm_test::join(child).exitcode == -SIGKILL);
  CHECK(q.get(1s) == 2);
  q.task_done();
  CHECK(q.unfinished_tasks() == 1u);
  const auto waited = timed([&] { CHECK_FALSE(q.join(100ms)); });
  CHECK(waited >= 100ms);
  CHECK(waited < 2s);
  q.task_done();  // on behalf of the dead consumer
  CHECK(q.join(1s));
}

TEST_CASE("Queue: timed put and get keep their deadlines while a live process holds the internal lock (#11)",
          "[queue][failure-model]") {
  const bool producers = GENERATE(true, false);
  CAPTURE(producers);
  mp::Queue<int> q(4);
  q.put(1);
  shm_test::Pipe ready;
  const pid_t child = shm_test::spawn([&] {
    q.core_for_testing().lock_for_testing(producers);
    shm_test::send(ready.w.get(), 1);
    for (;;) ::pause();
    return 0;
  });
  CHECK(shm_test::recv<int>(ready.r.get()) == 1);
  // If the call ignored its deadline it would wait for the holder: a
  // watchdog kills the holder after 5 s so that the test ends either way.
  std::promise<void> finished;
  std::thread watchdog([child, f = finished.get_future()] {
    if (f.wait_for(5s) != std::future_status::ready) ::kill(child, SIGKILL);
  });
  const auto waited = timed([&] {
    if (producers)
      CHECK_THROWS_MATCHES(q.put(2, 200ms), mp::Full,
                           MessageContains("Queue.put(): timed out waiting for the producers' lock"));
    else
      CHECK_THROWS_MATCHES(q.get(200ms), mp::Empty,
                           MessageContains("Queue.get(): timed out waiting for the consumers' lock"));
  });
  finished.set_value();
  watchdog.join();
  CHECK(waited >= 200ms);
  CHECK(waited < 1500ms);
  ::kill(child, SIGKILL);
  CHECK(shm_test::join(child).exitcode == -SIGKILL);
  // The dead holder's lock is taken over.
  q.put(2, 5s);
  CHECK(q.get(5s) == 1);
  CHECK(q.get(5s) == 2);
}

namespace {

// How one timed call went in the signal-storm child.
struct StormWait {
  double elapsed_ms = 0;
  double cpu_ms = 0;
  bool timed_out = false;  // threw Full / Empty, or join returned false
};

std::atomic<int> g_storm_signals{0};

double process_cpu_ms() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

}  // namespace

TEST_CASE("Queue: timed put, get and join keep their deadlines without spinning under a 1 ms signal storm (#11)",
          "[queue][failure-model]") {
  mp::JoinableQueue<int> full(1);
  full.put(1);  // full, and one task unfinished
  mp::Queue<int> empty;
  shm_test::Pipe results;
  const pid_t child = shm_test::spawn([&] {
    // A host program's interval timer: SIGALRM every millisecond, handled
    // without SA_RESTART, so every sleep is interrupted.
    struct sigaction sa{};
    sa.sa_handler = [](int) { g_storm_signals.fetch_add(1, std::memory_order_relaxed); };
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    ::sigaction(SIGALRM, &sa, nullptr);
    itimerval every_ms{};
    every_ms.it_interval.tv_usec = 1000;
    every_ms.it_value.tv_usec = 1000;
    ::setitimer(ITIMER_REAL, &every_ms, nullptr);
    const auto measure = [&](auto op) {
      StormWait w;
      const double cpu0 = process_cpu_ms();
      const auto t0 = Clock::now();
      w.timed_out = op();
      w.elapsed_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
      w.cpu_ms = process_cpu_ms() - cpu0;
      shm_test::send(results.w.get(), w);
    };
    measure([&] {
      try {
        full.put(2, 1s);
      } catch (const mp::Full&) {
        return true;
      }
      return false;
    });
    measure([&] {
      try {
        (void)empty.get(1s);
      } catch (const mp::Empty&) {
        return true;
      }
      return false;
    });
    measure([&] { return !full.join(1s); });
    shm_test::send(results.w.get(), g_storm_signals.load());
    return 0;
  });
  for (const char* what : {"put", "get", "join"}) {
    const auto w = shm_test::recv<StormWait>(results.r.get());
    INFO(what << ": " << w.elapsed_ms << " ms elapsed, " << w.cpu_ms << " ms of CPU");
    CHECK(w.timed_out);
    CHECK(w.elapsed_ms >= 1000);
    CHECK(w.elapsed_ms < 2000);
    CHECK(w.cpu_ms < 100);
  }
  const int signals = shm_test::recv<int>(results.r.get());
  CHECK(signals > 300);  // the storm did happen
  CHECK(shm_test::join(child).exitcode == 0);
}

TEST_CASE(
    "Queue: random bytes written over the ring make get return items or throw ProcessError, never crash or loop (#11)",
    "[queue][failure-model]") {
  std::mt19937 rng(20240611);
  const auto below = [&rng](std::uint32_t n) { return static_cast<std::uint32_t>(rng() % n); };
  const std::uint64_t smallest = record_of("");
  for (int round = 0; round < 300; ++round) {
    CAPTURE(round);
    mp::Queue<std::string> q(0, 4096);
    advance_positions(q, smallest + 8 * below(480));  // the records start anywhere in the ring
    const int n = 1 + static_cast<int>(below(6));
    for (int i = 0; i < n; ++i) q.put(text_of(i) + std::string(below(300), 'r'));
    auto ring = q.core_for_testing().ring_for_testing();
    for (std::uint32_t k = 1 + below(4); k > 0; --k) {
      const std::uint32_t at = below(4096), len = 1 + below(16);
      for (std::uint32_t i = 0; i < len; ++i) ring[(at + i) % 4096] = static_cast<std::byte>(rng());
    }
    // Each get consumes at least one record or empties the queue.
    bool emptied = false;
    for (int attempt = 0; attempt <= n && !emptied; ++attempt) {
      try {
        (void)q.get_nowait();
      } catch (const mp::Empty&) {
        emptied = true;
      } catch (const mp::ProcessError&) {
      }
    }
    CHECK(q.empty());
    REQUIRE_THROWS_AS(q.get_nowait(), mp::Empty);
    q.put("after");
    REQUIRE(q.get_nowait() == "after");
  }
}
