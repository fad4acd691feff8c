// mproc/detail/mpi/encode.hpp — an MPI pool's task messages: a chunk of
// inputs encoded as one task, copied or referred to in place.
//
// Layer detail/mpi, over the message format (base.hpp), the TaskRef and
// OutTask of the client (client.hpp), the trampoline records (image.hpp), the
// core's Writer (serialize.hpp) and the inputs' wire form, which the process
// pool shares (detail/pool/protocol.hpp: write_as, write_inputs). Used by
// mpi.hpp's Pool (map, starmap, their async forms, imap, apply_async);
// serving ranks decode what it writes (server.hpp, run_task_message).
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <memory>
#include <ranges>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include <mproc/detail/mpi/base.hpp>
#include <mproc/detail/mpi/client.hpp>
#include <mproc/detail/mpi/image.hpp>
#include <mproc/detail/pool/protocol.hpp>

namespace mproc::detail::mpi {

// A task message: header, TaskRef, then the arguments `write(w)` writes
// (`size`: their encoded size if known, to reserve once).
template <class F, class Arg, bool Star, class Write>
std::vector<std::byte> encode_task(const CodeRef& fn, std::uint64_t count, std::size_t size, Write&& write) {
  auto msg = new_message(Kind::task, 0, sizeof(TaskRef) + size);
  const TaskRef ref{task_code_ref<F, Arg, Star>(), task_code<F, Arg, Star>.check, fn, count};
  const auto* p = reinterpret_cast<const std::byte*>(&ref);
  msg.insert(msg.end(), p, p + sizeof ref);
  {
    Writer w(msg);
    write(w);
  }
  seal_message(msg);
  return msg;
}

// Whether the encoding of consecutive inputs from `It` as Arg is their
// memory itself: contiguous inputs of a type copied bitwise (int, double,
// trivially copyable structs), written back to back without padding.
template <class Arg, class It>
constexpr bool contiguous_bitwise_inputs() {
  if constexpr (std::contiguous_iterator<It>) {
    return std::is_same_v<std::iter_value_t<It>, Arg> && mproc::detail::bitwise<Arg>;
  } else {
    return false;
  }
}

// The next `n` inputs from `it` as one task, referring to the inputs' large
// contiguous blocks in place instead of copying them (a gathered message),
// when `it` yields lvalues, the task has such blocks and fits in one MPI
// message; a plain (copied) message otherwise. The caller keeps the inputs
// alive and unchanged until `borrowing` is back to 0.
template <class F, class Arg, bool Star, class It>
OutTask encode_chunk_in_place(const CodeRef& fn, It& it, std::size_t n, std::shared_ptr<TaskSink> sink,
                              std::size_t chunk, const std::shared_ptr<std::atomic<std::size_t>>& borrowing) {
  static_assert(std::is_lvalue_reference_v<std::iter_reference_t<It>>);
  OutTask t;
  t.count = n;
  t.sink = std::move(sink);
  t.chunk = chunk;
  t.msg = new_message(Kind::task, 0, sizeof(TaskRef) + 1024);
  const TaskRef ref{task_code_ref<F, Arg, Star>(), task_code<F, Arg, Star>.check, fn, n};
  const auto* p = reinterpret_cast<const std::byte*>(&ref);
  t.msg.insert(t.msg.end(), p, p + sizeof ref);
  const std::size_t head = t.msg.size();
  std::size_t total = head;
  if constexpr (contiguous_bitwise_inputs<Arg, It>()) {
    // The calls' arguments are the inputs' own bytes, one after the other.
    const auto bytes = std::as_bytes(std::span(std::to_address(it), n));
    it += static_cast<std::iter_difference_t<It>>(n);
    total += bytes.size();
    // Small: one copy costs less than describing the pieces to MPI.
    if (bytes.size() >= default_gather_threshold && total <= max_message_bytes()) {
      t.pieces = {std::span<const std::byte>(t.msg.data(), head), bytes};
      t.borrowing = borrowing;
    } else {
      t.msg.insert(t.msg.end(), bytes.begin(), bytes.end());
    }
    std::memcpy(t.msg.data() + offsetof(MsgHeader, total), &total, sizeof total);
    return t;
  }
  std::vector<std::byte> flat;
  {
    Writer w(Writer::gather, t.msg);  // (refers to t.msg until its end)
    write_inputs<Arg>(w, it, n);
    w.finish();
    total += w.size();
    if (w.piece_count() > 1 && total <= max_message_bytes()) {
      t.pieces.emplace_back(t.msg.data(), head);
      w.for_each_piece([&](std::span<const std::byte> piece) { t.pieces.push_back(piece); });
    } else if (w.piece_count() > 1) {
      // Too large for one message: copy it into a plain one (sent in parts).
      flat.reserve(total);
      flat.insert(flat.end(), t.msg.begin(), t.msg.begin() + static_cast<std::ptrdiff_t>(head));
      w.for_each_piece([&](std::span<const std::byte> piece) { flat.insert(flat.end(), piece.begin(), piece.end()); });
    }
  }
  if (!flat.empty()) t.msg = std::move(flat);
  std::memcpy(t.msg.data() + offsetof(MsgHeader, total), &total, sizeof total);
  if (!t.pieces.empty()) t.borrowing = borrowing;
  return t;
}

// The next `n` inputs from `it` as one task.
template <class F, class Arg, bool Star, class It>
OutTask encode_chunk(const CodeRef& fn, It& it, std::size_t n, std::shared_ptr<TaskSink> sink, std::size_t chunk) {
  OutTask t;
  t.count = n;
  t.sink = std::move(sink);
  t.chunk = chunk;
  if constexpr (contiguous_bitwise_inputs<Arg, It>()) {
    const auto bytes = std::as_bytes(std::span(std::to_address(it), n));
    it += static_cast<std::iter_difference_t<It>>(n);
    t.msg =
        encode_task<F, Arg, Star>(fn, n, bytes.size(), [&](Writer& w) { w.write_bytes(bytes.data(), bytes.size()); });
    return t;
  }
  t.msg = encode_task<F, Arg, Star>(fn, n, inputs_encoded_size<Arg>(it, n),
                                    [&](Writer& w) { write_inputs<Arg>(w, it, n); });
  return t;
}

// The next inputs of an imap from `source` (an InputCursor; at most `max`)
// as one task of wire type Arg; its count is the number taken (0:
// none was left, and the task is to be dropped). Its sink and chunk are the
// caller's to set.
template <class F, class Arg, class Cursor>
OutTask encode_imap_chunk(const CodeRef& fn, Cursor& source, std::size_t max) {
  std::size_t n = 0;
  auto msg = encode_task<F, Arg, false>(
      fn, 0, 0, [&](Writer& w) { n = source.take(max, [&](const auto& x) { write_as<Arg>(w, x); }); });
  OutTask t;
  t.count = n;
  if (n == 0) return t;
  // Patch the call count into the TaskRef.
  const std::uint64_t count = n;
  std::memcpy(msg.data() + sizeof(MsgHeader) + offsetof(TaskRef, count), &count, sizeof count);
  t.msg = std::move(msg);
  return t;
}

}  // namespace mproc::detail::mpi
