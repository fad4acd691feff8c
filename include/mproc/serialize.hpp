// mproc — Python's multiprocessing model for C++20.
// SPDX-License-Identifier: MIT
//
// Serialization: how values cross a process boundary (Pipe/Connection, Queue,
// the process Pool's arguments and results). mproc's answer to pickle.
//
//   std::vector<std::byte> frame = mp::dumps(value);      // one framed message
//   auto copy = mp::loads<std::vector<double>>(frame);    // checks type and bounds
//
// Built in: arithmetic types, enums, std::byte, trivially copyable structs
// (copied bitwise), std::string, std::vector (incl. vector<bool>), std::array,
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
// Your own type: specialize the one customization point, mproc::serializer<T>,
// at global namespace scope, before first use:
//
//   struct Sample { std::string label; std::vector<float> features; };
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
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <iterator>
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

class Writer;
class Reader;

// THE customization point: how a T is written and read. Specialize it for your
// own types (see the top of this file); the primary template provides the
// built-in types and nothing else.
template <class T, class Enable = void>
struct serializer;

namespace detail {

template <class T>
struct builtin_serializer;
struct writer_access;
struct reader_access;

// Tag base of every built-in serializer.
struct builtin_tag {};

template <class>
inline constexpr bool dependent_false = false;

}  // namespace detail

// True when T can cross a process boundary: a built-in type, or a type with a
// serializer<T> specialization providing write() and read(). cv-qualifiers
// are ignored; references are never serializable.
template <class T>
concept serializable =
    !std::is_reference_v<T> &&
    requires(Writer& w, Reader& r, const std::remove_cv_t<T>& value) {
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

// ------------------------------------------------------------------- traits
namespace detail {

template <class T, template <class...> class Template>
inline constexpr bool is_instance_v = false;
template <template <class...> class Template, class... Args>
inline constexpr bool is_instance_v<Template<Args...>, Template> = true;

template <class T>
inline constexpr bool is_std_array_v = false;
template <class T, std::size_t N>
inline constexpr bool is_std_array_v<std::array<T, N>> = true;

template <class T>
inline constexpr bool is_std_span_v = false;
template <class T, std::size_t Extent>
inline constexpr bool is_std_span_v<std::span<T, Extent>> = true;

template <class T>
inline constexpr bool is_vector_bool_v = false;
template <class A>
inline constexpr bool is_vector_bool_v<std::vector<bool, A>> = true;

// std::reference_wrapper, detected without <functional>.
template <class T>
inline constexpr bool is_reference_wrapper_v = !std::is_same_v<std::unwrap_reference_t<T>, T>;

// Standard class types that are trivially copyable but must not be copied
// bitwise: they get their own serializer, or none.
template <class T>
inline constexpr bool not_bitwise_class_v =
    is_instance_v<T, std::optional> || is_instance_v<T, std::variant> ||
    is_instance_v<T, std::tuple> || is_instance_v<T, std::pair> ||
    is_instance_v<T, std::basic_string_view> || is_instance_v<T, std::initializer_list> ||
    is_std_span_v<T> || is_reference_wrapper_v<T> || std::is_same_v<T, std::monostate>;

// T is copied bitwise by its serializer (a built-in one: a user
// specialization always takes over, even for a trivially copyable T).
template <class T>
concept bitwise = requires { requires serializer<T>::mproc_bitwise; };

// Every serializer<T> is one of mproc's (not a user specialization).
template <class T>
inline constexpr bool is_builtin_v = std::is_base_of_v<builtin_tag, serializer<T>>;

// A lower bound of the encoded size of any T: at least 1, since every value
// takes at least one byte (a user type whose serializer writes nothing is
// followed by a zero byte; see Writer::write).
template <class T>
constexpr std::size_t min_size_of() noexcept {
  std::size_t n = 0;
  if constexpr (requires { { serializer<T>::min_size } -> std::convertible_to<std::size_t>; })
    n = serializer<T>::min_size;
  else if constexpr (requires { { serializer<T>::template mproc_min_size<T>() } -> std::convertible_to<std::size_t>; })
    n = serializer<T>::template mproc_min_size<T>();  // MPROC_SERIALIZE: the members' sum
  return n == 0 ? 1 : n;
}
template <class T>
inline constexpr std::size_t min_size_v = min_size_of<std::remove_cv_t<T>>();

// Write values of T may be referenced in place by gather-mode writers.
template <class T>
constexpr bool zero_copy_of() noexcept {
  if constexpr (is_builtin_v<T>)
    return true;
  else if constexpr (requires { { serializer<T>::zero_copy } -> std::convertible_to<bool>; })
    return serializer<T>::zero_copy;
  else
    return false;
}

template <class T>
inline constexpr bool all_serializable_v = false;
template <template <class...> class Template, class... Ts>
inline constexpr bool all_serializable_v<Template<Ts...>> = (serializable<Ts> && ...);

// Container shapes (std and look-alikes such as std::pmr or Boost.Container).
template <class C>
concept sequence_container = requires(C& c, const C& cc) {
  typename C::value_type;
  typename C::allocator_type;
  { cc.size() } -> std::convertible_to<std::size_t>;
  cc.begin();
  cc.end();
  c.clear();
  c.push_back(std::declval<typename C::value_type>());
};

template <class C>
concept contiguous_container =
    sequence_container<C> && std::contiguous_iterator<typename C::iterator> &&
    requires(C& c, const C& cc, const typename C::value_type* p) {
      { cc.data() } -> std::convertible_to<const typename C::value_type*>;
      c.resize(std::size_t{});
      c.assign(p, p);
    };

template <class C>
concept associative_container = requires(C& c, const C& cc) {
  typename C::key_type;
  typename C::value_type;
  typename C::allocator_type;
  { cc.size() } -> std::convertible_to<std::size_t>;
  cc.begin();
  cc.end();
  c.clear();
  c.emplace_hint(c.cend(), std::declval<typename C::value_type>());
};

template <class C>
concept contiguous_bitwise_container =
    contiguous_container<C> && bitwise<typename C::value_type>;

template <class C>
concept map_like = associative_container<C> && requires { typename C::mapped_type; };

template <class C>
constexpr bool associative_ok() {
  if constexpr (map_like<C>)
    return serializable<typename C::key_type> && serializable<typename C::mapped_type>;
  else
    return serializable<typename C::key_type>;
}

// ------------------------------------------------------ aggregate inspection
//
// An aggregate's members, seen without naming them: through aggregate
// initialization T{p, p, ...} with probe objects `p` whose conversion
// operator template accepts (or refuses) each member's type. Reusable: a
// later member-wise serializer can take aggregate_initializers<T>() as the
// member count of aggregates without C array members and base classes.

// Largest number of initializers inspected (each element of a C array member
// counts: brace elision); beyond it compile time grows too much.
inline constexpr std::size_t max_aggregate_initializers = 256;
// aggregate_initializers<T>() when T cannot be inspected.
inline constexpr std::size_t uninspectable = std::size_t(-1);

// Converts to any type except the aggregate T itself (declared only).
template <class T>
struct init_any {
  template <class U>
    requires(!std::is_same_v<U, T>)
  operator U&() const noexcept;
};

// T{p_0, ..., p_{N-1}} (and one more initializer `Extra` when not void) is
// well-formed, each p_i a prvalue of Probe.
template <class T, class Probe, class Extra, std::size_t... I>
constexpr bool brace_init_with(std::index_sequence<I...>) {
  if constexpr (std::is_void_v<Extra>)
    return requires { T{(static_cast<void>(I), std::declval<Probe>())...}; };
  else
    return requires { T{(static_cast<void>(I), std::declval<Probe>())..., std::declval<Extra>()}; };
}
template <class T, class Probe, std::size_t N, class Extra = void>
inline constexpr bool brace_init_v = brace_init_with<T, Probe, Extra>(std::make_index_sequence<N>());

// The largest N in [Lo, Hi) with T{any x N} well-formed, given that it is
// well-formed for Lo and not for Hi.
template <class T, std::size_t Lo, std::size_t Hi>
constexpr std::size_t last_initializer_count() {
  if constexpr (Hi - Lo <= 1) {
    return Lo;
  } else {
    constexpr std::size_t mid = Lo + (Hi - Lo) / 2;
    if constexpr (brace_init_v<T, init_any<T>, mid>)
      return last_initializer_count<T, mid, Hi>();
    else
      return last_initializer_count<T, Lo, mid>();
  }
}
template <class T, std::size_t N>
constexpr std::size_t initializer_count_from() {
  if constexpr (N > max_aggregate_initializers)
    return uninspectable;
  else if constexpr (brace_init_v<T, init_any<T>, 2 * N + 1>)
    return initializer_count_from<T, 2 * N + 1>();
  else
    return last_initializer_count<T, N, 2 * N + 1>();
}
// The first N <= 16 with T{any x N} well-formed (0 unless a member has no
// default: a reference, a class without default constructor).
template <class T, std::size_t N = 0>
constexpr std::size_t first_initializer_count() {
  if constexpr (N > 16)
    return uninspectable;
  else if constexpr (brace_init_v<T, init_any<T>, N>)
    return N;
  else
    return first_initializer_count<T, N + 1>();
}

// How many initializers the aggregate class T takes at most: its members,
// counting each element of a C array member (brace elision), or uninspectable
// beyond max_aggregate_initializers.
template <class T>
constexpr std::size_t aggregate_initializers() {
  constexpr std::size_t first = first_initializer_count<T>();
  if constexpr (first == uninspectable) {
    return uninspectable;
  } else {
    constexpr std::size_t n = initializer_count_from<T, first>();
    return n > max_aggregate_initializers ? uninspectable : n;
  }
}

template <class U>
constexpr bool bitwise_safe();

// Converts to the member types that bitwise_safe accepts; a reference member
// (a mutable one cannot bind the prvalue, a const one deduces a const U)
// fails. Refused types have a deleted conversion, so that the compiler does
// not brace-elide into a refused aggregate member.
template <class T>
struct init_safe {
  template <class U>
    requires(!std::is_same_v<U, T> && !std::is_const_v<U> && bitwise_safe<U>())
  operator U&&() const noexcept;
  template <class U>
    requires(!std::is_same_v<U, T> && !(!std::is_const_v<U> && bitwise_safe<U>()))
  operator U&&() const noexcept = delete;
};

// The aggregate class T can be copied bitwise: each of its N initializers
// accepts an init_safe, and no initializer more fits (Clang brace-elides
// into a member whose conversion is deleted; the extra initializer then
// lands inside it instead of being one too many).
template <class T>
constexpr bool aggregate_bitwise_safe() {
  constexpr std::size_t n = aggregate_initializers<T>();
  if constexpr (n == uninspectable)
    return false;
  else
    return brace_init_v<T, init_safe<T>, n> && !brace_init_v<T, init_safe<T>, n, init_any<T>>;
}

// A value of U (cv-unqualified) can be copied bitwise to another process:
// nothing in it, as far as can be seen, points into the sender's memory.
template <class U>
constexpr bool bitwise_safe() {
  using V = std::remove_cv_t<std::remove_all_extents_t<U>>;
  if constexpr (std::is_reference_v<V> || std::is_pointer_v<V> || std::is_member_pointer_v<V> ||
                std::is_null_pointer_v<V>) {
    return false;
  } else if constexpr (std::is_arithmetic_v<V> || std::is_enum_v<V>) {
    return true;
  } else if constexpr (is_instance_v<V, std::basic_string_view> || is_std_span_v<V> ||
                       is_reference_wrapper_v<V> || is_instance_v<V, std::initializer_list>) {
    return false;
  } else if constexpr (is_instance_v<V, std::optional> || is_std_array_v<V>) {
    return bitwise_safe<typename V::value_type>();
  } else if constexpr (is_instance_v<V, std::variant> || is_instance_v<V, std::tuple> ||
                       is_instance_v<V, std::pair>) {
    return []<template <class...> class Tm, class... Ts>(std::type_identity<Tm<Ts...>>) {
      return (bitwise_safe<Ts>() && ...);
    }(std::type_identity<V>{});
  } else if constexpr (std::is_class_v<V> && std::is_aggregate_v<V>) {
    return aggregate_bitwise_safe<V>();
  } else {
    return true;  // a union or a class with private members: cannot be seen into
  }
}

// Which built-in serializer handles T.
enum class kind {
  unsupported,
  boolean,      // bool: one byte, validated
  empty,        // std::monostate, std::tuple<>, std::array<T, 0>: one zero byte (so
                // that containers of them are bounded by the bytes received)
  bitwise,      // arithmetic, enum, trivially copyable class, std::array of bitwise
  bit_vector,   // std::vector<bool>: size + packed bits
  optional,     // flag byte + value
  variant,      // 32-bit index + alternative
  tuple,        // std::tuple, std::pair: elements in order
  fixed_array,  // std::array of non-bitwise elements
  contiguous,   // vector/string of bitwise elements: size + padding + one block
  view,         // std::span<const T>, std::basic_string_view: same bytes, read in place
  sequence,     // other sequences: size + elements
  associative,  // maps and sets: size + keys (+ values)
};

template <class T>
constexpr kind kind_of() {
  if constexpr (std::is_reference_v<T> || std::is_pointer_v<T> || std::is_member_pointer_v<T> ||
                std::is_null_pointer_v<T> || std::is_function_v<T> || std::is_void_v<T> ||
                std::is_array_v<T> || std::is_const_v<T> || std::is_volatile_v<T>) {
    return kind::unsupported;
  } else if constexpr (std::is_same_v<T, bool>) {
    return kind::boolean;
  } else if constexpr (std::is_same_v<T, std::monostate>) {
    return kind::empty;
  } else if constexpr (std::is_arithmetic_v<T> || std::is_enum_v<T>) {
    return kind::bitwise;
  } else if constexpr (is_instance_v<T, std::optional>) {
    return serializable<typename T::value_type> ? kind::optional : kind::unsupported;
  } else if constexpr (is_instance_v<T, std::variant>) {
    return all_serializable_v<T> ? kind::variant : kind::unsupported;
  } else if constexpr (std::is_same_v<T, std::tuple<>>) {
    return kind::empty;
  } else if constexpr (is_instance_v<T, std::tuple> || is_instance_v<T, std::pair>) {
    return all_serializable_v<T> ? kind::tuple : kind::unsupported;
  } else if constexpr (is_std_span_v<T>) {
    using E = typename T::element_type;
    return T::extent == std::dynamic_extent && std::is_const_v<E> && !std::is_volatile_v<E> &&
                   bitwise<std::remove_cv_t<E>>
               ? kind::view
               : kind::unsupported;
  } else if constexpr (is_instance_v<T, std::basic_string_view>) {
    return bitwise<typename T::value_type> ? kind::view : kind::unsupported;
  } else if constexpr (is_std_array_v<T>) {
    using E = typename T::value_type;
    if constexpr (std::tuple_size_v<T> == 0)
      return serializable<E> ? kind::empty : kind::unsupported;
    else if constexpr (bitwise<E>)
      return kind::bitwise;
    else if constexpr (serializable<E> && std::is_default_constructible_v<E>)
      return kind::fixed_array;
    else
      return kind::unsupported;
  } else if constexpr (not_bitwise_class_v<T>) {
    return kind::unsupported;
  } else if constexpr (is_vector_bool_v<T>) {
    return kind::bit_vector;
  } else if constexpr (contiguous_bitwise_container<T>) {
    return kind::contiguous;
  } else if constexpr (sequence_container<T>) {
    return serializable<typename T::value_type> ? kind::sequence : kind::unsupported;
  } else if constexpr (associative_container<T>) {
    return associative_ok<T>() ? kind::associative : kind::unsupported;
  } else if constexpr (std::is_class_v<T> && std::is_aggregate_v<T> && std::is_trivially_copyable_v<T>) {
    return bitwise_safe<T>() ? kind::bitwise : kind::unsupported;  // members inspected
  } else if constexpr ((std::is_class_v<T> || std::is_union_v<T>) && std::is_trivially_copyable_v<T>) {
    return kind::bitwise;  // cannot be inspected: its author answers for it
  } else {
    return kind::unsupported;
  }
}

// Instantiated only for a type that cannot be serialized: the compiler names
// the type in the instantiation of this template.
template <class T>
struct cannot_cross_process_boundary {
  static_assert(dependent_false<T>,
                "mproc: this type cannot cross a process boundary: it is the T of "
                "mproc::detail::cannot_cross_process_boundary<T> in this error. Pointers, "
                "references, C arrays, std::function, std::unique_ptr/std::shared_ptr and other "
                "types that are neither built in nor trivially copyable have no serialization. "
                "Send the data they refer to instead, or make your type serializable: specialize "
                "mproc::serializer<T> with `static void write(mproc::Writer&, const T&)` and "
                "`static T read(mproc::Reader&)`, or write MPROC_SERIALIZE(T, member1, member2, "
                "...) at global scope (see mproc/serialize.hpp).");
  static constexpr bool value = false;
};

// Instantiated for a trivially copyable aggregate T with a member of type
// Member that points into the sender's memory.
template <class T, class Member>
struct member_points_into_sender {
  static_assert(dependent_false<T>,
                "mproc: this struct cannot cross a process boundary: it is copied bitwise, and its member "
                "of type Member (T and Member of mproc::detail::member_points_into_sender<T, Member> in "
                "this error) is a pointer or a view that would point into the sender's memory. Hold the "
                "data itself instead (std::string for const char* or std::string_view, std::vector<U> for "
                "U* or std::span<const U>), or give the struct a serializer that sends what the pointer "
                "refers to (MPROC_SERIALIZE(T, members...), see mproc/serialize.hpp).");
  static constexpr bool value = true;  // one error is enough
};

// Instantiated for a trivially copyable aggregate T whose members cannot all
// be checked, or with a reference member.
template <class T>
struct cannot_inspect_members {
  static_assert(dependent_false<T>,
                "mproc: this struct (the T of mproc::detail::cannot_inspect_members<T> in this error) is "
                "trivially copyable, but mproc cannot check that it holds no pointer before copying it "
                "bitwise to another process: it has a reference member, or a member that has no default "
                "and cannot be initialized from any value, or it takes more than 256 initializers (each "
                "element of a C array member counts: use std::array<E, N> for large arrays). Hold values "
                "instead of references, or give it a serializer (MPROC_SERIALIZE(T, members...)).");
  static constexpr bool value = false;
};

template <class T, class U>
constexpr bool report_member();

// Converts to any member type; a member type that bitwise_safe refuses makes
// report_member fail with a static_assert naming it.
template <class T>
struct init_report {
  template <class U>
    requires(!std::is_same_v<U, T> && report_member<T, U>())
  operator U&&() const noexcept;
};

// Names the member of the aggregate T (recursively, of its aggregate members)
// that cannot be copied bitwise. Always true, after a static_assert.
template <class T>
constexpr bool report_aggregate_members() {
  constexpr std::size_t n = aggregate_initializers<T>();
  if constexpr (n == uninspectable)
    return cannot_inspect_members<T>::value;
  else if constexpr (!brace_init_v<T, init_report<T>, n>)
    return cannot_inspect_members<T>::value;  // a reference member
  else
    return true;
}

template <class T, class U>
constexpr bool report_member() {
  using V = std::remove_cv_t<std::remove_all_extents_t<U>>;
  if constexpr (std::is_const_v<U>)
    return cannot_inspect_members<T>::value;  // a const reference member
  else if constexpr (bitwise_safe<U>())
    return true;
  else if constexpr (std::is_class_v<V> && std::is_aggregate_v<V> && !is_std_array_v<V>)
    return report_aggregate_members<V>();
  else
    return member_points_into_sender<T, U>::value;
}

// static_assert(assert_serializable<T>()) fails with a message naming the
// innermost type that cannot be serialized (int* in std::vector<int*>).
template <class T>
constexpr bool assert_serializable() {
  using U = std::remove_cv_t<T>;
  if constexpr (serializable<T>) {
    return true;
  } else if constexpr (std::is_reference_v<T>) {
    return cannot_cross_process_boundary<T>::value;
  } else if constexpr (is_instance_v<U, std::tuple> || is_instance_v<U, std::pair> ||
                       is_instance_v<U, std::variant>) {
    if constexpr (all_serializable_v<U>)
      return cannot_cross_process_boundary<U>::value;
    else
      return []<template <class...> class Tm, class... Ts>(std::type_identity<Tm<Ts...>>) {
        return ((serializable<Ts> || assert_serializable<Ts>()) && ...);
      }(std::type_identity<U>{});
  } else if constexpr (requires { typename U::key_type; typename U::mapped_type; }) {
    if constexpr (!serializable<typename U::key_type>)
      return assert_serializable<typename U::key_type>();
    else if constexpr (!serializable<typename U::mapped_type>)
      return assert_serializable<typename U::mapped_type>();
    else
      return cannot_cross_process_boundary<U>::value;
  } else if constexpr (requires { typename U::value_type; }) {
    using E = std::remove_cv_t<typename U::value_type>;
    if constexpr (!std::is_same_v<E, U> && !serializable<E>)
      return assert_serializable<E>();
    else
      return cannot_cross_process_boundary<U>::value;
  } else if constexpr (std::is_class_v<U> && std::is_aggregate_v<U> && std::is_trivially_copyable_v<U>) {
    return report_aggregate_members<U>() && false;
  } else {
    return cannot_cross_process_boundary<U>::value;
  }
}

// Thrown by a span-backed Writer that runs out of room.
class BufferFull : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

}  // namespace detail

// ------------------------------------------------------------------- Writer

// Appends encoded bytes to a sink. Four sinks, one code path for serializers:
//   Writer w(vec);                      appends to a std::vector<std::byte>,
//                                       reusing its capacity
//   Writer w(span);                     fills caller memory (e.g. shared memory);
//                                       throws ProcessError when it is full
//   Writer w(Writer::count_only);       counts bytes only (encoded_size)
//   Writer w(Writer::gather, scratch);  copies small parts into `scratch` and
//                                       references contiguous blocks of at least
//                                       `threshold` bytes in place; the frame is
//                                       then pieces() (for writev)
// A vector-backed writer keeps spare bytes at the end of the vector while it
// writes; finish() (or the destructor) trims them. Alignment (align()) is
// relative to where the writer started, or to the frame start in write_frame.
// Not thread-safe; a writer is used by one thread at a time.
class Writer {
 public:
  struct count_only_t {
    explicit count_only_t() = default;
  };
  struct gather_t {
    explicit gather_t() = default;
  };
  static constexpr count_only_t count_only{};
  static constexpr gather_t gather{};

  // Appends to `out` after its current contents. Never throws.
  explicit Writer(std::vector<std::byte>& out) noexcept
      : mode_(mode::vector), vec_(&out), vec_start_(out.size()) {
    cur_ = end_ = win_ = out.data() + out.size();
  }
  // Writes into `out` from its start; a write beyond its end throws ProcessError.
  explicit Writer(std::span<std::byte> out) noexcept
      : cur_(out.data()), end_(out.data() + out.size()), win_(out.data()), mode_(mode::span) {}
  // Counts the bytes that would be written.
  explicit Writer(count_only_t) noexcept : mode_(mode::count) {}
  // Appends small parts to `scratch`; contiguous blocks of at least `threshold`
  // bytes written with write_borrowed() are referenced, not copied.
  Writer(gather_t, std::vector<std::byte>& scratch,
         std::size_t threshold = default_gather_threshold) noexcept
      : mode_(mode::gather),
        vec_(&scratch),
        vec_start_(scratch.size()),
        threshold_(std::max<std::size_t>(threshold, 1)),
        borrow_min_(threshold_) {
    cur_ = end_ = win_ = scratch.data() + scratch.size();
  }

  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;
  ~Writer() { finish(); }

  // Appends a copy of n bytes. Throws ProcessError when a span sink is full,
  // std::bad_alloc when a vector cannot grow.
  void write_bytes(const void* data, std::size_t n) {
    if (n <= static_cast<std::size_t>(end_ - cur_)) [[likely]] {
      if (n != 0) std::memcpy(cur_, data, n);
      cur_ += n;
    } else {
      write_slow(static_cast<const std::byte*>(data), n, false);
    }
  }
  void write_bytes(std::span<const std::byte> bytes) { write_bytes(bytes.data(), bytes.size()); }

  // Like write_bytes, but a gather writer references a block of at least its
  // threshold in place instead of copying it: the bytes must then stay alive
  // and unchanged until pieces() have been consumed. Other sinks copy.
  void write_borrowed(std::span<const std::byte> bytes) {
    const std::size_t n = bytes.size();
    if (n < borrow_min_ && n <= static_cast<std::size_t>(end_ - cur_)) [[likely]] {
      if (n != 0) std::memcpy(cur_, bytes.data(), n);
      cur_ += n;
    } else {
      write_slow(bytes.data(), n, true);
    }
  }

  // Writes `value` with serializer<T>. A value that cannot be serialized is a
  // compile error. Throws what the sink or the serializer throws.
  template <class T>
  void write(const T& value);
  // A temporary is always copied, never referenced by a gather writer.
  template <class T>
  void write(const T&& value);

  // Writes zero bytes until size() (relative to the writer's or frame's start)
  // is a multiple of `alignment`, a power of two.
  void align(std::size_t alignment) {
    const std::size_t pad = (alignment - ((size() - origin_) & (alignment - 1))) & (alignment - 1);
    if (pad != 0) write_zeros(pad);
  }

  // Makes room for n more bytes in a vector sink (capacity only). No-op for
  // other sinks.
  void reserve(std::size_t n) {
    if (vec_ != nullptr) {
      const std::size_t used = static_cast<std::size_t>(cur_ - vec_->data());
      if (vec_->capacity() - used < n) {
        vec_->resize(used);
        vec_->reserve(used + n);
        reset_window(used);
      }
    }
  }

  // Bytes written so far, including blocks a gather writer referenced.
  std::size_t size() const noexcept { return flushed_ + static_cast<std::size_t>(cur_ - win_); }

  // Trims a vector sink to the bytes written (drops its spare bytes). Called by
  // the destructor; writing may continue afterwards. Never throws.
  void finish() noexcept {
    if (vec_ != nullptr) {
      const std::size_t used = static_cast<std::size_t>(cur_ - vec_->data());
      if (vec_->size() != used) vec_->resize(used);  // shrinking: no allocation
      end_ = cur_;
    }
  }

  // The bytes written, as consecutive pieces to send in order (writev): a
  // gather writer alternates scratch parts and referenced blocks; the vector
  // and span sinks have one piece; count_only has none. Valid until the next
  // write or the end of the sink's (and referenced values') lifetime.
  template <class F>
  void for_each_piece(F&& f) const {
    if (mode_ == mode::count) return;
    const std::byte* base = mode_ == mode::span ? win_ : vec_->data();
    std::size_t prev = mode_ == mode::span ? 0 : vec_start_;
    for (const borrowed& ref : refs_) {
      if (ref.offset > prev) f(std::span<const std::byte>(base + prev, ref.offset - prev));
      f(std::span<const std::byte>(ref.data, ref.size));
      prev = ref.offset;
    }
    const std::size_t used = static_cast<std::size_t>(cur_ - base);
    if (used > prev) f(std::span<const std::byte>(base + prev, used - prev));
  }
  std::size_t piece_count() const noexcept {
    std::size_t n = 0;
    for_each_piece([&n](std::span<const std::byte>) noexcept { ++n; });
    return n;
  }
  std::vector<std::span<const std::byte>> pieces() const {
    std::vector<std::span<const std::byte>> out;
    out.reserve(2 * refs_.size() + 1);
    for_each_piece([&out](std::span<const std::byte> p) { out.push_back(p); });
    return out;
  }

 private:
  friend struct detail::writer_access;
  enum class mode : unsigned char { vector, span, count, gather };
  struct borrowed {
    std::size_t position;  // logical position of the block
    std::size_t offset;    // scratch bytes in front of it
    const std::byte* data;
    std::size_t size;
  };

  void write_zeros(std::size_t n) {
    static constexpr std::byte zeros[64] = {};
    for (; n > sizeof zeros; n -= sizeof zeros) write_bytes(zeros, sizeof zeros);
    write_bytes(zeros, n);
  }

  // Points the window at vec_[used, size()) with the same logical size.
  void reset_window(std::size_t used) noexcept {
    const std::size_t logical = size();
    win_ = cur_ = vec_->data() + used;
    end_ = vec_->data() + vec_->size();
    flushed_ = logical;
  }

  void write_slow(const std::byte* p, std::size_t n, bool borrowable) {
    switch (mode_) {
      case mode::count:
        flushed_ += n;
        return;
      case mode::span:
        throw detail::BufferFull("mproc: output buffer too small: " + std::to_string(n) +
                                 " more bytes at offset " + std::to_string(size()) + " of a " +
                                 std::to_string(static_cast<std::size_t>(end_ - win_)) +
                                 "-byte buffer");
      case mode::gather:
        if (borrowable && n >= borrow_min_) {
          refs_.push_back({size(), static_cast<std::size_t>(cur_ - vec_->data()), p, n});
          flushed_ += n;
          return;
        }
        break;
      case mode::vector:
        break;
    }
    append_to_vector(p, n);
  }

  void append_to_vector(const std::byte* p, std::size_t n) {
    std::vector<std::byte>& v = *vec_;
    const std::size_t used = static_cast<std::size_t>(cur_ - v.data());
    if (n <= static_cast<std::size_t>(end_ - cur_)) {
      std::memcpy(cur_, p, n);
      cur_ += n;
      return;
    }
    constexpr std::size_t direct_min = 1024;  // large: one copy, no zero-fill
    constexpr std::size_t slack = 4096;       // room after a large block
    if (n >= direct_min) {
      v.resize(used);
      if (v.capacity() - used < n) v.reserve(std::max(used + n + slack, 2 * v.capacity()));
      v.insert(v.end(), p, p + n);
      const std::size_t logical = size() + n;
      win_ = cur_ = end_ = v.data() + v.size();
      flushed_ = logical;
      return;
    }
    // Small: grow the vector's size ahead (zero-filled spare bytes, trimmed by
    // finish()), geometrically but by at most 64 KiB, within capacity if possible.
    const std::size_t written = used - vec_start_;
    std::size_t want = std::max(n, std::clamp<std::size_t>(written, 64, 64 * 1024));
    const std::size_t spare = v.capacity() - used;
    if (spare >= n) want = std::min(want, spare);
    v.resize(used + want);
    reset_window(used);
    std::memcpy(cur_, p, n);
    cur_ += n;
  }

  // Overwrites n bytes at logical position pos (written before, not inside a
  // referenced block).
  void overwrite(std::size_t pos, const void* data, std::size_t n) noexcept {
    switch (mode_) {
      case mode::count:
        return;
      case mode::span:
        std::memcpy(win_ + pos, data, n);
        return;
      case mode::vector:
      case mode::gather: {
        std::size_t offset = vec_start_ + pos;
        for (const borrowed& ref : refs_)
          if (ref.position <= pos) offset -= ref.size;
        std::memcpy(vec_->data() + offset, data, n);
        return;
      }
    }
  }

  std::byte* cur_ = nullptr;  // next byte to write
  std::byte* end_ = nullptr;  // end of the writable window
  std::byte* win_ = nullptr;  // start of the window
  std::size_t flushed_ = 0;   // logical size at win_
  std::size_t origin_ = 0;    // alignment is relative to this logical position
  mode mode_;
  std::vector<std::byte>* vec_ = nullptr;  // vector and gather sinks
  std::size_t vec_start_ = 0;              // vec_->size() when the writer started
  std::size_t threshold_ = std::numeric_limits<std::size_t>::max();
  std::size_t borrow_min_ = std::numeric_limits<std::size_t>::max();  // threshold, or max when borrowing is off
  std::vector<borrowed> refs_;
};

// ------------------------------------------------------------------- Reader

// Bounds-checked reading of untrusted bytes. Every read checks that the bytes
// are there and throws ProcessError naming what was being decoded otherwise
// ("mproc: truncated frame: need 8000 bytes for std::vector<double> elements,
// 12 left"). Views returned by read_span() and by view types point into the
// reader's bytes. Not thread-safe.
class Reader {
 public:
  // Nesting limit of user-type reads (recursive types), against stack exhaustion.
  static constexpr unsigned default_max_depth = 256;

  explicit Reader(std::span<const std::byte> data) noexcept
      : begin_(data.data()), cur_(data.data()), end_(data.data() + data.size()) {}

  // Copies the next n bytes to `out`. Throws ProcessError naming `what` when
  // fewer than n remain.
  void read_bytes(void* out, std::size_t n, std::string_view what = "bytes") {
    require(n, what);
    if (n != 0) std::memcpy(out, cur_, n);
    cur_ += n;
  }
  // The next n bytes, in place (no copy). Throws like read_bytes.
  std::span<const std::byte> read_span(std::size_t n, std::string_view what = "bytes") {
    require(n, what);
    const std::span<const std::byte> s(cur_, n);
    cur_ += n;
    return s;
  }
  // Reads a T with serializer<T>; checks first that the least bytes any T
  // encodes to are there, so nothing is built for a frame too short to hold
  // it. A view type (std::string_view, std::span<const U>, or holding one)
  // points into the reader's bytes. Throws ProcessError on bad data.
  template <class T>
  T read();

  // Throws ProcessError("mproc: truncated frame: need n bytes for <what> <part>,
  // m left") unless n bytes remain.
  void require(std::size_t n, std::string_view what, std::string_view part = {}) const {
    if (n > remaining()) [[unlikely]]
      fail_truncated(n, what, part);
  }
  // Skips the zero padding up to a multiple of `alignment` (a power of two)
  // from the start of the bytes; non-zero padding is an error.
  void align(std::size_t alignment, std::string_view what = "data") {
    const std::size_t pad = (alignment - (position() & (alignment - 1))) & (alignment - 1);
    if (pad == 0) return;
    require(pad, what, "alignment padding");
    for (std::size_t i = 0; i < pad; ++i)
      if (cur_[i] != std::byte{0})
        fail("non-zero alignment padding before " + detail::readable_type_name(what));
    cur_ += pad;
  }

  std::size_t remaining() const noexcept { return static_cast<std::size_t>(end_ - cur_); }
  // The bytes that remain for the value being read: remaining() minus those
  // that the elements still to come of the containers being read need at
  // least. Element counts are checked against it.
  std::size_t available() const noexcept { return remaining() - std::min(pledged_, remaining()); }
  std::size_t position() const noexcept { return static_cast<std::size_t>(cur_ - begin_); }
  // The current position in memory.
  const std::byte* current() const noexcept { return cur_; }

  unsigned max_depth() const noexcept { return max_depth_; }
  void set_max_depth(unsigned depth) noexcept { max_depth_ = depth; }

  // Throws ProcessError("mproc: corrupted frame: <problem>").
  [[noreturn]] void fail(std::string_view problem) const {
    throw ProcessError("mproc: corrupted frame: " + std::string(problem));
  }

 private:
  friend struct detail::reader_access;

  [[noreturn]] void fail_truncated(std::size_t n, std::string_view what, std::string_view part) const {
    std::string msg = "mproc: truncated frame: need " + std::to_string(n) + " bytes for " +
                      detail::readable_type_name(what);
    if (!part.empty()) msg.append(" ").append(part);
    msg += ", " + std::to_string(remaining()) + " left";
    throw ProcessError(msg);
  }

  const std::byte* begin_;
  const std::byte* cur_;
  const std::byte* end_;
  unsigned depth_ = 0;
  unsigned max_depth_ = default_max_depth;
  std::size_t pledged_ = 0;  // bytes at the end promised to elements not read yet
};

namespace detail {

struct writer_access {
  // Disables in-place references for values a user serializer writes (they may
  // be temporaries), for the scope of the object.
  class no_borrow {
   public:
    explicit no_borrow(Writer& w) noexcept : w_(w), saved_(w.borrow_min_) {
      w.borrow_min_ = std::numeric_limits<std::size_t>::max();
    }
    no_borrow(const no_borrow&) = delete;
    no_borrow& operator=(const no_borrow&) = delete;
    ~no_borrow() { w_.borrow_min_ = saved_; }

   private:
    Writer& w_;
    std::size_t saved_;
  };
  static std::size_t origin(const Writer& w) noexcept { return w.origin_; }
  static void set_origin(Writer& w, std::size_t origin) noexcept { w.origin_ = origin; }
  static void overwrite(Writer& w, std::size_t pos, const void* data, std::size_t n) noexcept {
    w.overwrite(pos, data, n);
  }
};

struct reader_access {
  class depth_guard {
   public:
    depth_guard(Reader& r, std::string_view type) : r_(r) {
      if (r.depth_ >= r.max_depth_)
        r.fail("nesting deeper than " + std::to_string(r.max_depth_) + " levels while decoding " +
               readable_type_name(type));
      ++r.depth_;
    }
    depth_guard(const depth_guard&) = delete;
    depth_guard& operator=(const depth_guard&) = delete;
    ~depth_guard() { --r_.depth_; }

   private:
    Reader& r_;
  };
  // Promises the bytes that the elements of a container need at least
  // (count * element_min, checked against available()) to those elements,
  // so that what the elements read before them contain cannot claim them
  // too; next() hands the next element its share. Restores the reader's
  // promise on destruction.
  class pledge {
   public:
    pledge(Reader& r, std::size_t count, std::size_t element_min) noexcept
        : r_(r), saved_(r.pledged_), element_min_(element_min) {
      r.pledged_ += count * element_min;
    }
    pledge(const pledge&) = delete;
    pledge& operator=(const pledge&) = delete;
    ~pledge() { r_.pledged_ = saved_; }
    void next() noexcept { r_.pledged_ -= element_min_; }

   private:
    Reader& r_;
    std::size_t saved_;
    std::size_t element_min_;
  };
};

}  // namespace detail

template <class T>
void Writer::write(const T& value) {
  static_assert(detail::assert_serializable<T>());
  using U = std::remove_cv_t<T>;
  if constexpr (detail::is_builtin_v<U>) {
    serializer<U>::write(*this, value);  // never empty
  } else {
    const std::size_t start = size();
    if constexpr (detail::zero_copy_of<U>()) {
      serializer<U>::write(*this, value);
    } else {
      detail::writer_access::no_borrow guard(*this);
      serializer<U>::write(*this, value);
    }
    // Every value takes at least one byte, so that a count of them is
    // bounded by the bytes received: an empty encoding becomes a zero byte.
    if (size() == start) write_zeros(1);
  }
}

template <class T>
void Writer::write(const T&& value) {
  detail::writer_access::no_borrow guard(*this);
  write(static_cast<const T&>(value));
}

template <class T>
T Reader::read() {
  static_assert(detail::assert_serializable<T>());
  using U = std::remove_cv_t<T>;
  require(detail::min_size_v<U>, detail::type_name_v<U>);
  if constexpr (detail::is_builtin_v<U>) {
    return serializer<U>::read(*this);
  } else {
    detail::reader_access::depth_guard guard(*this, detail::type_name_v<U>);
    const std::size_t start = position();
    U value = serializer<U>::read(*this);
    if (position() == start) {  // written empty: the zero byte Writer::write added
      std::uint8_t zero;
      read_bytes(&zero, 1, detail::type_name_v<U>);
      if (zero != 0)
        fail("invalid byte " + std::to_string(zero) + " after an empty " +
             detail::readable_type_name(detail::type_name_v<U>) + " (must be 0)");
    }
    return value;
  }
}

// -------------------------------------------------------- built-in serializers
namespace detail {

inline void write_size(Writer& w, std::size_t n) {
  const auto v = static_cast<std::uint64_t>(n);
  w.write_bytes(&v, sizeof v);
}

// Reads a 64-bit element count.
inline std::uint64_t read_size(Reader& r, std::string_view type) {
  std::uint64_t n;
  r.read_bytes(&n, sizeof n, type);
  return n;
}

[[noreturn]] inline void fail_count(Reader& r, std::string_view type, std::uint64_t n,
                                    std::size_t element_min) {
  r.fail(readable_type_name(type) + " claims " + std::to_string(n) + " elements but only " +
         std::to_string(r.available()) + " bytes remain for them (an element takes at least " +
         std::to_string(element_min) + ")");
}

// Reads an element count and checks it against the bytes available, given
// that every element takes at least min_size_v<E> (>= 1) bytes.
template <class E>
std::size_t read_count(Reader& r, std::string_view type) {
  const std::uint64_t n = read_size(r, type);
  constexpr std::size_t m = min_size_v<E>;
  if (n > r.available() / m) fail_count(r, type, n, m);
  return static_cast<std::size_t>(n);
}

// Capacity worth reserving ahead for n elements of E (a count from
// read_count<E>): all of them unless that would take more than
// reserve_factor times the bytes they encode to at least, so that a frame
// of small encodings of large objects (std::optional<std::array<char,
// 4096>>) reserves no more than its size allows. More elements grow the
// container as they are decoded.
inline constexpr std::size_t reserve_factor = 16;
template <class E>
constexpr std::size_t reserve_hint(std::size_t n) noexcept {
  constexpr std::size_t m = min_size_v<E>;
  if constexpr (sizeof(E) <= reserve_factor * m)
    return n;
  else
    return n / (sizeof(E) / m) * reserve_factor;
}

// Size, zero padding to alignof(E), then the elements as one block.
template <class E>
void write_block(Writer& w, const E* data, std::size_t n) {
  write_size(w, n);
  w.align(alignof(E));
  w.write_borrowed(std::as_bytes(std::span<const E>(data, n)));
}

// Reads what write_block wrote, in place: the count and the bytes.
template <class E>
std::pair<const std::byte*, std::size_t> read_block(Reader& r, std::string_view type) {
  const std::uint64_t n = read_size(r, type);
  r.align(alignof(E), type);
  if (n > r.remaining() / sizeof(E)) {
    if (n > std::numeric_limits<std::size_t>::max() / sizeof(E))
      fail_count(r, type, n, sizeof(E));
    r.require(static_cast<std::size_t>(n) * sizeof(E), type, "elements");
  }
  const std::size_t count = static_cast<std::size_t>(n);
  return {r.read_span(count * sizeof(E), type).data(), count};
}

template <kind K, class T>
struct builtin_impl;  // K == kind::unsupported: no write/read

template <class T>
struct builtin_impl<kind::bitwise, T> : builtin_tag {
  static constexpr bool mproc_bitwise = true;
  static constexpr std::size_t min_size = sizeof(T);
  static void write(Writer& w, const T& value) {
    w.write_borrowed(std::as_bytes(std::span<const T, 1>(&value, 1)));
  }
  static T read(Reader& r) {
    const std::byte* p = r.read_span(sizeof(T), type_name_v<T>).data();
    if constexpr (std::is_default_constructible_v<T>) {
      T value;
      std::memcpy(static_cast<void*>(&value), p, sizeof(T));
      return value;
    } else {
      std::array<std::byte, sizeof(T)> raw;
      std::memcpy(raw.data(), p, sizeof(T));
      return std::bit_cast<T>(raw);
    }
  }
};

template <class T>
struct builtin_impl<kind::boolean, T> : builtin_tag {
  static constexpr std::size_t min_size = 1;
  static void write(Writer& w, bool value) {
    const std::uint8_t b = value ? 1 : 0;
    w.write_bytes(&b, 1);
  }
  static bool read(Reader& r) {
    std::uint8_t b;
    r.read_bytes(&b, 1, "bool");
    if (b > 1) r.fail("invalid bool value " + std::to_string(b) + " (must be 0 or 1)");
    return b == 1;
  }
};

template <class T>
struct builtin_impl<kind::empty, T> : builtin_tag {
  static constexpr std::size_t min_size = 1;
  static void write(Writer& w, const T&) {
    const std::uint8_t zero = 0;
    w.write_bytes(&zero, 1);
  }
  static T read(Reader& r) {
    std::uint8_t b;
    r.read_bytes(&b, 1, type_name_v<T>);
    if (b != 0) r.fail("invalid " + readable_type_name(type_name_v<T>) + " byte " + std::to_string(b) + " (must be 0)");
    return T{};
  }
};

template <class T>
struct builtin_impl<kind::optional, T> : builtin_tag {
  using E = typename T::value_type;
  static constexpr std::size_t min_size = 1;
  static void write(Writer& w, const T& value) {
    const std::uint8_t engaged = value.has_value() ? 1 : 0;
    w.write_bytes(&engaged, 1);
    if (value) w.write(*value);
  }
  static T read(Reader& r) {
    std::uint8_t engaged;
    r.read_bytes(&engaged, 1, type_name_v<T>);
    if (engaged == 0) return T();
    if (engaged != 1)
      r.fail("invalid " + readable_type_name(type_name_v<T>) + " flag " + std::to_string(engaged) +
             " (must be 0 or 1)");
    return T(std::in_place, r.read<E>());
  }
};

template <class T>
struct builtin_impl<kind::variant, T> : builtin_tag {
  static constexpr std::size_t alternatives = std::variant_size_v<T>;
  static constexpr std::size_t min_size = 4 + []<std::size_t... I>(std::index_sequence<I...>) {
    return std::min({min_size_v<std::variant_alternative_t<I, T>>...});
  }(std::make_index_sequence<alternatives>());

  static void write(Writer& w, const T& value) {
    if (value.valueless_by_exception())
      throw ProcessError("mproc: cannot serialize a valueless " +
                         readable_type_name(type_name_v<T>) +
                         " (an exception interrupted its last assignment)");
    const auto index = static_cast<std::uint32_t>(value.index());
    w.write_bytes(&index, sizeof index);
    std::visit([&w](const auto& alternative) { w.write(alternative); }, value);
  }
  static T read(Reader& r) {
    std::uint32_t index;
    r.read_bytes(&index, sizeof index, type_name_v<T>);
    if (index >= alternatives)
      r.fail(readable_type_name(type_name_v<T>) + " alternative index " + std::to_string(index) +
             " out of range (" + std::to_string(alternatives) + " alternatives)");
    return read_alternative(r, index, std::make_index_sequence<alternatives>());
  }

 private:
  template <std::size_t... I>
  static T read_alternative(Reader& r, std::uint32_t index, std::index_sequence<I...>) {
    using reader_fn = T (*)(Reader&);
    static constexpr reader_fn readers[] = {[](Reader& rr) -> T {
      return T(std::in_place_index<I>, rr.read<std::variant_alternative_t<I, T>>());
    }...};
    return readers[index](r);
  }
};

template <class T>
struct builtin_impl<kind::tuple, T> : builtin_tag {
  static constexpr std::size_t size = std::tuple_size_v<T>;
  static constexpr std::size_t min_size = []<std::size_t... I>(std::index_sequence<I...>) {
    return (std::size_t{0} + ... + min_size_v<std::tuple_element_t<I, T>>);
  }(std::make_index_sequence<size>());

  static void write(Writer& w, const T& value) {
    std::apply([&w](const auto&... element) { (w.write(element), ...); }, value);
  }
  static T read(Reader& r) { return read_elements(r, std::make_index_sequence<size>()); }

 private:
  template <std::size_t... I>
  static T read_elements([[maybe_unused]] Reader& r, std::index_sequence<I...>) {
    return T{r.read<std::tuple_element_t<I, T>>()...};  // braced: read in order
  }
};

template <class T>
struct builtin_impl<kind::fixed_array, T> : builtin_tag {
  using E = typename T::value_type;
  static constexpr std::size_t min_size = std::tuple_size_v<T> * min_size_v<E>;
  static void write(Writer& w, const T& value) {
    for (const E& element : value) w.write(element);
  }
  static T read(Reader& r) {  // Reader::read checked min_size
    T value{};
    reader_access::pledge pledge(r, std::tuple_size_v<T>, min_size_v<E>);
    for (E& element : value) {
      pledge.next();
      element = r.read<E>();
    }
    return value;
  }
};

template <class T>
struct builtin_impl<kind::contiguous, T> : builtin_tag {
  using E = typename T::value_type;
  static constexpr std::size_t min_size = 8;
  static void write(Writer& w, const T& value) { write_block<E>(w, value.data(), value.size()); }
  static T read(Reader& r) {
    const auto [p, n] = read_block<E>(r, type_name_v<T>);
    T value;
    if (reinterpret_cast<std::uintptr_t>(p) % alignof(E) == 0) {
      const E* first = reinterpret_cast<const E*>(p);
      value.assign(first, first + n);  // one copy, no zero-fill
    } else {
      value.resize(n);
      if (n != 0) std::memcpy(static_cast<void*>(value.data()), p, n * sizeof(E));
    }
    return value;
  }
};

template <class T>
struct builtin_impl<kind::view, T> : builtin_tag {
  using E = std::remove_cv_t<typename T::value_type>;
  static constexpr std::size_t min_size = 8;
  static void write(Writer& w, const T& value) { write_block<E>(w, value.data(), value.size()); }
  static T read(Reader& r) {
    const auto [p, n] = read_block<E>(r, type_name_v<T>);
    if (n == 0) return T();
    if (reinterpret_cast<std::uintptr_t>(p) % alignof(E) != 0)
      throw ProcessError("mproc: cannot view " + readable_type_name(type_name_v<T>) +
                         " in place: its data is not " + std::to_string(alignof(E)) +
                         "-byte aligned in memory (the frame must start at a 16-byte aligned "
                         "address); load the owning type instead");
    return T(reinterpret_cast<const E*>(p), n);
  }
};

template <class T>
struct builtin_impl<kind::bit_vector, T> : builtin_tag {
  static constexpr std::size_t min_size = 8;
  static void write(Writer& w, const T& value) {
    const std::size_t n = value.size();
    write_size(w, n);
    std::array<std::uint8_t, 256> chunk;
    std::size_t bit = 0;
    while (bit < n) {
      chunk.fill(0);
      const std::size_t bits = std::min(n - bit, chunk.size() * 8);
      for (std::size_t i = 0; i < bits; ++i)
        if (value[bit + i]) chunk[i / 8] = static_cast<std::uint8_t>(chunk[i / 8] | (1u << (i % 8)));
      w.write_bytes(chunk.data(), (bits + 7) / 8);
      bit += bits;
    }
  }
  static T read(Reader& r) {
    const std::uint64_t n = read_size(r, type_name_v<T>);
    const std::uint64_t bytes = n / 8 + (n % 8 != 0 ? 1 : 0);
    if (bytes > r.remaining()) {
      if (bytes > std::numeric_limits<std::size_t>::max()) fail_count(r, type_name_v<T>, n, 0);
      r.require(static_cast<std::size_t>(bytes), type_name_v<T>, "bits");
    }
    const std::byte* p = r.read_span(static_cast<std::size_t>(bytes), type_name_v<T>).data();
    const auto count = static_cast<std::size_t>(n);
    if (count % 8 != 0 && (std::to_integer<unsigned>(p[count / 8]) >> (count % 8)) != 0)
      r.fail("non-zero padding bits after the last element of " + readable_type_name(type_name_v<T>));
    T value;
    value.reserve(count);
    for (std::size_t i = 0; i < count; ++i)
      value.push_back(((std::to_integer<unsigned>(p[i / 8]) >> (i % 8)) & 1u) != 0);
    return value;
  }
};

template <class T>
struct builtin_impl<kind::sequence, T> : builtin_tag {
  using E = typename T::value_type;
  static constexpr std::size_t min_size = 8;
  static void write(Writer& w, const T& value) {
    write_size(w, static_cast<std::size_t>(value.size()));
    for (const E& element : value) w.write(element);
  }
  static T read(Reader& r) {
    const std::size_t n = read_count<E>(r, type_name_v<T>);
    T value;
    if constexpr (requires { value.reserve(n); }) value.reserve(reserve_hint<E>(n));
    reader_access::pledge pledge(r, n, min_size_v<E>);
    for (std::size_t i = 0; i < n; ++i) {
      pledge.next();
      value.push_back(r.read<E>());
    }
    return value;
  }
};

template <class T>
struct builtin_impl<kind::associative, T> : builtin_tag {
  using K = typename T::key_type;
  static constexpr bool is_map = map_like<T>;
  static constexpr std::size_t element_min = [] {
    if constexpr (map_like<T>)
      return min_size_v<K> + min_size_v<typename T::mapped_type>;
    else
      return min_size_v<K>;
  }();
  static constexpr std::size_t min_size = 8;

  static void write(Writer& w, const T& value) {
    write_size(w, static_cast<std::size_t>(value.size()));
    for (const auto& element : value) {
      if constexpr (is_map) {
        w.write(element.first);
        w.write(element.second);
      } else {
        w.write(element);
      }
    }
  }
  static T read(Reader& r) {
    const std::uint64_t n = read_size(r, type_name_v<T>);
    if (n > r.available() / element_min) fail_count(r, type_name_v<T>, n, element_min);
    const auto count = static_cast<std::size_t>(n);
    T value;
    // Buckets: a pointer each, at most 8 times the bytes the elements take.
    if constexpr (requires { value.reserve(count); }) value.reserve(count);
    reader_access::pledge pledge(r, count, element_min);
    for (std::size_t i = 0; i < count; ++i) {
      pledge.next();
      const std::size_t before = value.size();
      if constexpr (is_map) {
        K key = r.read<K>();
        auto mapped = r.read<typename T::mapped_type>();
        value.emplace_hint(value.cend(), std::move(key), std::move(mapped));
      } else {
        value.emplace_hint(value.cend(), r.read<K>());
      }
      if (value.size() == before)
        r.fail("duplicate key in " + readable_type_name(type_name_v<T>));
    }
    return value;
  }
};

template <class T>
struct builtin_serializer : builtin_impl<kind_of<T>(), T> {};

template <class T>
struct builtin_impl<kind::unsupported, T> {
  static constexpr bool mproc_unsupported = true;
};

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
    if (h.magic != frame_magic)
      throw ProcessError("mproc: not an mproc frame (bad magic " + hex(h.magic) + ")");
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
                       " of the mproc frame format (this build reads version " +
                       std::to_string(frame_version) + ")");
  if (h.flags != 0)
    throw ProcessError("mproc: unsupported mproc frame flags " + hex(h.flags));
  if (h.payload_size > std::numeric_limits<std::size_t>::max() / 2)
    throw ProcessError("mproc: corrupted frame: payload size " + std::to_string(h.payload_size) +
                       " is impossible");
  return h;
}

}  // namespace detail

// The primary template: the built-in types (see the top of this file). A
// type that is not built in has neither write() nor read() here, so it is not
// serializable.
template <class T, class Enable>
struct serializer : detail::builtin_serializer<T> {};

namespace detail {

// Decoding a T yields a value that points into the bytes decoded: T is a
// view (std::basic_string_view, std::span), holds one (in a container,
// tuple, optional, variant), or is a user type whose serializer says so
// (borrows_input, or MPROC_SERIALIZE with such a member). Seen: the user
// types being looked into (recursive types).
template <class T, class... Seen>
constexpr bool borrows_input() {
  using U = std::remove_cv_t<T>;
  if constexpr ((std::is_same_v<U, Seen> || ...) || !serializable<U>) {
    return false;
  } else if constexpr (!is_builtin_v<U>) {
    if constexpr (requires { { serializer<U>::borrows_input } -> std::convertible_to<bool>; })
      return serializer<U>::borrows_input;
    else if constexpr (requires { serializer<U>::template mproc_borrows_input<U, Seen...>(); })
      return serializer<U>::template mproc_borrows_input<U, Seen...>();
    else
      return false;
  } else if constexpr (kind_of<U>() == kind::view) {
    return true;
  } else if constexpr (kind_of<U>() == kind::variant || kind_of<U>() == kind::tuple) {
    return []<template <class...> class Tm, class... Ts>(std::type_identity<Tm<Ts...>>) {
      return (borrows_input<Ts, Seen...>() || ...);
    }(std::type_identity<U>{});
  } else if constexpr (kind_of<U>() == kind::associative && map_like<U>) {
    return borrows_input<typename U::key_type, Seen...>() || borrows_input<typename U::mapped_type, Seen...>();
  } else if constexpr (kind_of<U>() == kind::optional || kind_of<U>() == kind::fixed_array ||
                       kind_of<U>() == kind::sequence || kind_of<U>() == kind::associative) {
    return borrows_input<typename U::value_type, Seen...>();
  } else {
    return false;  // arithmetic, bitwise, strings and vectors of them: owning
  }
}

// The innermost type in T that borrows its input (for error messages).
template <class T>
struct first_borrowing {
  using type = T;
};
template <class T>
using first_borrowing_t = typename first_borrowing<std::remove_cv_t<T>>::type;
template <template <class...> class Tm, class... Ts>
  requires(is_builtin_v<Tm<Ts...>> && kind_of<Tm<Ts...>>() != kind::view)
struct first_borrowing<Tm<Ts...>> {
  template <class First, class... Rest>
  static auto pick() {
    if constexpr (borrows_input<First>())
      return std::type_identity<first_borrowing_t<First>>{};
    else
      return pick<Rest...>();
  }
  using type = typename decltype(pick<Ts...>())::type;
};
template <class E, std::size_t N>
struct first_borrowing<std::array<E, N>> {
  using type = first_borrowing_t<E>;
};

}  // namespace detail

// True when T is serializable and decoding it yields a value that owns all
// its data: no std::string_view or std::span<const U> in it, which would point
// into the bytes received. Only such types can be received where the value
// outlives those bytes: mp::loads, Connection::recv, Queue items, Pool
// results. (Views remain fine as Pool task parameters, decoded in place for
// the duration of the call.)
template <class T>
concept owning_decodable = serializable<T> && !detail::borrows_input<T>();

namespace detail {

// Where a value is received, for the error a view type gives there.
enum class decode_site { loads, connection_recv, queue_item, pool_result };

// Instantiated for a view V (or a type holding views) received at Where.
template <class V, decode_site Where>
struct view_cannot_outlive_buffer {
  static_assert(dependent_false<V>,
                "mproc: this type (the V of mproc::detail::view_cannot_outlive_buffer<V, Where> in this "
                "error) reads views (std::string_view, std::span) pointing into the bytes received, which "
                "are gone once the value is returned (they are the sender's memory, in effect): receive a "
                "type with owning members (std::string, std::vector<U>) instead. Views are decoded only as "
                "Pool task parameters, valid during the call.");
  static constexpr bool value = true;  // one error is enough
};
template <class C, class Tr, decode_site Where>
struct view_cannot_outlive_buffer<std::basic_string_view<C, Tr>, Where> {
  static_assert(dependent_false<C>,
                "mproc: std::string_view points into the sender's memory (the bytes received, gone once "
                "the value is returned): receive std::string instead (the Where of "
                "mproc::detail::view_cannot_outlive_buffer<V, Where> in this error says where). Views are "
                "decoded only as Pool task parameters, valid during the call.");
  static constexpr bool value = true;
};
template <class E, std::size_t N, decode_site Where>
struct view_cannot_outlive_buffer<std::span<E, N>, Where> {
  static_assert(dependent_false<E>,
                "mproc: std::span<const U> points into the sender's memory (the bytes received, gone once "
                "the value is returned): receive std::vector<U> instead (the Where of "
                "mproc::detail::view_cannot_outlive_buffer<V, Where> in this error says where). Views are "
                "decoded only as Pool task parameters, valid during the call.");
  static constexpr bool value = true;
};

// static_assert(check_owning_decodable<T, Where>()) fails with a message
// naming the view in T and what to receive instead, unless T is
// owning_decodable (or not serializable at all, which is reported elsewhere,
// or void).
template <class T, decode_site Where>
constexpr bool check_owning_decodable() {
  if constexpr (std::is_void_v<T> || !serializable<T> || owning_decodable<T>)
    return true;
  else
    return view_cannot_outlive_buffer<first_borrowing_t<T>, Where>::value;
}

}  // namespace detail

// A 64-bit hash of T's name, stable within one program image: the frame's
// type check. A view and its owning type share it (std::span<const double>
// and std::vector<double>, std::string_view and std::string), as do
// containers that differ only in their allocator. Distinct types get distinct
// fingerprints in practice. Never throws.
template <class T>
constexpr std::uint64_t type_fingerprint() noexcept {
  return detail::fnv1a(detail::type_name_v<detail::wire_t<std::remove_cvref_t<T>>>);
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
                       detail::readable_type_name(detail::type_name_v<std::remove_cvref_t<T>>) +
                       ": need " + std::to_string(encoded_size(value)) + " bytes, have " +
                       std::to_string(out.size()));
  }
}

namespace detail {

// loads<T> without the owning check: a view type points into `frame`. For
// the decoder's own tests and fuzzing.
template <class T>
T decode_frame(std::span<const std::byte> frame) {
  using U = std::remove_cv_t<T>;
  static_assert(assert_serializable<U>());
  const frame_header h = parse_frame_header(frame);
  if (h.fingerprint != type_fingerprint<U>())
    throw ProcessError("mproc: type mismatch: expected a frame of " + readable_type_name(type_name_v<U>) +
                       " (fingerprint " + hex(type_fingerprint<U>()) +
                       "), got a frame of another type (fingerprint " + hex(h.fingerprint) + ")");
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
// for Type, writing and reading the listed members in order. Write it at
// global namespace scope, after Type is defined and before Type is sent.
// Type must be default-constructible with assignable public members; a Type
// spelled with commas needs an alias. Up to 64 members. Its min_size is the
// sum of the members', and it borrows its input (see owning_decodable) if a
// member does.
#define MPROC_SERIALIZE(Type, ...)                                            \
  template <>                                                                 \
  struct mproc::serializer<Type> {                                            \
    static constexpr bool zero_copy = true;                                   \
    static void write([[maybe_unused]] ::mproc::Writer& w,                    \
                      [[maybe_unused]] const Type& value) {                   \
      MPROC_DETAIL_FOR_EACH(MPROC_DETAIL_WRITE_MEMBER, __VA_ARGS__)           \
    }                                                                         \
    static Type read([[maybe_unused]] ::mproc::Reader& r) {                   \
      Type value{};                                                           \
      MPROC_DETAIL_FOR_EACH(MPROC_DETAIL_READ_MEMBER, __VA_ARGS__)            \
      return value;                                                           \
    }                                                                         \
    /* Templates: evaluated once Type's serializer is complete (recursion). */ \
    template <class Self>                                                     \
    static constexpr std::size_t mproc_min_size() {                           \
      return std::size_t{0} MPROC_DETAIL_FOR_EACH(MPROC_DETAIL_MIN_SIZE_MEMBER, __VA_ARGS__); \
    }                                                                         \
    template <class Self, class... Seen>                                      \
    static constexpr bool mproc_borrows_input() {                             \
      return false MPROC_DETAIL_FOR_EACH(MPROC_DETAIL_BORROWS_MEMBER, __VA_ARGS__); \
    }                                                                         \
  }

#define MPROC_DETAIL_WRITE_MEMBER(member) w.write(value.member);
#define MPROC_DETAIL_READ_MEMBER(member) value.member = r.read<decltype(value.member)>();
#define MPROC_DETAIL_MIN_SIZE_MEMBER(member) \
  +::mproc::detail::min_size_v<decltype(std::declval<const Self&>().member)>
#define MPROC_DETAIL_BORROWS_MEMBER(member) \
  || ::mproc::detail::borrows_input<decltype(std::declval<const Self&>().member), Self, Seen...>()

// MPROC_DETAIL_FOR_EACH(m, a, b, c) -> m(a) m(b) m(c)
#define MPROC_DETAIL_FOR_EACH(macro, ...) \
  __VA_OPT__(MPROC_DETAIL_PP_EXPAND(MPROC_DETAIL_FOR_EACH_STEP(macro, __VA_ARGS__)))
#define MPROC_DETAIL_FOR_EACH_STEP(macro, first, ...) \
  macro(first) __VA_OPT__(MPROC_DETAIL_FOR_EACH_AGAIN MPROC_DETAIL_PP_PARENS(macro, __VA_ARGS__))
#define MPROC_DETAIL_FOR_EACH_AGAIN() MPROC_DETAIL_FOR_EACH_STEP
#define MPROC_DETAIL_PP_PARENS ()
#define MPROC_DETAIL_PP_EXPAND(...) \
  MPROC_DETAIL_PP_EXPAND3(MPROC_DETAIL_PP_EXPAND3(MPROC_DETAIL_PP_EXPAND3(MPROC_DETAIL_PP_EXPAND3(__VA_ARGS__))))
#define MPROC_DETAIL_PP_EXPAND3(...) \
  MPROC_DETAIL_PP_EXPAND2(MPROC_DETAIL_PP_EXPAND2(MPROC_DETAIL_PP_EXPAND2(MPROC_DETAIL_PP_EXPAND2(__VA_ARGS__))))
#define MPROC_DETAIL_PP_EXPAND2(...) \
  MPROC_DETAIL_PP_EXPAND1(MPROC_DETAIL_PP_EXPAND1(MPROC_DETAIL_PP_EXPAND1(MPROC_DETAIL_PP_EXPAND1(__VA_ARGS__))))
#define MPROC_DETAIL_PP_EXPAND1(...) __VA_ARGS__
