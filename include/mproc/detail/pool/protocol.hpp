// The process pool's wire protocol: every message between a pool's owner
// (engine.hpp, pool.hpp) and its workers (worker.hpp), encoded and decoded
// here and nowhere else. Layer: detail/pool, above the channel (channel.hpp
// frames: {type, id, payload, optional fd}) and serialization.
//
//   owner -> worker   pm_task{id}      TaskHeader, then the encoded arguments
//                                      (or, flag task_args_in_heap, the
//                                      ShmHandle of their transfer-heap block)
//                     pm_stop          exit once idle
//   worker -> owner   pm_ready         the initializer succeeded (or none)
//                     pm_init_failed   ExceptionInfo {type name, message}
//                     pm_result{id}    the task's results (below)
//                     pm_result_fd{id} {u64 size} + a sealed memfd holding them
//                     pm_results_ready results wait in the worker's result
//                                      ring (result_ring.hpp), small ones
//                                      go there rather than in pm_result
//   worker config     WorkerConfigHeader {status board, initializer
//   (at fork)         trampoline, fn}, then the initializer's arguments
//
// A task's results are a form byte, then either one std::vector<R> of every
// value (results_values: every call succeeded) or, per call, a status byte
// and the value or the error (results_items). An error is {type name,
// message, i32 pid of the worker, u8 typed, and if typed the encoded fields
// of a type of the registry in remote_exceptions.hpp}; the owner rebuilds it
// as RemoteException<E> (typed) or RemoteError.
// Bytes from a worker are untrusted: decoding throws ProcessError on
// anything malformed.
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <iterator>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include <mproc/detail/pool/remote_exceptions.hpp>
#include <mproc/detail/pool/result_ring.hpp>
#include <mproc/detail/shm/segment.hpp>
#include <mproc/detail/shm/transfer_heap.hpp>
#include <mproc/detail/util/demangle.hpp>
#include <mproc/errors.hpp>
#include <mproc/serialize.hpp>

namespace mproc::detail {

// ---------------------------------------------------------------- messages

enum PoolMsg : std::uint16_t {
  pm_task = 1,         // owner -> worker: id = task id, payload = TaskHeader + arguments
  pm_stop = 2,         // owner -> worker: exit once idle
  pm_ready = 10,       // worker -> owner: the initializer succeeded
  pm_init_failed = 11, // worker -> owner: payload = ErrorInfo of the initializer
  pm_result = 12,      // worker -> owner: id = task id, payload = results
  pm_result_fd = 13,   // worker -> owner: id = task id, payload = {u64 size}, fd = sealed
                       //   memfd holding the results (results of at least result_via_fd() bytes)
  pm_results_ready = 14,  // worker -> owner: results wait in its result ring (result_ring.hpp)
};

// Results at least this large travel in a sealed memfd passed with the
// frame rather than through the socket: no size limit but memory (frames
// stop at Channel::max_payload), and no channel buffers of their size. Below
// it the socket is faster on this kernel (a memfd's fresh pages cost more
// than the copies through the socket). A variable only so that tests can
// exercise the memfd path with small results (workers forked afterwards
// inherit the value).
inline std::size_t& result_via_fd() noexcept {
  static std::size_t bytes = std::size_t{64} << 20;
  return bytes;
}

// Seals a result memfd carries, checked by the owner before it maps it (a
// worker that could still shrink it could make the owner die of SIGBUS).
inline constexpr int kResultSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL;

// The status board: shared memory owned by the pool's owner, inherited by
// the workers: a header, then per worker slot its status lines and its
// result ring (result_ring.hpp).
//
// A worker notes in `started` the id of the task whose user code it is
// about to run. When a worker dies, the owner reads it: the task noted (if
// still unfinished) is the one lost; tasks handed to the worker but never
// started are run by another worker.
struct alignas(64) SlotStatus {
  std::atomic<std::uint64_t> started{0};
  ResultRingWords ring;
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

struct alignas(64) BoardHeader {
  // 1 while the owner's I/O thread sleeps in poll() (or is about to): a
  // worker that publishes a result then wakes it through the socket.
  std::atomic<std::uint32_t> owner_asleep{0};
};

inline constexpr std::size_t board_slot_bytes = sizeof(SlotStatus) + result_ring_bytes;
static_assert(board_slot_bytes % 64 == 0);

// Bytes of a board for `slots` worker slots.
constexpr std::size_t board_bytes(std::size_t slots) noexcept { return sizeof(BoardHeader) + slots * board_slot_bytes; }

// A board's parts, over its mapping (`base`, board_bytes(slots) or more).
class BoardView {
 public:
  explicit BoardView(std::byte* base) noexcept : base_(base) {}
  BoardHeader& header() const noexcept { return *reinterpret_cast<BoardHeader*>(base_); }
  SlotStatus& slot(std::size_t i) const noexcept {
    return *reinterpret_cast<SlotStatus*>(base_ + sizeof(BoardHeader) + i * board_slot_bytes);
  }
  std::byte* ring_data(std::size_t i) const noexcept {
    return base_ + sizeof(BoardHeader) + i * board_slot_bytes + sizeof(SlotStatus);
  }

 private:
  std::byte* base_;
};

// ---------------------------------------------------------------- tasks

// 32 bytes, so the arguments after it start 16-byte aligned like the frame.
struct TaskHeader {
  std::uint64_t trampoline;
  std::uint64_t fn;
  std::uint64_t count;
  std::uint64_t flags;  // task_args_in_heap: a ShmHandle follows instead of the arguments
};
enum : std::uint64_t { task_args_in_heap = 1 };
static_assert(sizeof(TaskHeader) == 32);

enum : std::uint8_t { item_ok = 0, item_error = 1 };

// Writes input `in` as wire type Arg (both pools, every call). Without a
// converted temporary when `in` already encodes as Arg does: when it is an
// Arg, or shares Arg's fingerprint and so its encoding (a std::string_view
// for a std::string parameter, a std::vector<double> for a
// std::span<const double> one), so nothing is copied and a gather writer
// can refer to the input's data in place. Throws what the conversion or the
// writer throws.
template <class Arg, class In>
void write_as(Writer& w, const In& in) {
  using I = std::remove_cvref_t<In>;
  if constexpr (std::is_same_v<I, Arg>) {
    w.write(in);
  } else if constexpr (serializable<I> && type_fingerprint<I>() == type_fingerprint<Arg>()) {
    w.write(in);
  } else {
    w.write(Arg(in));
  }
}

// Writes the next `n` inputs from `it` as Arg, advancing `it`.
template <class Arg, class It>
void write_inputs(Writer& w, It& it, std::size_t n) {
  for (std::size_t k = 0; k < n; ++k, ++it) write_as<Arg>(w, *it);
}

// The encoded size of the next `n` inputs from `it` as Arg when they can be
// read twice (a forward iterator; `it` does not move), else 0 (unknown).
template <class Arg, class It>
std::size_t inputs_encoded_size(It it, std::size_t n) {
  if constexpr (std::forward_iterator<It>) {
    Writer counter(Writer::count_only);
    write_inputs<Arg>(counter, it, n);
    return counter.size();
  } else {
    return 0;
  }
}

// Encodes a task frame's payload into `payload` (cleared first): a
// TaskHeader {trampoline, fn, count, flags} and the arguments that
// `write(Writer&)` writes, returning the number of calls they make. `size` is
// their encoded size when known beforehand (0: unknown). Arguments of at
// least TransferHeap::threshold bytes go to a block of `heap` (kept in
// `args` until the task is done) and the payload carries its handle: when
// `size` is known they are written there directly, else they are moved
// there after encoding. Throws what `write` or the heap throw.
template <class Write>
std::uint64_t encode_task(std::vector<std::byte>& payload, TransferHeap::Block& args, TransferHeap& heap,
                          std::uint64_t trampoline, std::uint64_t fn, std::size_t size, Write&& write) {
  TaskHeader h{trampoline, fn, 0, 0};
  if (size < TransferHeap::threshold) payload.reserve(sizeof h + size);  // one allocation when the size is known
  payload.assign(sizeof h, std::byte{});
  const auto put_handle = [&] {
    h.flags |= task_args_in_heap;
    const ShmHandle where = args.handle();
    const auto* p = reinterpret_cast<const std::byte*>(&where);
    payload.insert(payload.end(), p, p + sizeof where);
  };
  if (size >= TransferHeap::threshold) {
    args = heap.allocate(size);
    Writer w(args.bytes());
    h.count = write(w);
    put_handle();
  } else {
    {
      Writer w(payload);
      h.count = write(w);
    }
    const std::size_t encoded = payload.size() - sizeof h;
    if (encoded >= TransferHeap::threshold) {
      // Single-pass inputs cannot be measured before they are encoded.
      args = heap.allocate(encoded);
      std::memcpy(args.bytes().data(), payload.data() + sizeof h, encoded);
      payload.resize(sizeof h);
      put_handle();
    }
  }
  std::memcpy(payload.data(), &h, sizeof h);
  return h.count;
}

// Reads a task frame's header. Returns nullopt if the payload is too short.
inline std::optional<TaskHeader> read_task_header(std::span<const std::byte> payload) noexcept {
  TaskHeader h{};
  if (payload.size() < sizeof h) return std::nullopt;
  std::memcpy(&h, payload.data(), sizeof h);
  return h;
}

// Where a task's encoded arguments are: the bytes after its header, or the
// transfer-heap block they name (`heap` receives the block's mapping, kept
// while the arguments are read). Throws ProcessError if the handle is
// malformed or the block cannot be opened.
inline std::span<const std::byte> task_arguments(std::span<const std::byte> payload, const TaskHeader& h,
                                                 std::shared_ptr<Mapping>& heap) {
  std::span<const std::byte> bytes = payload.subspan(sizeof h);
  if (!(h.flags & task_args_in_heap)) return bytes;
  ShmHandle where;
  if (bytes.size() != sizeof where) throw ProcessError("mproc: malformed task (bad transfer-heap handle)");
  std::memcpy(&where, bytes.data(), sizeof where);
  heap = open_segment(where, "the arguments of a pool task");
  return {heap->data() + where.offset, static_cast<std::size_t>(where.length)};
}

// ---------------------------------------------------------------- results

// A writer appending one item to a task's results, aligning relative to the
// start of the results, where the owner's Reader starts.
class ItemWriter : public Writer {
 public:
  explicit ItemWriter(std::vector<std::byte>& out) : Writer(out) {
    writer_access::set_origin(*this, std::size_t{0} - out.size());
  }
};

// Appends a failed call's item: status, then the error (TaskError: what
// capture_task_error captured; ExceptionInfo: a failure of the machinery in
// this process, which goes untyped).
inline void write_item_error(std::vector<std::byte>& out, const TaskError& error) {
  ItemWriter w(out);
  w.write(item_error);
  w.write(error.type_name);
  w.write(error.message);
  w.write(static_cast<std::int32_t>(error.pid));
  w.write(static_cast<std::uint8_t>(error.typed));
  if (error.typed) w.write(error.fields);
}
inline void write_item_error(std::vector<std::byte>& out, const ExceptionInfo& info) {
  ItemWriter w(out);
  w.write(item_error);
  w.write(info.type_name);
  w.write(info.message);
  w.write(static_cast<std::int32_t>(::getpid()));
  w.write(std::uint8_t{0});
}

// The forms of a task's results.
enum : std::uint8_t {
  results_items = 0x10,   // per call: status byte, then value or error
  results_values = 0x11,  // every call succeeded: one std::vector<R> (one copy for arithmetic R)
};

// Appends the results of a task of `count` calls that all failed with
// `info` (the error is reported for every call).
inline void write_task_failed(std::vector<std::byte>& out, std::uint64_t count, const ExceptionInfo& info) {
  {
    ItemWriter w(out);
    w.write(results_items);
  }
  for (std::uint64_t i = 0; i < count; ++i) write_item_error(out, info);
}

// Appends results_values and every value (the form of a task whose calls
// all succeeded). Throws what encoding a value throws.
template <class R>
void write_values(std::vector<std::byte>& out, const std::vector<R>& values) {
  ItemWriter w(out);
  w.write(results_values);
  w.write(values);
}

// Starts the per-call form of a task's results (results_items).
inline void write_items_form(std::vector<std::byte>& out) {
  ItemWriter w(out);
  w.write(results_items);
}

// Appends a successful call's item: status, then its value (if any).
template <class... V>
void write_item_ok(std::vector<std::byte>& out, const V&... value) {
  ItemWriter w(out);
  w.write(item_ok);
  (w.write(value), ...);
}

// Reads the error of an item whose status was item_error: the exception the
// owner raises for it (rebuild_task_error: RemoteException<E>, RemoteError,
// or ProcessError if a typed error's fields are malformed). Throws
// ProcessError if the error itself is malformed (the results cannot be read
// further).
inline std::exception_ptr read_item_error(Reader& r) {
  auto type = r.read<std::string>();
  auto message = r.read<std::string>();
  const auto pid = r.read<std::int32_t>();
  const auto typed = r.read<std::uint8_t>();
  if (typed > 1) throw ProcessError("mproc: Pool: malformed result from a worker (bad error kind byte)");
  std::vector<std::byte> fields;
  if (typed == 1) fields = r.read<std::vector<std::byte>>();
  return rebuild_task_error(std::move(type), std::move(message), pid > 0 ? pid : 0, typed == 1, fields);
}

// Reads the results of a task of `count` calls (results are untrusted
// bytes): on_value(i, R&&) for each success (on_value(i) for void R),
// on_error(i, exception_ptr) for each failed call (read_item_error). Throws
// ProcessError if the results are malformed.
template <class R, class OnValue, class OnError>
void read_results(Reader& r, std::uint64_t count, OnValue&& on_value, OnError&& on_error) {
  const auto form = r.read<std::uint8_t>();
  if (form == results_values) {
    if constexpr (std::is_void_v<R>) {
      throw ProcessError("mproc: Pool: malformed result from a worker (values for a void task)");
    } else {
      auto values = r.read<std::vector<R>>();
      if (values.size() != count)
        throw ProcessError("mproc: Pool: malformed result from a worker (" + std::to_string(values.size()) +
                           " values for " + std::to_string(count) + " calls)");
      for (std::uint64_t i = 0; i < count; ++i) {
        if constexpr (std::is_same_v<R, bool>) {
          on_value(i, bool(values[i]));  // std::vector<bool> hands out proxies
        } else {
          on_value(i, std::move(values[i]));
        }
      }
    }
    return;
  }
  if (form != results_items) throw ProcessError("mproc: Pool: malformed result from a worker (bad form byte)");
  for (std::uint64_t i = 0; i < count; ++i) {
    const auto status = r.read<std::uint8_t>();
    if (status == item_error) {
      on_error(i, read_item_error(r));
    } else if (status != item_ok) {
      throw ProcessError("mproc: Pool: malformed result from a worker (bad status byte)");
    } else if constexpr (std::is_void_v<R>) {
      on_value(i);
    } else {
      on_value(i, r.read<R>());
    }
  }
}

// The payload of pm_result_fd: the results' size in bytes.
inline std::span<const std::byte> result_fd_payload(const std::uint64_t& size) noexcept {
  return {reinterpret_cast<const std::byte*>(&size), sizeof size};
}

// Decodes pm_result_fd's payload; nullopt if malformed.
inline std::optional<std::uint64_t> read_result_fd_payload(std::span<const std::byte> payload) noexcept {
  std::uint64_t size = 0;
  if (payload.size() != sizeof size) return std::nullopt;
  std::memcpy(&size, payload.data(), sizeof size);
  return size;
}

// ---------------------------------------------------------------- worker config and initializer

// The pool configuration a worker receives: [ShmHandle of the status board]
// [initializer trampoline][fn][encoded initializer arguments]. A zero
// trampoline means no initializer.
struct WorkerConfigHeader {
  ShmHandle board;
  std::uint64_t init_trampoline = 0;
  std::uint64_t init_fn = 0;
};

// A worker's configuration, decoded (views into the bytes it was given).
struct WorkerConfig {
  ShmHandle board;
  std::uint64_t init_trampoline = 0;  // 0: no initializer
  std::uint64_t init_fn = 0;
  std::span<const std::byte> init_args;
};

// An initializer message: [trampoline][fn][the arguments `write(Writer&)`
// writes]. Throws what `write` throws.
template <class Write>
std::vector<std::byte> encode_initializer(std::uint64_t trampoline, std::uint64_t fn, Write&& write) {
  std::vector<std::byte> out(2 * sizeof(std::uint64_t));
  std::memcpy(out.data(), &trampoline, sizeof trampoline);
  std::memcpy(out.data() + sizeof trampoline, &fn, sizeof fn);
  Writer w(out);
  write(w);
  return out;
}

// The configuration workers receive at fork: the status board and the
// initializer message (empty: none).
inline std::vector<std::byte> encode_worker_config(const ShmHandle& board, std::span<const std::byte> initializer) {
  WorkerConfigHeader h;
  h.board = board;
  std::vector<std::byte> config(sizeof h);
  if (initializer.size() >= 2 * sizeof(std::uint64_t)) {
    std::memcpy(&h.init_trampoline, initializer.data(), sizeof(std::uint64_t));
    std::memcpy(&h.init_fn, initializer.data() + sizeof(std::uint64_t), sizeof(std::uint64_t));
    config.insert(config.end(), initializer.begin() + 2 * sizeof(std::uint64_t), initializer.end());
  }
  std::memcpy(config.data(), &h, sizeof h);
  return config;
}

// Decodes a worker's configuration; nullopt if it is too short.
inline std::optional<WorkerConfig> decode_worker_config(std::span<const std::byte> config) noexcept {
  WorkerConfigHeader h;
  if (config.size() < sizeof h) return std::nullopt;
  std::memcpy(&h, config.data(), sizeof h);
  return WorkerConfig{h.board, h.init_trampoline, h.init_fn, config.subspan(sizeof h)};
}

// The payload of pm_init_failed, from the initializer trampoline's results
// ([results_items][status][type name, message, ...]); empty if they hold no error.
inline std::span<const std::byte> init_failure_payload(std::span<const std::byte> results) noexcept {
  if (results.size() < 2 || results[1] != std::byte{item_error}) return {};
  return results.subspan(2);
}

// Whether the initializer trampoline's results say it succeeded.
inline bool init_succeeded(std::span<const std::byte> results) noexcept {
  return results.size() >= 2 && results[0] == std::byte{results_items} && results[1] == std::byte{item_ok};
}

// Decodes pm_init_failed's payload (untrusted: a malformed one gives type
// "unknown" and an empty message). Only the type name and message are read:
// an initializer's exception is reported as RemoteError, typed or not.
inline ExceptionInfo decode_init_failure(std::span<const std::byte> payload) {
  ExceptionInfo info;
  try {
    Reader r(payload);
    info.type_name = r.read<std::string>();
    info.message = r.read<std::string>();
  } catch (const ProcessError&) {
    info.type_name = "unknown";
    info.message.clear();
  }
  return info;
}

}  // namespace mproc::detail
