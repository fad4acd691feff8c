// How shared objects cross a process boundary through serialize.hpp: as
// their ShmHandle, never as a copy of their contents. The receiver maps the
// same memory (see open_segment for the rules and errors).
// SPDX-License-Identifier: MIT
#pragma once

#include <string_view>

#include <mproc/detail/shm/segment.hpp>
#include <mproc/serialize.hpp>

namespace mproc::detail {

inline void write_shm_handle(Writer& w, const ShmHandle& h) { w.write_bytes(&h, sizeof h); }

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
