// The result ring: how a pool worker hands small task results to the owner
// through shared memory instead of one socket write each. Layer
// detail/pool; its memory lives in the pool's status board (protocol.hpp's
// board layout); the worker writes (worker.hpp), the owner's I/O thread
// reads (engine.hpp).
//
// One single-producer, single-consumer ring of bytes per worker slot.
// Positions count bytes since the ring was last reset; an entry is
// {u64 task id, u64 size} and the results, padded to 16 bytes, and never
// wraps: a header with id 0 at the end of the ring means "continue at its
// start". The worker publishes an entry by advancing `ring_tail` and wakes
// the owner through the socket only when the owner sleeps in poll() and the
// entry's task is at or past the owner's wake mark (the task whose result
// would let the owner refill this worker: not one wake-up per result); the
// owner frees space by advancing `ring_head`. A result published here
// survives the worker's crash, so results of finished tasks are never lost
// with it, as with the socket.
// The ring's bytes come from a worker and are untrusted: the owner checks
// every position and size against its own copy of the head and copies an
// entry out before decoding it.
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace mproc::detail {

// Bytes of each slot's ring, and the largest result it carries (larger ones
// go through the socket: their copy costs more than the write saves).
inline constexpr std::size_t result_ring_bytes = std::size_t{64} << 10;
inline constexpr std::size_t result_ring_max_result = result_ring_bytes / 4;

// The ring's shared words (a part of each slot's line group on the board).
struct ResultRingWords {
  // Written by the worker: bytes published.
  alignas(64) std::atomic<std::uint64_t> tail{0};
  // Set by the worker when it sent a wake-up the owner has not handled yet.
  std::atomic<std::uint32_t> wake_pending{0};
  // Written by the owner: bytes consumed.
  alignas(64) std::atomic<std::uint64_t> head{0};
  // Written by the owner before it sleeps: the first task id whose result
  // wakes it (0: any).
  std::atomic<std::uint64_t> wake_at{0};
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free && std::atomic<std::uint32_t>::is_always_lock_free);

struct ResultRingEntry {
  std::uint64_t id;    // the task's id; 0: skip to the ring's start
  std::uint64_t size;  // result bytes that follow
};
static_assert(sizeof(ResultRingEntry) == 16);

constexpr std::uint64_t result_ring_span(std::uint64_t size) noexcept {
  return sizeof(ResultRingEntry) + ((size + 15) & ~std::uint64_t{15});
}

// The worker's end. Not thread-safe (one worker thread publishes).
class ResultRingWriter {
 public:
  ResultRingWriter() = default;
  // `owner_asleep`: the flag the owner raises while it sleeps in poll() (the board's header).
  ResultRingWriter(ResultRingWords* words, std::byte* data, const std::atomic<std::uint32_t>* owner_asleep) noexcept
      : words_(words), data_(data), owner_asleep_(owner_asleep), tail_(words->tail.load(std::memory_order_relaxed)) {}

  // Copies `bytes` (the results of task `id`) into the ring and publishes
  // them. Returns false, writing nothing, if they are too large or the ring
  // lacks room (the caller sends them through the socket). Non-blocking.
  bool publish(std::uint64_t id, std::span<const std::byte> bytes) noexcept {
    if (words_ == nullptr || bytes.size() > result_ring_max_result) return false;
    const std::uint64_t need = result_ring_span(bytes.size());
    const std::uint64_t head = words_->head.load(std::memory_order_acquire);
    const std::uint64_t off = tail_ % result_ring_bytes;
    const std::uint64_t skip = result_ring_bytes - off < need ? result_ring_bytes - off : 0;
    if (tail_ + skip + need - head > result_ring_bytes) return false;
    if (skip != 0) {
      const ResultRingEntry wrap{0, 0};
      std::memcpy(data_ + off, &wrap, sizeof wrap);
    }
    const std::uint64_t at = (tail_ + skip) % result_ring_bytes;
    const ResultRingEntry e{id, bytes.size()};
    std::memcpy(data_ + at, &e, sizeof e);
    if (!bytes.empty()) std::memcpy(data_ + at + sizeof e, bytes.data(), bytes.size());
    tail_ += skip + need;
    // seq_cst: ordered before the caller's look at the owner's sleep flag
    // (the owner sets that flag, then looks at this tail).
    words_->tail.store(tail_, std::memory_order_seq_cst);
    return true;
  }

  // Whether the caller, which just published the result of task `id`,
  // should wake the owner: it is about to sleep or asleep, `id` is at or
  // past its wake mark, and no wake-up of this ring is on its way.
  // Non-blocking.
  bool claim_wake(std::uint64_t id) noexcept {
    if (owner_asleep_->load(std::memory_order_seq_cst) == 0) return false;
    // The owner stores the mark before it raises its sleep flag (read above).
    if (id < words_->wake_at.load(std::memory_order_relaxed)) return false;
    return words_->wake_pending.exchange(1, std::memory_order_seq_cst) == 0;
  }

 private:
  ResultRingWords* words_ = nullptr;
  std::byte* data_ = nullptr;
  const std::atomic<std::uint32_t>* owner_asleep_ = nullptr;
  std::uint64_t tail_ = 0;
};

// The owner's end. Keeps its own head: the shared one only tells the
// worker what it may overwrite. Not thread-safe (the I/O thread reads).
class ResultRingReader {
 public:
  enum class Next { empty, entry, corrupt };

  // Resets the ring for a new worker (none may be writing it).
  void reset(ResultRingWords& words) noexcept {
    head_ = 0;
    words.tail.store(0, std::memory_order_relaxed);
    words.wake_pending.store(0, std::memory_order_relaxed);
    words.wake_at.store(0, std::memory_order_relaxed);
    words.head.store(0, std::memory_order_release);
  }

  // Whether the worker published something not consumed yet.
  bool has_entries(const ResultRingWords& words) const noexcept {
    return words.tail.load(std::memory_order_seq_cst) != head_;
  }

  // Looks at the next entry: its task id and a view of its results in the
  // ring (copy them before decoding: the worker may scribble on them).
  // `corrupt`: the worker wrote positions or sizes no correct worker writes.
  Next peek(ResultRingWords& words, const std::byte* data, std::uint64_t& id,
            std::span<const std::byte>& bytes) noexcept {
    const std::uint64_t tail = words.tail.load(std::memory_order_acquire);
    for (;;) {
      if (tail == head_) return Next::empty;
      if (tail < head_ || tail - head_ > result_ring_bytes || tail % 16 != 0) return Next::corrupt;
      const std::uint64_t off = head_ % result_ring_bytes;
      ResultRingEntry e;
      std::memcpy(&e, data + off, sizeof e);
      if (e.id == 0) {  // the rest of the ring was skipped
        head_ += result_ring_bytes - off;
        words.head.store(head_, std::memory_order_release);
        continue;
      }
      if (e.size > result_ring_max_result) return Next::corrupt;
      const std::uint64_t span = result_ring_span(e.size);
      if (off + span > result_ring_bytes || span > tail - head_) return Next::corrupt;
      id = e.id;
      bytes = {data + off + sizeof e, static_cast<std::size_t>(e.size)};
      next_ = head_ + span;
      return Next::entry;
    }
  }

  // Consumes the entry peek() returned, giving its space back to the worker.
  void pop(ResultRingWords& words) noexcept {
    head_ = next_;
    words.head.store(head_, std::memory_order_release);
  }

 private:
  std::uint64_t head_ = 0;
  std::uint64_t next_ = 0;
};

}  // namespace mproc::detail
