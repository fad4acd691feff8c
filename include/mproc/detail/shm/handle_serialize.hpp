// How shared objects cross a process boundary through serialize.hpp: as
// their ShmHandle, never as a copy of their contents. The receiver maps the
// same memory (see open_segment for the rules and errors); a task's
// largest block is noted for the Pool's locality (LocalityProbe).
// SPDX-License-Identifier: MIT
#pragma once

#include <cstdint>
#include <string_view>

#include <mproc/detail/shm/segment.hpp>
#include <mproc/serialize.hpp>

namespace mproc::detail {

// While a LocalityProbe lives on a thread, it records the largest shared
// block written there: the Pool encodes each task under one, and sends the
// task where that block is mapped already (detail/pool/affinity.hpp).
// Probes nest; a thread's innermost one records.
class LocalityProbe {
 public:
  LocalityProbe() noexcept : outer_(current_) { current_ = this; }
  ~LocalityProbe() { current_ = outer_; }
  LocalityProbe(const LocalityProbe&) = delete;
  LocalityProbe& operator=(const LocalityProbe&) = delete;

  // The largest block's key (never 0) and size, or 0 and 0 if none was written.
  std::uint64_t key() const noexcept { return key_; }
  std::uint64_t bytes() const noexcept { return bytes_; }

  static void record(const ShmHandle& h) noexcept {
    LocalityProbe* p = current_;
    if (p == nullptr || h.length <= p->bytes_) return;
    p->bytes_ = h.length;
    const std::uint64_t key = (h.ino * 0x9E3779B97F4A7C15ULL) ^ h.dev;  // one segment, one key
    p->key_ = key != 0 ? key : 1;
  }

 private:
  static inline thread_local LocalityProbe* current_ = nullptr;
  LocalityProbe* outer_;
  std::uint64_t key_ = 0;
  std::uint64_t bytes_ = 0;
};

inline void write_shm_handle(Writer& w, const ShmHandle& h) {
  LocalityProbe::record(h);
  w.write_bytes(&h, sizeof h);
}

// Reads a handle; throws ProcessError naming `what` if the frame is short.
inline ShmHandle read_shm_handle(Reader& r, std::string_view what) {
  ShmHandle h;
  r.read_bytes(&h, sizeof h, what);
  return h;
}

// serializer<T> for a shared object T with handle() and from_handle().
// read() throws ProcessError when the handle is malformed, the object's
// creator is gone, or it is not a T.
template <class T>
struct handle_serializer {
  static constexpr std::size_t min_size = sizeof(ShmHandle);
  static void write(Writer& w, const T& object) { write_shm_handle(w, object.handle()); }
  static T read(Reader& r) { return T::from_handle(read_shm_handle(r, type_name_v<T>)); }
};

}  // namespace mproc::detail
