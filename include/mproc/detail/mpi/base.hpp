// mproc/detail/mpi/base.hpp — the MPI pool's message format and transport.
//
// Layer detail/mpi, its bottom: the one file that includes the core (MPI,
// serialization, pool.hpp's task traits and sinks); every other detail/mpi
// file builds on it. Used by the client (client.hpp) and the serving loop
// (server.hpp).
// SPDX-License-Identifier: MIT
//
// Internals of mproc::mpi shared by the client and the serving ranks: the one
// place that includes the rest of mproc's internals, MPI error checks, the
// message format and its transport (messages larger than one MPI message
// travel in parts), and the idle backoff of polling loops.
//
// Every message of a pool's protocol is [MsgHeader][body] on the pool's own
// duplicated communicator. Its first kHeadBytes bytes at most travel as one
// MPI message with tag kTagMsg, which the receiver has posted a receive for
// in advance (Inbox: no probe, no intermediate copy); the rest, if any,
// follows in kTagPart messages of at most max_message_bytes() each. MPI
// keeps the order of messages between one pair of ranks on one
// communicator, so a message's parts follow it and a rank's tasks arrive in
// the order sent.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <mpi.h>
#include <sched.h>
#include <sys/mman.h>

// The parts of mproc's core that mproc::mpi builds on (and nothing else of
// mproc/detail is included anywhere under detail/mpi/).
#include <mproc/async_result.hpp>
#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/pool/lazy_results.hpp>
#include <mproc/detail/pool/worker.hpp>
#include <mproc/detail/util/demangle.hpp>
#include <mproc/detail/util/lean_std.hpp>
#include <mproc/detail/util/type_name.hpp>
#include <mproc/errors.hpp>
#include <mproc/pool.hpp>
#include <mproc/serialize.hpp>

namespace mproc::detail::mpi {

// Throws ProcessError("mproc::mpi: <what> failed: <MPI's message>") unless rc
// is MPI_SUCCESS. The pool's communicator returns errors (MPI_ERRORS_RETURN)
// instead of aborting, so they surface here.
inline void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
  throw ProcessError(std::string("mproc::mpi: ") + what + " failed: " +
                     (len > 0 ? std::string(text, static_cast<std::size_t>(len)) : "error " + std::to_string(rc)));
}

inline constexpr int kTagMsg = 0x6d70;   // a message (its header and up to max_message_bytes())
inline constexpr int kTagPart = 0x6d71;  // the continuation of a message too large for one

inline constexpr std::uint32_t kMsgMagic = 0x69706d6du;  // "mmpi"
inline constexpr std::uint16_t kProtocolVersion = 1;

enum class Kind : std::uint16_t {
  hello = 1,        // client -> server: body = Hello
  hello_ok = 2,     // server -> client
  hello_error = 3,  // server -> client: body = the error message (text)
  task = 4,         // client -> server: id = task id, body = TaskRef + encoded arguments
  result = 5,       // server -> client: id = task id, body = the task's results (detail/pool/worker.hpp format)
  broadcast = 6,    // client -> server: id = handle id, body = CodeRef of the decoder + encoded value
  stop = 7,         // client -> server: serve no more
  bye = 8,          // server -> client: the last message of a serving rank
};

// 32 bytes, so a body starts 16-byte aligned in a receive buffer (operator
// new's alignment) and its arguments can be viewed in place.
struct MsgHeader {
  std::uint32_t magic = kMsgMagic;
  std::uint16_t version = kProtocolVersion;
  std::uint16_t kind = 0;
  std::uint64_t id = 0;
  std::uint64_t total = 0;  // bytes of the whole message, header included
  std::uint64_t reserved = 0;
};
static_assert(sizeof(MsgHeader) == 32);

// The largest message body a rank accepts (untrusted sizes are checked
// against it before anything is allocated): 64 GiB.
inline constexpr std::uint64_t kMaxMessage = std::uint64_t{1} << 36;

// Bytes per MPI message; larger messages travel in parts. MPI counts are
// ints, so at most INT_MAX; 1 GiB by default. Tests lower it to exercise
// the parts. Set it before any pool exists; not thread-safe.
inline std::size_t& max_message_bytes() noexcept {
  static std::size_t bytes = std::size_t{1} << 30;
  return bytes;
}

// The first part of every message is at most this large: the receive the
// receiver posts in advance has room for it.
inline constexpr std::size_t kHeadBytes = std::size_t{64} << 10;

// A message being built: header first, then the body appended.
inline std::vector<std::byte> new_message(Kind kind, std::uint64_t id, std::size_t body_hint = 0) {
  std::vector<std::byte> msg;
  msg.reserve(sizeof(MsgHeader) + body_hint);
  MsgHeader h;
  h.kind = static_cast<std::uint16_t>(kind);
  h.id = id;
  msg.resize(sizeof h);
  std::memcpy(msg.data(), &h, sizeof h);
  return msg;
}

// Sets the header's total size (call once the body is complete) and, if
// given, its id.
inline void seal_message(std::vector<std::byte>& msg) noexcept {
  const std::uint64_t total = msg.size();
  std::memcpy(msg.data() + offsetof(MsgHeader, total), &total, sizeof total);
}
inline void set_message_id(std::vector<std::byte>& msg, std::uint64_t id) noexcept {
  std::memcpy(msg.data() + offsetof(MsgHeader, id), &id, sizeof id);
}

// A receive buffer: grows without zero-filling (a received message
// overwrites it) and keeps its memory between messages, so a rank that
// receives large messages does not fault fresh pages in for each. Buffers
// of 2 MiB and more ask for transparent huge pages: a fresh 16 MiB message
// then costs 8 page faults instead of 4096. 16-byte aligned at least, so
// 16-byte aligned types can be viewed in place.
class Bytes {
 public:
  Bytes() = default;
  Bytes(const Bytes&) = delete;
  Bytes& operator=(const Bytes&) = delete;
  ~Bytes() { release(); }

  std::byte* data() noexcept { return data_; }
  const std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  std::size_t capacity() const noexcept { return capacity_; }
  // Sets the size; the first min(old size, n) bytes are kept, the others are
  // indeterminate. Throws std::bad_alloc.
  void resize(std::size_t n) {
    if (n > capacity_) {
      std::size_t cap = std::max(n, capacity_ + capacity_ / 2);
      std::byte* fresh = nullptr;
      bool huge = false;
      if (cap >= kHuge) {
        cap = (cap + kHuge - 1) / kHuge * kHuge;
        fresh = static_cast<std::byte*>(std::aligned_alloc(kHuge, cap));
        if (fresh == nullptr) throw std::bad_alloc();
        ::madvise(fresh, cap, MADV_HUGEPAGE);  // advice only: failure is harmless
        huge = true;
      } else {
        fresh = static_cast<std::byte*>(::operator new(cap, std::align_val_t{16}));
      }
      if (size_ != 0) std::memcpy(fresh, data_, size_);
      release();
      data_ = fresh;
      capacity_ = cap;
      huge_ = huge;
    }
    size_ = n;
  }
  // Frees the memory when more than `keep` bytes are held.
  void trim(std::size_t keep) noexcept {
    if (capacity_ > keep) {
      release();
      capacity_ = size_ = 0;
    }
  }
  operator std::span<const std::byte>() const noexcept { return {data_, size_}; }

 private:
  static constexpr std::size_t kHuge = std::size_t{2} << 20;

  void release() noexcept {
    if (data_ == nullptr) return;
    if (huge_) {
      std::free(data_);
    } else {
      ::operator delete(data_, std::align_val_t{16});
    }
    data_ = nullptr;
  }

  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
  bool huge_ = false;
};

// Starts sending `msg` (sealed) to `dest`: one MPI_Isend per part, appended
// to `requests`. `msg` must stay alive and unchanged until they complete.
inline void isend_message(MPI_Comm comm, int dest, std::span<const std::byte> msg, std::vector<MPI_Request>& requests) {
  const std::size_t part =
      std::clamp<std::size_t>(max_message_bytes(), 64, static_cast<std::size_t>(std::numeric_limits<int>::max()));
  std::size_t at = 0;
  int tag = kTagMsg;
  do {
    const std::size_t n = std::min(tag == kTagMsg ? kHeadBytes : part, msg.size() - at);
    MPI_Request r = MPI_REQUEST_NULL;
    check(MPI_Isend(msg.data() + at, static_cast<int>(n), MPI_BYTE, dest, tag, comm, &r), "MPI_Isend");
    requests.push_back(r);
    at += n;
    tag = kTagPart;
  } while (at < msg.size());
}

// Starts sending one message made of `pieces` (in order; their total at most
// max_message_bytes()) to `dest` without copying them: an MPI datatype lists
// their addresses. They must stay alive and unchanged until the request
// completes.
inline void isend_gathered(MPI_Comm comm, int dest, std::span<const std::span<const std::byte>> pieces,
                           std::vector<MPI_Request>& requests) {
  // The first kHeadBytes go as the message, the rest as one part.
  std::vector<int> lengths[2];
  std::vector<MPI_Aint> displacements[2];
  const std::byte* first[2] = {nullptr, nullptr};
  std::size_t at = 0;
  for (const auto& p : pieces) {
    std::size_t done = 0;
    while (done < p.size()) {
      const int which = at < kHeadBytes ? 0 : 1;
      const std::size_t n = which == 0 ? std::min(p.size() - done, kHeadBytes - at) : p.size() - done;
      MPI_Aint address = 0;
      check(MPI_Get_address(p.data() + done, &address), "MPI_Get_address");
      if (lengths[which].empty()) first[which] = p.data() + done;
      lengths[which].push_back(static_cast<int>(n));
      displacements[which].push_back(address);
      done += n;
      at += n;
    }
  }
  for (int which = 0; which < 2; ++which) {
    if (lengths[which].empty()) continue;
    const int tag = which == 0 ? kTagMsg : kTagPart;
    if (lengths[which].size() == 1) {
      // One block: a plain contiguous send, which MPI may copy once, process
      // to process (a derived datatype would be packed and unpacked).
      MPI_Request r = MPI_REQUEST_NULL;
      check(MPI_Isend(first[which], lengths[which][0], MPI_BYTE, dest, tag, comm, &r), "MPI_Isend");
      requests.push_back(r);
      continue;
    }
    MPI_Datatype type = MPI_DATATYPE_NULL;
    check(MPI_Type_create_hindexed(static_cast<int>(lengths[which].size()), lengths[which].data(),
                                   displacements[which].data(), MPI_BYTE, &type),
          "MPI_Type_create_hindexed");
    check(MPI_Type_commit(&type), "MPI_Type_commit");
    MPI_Request r = MPI_REQUEST_NULL;
    const int rc = MPI_Isend(MPI_BOTTOM, 1, type, dest, tag, comm, &r);
    MPI_Type_free(&type);  // the pending send keeps what it needs
    check(rc, "MPI_Isend");
    requests.push_back(r);
  }
}

// Sends `msg` (sealed) to `dest` and waits until its buffer is free.
inline void send_message(MPI_Comm comm, int dest, std::span<const std::byte> msg) {
  std::vector<MPI_Request> requests;
  isend_message(comm, dest, msg, requests);
  check(MPI_Waitall(static_cast<int>(requests.size()), requests.data(), MPI_STATUSES_IGNORE), "MPI_Waitall");
}

// Checks the header of a complete message: throws ProcessError naming
// `peer` unless it is an mproc::mpi message of this protocol version whose
// declared size is its size.
template <class Peer>
void check_header(std::span<const std::byte> msg, Peer&& peer_name) {
  const auto peer = [&] { return std::string(peer_name()); };
  if (msg.size() < sizeof(MsgHeader))
    throw ProcessError("mproc::mpi: malformed message from " + peer() + " (" + std::to_string(msg.size()) +
                       " bytes, shorter than a header)");
  MsgHeader h;
  std::memcpy(&h, msg.data(), sizeof h);
  if (h.magic != kMsgMagic)
    throw ProcessError("mproc::mpi: malformed message from " + peer() + " (bad magic: not an mproc::mpi message)");
  if (h.version != kProtocolVersion)
    throw ProcessError("mproc::mpi: " + peer() + " speaks protocol version " + std::to_string(h.version) +
                       ", this rank version " + std::to_string(kProtocolVersion) + " (different mproc builds)");
  if (h.total != msg.size())
    throw ProcessError("mproc::mpi: malformed message from " + peer() + " (declared size " + std::to_string(h.total) +
                       " for " + std::to_string(msg.size()) + " bytes)");
}

// Receives the rest of a message whose first part (with its header) was
// just received from `source` into `buf`. The header is untrusted: a bad
// magic, version or size throws ProcessError naming `peer`.
template <class Peer>
void complete_message(MPI_Comm comm, int source, Bytes& buf, Peer&& peer_name) {
  const auto peer = [&] { return std::string(peer_name()); };
  if (buf.size() < sizeof(MsgHeader))
    throw ProcessError("mproc::mpi: malformed message from " + peer() + " (" + std::to_string(buf.size()) +
                       " bytes, shorter than a header)");
  MsgHeader h;
  std::memcpy(&h, buf.data(), sizeof h);
  if (h.magic != kMsgMagic)
    throw ProcessError("mproc::mpi: malformed message from " + peer() + " (bad magic: not an mproc::mpi message)");
  if (h.version != kProtocolVersion)
    throw ProcessError("mproc::mpi: " + peer() + " speaks protocol version " + std::to_string(h.version) +
                       ", this rank version " + std::to_string(kProtocolVersion) + " (different mproc builds)");
  if (h.total < buf.size() || h.total > kMaxMessage)
    throw ProcessError("mproc::mpi: malformed message from " + peer() + " (declared size " + std::to_string(h.total) +
                       " for " + std::to_string(buf.size()) + " bytes received)");
  while (buf.size() < h.total) {
    MPI_Message m;
    MPI_Status st;
    check(MPI_Mprobe(source, kTagPart, comm, &m, &st), "MPI_Mprobe");
    int n = 0;
    check(MPI_Get_count(&st, MPI_BYTE, &n), "MPI_Get_count");
    const std::size_t at = buf.size();
    if (n <= 0 || static_cast<std::uint64_t>(n) > h.total - at) {
      // Take it off the wire before failing, so nothing stays queued.
      std::vector<std::byte> sink(static_cast<std::size_t>(std::max(n, 0)));  // NOLINT: rare
      MPI_Mrecv(sink.data(), n, MPI_BYTE, &m, MPI_STATUS_IGNORE);
      throw ProcessError("mproc::mpi: malformed message from " + peer() + " (a part of " + std::to_string(n) +
                         " bytes where " + std::to_string(h.total - at) + " remain)");
    }
    buf.resize(at + static_cast<std::size_t>(n));
    check(MPI_Mrecv(buf.data() + at, n, MPI_BYTE, &m, MPI_STATUS_IGNORE), "MPI_Mrecv");
  }
}

// The receiving end of a pool's messages from `source` (a rank, or
// MPI_ANY_SOURCE): a receive for the next message's first part is always
// posted, into one of two buffers, so a message lands in place as it
// arrives. take() hands out a view of the complete message, valid until the
// next take(). Not thread-safe (the client calls it under its lock).
class Inbox {
 public:
  Inbox(MPI_Comm comm, int source) : comm_(comm), source_(source) {
    for (Bytes& b : heads_) b.resize(kHeadBytes);
    post();
  }
  Inbox(const Inbox&) = delete;
  Inbox& operator=(const Inbox&) = delete;
  // Cancels the posted receive. Call before freeing the communicator.
  ~Inbox() { cancel(); }

  void cancel() noexcept {
    if (request_ == MPI_REQUEST_NULL) return;
    MPI_Cancel(&request_);
    MPI_Wait(&request_, MPI_STATUS_IGNORE);
    request_ = MPI_REQUEST_NULL;
  }

  // If the next message has arrived: receives its remaining parts, checks
  // its header (ProcessError naming the sender via `peer(rank)` when it is
  // malformed), stores its sender in `from` and returns it. Otherwise
  // returns an empty span. Non-blocking but for the parts of a message
  // that has begun to arrive.
  template <class Peer>
  std::span<const std::byte> take(int& from, Peer&& peer) {
    if (request_ == MPI_REQUEST_NULL) return {};
    int done = 0;
    MPI_Status st;
    check(MPI_Test(&request_, &done, &st), "MPI_Test");
    if (!done) return {};
    from = st.MPI_SOURCE;
    int n = 0;
    check(MPI_Get_count(&st, MPI_BYTE, &n), "MPI_Get_count");
    Bytes& head = heads_[current_];
    current_ ^= 1;
    post();  // the next message may arrive while this one is handled
    head.resize(static_cast<std::size_t>(std::max(n, 0)));
    std::span<const std::byte> msg = head;
    if (head.size() >= sizeof(MsgHeader)) {
      MsgHeader h;
      std::memcpy(&h, head.data(), sizeof h);
      if (h.magic == kMsgMagic && h.total > head.size()) {
        // A large message: its parts follow.
        big_.resize(head.size());
        std::memcpy(big_.data(), head.data(), head.size());
        complete_message(comm_, from, big_, [&] { return peer(from); });
        msg = big_;
      }
    }
    check_header(msg, [&] { return peer(from); });
    return msg;
  }

  // As take(), waiting until a message arrives (polling with `backoff`).
  template <class Peer, class Backoff>
  std::span<const std::byte> wait(int& from, Peer&& peer, Backoff& backoff) {
    for (;;) {
      auto msg = take(from, peer);
      if (!msg.empty()) {
        backoff.reset();
        return msg;
      }
      backoff.pause();
    }
  }

  // Frees the memory of a large message when more than `keep` bytes are held.
  void trim(std::size_t keep) noexcept { big_.trim(keep); }

 private:
  void post() {
    heads_[current_].resize(kHeadBytes);  // within its capacity: no reallocation
    check(
        MPI_Irecv(heads_[current_].data(), static_cast<int>(kHeadBytes), MPI_BYTE, source_, kTagMsg, comm_, &request_),
        "MPI_Irecv");
  }

  MPI_Comm comm_;
  int source_;
  Bytes heads_[2];
  int current_ = 0;
  MPI_Request request_ = MPI_REQUEST_NULL;
  Bytes big_;
};

// The header of a complete message (checked by complete_message).
inline MsgHeader header_of(std::span<const std::byte> msg) noexcept {
  MsgHeader h;
  std::memcpy(&h, msg.data(), sizeof h);
  return h;
}

// A pause in a spin loop (the CPU's spin-wait hint).
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// How a polling loop waits when there is nothing to do: it spins for the
// first 50 µs of idleness, then yields the CPU (other ranks may share it)
// until `spin` has passed, then sleeps, doubling from 20 µs up to 500 µs. A
// busy loop costs a core; sleeping adds up to 500 µs of latency after a long
// idle period, never during a burst of work (reset() after each unit of
// progress).
class Backoff {
 public:
  explicit Backoff(std::chrono::microseconds spin = std::chrono::microseconds(2000)) noexcept : spin_(spin) {}
  void reset() noexcept { idle_ = false; }
  void pause() {
    const auto now = Clock::now();
    if (!idle_) {
      idle_ = true;
      since_ = now;
      sleep_ = std::chrono::microseconds(20);
    }
    const auto idle = now - since_;
    if (idle < std::chrono::microseconds(50)) {
      cpu_relax();
      return;
    }
    if (idle < spin_) {
      ::sched_yield();
      return;
    }
    std::this_thread::sleep_for(sleep_);
    sleep_ = std::min(sleep_ * 2, std::chrono::microseconds(500));
  }

 private:
  std::chrono::microseconds spin_;
  bool idle_ = false;
  Clock::time_point since_{};
  std::chrono::microseconds sleep_{20};
};

// "rank 2" (of the pool's communicator).
inline std::string rank_name(int rank) { return "rank " + std::to_string(rank); }

}  // namespace mproc::detail::mpi
