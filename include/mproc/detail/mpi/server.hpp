// mproc/detail/mpi/server.hpp — the serving side of an MPI pool: the loop a
// serving rank runs until its client stops the pool.
//
// Layer detail/mpi, over the message transport (base.hpp), the task and
// hello formats (client.hpp), code resolution (image.hpp) and the store of
// broadcast values (broadcast.hpp); it runs tasks with the core's worker
// trampolines. Used by mpi.hpp's Pool constructor on every rank but the client.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include <mproc/detail/mpi/base.hpp>
#include <mproc/detail/mpi/broadcast.hpp>
#include <mproc/detail/mpi/client.hpp>
#include <mproc/detail/mpi/image.hpp>

namespace mproc::detail::mpi {

// Runs one task message `in` (complete, checked header), leaving the
// result message in `out`. Never throws: a failure to decode or resolve the
// task fails each of its calls with that error.
inline void run_task_message(std::span<const std::byte> in, std::vector<std::byte>& out, int rank) noexcept {
  const MsgHeader h = header_of(in);
  std::uint64_t count = 1;  // until the task's own count is known: one error item
  // `out` keeps its memory from task to task (no fresh pages for each result).
  auto start_result = [&] {
    MsgHeader r;
    r.kind = static_cast<std::uint16_t>(Kind::result);
    r.id = h.id;
    out.resize(sizeof r);
    std::memcpy(out.data(), &r, sizeof r);
  };
  try {
    start_result();
    if (in.size() < sizeof(MsgHeader) + sizeof(TaskRef))
      throw ProcessError("mproc::mpi: malformed task (" + std::to_string(in.size()) + " bytes)");
    TaskRef ref;
    std::memcpy(&ref, in.data() + sizeof(MsgHeader), sizeof ref);
    // The count is untrusted: bounded by the bytes that came with it (with
    // room for arguments that encode to nothing), so a corrupted count
    // cannot make this rank report errors for ever.
    const std::size_t arg_bytes = in.size() - sizeof(MsgHeader) - sizeof(TaskRef);
    if (ref.count > arg_bytes + (std::uint64_t{1} << 16))
      throw ProcessError("mproc::mpi: malformed task (" + std::to_string(ref.count) + " calls for " +
                         std::to_string(arg_bytes) + " bytes of arguments)");
    count = ref.count;
    // The last resolution is remembered: a rank usually runs one function
    // many times. (An entry is only ever one that was fully checked.)
    static thread_local TaskRef last_ref{};
    static thread_local Trampoline last_run = nullptr;
    static thread_local std::uintptr_t last_fn = 0;
    Trampoline run = nullptr;
    std::uintptr_t fn = 0;
    if (last_run != nullptr && std::memcmp(&ref, &last_ref, offsetof(TaskRef, count)) == 0) {
      run = last_run;
      fn = last_fn;
    } else {
      run = resolve_trampoline(ref.trampoline, ref.check);
      fn = resolve_function(ref.fn);
      last_ref = ref;
      last_run = run;
      last_fn = fn;
    }
    Reader args(in.subspan(sizeof(MsgHeader) + sizeof(TaskRef)));
    run(fn, args, count, out);
  } catch (...) {
    try {
      ExceptionInfo info = describe_current_exception();
      info.message = "on serving " + rank_name(rank) + ": " + info.message;
      start_result();
      write_task_failed(out, std::min<std::uint64_t>(count, 1u << 20), info);
    } catch (...) {
      std::vector<std::byte>().swap(out);
      start_result();  // (a header fits in the memory just freed) the client reports malformed results
    }
  }
  seal_message(out);
}

// The serving loop: runs tasks from `client` until it says stop, then says
// goodbye. Returns normally after a stop; throws ProcessError on a protocol
// failure (the caller aborts the job: the client cannot be told otherwise).
inline void serve(MPI_Comm comm, int client) {
  int rank = 0;
  check(MPI_Comm_rank(comm, &rank), "MPI_Comm_rank");
  const std::string peer = "the client (" + rank_name(client) + ")";
  auto peer_name = [&](int) { return peer; };
  Inbox inbox(comm, client);
  std::vector<std::byte> out;
  std::uint64_t first_shared = 0;
  std::uint64_t last_shared = 0;
  Backoff backoff;
  bool greeted = false;
  for (;;) {
    int from = -1;
    const std::span<const std::byte> in = inbox.wait(from, peer_name, backoff);
    const MsgHeader h = header_of(in);
    const auto body = in.subspan(sizeof(MsgHeader));
    switch (static_cast<Kind>(h.kind)) {
      case Kind::hello: {
        Hello hello;
        if (body.size() != sizeof hello) throw ProcessError("mproc::mpi: malformed greeting from " + peer);
        std::memcpy(&hello, body.data(), sizeof hello);
        Image& image = Image::instance();
        std::string error;
        if (hello.image != image.main_id())
          error = "runs another program image than the client (" +
                  std::string(image.main_has_build_id() ? "build-id hash " : "layout hash ") +
                  Image::hex(image.main_id()) + " here, " + Image::hex(hello.image) +
                  " on the client): every rank must run the same build of the program";
        auto reply = new_message(error.empty() ? Kind::hello_ok : Kind::hello_error, 0);
        const auto* p = reinterpret_cast<const std::byte*>(error.data());
        reply.insert(reply.end(), p, p + error.size());
        seal_message(reply);
        send_message(comm, client, reply);
        greeted = true;
        break;
      }
      case Kind::task:
        if (!greeted) throw ProcessError("mproc::mpi: a task from " + peer + " before its greeting");
        run_task_message(in, out, rank);
        send_message(comm, client, out);
        if (out.capacity() > (std::size_t{64} << 20)) std::vector<std::byte>().swap(out);
        break;
      case Kind::broadcast: {
        BroadcastRef ref;
        if (body.size() < sizeof ref) throw ProcessError("mproc::mpi: malformed broadcast from " + peer);
        std::memcpy(&ref, body.data(), sizeof ref);
        Image& image = Image::instance();
        const std::uintptr_t at = image.resolve(ref.decoder, sizeof(DecoderInfo), PF_R, "a broadcast's decoder record");
        DecoderInfo info;
        std::memcpy(&info, reinterpret_cast<const void*>(at), sizeof info);
        if (at % alignof(DecoderInfo) != 0 || info.magic != kDecoderMagic || info.check != ref.check ||
            !image.contains(reinterpret_cast<std::uintptr_t>(info.decode), 1, PF_X))
          throw ProcessError("mproc::mpi: a broadcast's type does not match on this rank (a different build?)");
        try {
          Reader r(body.subspan(sizeof ref));
          SharedStore::instance().put(h.id, ref.fingerprint, info.decode(r));
        } catch (...) {
          // Reported to the tasks that use the handle.
          SharedStore::instance().put(h.id, ref.fingerprint, nullptr, describe_current_exception().message);
        }
        if (first_shared == 0) first_shared = h.id;
        last_shared = h.id;
        break;
      }
      case Kind::stop: {
        if (first_shared != 0) SharedStore::instance().erase_range(first_shared, last_shared);
        auto bye = new_message(Kind::bye, 0);
        seal_message(bye);
        send_message(comm, client, bye);
        inbox.cancel();
        return;
      }
      default:
        throw ProcessError("mproc::mpi: an unexpected message from " + peer + " (kind " + std::to_string(h.kind) + ")");
    }
    inbox.trim(std::size_t{256} << 20);
  }
}

}  // namespace mproc::detail::mpi
