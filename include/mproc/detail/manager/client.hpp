// mproc/detail/manager/client.hpp — the client side of the Manager's
// protocol: one connection per thread and server, requests and replies.
//
// Layer detail/manager, over protocol.hpp and listener.hpp; used by the
// proxies and Manager (managers.hpp). As in Python, each thread of each
// process keeps its own connection to a server, opened at its first call;
// a forked child never uses its parent's (it opens its own).
// SPDX-License-Identifier: MIT
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include <mproc/detail/manager/protocol.hpp>
#include <mproc/listener.hpp>

namespace mproc::detail::manager {

// Where a server is, and the key its clients prove they know.
struct Endpoint {
  std::string address;
  std::string authkey;
};

// The calling thread's connections to servers.
class ThreadConnections {
 public:
  struct Open {
    std::string address;
    std::string authkey;
    pid_t pid;
    Connection connection;
    Spinner spinner;
  };

  // This thread's connections. Throws ProcessError once they are destroyed
  // (a proxy destroyed after its thread's thread_local objects, at exit).
  static ThreadConnections& mine() {
    thread_local ThreadConnections connections;
    if (gone_) throw ProcessError("mproc: Manager: a call while this thread exits (its connections are closed)");
    return connections;
  }

  ThreadConnections() = default;
  ThreadConnections(const ThreadConnections&) = delete;
  ThreadConnections& operator=(const ThreadConnections&) = delete;
  ~ThreadConnections() { gone_ = true; }

  // The connection to `e`'s server, opened (and authenticated) if needed;
  // valid until the next get() or drop() of this thread. Blocks while
  // connecting. Throws AuthenticationError (wrong key), or ProcessError
  // naming the address when the server cannot be reached.
  Open& get(const Endpoint& e) {
    const pid_t self = ::getpid();
    for (auto it = open_.begin(); it != open_.end(); ++it) {
      if (it->address != e.address || it->authkey != e.authkey) continue;
      if (it->pid == self) return *it;
      it->connection.close();  // our parent's, inherited by fork: never shared
      open_.erase(it);
      break;
    }
    Connection c;
    try {
      c = connection::Client(e.address, e.authkey);
    } catch (const std::exception& error) {
      // A wrong key stays an AuthenticationError; a server that dies as we
      // connect closes the connection mid-handshake (EOFError): that is one
      // not running.
      if (dynamic_cast<const AuthenticationError*>(&error) != nullptr) throw;
      throw ProcessError("mproc: Manager: cannot reach the server at " + e.address + " (" + error.what() +
                         "): it is not running");
    }
    open_.push_back({e.address, e.authkey, self, std::move(c), Spinner()});
    return open_.back();
  }

  // Forgets the connection to `address` (after it failed).
  void drop(const std::string& address) noexcept {
    std::erase_if(open_, [&](const Open& o) { return o.address == address; });
  }

  std::vector<std::byte> request;  // reused by each call of this thread
  std::vector<std::byte> reply;

 private:
  std::vector<Open> open_;
  static inline thread_local bool gone_ = false;  // trivially destructible: readable until the thread ends
};

// Throws the exception a reply's status and message stand for.
[[noreturn]] inline void throw_reply_error(Status status, std::string message) {
  switch (status) {
    case Status::out_of_range:
      throw std::out_of_range(message);
    case Status::empty:
      throw Empty(message);
    case Status::full:
      throw Full(message);
    case Status::value_error:
      throw ValueError(message);
    default:
      throw ProcessError(message);
  }
}

// Sends one request to `e`'s server and returns its result, a R. Blocks
// until the reply (as long as the operation waits on the server). Throws
// what the server raised (see Status), ProcessError if the server is gone
// or unreachable, AuthenticationError on a wrong key.
template <class R, class... A>
R call(const Endpoint& e, std::uint64_t kind, std::uint64_t object, std::uint32_t op, const A&... args) {
  ThreadConnections& mine = ThreadConnections::mine();
  ThreadConnections::Open& open = mine.get(e);
  Connection& c = open.connection;
  std::vector<std::byte>& request = mine.request;
  request.resize(sizeof(RequestHeader));
  const RequestHeader h{kind, object, op, 0};
  std::memcpy(request.data(), &h, sizeof h);
  append_args(request, args...);
  std::vector<std::byte>& reply = mine.reply;
  try {
    c.send_bytes(request);
    open.spinner.wait(c);
    c.recv_bytes_into(reply);
  } catch (const std::exception& error) {
    mine.drop(e.address);
    throw ProcessError("mproc: Manager: lost the server at " + e.address + " (" + error.what() +
                       "): the server process is gone");
  }
  if (reply.empty()) throw ProcessError("mproc: Manager: an empty reply from the server at " + e.address);
  const auto status = static_cast<Status>(reply[0]);
  const std::span<const std::byte> rest = std::span<const std::byte>(reply).subspan(1);
  if (status != Status::ok)
    throw_reply_error(status, std::string(reinterpret_cast<const char*>(rest.data()), rest.size()));
  if constexpr (std::is_void_v<R>) {
    return;
  } else {
    return loads<R>(rest);
  }
}

}  // namespace mproc::detail::manager
