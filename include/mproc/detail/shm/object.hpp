// Shared objects (locks, Values, Arrays, ...) as blocks of shared memory:
// a self-describing header followed by the object's state, allocated from
// the arena (small) or a segment of its own (large), and re-opened in
// another process from a ShmHandle with the header checked.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include <mproc/detail/shm/segment.hpp>
#include <mproc/detail/util/type_name.hpp>
#include <mproc/errors.hpp>

namespace mproc::detail {

// First bytes of every shared object. Written once by the creator; read
// (and distrusted) by receivers.
struct ObjectHeader {
  static constexpr std::uint32_t kMagic = 0x626f706du;  // "mpob"
  std::uint32_t magic;
  std::uint16_t kind;       // ShmKind
  std::uint16_t reserved;
  std::uint64_t type_hash;  // element_fingerprint<T>() of the element type; 0 for sync objects
  std::uint32_t elem_size;
  std::uint32_t elem_align;
  std::uint64_t count;      // number of elements (1 for a Value)
};
static_assert(sizeof(ObjectHeader) == 32);

// Where an object's own state starts in its block.
inline constexpr std::size_t kObjectStateOffset = sizeof(ObjectHeader);
// Where the lock of a Value or Array lies in its block: a sub-object with a
// header of its own (so it can be handed out alone), on the cache line
// that also starts the data.
inline constexpr std::size_t kEmbeddedLockOffset = 64;

// Writes a header at `where`.
inline void write_header(std::byte* where, ShmKind kind, std::uint64_t type_hash = 0, std::uint32_t elem_size = 0,
                         std::uint32_t elem_align = 0, std::uint64_t count = 0) noexcept {
  const ObjectHeader header{
      ObjectHeader::kMagic, static_cast<std::uint16_t>(kind), 0, type_hash, elem_size, elem_align, count};
  std::memcpy(where, &header, sizeof header);
}

// A fingerprint of T that is identical in every process running the same
// program: the hash of the compiler's spelling of T, mixed with its size
// and alignment. Needs no RTTI.
template <class T>
constexpr std::uint64_t element_fingerprint() noexcept {
  const std::uint64_t h = fnv1a(type_name_v<T>) ^ (std::uint64_t{sizeof(T)} << 32) ^ std::uint64_t{alignof(T)};
  return h == 0 ? 1 : h;
}

constexpr std::size_t round_up(std::size_t n, std::size_t align) noexcept { return (n + align - 1) / align * align; }

// The shared memory of one object, as seen by this process: either a block
// of this process's arena (returned to it on destruction) or a range of a
// mapping (a large object's own segment, or an object received by handle).
class ShmBlock {
 public:
  explicit ShmBlock(ArenaBlock block) noexcept
      : mapping_(block.chunk->mapping), offset_(block.offset), length_(block.size), arena_(std::move(block)) {}
  ShmBlock(std::shared_ptr<Mapping> mapping, std::size_t offset, std::size_t length) noexcept
      : mapping_(std::move(mapping)), offset_(offset), length_(length) {}
  ShmBlock(const ShmBlock&) = delete;
  ShmBlock& operator=(const ShmBlock&) = delete;
  ~ShmBlock() { arena_free(arena_); }

  std::byte* data() const noexcept { return mapping_->data() + offset_; }
  std::size_t length() const noexcept { return length_; }
  const std::shared_ptr<Mapping>& mapping() const noexcept { return mapping_; }
  ShmHandle handle(ShmKind kind) const noexcept { return mapping_->handle(kind, offset_, length_); }
  // A handle for a sub-object `length` bytes at `sub_offset` of this block.
  ShmHandle handle(ShmKind kind, std::size_t sub_offset, std::size_t length) const noexcept {
    return mapping_->handle(kind, offset_ + sub_offset, length);
  }

 private:
  std::shared_ptr<Mapping> mapping_;
  std::size_t offset_;
  std::size_t length_;
  ArenaBlock arena_;
};

// Allocates a zero-filled block for an object of `kind` whose state takes
// `state_size` bytes from `state_offset` on, aligned to `state_align`, and writes
// the header. Small objects come from the arena, large ones (or ones aligned
// beyond a cache line) get a segment of their own. Thread-safe. Throws
// ProcessError when out of memory or descriptors.
inline std::shared_ptr<ShmBlock> allocate_object(ShmKind kind, std::size_t state_offset, std::size_t state_size,
                                                 std::size_t state_align, std::uint64_t type_hash = 0,
                                                 std::uint32_t elem_size = 0, std::uint32_t elem_align = 0,
                                                 std::uint64_t count = 0) {
  if (state_size > kMaxSegmentSize)
    throw ProcessError(std::string("mproc: cannot create a ") + shm_kind_name(kind) + " of " +
                       std::to_string(state_size) + " bytes: too large");
  const std::size_t total = round_up(state_offset, state_align) + state_size;
  std::shared_ptr<ShmBlock> block;
  if (total <= kArenaMaxBlock && state_align <= kArenaMinBlock) {
    block = std::make_shared<ShmBlock>(arena_allocate(total));
  } else {
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    block = std::make_shared<ShmBlock>(create_segment(round_up(total, page), "mproc:object"), 0, total);
  }
  write_header(block->data(), kind, type_hash, elem_size, elem_align, count);
  return block;
}

// Opens the object a received handle describes and checks that it is a
// `kind` object whose block holds at least `min_length` bytes. Returns the
// block and a private copy of its header (the shared one may change under
// us: callers validate and use the copy). Thread-safe. Throws ProcessError
// naming the object and the fault.
inline std::pair<std::shared_ptr<ShmBlock>, ObjectHeader> open_object(const ShmHandle& h, ShmKind kind,
                                                                      std::size_t min_length) {
  const std::string what = shm_kind_name(kind);
  if (h.kind != static_cast<std::uint16_t>(kind))
    throw ProcessError("mproc: invalid handle for " + what + ": it describes a " +
                       shm_kind_name(static_cast<ShmKind>(h.kind)));
  if (h.offset % kArenaMinBlock != 0)
    throw ProcessError("mproc: invalid handle for " + what + ": misaligned offset " + std::to_string(h.offset));
  if (h.length < kObjectStateOffset || h.length < min_length)
    throw ProcessError("mproc: invalid handle for " + what + ": length " + std::to_string(h.length) + " is too small");
  auto block = std::make_shared<ShmBlock>(open_segment(h, what), static_cast<std::size_t>(h.offset),
                                          static_cast<std::size_t>(h.length));
  ObjectHeader header;
  std::memcpy(&header, block->data(), sizeof header);
  if (header.magic != ObjectHeader::kMagic || header.kind != static_cast<std::uint16_t>(kind))
    throw ProcessError("mproc: invalid handle for " + what + ": no " + what + " at offset " + std::to_string(h.offset) +
                       " of the segment");
  return {std::move(block), header};
}

}  // namespace mproc::detail
