// mproc — Python's multiprocessing model for C++20.
// SPDX-License-Identifier: MIT
//
// File-descriptor plumbing shared by every IPC object: an owning fd, errno
// errors, EINTR-safe reads and writes, and poll with a deadline.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>
#include <utility>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include "../errors.hpp"
#include "deadline.hpp"

namespace mproc::detail {

// Throws ProcessError("mproc: <what>: <strerror(err)>").
[[noreturn]] inline void throw_errno(const std::string& what, int err = errno) {
  throw ProcessError("mproc: " + what + ": " + std::strerror(err));
}

// Owns one file descriptor; closes it on destruction. Move-only.
class UniqueFd {
 public:
  UniqueFd() noexcept = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const noexcept { return fd_; }
  bool valid() const noexcept { return fd_ >= 0; }
  explicit operator bool() const noexcept { return valid(); }

  // Gives up ownership without closing.
  int release() noexcept { return std::exchange(fd_, -1); }

  // Closes the current fd (if any) and takes `fd`. close() is not retried on
  // EINTR: on Linux the descriptor is released either way.
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// Sets or clears FD_CLOEXEC / O_NONBLOCK. Throws ProcessError.
inline void set_cloexec(int fd, bool on = true) {
  const int flags = ::fcntl(fd, F_GETFD);
  if (flags < 0 || ::fcntl(fd, F_SETFD, on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC)) < 0)
    throw_errno("fcntl(F_SETFD)");
}
inline void set_nonblocking(int fd, bool on = true) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK)) < 0)
    throw_errno("fcntl(F_SETFL)");
}

// Waits until `fd` reports one of `events` (or POLLHUP/POLLERR) or until
// `deadline`. Returns the revents, or 0 on timeout. Retries on EINTR.
inline short poll_until(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    int timeout_ms = -1;
    if (deadline != Clock::time_point::max()) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(remaining(deadline)).count();
      timeout_ms = left > 1'000'000'000 ? 1'000'000'000 : static_cast<int>(left);
    }
    pollfd p{fd, events, 0};
    const int rc = ::poll(&p, 1, timeout_ms);
    if (rc > 0) return p.revents;
    if (rc == 0) {
      if (Clock::now() >= deadline) return 0;
      continue;  // woke early by rounding: wait out the rest
    }
    if (errno != EINTR) throw_errno("poll");
  }
}

// Writes all `n` bytes, retrying on EINTR and short writes (blocking fd).
// Returns false if the peer is gone (EPIPE/ECONNRESET); throws ProcessError
// on other errors. Callers must have SIGPIPE suppressed (MSG_NOSIGNAL or
// a blocked signal) when writing to pipes.
inline bool write_all(int fd, const void* data, std::size_t n) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w > 0) {
      p += w;
      n -= static_cast<std::size_t>(w);
    } else if (w < 0 && errno == EINTR) {
      continue;
    } else if (w < 0 && (errno == EPIPE || errno == ECONNRESET)) {
      return false;
    } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      poll_until(fd, POLLOUT, Clock::time_point::max());
    } else {
      throw_errno("write");
    }
  }
  return true;
}

// Reads at least one and up to `n` bytes (n > 0), waiting for them; retries
// on EINTR and, for a non-blocking fd, waits in poll(). Returns the number
// read, 0 only at end of file (or a reset connection). Throws ProcessError on
// errors.
inline std::size_t read_some(int fd, void* data, std::size_t n) {
  for (;;) {
    const ssize_t r = ::read(fd, data, n);
    if (r >= 0) return static_cast<std::size_t>(r);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      poll_until(fd, POLLIN, Clock::time_point::max());
    } else if (errno == ECONNRESET) {
      return 0;
    } else {
      throw_errno("read");
    }
  }
}

// Reads exactly `n` bytes, retrying on EINTR and short reads. Returns the
// number read: `n`, or fewer only at end of file. Throws ProcessError on errors.
inline std::size_t read_full(int fd, void* data, std::size_t n) {
  auto* p = static_cast<char*>(data);
  std::size_t got = 0;
  while (got < n) {
    const std::size_t r = read_some(fd, p + got, n - got);
    if (r == 0) break;
    got += r;
  }
  return got;
}

}  // namespace mproc::detail
