// Shared-memory segments: creation (memfd, or shm_open for named ones), the
// plain handle that describes a piece of a segment to another process, the
// per-process registry that maps each segment once, the retention cache for
// long-lived receivers, and the small-object arena.
//
// Segments are memfd files (mode 0600) mapped MAP_SHARED: nothing is ever
// created in /dev/shm, so a crash cannot leak a name there. A process that
// did not inherit a segment through fork() opens it from its creator's
// descriptor table (/proc/<pid>/fd/<fd>), which works for processes of the
// same user while the creator is alive and still holds the segment.
//
// Every memfd segment is sealed at creation against shrinking and growing
// (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL): no process holding it, its
// creator included, can truncate it under another's mapping, which would
// kill that process with SIGBUS when it next touched the lost pages. A
// receiver maps a segment opened through /proc only once it has seen those
// seals, and only at the size the handle states. Named segments (shm_open)
// cannot be sealed: see create_named_segment().
// SPDX-License-Identifier: MIT
#pragma once

#if !defined(__linux__)
#error "mproc's shared memory needs Linux (memfd_create, /proc); other systems are not supported yet"
#endif

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mproc/detail/os/fd.hpp>
#include <mproc/errors.hpp>

namespace mproc::detail {

// What a handle describes; also stored in each object's header in shared
// memory, so a receiver can check it got what it expects.
enum class ShmKind : std::uint16_t {
  none = 0,
  shared_memory = 1,
  lock,
  rlock,
  semaphore,
  bounded_semaphore,
  event,
  condition,
  barrier,
  value,
  raw_value,
  array,
  raw_array,
  queue,
  joinable_queue,
  simple_queue,
};

inline const char* shm_kind_name(ShmKind kind) noexcept {
  switch (kind) {
    case ShmKind::shared_memory:
      return "SharedMemory";
    case ShmKind::lock:
      return "Lock";
    case ShmKind::rlock:
      return "RLock";
    case ShmKind::semaphore:
      return "Semaphore";
    case ShmKind::bounded_semaphore:
      return "BoundedSemaphore";
    case ShmKind::event:
      return "Event";
    case ShmKind::condition:
      return "Condition";
    case ShmKind::barrier:
      return "Barrier";
    case ShmKind::value:
      return "Value";
    case ShmKind::raw_value:
      return "RawValue";
    case ShmKind::array:
      return "Array";
    case ShmKind::raw_array:
      return "RawArray";
    case ShmKind::queue:
      return "Queue";
    case ShmKind::joinable_queue:
      return "JoinableQueue";
    case ShmKind::simple_queue:
      return "SimpleQueue";
    case ShmKind::none:
      break;
  }
  return "unknown shared object";
}

// Describes `length` bytes at `offset` of a memfd segment of `segment_size`
// bytes, held open by process `pid` as descriptor `fd`, identified by
// (dev, ino). Trivially copyable: it crosses process boundaries as bytes.
// Every field is untrusted on receipt; open_segment() validates them.
struct ShmHandle {
  static constexpr std::uint32_t kMagic = 0x6873706du;  // "mpsh"
  static constexpr std::uint16_t kVersion = 1;

  std::uint32_t magic = kMagic;
  std::uint16_t version = kVersion;
  std::uint16_t kind = 0;  // ShmKind
  std::int32_t pid = 0;
  std::int32_t fd = -1;
  std::uint64_t dev = 0;
  std::uint64_t ino = 0;
  std::uint64_t segment_size = 0;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
};
static_assert(std::is_trivially_copyable_v<ShmHandle> && std::is_standard_layout_v<ShmHandle>);

// Largest segment a handle may describe (128 TiB: the x86-64 user address space).
inline constexpr std::uint64_t kMaxSegmentSize = std::uint64_t{1} << 47;

// The seals create_segment() puts on every anonymous segment: its size is
// fixed for good, and no other seal can be added later (F_SEAL_WRITE or
// F_SEAL_FUTURE_WRITE would make other processes' mappings fail).
inline constexpr int kSegmentSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
// The seals a segment received by handle must carry before its size is trusted.
inline constexpr int kRequiredSeals = F_SEAL_SHRINK | F_SEAL_GROW;

// One mapping of a segment into this process. Unmaps (and closes the
// descriptor, if this process holds one) when the last reference goes.
class Mapping {
 public:
  Mapping(void* addr, std::size_t size, const struct stat& st, UniqueFd fd, pid_t creator_pid, int creator_fd,
          std::string name = {}) noexcept
      : addr_(static_cast<std::byte*>(addr)),
        size_(size),
        dev_(static_cast<std::uint64_t>(st.st_dev)),
        ino_(static_cast<std::uint64_t>(st.st_ino)),
        fd_(std::move(fd)),
        creator_pid_(creator_pid),
        creator_fd_(creator_fd),
        mapped_in_(::getpid()),
        name_(std::move(name)) {}
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { ::munmap(addr_, size_); }

  std::byte* data() const noexcept { return addr_; }
  std::size_t size() const noexcept { return size_; }
  std::uint64_t dev() const noexcept { return dev_; }
  std::uint64_t ino() const noexcept { return ino_; }
  // The process that created the segment and its descriptor there.
  pid_t creator_pid() const noexcept { return creator_pid_; }
  int creator_fd() const noexcept { return creator_fd_; }
  // Whether this process got the mapping through fork() rather than making
  // it (an inherited mapping starts without page tables in the child).
  bool inherited() const noexcept { return mapped_in_ != ::getpid(); }
  // Whether this process could not map the segment anew (open_segment),
  // and marking it so. Both under the ShmState mutex.
  bool remap_failed() const noexcept { return remap_failed_; }
  void set_remap_failed() noexcept { remap_failed_ = true; }
  // The descriptor this process holds (-1 for segments opened from a handle).
  int fd() const noexcept { return fd_.get(); }
  // The shm_open name of a named segment, else empty. Named segments are
  // the only unsealed ones (their size can change under the mapping).
  const std::string& name() const noexcept { return name_; }
  bool sealed() const noexcept { return name_.empty(); }

  // A handle for [offset, offset + length) of this segment.
  ShmHandle handle(ShmKind kind, std::size_t offset, std::size_t length) const noexcept {
    ShmHandle h;
    h.kind = static_cast<std::uint16_t>(kind);
    h.pid = creator_pid_;
    h.fd = creator_fd_;
    h.dev = dev_;
    h.ino = ino_;
    h.segment_size = size_;
    h.offset = offset;
    h.length = length;
    return h;
  }

 private:
  std::byte* addr_;
  std::size_t size_;
  std::uint64_t dev_;
  std::uint64_t ino_;
  UniqueFd fd_;
  pid_t creator_pid_;
  int creator_fd_;
  pid_t mapped_in_;  // the process that mapped it
  bool remap_failed_ = false;
  std::string name_;
};

// ------------------------------------------------------------------ arena

// Small objects (locks, Values, small Arrays) share memfd chunks, so a
// thousand locks cost one descriptor, not a thousand. Blocks come in
// power-of-two size classes from 64 bytes (a cache line) to kArenaMaxBlock.
inline constexpr std::size_t kArenaChunkSize = std::size_t{1} << 20;
inline constexpr std::size_t kArenaMinBlock = 64;
inline constexpr std::size_t kArenaMaxBlock = std::size_t{64} << 10;
inline constexpr std::size_t kArenaClasses = 11;  // 64 B .. 64 KiB
static_assert((kArenaMinBlock << (kArenaClasses - 1)) == kArenaMaxBlock);

struct ArenaChunk {
  std::shared_ptr<Mapping> mapping;
  std::size_t bump = 0;  // first never-used byte
  std::size_t live = 0;  // blocks handed out and not yet freed
  // Set in a forked child for the parent's chunks: the parent still hands
  // out their blocks, so the child must never reuse any of them.
  bool inherited = false;
  std::array<std::vector<std::uint32_t>, kArenaClasses> free_blocks;
};

// --------------------------------------------------- per-process state

// Everything a process knows about its segments, under one mutex. Immortal
// (never destroyed), so objects with static storage may outlive main().
struct ShmState {
  std::mutex mutex;
  // (dev, ino) -> the mapping of that segment in this process, if any.
  std::map<std::pair<std::uint64_t, std::uint64_t>, std::weak_ptr<Mapping>> registry;
  std::size_t sweep_at = 64;
  // Retention cache: most recently retained first.
  std::list<std::shared_ptr<Mapping>> retained;
  std::size_t retained_bytes = 0;
  std::size_t retain_max_count = 64;
  std::size_t retain_max_bytes = std::size_t{1} << 30;
  bool auto_retain = false;  // retain every segment open_segment() resolves
  // Arena chunks this process allocates from (never inherited ones).
  std::vector<std::shared_ptr<ArenaChunk>> chunks;
};

inline ShmState& shm_state() {
  static ShmState* const state = [] {
    auto* s = new ShmState;
    // Keep the mutex consistent across fork(), and stop a child from
    // allocating out of its parent's chunks.
    ::pthread_atfork([] { shm_state().mutex.lock(); }, [] { shm_state().mutex.unlock(); },
                     [] {
                       ShmState& st = shm_state();
                       for (auto& chunk : st.chunks) {
                         chunk->inherited = true;
                         for (auto& list : chunk->free_blocks) list.clear();
                       }
                       st.chunks.clear();
                       st.mutex.unlock();
                     });
    return s;
  }();
  return *state;
}

// Adds `mapping` to the registry (caller holds the mutex), sweeping expired
// entries now and then so the map stays proportional to live segments.
inline void register_mapping_locked(ShmState& st, const std::shared_ptr<Mapping>& mapping) {
  st.registry[{mapping->dev(), mapping->ino()}] = mapping;
  if (st.registry.size() >= st.sweep_at) {
    std::erase_if(st.registry, [](const auto& entry) { return entry.second.expired(); });
    st.sweep_at = std::max<std::size_t>(64, 2 * st.registry.size());
  }
}

// Whether map_fd prefaults a segment whose `st` says it has no hole: the
// pages exist, so mapping them all allocates nothing (a hole would be
// allocated by the prefault, so a sparse segment is mapped on demand).
inline bool prefault_worthwhile(const struct stat& st, std::size_t size) noexcept {
  return static_cast<std::uint64_t>(st.st_blocks) * 512 >= size;
}

// The smallest inherited segment that a pool worker maps anew (open_segment):
// below it, the few page faults saved cost less than the seven system calls
// of opening and mapping it again (a pool's own 128-byte status board, say).
inline constexpr std::size_t remap_inherited_min_bytes = 64 * 1024;

// Maps `fd` (size `size`) and wraps it. With `prefault` (a segment that
// another process filled: see open_segment) and no hole in it, the pages are
// mapped read-only first and then made writable: on a virtual machine, the
// first read through a writable mapping costs ~1 ms per MB, through a
// prefaulted read-only one ~0.4 (bench/README.md, P1c); pages this process
// then writes pay the difference on their first write. Throws ProcessError.
inline std::shared_ptr<Mapping> map_fd(UniqueFd fd, std::size_t size, const struct stat& st, pid_t creator_pid,
                                       int creator_fd, bool keep_fd, std::string name, const std::string& what,
                                       bool prefault = false) {
#ifdef MADV_POPULATE_READ
  prefault = prefault && prefault_worthwhile(st, size);
#else
  prefault = false;
#endif
  void* addr = ::mmap(nullptr, size, prefault ? PROT_READ : PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (addr == MAP_FAILED) throw_errno("mmap of " + what);
#ifdef MADV_POPULATE_READ
  if (prefault) {
    (void)::madvise(addr, size, MADV_POPULATE_READ);  // before Linux 5.14: EINVAL, and pages map on demand
    if (::mprotect(addr, size, PROT_READ | PROT_WRITE) < 0) {
      const int err = errno;
      ::munmap(addr, size);
      throw_errno("mprotect of " + what, err);
    }
  }
#endif
  if (!keep_fd) fd.reset();
  try {
    return std::make_shared<Mapping>(addr, size, st, std::move(fd), creator_pid, creator_fd, std::move(name));
  } catch (...) {
    ::munmap(addr, size);
    throw;
  }
}

// Creates an anonymous segment of `size` bytes (zero-filled, mode 0600,
// sealed against resizing: see kSegmentSeals) and registers it. `label`
// shows in /proc/<pid>/maps. Non-blocking; thread-safe. Throws ProcessError
// (size 0 or too large, out of memory or descriptors).
inline std::shared_ptr<Mapping> create_segment(std::size_t size, const char* label) {
  if (size == 0 || size > kMaxSegmentSize)
    throw ProcessError("mproc: cannot create a shared memory segment of " + std::to_string(size) + " bytes");
  UniqueFd fd(::memfd_create(label, MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd) throw_errno("memfd_create");
  if (::fchmod(fd.get(), 0600) < 0) throw_errno("fchmod of a shared memory segment");
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) < 0)
    throw_errno("ftruncate of a shared memory segment to " + std::to_string(size) + " bytes");
  if (::fcntl(fd.get(), F_ADD_SEALS, kSegmentSeals) < 0) throw_errno("sealing a shared memory segment");
  struct stat st{};
  if (::fstat(fd.get(), &st) < 0) throw_errno("fstat of a shared memory segment");
  const int raw = fd.get();
  auto mapping = map_fd(std::move(fd), size, st, ::getpid(), raw, true, {}, "a shared memory segment");
  ShmState& state = shm_state();
  std::lock_guard guard(state.mutex);
  register_mapping_locked(state, mapping);
  return mapping;
}

// Puts `mapping` at the front of the retention cache and evicts beyond the
// limits (caller holds the mutex; evicted mappings unmap here, which takes
// no lock).
inline void retain_locked(ShmState& st, std::shared_ptr<Mapping> mapping) {
  auto it = std::find(st.retained.begin(), st.retained.end(), mapping);
  if (it != st.retained.end()) {
    st.retained.splice(st.retained.begin(), st.retained, it);
    return;
  }
  st.retained_bytes += mapping->size();
  st.retained.push_front(std::move(mapping));
  while (!st.retained.empty() &&
         (st.retained.size() > st.retain_max_count || st.retained_bytes > st.retain_max_bytes)) {
    st.retained_bytes -= st.retained.back()->size();
    st.retained.pop_back();
  }
}

// Checks the fields of a received handle that do not need the segment.
// Throws ProcessError naming `what` and the fault.
inline void validate_handle(const ShmHandle& h, const std::string& what) {
  const auto fail = [&](const std::string& why) {
    throw ProcessError("mproc: invalid handle for " + what + ": " + why);
  };
  if (h.magic != ShmHandle::kMagic) fail("bad magic number (not an mproc shared memory handle)");
  if (h.version != ShmHandle::kVersion) fail("unsupported handle version " + std::to_string(h.version));
  if (h.pid <= 0) fail("bad creator pid " + std::to_string(h.pid));
  if (h.fd < 0) fail("bad descriptor " + std::to_string(h.fd));
  if (h.segment_size == 0 || h.segment_size > kMaxSegmentSize)
    fail("bad segment size " + std::to_string(h.segment_size));
  if (h.offset > h.segment_size || h.length > h.segment_size - h.offset)
    fail("range [" + std::to_string(h.offset) + ", +" + std::to_string(h.length) + ") lies outside the " +
         std::to_string(h.segment_size) + "-byte segment");
}

// open_segment's second half: maps the segment through its creator's
// descriptor table and registers it (caller holds the mutex).
inline std::shared_ptr<Mapping> open_segment_locked(ShmState& state, const ShmHandle& h, const std::string& what) {
  const auto invalid = [&](const std::string& why) {
    return ProcessError("mproc: invalid handle for " + what + ": " + why);
  };
  const std::string gone = "mproc: cannot open " + what +
                           ": the shared memory segment no longer exists (its creator, process " +
                           std::to_string(h.pid) + ", exited or freed it)";
  const auto same_file = [&](const struct stat& st) {
    return static_cast<std::uint64_t>(st.st_dev) == h.dev && static_cast<std::uint64_t>(st.st_ino) == h.ino;
  };
  const std::string path = "/proc/" + std::to_string(h.pid) + "/fd/" + std::to_string(h.fd);
  // Look before opening: an untrusted handle may name a FIFO, a socket or a
  // device, and opening one can block or have side effects.
  struct stat st{};
  if (::stat(path.c_str(), &st) < 0) {
    const int err = errno;
    if (err == ENOENT || err == ESRCH) throw ProcessError(gone);
    throw_errno("cannot open " + what + " through " + path + " (the creator must be alive and run as the same user)",
                err);
  }
  if (!same_file(st)) throw ProcessError(gone);  // the descriptor now names another file
  if (!S_ISREG(st.st_mode)) throw invalid("it names a file that is not a shared memory segment");
  // O_NONBLOCK: should the descriptor change between stat and open, never
  // block on what it names now.
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!fd) {
    const int err = errno;
    if (err == ENOENT || err == ESRCH || err == ENXIO) throw ProcessError(gone);
    throw_errno("cannot open " + what + " through " + path + " (the creator must be alive and run as the same user)",
                err);
  }
  // Seals first, size second: once the seals are there the size is final.
  const int seals = ::fcntl(fd.get(), F_GET_SEALS);
  if (::fstat(fd.get(), &st) < 0) throw_errno("fstat of " + path);
  if (!S_ISREG(st.st_mode) || !same_file(st)) throw ProcessError(gone);
  if (seals < 0 || (seals & kRequiredSeals) != kRequiredSeals)
    throw invalid(
        "the segment is not sealed against resizing (not an mproc anonymous segment): "
        "refusing to map it, its owner could shrink it under this process");
  if (static_cast<std::uint64_t>(st.st_size) != h.segment_size)
    throw invalid("the segment is " + std::to_string(st.st_size) + " bytes, the handle says " +
                  std::to_string(h.segment_size));
  auto mapping =
      map_fd(std::move(fd), static_cast<std::size_t>(h.segment_size), st, h.pid, h.fd, false, {}, what, true);
  register_mapping_locked(state, mapping);
  return mapping;
}

// Resolves a received handle to a mapping of its segment in this process:
// the existing one if the segment is already mapped here (created here,
// inherited through fork, or received before), else opens it from its
// creator's descriptor table and maps it, once it has checked that the
// descriptor still names the segment the handle describes (a regular file
// of that device and inode: nothing else is ever opened), that the segment
// is sealed against resizing and that its size is the handle's.
// Non-blocking; thread-safe. Throws ProcessError if the handle is malformed
// or names something else than a sealed segment of its size, if the segment
// no longer exists (its creator exited or freed it) or cannot be opened.
inline std::shared_ptr<Mapping> open_segment(const ShmHandle& h, const std::string& what = "shared memory") {
  validate_handle(h, what);
  const auto invalid = [&](const std::string& why) {
    return ProcessError("mproc: invalid handle for " + what + ": " + why);
  };
  ShmState& state = shm_state();
  std::lock_guard guard(state.mutex);
  std::shared_ptr<Mapping> inherited;
  if (auto it = state.registry.find({h.dev, h.ino}); it != state.registry.end()) {
    if (auto mapping = it->second.lock()) {
      if (!mapping->sealed())
        throw invalid("it names a named SharedMemory block, whose size is not sealed (pass its name instead)");
      if (mapping->size() != h.segment_size)
        throw invalid("segment size " + std::to_string(h.segment_size) + " does not match the mapped segment's " +
                      std::to_string(mapping->size()));
      // A long-lived receiver (a pool worker) maps an inherited segment of
      // some size anew, prefaulted (map_fd), and keeps that mapping; others
      // use it.
      if (!state.auto_retain || !mapping->inherited() || mapping->remap_failed() ||
          mapping->size() < remap_inherited_min_bytes) {
        if (state.auto_retain && mapping->fd() < 0) retain_locked(state, mapping);  // received, not inherited
        return mapping;
      }
      inherited = std::move(mapping);
    }
  }
  try {
    auto mapping = open_segment_locked(state, h, what);
    if (state.auto_retain) retain_locked(state, mapping);
    return mapping;
  } catch (...) {
    if (!inherited) throw;
    inherited->set_remap_failed();  // e.g. its creator closed it: the inherited mapping still works
    return inherited;
  }
}

// Keeps `mapping` alive in this process beyond its last user, in an LRU cache
// bounded by count and bytes (see set_retention_limits), so a long-lived
// receiver (a pool worker) that gets the same arrays task after task does not
// unmap and re-fault them; freed segments age out. Thread-safe, non-blocking.
inline void retain_segment(std::shared_ptr<Mapping> mapping) {
  if (!mapping) return;
  ShmState& st = shm_state();
  std::lock_guard guard(st.mutex);
  retain_locked(st, std::move(mapping));
}

// Makes open_segment() retain every segment it resolves (for long-lived
// receivers such as pool workers: call once at start). Thread-safe.
inline void set_auto_retain(bool on) {
  ShmState& st = shm_state();
  std::lock_guard guard(st.mutex);
  st.auto_retain = on;
}

// Bounds the retention cache (defaults: 64 segments, 1 GiB); evicts as needed.
inline void set_retention_limits(std::size_t max_count, std::size_t max_bytes) {
  ShmState& st = shm_state();
  std::lock_guard guard(st.mutex);
  st.retain_max_count = max_count;
  st.retain_max_bytes = max_bytes;
  while (!st.retained.empty() && (st.retained.size() > max_count || st.retained_bytes > max_bytes)) {
    st.retained_bytes -= st.retained.back()->size();
    st.retained.pop_back();
  }
}

// Drops every retained segment, keeping the limits. Thread-safe.
inline void release_retained_segments() {
  ShmState& st = shm_state();
  std::lock_guard guard(st.mutex);
  st.retained.clear();
  st.retained_bytes = 0;
}

// Number of segments currently retained (for tests).
inline std::size_t retained_segment_count() {
  ShmState& st = shm_state();
  std::lock_guard guard(st.mutex);
  return st.retained.size();
}

// ------------------------------------------------------- named segments

// "/name" for "name" or "/name". Throws ProcessError if the name is empty,
// too long, or holds another '/' or a NUL.
inline std::string normalize_shm_name(std::string_view name) {
  std::string n = (!name.empty() && name.front() == '/') ? std::string(name) : "/" + std::string(name);
  const char* why = nullptr;
  if (n.size() < 2)
    why = "it is empty";
  else if (n.size() > NAME_MAX)
    why = "it is longer than NAME_MAX";
  else if (n.find('/', 1) != std::string::npos)
    why = "it contains '/' after the leading one";
  else if (n.find('\0') != std::string::npos)
    why = "it contains a NUL byte";
  if (why) throw ProcessError("mproc: invalid SharedMemory name '" + std::string(name) + "': " + why);
  return n;
}

// Creates the named segment `name` (normalized) of `size` bytes with
// shm_open(O_CREAT | O_EXCL), mode 0600, and maps it. Nothing unlinks it
// but SharedMemory::unlink(). Throws ProcessError if it exists already or
// cannot be created.
//
// Named segments cannot be sealed (only memfd files can): any process that
// can open the name can also resize the segment, and a process touching a
// page that a shrink removed dies of SIGBUS. mproc itself never touches a
// named segment's bytes, never accepts one through a handle (they travel by
// name) and maps one at the size it has when opened; share named segments
// only with processes trusted not to truncate them.
inline std::shared_ptr<Mapping> create_named_segment(const std::string& name, std::size_t size) {
  if (size == 0 || size > kMaxSegmentSize)
    throw ProcessError("mproc: cannot create SharedMemory '" + name + "' of " + std::to_string(size) +
                       " bytes: the size must be positive");
  UniqueFd fd(::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd) {
    const int err = errno;
    if (err == EEXIST) throw ProcessError("mproc: SharedMemory '" + name + "' already exists");
    throw_errno("cannot create SharedMemory '" + name + "'", err);
  }
  struct stat st{};
  if (::fchmod(fd.get(), 0600) < 0 || ::ftruncate(fd.get(), static_cast<off_t>(size)) < 0 ||
      ::fstat(fd.get(), &st) < 0) {
    const int err = errno;
    ::shm_unlink(name.c_str());
    throw_errno("cannot create SharedMemory '" + name + "' of " + std::to_string(size) + " bytes", err);
  }
  std::shared_ptr<Mapping> mapping;
  try {
    mapping = map_fd(std::move(fd), size, st, ::getpid(), -1, false, name, "SharedMemory '" + name + "'");
  } catch (...) {
    ::shm_unlink(name.c_str());
    throw;
  }
  ShmState& state = shm_state();
  std::lock_guard guard(state.mutex);
  register_mapping_locked(state, mapping);
  return mapping;
}

// Maps the existing named segment `name` (normalized) at its current size,
// reusing this process's mapping of it if there is one of that size. Throws
// ProcessError naming it if it does not exist, is empty or not a regular
// file, or cannot be opened.
inline std::shared_ptr<Mapping> open_named_segment(const std::string& name) {
  UniqueFd fd(::shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0));
  if (!fd) {
    const int err = errno;
    if (err == ENOENT) throw ProcessError("mproc: SharedMemory '" + name + "' does not exist");
    throw_errno("cannot open SharedMemory '" + name + "'", err);
  }
  struct stat st{};
  if (::fstat(fd.get(), &st) < 0) throw_errno("fstat of SharedMemory '" + name + "'");
  if (!S_ISREG(st.st_mode)) throw ProcessError("mproc: SharedMemory '" + name + "' is not a shared memory block");
  if (st.st_size <= 0) throw ProcessError("mproc: SharedMemory '" + name + "' is empty (size 0)");
  const auto size = static_cast<std::size_t>(st.st_size);
  ShmState& state = shm_state();
  std::lock_guard guard(state.mutex);
  if (auto it = state.registry.find({static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)});
      it != state.registry.end()) {
    if (auto mapping = it->second.lock(); mapping && mapping->size() == size) return mapping;
  }
  auto mapping = map_fd(std::move(fd), size, st, ::getpid(), -1, false, name, "SharedMemory '" + name + "'");
  register_mapping_locked(state, mapping);
  return mapping;
}

// ---------------------------------------------------------- arena blocks

// A block handed out by the arena: `size` bytes at `offset` of `chunk`.
struct ArenaBlock {
  std::shared_ptr<ArenaChunk> chunk;
  std::size_t offset = 0;
  std::size_t size = 0;
};

inline std::size_t arena_class_of(std::size_t n) noexcept {
  std::size_t c = 0;
  while ((kArenaMinBlock << c) < n) ++c;
  return c;
}

// Allocates a zero-filled, 64-byte-aligned block of at least `n` bytes
// (n <= kArenaMaxBlock) from this process's arena. Thread-safe. Throws
// ProcessError if a new chunk cannot be created.
inline ArenaBlock arena_allocate(std::size_t n) {
  const std::size_t cls = arena_class_of(n == 0 ? 1 : n);
  const std::size_t block = kArenaMinBlock << cls;
  ShmState& st = shm_state();
  std::unique_lock guard(st.mutex);
  for (auto& chunk : st.chunks) {
    auto& list = chunk->free_blocks[cls];
    if (!list.empty()) {
      const std::size_t offset = list.back();
      list.pop_back();
      ++chunk->live;
      std::memset(chunk->mapping->data() + offset, 0, block);
      return {chunk, offset, block};
    }
  }
  for (auto& chunk : st.chunks) {
    const std::size_t offset = (chunk->bump + block - 1) / block * block;  // natural alignment
    if (offset + block <= chunk->mapping->size()) {
      chunk->bump = offset + block;
      ++chunk->live;
      return {chunk, offset, block};  // never used: still zero
    }
  }
  guard.unlock();  // create_segment takes the mutex itself
  auto chunk = std::make_shared<ArenaChunk>();
  chunk->mapping = create_segment(kArenaChunkSize, "mproc:arena");
  chunk->bump = block;
  chunk->live = 1;
  guard.lock();
  st.chunks.push_back(chunk);
  return {std::move(chunk), 0, block};
}

// Returns a block to the arena. An emptied chunk is released unless it is
// the last one. Blocks of chunks inherited through fork() are never reused.
// Thread-safe, noexcept.
inline void arena_free(ArenaBlock& b) noexcept {
  if (!b.chunk) return;
  std::shared_ptr<ArenaChunk> chunk = std::move(b.chunk);  // dropped after unlocking
  ShmState& st = shm_state();
  std::lock_guard guard(st.mutex);
  if (chunk->inherited) return;
  try {
    chunk->free_blocks[arena_class_of(b.size)].push_back(static_cast<std::uint32_t>(b.offset));
  } catch (...) {
    return;  // out of memory: leak the block rather than fail a destructor
  }
  if (--chunk->live == 0 && st.chunks.size() > 1) {
    auto it = std::find(st.chunks.begin(), st.chunks.end(), chunk);
    if (it != st.chunks.end()) st.chunks.erase(it);
  }
}

}  // namespace mproc::detail
