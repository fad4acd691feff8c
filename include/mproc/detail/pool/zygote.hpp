// Zygotes: the clean, single-threaded processes that a process
// pool's workers are forked from, so that a worker never inherits a lock some
// other thread of the pool's owner held at fork time.
//
// A pool owns one zygote. The zygote is forked either directly from the
// pool's creator (StartMethod::fork, when the creator is single-threaded) or
// by the process-wide fork server (StartMethod::forkserver), a zygote of
// zygotes started early by set_start_method(). The owner talks to its
// zygote over a Channel:
//   owner -> zygote  spawn{slot} + worker's socket end;  kill{pid, signal}
//   zygote -> owner  spawned{slot, pid};  spawn_failed{slot, errno};
//                      exited{pid, exitcode, peak RSS in KiB}   (exitcode: -N = signal N)
// When the owner closes the channel or exits, the zygote SIGKILLs and
// reaps its workers and exits. The zygote watches the owner *process*
// through a pidfd (PR_SET_PDEATHSIG would fire when the owner's forking
// thread exits, not the process); workers die with their zygote
// (PR_SET_PDEATHSIG: the zygote is single-threaded), so nothing outlives a
// SIGKILLed owner.
//
// The host program's signal setup is not ours: zygotes and the fork server
// restore the default SIGCHLD disposition (a host that ignores SIGCHLD, or
// sets SA_NOCLDWAIT, would make the kernel reap workers before we learn how
// they ended), and nothing outside them depends on SIGCHLD.
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_set>
#include <vector>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mproc/detail/os/spawn.hpp>
#include <mproc/detail/pool/channel.hpp>

namespace mproc {

namespace detail {

// The function a freshly forked worker runs: given its end of the worker
// channel, its slot in the pool and the pool's configuration bytes, returns
// the exit code. It must not throw (the zygote exits the worker with
// worker_exit_internal if it does).
using WorkerEntry = int (*)(UniqueFd channel, std::uint64_t slot, std::span<const std::byte> config);

enum TemplateMsg : std::uint16_t {
  tm_spawn = 1,      // owner -> zygote: fork a worker (fd: worker's channel end); id = slot
  tm_kill,           // owner -> zygote: payload {pid, signal}
  tm_spawned,        // zygote -> owner: id = slot, payload {pid}
  tm_spawn_failed,   // zygote -> owner: id = slot, payload {errno}
  tm_exited,         // zygote -> owner: payload WorkerExit
  tm_make_zygote,  // owner -> fork server: fork a zygote (fd: its channel end);
                     //   payload {owner pid}{entry}{config}
  tm_made_template,  // fork server -> owner: payload {pid} or {-errno}
};

struct PidCode {
  std::int32_t pid;
  std::int32_t code;
};

// How a worker ended: its exit code (Python's convention) and its peak
// resident set size (wait4's ru_maxrss, KiB; 0 if unknown).
struct WorkerExit {
  std::int32_t pid;
  std::int32_t code;
  std::int64_t peak_rss_kib;
};

template <class T>
std::span<const std::byte> as_bytes_of(const T& v) noexcept {
  return {reinterpret_cast<const std::byte*>(&v), sizeof v};
}

// Reads a trivially copyable T from an untrusted payload of exactly sizeof(T).
template <class T>
std::optional<T> read_pod(std::span<const std::byte> payload) noexcept {
  if (payload.size() != sizeof(T)) return std::nullopt;
  T v;
  std::memcpy(&v, payload.data(), sizeof v);
  return v;
}

// Number of threads in this process (1 when single-threaded), from procfs;
// 0 if unknown.
inline int thread_count() noexcept {
  char buf[1024];
  const int fd = ::open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  // Fields after the command name, which ends at the last ')'.
  const char* p = std::strrchr(buf, ')');
  if (p == nullptr) return 0;
  // Field 3 (state) follows ") "; num_threads is field 20.
  int field = 2;
  for (++p; *p != '\0'; ++p) {
    if (*p == ' ' && ++field == 20) return std::atoi(p + 1);
  }
  return 0;
}

// Restores the default SIGCHLD disposition (no handler, no SA_NOCLDWAIT),
// so that exited children stay waitable and raise SIGCHLD.
inline void default_sigchld() noexcept {
  struct sigaction dfl{};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(SIGCHLD, &dfl, nullptr);
}

// SIGCHLD as a pollable fd, for the single-threaded zygote and fork-server
// processes. Restores SIGCHLD's default disposition and blocks it in the
// calling process.
class ChildSignals {
 public:
  ChildSignals() {
    default_sigchld();
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    ::sigprocmask(SIG_BLOCK, &chld, nullptr);
    fd_ = std::move(PrivateFds::instance().create<1>("signalfd", [&chld](int* out) {
      out[0] = ::signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
      return out[0];
    })[0]);
  }
  int fd() const noexcept { return fd_.get(); }
  void close() noexcept { fd_.reset(); }

  // Drains the signalfd, then reaps every exited child, calling
  // on_exit(WorkerExit).
  template <class F>
  void reap(F&& on_exit) {
    signalfd_siginfo info;
    while (::read(fd_.get(), &info, sizeof info) > 0) {
    }
    for (;;) {
      int status = 0;
      rusage usage{};
      const pid_t pid = ::wait4(-1, &status, WNOHANG, &usage);
      if (pid <= 0) break;
      on_exit(WorkerExit{pid, exitcode_from_status(status), static_cast<std::int64_t>(usage.ru_maxrss)});
    }
  }

 private:
  UniqueFd fd_;
};

// Waits for every child of the calling process to exit.
inline void reap_all_children() noexcept {
  while (::waitpid(-1, nullptr, 0) > 0 || errno == EINTR) {
  }
}

// Runs in the zygote: forks workers on request and reports their
// exits until the owner closes the session or exits. `owner` is a pidfd of
// the owner process (invalid: rely on PR_SET_PDEATHSIG). Never returns;
// never throws (an internal failure kills the workers and exits).
[[noreturn]] inline void zygote_main(UniqueFd session_fd, UniqueFd owner, WorkerEntry entry,
                                     std::vector<std::byte> config, sigset_t worker_mask) noexcept {
  std::unordered_set<pid_t> workers;
  auto shutdown = [&](int code) noexcept {
    for (pid_t pid : workers) ::kill(pid, SIGKILL);
    reap_all_children();
    ::_exit(code);
  };
  try {
    // SIGCHLD arrives through a signalfd; workers get the owner's mask back.
    ChildSignals sigchld;
    Channel session(std::move(session_fd));
    const pid_t self = ::getpid();
    for (;;) {
      if (session.flush() == Channel::Io::closed) shutdown(0);
      pollfd fds[3] = {{session.fd(), static_cast<short>(POLLIN | (session.has_output() ? POLLOUT : 0)), 0},
                       {sigchld.fd(), POLLIN, 0},
                       {owner.get(), POLLIN, 0}};
      if (poll_fds(fds, owner ? 3 : 2, -1) < 0) {
        if (errno == EINTR) continue;
        shutdown(4);
      }
      if (owner && (fds[2].revents & POLLIN)) shutdown(0);  // the owner process exited
      if (fds[1].revents & POLLIN) {
        sigchld.reap([&](const WorkerExit& e) {
          workers.erase(e.pid);
          session.put(tm_exited, 0, as_bytes_of(e));
        });
      }
      if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      const auto io = session.fill();
      Frame f;
      try {
        while (session.next(f)) {
          if (f.header.type == tm_spawn && f.fd.valid()) {
            workers.reserve(workers.size() + 1);  // no allocation after a successful fork
            flush_stdio();
            pid_t pid;
            {
              PrivateFds::Keep keep{f.fd.get()};  // the only descriptor of ours a worker inherits
              pid = ::fork();
            }
            if (pid == 0) {
              die_with_parent(self);
              ::sigprocmask(SIG_SETMASK, &worker_mask, nullptr);
              int code = worker_exit_internal;
              try {
                code = entry(std::move(f.fd), f.header.id, config);
              } catch (...) {  // entries report their own failures; this is the backstop
              }
              flush_stdio();  // what tasks printed is not lost with the worker
              ::_exit(code);
            }
            if (pid < 0) {
              const std::int32_t err = errno;
              session.put(tm_spawn_failed, f.header.id, as_bytes_of(err));
            } else {
              workers.insert(pid);
              const std::int32_t p = pid;
              session.put(tm_spawned, f.header.id, as_bytes_of(p));
            }
          } else if (f.header.type == tm_kill) {
            const auto pc = read_pod<PidCode>(f.payload);
            // Only signal our own, still unreaped children.
            if (pc && workers.count(pc->pid) != 0) ::kill(pc->pid, pc->code);
          }
        }
      } catch (const ProcessError&) {
        shutdown(5);  // malformed request: the owner is broken
      }
      if (io == Channel::Io::closed || io == Channel::Io::error) shutdown(0);
    }
  } catch (...) {
    shutdown(worker_exit_internal);  // out of memory or descriptors in the zygote itself
  }
  ::_exit(worker_exit_internal);  // not reached: shutdown() exits
}

// Forks a zygote from the calling process. Returns it (reaped by
// its Child) and the owner's end of its channel. `worker_mask` is the signal
// mask its workers run with. Call only while single-threaded, or accept what
// fork() from a multithreaded process implies (see StartMethod::fork).
// Throws ProcessError (fork failed, out of descriptors).
inline std::pair<Child, UniqueFd> fork_zygote(WorkerEntry entry, std::vector<std::byte> config, sigset_t worker_mask) {
  auto [owner_end, zygote_end] = socket_pair();
  const pid_t parent = ::getpid();
  const pid_t pid = fork_child("Pool (zygote)", {zygote_end.get()});
  if (pid == 0) {
    UniqueFd owner = watch_owner(parent, true);
    zygote_main(std::move(zygote_end), std::move(owner), entry, std::move(config), worker_mask);
  }
  Child child(pid);
  zygote_end.reset();
  set_nonblocking(owner_end.get());
  return {std::move(child), std::move(owner_end)};
}

// The same, with the calling thread's signal mask for the workers.
inline std::pair<Child, UniqueFd> fork_zygote(WorkerEntry entry, std::vector<std::byte> config) {
  sigset_t mask;
  ::pthread_sigmask(SIG_SETMASK, nullptr, &mask);
  return fork_zygote(entry, std::move(config), mask);
}

// ---------------------------------------------------------------- fork server

// The process-wide fork server: a zygote of zygotes.
class ForkServer {
 public:
  static ForkServer& instance() {
    static ForkServer server;
    return server;
  }

  // Starts the server from the calling process if not running. Call early,
  // while single-threaded. Thread-safe. Throws ProcessError.
  void start() {
    std::lock_guard lock(mutex_);
    if (running_locked()) return;
    auto [owner_end, server_end] = socket_pair();
    sigset_t mask;
    ::pthread_sigmask(SIG_SETMASK, nullptr, &mask);
    const pid_t parent = ::getpid();
    const pid_t pid = fork_child("fork server", {server_end.get()});
    if (pid == 0) {
      UniqueFd owner = watch_owner(parent, true);
      serve(std::move(server_end), std::move(owner), mask);
    }
    server_ = Child(pid);
    owner_pid_ = parent;
    channel_ = Channel(std::move(owner_end));
  }

  // Whether this process has a running fork server. Thread-safe.
  bool running() {
    std::lock_guard lock(mutex_);
    return running_locked();
  }

  // Asks the server to fork a zygote; returns its pid and the owner's
  // channel end. Blocks for one round trip. Throws ProcessError.
  std::pair<pid_t, UniqueFd> make_template(WorkerEntry entry, std::span<const std::byte> config) {
    std::lock_guard lock(mutex_);
    if (!running_locked()) throw ProcessError("mproc: the fork server is not running");
    auto [owner_end, zygote_end] = socket_pair();
    const std::int32_t owner = ::getpid();
    std::vector<std::byte> payload(sizeof owner + sizeof entry + config.size());
    std::memcpy(payload.data(), &owner, sizeof owner);
    std::memcpy(payload.data() + sizeof owner, &entry, sizeof entry);
    if (!config.empty()) std::memcpy(payload.data() + sizeof owner + sizeof entry, config.data(), config.size());
    channel_.put(tm_make_zygote, 0, payload, std::move(zygote_end));
    Frame f;
    if (!channel_.flush_blocking() || !channel_.receive_blocking(f) || f.header.type != tm_made_template)
      throw ProcessError("mproc: the fork server died");
    const auto pid = read_pod<std::int32_t>(f.payload);
    if (!pid) throw ProcessError("mproc: malformed reply from the fork server");
    if (*pid < 0) throw_errno("fork (pool zygote, by the fork server)", -*pid);
    set_nonblocking(owner_end.get());
    return {*pid, std::move(owner_end)};
  }

  ForkServer(const ForkServer&) = delete;
  ForkServer& operator=(const ForkServer&) = delete;

 private:
  ForkServer() = default;
  ~ForkServer() {
    if (owner_pid_ == ::getpid() && channel_.valid()) {
      channel_.close();  // the server sees EOF and exits; server_ reaps it
      server_.wait_exited(Clock::now() + std::chrono::seconds(2));
    }
  }

  bool running_locked() const { return channel_.valid() && owner_pid_ == ::getpid(); }

  [[noreturn]] static void serve(UniqueFd fd, UniqueFd owner, sigset_t owner_mask) noexcept {
    try {
      ChildSignals sigchld;
      Channel channel(std::move(fd));
      const pid_t self = ::getpid();
      for (;;) {
        pollfd fds[3] = {{channel.fd(), POLLIN, 0}, {sigchld.fd(), POLLIN, 0}, {owner.get(), POLLIN, 0}};
        if (poll_fds(fds, owner ? 3 : 2, -1) < 0) {
          if (errno == EINTR) continue;
          ::_exit(4);
        }
        // Templates notice their owner's exit themselves.
        if (owner && (fds[2].revents & POLLIN)) ::_exit(0);
        if (fds[1].revents & POLLIN) sigchld.reap([](const WorkerExit&) {});  // zygotes that exited
        if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
        Frame f;
        bool got = false;
        try {
          got = channel.receive_blocking(f);
        } catch (const ProcessError&) {
          got = false;
        }
        if (!got) ::_exit(0);  // owner gone or broken: zygotes notice through their own channels
        std::int32_t pool_owner = 0;
        WorkerEntry entry = nullptr;
        if (f.header.type != tm_make_zygote || !f.fd.valid() || f.payload.size() < sizeof pool_owner + sizeof entry)
          ::_exit(5);
        std::memcpy(&pool_owner, f.payload.data(), sizeof pool_owner);
        std::memcpy(&entry, f.payload.data() + sizeof pool_owner, sizeof entry);
        std::vector<std::byte> config(f.payload.begin() + sizeof pool_owner + sizeof entry, f.payload.end());
        flush_stdio();
        pid_t pid;
        {
          PrivateFds::Keep keep{f.fd.get()};
          pid = ::fork();
        }
        if (pid == 0) {
          die_with_parent(self);
          UniqueFd owner_watch = watch_owner(pool_owner, false);
          zygote_main(std::move(f.fd), std::move(owner_watch), entry, std::move(config), owner_mask);
        }
        const std::int32_t reply = pid < 0 ? -errno : pid;
        f.fd.reset();
        channel.put(tm_made_template, 0, as_bytes_of(reply));
        if (!channel.flush_blocking()) ::_exit(0);
      }
    } catch (...) {
      ::_exit(worker_exit_internal);
    }
  }

  std::mutex mutex_;
  Child server_;
  pid_t owner_pid_ = -1;
  Channel channel_;
};

}  // namespace detail
}  // namespace mproc
