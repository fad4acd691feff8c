// mproc/detail/manager/server.hpp — the Manager's server process: starting
// it, its table of objects, and one thread per client connection.
//
// Layer detail/manager, over protocol.hpp, listener.hpp (sockets and the
// authkey handshake) and detail/os/spawn.hpp (fork, dying with the owner).
//
// start_server() forks the server from the Manager's creator. The server
// listens (reporting its address, or why it could not listen, over a pipe
// the creator waits on), then accepts clients until its owner process exits
// — it watches the owner through a pidfd (watch_owner) — or is killed by
// Manager::shutdown(). Each client gets a thread that authenticates it and
// serves its requests in order; a client that disconnects, sends garbage or
// fails the handshake ends only its own thread. Objects live until their
// creator releases them (op_release) or, when named, until the server ends.
// SPDX-License-Identifier: MIT
#pragma once

#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <mproc/detail/manager/protocol.hpp>
#include <mproc/detail/os/spawn.hpp>
#include <mproc/listener.hpp>

namespace mproc::detail::manager {

// Bounds the server's start-up (fork to listening) as seen by its creator.
inline constexpr std::chrono::seconds kServerStartTimeout{10};

// Removes a Unix socket's file and, for a private server, its directory.
inline void remove_socket_path(const std::string& path) noexcept {
  if (path.empty()) return;
  ::unlink(path.c_str());
  const auto slash = path.rfind('/');
  if (slash == std::string::npos || path.compare(slash, std::string::npos, "/manager.sock") != 0) return;
  const std::string dir = path.substr(0, slash);
  if (dir.find("/mproc-manager-") != std::string::npos) ::rmdir(dir.c_str());  // ours: private_socket_address()
}

class Server {
 public:
  // Serves on `listen_fd`, bound to the Unix socket `path` ("" for TCP).
  Server(UniqueFd listen_fd, std::string path, std::string authkey)
      : listen_fd_(std::move(listen_fd)), path_(std::move(path)), authkey_(std::move(authkey)) {}

  // Accepts and serves clients until `owner` (a pidfd; invalid: none)
  // becomes readable, then removes the socket file and exits. Never returns.
  [[noreturn]] void run(const UniqueFd& owner) {
    for (;;) {
      pollfd fds[2] = {{listen_fd_.get(), POLLIN, 0}, {owner.get(), POLLIN, 0}};
      if (poll_fds(fds, owner ? 2 : 1, -1) < 0) {
        if (errno == EINTR) continue;
        remove_socket_path(path_);
        ::_exit(1);  // cannot wait any more: end, and the clients see their connections close
      }
      if (owner && (fds[1].revents & POLLIN)) {
        remove_socket_path(path_);
        ::_exit(0);
      }
      if ((fds[0].revents & POLLIN) == 0) continue;
      try {
        UniqueFd client = accept_until(listen_fd_.get(), Clock::now());
        if (!client) continue;
        std::thread([this, fd = std::move(client)]() mutable { serve(std::move(fd)); }).detach();
      } catch (...) {  // EMFILE, no thread: that client sees its connection close
      }
    }
  }

  // Runs one request, writing the reply (status byte first) to `reply`.
  // Thread-safe. Throws only std::bad_alloc, and ClientGone (see Caller).
  void handle(std::span<const std::byte> request, std::vector<std::byte>& reply, const Caller& caller) {
    reply.assign(1, std::byte{static_cast<std::uint8_t>(Status::ok)});
    try {
      if (request.size() < sizeof(RequestHeader))
        throw ProcessError("mproc: Manager: a request of " + std::to_string(request.size()) +
                           " bytes, shorter than its header");
      RequestHeader h;
      std::memcpy(&h, request.data(), sizeof h);
      ArgReader args(request.subspan(sizeof h));
      if (h.object == 0) return server_op(h, args, reply);
      std::shared_ptr<ServerObject> object;
      {
        std::lock_guard lock(mutex_);
        const auto it = objects_.find(h.object);
        if (it == objects_.end())
          throw ProcessError("mproc: Manager: object " + std::to_string(h.object) +
                             " does not exist on the server (its creator released it)");
        if (it->second.kind->id != h.kind)
          throw ProcessError("mproc: Manager: object " + std::to_string(h.object) + " is a " +
                             readable_type_name(it->second.kind->name) + ", not the type the proxy expects");
        object = it->second.object;
      }
      object->call(h.op, args, reply, caller);
    } catch (const std::bad_alloc&) {
      throw;
    } catch (const ClientGone&) {
      throw;
    } catch (...) {
      fail(reply);
    }
  }

 private:
  struct Entry {
    std::shared_ptr<ServerObject> object;
    const Kind* kind;
    bool named;
  };

  void server_op(const RequestHeader& h, ArgReader& args, std::vector<std::byte>& reply) {
    if (h.op == op_release) {
      const auto id = args.next<std::uint64_t>();
      std::shared_ptr<ServerObject> dropped;  // destroyed outside the lock
      std::lock_guard lock(mutex_);
      const auto it = objects_.find(id);
      if (it != objects_.end() && !it->second.named) {
        dropped = std::move(it->second.object);
        objects_.erase(it);
      }
      return;
    }
    if (h.op != op_create) throw ProcessError("mproc: Manager: unknown server operation " + std::to_string(h.op));
    const auto type = args.next<std::string>();
    const auto name = args.next<std::string>();
    const Kind* kind = Kinds::instance().find(h.kind);
    if (kind == nullptr)
      throw ProcessError("mproc: Manager: the server cannot hold a " + readable_type_name(type) +
                         ": its program never uses that type (a server of another program?)");
    std::lock_guard lock(mutex_);
    if (!name.empty()) {
      if (const auto it = names_.find(name); it != names_.end()) {
        const Entry& e = objects_.at(it->second);
        if (e.kind != kind)
          throw ValueError("mproc: Manager: the name \"" + name + "\" is a " + readable_type_name(e.kind->name) +
                           " on the server, not a " + readable_type_name(kind->name));
        dumps_append(reply, it->second);
        return;
      }
    }
    std::shared_ptr<ServerObject> object = kind->create(args);
    const std::uint64_t id = next_id_++;
    objects_.emplace(id, Entry{std::move(object), kind, !name.empty()});
    if (!name.empty()) names_.emplace(name, id);
    dumps_append(reply, id);
  }

  // Replaces `reply` with the error in flight.
  static void fail(std::vector<std::byte>& reply) {
    Status status = Status::process_error;
    std::string message;
    try {
      throw;
    } catch (const Empty& e) {
      status = Status::empty;
      message = e.what();
    } catch (const Full& e) {
      status = Status::full;
      message = e.what();
    } catch (const ValueError& e) {
      status = Status::value_error;
      message = e.what();
    } catch (const std::out_of_range& e) {
      status = Status::out_of_range;
      message = e.what();
    } catch (const std::exception& e) {
      message = e.what();
    } catch (...) {
      message = "mproc: Manager: the server failed with an exception of unknown type";
    }
    reply.assign(1, std::byte{static_cast<std::uint8_t>(status)});
    const auto* p = reinterpret_cast<const std::byte*>(message.data());
    reply.insert(reply.end(), p, p + message.size());
  }

  void serve(UniqueFd fd) noexcept {
    try {
      const Caller caller(fd.get());
      Connection c = authenticated_connection(std::move(fd), authkey_, true, kHandshakeTimeout);
      std::vector<std::byte> request;
      std::vector<std::byte> reply;
      Spinner spinner;
      for (;;) {
        c.recv_bytes_into(request);
        handle(request, reply, caller);
        c.send_bytes(reply);
        spinner.wait(c);
      }
    } catch (...) {  // EOF, a failed handshake, a broken connection: this client is done
    }
  }

  UniqueFd listen_fd_;
  std::string path_;
  std::string authkey_;
  std::mutex mutex_;
  std::unordered_map<std::uint64_t, Entry> objects_;
  std::map<std::string, std::uint64_t, std::less<>> names_;
  std::uint64_t next_id_ = 1;
};

// Closes every descriptor above stderr but `keep`: the server outlives
// none of its owner's pipes and sockets (a reader waiting for EOF on a pipe
// whose write end the owner closed would otherwise wait for the server).
inline void close_descriptors_except(int keep) noexcept {
#if defined(SYS_close_range)
  if ((keep <= 3 || ::syscall(SYS_close_range, 3u, static_cast<unsigned>(keep - 1), 0u) == 0) &&
      ::syscall(SYS_close_range, static_cast<unsigned>(keep + 1), ~0u, 0u) == 0)
    return;
#endif
  const long max = ::sysconf(_SC_OPEN_MAX);
  for (int fd = 3; fd < (max > 0 && max < 65536 ? static_cast<int>(max) : 65536); ++fd)
    if (fd != keep) ::close(fd);
}

struct StartedServer {
  Child child;
  std::string address;   // as clients connect to it
  std::string unix_path; // the socket file to remove at shutdown ("" for TCP)
};

// A fresh private address: a socket in a new directory only this user can
// enter ($TMPDIR or /tmp). Throws ProcessError.
inline std::string private_socket_address() {
  const char* tmp = std::getenv("TMPDIR");
  std::string dir = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/mproc-manager-XXXXXX";
  if (::mkdtemp(dir.data()) == nullptr) throw_errno("Manager: mkdtemp(\"" + dir + "\")");
  return "unix:" + dir + "/manager.sock";
}

// Forks a server listening on `address` ("": a private Unix socket) with
// `authkey`, and waits until it listens. Blocks (at most
// kServerStartTimeout). Throws ValueError for a malformed address,
// ProcessError if it cannot listen there or the server did not start.
inline StartedServer start_server(std::string_view address, const std::string& authkey) {
  const std::string where = address.empty() ? private_socket_address() : std::string(address);
  const SocketAddress parsed = parse_socket_address(where);  // throws ValueError before anything runs
  auto report =
      PrivateFds::instance().create<2>("pipe (Manager start)", [](int* fds) { return ::pipe2(fds, O_CLOEXEC); });
  const pid_t owner = ::getpid();
  const pid_t pid = fork_child("Manager", {report[1].get()});
  if (pid == 0) {
    reset_child_signals();
    ::signal(SIGINT, SIG_IGN);  // Ctrl-C is for the owner, which then shuts us down (as Python's)
    close_descriptors_except(report[1].get());
    UniqueFd watch = watch_owner(owner, true);
    const int out = report[1].get();
    const auto say = [out](char status, std::string_view text) noexcept {
      std::string message(1, status);
      message.append(text);
      [[maybe_unused]] const auto n = ::write(out, message.data(), message.size());
    };
    std::string path;
    try {
      UniqueFd fd = listen_socket(parsed, 128);
      if (parsed.unix_domain) path = parsed.path;
      const std::string shown = parsed.unix_domain ? parsed.text() : socket_name(fd.get());
      auto* server = new Server(std::move(fd), path, authkey);  // lives until _exit
      say('+', shown);
      report[1].reset();
      server->run(watch);
    } catch (const std::exception& e) {
      say('-', e.what());
    } catch (...) {
      say('-', "mproc: Manager: the server failed to start");
    }
    remove_socket_path(path);  // set once this process bound it
    ::_exit(1);
  }
  Child child(pid);
  report[1].reset();
  std::string message;
  const auto deadline = deadline_after(kServerStartTimeout);
  char buf[512];
  for (;;) {
    if (poll_until(report[0].get(), POLLIN, deadline) == 0) break;
    const ssize_t n = ::read(report[0].get(), buf, sizeof buf);
    if (n > 0) {
      message.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;  // EOF: the server listens (or died)
  }
  if (message.size() > 1 && message[0] == '+')
    return {std::move(child), message.substr(1), parsed.unix_domain ? parsed.path : std::string()};
  child.send_signal(SIGKILL);
  child.wait_exited(Clock::time_point::max());
  child.try_reap();
  if (address.empty()) remove_socket_path(parsed.path);
  if (message.size() > 1 && message[0] == '-') throw ProcessError(message.substr(1));
  throw ProcessError("mproc: Manager: the server process did not start (" +
                     (message.empty() && child.exitcode() ? describe_exitcode(*child.exitcode())
                                                          : std::string("no answer within 10 s")) +
                     ")");
}

}  // namespace mproc::detail::manager
