// mproc/detail/shm/thread_identity.hpp — who holds a process-shared object:
// a thread's identity (tid and a stamp that tells a reused tid apart),
// cached per thread and reset in a forked child, and whether the thread of
// an identity has died (pidfd, /proc, kill). Layer detail/shm, on the OS
// only; used by MutexState (mutex_state.hpp) and the waiters' records.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/os/futex.hpp>
#include <mproc/detail/util/lean_std.hpp>

namespace mproc::detail {

// ------------------------------------------------------------ thread ids

// Test-only switches, never set by the library itself: they force the
// fallbacks that a kernel or C library without pidfs / robust lists would
// take, and let a test stop a barrier's last arriver at its worst instant.
struct SyncTesting {
  // Identity stamps computed from now on use this method (a kStamp* value;
  // -1: choose as usual). Threads cache their stamp: set it in a fresh
  // process (a forked child) before its first lock operation.
  static inline std::atomic<int> identity_method{-1};
  // Waiters do not link their slot into the kernel's robust list, so their
  // death is found by probing their identity instead.
  static inline std::atomic<bool> no_robust_list{false};
  // Called by a Barrier's last arriver while it holds the barrier's
  // internal lock, after it found every party alive and before it lets them go.
  static inline void (*barrier_releasing)() = nullptr;
};

inline std::uint32_t& cached_tid() noexcept {
  thread_local std::uint32_t tid = 0;
  return tid;
}
inline std::uint64_t& cached_identity() noexcept {
  thread_local std::uint64_t id = 0;
  return id;
}

// The kernel thread id of the calling thread (unique among live threads of
// all processes in the pid namespace), cached per thread and reset in a
// forked child. Thread-safe, non-blocking.
inline std::uint32_t current_tid() noexcept {
  std::uint32_t& tid = cached_tid();
  if (tid == 0) [[unlikely]] {
    static const bool registered = ::pthread_atfork(nullptr, nullptr, [] {
                                     cached_tid() = 0;
                                     cached_identity() = 0;
                                   }) == 0;
    (void)registered;
    tid = static_cast<std::uint32_t>(::syscall(SYS_gettid));
  }
  return tid;
}

// A thread's identity is its tid (low 32 bits) and a stamp (high 32 bits)
// that tells it apart from a later thread that reuses the tid. The stamp's
// top two bits say how it was made:
//   kStampPidfs: the low 30 bits of the inode number of a pidfd for the
//     thread; pidfs gives every struct pid its own 64-bit inode number for
//     the life of the system (Linux >= 6.9).
//   kStampProc: the low 30 bits of the thread's start time in clock ticks
//     since boot (/proc/<tid>/stat); a tid cannot come round again within
//     one tick, since pids are handed out cyclically over pid_max.
//   kStampNone: neither was available; only the tid's existence is known.
inline constexpr std::uint32_t kStampNone = 0;
inline constexpr std::uint32_t kStampPidfs = 1;
inline constexpr std::uint32_t kStampProc = 2;
inline constexpr std::uint32_t kStampValueMask = (1u << 30) - 1;

inline constexpr std::uint32_t identity_tid(std::uint64_t id) noexcept { return static_cast<std::uint32_t>(id); }
inline constexpr std::uint32_t identity_stamp(std::uint64_t id) noexcept {
  return static_cast<std::uint32_t>(id >> 32);
}

inline int pidfd_open_thread(std::uint32_t tid) noexcept {
#ifdef SYS_pidfd_open
  constexpr long kSysPidfdOpen = SYS_pidfd_open;
#else
  constexpr long kSysPidfdOpen = 434;  // the same on every architecture
#endif
  constexpr unsigned kPidfdThread = O_EXCL;  // PIDFD_THREAD: a pidfd for this very thread
  return static_cast<int>(::syscall(kSysPidfdOpen, static_cast<pid_t>(tid), kPidfdThread));
}

// Whether /proc is mounted (checked once).
inline bool proc_mounted() noexcept {
  static const bool mounted = ::access("/proc/self/stat", R_OK) == 0;
  return mounted;
}

// Reads the state letter and start time (clock ticks since boot) of thread
// `tid` from /proc/<tid>/stat. Returns 0, or the errno of the failure
// (ENOENT/ESRCH: no such thread; EINVAL: unparsable).
inline int read_proc_stat(std::uint32_t tid, char& state, std::uint64_t& start_ticks) noexcept {
  char path[40];
  std::snprintf(path, sizeof path, "/proc/%u/stat", tid);
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  char buf[1024];
  ssize_t n;
  do {
    n = ::read(fd, buf, sizeof buf - 1);
  } while (n < 0 && errno == EINTR);
  const int err = errno;
  ::close(fd);
  if (n < 0) return err;
  buf[n] = '\0';
  // "<pid> (<comm>) <state> <field 4> ... <field 22: starttime> ...": comm
  // may hold ')' itself, so take the last one.
  const char* p = std::strrchr(buf, ')');
  if (!p || p[1] != ' ' || p[2] == '\0') return EINVAL;
  state = p[2];
  p += 3;
  for (int field = 4; field <= 22; ++field) {
    while (*p == ' ') ++p;
    char* end = nullptr;
    const unsigned long long v = std::strtoull(p, &end, 10);
    if (end == p) return EINVAL;
    if (field == 22) start_ticks = v;
    p = end;
  }
  return 0;
}

// The stamp of live thread `tid` (see kStampPidfs), kStampNone if it cannot
// be made. Blocking only on /proc; a few system calls (once per thread for
// the caller's own identity).
inline std::uint32_t thread_stamp(std::uint32_t tid) noexcept {
  const int forced = SyncTesting::identity_method.load(std::memory_order_relaxed);
  if (forced < 0 || forced == static_cast<int>(kStampPidfs)) {
    const int fd = pidfd_open_thread(tid);
    if (fd >= 0) {
      constexpr long kPidfsMagic = 0x50494446;  // "PIDF"
      struct statfs fs{};
      struct stat st{};
      const bool unique =
          ::fstatfs(fd, &fs) == 0 && static_cast<long>(fs.f_type) == kPidfsMagic && ::fstat(fd, &st) == 0;
      ::close(fd);
      if (unique) return (kStampPidfs << 30) | (static_cast<std::uint32_t>(st.st_ino) & kStampValueMask);
    }
  }
  if (forced < 0 || forced == static_cast<int>(kStampProc)) {
    char state = 0;
    std::uint64_t start = 0;
    if (read_proc_stat(tid, state, start) == 0)
      return (kStampProc << 30) | (static_cast<std::uint32_t>(start) & kStampValueMask);
  }
  return kStampNone;
}

// Computes and caches the calling thread's identity (out of line: the lock
// paths that call current_identity() stay small).
[[gnu::noinline, gnu::cold]] inline std::uint64_t make_current_identity() noexcept {
  const std::uint32_t tid = current_tid();
  return cached_identity() = (std::uint64_t{thread_stamp(tid)} << 32) | tid;
}

// The calling thread's identity (tid and stamp), cached per thread and
// reset in a forked child. Thread-safe, non-blocking after the first call.
inline std::uint64_t current_identity() noexcept {
  const std::uint64_t id = cached_identity();
  if (id == 0) [[unlikely]]
    return make_current_identity();
  return id;
}

// Whether thread `tid` is gone (or a zombie), by /proc or, without /proc,
// by kill(tid, 0). Unknown counts as alive.
inline bool tid_gone(std::uint32_t tid) noexcept {
  char state = 0;
  std::uint64_t start = 0;
  const int err = read_proc_stat(tid, state, start);
  if (err == 0) return state == 'Z' || state == 'X' || state == 'x';
  if ((err == ENOENT || err == ESRCH) && proc_mounted()) return true;
  if (proc_mounted()) return false;
  return ::kill(static_cast<pid_t>(tid), 0) != 0 && errno == ESRCH;
}

// Whether the thread of identity `id` has certainly died (exited, been
// killed, or is a zombie). A tid now used by another thread, told apart by
// the stamp, means the owner died. Anything uncertain (no permission, out
// of descriptors, no /proc) counts as alive, so a live owner is never
// declared dead. Blocking only on /proc and a few system calls.
inline bool identity_dead(std::uint64_t id) noexcept {
  const std::uint32_t tid = identity_tid(id);
  const std::uint32_t stamp = identity_stamp(id);
  if (tid == 0) return false;
  const std::uint32_t method = stamp >> 30;
  const std::uint32_t value = stamp & kStampValueMask;
  if (method == kStampPidfs) {
    const int fd = pidfd_open_thread(tid);
    // No such tid: dead. Any other failure: ask /proc (a tid that is gone,
    // or a zombie, means the owner died, whoever holds that tid now).
    if (fd < 0) return errno == ESRCH || tid_gone(tid);
    struct stat st{};
    bool dead = ::fstat(fd, &st) == 0 && (static_cast<std::uint32_t>(st.st_ino) & kStampValueMask) != value;
    if (!dead) {
      // Readable: the thread exited (or, for a whole process, it is a zombie).
      pollfd pfd{fd, POLLIN, 0};
      int rc;
      do {
        rc = ::poll(&pfd, 1, 0);
      } while (rc < 0 && errno == EINTR);
      dead = rc > 0;
    }
    // A thread-group leader that exited while its other threads run is a
    // zombie its pidfd does not report as exited: /proc does. The inode
    // showed the tid was our owner's a moment ago; if /proc now shows it
    // gone or a zombie, our owner is dead, whoever holds the tid now.
    if (!dead) dead = tid_gone(tid);
    ::close(fd);
    return dead;
  }
  if (method == kStampProc) {
    char state = 0;
    std::uint64_t start = 0;
    const int err = read_proc_stat(tid, state, start);
    if (err == ENOENT || err == ESRCH) return proc_mounted();
    if (err != 0) return false;
    return state == 'Z' || state == 'X' || state == 'x' ||
           (static_cast<std::uint32_t>(start) & kStampValueMask) != value;
  }
  return tid_gone(tid);
}

}  // namespace mproc::detail
