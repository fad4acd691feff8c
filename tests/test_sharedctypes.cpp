// Value<T>, Array<T>, RawValue<T>, RawArray<T> and the read-only Array<const T>: construction, access,
// errors, sharing with forked children and with children started before
// the object existed (by handle), element-type checks, and recovery of the
// Value lock from a holder that died (R5).
#include <chrono>
#include <mutex>
#include <numeric>
#include <ranges>
#include <span>
#include <tuple>
#include <type_traits>
#include <vector>

#include <signal.h>

#include <mproc/pool.hpp>
#include <mproc/sharedctypes.hpp>

#include "catch.hpp"
#include "shm_children.hpp"

namespace mp = mproc;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using mproc_test::MessageContains;

namespace {

struct Point {
  double x;
  double y;
  int id;
};

struct Defaulted {  // value-initialization is not all-zero bytes
  int a = 7;
  float b = 1.5f;
};

}  // namespace

TEST_CASE("Value: get, set, get_obj, defaults and struct types") {
  mp::Value<int> v(41);
  CHECK(v.get() == 41);
  v.set(42);
  CHECK(v.get() == 42);
  v.get_obj() += 1;
  CHECK(v.get() == 43);
  CHECK(mp::Value<double>().get() == 0.0);
  mp::Value<Point> p(Point{1.5, -2.5, 7});
  CHECK(p.get().y == -2.5);
  p.set({3, 4, 5});
  CHECK(p.get_obj().id == 5);
  CHECK(mp::RawValue<Defaulted>().get().a == 7);
}

TEST_CASE("Value: copies share the memory and the lock") {
  mp::Value<long> a(1);
  mp::Value<long> b = a;
  b.set(2);
  CHECK(a.get() == 2);
  mp::Value<long> c(0);
  c = a;
  c.get_obj() = 3;
  CHECK(a.get() == 3);
  std::lock_guard guard(a.get_lock());
  CHECK(c.get_lock().try_acquire());  // same RLock, same thread: recursion
  c.get_lock().release();
  CHECK(a.get() == 3);  // get() inside the held lock: recursive, no deadlock
}

TEST_CASE("Value: a forked child's writes are seen by the parent") {
  mp::Value<double> num(0.0);
  mp::RawValue<int> raw(0);
  CHECK(mproc_test::run_in_child([&] {
          num.set(3.1415927);
          raw.set(-5);
          return 0;
        }).exitcode == 0);
  CHECK(num.get() == 3.1415927);
  CHECK(raw.get() == -5);
}

TEST_CASE("Value: increments under get_lock from several processes are exact") {
  mp::Value<int> counter(0);
  constexpr int kProcs = 4, kIters = 25000;
  std::vector<pid_t> pids;
  for (int p = 0; p < kProcs; ++p)
    pids.push_back(shm_test::spawn([&] {
      for (int i = 0; i < kIters; ++i) {
        std::lock_guard guard(counter.get_lock());
        counter.get_obj() += 1;
      }
      return 0;
    }));
  for (int i = 0; i < kIters; ++i) {  // the parent too, through get/set under the (recursive) lock
    std::lock_guard guard(counter.get_lock());
    counter.set(counter.get() + 1);
  }
  for (pid_t pid : pids) CHECK(shm_test::join(pid).exitcode == 0);
  CHECK(counter.get() == (kProcs + 1) * kIters);
}

TEST_CASE("Value: a process killed holding get_lock() is recovered within 100 ms (R5)") {
  mp::Value<int> v(10);
  shm_test::Pipe ready;
  const pid_t pid = shm_test::spawn([&] {
    v.get_lock().acquire();
    v.get_obj() = 11;  // a half-done update
    shm_test::send(ready.w.get(), 'h');
    ::raise(SIGKILL);
    return 0;
  });
  shm_test::recv<char>(ready.r.get());
  bool got = false;
  const auto start = Clock::now();
  got = v.get_lock().acquire(5s);
  const auto took = Clock::now() - start;
  CHECK(got);
  CHECK(took < 100ms);
  CHECK(v.get_lock().recovered());
  CHECK(v.get() == 11);
  v.get_lock().release();
  CHECK(shm_test::join(pid).exitcode == -SIGKILL);
  v.set(12);  // usable as usual afterwards
  CHECK(v.get() == 12);
}

TEST_CASE("Array: zero-filled, from a range, element access") {
  mp::Array<int> zeros(5);
  CHECK(zeros.size() == 5);
  CHECK(std::all_of(zeros.begin(), zeros.end(), [](int x) { return x == 0; }));
  mp::Array<int> empty(0);
  CHECK(empty.empty());
  CHECK(empty.begin() == empty.end());

  mp::Array<int> arr(std::views::iota(0, 10));
  REQUIRE(arr.size() == 10);
  for (int i = 0; i < 10; ++i) CHECK(arr[static_cast<std::size_t>(i)] == i);
  CHECK(std::accumulate(arr.begin(), arr.end(), 0) == 45);
  arr.at(9) = -9;
  CHECK(arr.data()[9] == -9);
  REQUIRE_THROWS_MATCHES(arr.at(10), mp::ProcessError, MessageContains("Array.at(10): index out of range (size 10)"));

  std::span<int> span = arr;
  span[0] = 100;
  CHECK(arr[0] == 100);
  CHECK(arr.get_obj().size() == 10);
  const mp::Array<int>& cref = arr;
  std::span<const int> cspan = cref;
  CHECK(cspan[0] == 100);

  mp::Array<double> from_vec(std::vector<double>{1.5, 2.5});
  CHECK(from_vec[1] == 2.5);
  mp::RawArray<float> from_list(std::vector<int>{1, 2, 3});  // converting elements
  CHECK(from_list[2] == 3.0f);
  auto odd = std::views::iota(0, 6) | std::views::filter([](int x) { return x % 2 == 1; });  // not sized
  mp::RawArray<int> odds(odd);
  CHECK(std::vector<int>(odds.begin(), odds.end()) == std::vector<int>{1, 3, 5});
  mp::Array<Defaulted> defaulted(3);
  CHECK(defaulted[2].a == 7);
  // Array data starts on a cache line (vector loads), small or large.
  CHECK(reinterpret_cast<std::uintptr_t>(from_vec.data()) % 64 == 0);
  CHECK(reinterpret_cast<std::uintptr_t>(mp::RawArray<char>(3).data()) % 64 == 0);
  CHECK(reinterpret_cast<std::uintptr_t>(mp::Array<float>(100000).data()) % 64 == 0);
}

TEST_CASE("Array: copies share elements, construction from an Array copies them") {
  mp::Array<int> a(3);
  mp::Array<int> shared = a;
  shared[1] = 5;
  CHECK(a[1] == 5);
  mp::RawArray<int> copied(a);  // a range of ints: a new array
  copied[1] = 6;
  CHECK(a[1] == 5);
}

TEST_CASE("Array: wrong sizes throw") {
  REQUIRE_THROWS_MATCHES(mp::Array<int>(-1), mp::ProcessError, MessageContains("Array(-1): the size must be >= 0"));
  REQUIRE_THROWS_MATCHES(mp::RawArray<double>(-5L), mp::ProcessError, MessageContains("RawArray(-5)"));
  REQUIRE_THROWS_MATCHES(mp::Array<double>(std::size_t{1} << 62), mp::ProcessError, MessageContains("too large"));
  REQUIRE_THROWS_MATCHES(mp::RawArray<char>(SIZE_MAX), mp::ProcessError, MessageContains("too large"));
}

TEST_CASE("Array: large arrays are shared with forked children") {
  constexpr std::size_t kN = 1 << 20;  // 8 MiB: a segment of its own
  mp::Array<double> big(kN);
  mp::RawArray<std::uint8_t> bytes(300000);
  CHECK(mproc_test::run_in_child([&] {
          for (std::size_t i = 0; i < kN; ++i) big[i] = static_cast<double>(i);
          bytes[299999] = 7;
          return 0;
        }).exitcode == 0);
  CHECK(big[kN - 1] == static_cast<double>(kN - 1));
  CHECK(std::accumulate(big.begin(), big.end(), 0.0) == static_cast<double>(kN) * (kN - 1) / 2);
  CHECK(bytes[299999] == 7);
}

TEST_CASE("Value and Array made after a child started reach it by handle") {
  shm_test::Pipe to_child;
  const pid_t child = shm_test::spawn([&] {
    auto v = mp::Value<double>::from_handle(shm_test::recv<mp::detail::ShmHandle>(to_child.r.get()));
    auto a = mp::Array<int>::from_handle(shm_test::recv<mp::detail::ShmHandle>(to_child.r.get()));
    auto big = mp::Array<double>::from_handle(shm_test::recv<mp::detail::ShmHandle>(to_child.r.get()));
    auto rv = mp::RawValue<int>::from_handle(shm_test::recv<mp::detail::ShmHandle>(to_child.r.get()));
    auto ra = mp::RawArray<char>::from_handle(shm_test::recv<mp::detail::ShmHandle>(to_child.r.get()));
    if (a.size() != 10 || big.size() != 100000 || ra.size() != 3) return 3;
    v.set(3.1415927);
    for (auto& x : a) x = -x;
    {
      std::lock_guard guard(big.get_lock());
      big[99999] = 2.5;
    }
    rv.set(rv.get() + 1);
    ra[2] = 'z';
    return 0;
  });
  mp::Value<double> v(0.0);
  mp::Array<int> a(std::views::iota(0, 10));
  mp::Array<double> big(100000);
  mp::RawValue<int> rv(41);
  mp::RawArray<char> ra(3);
  for (const auto& h : {v.handle(), a.handle(), big.handle(), rv.handle(), ra.handle()})
    shm_test::send(to_child.w.get(), h);
  CHECK(shm_test::join(child).exitcode == 0);
  CHECK(v.get() == 3.1415927);
  CHECK(std::vector<int>(a.begin(), a.end()) == std::vector<int>{0, -1, -2, -3, -4, -5, -6, -7, -8, -9});
  CHECK(big[99999] == 2.5);
  CHECK(rv.get() == 42);
  CHECK(ra[2] == 'z');
}

TEST_CASE("Value/Array handles: same memory in-process, type and kind checked") {
  mp::Value<int> v(5);
  auto again = mp::Value<int>::from_handle(v.handle());
  CHECK(&again.get_obj() == &v.get_obj());
  CHECK(again.get_lock() == v.get_lock());
  auto lock_alone = mp::RLock::from_handle(v.get_lock().handle());  // the embedded lock can travel alone
  CHECK(lock_alone == v.get_lock());

  REQUIRE_THROWS_MATCHES(mp::Value<float>::from_handle(v.handle()), mp::ProcessError,
                         MessageContains("its element type differs"));
  REQUIRE_THROWS_MATCHES(mp::Value<unsigned>::from_handle(v.handle()), mp::ProcessError,
                         MessageContains("invalid handle for Value"));
  REQUIRE_THROWS_MATCHES(mp::Array<int>::from_handle(v.handle()), mp::ProcessError,
                         MessageContains("invalid handle for Array: it describes a Value"));
  REQUIRE_THROWS_MATCHES(mp::RawValue<int>::from_handle(v.handle()), mp::ProcessError,
                         MessageContains("it describes a Value"));
  mp::Array<int> arr(4);
  auto h = arr.handle();
  h.kind = static_cast<std::uint16_t>(mp::detail::ShmKind::value);  // lie about the kind
  REQUIRE_THROWS_MATCHES(mp::Value<int>::from_handle(h), mp::ProcessError, MessageContains("no Value at offset"));
  h = arr.handle();
  h.length = 64;  // shorter than header + lock
  REQUIRE_THROWS_MATCHES(mp::Array<int>::from_handle(h), mp::ProcessError, MessageContains("too small"));
  h = arr.handle();
  h.ino += 1;  // another segment
  REQUIRE_THROWS_MATCHES(mp::Array<int>::from_handle(h), mp::ProcessError, MessageContains("no longer exists"));
}

TEST_CASE("Value/Array handles whose creator exited fail cleanly") {
  shm_test::Pipe pipe;
  const pid_t child = shm_test::spawn([&] {
    mp::Value<int> v(1);
    mp::Array<double> big(100000);
    shm_test::send(pipe.w.get(), v.handle());
    shm_test::send(pipe.w.get(), big.handle());
    return 0;
  });
  const auto vh = shm_test::recv<mp::detail::ShmHandle>(pipe.r.get());
  const auto bh = shm_test::recv<mp::detail::ShmHandle>(pipe.r.get());
  CHECK(shm_test::join(child).exitcode == 0);
  REQUIRE_THROWS_MATCHES(mp::Value<int>::from_handle(vh), mp::ProcessError,
                         MessageContains("the shared memory segment no longer exists"));
  REQUIRE_THROWS_MATCHES(mp::Array<double>::from_handle(bh), mp::ProcessError, MessageContains("exited or freed it"));
}

TEST_CASE("Value and Array cross dumps/loads by handle into a child started before them") {
  shm_test::Pipe to_child;
  const pid_t child = shm_test::spawn([&] {
    auto v = mp::loads<mp::Value<double>>(shm_test::recv_frame(to_child.r.get()));
    auto a = mp::loads<mp::Array<int>>(shm_test::recv_frame(to_child.r.get()));
    auto big = mp::loads<mp::Array<double>>(shm_test::recv_frame(to_child.r.get()));
    auto [rv, ra] = mp::loads<std::pair<mp::RawValue<int>, mp::RawArray<char>>>(shm_test::recv_frame(to_child.r.get()));
    v.set(3.1415927);
    for (auto& x : a) x = -x;
    big[99999] = 2.5;
    rv.set(rv.get() + 1);
    ra[2] = 'z';
    return 0;
  });
  mp::Value<double> v(0.0);
  mp::Array<int> a(std::views::iota(0, 10));
  mp::Array<double> big(100000);
  mp::RawValue<int> rv(41);
  mp::RawArray<char> ra(3);
  const auto big_frame = mp::dumps(big);
  CHECK(big_frame.size() < 200);  // a handle, not 800 KB of doubles
  shm_test::send_frame(to_child.w.get(), mp::dumps(v));
  shm_test::send_frame(to_child.w.get(), mp::dumps(a));
  shm_test::send_frame(to_child.w.get(), big_frame);
  shm_test::send_frame(to_child.w.get(), mp::dumps(std::pair(rv, ra)));
  CHECK(shm_test::join(child).exitcode == 0);
  CHECK(v.get() == 3.1415927);
  CHECK(std::vector<int>(a.begin(), a.end()) == std::vector<int>{0, -1, -2, -3, -4, -5, -6, -7, -8, -9});
  CHECK(big[99999] == 2.5);
  CHECK(rv.get() == 42);
  CHECK(ra[2] == 'z');
}

TEST_CASE("Value/Array frames: wrong type, truncation and a dead creator throw ProcessError") {
  mp::Value<int> v(1);
  REQUIRE_THROWS_AS(mp::loads<mp::Value<float>>(mp::dumps(v)), mp::ProcessError);  // frame fingerprint
  auto frame = mp::dumps(v);
  frame.resize(frame.size() - 8);
  REQUIRE_THROWS_AS(mp::loads<mp::Value<int>>(frame), mp::ProcessError);
  shm_test::Pipe pipe;
  const pid_t child = shm_test::spawn([&] {
    mp::Array<double> mine(10);
    shm_test::send_frame(pipe.w.get(), mp::dumps(mine));
    return 0;
  });
  const auto dead = shm_test::recv_frame(pipe.r.get());
  CHECK(shm_test::join(child).exitcode == 0);
  REQUIRE_THROWS_MATCHES(mp::loads<mp::Array<double>>(dead), mp::ProcessError, MessageContains("no longer exists"));
}

// ------------------------------------------------------------ read-only views

namespace {
double sum_read_only(mp::Array<const double> a) {
  double s = 0;
  for (double x : a) s += x;
  return s;
}
double element_read_only(const mp::RawArray<const int>& a, int i) { return a.at(static_cast<std::size_t>(i)); }
}  // namespace

TEST_CASE("Array<const T> and RawArray<const T>: read-only views of the same memory, also in pool tasks") {
  mp::Array<double> a(std::vector<double>{1.5, 2.5, 3.0});
  mp::Array<const double> r = a;  // implicit, as span<T> -> span<const T>
  const mp::Array<const double> r2 = a.as_const();
  static_assert(std::is_same_v<decltype(r[0]), const double&>);
  static_assert(!std::is_assignable_v<decltype(r[0]), double>);
  static_assert(std::is_same_v<decltype(r.data()), const double*>);
  static_assert(!std::is_convertible_v<mp::Array<const double>, mp::Array<double>>);
  static_assert(!std::is_convertible_v<mp::Array<const double>, std::span<double>>);
  const std::span<const double> view = r;
  CHECK(view.size() == 3);
  a[1] = 7.0;  // one memory: the views see the write
  CHECK(r[1] == 7.0);
  CHECK(r2.at(1) == 7.0);
  CHECK_THROWS_MATCHES(r.at(3), mp::ProcessError, MessageContains("Array.at(3): index out of range (size 3)"));
  {
    std::lock_guard g(r.get_lock());
    CHECK(r.get_obj()[0] == 1.5);
  }  // the array's own lock

  const auto opened = mp::Array<const double>::from_handle(a.handle());
  CHECK(opened.size() == 3);
  CHECK(opened[2] == 3.0);
  CHECK(opened.data() == a.data());  // (same process: the same mapping)

  mp::RawArray<int> raw(std::views::iota(0, 5));
  const mp::RawArray<const int> raw_view = raw.as_const();
  static_assert(!std::is_assignable_v<decltype(raw_view[0]), int>);
  CHECK(raw_view[4] == 4);

  mp::Pool pool(2);
  CHECK(pool.apply(sum_read_only, a) == 1.5 + 7.0 + 3.0);  // Array<double> converts to the task's Array<const double>
  CHECK(pool.apply(sum_read_only, a.as_const()) == 11.5);
  CHECK(pool.starmap(element_read_only, std::vector<std::tuple<mp::RawArray<const int>, int>>{{raw, 1}, {raw, 3}}) ==
        std::vector<double>{1.0, 3.0});
}

// ------------------------------------------------------------ lock options (Python: lock=True/False/a lock)

namespace {
// Adds `n` to v, one increment at a time under v's lock.
int add_under_lock(mp::Value<long, mp::Lock> v, mp::Array<long, mp::Lock> hits, int n) {
  for (int i = 0; i < n; ++i) {
    std::lock_guard g(v.get_lock());  // also guards `hits`: the same lock
    v.get_obj() += 1;
    hits[0] += 1;
  }
  return n;
}
// What a worker sees of a value's lock while the test holds it.
std::pair<bool, bool> lock_seen(mp::Value<int, mp::Lock> v) {
  const bool held = v.get_lock().locked();
  const bool taken = v.get_lock().try_acquire();
  if (taken) v.get_lock().release();
  return {held, taken};
}
}  // namespace

TEST_CASE("Value and Array with a given lock share it, also in pool workers (Python: lock=l)") {
  mp::Lock lock;
  mp::Value v(0L, lock);  // deduces Value<long, mp::Lock>
  static_assert(std::is_same_v<decltype(v), mp::Value<long, mp::Lock>>);
  static_assert(std::is_same_v<decltype(v.get_lock()), mp::Lock&>);
  mp::Array<long, mp::Lock> hits(1, lock);
  CHECK(v.has_given_lock());
  CHECK(hits.has_given_lock());
  CHECK(v.get_lock() == lock);
  CHECK(hits.get_lock() == lock);
  {
    std::lock_guard g(lock);
    CHECK(v.get_lock().locked());
    CHECK_FALSE(hits.get_lock().try_acquire());  // one lock, held
  }
  CHECK_FALSE(lock.locked());
  v.set(5);  // get() and set() take the given lock
  CHECK(v.get() == 5);
  CHECK_FALSE(lock.locked());

  mp::Pool pool(2);
  CHECK(pool.starmap(add_under_lock, std::vector<std::tuple<mp::Value<long, mp::Lock>, mp::Array<long, mp::Lock>, int>>(
                                         4, {v, hits, 500})) == std::vector<int>{500, 500, 500, 500});
  CHECK(v.get() == 2005);
  CHECK(hits[0] == 2000);

  mp::Value w(7, lock);
  std::pair<bool, bool> seen;
  {
    std::lock_guard g(lock);
    seen = pool.apply(lock_seen, w);  // the worker opens the same lock from the value's frame
  }
  CHECK(seen == std::pair{true, false});
  CHECK(pool.apply(lock_seen, w) == std::pair{false, true});
}

TEST_CASE("Value<T, Lock> and Array<T, Lock> own a non-recursive Lock, the default is an RLock of their own") {
  mp::Value<int, mp::Lock> v(3);
  CHECK_FALSE(v.has_given_lock());
  {
    std::lock_guard g(v.get_lock());
    CHECK_FALSE(v.get_lock().try_acquire());  // not recursive
  }
  mp::Value<int> r(3);
  {
    std::lock_guard g(r.get_lock());
    CHECK(r.get_lock().try_acquire());  // recursive
    r.get_lock().release();
    CHECK(r.get() == 3);  // get() re-enters the RLock
  }
  mp::Array<double, mp::Lock> a(std::vector<double>{1.0, 2.0});
  const mp::Array<const double, mp::Lock> view = a.as_const();
  CHECK(view.get_lock() == a.get_lock());
  // Each object's own lock is its own.
  mp::Value<int, mp::Lock> other(3);
  CHECK_FALSE(other.get_lock() == v.get_lock());

  // Across dumps/loads: the same memory and the same lock.
  auto v2 = mp::loads<mp::Value<int, mp::Lock>>(mp::dumps(v));
  v2.set(9);
  CHECK(v.get() == 9);
  auto a2 = mp::loads<mp::Array<const double, mp::Lock>>(mp::dumps(a.as_const()));
  CHECK(a2[1] == 2.0);
  std::lock_guard g(a.get_lock());
  CHECK(a2.get_lock().locked());
}

TEST_CASE("Value/Array lock options: mismatched lock types, missing lock handles and bad sizes throw clearly") {
  using LockedValue = mp::Value<int, mp::Lock>;  // (aliases: macro arguments cannot hold a bare comma)
  using LockedArray = mp::Array<int, mp::Lock>;
  using LockedDoubles = mp::Array<double, mp::Lock>;
  LockedValue own_lock(1);
  // Frames carry their type (loads refuses another one); handles are checked when opened.
  REQUIRE_THROWS_MATCHES(mp::loads<mp::Value<int>>(mp::dumps(own_lock)), mp::ProcessError,
                         MessageContains("type mismatch"));
  REQUIRE_THROWS_MATCHES(mp::Value<int>::from_handle(own_lock.handle()), mp::ProcessError,
                         MessageContains("invalid handle for Value: its lock is not an RLock"));
  mp::Array<int> own_rlock(2);
  REQUIRE_THROWS_MATCHES(LockedArray::from_handle(own_rlock.handle()), mp::ProcessError,
                         MessageContains("invalid handle for Array: its lock is not a Lock"));

  mp::Lock lock;
  mp::Value given(1, lock);
  // The given lock is a Lock: reading it as a value with an RLock fails on the lock's handle.
  REQUIRE_THROWS_MATCHES(mp::Value<int>::from_handle(given.handle(), lock.handle()), mp::ProcessError,
                         MessageContains("invalid handle for RLock: it describes a Lock"));
  REQUIRE_THROWS_MATCHES(LockedValue::from_handle(given.handle()), mp::ProcessError,
                         MessageContains("invalid handle for Value: it uses a lock of its own choosing"));
  CHECK(LockedValue::from_handle(given.handle(), lock.handle()).get() == 1);
  auto frame = mp::dumps(given);  // data handle + lock handle: cut the lock's
  frame.resize(frame.size() - 8);
  REQUIRE_THROWS_AS(mp::loads<LockedValue>(frame), mp::ProcessError);

  LockedArray arr(3, lock);
  REQUIRE_THROWS_MATCHES(LockedArray::from_handle(arr.handle()), mp::ProcessError,
                         MessageContains("invalid handle for Array: it uses a lock of its own choosing; pass that "
                                         "lock's handle too (from_handle(data, lock))"));
  REQUIRE_THROWS_MATCHES(arr.at(3), mp::ProcessError, MessageContains("Array.at(3): index out of range (size 3)"));
  REQUIRE_THROWS_MATCHES(LockedArray(-1, lock), mp::ProcessError, MessageContains("Array(-1): the size must be >= 0"));
  REQUIRE_THROWS_MATCHES(LockedDoubles(std::size_t{1} << 62, lock), mp::ProcessError,
                         MessageContains("Array(4611686018427387904): too large"));
  CHECK(mp::RawArray<int>::from_handle(arr.handle()).size() == 3);  // the memory alone, as Python's get_obj()
}
