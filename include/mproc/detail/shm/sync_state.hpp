// mproc — Python's multiprocessing model for C++20.
// SPDX-License-Identifier: MIT
//
// The states of process-shared synchronization objects, as they lie in
// shared memory, and the futex algorithms that operate on them. No
// allocation, no exceptions except futex errors. The public classes in
// synchronize.hpp wrap them.
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
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

// ------------------------------------------------------------------ mutex

// How long a sleeping waiter sleeps before checking whether the thread it
// waits for died (R5 asks for recovery within 100 ms). Signals do not
// stretch it: the check runs when the slice is over, however the sleep ended.
inline constexpr std::chrono::milliseconds kDeathCheckSlice{20};
// Spin iterations before sleeping (each a PAUSE and a relaxed load).
inline constexpr int kMutexSpin = 200;

// The 32-bit half of a 64-bit atomic that holds its low bits (the futex word).
inline const std::uint32_t* low_word(const std::atomic<std::uint64_t>& a) noexcept {
  static_assert(sizeof(std::atomic<std::uint64_t>) == 8 && std::atomic<std::uint64_t>::is_always_lock_free);
  return reinterpret_cast<const std::uint32_t*>(&a) + (std::endian::native == std::endian::little ? 0 : 1);
}

// A process-shared mutex. One 64-bit atomic holds the owner's identity
// (tid and stamp, see current_identity), a waiters bit (someone sleeps:
// unlock must wake) and a recovered bit (the owner took the lock over from
// a holder that died); its low half, tid and bits, is the futex word.
// Uncontended lock and unlock are one atomic operation each. A waiter
// checks every kDeathCheckSlice whether the owner died (identity_dead, so
// a reused tid does not keep a dead owner alive) and then takes the lock
// over. Any thread may unlock (Python's Lock allows it). Also correct
// between threads. Used by Lock, RLock, Barrier and the queues.
struct MutexState {
  static constexpr std::uint32_t kOwnerMask = 0x3fffffffu;  // pid_max <= 2^22
  static constexpr std::uint32_t kRecovered = 1u << 30;
  static constexpr std::uint32_t kWaiters = 1u << 31;
  static constexpr std::uint64_t kFlags = kRecovered | kWaiters;

  std::atomic<std::uint64_t> state{0};
  std::uint32_t count = 0;  // RLock recursion depth; touched by the owner only
  std::uint32_t reserved = 0;

  // The owner's tid (0: free).
  std::uint32_t owner() const noexcept {
    return static_cast<std::uint32_t>(state.load(std::memory_order_relaxed)) & kOwnerMask;
  }
  // Whether the thread of identity `id` holds the lock.
  bool held_by(std::uint64_t id) const noexcept { return (state.load(std::memory_order_relaxed) & ~kFlags) == id; }
  bool recovered() const noexcept { return (state.load(std::memory_order_relaxed) & kRecovered) != 0; }

  // Acquires if free, for the calling thread (`me`: its current_tid()).
  // Non-blocking; does not check whether the holder died.
  bool try_lock(std::uint32_t me) noexcept {
    (void)me;
    return try_lock_id(current_identity());
  }
  bool try_lock_id(std::uint64_t id) noexcept {
    std::uint64_t expected = 0;
    return state.compare_exchange_strong(expected, id, std::memory_order_acquire, std::memory_order_relaxed);
  }

  // Acquires for the calling thread (`me`: its current_tid()) until
  // `deadline`: spins briefly, then sleeps, taking the lock over when its
  // holder is found dead. Returns false on timeout. Blocking.
  bool lock(std::uint32_t me, Clock::time_point deadline) {
    (void)me;
    return lock_id(current_identity(), deadline);
  }
  bool lock_id(std::uint64_t id, Clock::time_point deadline) {
    if (try_lock_id(id)) return true;
    return lock_slow(id, deadline);
  }

  // Releases; wakes one sleeper if there is any. Returns the futex word as
  // it was (owner bits 0: the lock was not held).
  std::uint32_t unlock() {
    const auto old = static_cast<std::uint32_t>(state.exchange(0, std::memory_order_release));
    if (old & kWaiters) futex_wake(low_word(state), 1);
    return old;
  }

 private:
  bool take_over_if_dead(std::uint64_t seen, std::uint64_t id) noexcept {
    if (!identity_dead(seen & ~kFlags)) return false;
    return state.compare_exchange_strong(seen, id | kWaiters | kRecovered, std::memory_order_acquire,
                                         std::memory_order_relaxed);
  }

  bool lock_slow(std::uint64_t id, Clock::time_point deadline) {
    for (int i = 0; i < kMutexSpin; ++i) {
      cpu_relax();
      if (state.load(std::memory_order_relaxed) == 0 && try_lock_id(id)) return true;
    }
    Clock::time_point next_check{};  // set on the first pass
    for (;;) {
      std::uint64_t v = state.load(std::memory_order_relaxed);
      if (v == 0) {
        // Others may sleep too: keep the waiters bit so our unlock wakes them.
        if (state.compare_exchange_weak(v, id | kWaiters, std::memory_order_acquire, std::memory_order_relaxed))
          return true;
        continue;
      }
      if (!(v & kWaiters)) {
        if (!state.compare_exchange_weak(v, v | kWaiters, std::memory_order_relaxed)) continue;
        v |= kWaiters;
      }
      const auto now = Clock::now();
      if (next_check == Clock::time_point{}) next_check = now + kDeathCheckSlice;
      if (now >= next_check || now >= deadline) {
        if (take_over_if_dead(v, id)) return true;
        if (now >= deadline) return false;
        next_check = now + kDeathCheckSlice;
        continue;  // the probe took time: look at the word again
      }
      futex_wait(low_word(state), static_cast<std::uint32_t>(v), std::min(deadline, next_check));
    }
  }
};

// ------------------------------------------------------ waiters' records

// The kernel's robust-list head (struct robust_list_head, <linux/futex.h>).
struct RobustListHead {
  void* list;
  long futex_offset;
  void* list_op_pending;
};

// One blocked thread's record in a Condition or Barrier, in shared memory.
// The owner writes it under the object's lock before it sleeps and clears
// it after; others read it under that lock to tell whether it died.
//
// While the record is in use, the owner links it into its thread's robust
// list (the list glibc registered with set_robust_list: `next` is the
// entry, `alive` the futex word at the list's futex_offset of -32). When
// the thread dies, however it dies, the kernel sets FUTEX_OWNER_DIED in
// `alive` before anyone can see the death: no system call and no guess is
// needed to find a dead waiter. The record is linked at the head of the
// list and only while its owner is blocked inside the library, so no other
// entry is added or removed meanwhile and unlinking restores the list
// exactly. Without a usable robust list (another C library, or
// SyncTesting::no_robust_list) `alive` stays 0 and the owner's identity is
// probed instead (identity_dead).
struct WaiterSlot {
  static constexpr std::uint32_t kFree = 0;
  static constexpr std::uint32_t kWaiting = 1;   // Condition: waiting; Barrier: arrived
  static constexpr std::uint32_t kNotified = 2;  // Condition only
  static constexpr std::uint32_t kOwnerDied = 0x40000000u;  // FUTEX_OWNER_DIED

  std::atomic<std::uint32_t> alive{0};  // the owner's tid while linked; kOwnerDied once it died
  std::atomic<std::uint32_t> state{0};  // a futex word: kFree, kWaiting or kNotified
  std::uint64_t id = 0;                 // the owner's identity
  std::uint32_t reserved = 0;
  std::uint32_t ticket = 0;             // Condition: arrival order
  void* prev = nullptr;                 // the C library's robust-list convention may write here
  void* next = nullptr;                 // the robust-list entry

  static constexpr long kNodeOffset = 32;  // from `alive` to `next`

  // Takes the record for the calling thread in `st` (under the object's
  // lock) and links it into the thread's robust list.
  void claim(std::uint32_t st, std::uint32_t arrival) noexcept {
    id = current_identity();
    ticket = arrival;
    alive.store(0, std::memory_order_relaxed);
    state.store(st, std::memory_order_relaxed);
    link();
  }
  // Gives the record back (its owner, under the object's lock).
  void release() noexcept {
    unlink();
    state.store(kFree, std::memory_order_relaxed);
  }
  // Frees the record of a dead owner (under the object's lock).
  void reap() noexcept {
    alive.store(0, std::memory_order_relaxed);
    state.store(kFree, std::memory_order_relaxed);
  }
  bool mine() const noexcept { return id == current_identity() && state.load(std::memory_order_relaxed) != kFree; }

  // Whether the owner of this record (in use) has died. Non-blocking when
  // linked; otherwise it may probe the owner (a few system calls).
  bool owner_dead() const noexcept {
    const std::uint32_t a = alive.load(std::memory_order_acquire);
    if (a != 0) return (a & kOwnerDied) != 0;
    return identity_dead(id);
  }

 private:
  // The calling thread's robust-list head if we can use it; nullptr if not.
  static RobustListHead* robust_head() noexcept {
    if (SyncTesting::no_robust_list.load(std::memory_order_relaxed)) return nullptr;
    thread_local RobustListHead* head = nullptr;
    thread_local bool looked = false;
    if (!looked) {
      looked = true;
      void* h = nullptr;
      std::size_t len = 0;
      if (::syscall(SYS_get_robust_list, 0, &h, &len) == 0 && h && len == sizeof(RobustListHead) &&
          static_cast<RobustListHead*>(h)->futex_offset == -kNodeOffset)
        head = static_cast<RobustListHead*>(h);
    }
    return head;
  }
  // Stores in program order as the kernel, walking the list when the
  // thread dies, must see them.
  static void put(void*& where, void* value) noexcept {
    std::atomic_ref<void*>(where).store(value, std::memory_order_relaxed);
    std::atomic_signal_fence(std::memory_order_seq_cst);
  }
  void put_alive(std::uint32_t value) noexcept {
    alive.store(value, std::memory_order_relaxed);
    std::atomic_signal_fence(std::memory_order_seq_cst);
  }
  void* node() noexcept { return static_cast<void*>(&next); }

  void link() noexcept {
    RobustListHead* head = robust_head();
    if (!head) return;
    // The kernel also handles list_op_pending at death, so a death at any
    // point in between marks `alive` as soon as it holds our tid.
    put(head->list_op_pending, node());
    put_alive(current_tid());
    put(next, std::atomic_ref<void*>(head->list).load(std::memory_order_relaxed));
    put(head->list, node());
    put(head->list_op_pending, nullptr);
  }
  void unlink() noexcept {
    if (alive.load(std::memory_order_relaxed) == 0) return;  // not linked
    RobustListHead* head = robust_head();
    if (!head) return;
    put(head->list_op_pending, node());
    if (std::atomic_ref<void*>(head->list).load(std::memory_order_relaxed) == node()) {
      put(head->list, next);
    } else {
      // Something was linked after us (only a signal handler could): unlink
      // from the middle, walking the entries (bit 0 marks PI futexes).
      void* p = head->list;
      for (int i = 0; i < 2048 && p != static_cast<void*>(head); ++i) {
        void** entry = reinterpret_cast<void**>(reinterpret_cast<std::uintptr_t>(p) & ~std::uintptr_t{1});
        if (reinterpret_cast<std::uintptr_t>(*entry) == reinterpret_cast<std::uintptr_t>(node())) {
          put(*entry, next);
          break;
        }
        p = *entry;
      }
    }
    put_alive(0);
    put(head->list_op_pending, nullptr);
  }
};
static_assert(offsetof(WaiterSlot, next) - offsetof(WaiterSlot, alive) == WaiterSlot::kNodeOffset || sizeof(void*) != 8,
              "WaiterSlot: the robust-list entry must lie 32 bytes after the futex word");

// -------------------------------------------------------------- semaphore

// A counting semaphore: `value` is the futex word; `waiters` counts
// sleepers so release() only makes a system call when someone sleeps.
struct SemaphoreState {
  std::atomic<std::uint32_t> value{0};
  std::atomic<std::uint32_t> waiters{0};
  std::uint32_t bound = 0;  // largest value release() may reach

  bool try_acquire() noexcept {
    std::uint32_t v = value.load(std::memory_order_relaxed);
    while (v > 0)
      if (value.compare_exchange_weak(v, v - 1, std::memory_order_acquire, std::memory_order_relaxed)) return true;
    return false;
  }

  bool acquire(Clock::time_point deadline) {
    if (try_acquire()) return true;
    if (Clock::now() >= deadline) return false;
    waiters.fetch_add(1, std::memory_order_seq_cst);
    bool got = false;
    for (;;) {
      std::uint32_t v = value.load(std::memory_order_seq_cst);
      if (v > 0) {
        if (value.compare_exchange_weak(v, v - 1, std::memory_order_acquire, std::memory_order_relaxed)) {
          got = true;
          break;
        }
        continue;
      }
      if (Clock::now() >= deadline) break;
      futex_wait(value, 0, deadline);
    }
    waiters.fetch_sub(1, std::memory_order_relaxed);
    return got;
  }

  // Adds `n`; false (and no change) if that would pass `bound`.
  bool release(std::uint32_t n) {
    std::uint32_t v = value.load(std::memory_order_relaxed);
    do {
      if (v > bound || n > bound - v) return false;
    } while (!value.compare_exchange_weak(v, v + n, std::memory_order_seq_cst, std::memory_order_relaxed));
    if (waiters.load(std::memory_order_seq_cst) > 0) futex_wake(value, n > INT_MAX ? INT_MAX : static_cast<int>(n));
    return true;
  }
};

// ------------------------------------------------------------------ event

// A flag with a generation count in one futex word (bit 0: set; bits 1..31:
// number of set() calls), so a waiter woken by set() returns true even if
// clear() follows at once.
struct EventState {
  std::atomic<std::uint32_t> word{0};
  std::atomic<std::uint32_t> waiters{0};

  bool is_set() const noexcept { return (word.load(std::memory_order_acquire) & 1u) != 0; }

  void set() {
    std::uint32_t v = word.load(std::memory_order_relaxed);
    do {
      if (v & 1u) return;
    } while (!word.compare_exchange_weak(v, (v + 2u) | 1u, std::memory_order_seq_cst, std::memory_order_relaxed));
    if (waiters.load(std::memory_order_seq_cst) > 0) futex_wake(word);
  }

  void clear() noexcept { word.fetch_and(~1u, std::memory_order_seq_cst); }

  bool wait(Clock::time_point deadline) {
    std::uint32_t v = word.load(std::memory_order_acquire);
    if (v & 1u) return true;
    if (Clock::now() >= deadline) return false;
    waiters.fetch_add(1, std::memory_order_seq_cst);
    bool set_seen = false;
    const std::uint32_t generation = v >> 1;
    for (;;) {
      v = word.load(std::memory_order_seq_cst);
      if ((v & 1u) || (v >> 1) != generation) {
        set_seen = true;
        break;
      }
      if (Clock::now() >= deadline) break;
      futex_wait(word, v, deadline);
    }
    waiters.fetch_sub(1, std::memory_order_relaxed);
    return set_seen;
  }
};

// -------------------------------------------------------------- condition

// A condition variable's shared part: one record per waiting thread, all
// under the condition's lock. notify() marks the oldest waiting records
// whose owners are alive as notified and wakes them one by one, so a dead
// waiter neither absorbs a notification nor leaves one for a later waiter.
struct ConditionState {
  static constexpr std::uint32_t kMaxWaiters = 192;

  std::uint32_t next_ticket = 0;
  std::uint32_t used = 0;  // slots [used, kMaxWaiters) have never been used
  WaiterSlot slots[kMaxWaiters];

  // How many slots to look at (`used`, checked: it lies in shared memory).
  std::uint32_t in_use_bound() const noexcept { return std::min(used, kMaxWaiters); }

  // A free record, after freeing those of dead waiters if none is free;
  // nullptr if all are in use by live waiters. Blocking only on probes.
  WaiterSlot* free_slot() noexcept {
    const std::uint32_t n = in_use_bound();
    for (std::uint32_t i = 0; i < n; ++i)
      if (slots[i].state.load(std::memory_order_relaxed) == WaiterSlot::kFree) return &slots[i];
    if (n < kMaxWaiters) {
      used = n + 1;
      return &slots[n];
    }
    WaiterSlot* found = nullptr;
    for (auto& s : slots)
      if (s.owner_dead()) {
        s.reap();
        if (!found) found = &s;
      }
    return found;
  }
  // The waiting record that arrived first, or nullptr.
  WaiterSlot* oldest_waiting() noexcept {
    WaiterSlot* best = nullptr;
    const std::uint32_t n = in_use_bound();
    for (std::uint32_t i = 0; i < n; ++i) {
      WaiterSlot& s = slots[i];
      if (s.state.load(std::memory_order_relaxed) == WaiterSlot::kWaiting &&
          (!best || static_cast<std::int32_t>(s.ticket - best->ticket) < 0))
        best = &s;
    }
    return best;
  }
};

// ---------------------------------------------------------------- barrier

// A barrier's shared part (Python's threading.Barrier algorithm): an
// internal mutex, a broadcast sequence word, the counters it guards, and,
// right after it in the block, one WaiterSlot per party: slot i holds the
// party that arrived i-th in the current round until it leaves.
struct BarrierState {
  static constexpr std::int32_t kFilling = 0;
  static constexpr std::int32_t kDraining = 1;
  static constexpr std::int32_t kResetting = -1;
  static constexpr std::int32_t kBroken = -2;
  static constexpr std::uint32_t kMaxParties = 1u << 16;
  // Why the barrier broke (`reason`, shown in BrokenBarrierError).
  static constexpr std::uint32_t kTimedOut = 1;
  static constexpr std::uint32_t kAborted = 2;
  static constexpr std::uint32_t kPartyDied = 3;
  static constexpr std::uint32_t kInconsistent = 4;

  MutexState mutex;
  std::atomic<std::uint32_t> seq{0};
  std::uint32_t parties = 0;
  std::uint32_t count = 0;  // parties in slots (arrived, or released and not yet left)
  std::int32_t state = kFilling;
  std::int64_t default_timeout_ns = -1;  // -1: none
  std::uint32_t reason = 0;              // of the last break
  std::uint32_t reserved = 0;

  // Why the barrier broke, for an error message.
  const char* reason_text() const noexcept {
    switch (reason) {
      case kTimedOut:
        return " (a wait timed out)";
      case kAborted:
        return " (abort() was called)";
      case kPartyDied:
        return " (a party died while waiting)";
      case kInconsistent:
        return " (its shared state was inconsistent)";
      default:
        return "";
    }
  }

  // Bytes of a barrier's state with its slots.
  static constexpr std::size_t size_for(std::uint32_t parties) noexcept {
    return sizeof(BarrierState) + std::size_t{parties} * sizeof(WaiterSlot);
  }
  WaiterSlot* slots() noexcept {
    return std::launder(reinterpret_cast<WaiterSlot*>(reinterpret_cast<std::byte*>(this) + sizeof(BarrierState)));
  }
};
static_assert(sizeof(BarrierState) % alignof(WaiterSlot) == 0);

}  // namespace mproc::detail
