// File-descriptor plumbing shared by every IPC object: an owning fd, errno
// errors, EINTR-safe reads and writes, poll with a deadline, and private
// descriptors, which no forked child inherits.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/os/error.hpp>
#include <mproc/errors.hpp>

namespace mproc::detail {

// ------------------------------------------------------------ private fds

class UniqueFd;

// The registry of private descriptors: sockets, eventfds and pipes that
// belong to one mproc object of this process (a pool's channels, a fork
// server's channel, a Process's status pipe). A copy of one in another
// process would keep a socket open after its owner closed it, so the peer
// would never see end of file — e.g. destroying one pool would wait forever
// for a template that a second pool's template still holds open. So every
// child of fork() — mproc's or the host program's — closes them first thing
// (a pthread_atfork child handler), except those the forking thread marked
// with ForkKeep. They are created and registered under the lock that the
// fork prepare handler takes, so no fork copies one before it is registered.
// Each registration has a generation: a UniqueFd closes its descriptor only
// while its own registration stands (not after a fork handler closed the
// number and something else reused it).
class PrivateFds {
 public:
  static PrivateFds& instance() {
    static PrivateFds* const fds = [] {
      auto* p = new PrivateFds;  // immortal: used by fork handlers and at exit
      ::pthread_atfork([] { instance().mutex_.lock(); }, [] { instance().mutex_.unlock(); },
                       [] { instance().after_fork_in_child(); });
      return p;
    }();
    return *fds;
  }

  // Calls `create(fds)`, which opens descriptors and stores them in the
  // int array `fds` (as pipe() does) and returns a negative value on
  // failure, with errno set; registers them and returns them owned. Throws
  // ProcessError naming `what`. Thread-safe.
  template <std::size_t N, class Create>
  std::array<UniqueFd, N> create(const char* what, Create&& create);

  // Runs `receive(adopt)` under the registry's lock: a non-blocking
  // receive that may bring descriptors (recvmsg with SCM_RIGHTS) and calls
  // adopt(fd) for each, which registers it and returns it owned. So no
  // fork() by another thread copies a received descriptor before it is
  // registered. `receive` must not block, nor destroy a private UniqueFd
  // (that takes the lock). adopt throws std::bad_alloc. Returns what
  // `receive` returns. Thread-safe.
  template <class Receive>
  decltype(auto) receiving(Receive&& receive);

  // Closes `fd` if its registration of generation `gen` stands; else leaves
  // the number alone (a fork handler closed it already). Thread-safe.
  void close(int fd, std::uint64_t gen) noexcept {
    std::lock_guard lock(mutex_);
    const auto i = static_cast<std::size_t>(fd);
    if (fd < 0 || i >= table_.size() || table_[i] != gen) return;
    table_[i] = 0;
    ::close(fd);
  }

  // Unregisters `fd` (generation `gen`) without closing it. Thread-safe.
  void forget(int fd, std::uint64_t gen) noexcept {
    std::lock_guard lock(mutex_);
    const auto i = static_cast<std::size_t>(fd);
    if (fd >= 0 && i < table_.size() && table_[i] == gen) table_[i] = 0;
  }

  // Whether `fd` is registered (for tests). Thread-safe.
  bool registered(int fd) {
    std::lock_guard lock(mutex_);
    const auto i = static_cast<std::size_t>(fd);
    return fd >= 0 && i < table_.size() && table_[i] != 0;
  }

  // Marks up to two private descriptors to survive the next fork() made by
  // this thread while it lives (the child's ends of its own channels).
  class Keep {
   public:
    Keep(std::initializer_list<int> fds) noexcept {
      int* slot = kept();
      slot[0] = slot[1] = -1;
      int k = 0;
      for (int fd : fds)
        if (k < 2) slot[k++] = fd;
    }
    ~Keep() {
      int* slot = kept();
      slot[0] = slot[1] = -1;
    }
    Keep(const Keep&) = delete;
    Keep& operator=(const Keep&) = delete;
  };

 private:
  PrivateFds() = default;

  static int* kept() noexcept {
    thread_local int fds[2] = {-1, -1};
    return fds;
  }

  std::uint64_t register_locked(int fd) {
    const auto i = static_cast<std::size_t>(fd);
    if (i >= table_.size()) table_.resize(i + 1 + i / 2, 0);
    table_[i] = ++generation_;
    return table_[i];
  }

  // In the child of fork(): single-threaded, the mutex held by the prepare handler.
  void after_fork_in_child() noexcept {
    const int* keep = kept();
    for (std::size_t i = 0; i < table_.size(); ++i) {
      const int fd = static_cast<int>(i);
      if (table_[i] != 0 && fd != keep[0] && fd != keep[1]) {
        ::close(fd);
        table_[i] = 0;
      }
    }
    mutex_.unlock();
  }

  std::mutex mutex_;
  std::vector<std::uint64_t> table_;  // fd -> generation of its registration; 0: not private
  std::uint64_t generation_ = 0;
};

// Owns one file descriptor; closes it on destruction. Move-only. A private
// descriptor (see PrivateFds) is closed through the registry.
class UniqueFd {
 public:
  UniqueFd() noexcept = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  // Takes `fd`, registered in PrivateFds with generation `gen`.
  UniqueFd(int fd, std::uint64_t gen) noexcept : fd_(fd), gen_(gen) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)), gen_(std::exchange(other.gen_, 0)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
      gen_ = std::exchange(other.gen_, 0);
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const noexcept { return fd_; }
  bool valid() const noexcept { return fd_ >= 0; }
  explicit operator bool() const noexcept { return valid(); }
  // Whether the descriptor is private (registered in PrivateFds).
  bool is_private() const noexcept { return gen_ != 0; }

  // Gives up ownership without closing; a private descriptor stops being
  // private (the caller owns a plain descriptor).
  int release() noexcept {
    if (gen_ != 0) PrivateFds::instance().forget(fd_, gen_);
    gen_ = 0;
    return std::exchange(fd_, -1);
  }

  // Closes the current fd (if any) and takes `fd` (not private). close() is
  // not retried on EINTR: on Linux the descriptor is released either way.
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0) {
      if (gen_ != 0) {
        PrivateFds::instance().close(fd_, gen_);
      } else {
        ::close(fd_);
      }
    }
    fd_ = fd;
    gen_ = 0;
  }

 private:
  int fd_ = -1;
  std::uint64_t gen_ = 0;
};

template <std::size_t N, class Create>
std::array<UniqueFd, N> PrivateFds::create(const char* what, Create&& create) {
  int fds[N];
  std::uint64_t gens[N];
  {
    std::lock_guard lock(mutex_);
    if (create(fds) < 0) throw_errno(what);
    try {
      std::size_t top = 0;
      for (int fd : fds) top = std::max(top, static_cast<std::size_t>(fd));
      if (top >= table_.size()) table_.resize(top + 1 + top / 2, 0);
    } catch (...) {
      for (int fd : fds) ::close(fd);
      throw;
    }
    for (std::size_t i = 0; i < N; ++i) gens[i] = register_locked(fds[i]);  // no allocation now
  }
  std::array<UniqueFd, N> out;
  for (std::size_t i = 0; i < N; ++i) out[i] = UniqueFd(fds[i], gens[i]);
  return out;
}

template <class Receive>
decltype(auto) PrivateFds::receiving(Receive&& receive) {
  std::lock_guard lock(mutex_);
  return receive([this](int fd) { return UniqueFd(fd, register_locked(fd)); });
}

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
// poll()'s timeout argument for `deadline`: the milliseconds left, rounded
// up and capped at ~11 days (callers loop until the deadline), or -1 for
// Clock::time_point::max() (no deadline).
inline int poll_timeout_ms(Clock::time_point deadline) {
  if (deadline == Clock::time_point::max()) return -1;
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(remaining(deadline)).count();
  return left > 1'000'000'000 ? 1'000'000'000 : static_cast<int>(left);
}

inline short poll_until(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int rc = ::poll(&p, 1, poll_timeout_ms(deadline));
    if (rc > 0) return p.revents;
    if (rc == 0) {
      if (Clock::now() >= deadline) return 0;
      continue;  // woke early by rounding: wait out the rest
    }
    if (errno != EINTR) throw_errno("poll");
  }
}

// poll() that survives a host program's descriptor limit: poll() refuses
// (EINVAL) more descriptors than RLIMIT_NOFILE allows, even descriptors
// already open; then the set is polled in slices without blocking, ~1 ms
// apart, until `timeout_ms` (-1: no limit) passes. Returns as poll() does
// (EINTR included).
inline int poll_fds(pollfd* fds, std::size_t n, int timeout_ms) {
  const int rc = ::poll(fds, static_cast<nfds_t>(n), timeout_ms);
  if (rc >= 0 || errno != EINVAL || n <= 1) return rc;
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur >= n) return rc;
  const std::size_t slice = std::max<std::size_t>(1, static_cast<std::size_t>(lim.rlim_cur));
  const auto deadline =
      timeout_ms < 0 ? Clock::time_point::max() : Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    int ready = 0;
    for (std::size_t at = 0; at < n; at += slice) {
      const int r = ::poll(fds + at, static_cast<nfds_t>(std::min(slice, n - at)), 0);
      if (r < 0) return r;
      ready += r;
    }
    if (ready > 0 || Clock::now() >= deadline) return ready;
    ::usleep(1000);
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
