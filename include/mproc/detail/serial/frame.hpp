// Serialization machinery, layer 6: the frame around one value. The header
// (magic "MPRC", format version, type fingerprint, payload size) and its
// validation, the wire type that fingerprints are computed from (a view
// travels as its owning type; allocators do not matter) and the member
// types that aggregates add to them, and decode_frame,
// the decoder behind mp::loads without its owning check.
// Part of <mproc/serialize.hpp>, which includes it after its declarations
// (serializer, serializable, Writer/Reader); not a header of its own.
// SPDX-License-Identifier: MIT
#pragma once

#ifndef MPROC_DETAIL_SERIALIZE_DECLARED
#error "mproc/detail/serial/*.hpp are parts of <mproc/serialize.hpp>: include that instead"
#endif

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <mproc/detail/util/type_name.hpp>
#include <mproc/errors.hpp>

namespace mproc {

namespace detail {

// The type a value travels as, for fingerprints: views travel as the owning
// type (a std::vector<double> frame loads as std::span<const double>), and
// allocators do not matter.
template <class T>
struct wire {
  using type = T;
};
template <class T>
using wire_t = typename wire<std::remove_cv_t<T>>::type;
template <class T, std::size_t E>
struct wire<std::span<T, E>> {
  using type = std::vector<wire_t<T>>;
};
template <class C, class Tr>
struct wire<std::basic_string_view<C, Tr>> {
  using type = std::basic_string<C, Tr>;
};
template <class C, class Tr, class A>
struct wire<std::basic_string<C, Tr, A>> {
  using type = std::basic_string<C, Tr>;
};
template <class T, class A>
struct wire<std::vector<T, A>> {
  using type = std::vector<wire_t<T>>;
};
template <class T, std::size_t N>
struct wire<std::array<T, N>> {
  using type = std::array<wire_t<T>, N>;
};
template <class T>
struct wire<std::optional<T>> {
  using type = std::optional<wire_t<T>>;
};
template <class A, class B>
struct wire<std::pair<A, B>> {
  using type = std::pair<wire_t<A>, wire_t<B>>;
};
template <class... T>
struct wire<std::tuple<T...>> {
  using type = std::tuple<wire_t<T>...>;
};
template <class... T>
struct wire<std::variant<T...>> {
  using type = std::variant<wire_t<T>...>;
};

// Mixes x into the hash h; x == 0 (nothing to add) leaves h as it is.
constexpr std::uint64_t mix_hash(std::uint64_t h, std::uint64_t x) noexcept {
  return x == 0 ? h : ((h ^ x) * 1099511628211ull) ^ (x >> 29);
}

// What the name of T does not say about its encoding: a hash of the member
// types of the aggregates in T sent member by member (kind::aggregate, also
// inside containers, optionals, tuples, variants), or 0 when there is none.
// Two such structs of the same name and different members (each in an
// anonymous namespace of its own translation unit) then have different
// fingerprints; every other type keeps the hash of its name alone.
template <class T>
constexpr std::uint64_t members_hash() noexcept {
  using U = std::remove_cv_t<T>;
  if constexpr (!serializable<U> || !is_builtin_v<U>) {
    return 0;  // a user serializer decides; its type's name identifies it
  } else if constexpr (kind_of<U>() == kind::aggregate) {
    return []<class... M>(member_list<void, M...>) {
      std::uint64_t h = fnv1a("aggregate");
      ((h = mix_hash(h, type_fingerprint<M>())), ...);
      return h;
    }(member_types_t<U, aggregate_members<U>()>{});
  } else if constexpr (kind_of<U>() == kind::variant || kind_of<U>() == kind::tuple) {
    return []<template <class...> class Tm, class... Ts>(std::type_identity<Tm<Ts...>>) {
      std::uint64_t h = 0;
      ((h = mix_hash(h, members_hash<Ts>())), ...);
      return h;
    }(std::type_identity<U>{});
  } else if constexpr (kind_of<U>() == kind::associative && map_like<U>) {
    return mix_hash(members_hash<typename U::key_type>(), members_hash<typename U::mapped_type>());
  } else if constexpr (kind_of<U>() == kind::optional || kind_of<U>() == kind::fixed_array ||
                       kind_of<U>() == kind::sequence || kind_of<U>() == kind::associative) {
    return members_hash<typename U::value_type>();
  } else {
    return 0;  // bitwise, contiguous, views, empty: no aggregate sent member by member
  }
}

inline constexpr std::uint32_t frame_magic = 0x4352504D;  // "MPRC" in memory
inline constexpr std::uint16_t frame_version = 2;  // 2: empty values take one byte

inline std::string hex(std::uint64_t v) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string s = "0x";
  bool started = false;
  for (int shift = 60; shift >= 0; shift -= 4) {
    const auto d = static_cast<unsigned>((v >> shift) & 0xF);
    if (d != 0 || started || shift == 0) {
      s += digits[d];
      started = true;
    }
  }
  return s;
}

struct frame_header {
  std::uint32_t magic;
  std::uint16_t version;
  std::uint16_t flags;
  std::uint64_t fingerprint;
  std::uint64_t payload_size;
};

// Validates magic, version and flags; returns the header fields.
inline frame_header parse_frame_header(std::span<const std::byte> frame) {
  frame_header h{};
  if (frame.size() >= sizeof h.magic) {
    std::memcpy(&h.magic, frame.data(), sizeof h.magic);
    if (h.magic != frame_magic) throw ProcessError("mproc: not an mproc frame (bad magic " + hex(h.magic) + ")");
  }
  if (frame.size() < frame_header_size)
    throw ProcessError("mproc: truncated frame: need " + std::to_string(frame_header_size) +
                       " bytes for the frame header, " + std::to_string(frame.size()) + " left");
  std::memcpy(&h.version, frame.data() + 4, sizeof h.version);
  std::memcpy(&h.flags, frame.data() + 6, sizeof h.flags);
  std::memcpy(&h.fingerprint, frame.data() + 8, sizeof h.fingerprint);
  std::memcpy(&h.payload_size, frame.data() + 16, sizeof h.payload_size);
  if (h.version != frame_version)
    throw ProcessError("mproc: unsupported version " + std::to_string(h.version) +
                       " of the mproc frame format (this build reads version " + std::to_string(frame_version) + ")");
  if (h.flags != 0) throw ProcessError("mproc: unsupported mproc frame flags " + hex(h.flags));
  if (h.payload_size > std::numeric_limits<std::size_t>::max() / 2)
    throw ProcessError("mproc: corrupted frame: payload size " + std::to_string(h.payload_size) + " is impossible");
  return h;
}

// loads<T> without the owning check: a view type points into `frame`. For
// the decoder's own tests and fuzzing.
template <class T>
T decode_frame(std::span<const std::byte> frame) {
  using U = std::remove_cv_t<T>;
  static_assert(assert_serializable<U>());
  const frame_header h = parse_frame_header(frame);
  if (h.fingerprint != type_fingerprint<U>())
    throw ProcessError("mproc: type mismatch: expected a frame of " + readable_type_name(type_name_v<U>) +
                       " (fingerprint " + hex(type_fingerprint<U>()) + "), got a frame of another type (fingerprint " +
                       hex(h.fingerprint) + ")");
  const std::size_t available = frame.size() - frame_header_size;
  if (h.payload_size > available)
    throw ProcessError("mproc: truncated frame: the header announces " + std::to_string(h.payload_size) +
                       " payload bytes, " + std::to_string(available) + " present");
  if (h.payload_size < available)
    throw ProcessError("mproc: corrupted frame: " + std::to_string(available - h.payload_size) +
                       " trailing bytes after the " + std::to_string(h.payload_size) + "-byte payload");
  Reader r(frame);
  r.read_span(frame_header_size);
  U value = r.read<U>();
  if (r.remaining() != 0)
    r.fail(std::to_string(r.remaining()) + " bytes left over after decoding " + readable_type_name(type_name_v<U>));
  return value;
}

}  // namespace detail

}  // namespace mproc
