// Process-shared FIFO queues (Python: multiprocessing.Queue, JoinableQueue,
// SimpleQueue): Queue<T>, JoinableQueue<T>, SimpleQueue<T>, for any
// serializable T (serialize.hpp), usable from any number of threads and
// processes at once.
//
//   mp::Queue<std::string> q;          // unbounded; Queue<T> q(8): at most 8 items
//   mp::Process p([q]() mutable { q.put("hello"); });
//   p.start();
//   std::string s = q.get();           // blocks; q.get(1s) throws mp::Empty on timeout
//
// Items live in the queue's shared memory (see detail/shm/queue_ring.hpp): put()
// encodes the item into the queue and returns at once (no feeder thread, no
// pipe), so an item put by a process that then exits is still delivered.
// An item that cannot be encoded makes put() throw and leaves the queue
// unchanged. Types copied bitwise (integers, trivially copyable structs)
// are stored raw; other types as a serialized frame, checked on get().
//
// Like the objects of synchronize.hpp these are handles: copies refer to the
// same queue. A queue created before fork() is inherited by the child (a
// Process target may capture it); a queue created later reaches another
// process through a Pipe, another Queue or a Pool argument (as a handle).
// The creating process owns the queue's memory and must outlive the other
// processes' use of it (as for Value).
//
// Capacity. Queue(maxsize) with maxsize > 0 holds at most maxsize items.
// Every queue also holds at most `ring_bytes` (default 256 MiB, rounded up
// to a power of two; address space reserved, memory used only as needed and
// given back after a large backlog drained) of encoded unread items: an
// "unbounded" queue (maxsize <= 0) accepts items until then and put() then
// waits for room as a full bounded queue does. A single item larger than
// the ring (or than 4 GiB encoded) makes put() throw ProcessError.
//
// Shutdown (Python 3.13's queue.Queue.shutdown) is for every process:
// after shutdown(), put() throws ShutDown and get() returns the items left,
// then throws ShutDown at once (no waiting), so consumers drain and stop —
// `for (T x : q)` does exactly that; shutdown(true) drops the items left.
// Blocked getters and putters wake up. close() is shutdown(): unlike
// Python's Queue.close(), it concerns every process, not the caller only.
//
// A process killed at any instant (SIGKILL, a crash) leaves the queue
// whole. A put is one publishing store: killed before it, the put did not
// happen (nothing queued, nothing counted); killed after it, the item is
// queued like any other. A get is one consuming store: killed before it,
// the item stays queued for the next get (the killed process never
// returned it, so nothing is delivered twice); killed after it, the item
// is consumed and lost with the process. qsize(), full(), the bound and a
// JoinableQueue's unfinished tasks stay exact either way. A process that
// dies holding one of the queue's two internal locks does not block the
// others: the next operation takes the lock over within about 20 ms and
// first finishes the dead holder's bookkeeping. A JoinableQueue consumer
// killed between get() and task_done() leaves its task unfinished: join()
// waits for it, as Python's does; join(timeout) returns false,
// unfinished_tasks() counts it, and whoever knows the consumer died may
// call task_done() in its place.
//
// Deadlines. A timed or non-blocking call waits for the internal locks
// (held only while one item is copied in or out) until its deadline too: a
// lock held past it, by a live thread or process (say, a stopped one),
// makes put throw Full and get throw Empty, saying so (Python's get_nowait
// raises Empty when its lock is busy, too). Waits interrupted by signals
// resume where they were and keep their deadline.
//
// Untrusted bytes. A record found corrupted (bytes of the ring overwritten)
// makes get() throw ProcessError and empties the queue; an item whose bytes
// do not decode as a T makes get() throw the decoder's ProcessError and is
// dropped (a JoinableQueue counts it done). get() never reads outside the
// ring nor loops on bad bytes.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/shm/handle_serialize.hpp>
#include <mproc/detail/shm/object.hpp>
#include <mproc/detail/shm/queue_ring.hpp>
#include <mproc/detail/util/lean_std.hpp>
#include <mproc/detail/util/queue_iterator.hpp>
#include <mproc/errors.hpp>
#include <mproc/serialize.hpp>

namespace mproc {

namespace detail {

// Items of T are stored as their raw bytes (no frame) when T's serializer
// copies it bitwise.
template <class T>
inline constexpr bool queue_raw_v = bitwise<T> && std::is_trivially_copyable_v<T>;

// What a queue's header records as its item type (checked by from_handle).
template <class T>
constexpr std::uint64_t queue_fingerprint() noexcept {
  return type_fingerprint<T>() ^ (queue_raw_v<T> ? 0x5241575241575241ull : 0);
}

// The per-thread buffer items are encoded into before put() takes the lock
// (so a throwing serializer leaves the queue unchanged and user code never
// runs under the queue's lock).
inline std::vector<std::byte>& queue_encode_buffer() {
  thread_local std::vector<std::byte> buffer;
  return buffer;
}

// The operations shared by the three queue classes.
template <class T>
class QueueBase {
  static_assert(serializable<T>, "mproc::Queue<T>: T must be serializable (see mproc/serialize.hpp)");
  static_assert(!std::is_const_v<T> && !std::is_reference_v<T>, "mproc::Queue<T>: T must be a plain object type");
  static_assert(check_owning_decodable<T, decode_site::queue_item>());  // no views into the producer

 protected:
  QueueBase(ShmKind kind, int maxsize, std::size_t ring_bytes)
      : core_(kind, queue_fingerprint<T>(), maxsize, ring_bytes) {}
  QueueBase(const ShmHandle& h, ShmKind kind) : core_(QueueCore::open(h, kind, queue_fingerprint<T>())) {}

  void put_until(const T& x, Clock::time_point deadline) {
    if constexpr (queue_raw_v<T>) {
      core_.push(sizeof(T), deadline, [&x](std::byte* dst) noexcept { std::memcpy(dst, &x, sizeof(T)); });
    } else {
      std::vector<std::byte>& buf = queue_encode_buffer();
      buf.clear();
      struct Trim {  // do not keep a huge buffer per thread
        std::vector<std::byte>& b;
        ~Trim() {
          if (b.capacity() > (std::size_t{4} << 20)) std::vector<std::byte>().swap(b);
        }
      } trim{buf};
      dumps_append(buf, x);
      core_.push(buf.size(), deadline, [&buf](std::byte* dst) noexcept { std::memcpy(dst, buf.data(), buf.size()); });
    }
  }

  T get_until(Clock::time_point deadline) { return core_.pop(deadline, take_item()); }

  std::optional<T> try_get_now() {
    auto take = take_item();
    typename QueueCore::Miss miss{};
    return core_.try_pop(Clock::now(), take, miss);
  }

  void shutdown(bool immediate) {
    core_.close();
    if (immediate) core_.drop_all();
  }

  // Decodes one item's bytes (a ProcessError drops the item: see pop).
  auto take_item() const {
    return [name = core_.name()](std::span<const std::byte> bytes) -> T {
      if constexpr (queue_raw_v<T>) {
        if (bytes.size() != sizeof(T))
          throw ProcessError(std::string("mproc: ") + name + ".get(): corrupted item: " + std::to_string(bytes.size()) +
                             " bytes for a " + std::to_string(sizeof(T)) + "-byte item");
        if constexpr (std::is_default_constructible_v<T>) {
          T value;
          std::memcpy(static_cast<void*>(&value), bytes.data(), sizeof(T));
          return value;
        } else {
          alignas(T) std::byte raw[sizeof(T)];
          std::memcpy(raw, bytes.data(), sizeof(T));
          return *std::launder(reinterpret_cast<T*>(raw));
        }
      } else {
        return loads<T>(bytes);
      }
    };
  }

  template <class Rep, class Period>
  static Clock::time_point deadline_of(std::chrono::duration<Rep, Period> timeout) noexcept {
    return deadline_after(timeout);
  }

  QueueCore core_;
};

}  // namespace detail

// A FIFO queue shared by threads and processes (Python:
// multiprocessing.Queue). All members are thread- and process-safe. put and
// get (all variants) may wait for the producers' or consumers' internal
// lock, held only while one item is copied in or out; the timed and nowait
// variants only until their deadline (see "Deadlines" above).
template <class T>
class Queue : protected detail::QueueBase<T> {
 public:
  using value_type = T;

  // A queue of at most `maxsize` items (<= 0: unbounded, up to `ring_bytes`
  // of encoded items, rounded up to a power of two). Throws ProcessError
  // (ring_bytes < 4096 or > 2^45, out of memory or descriptors).
  explicit Queue(int maxsize = 0, std::size_t ring_bytes = detail::kQueueDefaultRingBytes)
      : Queue(detail::ShmKind::queue, maxsize, ring_bytes) {}
  Queue(const Queue&) = default;
  Queue& operator=(const Queue&) = default;

  // Appends `x`, blocking while the queue is full. Throws what encoding x
  // throws (queue unchanged), ShutDown if the queue is shut down,
  // ProcessError if x can never fit.
  void put(const T& x) { this->put_until(x, detail::Clock::time_point::max()); }
  // As put(x), waiting at most `timeout` for room (and for the producers'
  // lock); throws Full after it.
  template <class Rep, class Period>
  void put(const T& x, std::chrono::duration<Rep, Period> timeout) {
    this->put_until(x, this->deadline_of(timeout));
  }
  // As put(x) without waiting for room; throws Full if there is none (or
  // if the producers' lock stays busy beyond a brief spin).
  void put_nowait(const T& x) { this->put_until(x, detail::Clock::now()); }

  // Removes and returns the oldest item, blocking while the queue is empty.
  // Throws ShutDown if the queue is shut down and empty, ProcessError if the
  // item cannot be decoded (it is dropped) or the queue is corrupted.
  T get() { return this->get_until(detail::Clock::time_point::max()); }
  // As get(), waiting at most `timeout` (for an item and for the
  // consumers' lock); throws Empty after it.
  template <class Rep, class Period>
  T get(std::chrono::duration<Rep, Period> timeout) {
    return this->get_until(this->deadline_of(timeout));
  }
  // As get() without waiting; throws Empty if there is no item (or if the
  // consumers' lock stays busy beyond a brief spin).
  T get_nowait() { return this->get_until(detail::Clock::now()); }
  // As get_nowait(), but returns nullopt where it throws Empty (no item, or
  // the consumers' lock busy beyond a brief spin). Still throws ShutDown
  // once the queue is shut down and drained, and ProcessError as get().
  [[nodiscard]] std::optional<T> try_get() { return this->try_get_now(); }

  // Range-for over the items: each step is a blocking get(); the range
  // ends when the queue is shut down and drained. begin() blocks for the
  // first item. Throws what get() throws, except ShutDown.
  detail::QueueIterator<Queue> begin() { return detail::QueueIterator<Queue>(*this); }
  std::default_sentinel_t end() const noexcept { return {}; }

  // Number of items in the queue (a snapshot). Non-blocking.
  std::size_t qsize() const noexcept { return this->core_.qsize(); }
  // Whether the queue holds no item (a snapshot). Non-blocking.
  bool empty() const noexcept { return this->core_.qsize() == 0; }
  // Whether a bounded queue holds maxsize items (a snapshot; always false
  // when unbounded). Non-blocking.
  bool full() const noexcept { return this->core_.full(); }
  // The bound given at construction (0: unbounded).
  int maxsize() const noexcept { return static_cast<int>(this->core_.maxsize()); }

  // Shuts the queue down for every process (Python 3.13: shutdown; see the
  // file comment): later puts throw ShutDown; gets return the items left,
  // then throw ShutDown. immediate: the items left are dropped instead (a
  // JoinableQueue counts them done, so join() returns). Waiters wake up.
  // Idempotent. Non-blocking, except that immediate waits for the
  // consumers' lock. Items whose put was under way may still arrive.
  void shutdown(bool immediate = false) { detail::QueueBase<T>::shutdown(immediate); }
  // The same as shutdown().
  void close() { this->core_.close(); }
  // Whether the queue was shut down (by any process). Non-blocking.
  bool closed() const noexcept { return this->core_.closed(); }

  // The handle that identifies this queue to another process (from_handle).
  detail::ShmHandle handle() const noexcept { return this->core_.handle(); }
  // The queue a handle from another process describes. Throws ProcessError
  // if the handle is malformed, its creator is gone, or it is not a
  // Queue<T>.
  static Queue from_handle(const detail::ShmHandle& h) { return Queue(h, detail::ShmKind::queue); }

  // Tests only: the shared-memory machinery.
  const detail::QueueCore& core_for_testing() const noexcept { return this->core_; }

 protected:
  Queue(detail::ShmKind kind, int maxsize, std::size_t ring_bytes) : detail::QueueBase<T>(kind, maxsize, ring_bytes) {}
  Queue(const detail::ShmHandle& h, detail::ShmKind kind) : detail::QueueBase<T>(h, kind) {}
};

// A Queue whose consumers report each item done (Python:
// multiprocessing.JoinableQueue): every put() adds an unfinished task,
// task_done() removes one, join() waits until none is left.
template <class T>
class JoinableQueue : public Queue<T> {
 public:
  explicit JoinableQueue(int maxsize = 0, std::size_t ring_bytes = detail::kQueueDefaultRingBytes)
      : Queue<T>(detail::ShmKind::joinable_queue, maxsize, ring_bytes) {}
  JoinableQueue(const JoinableQueue&) = default;
  JoinableQueue& operator=(const JoinableQueue&) = default;

  // Marks one item got from the queue as processed. Non-blocking; thread-
  // and process-safe. Throws ProcessError if called more times than items
  // were put (Python's ValueError).
  void task_done() { this->core_.task_done(); }
  // Blocks until every item put has been task_done() (items dropped as
  // corrupt or undecodable count as done). Like Python's, waits forever
  // for the task of a consumer that died before its task_done(): use
  // join(timeout) where consumers may die. Thread- and process-safe.
  void join() { (void)this->core_.join(detail::Clock::time_point::max()); }
  // As join(), for at most `timeout`; returns whether all tasks were done
  // (false: unfinished_tasks() says how many are left).
  template <class Rep, class Period>
  [[nodiscard]] bool join(std::chrono::duration<Rep, Period> timeout) {
    return this->core_.join(detail::deadline_after(timeout));
  }
  // Items put and not yet task_done() (a snapshot). Non-blocking.
  std::uint64_t unfinished_tasks() const { return this->core_.unfinished(); }

  static JoinableQueue from_handle(const detail::ShmHandle& h) {
    return JoinableQueue(h, detail::ShmKind::joinable_queue);
  }

 private:
  JoinableQueue(const detail::ShmHandle& h, detail::ShmKind kind) : Queue<T>(h, kind) {}
};

// An unbounded FIFO queue with only put/get/empty/close (Python:
// multiprocessing.SimpleQueue). Same storage, rules and guarantees as Queue.
template <class T>
class SimpleQueue : protected detail::QueueBase<T> {
 public:
  using value_type = T;

  // An unbounded queue (up to `ring_bytes` of encoded items). Throws
  // ProcessError.
  explicit SimpleQueue(std::size_t ring_bytes = detail::kQueueDefaultRingBytes)
      : detail::QueueBase<T>(detail::ShmKind::simple_queue, 0, ring_bytes) {}
  SimpleQueue(const SimpleQueue&) = default;
  SimpleQueue& operator=(const SimpleQueue&) = default;

  // Appends `x` (waits only if the ring is full). Throws as Queue::put.
  void put(const T& x) { this->put_until(x, detail::Clock::time_point::max()); }
  // Removes and returns the oldest item, blocking while empty. Throws as
  // Queue::get.
  T get() { return this->get_until(detail::Clock::time_point::max()); }
  // Whether the queue holds no item (a snapshot). Non-blocking.
  bool empty() const noexcept { return this->core_.qsize() == 0; }
  // Shuts the queue down for every process, as Queue::shutdown.
  void shutdown(bool immediate = false) { detail::QueueBase<T>::shutdown(immediate); }
  // The same as shutdown().
  void close() { this->core_.close(); }
  // Whether the queue was shut down (by any process). Non-blocking.
  bool closed() const noexcept { return this->core_.closed(); }
  // Range-for until shut down and drained, as Queue's.
  detail::QueueIterator<SimpleQueue> begin() { return detail::QueueIterator<SimpleQueue>(*this); }
  std::default_sentinel_t end() const noexcept { return {}; }

  detail::ShmHandle handle() const noexcept { return this->core_.handle(); }
  static SimpleQueue from_handle(const detail::ShmHandle& h) { return SimpleQueue(h); }

 private:
  explicit SimpleQueue(const detail::ShmHandle& h) : detail::QueueBase<T>(h, detail::ShmKind::simple_queue) {}
};

// Queues cross processes (Pipe, Queue, Pool arguments) by handle: the
// receiver uses the same queue.
template <class T>
struct serializer<Queue<T>> : detail::handle_serializer<Queue<T>> {};
template <class T>
struct serializer<JoinableQueue<T>> : detail::handle_serializer<JoinableQueue<T>> {};
template <class T>
struct serializer<SimpleQueue<T>> : detail::handle_serializer<SimpleQueue<T>> {};

}  // namespace mproc
