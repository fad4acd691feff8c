// The pool's result ring (detail/pool/result_ring.hpp): what the worker
// publishes the owner reads back in order, across the ring's wrap; a full
// ring or a large result is refused; positions and sizes no correct worker
// writes are reported as corrupt, never read past.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include <mproc/detail/pool/result_ring.hpp>

#include "catch.hpp"

namespace d = mproc::detail;

namespace {

struct Ring {
  d::ResultRingWords words;
  std::vector<std::byte> data = std::vector<std::byte>(d::result_ring_bytes);
  std::atomic<std::uint32_t> asleep{0};
  d::ResultRingWriter writer{&words, data.data(), &asleep};
  d::ResultRingReader reader;

  std::vector<std::byte> bytes(std::size_t n, int seed) {
    std::vector<std::byte> b(n);
    for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<std::byte>((seed * 31 + static_cast<int>(i)) & 0xff);
    return b;
  }
  // Reads the next entry (expects one) and consumes it.
  std::pair<std::uint64_t, std::vector<std::byte>> take() {
    std::uint64_t id = 0;
    std::span<const std::byte> view;
    REQUIRE(reader.peek(words, data.data(), id, view) == d::ResultRingReader::Next::entry);
    std::vector<std::byte> copy(view.begin(), view.end());
    reader.pop(words);
    return {id, copy};
  }
  d::ResultRingReader::Next next() {
    std::uint64_t id = 0;
    std::span<const std::byte> view;
    return reader.peek(words, data.data(), id, view);
  }
};

}  // namespace

TEST_CASE("result ring: entries come back in order, byte for byte, across many wraps") {
  auto r = std::make_unique<Ring>();
  CHECK(r->next() == d::ResultRingReader::Next::empty);
  CHECK_FALSE(r->reader.has_entries(r->words));
  std::uint64_t id = 1;
  std::uint64_t read_id = 1;
  // Sizes that do not divide the ring, so entries meet its end at every offset.
  const std::size_t sizes[] = {0, 1, 15, 16, 17, 100, 1000, 4095, d::result_ring_max_result};
  for (int round = 0; round < 200; ++round) {
    std::size_t published = 0;
    for (std::size_t k = 0; k < 3; ++k) {
      const std::size_t n = sizes[(static_cast<std::size_t>(round) * 3 + k) % std::size(sizes)];
      if (!r->writer.publish(id, r->bytes(n, static_cast<int>(id)))) break;
      ++id;
      ++published;
    }
    REQUIRE(published > 0);
    CHECK(r->reader.has_entries(r->words));
    for (std::size_t k = 0; k < published; ++k) {
      auto [got, data] = r->take();
      CHECK(got == read_id);
      const std::size_t n = data.size();
      CHECK(data == r->bytes(n, static_cast<int>(read_id)));
      ++read_id;
    }
    CHECK(r->next() == d::ResultRingReader::Next::empty);
  }
  CHECK(r->words.tail.load() > 10 * d::result_ring_bytes);  // it wrapped many times
}

TEST_CASE("result ring: a full ring and a result over the limit are refused, nothing written") {
  auto r = std::make_unique<Ring>();
  CHECK_FALSE(r->writer.publish(1, r->bytes(d::result_ring_max_result + 1, 1)));
  CHECK(r->words.tail.load() == 0);
  // Fill it: each entry takes a quarter of the ring with its header.
  const std::size_t n = d::result_ring_max_result - sizeof(d::ResultRingEntry);
  int filled = 0;
  while (r->writer.publish(static_cast<std::uint64_t>(filled + 1), r->bytes(n, filled))) ++filled;
  CHECK(filled == 4);
  const auto tail = r->words.tail.load();
  CHECK_FALSE(r->writer.publish(99, r->bytes(1, 0)));
  CHECK(r->words.tail.load() == tail);
  // Consuming one frees its room.
  CHECK(r->take().first == 1);
  CHECK(r->writer.publish(5, r->bytes(n, 5)));
  for (std::uint64_t want = 2; want <= 5; ++want) CHECK(r->take().first == want);
  CHECK(r->next() == d::ResultRingReader::Next::empty);
}

TEST_CASE("result ring: the owner wakes only when asleep, from its wake mark on, once per wake-up handled") {
  auto r = std::make_unique<Ring>();
  REQUIRE(r->writer.publish(1, r->bytes(8, 1)));
  CHECK_FALSE(r->writer.claim_wake(1));  // awake: it will look before sleeping
  r->asleep.store(1);
  CHECK(r->writer.claim_wake(1));
  CHECK_FALSE(r->writer.claim_wake(2));  // one wake-up on its way already
  r->words.wake_pending.store(0);        // the owner handled it
  CHECK(r->writer.claim_wake(2));
  r->words.wake_pending.store(0);

  // The owner sleeps until task 7's result: earlier ones wait in the ring.
  r->words.wake_at.store(7);
  CHECK_FALSE(r->writer.claim_wake(3));
  CHECK_FALSE(r->writer.claim_wake(6));
  CHECK(r->words.wake_pending.load() == 0);
  CHECK(r->writer.claim_wake(7));
  r->words.wake_pending.store(0);
  CHECK(r->writer.claim_wake(9));  // past the mark (7's result went through the socket, say)

  // A reset ring wakes the owner with any result again.
  r->reader.reset(r->words);
  CHECK(r->words.wake_at.load() == 0);
  CHECK(r->writer.claim_wake(1));
}

TEST_CASE("result ring: positions and sizes no correct worker writes are corrupt, never read") {
  using Next = d::ResultRingReader::Next;
  auto r = std::make_unique<Ring>();
  SECTION("tail beyond a whole ring of unread bytes") {
    r->words.tail.store(d::result_ring_bytes + 16);
    CHECK(r->next() == Next::corrupt);
  }
  SECTION("tail not on a 16-byte boundary") {
    REQUIRE(r->writer.publish(1, r->bytes(8, 1)));
    r->words.tail.store(r->words.tail.load() + 3);
    CHECK(r->next() == Next::corrupt);
  }
  SECTION("tail moved back behind what was read") {
    REQUIRE(r->writer.publish(1, r->bytes(8, 1)));
    REQUIRE(r->writer.publish(2, r->bytes(8, 2)));
    r->take();
    r->words.tail.store(0);
    CHECK(r->next() == Next::corrupt);
  }
  SECTION("an entry claiming more than the limit") {
    REQUIRE(r->writer.publish(1, r->bytes(8, 1)));
    const d::ResultRingEntry e{1, std::uint64_t{1} << 40};
    std::memcpy(r->data.data(), &e, sizeof e);
    CHECK(r->next() == Next::corrupt);
  }
  SECTION("an entry reaching past the published bytes") {
    REQUIRE(r->writer.publish(1, r->bytes(8, 1)));
    const d::ResultRingEntry e{1, 1000};
    std::memcpy(r->data.data(), &e, sizeof e);
    CHECK(r->next() == Next::corrupt);
  }
  SECTION("a skip marker that jumps past the published bytes") {
    REQUIRE(r->writer.publish(1, r->bytes(8, 1)));
    const d::ResultRingEntry e{0, 0};
    std::memcpy(r->data.data(), &e, sizeof e);
    CHECK(r->next() == Next::corrupt);
  }
  SECTION("after a reset the ring is empty and usable") {
    r->words.tail.store(12345);
    r->reader.reset(r->words);
    d::ResultRingWriter fresh(&r->words, r->data.data(), &r->asleep);
    CHECK(r->next() == Next::empty);
    REQUIRE(fresh.publish(7, r->bytes(3, 7)));
    CHECK(r->take().first == 7);
  }
}
