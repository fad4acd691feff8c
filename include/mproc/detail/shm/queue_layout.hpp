// The shared-memory layout of a Queue's segment (queue_ring.hpp says how it
// is used): the tuning constants, the record header of the byte ring, and
// the control block QueueState with each side's lock, published counters
// and journal. Layer detail/shm, on MutexState (mutex_state.hpp); data only,
// used by the other queue_*.hpp.
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <climits>
#include <cstddef>
#include <cstdint>

#include <mproc/detail/shm/mutex_state.hpp>
#include <mproc/detail/util/lean_std.hpp>

namespace mproc::detail {

// Default address space of a queue's ring (pages are allocated on use).
inline constexpr std::size_t kQueueDefaultRingBytes = std::size_t{256} << 20;
// The region a queue with a small backlog stays in.
inline constexpr std::size_t kQueueHotBytes = std::size_t{1} << 20;
// Drained pages beyond the hot region are given back once they exceed this.
inline constexpr std::size_t kQueueColdSlack = std::size_t{16} << 20;
// A producer past the hot region re-reads the consumer's position every
// this many bytes, to wrap early.
inline constexpr std::uint64_t kQueueWrapProbe = 64 * 1024;
// Smallest ring a caller may ask for.
inline constexpr std::size_t kQueueMinRingBytes = 4096;
// A producer that found the queue full spins until this many items fit.
inline constexpr std::uint64_t kQueuePutBatch = 32;
// Longest single sleep of a waiting getter/putter/joiner before it re-checks.
inline constexpr std::chrono::milliseconds kQueueWaitSlice{100};
// How long a getter or putter spins at most before yielding and sleeping,
// and how many pause instructions separate its polls.
inline constexpr std::chrono::microseconds kQueueSpin{10};
inline constexpr int kQueuePollPauses = 256;
// Then how many times it yields the CPU before sleeping.
inline constexpr int kQueueYields = 2;

// ThreadSanitizer sees the synchronization between threads of one process
// only. A position cached in shared memory may have been read by another
// process, so under TSan the positions are always re-read (an acquire it
// can see) instead of trusting the caches.
#if defined(__SANITIZE_THREAD__)
inline constexpr bool kQueueUseCaches = false;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
inline constexpr bool kQueueUseCaches = false;
#else
inline constexpr bool kQueueUseCaches = true;
#endif
#else
inline constexpr bool kQueueUseCaches = true;
#endif

// A record's header in the ring: an item of `size` payload bytes, or a
// skip record (size 0) that fills the ring up to its end.
struct QueueRecord {
  static constexpr std::uint32_t kItem = 0x7271706du;  // "mpqr"
  static constexpr std::uint32_t kSkip = 0x7371706du;  // "mpqs"
  std::uint32_t size;   // payload bytes
  std::uint32_t check;  // size ^ kItem for an item, kSkip for a skip record
};
static_assert(sizeof(QueueRecord) == 8);
inline constexpr std::size_t kQueueRecordAlign = 8;
// Largest encoded item (its size must fit the header).
inline constexpr std::size_t kQueueMaxItemBytes = UINT32_MAX - 64;

// The control block in shared memory (after the ObjectHeader). Each side's
// lock and private fields, and each side's published fields, have cache
// lines of their own, so polling the other side's position does not slow
// down its locking. Every field is read by other processes after this one
// died, so a field whose order of stores matters is an atomic.
struct QueueState {
  // Fixed at creation (read-only afterwards), and the closed flag.
  std::int64_t maxsize = 0;  // items; 0: unbounded
  std::uint64_t ring_bytes = 0;
  std::uint64_t hot_bytes = 0;
  std::uint64_t ring_offset = 0;  // of the ring from the block start (page aligned)
  std::atomic<std::uint32_t> closed{0};
  // Producers: their lock and private fields (under put_mutex).
  alignas(64) MutexState put_mutex;
  std::uint64_t head_cache = 0;  // head and got_count as last read
  std::uint64_t got_cache = 0;
  std::uint64_t wrap_probe = 0;  // tail position from which to refresh them to find room at the start
  std::atomic<std::uint64_t> high_water{0};  // highest ring offset ever written (read by a consumer)
  // Producers: published (and their journal, on the same line: consumers
  // read it anyway). put_count is THE publishing store of a put; the tail
  // follows it. pend_tail is the tail that goes with put_count ==
  // pend_count, stored before put_count: it also bounds the published data
  // for consumers (it is >= the end of every record put_count counts).
  alignas(64) std::atomic<std::uint64_t> put_count{0};
  std::atomic<std::uint64_t> pend_count{0};
  std::atomic<std::uint64_t> pend_tail{0};
  std::atomic<std::uint64_t> tail{0};
  std::atomic<std::uint32_t> items_seq{0};  // eventcount of waiting getters
  // Consumers: their lock and private fields (under get_mutex).
  alignas(64) MutexState get_mutex;
  std::uint64_t put_cache = 0;   // put_count as last read
  std::uint64_t tail_cache = 0;  // pend_tail read right after it: bounds the records put_cache counts
  // Consumers: published, and their journal. got_count is THE publishing
  // store of a get (items consumed or dropped); head and dropped follow it;
  // gpend_head and gpend_dropped are what they must be when got_count ==
  // gpend_count.
  alignas(64) std::atomic<std::uint64_t> got_count{0};
  std::atomic<std::uint64_t> head{0};
  std::atomic<std::uint64_t> dropped{0};  // items discarded as corrupt or undecodable
  std::atomic<std::uint64_t> gpend_count{0};
  std::atomic<std::uint64_t> gpend_head{0};
  std::atomic<std::uint64_t> gpend_dropped{0};
  std::atomic<std::uint32_t> space_seq{0};  // eventcount of waiting putters
  // Sleepers (written when going to sleep only).
  alignas(64) std::atomic<std::uint32_t> getters_waiting{0};
  std::atomic<std::uint32_t> putters_waiting{0};
  std::atomic<std::uint32_t> joiners_waiting{0};
  // JoinableQueue: task_done() calls. Unfinished tasks: put_count -
  // dropped - done_count.
  alignas(64) std::atomic<std::uint64_t> done_count{0};
  std::atomic<std::uint32_t> done_seq{0};  // eventcount of joiners
};

inline constexpr std::size_t kQueueStateOffset = 64;

}  // namespace mproc::detail
