// Recovery of the shared-memory Queue from a process killed at any instant
// (see "Concurrency" in queue_ring.hpp): QueueCore's members that finish
// from the journal what a dead lock holder left undone (repair_producers,
// repair_consumers, settle_consumers), move an empty queue's positions
// (realign_empty), and empty a corrupt ring (corrupt). Layer detail/shm;
// the rest of QueueCore is in queue_ring.hpp, which includes this file.
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include <mproc/detail/shm/queue_ring.hpp>
#include <mproc/errors.hpp>

namespace mproc::detail {

inline void QueueCore::repair_producers() noexcept {
  QueueState& s = *state_;
  const std::uint64_t put = s.put_count.load(std::memory_order_relaxed);
  if (s.pend_count.load(std::memory_order_relaxed) == put) [[likely]] {
    const std::uint64_t t = s.pend_tail.load(std::memory_order_relaxed);
    if (s.tail.load(std::memory_order_relaxed) != t) [[unlikely]]
      s.tail.store(t, std::memory_order_release);
    return;
  }
  s.pend_tail.store(s.tail.load(std::memory_order_relaxed), std::memory_order_release);
  crash_order();
  s.pend_count.store(put, std::memory_order_relaxed);
}

inline void QueueCore::repair_consumers() {
  QueueState& s = *state_;
  const std::uint64_t got = s.got_count.load(std::memory_order_relaxed);
  if (s.gpend_count.load(std::memory_order_relaxed) == got) [[likely]] {
    const std::uint64_t h = s.gpend_head.load(std::memory_order_relaxed);
    const std::uint64_t d = s.gpend_dropped.load(std::memory_order_relaxed);
    if (s.head.load(std::memory_order_relaxed) != h) [[unlikely]] {
      s.head.store(h, std::memory_order_seq_cst);
      queue_notify(s.space_seq);
    }
    if (s.dropped.load(std::memory_order_relaxed) != d) [[unlikely]] {
      s.dropped.store(d, std::memory_order_seq_cst);
      queue_notify(s.done_seq);
    }
    return;
  }
  s.gpend_head.store(s.head.load(std::memory_order_relaxed), std::memory_order_relaxed);
  s.gpend_dropped.store(s.dropped.load(std::memory_order_relaxed), std::memory_order_relaxed);
  crash_order();
  s.gpend_count.store(got, std::memory_order_relaxed);
}

inline void QueueCore::settle_consumers() {
  QueueState& s = *state_;
  if (s.gpend_count.load(std::memory_order_acquire) != s.got_count.load(std::memory_order_acquire)) return;
  if (s.gpend_head.load(std::memory_order_acquire) == s.head.load(std::memory_order_acquire) &&
      s.gpend_dropped.load(std::memory_order_acquire) == s.dropped.load(std::memory_order_acquire))
    return;
  QueueLock g(s.get_mutex);
  (void)lock_consumers(g, Clock::now());
}

inline void QueueCore::realign_empty(Clock::time_point deadline) {
  QueueState& s = *state_;
  QueueLock c(s.get_mutex);
  if (!lock_consumers(c, deadline)) throw Full(lock_timeout("put", "consumers"));
  QueueLock p(s.put_mutex);
  if (!lock_producers(p, deadline)) throw Full(lock_timeout("put", "producers"));
  const std::uint64_t got = s.got_count.load(std::memory_order_relaxed);
  if (s.put_count.load(std::memory_order_relaxed) != got) return;  // no longer empty
  const std::uint64_t h = s.head.load(std::memory_order_relaxed);
  const std::uint64_t t = s.tail.load(std::memory_order_relaxed);
  // The later of the two (the head is ahead after a realign half done).
  const std::uint64_t front = t - h <= ring_bytes_ ? t : h;
  if (h == t && (t & mask_) == 0) return;
  test_point(QueueStep::realign_locked);
  const std::uint64_t start = (front & mask_) == 0 ? front : front + (ring_bytes_ - (front & mask_));
  // Both journals first (counts unchanged, so each applies alone: the
  // consumers' first, as a head ahead of the tail is mended by the next
  // realign, a tail ahead of the head is not), then the positions.
  s.gpend_head.store(start, std::memory_order_relaxed);
  crash_order();
  s.pend_tail.store(start, std::memory_order_relaxed);
  crash_order();
  s.head.store(start, std::memory_order_release);
  test_point(QueueStep::realign_half);
  s.tail.store(start, std::memory_order_release);
  s.head_cache = start;
  s.got_cache = got;
  s.tail_cache = start;
  s.put_cache = got;
}

[[noreturn]] inline void QueueCore::corrupt(QueueLock& g, Clock::time_point deadline, std::uint64_t at,
                                            const char* why) {
  QueueState& s = *state_;
  bool emptied = false;
  {
    QueueLock p(s.put_mutex);
    if (lock_producers(p, deadline)) {
      const std::uint64_t put = s.put_count.load(std::memory_order_relaxed);
      const std::uint64_t got = s.got_count.load(std::memory_order_relaxed);
      const std::uint64_t t = s.tail.load(std::memory_order_relaxed);
      const std::uint64_t d = s.dropped.load(std::memory_order_relaxed) + (put > got ? put - got : 0);
      s.gpend_count.store(put, std::memory_order_relaxed);  // != got: the journal describes nothing yet
      crash_order();
      s.gpend_head.store(t, std::memory_order_relaxed);
      s.gpend_dropped.store(d, std::memory_order_relaxed);
      crash_order();
      s.got_count.store(put, std::memory_order_seq_cst);
      s.head.store(t, std::memory_order_seq_cst);
      s.dropped.store(d, std::memory_order_seq_cst);
      s.tail_cache = t;
      s.put_cache = put;
      emptied = true;
    }
  }
  g.unlock();
  fence_after_unlock();
  queue_notify(s.space_seq);
  queue_notify(s.done_seq);
  throw ProcessError(
      std::string("mproc: ") + name() + ".get(): corrupted queue (" + why + " at ring offset " +
      std::to_string(at & mask_) + "); " +
      (emptied ? "the queue's items were discarded" : "its items could not be discarded: the producers' lock is busy"));
}

}  // namespace mproc::detail
