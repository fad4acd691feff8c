// mproc — Python's multiprocessing model for C++20.
// SPDX-License-Identifier: MIT
//
// The shared-memory machinery of Queue, JoinableQueue and SimpleQueue: one
// memfd segment per queue holding a control block and a byte ring of
// variable-length records, guarded by a robust process-shared mutex, with
// futex words for sleeping getters, putters and joiners. No pipe, no feeder
// thread: put() copies the encoded item into the ring and returns.
//
// The ring. A record is a 16-byte header {payload size, magic, check} and
// the payload padded to 16 bytes; it always lies contiguously in the ring
// (a record that does not fit before the end goes to offset 0, and the
// control block remembers where the upper part ends: no marker in the
// ring). The ring is large and sparse (default 256 MiB of address space;
// memfd pages cost memory only once touched): the producer wraps back to
// offset 0 as soon as it is past the first `hot` bytes (1 MiB) and there is
// room there, so a queue with a small backlog stays within the hot region,
// and only a large backlog of unread data touches pages beyond it; those
// are given back (MADV_REMOVE) when the consumer has drained them. So an
// "unbounded" queue accepts items until `ring_bytes` of unread encoded data
// are queued (then put() waits, as for a bounded queue), and items of any
// size up to `ring_bytes` go through the ring itself. Because the memory is
// the queue's one segment (owned by its creator), an item stays readable
// after the process that put it exited.
//
// Locking. Every operation takes the mutex (MutexState: a holder that dies
// is taken over by the next acquirer), copies its record in or out while
// holding it, and publishes the new positions last, so a process killed
// mid-operation leaves either the old or the new state; after a takeover
// the positions are checked and an inconsistent queue is emptied. Sleepers
// wait on sequence words in slices (kQueueWaitSlice) so a wake-up lost to a
// process that died after being woken delays others by at most one slice.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <utility>

#include <sys/mman.h>
#include <unistd.h>

#include "../errors.hpp"
#include "deadline.hpp"
#include "futex.hpp"
#include "shm_object.hpp"
#include "shm_segment.hpp"
#include "sync_state.hpp"

namespace mproc::detail {

// Default address space of a queue's ring (pages are allocated on use).
inline constexpr std::size_t kQueueDefaultRingBytes = std::size_t{256} << 20;
// The region a queue with a small backlog stays in.
inline constexpr std::size_t kQueueHotBytes = std::size_t{1} << 20;
// Smallest ring a caller may ask for.
inline constexpr std::size_t kQueueMinRingBytes = 4096;
// Longest single sleep of a waiting getter/putter/joiner before it re-checks.
inline constexpr std::chrono::milliseconds kQueueWaitSlice{100};
// How long a getter or putter spins on the item count before sleeping.
inline constexpr std::chrono::microseconds kQueueSpin{20};

// A record's header in the ring.
struct QueueRecord {
  static constexpr std::uint32_t kMagic = 0x7271706du;  // "mpqr"
  std::uint64_t size;    // payload bytes
  std::uint32_t magic;
  std::uint32_t check;   // ~(low 32 bits of size)
};
static_assert(sizeof(QueueRecord) == 16);
inline constexpr std::size_t kQueueRecordAlign = 16;

// The control block in shared memory (after the ObjectHeader).
struct QueueState {
  MutexState mutex;
  std::uint32_t reserved0 = 0;
  std::int64_t maxsize = 0;  // items; 0: unbounded
  std::uint64_t ring_bytes = 0;
  std::uint64_t hot_bytes = 0;
  std::uint64_t ring_offset = 0;  // of the ring from the block start (page aligned)
  std::atomic<std::uint32_t> closed{0};
  std::uint32_t reserved1 = 0;
  // Positions, under the mutex.
  std::uint64_t head = 0;      // next record to read
  std::uint64_t tail = 0;      // where the next record goes
  std::uint64_t wrap_end = 0;  // end of the upper part while wrapped
  std::uint32_t wrapped = 0;
  std::uint32_t reserved2 = 0;
  std::atomic<std::uint64_t> count{0};  // items; written under the mutex, read anywhere
  // Sleepers (counts under the mutex, sequence words are the futexes).
  alignas(64) std::atomic<std::uint32_t> items_seq{0};  // bumped by put and close
  std::uint32_t getters_waiting = 0;
  std::atomic<std::uint32_t> space_seq{0};  // bumped by get and close
  std::uint32_t putters_waiting = 0;
  // JoinableQueue: items put and not yet task_done().
  alignas(64) std::atomic<std::uint32_t> done_seq{0};  // bumped when unfinished reaches 0
  std::uint32_t joiners_waiting = 0;
  std::uint64_t unfinished = 0;
};

inline constexpr std::size_t kQueueStateOffset = 64;

// One process's view of a queue: the block and pointers into it. Copies
// share the queue. All members are thread- and process-safe.
class QueueCore {
 public:
  // Creates a queue of `kind` for items of fingerprint `type_hash`.
  // Throws ProcessError (bad ring size, out of memory or descriptors).
  QueueCore(ShmKind kind, std::uint64_t type_hash, std::int64_t maxsize, std::size_t ring_bytes) : kind_(kind) {
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    if (ring_bytes < kQueueMinRingBytes || ring_bytes > kMaxSegmentSize / 2)
      throw ProcessError(std::string("mproc: ") + shm_kind_name(kind) + ": ring size " + std::to_string(ring_bytes) +
                         " is out of range [" + std::to_string(kQueueMinRingBytes) + ", 2^46]");
    ring_bytes = round_up(ring_bytes, page);
    const std::size_t ring_offset = round_up(kQueueStateOffset + sizeof(QueueState), page);
    block_ = allocate_object(kind, ring_offset, ring_bytes, page, type_hash, 0, 0, 0);
    state_ = ::new (static_cast<void*>(block_->data() + kQueueStateOffset)) QueueState{};
    state_->maxsize = maxsize > 0 ? maxsize : 0;
    state_->ring_bytes = ring_bytes;
    state_->hot_bytes = std::min(kQueueHotBytes, ring_bytes);
    state_->ring_offset = ring_offset;
    ring_ = block_->data() + ring_offset;
    ring_bytes_ = ring_bytes;
  }

  // The queue a received handle describes, checked to be a `kind` queue of
  // items of fingerprint `type_hash`. Throws ProcessError naming the fault.
  static QueueCore open(const ShmHandle& h, ShmKind kind, std::uint64_t type_hash) {
    const std::string what = shm_kind_name(kind);
    auto [block, header] = open_object(h, kind, kQueueStateOffset + sizeof(QueueState));
    if (header.type_hash != type_hash)
      throw ProcessError("mproc: invalid handle for " + what + ": its item type differs from this one");
    auto* state = std::launder(reinterpret_cast<QueueState*>(block->data() + kQueueStateOffset));
    const std::uint64_t ring_offset = state->ring_offset;
    const std::uint64_t ring_bytes = state->ring_bytes;
    if (ring_offset < kQueueStateOffset + sizeof(QueueState) || ring_offset % kQueueRecordAlign != 0 ||
        ring_offset > block->length() || ring_bytes > block->length() - ring_offset ||
        ring_bytes < kQueueMinRingBytes || ring_bytes % kQueueRecordAlign != 0)
      throw ProcessError("mproc: invalid handle for " + what + ": its ring does not fit in its " +
                         std::to_string(block->length()) + "-byte block");
    QueueCore core(kind);
    core.block_ = std::move(block);
    core.state_ = state;
    core.ring_ = core.block_->data() + ring_offset;
    core.ring_bytes_ = static_cast<std::size_t>(ring_bytes);
    return core;
  }

  ShmHandle handle() const noexcept { return block_->handle(kind_); }
  const char* name() const noexcept { return shm_kind_name(kind_); }
  std::int64_t maxsize() const noexcept { return state_->maxsize; }
  std::size_t ring_bytes() const noexcept { return ring_bytes_; }
  std::size_t qsize() const noexcept { return static_cast<std::size_t>(state_->count.load(std::memory_order_acquire)); }
  bool full() const noexcept {
    const std::int64_t m = state_->maxsize;
    return m > 0 && state_->count.load(std::memory_order_acquire) >= static_cast<std::uint64_t>(m);
  }
  bool closed() const noexcept { return state_->closed.load(std::memory_order_acquire) != 0; }
  // Tests only: the ring's bytes (to corrupt records), and taking the
  // internal lock without releasing it (to die holding it).
  std::span<std::byte> ring_for_testing() const noexcept { return {ring_, ring_bytes_}; }
  void lock_for_testing() const { state_->mutex.lock(current_tid(), Clock::time_point::max()); }

  // Bytes a record with a `len`-byte payload takes in the ring.
  static constexpr std::uint64_t record_bytes(std::uint64_t len) noexcept {
    return sizeof(QueueRecord) + (len + kQueueRecordAlign - 1) / kQueueRecordAlign * kQueueRecordAlign;
  }

  // Appends a record of `len` payload bytes, written by fill(std::byte*)
  // (noexcept), waiting for room until `deadline`. A JoinableQueue counts
  // the item as unfinished. Throws Full on timeout, ProcessError if closed or
  // the item can never fit.
  template <class Fill>
  void push(std::size_t len, Clock::time_point deadline, Fill&& fill) {
    const std::uint64_t rec = record_bytes(len);
    if (len > ring_bytes_ || rec > ring_bytes_)
      throw ProcessError(std::string("mproc: ") + name() + ".put(): an item of " + std::to_string(len) +
                         " encoded bytes does not fit in the queue's " + std::to_string(ring_bytes_) +
                         "-byte ring (see the ring_bytes constructor argument)");
    QueueState& s = *state_;
    Guard g(*this);
    for (;;) {
      if (s.closed.load(std::memory_order_relaxed))
        throw ProcessError(std::string("mproc: ") + name() + ".put(): the queue is closed");
      const bool room_for_item = s.maxsize == 0 || s.count.load(std::memory_order_relaxed) < static_cast<std::uint64_t>(s.maxsize);
      Slot slot;
      if (room_for_item && find_room(rec, slot)) {
        QueueRecord r{len, QueueRecord::kMagic, ~static_cast<std::uint32_t>(len)};
        std::memcpy(ring_ + slot.off, &r, sizeof r);
        fill(ring_ + slot.off + sizeof r);
        // Publish: positions first, then the count (a process killed in
        // between leaves a state repair() recognizes).
        if (slot.wrap) {
          s.wrap_end = s.tail;
          s.wrapped = 1;
        }
        s.tail = slot.off + rec;
        if (kind_ == ShmKind::joinable_queue) ++s.unfinished;
        s.count.store(s.count.load(std::memory_order_relaxed) + 1, std::memory_order_release);
        s.items_seq.fetch_add(1, std::memory_order_seq_cst);
        const bool wake = s.getters_waiting > 0;
        g.unlock();
        if (wake) futex_wake(s.items_seq, 1);
        return;
      }
      if (!wait_for(g, s.space_seq, s.putters_waiting, deadline))
        throw Full();
    }
  }

  // Removes the oldest record and returns take(std::span<const std::byte>)
  // of its payload, waiting for one until `deadline`. If take throws a
  // ProcessError (undecodable item) the record is dropped and the error
  // propagates; any other exception leaves it queued. Throws Empty on
  // timeout or when the queue is closed and empty, ProcessError if the
  // ring is corrupt (the queue is then emptied).
  template <class Take>
  auto pop(Clock::time_point deadline, Take&& take) {
    QueueState& s = *state_;
    Guard g(*this);
    for (;;) {
      if (s.count.load(std::memory_order_relaxed) > 0) {
        const std::uint64_t end = s.wrapped ? s.wrap_end : s.tail;
        const std::uint64_t at = s.head;
        QueueRecord r{};
        if (at >= end || end - at < sizeof r || end > ring_bytes_) corrupt(g, at, "bad positions");
        std::memcpy(&r, ring_ + at, sizeof r);
        if (r.magic != QueueRecord::kMagic || r.check != ~static_cast<std::uint32_t>(r.size) ||
            r.size > end - at - sizeof r || record_bytes(r.size) > end - at)
          corrupt(g, at, "bad record header");
        const std::span<const std::byte> payload(ring_ + at + sizeof r, static_cast<std::size_t>(r.size));
        try {
          auto value = take(payload);
          consume(g, at + record_bytes(r.size));
          return value;
        } catch (const ProcessError&) {
          consume(g, at + record_bytes(r.size));
          throw;
        }
      }
      if (s.closed.load(std::memory_order_relaxed))
        throw Empty(std::string("mproc: ") + name() + ".get(): the queue is closed and empty");
      if (!wait_for(g, s.items_seq, s.getters_waiting, deadline)) throw Empty();
    }
  }

  // Marks the queue closed and wakes every waiter. Idempotent.
  void close() {
    QueueState& s = *state_;
    Guard g(*this);
    s.closed.store(1, std::memory_order_release);
    s.items_seq.fetch_add(1, std::memory_order_seq_cst);
    s.space_seq.fetch_add(1, std::memory_order_seq_cst);
    g.unlock();
    futex_wake(s.items_seq);
    futex_wake(s.space_seq);
  }

  // JoinableQueue::task_done.
  void task_done() {
    QueueState& s = *state_;
    Guard g(*this);
    if (s.unfinished == 0)
      throw ProcessError(std::string("mproc: ") + name() +
                         ".task_done(): called more times than there were items put");
    if (--s.unfinished == 0) {
      s.done_seq.fetch_add(1, std::memory_order_seq_cst);
      const bool wake = s.joiners_waiting > 0;
      g.unlock();
      if (wake) futex_wake(s.done_seq);
    }
  }

  // JoinableQueue::join: waits until no item is unfinished or `deadline`.
  bool join(Clock::time_point deadline) {
    QueueState& s = *state_;
    Guard g(*this);
    while (s.unfinished != 0) {
      const std::uint32_t seq = s.done_seq.load(std::memory_order_seq_cst);
      if (Clock::now() >= deadline) return false;
      ++s.joiners_waiting;
      g.unlock();
      const auto now = Clock::now();
      futex_wait(s.done_seq, seq, deadline - now > kQueueWaitSlice ? now + kQueueWaitSlice : deadline);
      g.lock();
      if (s.joiners_waiting > 0) --s.joiners_waiting;
    }
    return true;
  }

  std::uint64_t unfinished() const noexcept {
    Guard g(*this);
    return state_->unfinished;
  }

 private:
  explicit QueueCore(ShmKind kind) noexcept : kind_(kind) {}

  // Holds the queue's mutex; checks the state after taking it over from a
  // holder that died.
  class Guard {
   public:
    explicit Guard(const QueueCore& q) : q_(q) { lock(); }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
    ~Guard() {
      if (held_) q_.state_->mutex.unlock();
    }
    void lock() {
      q_.state_->mutex.lock(current_tid(), Clock::time_point::max());
      held_ = true;
      if (q_.state_->mutex.recovered()) q_.repair();
    }
    void unlock() {
      held_ = false;
      q_.state_->mutex.unlock();
    }

   private:
    const QueueCore& q_;
    bool held_ = false;
  };

  // After a takeover: empties the queue if the positions are inconsistent.
  void repair() const noexcept {
    QueueState& s = *state_;
    const std::uint64_t n = ring_bytes_;
    const bool ok = s.head <= n && s.tail <= n && (!s.wrapped || (s.wrap_end <= n && s.tail <= s.head && s.head < s.wrap_end)) &&
                    (s.wrapped || s.head <= s.tail) && (s.count.load(std::memory_order_relaxed) == 0) == (!s.wrapped && s.head == s.tail);
    if (!ok) reset();
  }

  // Drops every item (caller holds the mutex) and wakes putters.
  void reset() const noexcept {
    QueueState& s = *state_;
    s.head = s.tail = s.wrap_end = 0;
    s.wrapped = 0;
    s.count.store(0, std::memory_order_release);
    s.space_seq.fetch_add(1, std::memory_order_seq_cst);
    if (s.putters_waiting > 0) {
      try {
        futex_wake(s.space_seq);
      } catch (...) {
      }
    }
  }

  [[noreturn]] void corrupt(Guard&, std::uint64_t at, const char* why) const {
    reset();
    throw ProcessError(std::string("mproc: ") + name() + ".get(): corrupted queue (" + why + " at ring offset " +
                       std::to_string(at) + "); the queue's items were discarded");
  }

  // Where a record goes: at `off`, after wrapping to the start if `wrap`.
  struct Slot {
    std::uint64_t off = 0;
    bool wrap = false;
  };

  // Finds room for a record of `rec` bytes (caller holds the mutex); false
  // if there is none. Changes nothing: push() publishes after writing.
  bool find_room(std::uint64_t rec, Slot& slot) const noexcept {
    const QueueState& s = *state_;
    if (s.wrapped) {
      if (s.tail + rec > s.head) return false;
      slot = {s.tail, false};
      return true;
    }
    const bool early = s.tail >= s.hot_bytes;  // past the hot region: wrap if there is room at the start
    if (!(early && rec <= s.head) && s.tail + rec <= ring_bytes_) {
      slot = {s.tail, false};
      return true;
    }
    if (rec <= s.head) {
      slot = {0, true};
      return true;
    }
    return false;
  }

  // Advances the head past a record ending at `next` (caller holds the
  // mutex), gives back drained cold pages, and wakes putters.
  void consume(Guard& g, std::uint64_t next) {
    QueueState& s = *state_;
    s.head = next;
    const std::uint64_t left = s.count.load(std::memory_order_relaxed) - 1;
    std::uint64_t cold_from = 0, cold_to = 0;
    if (s.wrapped && s.head == s.wrap_end) {
      cold_from = std::max(s.hot_bytes, s.tail);
      cold_to = s.wrap_end;
      s.head = 0;
      s.wrapped = 0;
      s.wrap_end = 0;
    }
    if (!s.wrapped && left == 0) {
      cold_from = s.hot_bytes;
      cold_to = std::max(cold_to, s.tail);
      s.head = s.tail = 0;
    }
    s.count.store(left, std::memory_order_release);
    s.space_seq.fetch_add(1, std::memory_order_seq_cst);
    if (cold_to > cold_from && cold_to - cold_from >= s.hot_bytes) give_back(cold_from, cold_to);
    const bool wake = s.putters_waiting > 0;
    g.unlock();
    if (wake) futex_wake(s.space_seq);
  }

  // Returns the whole pages of [from, to) of the ring to the system.
  void give_back(std::uint64_t from, std::uint64_t to) const noexcept {
    const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
    from = (from + page - 1) / page * page;
    to = std::min<std::uint64_t>((to + page - 1) / page * page, ring_bytes_);
    if (to > from) ::madvise(ring_ + from, static_cast<std::size_t>(to - from), MADV_REMOVE);
  }

  // Waits (mutex held on entry and exit) until `word` changes, a slice
  // passes or `deadline`: spins briefly first, then sleeps counted in
  // `waiting`. `word` changes only under the mutex, so no wake-up is lost.
  // Returns false if the deadline has passed.
  bool wait_for(Guard& g, std::atomic<std::uint32_t>& word, std::uint32_t& waiting, Clock::time_point deadline) {
    if (Clock::now() >= deadline) return false;
    const std::uint32_t seq = word.load(std::memory_order_seq_cst);
    g.unlock();
    const auto spin_end = std::min(deadline, Clock::now() + kQueueSpin);
    for (int i = 1; word.load(std::memory_order_relaxed) == seq; ++i) {
      cpu_relax();
      if ((i & 63) == 0 && Clock::now() >= spin_end) break;
    }
    g.lock();
    if (word.load(std::memory_order_relaxed) != seq) return true;
    ++waiting;
    g.unlock();
    const auto now = Clock::now();
    futex_wait(word, seq, deadline - now > kQueueWaitSlice ? now + kQueueWaitSlice : deadline);
    g.lock();
    if (waiting > 0) --waiting;
    return true;
  }

  std::shared_ptr<ShmBlock> block_;
  QueueState* state_ = nullptr;
  std::byte* ring_ = nullptr;
  std::size_t ring_bytes_ = 0;
  ShmKind kind_;
};

}  // namespace mproc::detail
