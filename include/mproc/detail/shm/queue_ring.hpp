// The shared-memory machinery of Queue, JoinableQueue and SimpleQueue: one
// memfd segment per queue holding a control block and a byte ring of
// variable-length records. No pipe, no feeder thread: put() copies the
// encoded item into the ring and returns.
//
// The ring. Positions (head, tail) count bytes since creation; a record
// lies at position % ring_bytes (a power of two), contiguously: an 8-byte
// header {payload size, check} and the payload padded to 8 bytes (an
// int64 item takes 16 bytes). When a record does not fit before the end of
// the ring, a skip record fills the rest and the record goes to offset 0. The ring is large and sparse (default
// 256 MiB of address space; memfd pages cost memory only once touched), and
// the producer wraps early — as soon as it is past the first `hot` bytes
// (1 MiB) and there is room at offset 0 — so a queue with a small backlog
// stays in the hot region; only a large backlog of unread items touches
// pages beyond it, and those are given back (MADV_REMOVE) once drained. So
// an "unbounded" queue accepts items until `ring_bytes` of unread encoded
// data are queued (put() then waits, as for a full bounded queue), and items
// of any size up to `ring_bytes` go through the ring itself. The memory is
// the queue's one segment (owned by its creator): an item stays readable
// after the process that put it exited.
//
// Concurrency. Producers serialize on one robust mutex, consumers on
// another (MutexState: a holder that dies is taken over by the next
// acquirer), so a producer and a consumer never contend. Between the two
// sides each operation has ONE publishing store: a producer writes its
// record, then publishes it by storing the item count (put_count); a
// consumer reads a record, then consumes it by storing its count
// (got_count). Everything else a side keeps (the tail, the head, the count
// of dropped items) follows that store and is re-derivable from a small
// journal written before it (pend_*, gpend_*): whoever takes a side's lock
// next first finishes what a holder killed after its publishing store left
// undone (repair_producers, repair_consumers). So a process killed at any
// instant of put or get leaves its item either wholly queued or wholly
// consumed, and the counts (qsize, the bound, a JoinableQueue's unfinished
// tasks) exact. Waiters that cannot rely on a next lock holder coming (a
// putter short of room, a joiner) finish a dead consumer's work themselves
// (settle_consumers). A side that must wait first spins (adaptively: only
// as long as spinning recently paid, i.e. while the other side runs on
// another CPU), then yields twice, then sleeps. Sleepers use an eventcount
// (queue_wait): they arm a sequence word, re-check, then sleep on it; the
// other side bumps and wakes it (all its sleepers) only when armed. They
// sleep in slices (kQueueWaitSlice), re-checking, as a last resort against
// a lost wake-up; a sleep cut short by a signal resumes at once, without
// spinning again, and keeps its deadline.
//
// Files: queue_layout.hpp (constants, record header, QueueState),
// queue_hooks.hpp (test hooks), queue_wait.hpp (QueueLock, the eventcount),
// this file (QueueCore: creation, put, get, task_done, join), and
// queue_recovery.hpp (QueueCore's repair after a killed process). Layer
// detail/shm; used by <mproc/queue.hpp>.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

#include <sys/mman.h>
#include <unistd.h>

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/os/futex.hpp>
#include <mproc/detail/shm/mutex_state.hpp>
#include <mproc/detail/shm/object.hpp>
#include <mproc/detail/shm/queue_hooks.hpp>
#include <mproc/detail/shm/queue_layout.hpp>
#include <mproc/detail/shm/queue_wait.hpp>
#include <mproc/detail/shm/segment.hpp>
#include <mproc/detail/util/lean_std.hpp>
#include <mproc/errors.hpp>

namespace mproc::detail {

// One process's view of a queue: the block and pointers into it. Copies
// share the queue. All members are thread- and process-safe.
class QueueCore {
 public:
  // Creates a queue of `kind` for items of fingerprint `type_hash`.
  // Throws ProcessError (bad ring size, out of memory or descriptors).
  QueueCore(ShmKind kind, std::uint64_t type_hash, std::int64_t maxsize, std::size_t ring_bytes) : kind_(kind) {
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    if (ring_bytes < kQueueMinRingBytes || ring_bytes > kMaxSegmentSize / 4)
      throw ProcessError(std::string("mproc: ") + shm_kind_name(kind) + ": ring size " + std::to_string(ring_bytes) +
                         " is out of range [" + std::to_string(kQueueMinRingBytes) + ", 2^45]");
    ring_bytes = std::max(std::bit_ceil(ring_bytes), page);  // positions map to offsets with a mask
    const std::size_t ring_offset = round_up(kQueueStateOffset + sizeof(QueueState), page);
    block_ = allocate_object(kind, ring_offset, ring_bytes, page, type_hash, 0, 0, 0);
    state_ = ::new (static_cast<void*>(block_->data() + kQueueStateOffset)) QueueState{};
    state_->maxsize = maxsize > 0 ? maxsize : 0;
    state_->ring_bytes = ring_bytes;
    state_->hot_bytes = std::min(kQueueHotBytes, ring_bytes);
    state_->ring_offset = ring_offset;
    ring_ = block_->data() + ring_offset;
    ring_bytes_ = ring_bytes;
    mask_ = ring_bytes - 1;
    hot_bytes_ = state_->hot_bytes;
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
    const std::uint64_t hot_bytes = state->hot_bytes;
    if (ring_offset < kQueueStateOffset + sizeof(QueueState) || ring_offset % kQueueRecordAlign != 0 ||
        ring_offset > block->length() || ring_bytes > block->length() - ring_offset ||
        ring_bytes < kQueueMinRingBytes || !std::has_single_bit(ring_bytes) || hot_bytes > ring_bytes)
      throw ProcessError("mproc: invalid handle for " + what + ": its ring does not fit in its " +
                         std::to_string(block->length()) + "-byte block");
    QueueCore core(kind);
    core.block_ = std::move(block);
    core.state_ = state;
    core.ring_ = core.block_->data() + ring_offset;
    core.ring_bytes_ = static_cast<std::size_t>(ring_bytes);
    core.mask_ = core.ring_bytes_ - 1;
    core.hot_bytes_ = static_cast<std::size_t>(hot_bytes);
    return core;
  }

  ShmHandle handle() const noexcept { return block_->handle(kind_); }
  const char* name() const noexcept { return shm_kind_name(kind_); }
  std::int64_t maxsize() const noexcept { return state_->maxsize; }
  std::size_t ring_bytes() const noexcept { return ring_bytes_; }
  std::size_t qsize() const noexcept { return static_cast<std::size_t>(items()); }
  bool full() const noexcept {
    const std::int64_t m = state_->maxsize;
    return m > 0 && items() >= static_cast<std::uint64_t>(m);
  }
  bool closed() const noexcept { return state_->closed.load(std::memory_order_acquire) != 0; }
  // JoinableQueue: items put and neither task_done() nor dropped (a snapshot).
  std::uint64_t unfinished() const noexcept {
    const QueueState& s = *state_;
    // Each only grows; read put_count last so that the result is never
    // below what it was at some instant.
    const std::uint64_t done = s.done_count.load(std::memory_order_seq_cst);
    const std::uint64_t dropped = s.dropped.load(std::memory_order_seq_cst);
    const std::uint64_t put = s.put_count.load(std::memory_order_seq_cst);
    return put > done + dropped ? put - done - dropped : 0;
  }

  // Tests only: the ring's bytes (to corrupt records), and taking the
  // producers' or consumers' lock without releasing it (to die holding it).
  std::span<std::byte> ring_for_testing() const noexcept { return {ring_, ring_bytes_}; }
  void lock_for_testing(bool producers) const {
    (producers ? state_->put_mutex : state_->get_mutex).lock(current_tid(), Clock::time_point::max());
  }

  // Bytes a record with a `len`-byte payload takes in the ring.
  static constexpr std::uint64_t record_bytes(std::uint64_t len) noexcept {
    return sizeof(QueueRecord) + (len + kQueueRecordAlign - 1) / kQueueRecordAlign * kQueueRecordAlign;
  }

  // Appends a record of `len` payload bytes, written by fill(std::byte*)
  // (noexcept), waiting for room (and for the producers' lock) until
  // `deadline`. A JoinableQueue counts the item as unfinished. Throws Full
  // on timeout, ShutDown if the queue is shut down, ProcessError if the item
  // can never fit.
  template <class Fill>
  void push(std::size_t len, Clock::time_point deadline, Fill&& fill) {
    const std::uint64_t rec = record_bytes(len);
    if (len > kQueueMaxItemBytes || rec > ring_bytes_)
      throw ProcessError(std::string("mproc: ") + name() + ".put(): an item of " + std::to_string(len) +
                         " encoded bytes does not fit in the queue's " + std::to_string(ring_bytes_) +
                         "-byte ring (see the ring_bytes constructor argument)");
    QueueState& s = *state_;
    // A blocking put that finds the queue (nearly) full waits briefly for
    // room for a batch, once: so producer and consumer do not advance in
    // lockstep, fighting over each other's cache lines for every item.
    bool may_batch = deadline == Clock::time_point::max();
    bool realigned = false;
    Clock::time_point settle_at{};  // see below
    for (;;) {
      {
        QueueLock g(s.put_mutex);
        if (!lock_producers(g, deadline)) throw Full(lock_timeout("put", "producers"));
        test_point(QueueStep::put_locked);
        if (s.closed.load(std::memory_order_acquire))
          throw ShutDown(std::string("mproc: ") + name() + ".put(): the queue is shut down");
        Slot slot;
        bool refreshed = false;
        if (find_room(rec, slot, true, &refreshed)) {
          if (refreshed && may_batch && !has_room(rec, kQueuePutBatch)) {
            may_batch = false;
            g.unlock();
            queue_wait(
                s.space_seq, s.putters_waiting, deadline, [] { return true; },
                [&] { return s.closed.load(std::memory_order_relaxed) || has_room(rec, kQueuePutBatch); });
            continue;
          }
          test_point(QueueStep::put_room_found);
          const std::uint64_t t = s.tail.load(std::memory_order_relaxed);
          if (slot.skip != 0) {
            write_header((t & mask_), 0, QueueRecord::kSkip);
            raise_high_water((t & mask_) + sizeof(QueueRecord));
          }
          write_header(slot.off, static_cast<std::uint32_t>(len), static_cast<std::uint32_t>(len) ^ QueueRecord::kItem);
          test_point(QueueStep::put_header_written);
          fill(ring_ + slot.off + sizeof(QueueRecord));
          raise_high_water(slot.off + rec);
          test_point(QueueStep::put_written);
          // Journal (count first: until both are stored they describe
          // nothing), publish, then the tail.
          const std::uint64_t count = s.put_count.load(std::memory_order_relaxed) + 1;
          const std::uint64_t end = t + slot.skip + rec;
          s.pend_count.store(count, std::memory_order_relaxed);
          crash_order();
          s.pend_tail.store(end, std::memory_order_relaxed);
          test_point(QueueStep::put_journaled);
          s.put_count.store(count, std::memory_order_release);  // publish: the record and pend_tail before it
          test_point(QueueStep::put_counted);
          s.tail.store(end, std::memory_order_release);
          test_point(QueueStep::put_published);
          g.unlock();
          fence_after_unlock();
          queue_notify(s.items_seq);
          return;
        }
        // An empty queue always has room: if the record fits neither
        // before the end of the ring nor at its start (or the positions
        // are off, after a process died realigning), move both positions
        // to the start of the next lap. Once per wait.
        if (!realigned && s.put_count.load(std::memory_order_relaxed) == s.got_count.load(std::memory_order_seq_cst)) {
          g.unlock();
          realigned = true;
          realign_empty(deadline);
          continue;
        }
      }
      // A consumer killed after consuming an item may have left its bytes
      // taken; the next consumer would give them back, but none may come.
      // Only after a slice of waiting: so it seldom meets a live consumer.
      const auto now = Clock::now();
      if (settle_at == Clock::time_point{}) {
        settle_at = now + kQueueWaitSlice;
      } else if (now >= settle_at) {
        settle_consumers();
        settle_at = now + kQueueWaitSlice;
      }
      const auto ready = [&] {
        return s.closed.load(std::memory_order_relaxed) || has_room(rec, 0) ||
               s.put_count.load(std::memory_order_relaxed) ==
                   s.got_count.load(std::memory_order_seq_cst);  // empty: realign
      };
      const auto batch = [&] { return s.closed.load(std::memory_order_relaxed) || has_room(rec, kQueuePutBatch); };
      if (!queue_wait(s.space_seq, s.putters_waiting, deadline, ready, batch)) throw Full();
      realigned = false;
    }
  }

  // Why try_pop found nothing before its deadline.
  enum class Miss { none, lock_busy, no_item };

  // Removes the oldest record and returns take(std::span<const std::byte>)
  // of its payload, waiting for one (and for the consumers' lock) until
  // `deadline`. If take throws a ProcessError (undecodable item) the
  // record is dropped and the error propagates; any other exception leaves
  // it queued. Throws Empty on timeout, ShutDown when the queue is shut
  // down and empty, ProcessError if the ring is corrupt (the queue is then
  // emptied).
  template <class Take>
  auto pop(Clock::time_point deadline, Take&& take) {
    Miss miss = Miss::none;
    auto value = try_pop(deadline, take, miss);
    if (!value) throw miss == Miss::lock_busy ? Empty(lock_timeout("get", "consumers")) : Empty();
    return std::move(*value);
  }

  // As pop, but returns nullopt (and why in `miss`) where pop throws Empty.
  // Drop: the record is consumed without take and counted as dropped (a
  // JoinableQueue's join() no longer waits for it).
  template <bool Drop = false, class Take>
  auto try_pop(Clock::time_point deadline, Take& take, Miss& miss)
      -> std::optional<std::invoke_result_t<Take&, std::span<const std::byte>>> {
    QueueState& s = *state_;
    for (;;) {
      {
        QueueLock g(s.get_mutex);
        if (!lock_consumers(g, deadline)) {
          miss = Miss::lock_busy;
          return std::nullopt;
        }
        test_point(QueueStep::get_locked);
        const bool was_closed = s.closed.load(std::memory_order_acquire) != 0;
        const std::uint64_t got = s.got_count.load(std::memory_order_relaxed);
        if (got == s.put_cache || !kQueueUseCaches) {
          const std::uint64_t put = s.put_count.load(std::memory_order_acquire);
          s.tail_cache = s.pend_tail.load(std::memory_order_acquire);
          crash_order();  // the bound before the count it bounds
          s.put_cache = put;
        }
        if (s.put_cache != got) {
          std::uint64_t h = s.head.load(std::memory_order_relaxed);
          if (s.put_cache - got > ring_bytes_ / sizeof(QueueRecord)) corrupt(g, deadline, h, "bad item counts");
          Found r = read_header(g, deadline, h);
          if (r.skip) {
            h += r.bytes;
            s.gpend_head.store(h, std::memory_order_relaxed);  // the count is unchanged: a skip is no item
            crash_order();
            s.head.store(h, std::memory_order_seq_cst);
            give_back_cold(h);
            test_point(QueueStep::get_skipped);
            r = read_header(g, deadline, h);
            if (r.skip) corrupt(g, deadline, h, "two skip records in a row");
          }
          const std::size_t off = static_cast<std::size_t>(h & mask_);
          const std::span<const std::byte> payload(ring_ + off + sizeof(QueueRecord), static_cast<std::size_t>(r.size));
          const std::uint64_t next = h + r.bytes;
          if constexpr (Drop) {
            consume(g, got, next, 1);
            return std::invoke_result_t<Take&, std::span<const std::byte>>{};
          } else {
            try {
              auto value = take(payload);
              test_point(QueueStep::get_taken);
              consume(g, got, next, 0);
              return value;
            } catch (const ProcessError&) {
              consume(g, got, next, 1);  // dropped: nobody will call task_done() for it
              throw;
            }
          }
        }
        if (was_closed) throw ShutDown(std::string("mproc: ") + name() + ".get(): the queue is shut down and empty");
      }
      if (!queue_wait(s.items_seq, s.getters_waiting, deadline, [&s] {
            return s.closed.load(std::memory_order_seq_cst) ||
                   s.put_count.load(std::memory_order_seq_cst) != s.got_count.load(std::memory_order_relaxed);
          })) {
        miss = Miss::no_item;
        return std::nullopt;
      }
    }
  }

  // Marks the queue closed and wakes every waiter. Idempotent. Non-blocking.
  void close() {
    QueueState& s = *state_;
    s.closed.store(1, std::memory_order_seq_cst);
    s.items_seq.fetch_add(2, std::memory_order_seq_cst);
    s.space_seq.fetch_add(2, std::memory_order_seq_cst);
    futex_wake(s.items_seq);
    futex_wake(s.space_seq);
  }

  // After close(): drops every queued record, counting each as dropped (so
  // join() returns). Blocks while another consumer holds the lock. Records
  // whose put was under way when close() began may still arrive later.
  void drop_all() {
    auto ignore = [](std::span<const std::byte>) { return 0; };
    Miss miss = Miss::none;
    try {
      while (try_pop<true>(Clock::time_point::max(), ignore, miss)) {
      }
    } catch (const ShutDown&) {  // closed and empty: done
    }
  }

  // JoinableQueue::task_done. Non-blocking.
  void task_done() {
    QueueState& s = *state_;
    std::uint64_t v = s.done_count.load(std::memory_order_relaxed);
    for (;;) {
      // dropped before put_count: a drop seen without its put cannot make
      // a correct call fail.
      const std::uint64_t dropped = s.dropped.load(std::memory_order_seq_cst);
      const std::uint64_t put = s.put_count.load(std::memory_order_seq_cst);
      if (v + dropped >= put)
        throw ProcessError(std::string("mproc: ") + name() +
                           ".task_done(): called more times than there were items put");
      if (s.done_count.compare_exchange_weak(v, v + 1, std::memory_order_seq_cst, std::memory_order_relaxed)) break;
    }
    queue_notify(s.done_seq);
  }

  // JoinableQueue::join: waits until no item is unfinished or `deadline`.
  bool join(Clock::time_point deadline) {
    QueueState& s = *state_;
    const auto done = [this] { return unfinished() == 0; };
    auto settle_at = Clock::now() + kQueueWaitSlice;
    while (!done()) {
      if (!queue_wait(s.done_seq, s.joiners_waiting, deadline, done)) return false;
      // A consumer killed right after dropping an item may not have
      // counted it yet; the next consumer would, but none may come. After
      // each slice of waiting.
      const auto now = Clock::now();
      if (now >= settle_at && !done()) {
        settle_consumers();
        settle_at = now + kQueueWaitSlice;
      }
    }
    return true;
  }

 private:
  explicit QueueCore(ShmKind kind) noexcept : kind_(kind) {}

  std::uint64_t items() const noexcept {
    const std::uint64_t got = state_->got_count.load(std::memory_order_acquire);
    const std::uint64_t put = state_->put_count.load(std::memory_order_acquire);
    return put > got ? put - got : 0;
  }

  std::string lock_timeout(const char* op, const char* side) const {
    return std::string("mproc: ") + name() + "." + op + "(): timed out waiting for the " + side +
           "' lock (held by another thread or process)";
  }

  // Takes the producers' lock until `deadline` (false: timed out), then
  // finishes what a holder killed after publishing an item left undone.
  bool lock_producers(QueueLock& g, Clock::time_point deadline) {
    if (!g.lock(deadline)) return false;
    repair_producers();
    return true;
  }
  bool lock_consumers(QueueLock& g, Clock::time_point deadline) {
    if (!g.lock(deadline)) return false;
    repair_consumers();
    return true;
  }

  // Recovery (defined in queue_recovery.hpp).
  //
  // Producers' lock held. If the journal describes the published count, the
  // tail must be its pend_tail (a producer died between publishing and
  // moving the tail); otherwise a producer died before publishing: its
  // record is ignored, and the journal is made to describe the present.
  void repair_producers() noexcept;

  // Consumers' lock held. The same for the consumers' journal: the head and
  // the dropped count that go with got_count.
  void repair_consumers();

  // Without a lock: if the consumers' journal shows a consumed or dropped
  // item whose head or dropped count was not stored (its consumer died, or
  // is storing them right now), takes the consumers' lock without waiting
  // (taking it over from a dead holder), which repairs them.
  void settle_consumers();

  // Where a record goes: at ring offset `off`, after a skip record of
  // `skip` bytes (0: none) filling the ring up to its end.
  struct Slot {
    std::uint64_t off = 0;
    std::uint64_t skip = 0;
  };

  // Finds room for a record of `rec` bytes; false if there is none. With
  // the producer lock held (`locked`), uses and refreshes the cached
  // consumer positions (they only grow: a stale cache under-counts room);
  // without it (a waiter's check), reads them afresh.
  bool find_room(std::uint64_t rec, Slot& slot, bool locked, bool* refreshed = nullptr) const noexcept {
    QueueState& s = *state_;
    const std::uint64_t t = s.tail.load(std::memory_order_relaxed);
    const bool cached = locked && kQueueUseCaches;
    std::uint64_t head = cached ? s.head_cache : s.head.load(std::memory_order_seq_cst);
    std::uint64_t got = cached ? s.got_cache : s.got_count.load(std::memory_order_seq_cst);
    if (room_at(rec, t, head, got, slot)) {
      // Past the hot region without wrapping: the cache may hide that the
      // consumer has made room at the start. Look now and then.
      if (!locked || slot.skip != 0 || (t & mask_) < hot_bytes_ || t < s.wrap_probe) return true;
      s.wrap_probe = t + kQueueWrapProbe;
    } else if (!locked) {
      return false;
    }
    s.head_cache = head = s.head.load(std::memory_order_seq_cst);
    s.got_cache = got = s.got_count.load(std::memory_order_seq_cst);
    if (refreshed) *refreshed = true;
    return room_at(rec, t, head, got, slot);
  }
  bool room_at(std::uint64_t rec, std::uint64_t t, std::uint64_t head, std::uint64_t got, Slot& slot) const noexcept {
    const QueueState& s = *state_;
    if (s.maxsize != 0) {
      const std::uint64_t put = s.put_count.load(std::memory_order_relaxed);
      if (put >= got && put - got >= static_cast<std::uint64_t>(s.maxsize)) return false;
    }
    const std::uint64_t n = ring_bytes_;
    const std::uint64_t used = t - head;
    if (used > n) return false;  // inconsistent snapshot (a waiter's check), or a realign half done
    const std::uint64_t off = t & mask_;
    const bool fits_here = off + rec <= n;
    const bool wrap_ok = off != 0 && used + (n - off) + rec <= n;
    if (fits_here && !(off >= hot_bytes_ && wrap_ok)) {
      if (used + rec > n) return false;
      slot = {off, 0};
      return true;
    }
    if (!wrap_ok) return false;
    slot = {0, n - off};
    return true;
  }
  // Whether a record of `rec` bytes fits, with room for `extra` more items
  // (of the same size) besides (a waiter's check, without the lock).
  bool has_room(std::uint64_t rec, std::uint64_t extra) const noexcept {
    const QueueState& s = *state_;
    if (s.maxsize != 0 && extra != 0) {
      extra = std::min<std::uint64_t>(extra, static_cast<std::uint64_t>(s.maxsize) / 4);
      (void)s.head.load(std::memory_order_seq_cst);  // then got_count is at least as new
      const std::uint64_t got = s.got_count.load(std::memory_order_acquire);
      const std::uint64_t put = s.put_count.load(std::memory_order_relaxed);
      if (put >= got && put - got + extra >= static_cast<std::uint64_t>(s.maxsize)) return false;
    }
    if (extra != 0) {
      const std::uint64_t used = s.tail.load(std::memory_order_relaxed) - s.head.load(std::memory_order_seq_cst);
      const std::uint64_t want =
          std::max<std::uint64_t>(rec, std::min<std::uint64_t>(rec * (extra + 1), ring_bytes_ / 4));
      if (used > ring_bytes_ || ring_bytes_ - used < want) return false;
    }
    Slot slot;
    return find_room(rec, slot, false);
  }

  // Producer lock held.
  void raise_high_water(std::uint64_t end) noexcept {
    std::atomic<std::uint64_t>& hw = state_->high_water;
    if (end > hw.load(std::memory_order_relaxed)) hw.store(end, std::memory_order_relaxed);
  }

  void write_header(std::uint64_t off, std::uint32_t size, std::uint32_t check) noexcept {
    const QueueRecord r{size, check};
    std::memcpy(ring_ + off, &r, sizeof r);
  }

  // A record as read and checked: a skip record, or an item's payload size;
  // `bytes` it takes in the ring.
  struct Found {
    bool skip = false;
    std::uint64_t size = 0;
    std::uint64_t bytes = 0;
  };

  // Reads and checks the record header at position h, which the consumer
  // counts knows to hold a record (consumer lock held): the record must lie
  // in the ring and within the published data (before tail_cache). Throws
  // ProcessError (and empties the queue) if it is corrupt.
  Found read_header(QueueLock& g, Clock::time_point deadline, std::uint64_t h) {
    const std::uint64_t off = h & mask_;
    const std::uint64_t avail = state_->tail_cache - h;
    if (avail < sizeof(QueueRecord) || avail > ring_bytes_ || off % kQueueRecordAlign != 0)
      corrupt(g, deadline, h, "bad positions");
    QueueRecord r{};
    std::memcpy(&r, ring_ + off, sizeof r);
    Found f;
    if (r.size == 0 && r.check == QueueRecord::kSkip) {
      f.skip = true;
      f.bytes = ring_bytes_ - off;
    } else if (r.check == (r.size ^ QueueRecord::kItem)) {
      f.size = r.size;
      f.bytes = record_bytes(r.size);
    } else {
      corrupt(g, deadline, h, "bad record header");
    }
    if (f.bytes > avail || off + f.bytes > ring_bytes_) corrupt(g, deadline, h, "bad record size");
    return f;
  }

  // Consumes the record that ends at `next` (consumer lock held, the
  // consumed count `got` before it), counting it dropped if `dropped` is 1;
  // wakes a putter waiting for room.
  void consume(QueueLock& g, std::uint64_t got, std::uint64_t next, std::uint64_t dropped) {
    QueueState& s = *state_;
    const std::uint64_t d = s.dropped.load(std::memory_order_relaxed) + dropped;
    // Journal (count first: until all are stored they describe nothing),
    // publish, then the head (got_count before head: a putter that reads
    // the new head also sees the new count) and the dropped count.
    s.gpend_count.store(got + 1, std::memory_order_relaxed);
    crash_order();
    s.gpend_head.store(next, std::memory_order_relaxed);
    if (dropped != 0) s.gpend_dropped.store(d, std::memory_order_relaxed);
    test_point(QueueStep::get_journaled);
    s.got_count.store(got + 1, std::memory_order_release);  // publish
    test_point(QueueStep::get_counted);
    s.head.store(next, std::memory_order_release);
    if (dropped != 0) s.dropped.store(d, std::memory_order_seq_cst);
    test_point(QueueStep::get_published);
    g.unlock();
    fence_after_unlock();
    queue_notify(s.space_seq);
    if (dropped != 0) queue_notify(s.done_seq);
  }

  // Defined in queue_recovery.hpp:
  //
  // Moves head and tail of an empty queue to the start of the next lap of
  // the ring (takes both locks, consumers' first). Throws Full if a lock
  // stays busy past `deadline`.
  void realign_empty(Clock::time_point deadline);

  // Drops every item (consumer lock held; takes the producer lock) and
  // throws ProcessError describing the corruption found at position `at`.
  // If the producers' lock stays busy past `deadline` the items stay (the
  // next get finds the corruption again).
  [[noreturn]] void corrupt(QueueLock& g, Clock::time_point deadline, std::uint64_t at, const char* why);

  // After the head passed a skip record to the start of the ring (consumer
  // lock held): gives back the drained pages beyond the hot region and the
  // live data when there are many. Takes the producer lock if it is free
  // (or its holder dead); skips the work otherwise.
  void give_back_cold(std::uint64_t h) {
    QueueState& s = *state_;
    if (s.high_water.load(std::memory_order_relaxed) < hot_bytes_ + kQueueColdSlack)
      return;  // a peek; re-checked below
    QueueLock p(s.put_mutex);
    if (!lock_producers(p, Clock::now())) return;
    const std::uint64_t live = s.tail.load(std::memory_order_relaxed) - h;  // live data: [0, live)
    if (live > ring_bytes_) return;
    const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
    const std::uint64_t from = (std::max<std::uint64_t>(hot_bytes_, live) + page - 1) / page * page;
    const std::uint64_t hw = s.high_water.load(std::memory_order_relaxed);
    const std::uint64_t to = std::min<std::uint64_t>((hw + page - 1) / page * page, ring_bytes_);
    if (to <= from || to - from < kQueueColdSlack) return;
    if (::madvise(ring_ + from, static_cast<std::size_t>(to - from), MADV_REMOVE) == 0)
      s.high_water.store(from, std::memory_order_relaxed);
  }

  std::shared_ptr<ShmBlock> block_;
  QueueState* state_ = nullptr;
  std::byte* ring_ = nullptr;
  std::size_t ring_bytes_ = 0;
  std::size_t mask_ = 0;
  std::size_t hot_bytes_ = 0;
  ShmKind kind_;
};

}  // namespace mproc::detail

// QueueCore's recovery members.
#include <mproc/detail/shm/queue_recovery.hpp>
