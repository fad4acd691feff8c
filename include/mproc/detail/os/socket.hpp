// Stream sockets for connection::Listener / Client (listener.hpp): address
// parsing, listening, accepting and connecting with deadlines, and exact
// reads/writes with deadlines. Layer detail/os.
// SPDX-License-Identifier: MIT
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>
#include <string_view>

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/os/error.hpp>
#include <mproc/detail/os/fd.hpp>
#include <mproc/errors.hpp>

namespace mproc::detail {

// A listener's or client's address: a Unix-domain socket path ("unix:PATH",
// or any text containing '/'), or TCP "HOST:PORT" ("[v6]:PORT" for an IPv6
// literal; port 0 when listening: any free port).
struct SocketAddress {
  bool unix_domain = false;
  std::string path;  // unix_domain
  std::string host;  // TCP
  std::string port;

  // The address as a user writes it: "unix:PATH", "HOST:PORT" or "[v6]:PORT".
  std::string text() const {
    if (unix_domain) return "unix:" + path;
    return host.find(':') != std::string::npos ? "[" + host + "]:" + port : host + ":" + port;
  }
};

// Throws ValueError naming the address and the fault.
inline SocketAddress parse_socket_address(std::string_view text) {
  const auto bad = [&](const std::string& why) {
    return ValueError("mproc: connection address \"" + std::string(text) + "\": " + why);
  };
  SocketAddress a;
  if (text.rfind("unix:", 0) == 0 || text.find('/') != std::string_view::npos) {
    a.unix_domain = true;
    a.path = std::string(text.rfind("unix:", 0) == 0 ? text.substr(5) : text);
    if (a.path.empty()) throw bad("empty socket path");
    if (a.path.size() >= sizeof(sockaddr_un{}.sun_path))
      throw bad("socket path longer than " + std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) + " bytes");
    if (a.path.find('\0') != std::string::npos) throw bad("socket path contains a NUL byte");
    return a;
  }
  const std::size_t colon = text.rfind(':');
  if (colon == std::string_view::npos)
    throw bad("expected HOST:PORT (TCP) or a socket path (containing '/', or prefixed \"unix:\")");
  std::string_view host = text.substr(0, colon);
  const std::string_view port = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) throw bad("empty host");
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string_view::npos ||
      std::stoul(std::string(port)) > 65535)
    throw bad("port must be a number from 0 to 65535");
  a.host = std::string(host);
  a.port = std::string(port);
  return a;
}

// The resolved TCP addresses of `a` (getaddrinfo). Throws ProcessError.
struct AddrInfo {
  addrinfo* list = nullptr;
  AddrInfo(const SocketAddress& a, bool passive) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
    const int rc = ::getaddrinfo(a.host.c_str(), a.port.c_str(), &hints, &list);
    if (rc != 0)
      throw ProcessError("mproc: connection address \"" + a.host + ":" + a.port + "\": " + ::gai_strerror(rc));
  }
  ~AddrInfo() {
    if (list != nullptr) ::freeaddrinfo(list);
  }
  AddrInfo(const AddrInfo&) = delete;
  AddrInfo& operator=(const AddrInfo&) = delete;
};

inline sockaddr_un unix_sockaddr(const std::string& path) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  return sa;
}

// "HOST:PORT" of a bound or connected TCP socket ("[v6]:PORT" for IPv6).
inline std::string socket_name(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) throw_errno("getsockname");
  char host[NI_MAXHOST];
  char port[NI_MAXSERV];
  const int rc = ::getnameinfo(reinterpret_cast<sockaddr*>(&ss), len, host, sizeof host, port, sizeof port,
                               NI_NUMERICHOST | NI_NUMERICSERV);
  if (rc != 0) throw ProcessError(std::string("mproc: getnameinfo: ") + ::gai_strerror(rc));
  SocketAddress a;
  a.host = host;
  a.port = port;
  return a.text();
}

// A listening socket for `a` (private: no child of fork() keeps it). Throws
// ProcessError (address in use, permission, ...).
inline UniqueFd listen_socket(const SocketAddress& a, int backlog) {
  const std::string shown = a.text();
  if (a.unix_domain) {
    auto [fd] = PrivateFds::instance().create<1>(
        "Listener: socket()", [](int* fds) { return fds[0] = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0); });
    const sockaddr_un sa = unix_sockaddr(a.path);
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0)
      throw_errno("Listener(\"" + shown + "\"): bind()");
    if (::listen(fd.get(), backlog) != 0) {
      const int err = errno;
      ::unlink(a.path.c_str());
      throw_errno("Listener(\"" + shown + "\"): listen()", err);
    }
    return std::move(fd);
  }
  AddrInfo info(a, true);
  int last_errno = EADDRNOTAVAIL;
  for (addrinfo* ai = info.list; ai != nullptr; ai = ai->ai_next) {
    auto [fd] = PrivateFds::instance().create<1>("Listener: socket()", [ai](int* fds) {
      return fds[0] = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    });
    const int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd.get(), backlog) == 0) return std::move(fd);
    last_errno = errno;
  }
  throw_errno("Listener(\"" + shown + "\"): bind()", last_errno);
}

// Accepts one connection, waiting until `deadline`. Returns an invalid fd
// on timeout. Throws ProcessError.
inline UniqueFd accept_until(int listen_fd, Clock::time_point deadline) {
  for (;;) {
    if (poll_until(listen_fd, POLLIN, deadline) == 0) return UniqueFd();
    const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0) return UniqueFd(fd);
    if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED) continue;
    throw_errno("Listener.accept(): accept4()");
  }
}

// Connects to `a`, giving up at `deadline` (TimeoutError). The socket is
// returned non-blocking. Throws ProcessError (refused, no such path, ...).
inline UniqueFd connect_until(const SocketAddress& a, Clock::time_point deadline) {
  const std::string shown = a.text();
  const auto attempt = [&](int family, int protocol, const sockaddr* sa, socklen_t len) {
    const int raw = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, protocol);
    if (raw < 0) throw_errno("Client(\"" + shown + "\"): socket()");
    UniqueFd fd(raw);
    for (;;) {
      if (::connect(fd.get(), sa, len) == 0) return fd;
      if (errno == EINTR) continue;
      if (errno == EAGAIN && family == AF_UNIX) {  // the listener's backlog is full: retry until the deadline
        if (Clock::now() >= deadline) throw TimeoutError("mproc: Client(\"" + shown + "\"): connect timed out");
        ::usleep(1000);
        continue;
      }
      if (errno != EINPROGRESS) throw_errno("Client(\"" + shown + "\"): connect()");
      if (poll_until(fd.get(), POLLOUT, deadline) == 0)
        throw TimeoutError("mproc: Client(\"" + shown + "\"): connect timed out");
      int err = 0;
      socklen_t err_len = sizeof err;
      ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &err_len);
      if (err != 0) throw_errno("Client(\"" + shown + "\"): connect()", err);
      return fd;
    }
  };
  if (a.unix_domain) {
    const sockaddr_un sa = unix_sockaddr(a.path);
    return attempt(AF_UNIX, 0, reinterpret_cast<const sockaddr*>(&sa), sizeof sa);
  }
  AddrInfo info(a, false);
  for (addrinfo* ai = info.list;; ai = ai->ai_next) {
    try {
      UniqueFd fd = attempt(ai->ai_family, ai->ai_protocol, ai->ai_addr, ai->ai_addrlen);
      const int one = 1;
      ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      return fd;
    } catch (const TimeoutError&) {
      throw;
    } catch (const ProcessError&) {
      if (ai->ai_next == nullptr) throw;  // the last address's error
    }
  }
}

// Reads exactly `n` bytes from a non-blocking socket by `deadline`.
// Returns the number read: n, or fewer at end of file or at the deadline.
inline std::size_t read_exact_until(int fd, void* data, std::size_t n, Clock::time_point deadline) {
  auto* p = static_cast<char*>(data);
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = ::recv(fd, p + got, n - got, 0);
    if (r > 0) {
      got += static_cast<std::size_t>(r);
    } else if (r == 0 || (r < 0 && errno == ECONNRESET)) {
      break;
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (poll_until(fd, POLLIN, deadline) == 0) break;
    } else {
      throw_errno("recv");
    }
  }
  return got;
}

// Writes all `n` bytes to a non-blocking socket by `deadline` (no SIGPIPE).
// Returns false if the peer is gone or the deadline passed.
inline bool write_all_until(int fd, const void* data, std::size_t n, Clock::time_point deadline) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w > 0) {
      p += w;
      n -= static_cast<std::size_t>(w);
    } else if (w < 0 && errno == EINTR) {
      continue;
    } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (poll_until(fd, POLLOUT, deadline) == 0) return false;
    } else if (w < 0 && (errno == EPIPE || errno == ECONNRESET)) {
      return false;
    } else {
      throw_errno("send");
    }
  }
  return true;
}

}  // namespace mproc::detail
