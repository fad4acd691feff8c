// SharedMemory: a block of raw bytes shared between processes (Python:
// multiprocessing.shared_memory.SharedMemory).
//
// Anonymous blocks (SharedMemory(size)) are memfd files, mode 0600: nothing
// appears in /dev/shm, and the memory is freed when the last process
// mapping it lets go, even after a crash. They reach other processes by
// fork() or as a handle through a Pipe/Queue (the creator must be alive
// when the receiver opens it). Their size is sealed: no process, creator
// included, can shrink one under another's mapping.
//
// Named blocks (SharedMemory(name, true, size)) are POSIX shared memory
// (shm_open, mode 0600) that any process of the same user can attach by
// name. As in Python, they outlive their creator until someone calls
// unlink(): the creator's destructor does not unlink. They cannot be
// sealed: any process able to open the name can truncate the block, and
// then a process touching the lost part of buf() dies of SIGBUS. Attach
// maps the size the block has at that moment; share named blocks only with
// processes you trust not to resize them, and use anonymous blocks
// otherwise.
//
// Copies are handles to the same mapping.
// SPDX-License-Identifier: MIT
#pragma once

#include <cerrno>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include <sys/mman.h>

#include <mproc/detail/shm/handle_serialize.hpp>
#include <mproc/detail/shm/segment.hpp>
#include <mproc/errors.hpp>

namespace mproc {

class SharedMemory {
 public:
  // Creates an anonymous zero-filled block of `size` (> 0) bytes.
  // Non-blocking. Throws ProcessError (size 0, out of memory or descriptors).
  explicit SharedMemory(std::size_t size) {
    if (size == 0) throw ProcessError("mproc: SharedMemory(0): the size must be positive");
    mapping_ = detail::create_segment(size, "mproc:SharedMemory");
    length_ = size;
  }

  // Attaches the named block `name` (create = false; `size` is ignored and
  // the block's own size is used), or creates it with `size` (> 0) bytes,
  // zero-filled, mode 0600 (create = true). A leading '/' is optional.
  // Throws ProcessError naming the block if it does not exist (attach) or
  // already exists (create), or if the name or size is invalid.
  explicit SharedMemory(std::string_view name, bool create = false, std::size_t size = 0)
      : name_(detail::normalize_shm_name(name)) {
    mapping_ = create ? detail::create_named_segment(name_, size) : detail::open_named_segment(name_);
    length_ = mapping_->size();
  }

  SharedMemory(const SharedMemory&) = default;
  SharedMemory& operator=(const SharedMemory&) = default;

  // The shared bytes (empty after close()). Thread-safe; the caller
  // synchronizes access to the contents.
  std::span<std::byte> buf() const noexcept {
    return mapping_ ? std::span<std::byte>(mapping_->data() + offset_, length_) : std::span<std::byte>();
  }
  // Size in bytes (0 after close()).
  std::size_t size() const noexcept { return mapping_ ? length_ : 0; }
  // The name without its leading '/' (as Python reports it); empty for an
  // anonymous block.
  std::string name() const { return name_.empty() ? std::string() : name_.substr(1); }
  // Whether this is a named (shm_open) block.
  bool named() const noexcept { return !name_.empty(); }

  // Drops this object's access to the block (Python: close()); other
  // copies and processes are unaffected, and the memory is unmapped when
  // the last copy in this process lets go. Idempotent, noexcept.
  void close() noexcept { mapping_.reset(); }

  // Removes the name of a named block so no one else can attach it; the
  // memory lives on while mapped. Throws ProcessError if the name no longer
  // exists. No-op for an anonymous block (it has no name to leak).
  void unlink() const {
    if (name_.empty()) return;
    if (::shm_unlink(name_.c_str()) < 0) {
      const int err = errno;
      if (err == ENOENT)
        throw ProcessError("mproc: SharedMemory '" + name() + "'.unlink(): it does not exist (already unlinked?)");
      detail::throw_errno("SharedMemory '" + name() + "'.unlink()", err);
    }
  }

  // The handle of an anonymous block (named blocks travel by name).
  // Throws ProcessError for a named or closed block.
  detail::ShmHandle handle() const {
    if (named()) throw ProcessError("mproc: SharedMemory '" + name() + "' is named: pass its name, not a handle");
    if (!mapping_) throw ProcessError("mproc: SharedMemory.handle(): the block was closed");
    return mapping_->handle(detail::ShmKind::shared_memory, offset_, length_);
  }
  // The anonymous block a handle from another process describes.
  // Non-blocking; thread-safe. Throws ProcessError if the handle is
  // malformed, names anything but a sealed anonymous segment of the size it
  // states, or its creator is gone.
  static SharedMemory from_handle(const detail::ShmHandle& h) {
    if (h.kind != static_cast<std::uint16_t>(detail::ShmKind::shared_memory))
      throw ProcessError(std::string("mproc: invalid handle for SharedMemory: it describes a ") +
                         detail::shm_kind_name(static_cast<detail::ShmKind>(h.kind)));
    if (h.length == 0) throw ProcessError("mproc: invalid handle for SharedMemory: length 0");
    return SharedMemory(detail::open_segment(h, "SharedMemory"), static_cast<std::size_t>(h.offset),
                        static_cast<std::size_t>(h.length));
  }

 private:
  SharedMemory(std::shared_ptr<detail::Mapping> mapping, std::size_t offset, std::size_t length) noexcept
      : mapping_(std::move(mapping)), offset_(offset), length_(length) {}

  std::shared_ptr<detail::Mapping> mapping_;
  std::size_t offset_ = 0;
  std::size_t length_ = 0;
  std::string name_;  // "/name" for a named block
};

// A SharedMemory crosses processes (Pipe, Queue, Pool arguments) as a
// handle (anonymous) or its name (named); the receiver maps the same block.
// Reading throws ProcessError if the block is gone or the bytes are bad.
template <>
struct serializer<SharedMemory> {
  static constexpr std::size_t min_size = 1;
  static void write(Writer& w, const SharedMemory& shm) {
    const std::uint8_t named = shm.named() ? 1 : 0;
    w.write_bytes(&named, 1);
    if (named)
      w.write(shm.name());
    else
      detail::write_shm_handle(w, shm.handle());
  }
  static SharedMemory read(Reader& r) {
    std::uint8_t named = 0;
    r.read_bytes(&named, 1, "mproc::SharedMemory");
    if (named > 1) throw ProcessError("mproc: invalid SharedMemory in frame: bad kind byte " + std::to_string(named));
    if (named) return SharedMemory(r.read<std::string>());
    return SharedMemory::from_handle(detail::read_shm_handle(r, "mproc::SharedMemory"));
  }
};

}  // namespace mproc
