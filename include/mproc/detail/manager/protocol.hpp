// mproc/detail/manager/protocol.hpp — the Manager's wire protocol and the
// registry of the object types a server can hold.
//
// Layer detail/manager, over serialize.hpp and errors.hpp; used by the
// server (server.hpp), the client side (client.hpp) and the objects
// (objects.hpp). Messages travel as Connection byte messages over an
// authenticated socket (listener.hpp).
//
//   request  = RequestHeader, then the arguments: one serialize.hpp frame
//              each, back to back (decoded with their types checked)
//   reply    = one status byte; status ok: the result's frame (nothing for
//              void); any other status: the error's message (UTF-8 text)
//
// Object 0 is the server itself: op_create makes an object of the kind the
// header names (arguments: the name frame, "" for none, then the kind's
// constructor arguments; reply: the id as a std::uint64_t frame — an
// existing object's for a name already taken by the same kind), op_release
// drops the creator's reference to an object (argument: its id).
//
// Kinds: each object type (dict<K,V>, Queue<T>, ...) is registered under a
// 64-bit hash of its C++ type name, at program start, in every process that
// uses it (kind_registration below). A server only creates and runs kinds
// its own program registered; an unknown kind is refused by name. Nothing in
// a request is trusted: ids, kinds and ops are looked up, never used as
// addresses, and arguments decode through serialize.hpp's checks.
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <poll.h>

#include <mproc/connection.hpp>
#include <mproc/detail/util/lean_std.hpp>
#include <mproc/errors.hpp>
#include <mproc/serialize.hpp>

namespace mproc::detail::manager {

struct RequestHeader {
  std::uint64_t kind = 0;    // the object's kind (op_create: the kind to create)
  std::uint64_t object = 0;  // the object's id; 0: the server
  std::uint32_t op = 0;      // the kind's operation, or a ServerOp for object 0
  std::uint32_t reserved = 0;
};
static_assert(sizeof(RequestHeader) == 24);

enum ServerOp : std::uint32_t { op_create = 1, op_release = 2 };

// A reply's status byte: which exception the client raises.
enum class Status : std::uint8_t {
  ok = 0,
  out_of_range = 1,  // std::out_of_range (Python: KeyError, IndexError)
  empty = 2,         // mproc::Empty
  full = 3,          // mproc::Full
  value_error = 4,   // mproc::ValueError
  process_error = 5  // mproc::ProcessError (anything else the server raised)
};

// Appends the frames of `args` to `out`, each on its own.
template <class... A>
void append_args(std::vector<std::byte>& out, const A&... args) {
  (dumps_append(out, args), ...);
}

// Both ends of a connection poll it for up to kSpin before they block in a
// read: a reply (or a client's next request) that comes within it arrives
// without waking a sleeping thread — on the 2-core test machine that cuts a
// round trip from ~34 to ~10 us. Spinning only pays when the peer has a core
// of its own: on a busy machine the spinner takes the core the peer needs.
// So the spin adapts: after a spin that waited in vain, the next
// kSpinSkips waits block at once, then one spin tries again; idle spinning
// costs at most kSpin in (kSpinSkips + 1) waits on each side.
inline constexpr std::chrono::microseconds kSpin{40};
inline constexpr int kSpinSkips = 16;

// One end's spin state, per connection. Not thread-safe (one per thread).
class Spinner {
 public:
  // Returns when `c` has something to read or the spin gave up (the
  // caller then blocks in its read). Never throws.
  void wait(const Connection& c) noexcept {
    if (skip_ > 0) {
      --skip_;
      return;
    }
    const auto until = std::chrono::steady_clock::now() + kSpin;
    try {
      while (!c.poll()) {
        if (std::chrono::steady_clock::now() >= until) {
          skip_ = kSpinSkips;
          return;
        }
      }
    } catch (...) {  // a closed connection: the read reports it
    }
  }

 private:
  int skip_ = 0;
};

// Reads a request's argument frames in order. Throws ProcessError for a
// missing, malformed or mistyped frame.
class ArgReader {
 public:
  explicit ArgReader(std::span<const std::byte> bytes) noexcept : rest_(bytes) {}

  template <class T>
  T next() {
    if (rest_.size() < frame_header_size)
      throw ProcessError("mproc: Manager: a request has fewer arguments than its operation takes");
    const std::size_t n = frame_size(rest_.first(frame_header_size));
    if (n > rest_.size()) throw ProcessError("mproc: Manager: a request's argument is truncated");
    T value = loads<T>(rest_.first(n));
    rest_ = rest_.subspan(n);
    return value;
  }

 private:
  std::span<const std::byte> rest_;
};

// Thrown by an operation that waited for a client that has disconnected
// (or died): the server thread ends without consuming anything for it.
struct ClientGone {};

// The client a server thread serves, as the operations that wait see it.
class Caller {
 public:
  explicit Caller(int fd = -1) noexcept : fd_(fd) {}
  // True once the client closed its connection or died. Non-blocking.
  bool gone() const noexcept {
    if (fd_ < 0) return false;
    pollfd p{fd_, POLLRDHUP, 0};
    return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
  }

 private:
  int fd_;
};

// An object held by a server. Each kind serializes its own operations.
class ServerObject {
 public:
  virtual ~ServerObject() = default;
  // Runs operation `op` with its arguments `args` for `caller`, appending
  // the result's frame (if any) to `out`. May block (a Queue's get, a
  // Lock's acquire). Thread-safe. Throws std::out_of_range, Empty, Full,
  // ValueError or ProcessError (unknown op, malformed arguments), which the
  // client raises; ClientGone when the caller left while it waited.
  virtual void call(std::uint32_t op, ArgReader args, std::vector<std::byte>& out, const Caller& caller) = 0;
};

// One registered kind: its id, its name (for messages) and its factory,
// which reads the constructor's arguments.
struct Kind {
  std::uint64_t id;
  std::string_view name;
  std::unique_ptr<ServerObject> (*create)(ArgReader& args);
  const Kind* next;
};

// The registry: a list that only grows, read without a lock (a server
// forked while another thread registers cannot find it locked); entries are
// static and never freed.
class Kinds {
 public:
  static Kinds& instance() noexcept {
    static Kinds kinds;
    return kinds;
  }
  // The kind with `id`, or null. Non-blocking, thread-safe.
  const Kind* find(std::uint64_t id) const noexcept {
    for (const Kind* k = head_.load(std::memory_order_acquire); k != nullptr; k = k->next)
      if (k->id == id) return k;
    return nullptr;
  }
  // Lists `kind` (a static object) once. Thread-safe.
  void add(Kind& kind) noexcept {
    const Kind* head = head_.load(std::memory_order_relaxed);
    do {
      for (const Kind* k = head; k != nullptr; k = k->next)
        if (k == &kind) return;
      kind.next = head;
    } while (!head_.compare_exchange_weak(head, &kind, std::memory_order_release, std::memory_order_relaxed));
  }

 private:
  std::atomic<const Kind*> head_{nullptr};
};

// The kind of server object type `Object` (constructed from ArgReader&),
// registered when the program starts in every program that names it
// (kind_registration<Object>::id is odr-used by its proxy).
template <class Object>
struct kind_registration {
  static std::unique_ptr<ServerObject> create(ArgReader& args) { return std::make_unique<Object>(args); }
  static inline Kind kind{fnv1a(type_name_v<Object>), type_name_v<Object>, &create, nullptr};
  static inline const std::uint64_t id = (Kinds::instance().add(kind), kind.id);
};

}  // namespace mproc::detail::manager
