// The scheduling policy of the pools, in one place: how a map is cut into
// chunks when the caller gives no chunksize, and how far a lazy imap reads
// its input ahead of the consumer, and how a process pool keeps tasks on the
// workers that already mapped their shared data. Layer: detail/pool (policy
// only, no state, no dependency on other pool files); used by ThreadPool
// (thread_pool.hpp, detail/threads/), Pool (pool.hpp) and mpi::Pool (mpi.hpp).
// Each constant is named once here, with the reason for its value.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>

#include <mproc/detail/util/lean_std.hpp>
#include <mproc/errors.hpp>
#include <mproc/system.hpp>

namespace mproc::detail {

// How many workers a pool of `requested` workers starts: cpu_count() when
// not given (Python: processes=None). Throws ValueError naming `who` for 0,
// and for a count above what a pool can hold (e.g. a negative int converted).
inline std::size_t worker_count(std::optional<std::size_t> requested, const char* who) {
  if (!requested) return static_cast<std::size_t>(cpu_count());
  constexpr std::size_t most = static_cast<std::size_t>(std::numeric_limits<int>::max());
  if (*requested == 0 || *requested > most)
    throw ValueError(std::string("mproc: ") + who + ": the number of workers must be at least 1" +
                     (*requested == 0 ? "" : " and at most " + std::to_string(most)) + ", not " +
                     (*requested > most ? std::to_string(static_cast<long long>(*requested)) + " (a negative count?)"
                                        : std::to_string(*requested)));
  return *requested;
}

// Chunks per worker of a process pool's map (Pool, mpi::Pool): Python's
// `chunksize, extra = divmod(len, processes * 4); if extra: chunksize += 1`.
// A chunk costs a message round trip to a worker process, so chunks are
// large; 4 per worker still lets a worker that finishes early take a share
// of a slower worker's load.
inline constexpr std::size_t process_chunks_per_worker = 4;

// Chunks per thread of ThreadPool's map/parallel_for. A chunk costs one
// atomic add, so chunks can be finer than a process pool's: 8 per thread
// let the workers, which wake up later than the calling thread starts,
// and threads slowed by uneven items take over the remaining chunks.
inline constexpr std::size_t thread_chunks_per_worker = 8;

// The automatic chunk size: `items` split into about
// `workers * chunks_per_worker` chunks, rounded up so that no more chunks
// than that are made; at least 1 (also for 0 items). Pure; never throws.
// With process_chunks_per_worker this is Python's Pool default chunksize.
// Precondition: workers * chunks_per_worker != 0.
constexpr std::size_t auto_chunksize(std::size_t items, std::size_t workers, std::size_t chunks_per_worker) noexcept {
  const std::size_t chunks = workers * chunks_per_worker;
  const std::size_t size = items / chunks + (items % chunks != 0 ? 1 : 0);
  return size != 0 ? size : 1;
}

// Throws ValueError for a chunk size (or grain) above PTRDIFF_MAX, naming
// `what` (e.g. "Pool: chunksize"): no range holds that many items, so it is
// a negative number converted to std::size_t. Any smaller one is valid; one
// larger than the inputs makes a single chunk, as in Python.
inline void check_chunksize(std::size_t value, const char* what) {
  if (value > static_cast<std::size_t>(std::numeric_limits<std::ptrdiff_t>::max()))
    throw ValueError(std::string("mproc: ") + what + " " + std::to_string(value) +
                     " is more than any range holds (a negative number converted to std::size_t?)");
}

// A process pool's map (Pool, mpi::Pool) cut into chunks: `items` inputs in
// `count` chunks of `size` items, the last one possibly shorter.
struct ChunkPlan {
  std::size_t items = 0;
  std::size_t size = 1;
  std::size_t count = 0;

  // The inputs in chunk c (c < count).
  constexpr std::size_t items_in(std::size_t c) const noexcept {
    const std::size_t rest = items - c * size;
    return rest < size ? rest : size;
  }
};

// The chunks of a map of `items` inputs over `workers` processes in chunks of
// `chunksize` (0: auto_chunksize with process_chunks_per_worker). Callers
// check_chunksize first, before they read the inputs; any chunksize is safe
// here (the count cannot wrap). Pure; never throws.
constexpr ChunkPlan plan_chunks(std::size_t items, std::size_t chunksize, std::size_t workers) noexcept {
  ChunkPlan plan;
  plan.items = items;
  plan.size = chunksize != 0 ? chunksize : auto_chunksize(items, workers, process_chunks_per_worker);
  plan.count = items / plan.size + (items % plan.size != 0 ? 1 : 0);
  return plan;
}

// How many chunks per worker a lazy imap keeps submitted ahead of its
// consumer: its read-ahead is imap_window_chunks_per_worker * workers *
// chunksize items. 2 keeps every worker busy with one chunk while the next
// one waits in its queue, so workers do not idle while the consumer tops up,
// yet bounds the inputs copied and the results held for a slow consumer.
inline constexpr std::size_t imap_window_chunks_per_worker = 2;

// imap's read-ahead, in items (see imap_window_chunks_per_worker); SIZE_MAX
// (all of them) where that product would not fit.
constexpr std::size_t imap_window(std::size_t workers, std::size_t chunksize) noexcept {
  const std::size_t chunks = imap_window_chunks_per_worker * workers;
  constexpr std::size_t most = std::numeric_limits<std::size_t>::max();
  return chunks != 0 && chunksize > most / chunks ? most : chunks * chunksize;
}

// How far Pool::map's encoder runs ahead of the workers: it stops once
// `min_units` chunks are encoded but not yet taken by a worker (at least
// imap_window_chunks_per_worker per worker, so none idles) and they hold
// window_bytes or more, or number window_units or more. Small chunks may
// queue up more (cheap to hold, and the encoder's pauses cost more than they
// save); large ones are capped, bounding the memory of inputs copied ahead.
struct Window {
  static constexpr std::size_t window_bytes = std::size_t{4} << 20;
  static constexpr std::size_t window_units = 1024;
  std::size_t min_units;
  constexpr bool full(std::size_t units, std::size_t bytes) const noexcept {
    return units >= min_units && (bytes >= window_bytes || units >= window_units);
  }
};

// Pool::map hands encoded chunks to the I/O thread in batches: one lock and
// at most one wake-up per batch instead of per chunk, yet small enough
// (map_batch_tasks chunks or map_batch_bytes bytes) that workers start on
// the first chunks while later ones are still being encoded.
inline constexpr std::size_t map_batch_tasks = 64;
inline constexpr std::size_t map_batch_bytes = std::size_t{256} << 10;

// Locality (Pool: affinity.hpp). A task is steered to a worker that mapped
// its largest shared block before only if that block is at least
// locality_min_bytes: mapping a smaller one costs a worker less than the
// wait for a busy one (mapping costs ~1-5 us per 4 KiB page on a VM).
inline constexpr std::size_t locality_min_bytes = std::size_t{64} << 10;

// How deep into its queue the pool looks for a task that a free worker has
// mapped already (tasks further back wait their turn: the window bounds the
// cost of a dispatch and how far results can come out of order).
inline constexpr std::size_t locality_window = 64;

// How long a free worker waits for busy ones to take the tasks whose data
// only they have mapped, before it takes one (and maps that data itself):
// about what mapping it costs, so that neither choice loses more than half.
// A worker maps and first reads a prefaulted block (segment.hpp's map_fd) at
// ~0.5 ms per MiB on the virtual machines measured (bench/README.md, P1);
// at most locality_patience_max.
inline constexpr std::chrono::nanoseconds locality_patience_per_mib{500'000};
inline constexpr std::chrono::milliseconds locality_patience_max{1000};

constexpr std::chrono::nanoseconds locality_patience(std::uint64_t bytes) noexcept {
  const auto mib = static_cast<double>(bytes) / static_cast<double>(std::uint64_t{1} << 20);
  const auto ns = static_cast<double>(locality_patience_per_mib.count()) * mib;
  const auto most = static_cast<double>(std::chrono::nanoseconds(locality_patience_max).count());
  return std::chrono::nanoseconds(static_cast<std::int64_t>(ns < most ? ns : most));
}

// Keys the affinity table holds before it starts over (bounds its memory
// when a program streams many distinct shared blocks through the pool).
inline constexpr std::size_t locality_keys_max = 4096;

}  // namespace mproc::detail
