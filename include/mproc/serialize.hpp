// Serialization: how values cross a process boundary (Pipe/Connection, Queue,
// the process Pool's arguments and results). mproc's answer to pickle.
//
//   std::vector<std::byte> frame = mp::dumps(value);      // one framed message
//   auto copy = mp::loads<std::vector<double>>(frame);    // checks type and bounds
//
// Built in: arithmetic types, enums, std::byte, trivially copyable structs
// (copied bitwise), other aggregates (plain structs: member by member, see
// below), std::string, std::vector (incl. vector<bool>), std::array,
// std::deque, std::list, std::pair, std::tuple, std::optional, std::variant,
// std::map/set/multimap/multiset/unordered_*, std::chrono::duration,
// std::monostate, nested freely. Any container with the same shape also
// works (std::pmr, Boost.Container). Contiguous trivially copyable data moves
// as one memcpy (no per-element work).
//
// What points into the sender's memory does not cross:
//   - Pointers, references, std::function, smart pointers and other types
//     without a serialization are a compile error (static_assert) that says so,
//     also inside containers, tuples, optionals and variants.
//   - A trivially copyable aggregate (a plain struct) is copied bitwise only if
//     none of its members, recursively, is a pointer, a reference or a view:
//     its members are inspected through aggregate initialization, without
//     naming them. One with such a member is a compile error naming the struct
//     and the member's type. An aggregate taking more than 256 initializers
//     (each element of a C array member counts; use std::array for large
//     arrays) cannot be inspected and is a compile error too. Trivially
//     copyable classes that are not aggregates (private members,
//     constructors) and unions cannot be inspected: they are sent bitwise and
//     their author answers for what they hold.
//   - Views, std::span<const T> and std::string_view, are written like the
//     owning std::vector<T>/std::string (their contents are copied). Decoded,
//     they point into the bytes received, so they are read only where the
//     value cannot outlive those bytes: as a Pool task's parameters (valid
//     during the call) or by Reader::read in a serializer. mp::loads,
//     Connection::recv, Queue items and Pool results of a type holding a
//     view (see owning_decodable) are a compile error saying which owning
//     type to receive instead.
//
// A plain struct that is not trivially copyable, struct Sample { std::string
// path; std::vector<float> x; int label; }, needs nothing, like a pickled
// object: its members are written in declaration order, reached through
// structured bindings (their number found at compile time), and read back by
// aggregate initialization from the decoded members (no default constructor
// needed). Up to 64 members, none of them a pointer, reference, view or
// union, nor a C array (use std::array), and no base class: otherwise a
// compile error names the reason. A recursive struct (holding a
// std::vector of itself) needs a serializer. The fingerprint of such a
// struct includes its member types.
//
// Any other type of your own (private members, constructors, base classes):
// specialize the one customization point, mproc::serializer<T>, at global
// namespace scope, before first use. It takes precedence over the built-in
// paths, also for a plain struct:
//
//   class Sample { public: ...  private: std::string label; std::vector<float> features; };
//   template <>
//   struct mproc::serializer<Sample> {
//     static void write(mproc::Writer& w, const Sample& s) {
//       w.write(s.label);
//       w.write(s.features);
//     }
//     static Sample read(mproc::Reader& r) {  // throws ProcessError on bad data
//       Sample s;
//       s.label = r.read<std::string>();
//       s.features = r.read<std::vector<float>>();
//       return s;
//     }
//   };
//
// or, the same generated for you:  MPROC_SERIALIZE(Sample, label, features);
// (with `friend struct mproc::serializer<Sample>;` in a class with private
// members; see MPROC_SERIALIZE at the end of this file for namespaces).
//
// A specialization may also declare
//   static constexpr bool zero_copy = true;   // write() passes only parts of `value`
//                                             // (no temporaries) to the Writer
//   static constexpr std::size_t min_size = N; // every encoding has >= N bytes
//   static constexpr bool borrows_input = true; // read() returns a value that
//                                             // points into the Reader's bytes
// The first lets gather-mode writers reference large members in place; the
// second tightens the bound checks of containers of T; the third makes T a
// view type (see owning_decodable). MPROC_SERIALIZE sets zero_copy and
// derives min_size and borrows_input from the members.
//
// Wire format (one program image talks to itself, so byte order and type
// layout are the machine's own; little-endian on every supported platform):
// integers at fixed width, sizes as 64-bit, a frame header {magic "MPRC",
// format version, type_fingerprint<T>(), payload size} of frame_header_size
// bytes, then the payload. Every value takes at least one byte: std::tuple<>,
// std::array<T, 0> and std::monostate are one zero byte, and a user type whose
// serializer writes nothing is followed by one zero byte. Contiguous blocks of
// trivially copyable T are padded with zero bytes to alignof(T) relative to
// the frame start, so a frame that starts 16-byte aligned can be viewed in
// place.
//
// Untrusted input: bytes from another process are checked before use. Every
// read is bounds-checked, bool/optional flags and variant indices are
// validated, duplicate keys in unique-key containers are rejected, nesting of
// user types is bounded (Reader::max_depth), and any failure throws
// ProcessError naming the type and the fault. Allocation is bounded by the
// bytes received: no value is constructed before the minimum bytes of its
// encoding are there (so a 1-byte frame never builds a 4 KiB object), an
// element count is checked against the bytes that remain, minus those the
// elements still to come of the enclosing containers need (so nested
// containers cannot claim the same bytes twice), and capacity reserved ahead
// is at most 16 times those bytes. What cannot be checked: the raw value of
// an enum (an unscoped enum without a fixed underlying type holding a value
// outside its range is undefined behaviour: prefer `enum class`), a bool or
// enum member of a bitwise-copied struct (copied as is), and hash flooding of
// unordered containers.
//
// Where things are: this file holds the public interface; the machinery is
// in mproc/detail/serial/, in layers: members.hpp (an aggregate's members
// by structured binding), traits.hpp (kinds of types,
// aggregate inspection), user_types.hpp (what a serializer may declare, MPROC_SERIALIZE's
// loop), checks.hpp (compile-time checks and their messages), core.hpp
// (Writer, Reader), std_types.hpp (built-in serializers), frame.hpp (frame
// header, decoding).
// SPDX-License-Identifier: MIT
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include <mproc/detail/util/type_name.hpp>
#include <mproc/errors.hpp>

namespace mproc {

class Writer;
class Reader;

// THE customization point: how a T is written and read. Specialize it for your
// own types (see the top of this file); the primary template provides the
// built-in types and nothing else.
template <class T, class Enable = void>
struct serializer;

// True when T can cross a process boundary: a built-in type, or a type with a
// serializer<T> specialization providing write() and read(). cv-qualifiers
// are ignored; references are never serializable.
template <class T>
concept serializable = !std::is_reference_v<T> && requires(Writer& w, Reader& r, const std::remove_cv_t<T>& value) {
  serializer<std::remove_cv_t<T>>::write(w, value);
  { serializer<std::remove_cv_t<T>>::read(r) } -> std::same_as<std::remove_cv_t<T>>;
};

// Size of the header that starts every frame.
inline constexpr std::size_t frame_header_size = 24;

// Default threshold of gather-mode writers: contiguous blocks at least this
// large are referenced in place instead of copied.
inline constexpr std::size_t default_gather_threshold = 16 * 1024;

template <class T>
constexpr std::uint64_t type_fingerprint() noexcept;

}  // namespace mproc

// The machinery, in layers (each part needs the declarations above).
// Their order matters: clang-format must not sort them.
#define MPROC_DETAIL_SERIALIZE_DECLARED
// clang-format off
#include <mproc/detail/serial/members.hpp>
#include <mproc/detail/serial/traits.hpp>
#include <mproc/detail/serial/user_types.hpp>
#include <mproc/detail/serial/checks.hpp>
#include <mproc/detail/serial/core.hpp>
#include <mproc/detail/serial/std_types.hpp>
#include <mproc/detail/serial/frame.hpp>
// clang-format on

namespace mproc {

// The primary template: the built-in types (see the top of this file). A
// type that is not built in has neither write() nor read() here, so it is not
// serializable.
template <class T, class Enable>
struct serializer : detail::builtin_serializer<T> {};

// True when T is serializable and decoding it yields a value that owns all
// its data: no std::string_view or std::span<const U> in it, which would point
// into the bytes received. Only such types can be received where the value
// outlives those bytes: mp::loads, Connection::recv, Queue items, Pool
// results. (Views remain fine as Pool task parameters, decoded in place for
// the duration of the call.)
template <class T>
concept owning_decodable = serializable<T> && !detail::borrows_input<T>();

// A 64-bit hash of T's name, stable within one program image: the frame's
// type check. A view and its owning type share it (std::span<const double>
// and std::vector<double>, std::string_view and std::string), as do
// containers that differ only in their allocator. An aggregate sent member
// by member adds its member types (also inside containers), so that two
// structs of one name with different members differ. Distinct types get
// distinct fingerprints in practice. Never throws.
template <class T>
constexpr std::uint64_t type_fingerprint() noexcept {
  using W = detail::wire_t<std::remove_cvref_t<T>>;
  return detail::mix_hash(detail::fnv1a(detail::type_name_v<W>), detail::members_hash<W>());
}

// Writes one frame holding `value` (header, payload) to `w`. Alignment inside
// the payload is relative to the frame start. Throws what `w` throws
// (ProcessError for a full span sink) or a serializer throws.
template <class T>
void write_frame(Writer& w, const T& value) {
  using U = std::remove_cvref_t<T>;
  static_assert(detail::assert_serializable<U>());
  const std::size_t start = w.size();
  const std::size_t saved_origin = detail::writer_access::origin(w);
  detail::writer_access::set_origin(w, start);
  std::array<std::byte, frame_header_size> header{};
  const std::uint32_t magic = detail::frame_magic;
  const std::uint16_t version = detail::frame_version;
  const std::uint64_t fingerprint = type_fingerprint<U>();
  std::memcpy(header.data(), &magic, 4);
  std::memcpy(header.data() + 4, &version, 2);
  std::memcpy(header.data() + 8, &fingerprint, 8);
  w.write_bytes(header.data(), header.size());
  try {
    w.write(value);
  } catch (...) {
    detail::writer_access::set_origin(w, saved_origin);
    throw;
  }
  detail::writer_access::set_origin(w, saved_origin);
  const std::uint64_t payload = w.size() - start - frame_header_size;
  detail::writer_access::overwrite(w, start + 16, &payload, sizeof payload);
}

// A temporary is always copied, never referenced by a gather writer.
template <class T>
void write_frame(Writer& w, const T&& value) {
  detail::writer_access::no_borrow guard(w);
  write_frame(w, static_cast<const T&>(value));
}

// Validates the header at the start of `header` (at least frame_header_size
// bytes: magic, version) and returns the size of the whole frame, header
// included, so a reader of a byte stream knows how much to read. Throws
// ProcessError on a bad header. Non-blocking, thread-safe.
inline std::size_t frame_size(std::span<const std::byte> header) {
  return frame_header_size + static_cast<std::size_t>(detail::parse_frame_header(header).payload_size);
}

// The exact size of dumps(value), computed without writing (contiguous data
// costs nothing). Thread-safe (for a value not being modified); throws what a
// user serializer throws.
template <class T>
std::size_t encoded_size(const T& value) {
  Writer w(Writer::count_only);
  write_frame(w, value);
  return w.size();
}

// Encodes `value` as one frame. Thread-safe; throws std::bad_alloc, or what a
// user serializer throws.
template <class T>
std::vector<std::byte> dumps(const T& value) {
  std::vector<std::byte> out;
  {
    Writer w(out);
    write_frame(w, value);
  }
  return out;
}

// Appends the frame of `value` to `out`, reusing its capacity; returns the
// frame's size. For in-place views the frame should start 16-byte aligned
// (out.size() a multiple of 16). Throws like dumps(); on a throw, `out` has
// its old contents plus unspecified bytes.
template <class T>
std::size_t dumps_append(std::vector<std::byte>& out, const T& value) {
  Writer w(out);
  write_frame(w, value);
  return w.size();
}

// Writes the frame of `value` into caller memory (e.g. shared memory) and
// returns the bytes used (== encoded_size(value)). Throws ProcessError when
// `out` is too small (its contents are then unspecified).
template <class T>
std::size_t dumps_into(std::span<std::byte> out, const T& value) {
  try {
    Writer w(out);
    write_frame(w, value);
    return w.size();
  } catch (const detail::BufferFull&) {
    throw ProcessError("mproc: buffer too small for a frame of " +
                       detail::readable_type_name(detail::type_name_v<std::remove_cvref_t<T>>) + ": need " +
                       std::to_string(encoded_size(value)) + " bytes, have " + std::to_string(out.size()));
  }
}

// Decodes a frame written by dumps/dumps_into/write_frame of a T (or of the
// owning type of a view T). Checks magic, version, type fingerprint, that the
// frame holds exactly the announced payload, and every byte of the payload.
// T must be owning_decodable: a type holding std::string_view or std::span
// is a compile error (the value would point into `frame`; load std::string
// or std::vector instead). Throws ProcessError naming the fault; never reads
// outside `frame`, and allocates in proportion to its size. Thread-safe.
template <class T>
T loads(std::span<const std::byte> frame) {
  static_assert(detail::check_owning_decodable<std::remove_cv_t<T>, detail::decode_site::loads>());
  return detail::decode_frame<T>(frame);
}

}  // namespace mproc

// ------------------------------------------------------------ MPROC_SERIALIZE
//
// MPROC_SERIALIZE(Type, member1, member2, ...) specializes mproc::serializer
// for Type, writing and reading the listed members in order: for types that
// are not plain aggregates (private members, constructors, base classes); a
// plain struct needs nothing. Write it at global namespace scope, outside
// every namespace (a specialization of mproc::serializer cannot be declared
// inside another one), naming a namespace's type by its qualified name,
// MPROC_SERIALIZE(geo::Point, x, y), after Type is defined and before Type
// is sent. The trailing semicolon is optional: the macro ends with one, and
// a second is an empty declaration, which -Wpedantic accepts (only Clang's
// -Wextra-semi reports it). Type must be default-constructible with
// assignable members accessible at global scope (private ones: declare
// `friend struct mproc::serializer<Type>;`); a Type spelled with commas
// needs an alias. Up to 64 members. Its min_size is the sum of the
// members', and it borrows its input (see owning_decodable) if a member
// does.
#define MPROC_SERIALIZE(Type, ...)                                                               \
  template <>                                                                                    \
  struct mproc::serializer<Type> {                                                               \
    static constexpr bool zero_copy = true;                                                      \
    static void write([[maybe_unused]] ::mproc::Writer& w, [[maybe_unused]] const Type& value) { \
      MPROC_DETAIL_FOR_EACH(MPROC_DETAIL_WRITE_MEMBER, __VA_ARGS__)                              \
    }                                                                                            \
    static Type read([[maybe_unused]] ::mproc::Reader& r) {                                      \
      Type value{};                                                                              \
      MPROC_DETAIL_FOR_EACH(MPROC_DETAIL_READ_MEMBER, __VA_ARGS__)                               \
      return value;                                                                              \
    }                                                                                            \
    /* Templates: evaluated once Type's serializer is complete (recursion). */                   \
    template <class Self>                                                                        \
    static constexpr std::size_t mproc_min_size() {                                              \
      return std::size_t{0} MPROC_DETAIL_FOR_EACH(MPROC_DETAIL_MIN_SIZE_MEMBER, __VA_ARGS__);    \
    }                                                                                            \
    template <class Self, class... Seen>                                                         \
    static constexpr bool mproc_borrows_input() {                                                \
      return false MPROC_DETAIL_FOR_EACH(MPROC_DETAIL_BORROWS_MEMBER, __VA_ARGS__);              \
    }                                                                                            \
  };
