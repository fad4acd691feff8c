// Tests of the pools' shared policy and containers: the automatic chunk size
// and imap's read-ahead (detail/pool/scheduling.hpp), and the reorder buffer
// of ordered imap (detail/pool/reorder.hpp), the Pool's affinity table
// (detail/pool/affinity.hpp) and the locality probe behind it.
// SPDX-License-Identifier: MIT
#include <algorithm>
#include <cstddef>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <stdexcept>
#include <vector>

#include <mproc/detail/pool/affinity.hpp>
#include <mproc/detail/pool/reorder.hpp>
#include <mproc/detail/pool/scheduling.hpp>
#include <mproc/detail/shm/handle_serialize.hpp>

#include "catch.hpp"

namespace md = mproc::detail;

TEST_CASE("auto_chunksize is Python's Pool chunksize for process pools", "[scheduling]") {
  for (std::size_t workers = 1; workers <= 9; ++workers) {
    for (std::size_t items = 1; items <= 500; ++items) {
      // chunksize, extra = divmod(len, processes * 4); if extra: chunksize += 1
      std::size_t chunksize = items / (workers * 4);
      const std::size_t extra = items % (workers * 4);
      if (extra != 0) chunksize += 1;
      CHECK(md::auto_chunksize(items, workers, md::process_chunks_per_worker) == chunksize);
    }
  }
}

TEST_CASE("auto_chunksize makes at most workers * chunks_per_worker chunks, each non-empty", "[scheduling]") {
  for (std::size_t workers = 1; workers <= 8; ++workers) {
    for (std::size_t items = 1; items <= 2000; items += 7) {
      const std::size_t cs = md::auto_chunksize(items, workers, md::thread_chunks_per_worker);
      const std::size_t chunks = (items + cs - 1) / cs;
      CHECK(chunks <= workers * md::thread_chunks_per_worker);
      CHECK(cs >= 1);
      // No smaller size would also fit in that many chunks.
      if (cs > 1) CHECK((items + cs - 2) / (cs - 1) > workers * md::thread_chunks_per_worker);
    }
  }
}

TEST_CASE("auto_chunksize of no items is 1", "[scheduling]") {
  CHECK(md::auto_chunksize(0, 4, md::process_chunks_per_worker) == 1);
  CHECK(md::auto_chunksize(0, 1, md::thread_chunks_per_worker) == 1);
}

TEST_CASE("imap_window is two chunks per worker", "[scheduling]") {
  CHECK(md::imap_window(4, 1) == 8);
  CHECK(md::imap_window(3, 10) == 60);
  static_assert(md::imap_window(2, 5) == md::imap_window_chunks_per_worker * 2 * 5);
}

TEST_CASE("imap_window saturates instead of wrapping around", "[scheduling]") {
  constexpr std::size_t most = std::numeric_limits<std::size_t>::max();
  CHECK(md::imap_window(2, most) == most);
  CHECK(md::imap_window(2, most / 4 + 1) == most);  // 4 * (2^62 + 1) would wrap to 4
  CHECK(md::imap_window(2, most / 4) == most / 4 * 4);
}

TEST_CASE("plan_chunks cuts a map into chunks: Python's size, a given one, one chunk for a large one", "[scheduling]") {
  constexpr auto autosize = md::plan_chunks(1000, 0, 4);
  STATIC_REQUIRE(autosize.size == 63);  // ceil(1000 / 16)
  STATIC_REQUIRE(autosize.count == 16);
  CHECK(autosize.items_in(0) == 63);
  CHECK(autosize.items_in(15) == 1000 - 15 * 63);
  const auto given = md::plan_chunks(10, 3, 4);
  CHECK(given.count == 4);
  CHECK(given.items_in(3) == 1);
  CHECK(md::plan_chunks(0, 0, 4).count == 0);
  constexpr std::size_t most = std::numeric_limits<std::size_t>::max();
  for (const std::size_t cs : {std::size_t{11}, most / 2, most}) {  // (n + cs - 1) / cs wrapped to 0 chunks
    const auto one = md::plan_chunks(10, cs, 4);
    CHECK(one.count == 1);
    CHECK(one.items_in(0) == 10);
  }
}

TEST_CASE("check_chunksize refuses a size above PTRDIFF_MAX (a negative number converted), naming it", "[scheduling]") {
  constexpr auto largest = static_cast<std::size_t>(std::numeric_limits<std::ptrdiff_t>::max());
  CHECK_NOTHROW(md::check_chunksize(0, "Pool: chunksize"));
  CHECK_NOTHROW(md::check_chunksize(largest, "Pool: chunksize"));
  REQUIRE_THROWS_MATCHES(md::check_chunksize(largest + 1, "Pool: chunksize"), mproc::ValueError,
                         Catch::Message("mproc: Pool: chunksize 9223372036854775808 is more than any range holds (a "
                                        "negative number converted to std::size_t?)"));
  REQUIRE_THROWS_AS(md::check_chunksize(static_cast<std::size_t>(-1), "ThreadPool.parallel_for: grain"),
                    mproc::ValueError);
}

TEST_CASE("ReorderBuffer hands out items in input order whatever the arrival order", "[reorder]") {
  std::mt19937 rng(12345);
  for (int round = 0; round < 50; ++round) {
    const std::size_t n = 1 + rng() % 300;
    std::vector<std::size_t> order(n);
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::shuffle(order.begin(), order.end(), rng);
    md::ReorderBuffer<std::size_t> buf;
    std::vector<std::size_t> out;
    std::size_t put = 0;
    for (const std::size_t i : order) {
      REQUIRE(buf.put(i, i * 10));
      ++put;
      // Take whatever is ready, as a consumer would between arrivals.
      while (buf.ready()) out.push_back(buf.take());
      CHECK(buf.held() == put - out.size());
    }
    REQUIRE(out.size() == n);
    for (std::size_t i = 0; i < n; ++i) CHECK(out[i] == i * 10);
    CHECK(buf.next() == n);
    CHECK(buf.held() == 0);
    CHECK_FALSE(buf.ready());
  }
}

TEST_CASE("ReorderBuffer is not ready until the next item arrives", "[reorder]") {
  md::ReorderBuffer<int> buf;
  CHECK_FALSE(buf.ready());
  CHECK(buf.put(2, 2));
  CHECK(buf.put(1, 1));
  CHECK_FALSE(buf.ready());
  CHECK(buf.held() == 2);
  CHECK(buf.put(0, 0));
  REQUIRE(buf.ready());
  CHECK(buf.take() == 0);
  CHECK(buf.take() == 1);
  CHECK(buf.take() == 2);
  CHECK_FALSE(buf.ready());
  CHECK(buf.next() == 3);
}

TEST_CASE("ReorderBuffer refuses duplicates and positions already taken", "[reorder]") {
  md::ReorderBuffer<int> buf;
  CHECK(buf.put(0, 10));
  CHECK_FALSE(buf.put(0, 11));  // held already
  CHECK(buf.take() == 10);
  CHECK_FALSE(buf.put(0, 12));  // taken already
  CHECK(buf.put(5, 50));
  CHECK_FALSE(buf.put(5, 51));
  CHECK(buf.held() == 1);
}

TEST_CASE("ReorderBuffer grows for an item far ahead and keeps the held ones", "[reorder]") {
  md::ReorderBuffer<std::unique_ptr<int>> buf;  // move-only items
  CHECK(buf.put(3, std::make_unique<int>(3)));
  CHECK(buf.put(1000, std::make_unique<int>(1000)));  // beyond the initial ring
  for (int i = 0; i < 1000; ++i)
    if (i != 3) CHECK(buf.put(static_cast<std::size_t>(i), std::make_unique<int>(i)));
  for (int i = 0; i <= 1000; ++i) {
    REQUIRE(buf.ready());
    CHECK(*buf.take() == i);
  }
  CHECK(buf.held() == 0);
}

TEST_CASE("ReorderBuffer wraps around its ring as the consumer advances", "[reorder]") {
  md::ReorderBuffer<std::size_t> buf;
  // A sliding window of 10 items ahead, out of order within the window,
  // over many more items than the ring holds.
  std::size_t put_next = 0;
  for (std::size_t taken = 0; taken < 5000;) {
    while (put_next < taken + 10) {
      const std::size_t block = put_next;
      for (std::size_t k = 0; k < 5; ++k) REQUIRE(buf.put(block + 4 - k, block + 4 - k));
      put_next += 5;
    }
    while (buf.ready()) {
      CHECK(buf.take() == taken);
      ++taken;
    }
  }
}

TEST_CASE("ReorderBuffer used as a FIFO by numbering items on arrival", "[reorder]") {
  md::ReorderBuffer<int> buf;
  std::size_t arrivals = 0;
  for (int v : {7, 3, 9}) buf.put(arrivals++, v);
  CHECK(buf.take() == 7);
  buf.put(arrivals++, 1);
  CHECK(buf.take() == 3);
  CHECK(buf.take() == 9);
  CHECK(buf.take() == 1);
  CHECK_FALSE(buf.ready());
}

TEST_CASE("ReorderBuffer rejects a position absurdly far ahead", "[reorder]") {
  md::ReorderBuffer<int> buf;
  CHECK_THROWS_AS(buf.put(std::size_t(-1) / 2, 1), std::length_error);
  CHECK(buf.put(0, 1));  // still usable
  CHECK(buf.take() == 1);
}

TEST_CASE("SegmentAffinity remembers which slots have a key until a slot gets a new worker", "[scheduling]") {
  md::SegmentAffinity a;
  CHECK(a.mapped_by(7) == 0);
  a.note(7, 0);
  a.note(7, 3);
  a.note(9, 3);
  a.note(0, 1);   // no key: nothing to remember
  a.note(7, 64);  // beyond the tracked slots
  CHECK(a.mapped_by(7) == 0b1001);
  CHECK(a.mapped_by(9) == 0b1000);
  CHECK(a.mapped_by(0) == 0);
  a.forget_slot(3);
  CHECK(a.mapped_by(7) == 0b0001);
  CHECK(a.mapped_by(9) == 0);
  // Bounded: past locality_keys_max keys the table starts over.
  for (std::uint64_t k = 100; k < 100 + md::locality_keys_max; ++k) a.note(k, 2);
  CHECK(a.mapped_by(7) == 0);
  CHECK(a.mapped_by(100 + md::locality_keys_max - 1) == 0b100);
}

TEST_CASE("LocalityProbe records the largest shared block written while it lives", "[scheduling]") {
  md::ShmHandle small, large, other;
  small.ino = 1;
  small.length = 4096;
  large.ino = 2;
  large.length = std::size_t{8} << 20;
  other.ino = 3;
  other.length = std::size_t{1} << 20;
  mproc::Writer w(mproc::Writer::count_only);
  md::write_shm_handle(w, large);  // no probe: nothing recorded, nothing breaks
  md::LocalityProbe outer;
  md::write_shm_handle(w, small);
  const std::uint64_t small_key = outer.key();
  CHECK(outer.bytes() == 4096);
  CHECK(small_key != 0);
  {
    md::LocalityProbe inner;  // the innermost probe records
    md::write_shm_handle(w, other);
    CHECK(inner.bytes() == other.length);
  }
  CHECK(outer.bytes() == 4096);
  md::write_shm_handle(w, large);
  md::write_shm_handle(w, other);  // smaller than the largest: ignored
  CHECK(outer.bytes() == large.length);
  CHECK(outer.key() != small_key);
  CHECK(outer.key() != 0);
  CHECK(w.size() == 5 * sizeof(md::ShmHandle));
}

TEST_CASE("locality_patience grows with the block's size up to its cap", "[scheduling]") {
  using namespace std::chrono;
  CHECK(md::locality_patience(0) == nanoseconds(0));
  CHECK(md::locality_patience(std::uint64_t{1} << 20) == md::locality_patience_per_mib);
  CHECK(md::locality_patience(std::uint64_t{8} << 20) == 8 * md::locality_patience_per_mib);
  CHECK(md::locality_patience(std::uint64_t{1} << 40) == duration_cast<nanoseconds>(md::locality_patience_max));
}
