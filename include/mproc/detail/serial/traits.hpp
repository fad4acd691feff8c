// Serialization machinery, layer 1 (of traits -> user_types -> checks ->
// core -> std_types -> frame): what kind of type T is. Type predicates
// (std::optional, std::span, ...), the container shapes mproc recognizes (std
// and look-alikes such as std::pmr), the inspection of an aggregate's members
// without naming them (is a plain struct safe to copy bitwise?), and
// kind_of<T>(), which picks T's built-in serializer (std_types.hpp).
// Part of <mproc/serialize.hpp>, which includes it after its declarations
// (serializer, serializable, Writer/Reader); not a header of its own.
// SPDX-License-Identifier: MIT
#pragma once

#ifndef MPROC_DETAIL_SERIALIZE_DECLARED
#error "mproc/detail/serial/*.hpp are parts of <mproc/serialize.hpp>: include that instead"
#endif

#include <array>
#include <concepts>
#include <cstddef>
#include <initializer_list>
#include <iterator>
#include <optional>
#include <span>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace mproc {

namespace detail {

// Tag base of every built-in serializer.
struct builtin_tag {};

template <class>
inline constexpr bool dependent_false = false;

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
    is_instance_v<T, std::optional> || is_instance_v<T, std::variant> || is_instance_v<T, std::tuple> ||
    is_instance_v<T, std::pair> || is_instance_v<T, std::basic_string_view> ||
    is_instance_v<T, std::initializer_list> || is_std_span_v<T> || is_reference_wrapper_v<T> ||
    std::is_same_v<T, std::monostate>;

// T is copied bitwise by its serializer (a built-in one: a user
// specialization always takes over, even for a trivially copyable T).
template <class T>
concept bitwise = requires { requires serializer<T>::mproc_bitwise; };

// Every serializer<T> is one of mproc's (not a user specialization).
template <class T>
inline constexpr bool is_builtin_v = std::is_base_of_v<builtin_tag, serializer<T>>;

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
concept contiguous_container = sequence_container<C> && std::contiguous_iterator<typename C::iterator> &&
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
concept contiguous_bitwise_container = contiguous_container<C> && bitwise<typename C::value_type>;

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
// operator template accepts (or refuses) each member's type. Two uses: is a
// trivially copyable struct safe to copy bitwise (bitwise_safe), and can an
// aggregate that is not be sent member by member (memberwise_fault_of; its
// members are then reached by structured binding, members.hpp).

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
// The same as a prvalue: also initializes move-only and immovable members,
// but no lvalue reference. Defined, never called: a member's converting
// constructor template (libc++'s std::optional<U>) may odr-use it, and a T
// of an anonymous namespace cannot have it defined elsewhere.
template <class T>
struct init_value {
  template <class U>
    requires(!std::is_same_v<std::remove_cv_t<U>, T>)
  operator U() const noexcept {
    __builtin_unreachable();
  }
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
template <class T, class Probe, std::size_t Lo, std::size_t Hi>
constexpr std::size_t last_initializer_count() {
  if constexpr (Hi - Lo <= 1) {
    return Lo;
  } else {
    constexpr std::size_t mid = Lo + (Hi - Lo) / 2;
    if constexpr (brace_init_v<T, Probe, mid>)
      return last_initializer_count<T, Probe, mid, Hi>();
    else
      return last_initializer_count<T, Probe, Lo, mid>();
  }
}
template <class T, class Probe, std::size_t N>
constexpr std::size_t initializer_count_from() {
  if constexpr (N > max_aggregate_initializers)
    return uninspectable;
  else if constexpr (brace_init_v<T, Probe, 2 * N + 1>)
    return initializer_count_from<T, Probe, 2 * N + 1>();
  else
    return last_initializer_count<T, Probe, N, 2 * N + 1>();
}
// The first N <= 16 with T{any x N} well-formed (0 unless a member has no
// default: a reference, a class without default constructor).
template <class T, class Probe, std::size_t N = 0>
constexpr std::size_t first_initializer_count() {
  if constexpr (N > 16)
    return uninspectable;
  else if constexpr (brace_init_v<T, Probe, N>)
    return N;
  else
    return first_initializer_count<T, Probe, N + 1>();
}

// How many initializers the aggregate class T takes at most: its bases and
// members, counting each element of a C array member (brace elision), or
// uninspectable beyond max_aggregate_initializers. Probe: init_any, or
// init_value to count move-only members too.
template <class T, class Probe = init_any<T>>
constexpr std::size_t aggregate_initializers() {
  constexpr std::size_t first = first_initializer_count<T, Probe>();
  if constexpr (first == uninspectable) {
    return uninspectable;
  } else {
    constexpr std::size_t n = initializer_count_from<T, Probe, first>();
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
  } else if constexpr (is_instance_v<V, std::basic_string_view> || is_std_span_v<V> || is_reference_wrapper_v<V> ||
                       is_instance_v<V, std::initializer_list>) {
    return false;
  } else if constexpr (is_instance_v<V, std::optional> || is_std_array_v<V>) {
    return bitwise_safe<typename V::value_type>();
  } else if constexpr (is_instance_v<V, std::variant> || is_instance_v<V, std::tuple> || is_instance_v<V, std::pair>) {
    return []<template <class...> class Tm, class... Ts>(std::type_identity<Tm<Ts...>>) {
      return (bitwise_safe<Ts>() && ...);
    }(std::type_identity<V>{});
  } else if constexpr (std::is_class_v<V> && std::is_aggregate_v<V>) {
    return aggregate_bitwise_safe<V>();
  } else {
    return true;  // a union or a class with private members: cannot be seen into
  }
}

// ------------------------------------------------ aggregates, member by member
//
// An aggregate that is not trivially copyable (it holds a std::string, a
// std::vector, ...) is sent member by member in declaration order, reached by
// structured binding (members.hpp), and rebuilt by aggregate initialization
// from the decoded members. That takes the exact number of its members (no
// base class, no C array member: each of its elements counts as an
// initializer) and members that can all cross.

template <class T, class... Seen>
constexpr bool borrows_input();  // checks.hpp

// Converts only to T's base classes.
template <class T>
struct init_base {
  template <class U>
    requires(std::is_base_of_v<U, T> && !std::is_same_v<U, T>)
  operator U() const noexcept {
    __builtin_unreachable();  // never called (see init_value)
  }
};

// T(p_0, ..., p_{N-1}) is well-formed: parenthesized aggregate initialization
// (C++20) never elides braces, so it fails when a C array member is among
// T's first N elements.
template <class T, class Probe, std::size_t... I>
constexpr bool paren_init_with(std::index_sequence<I...>) {
  return requires { T((static_cast<void>(I), std::declval<Probe>())...); };
}

// A member of type M (its declared type) can be sent and rebuilt: not a
// reference, a union or a view (borrows_input), and serializable.
template <class M>
constexpr bool member_crosses() {
  using V = std::remove_cv_t<M>;
  if constexpr (std::is_reference_v<M> || std::is_volatile_v<M> || std::is_union_v<V> || !serializable<V>)
    return false;
  else
    return !borrows_input<V>();
}

// The number of members of an aggregate with no base class and no C array
// member (counting move-only ones).
template <class T>
constexpr std::size_t aggregate_members() {
  return aggregate_initializers<T, init_value<T>>();
}

// Why the aggregate class T cannot be sent member by member (none: it can).
enum class memberwise_fault { none, not_inspectable, base_class, c_array, member };

template <class T>
constexpr memberwise_fault memberwise_fault_of() {
  constexpr std::size_t n = aggregate_members<T>();
  if constexpr (n == uninspectable || n > max_aggregate_members) {
    return memberwise_fault::not_inspectable;
  } else if constexpr (requires { T{std::declval<init_base<T>>()}; }) {
    return memberwise_fault::base_class;
  } else if constexpr (!paren_init_with<T, init_value<T>>(std::make_index_sequence<n>())) {
    return memberwise_fault::c_array;
  } else {
    return []<class... M>(member_list<void, M...>) {
      return (member_crosses<M>() && ...) ? memberwise_fault::none : memberwise_fault::member;
    }(member_types_t<T, n>{});
  }
}

// Which built-in serializer handles T.
enum class kind {
  unsupported,
  boolean,      // bool: one byte, validated
  empty,        // std::monostate, std::tuple<>, std::array<T, 0>, an aggregate without
                // members that is not trivially copyable: one zero byte (so
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
  aggregate,    // an aggregate that is not trivially copyable: its members in order
};

template <class T>
constexpr kind kind_of() {
  if constexpr (std::is_reference_v<T> || std::is_pointer_v<T> || std::is_member_pointer_v<T> ||
                std::is_null_pointer_v<T> || std::is_function_v<T> || std::is_void_v<T> || std::is_array_v<T> ||
                std::is_const_v<T> || std::is_volatile_v<T>) {
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
  } else if constexpr (std::is_class_v<T> && std::is_aggregate_v<T>) {
    if constexpr (memberwise_fault_of<T>() != memberwise_fault::none)
      return kind::unsupported;
    else
      return aggregate_members<T>() == 0 ? kind::empty : kind::aggregate;
  } else {
    return kind::unsupported;
  }
}

}  // namespace detail

}  // namespace mproc
