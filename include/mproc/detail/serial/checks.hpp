// Serialization machinery, layer 3: the compile-time checks and their
// messages. assert_serializable<T>() names the innermost type that cannot
// cross a process boundary (a pointer, a view member of a bitwise struct, an
// uninspectable aggregate, the member an aggregate cannot send or why it
// cannot be sent member by member); borrows_input<T>() tells whether decoding T points
// into the bytes received (behind the owning_decodable concept), and
// check_owning_decodable<T, decode_site>() names the view and the owning type
// to receive instead at mp::loads, Connection::recv, Queue items and Pool
// results. tests/compile_fail/*.cpp match on these messages.
// Part of <mproc/serialize.hpp>, which includes it after its declarations
// (serializer, serializable, Writer/Reader); not a header of its own.
// SPDX-License-Identifier: MIT
#pragma once

#ifndef MPROC_DETAIL_SERIALIZE_DECLARED
#error "mproc/detail/serial/*.hpp are parts of <mproc/serialize.hpp>: include that instead"
#endif

#include <array>
#include <cstddef>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>

namespace mproc {

namespace detail {

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

// Instantiated for an aggregate T sent member by member (it is not
// trivially copyable) with a member of type Member that cannot be sent.
template <class T, class Member>
struct member_cannot_cross {
  static_assert(dependent_false<T>,
                "mproc: this struct cannot cross a process boundary: it is sent member by member (an aggregate "
                "that is not trivially copyable), and its member of type Member (T and Member of "
                "mproc::detail::member_cannot_cross<T, Member> in this error) cannot be sent: a pointer, a "
                "reference or a view would point into the sender's memory (hold the data itself: std::string "
                "for const char* or std::string_view, std::vector<U> for U* or std::span<const U>), which "
                "member of a union is live is unknown, and other types (std::unique_ptr, std::function) have "
                "no serialization. Or give the struct a serializer (MPROC_SERIALIZE(T, members...), see "
                "mproc/serialize.hpp).");
  static constexpr bool value = true;  // one error is enough
};

// Instantiated for an aggregate T, not trivially copyable, with a base class.
template <class T>
struct aggregate_has_base_class {
  static_assert(dependent_false<T>,
                "mproc: this struct (the T of mproc::detail::aggregate_has_base_class<T> in this error) would "
                "be sent member by member (an aggregate that is not trivially copyable), but it has a base "
                "class, whose members structured bindings do not reach. Give it a serializer naming every "
                "member: MPROC_SERIALIZE(T, base_member..., member...) at global scope (see "
                "mproc/serialize.hpp).");
  static constexpr bool value = true;
};

// Instantiated for an aggregate T, not trivially copyable, with a C array
// member.
template <class T>
struct aggregate_has_c_array {
  static_assert(dependent_false<T>,
                "mproc: this struct (the T of mproc::detail::aggregate_has_c_array<T> in this error) would be "
                "sent member by member (an aggregate that is not trivially copyable), but it has a C array "
                "member, which cannot be rebuilt from a value: use std::array<E, N> instead, or give it a "
                "serializer (MPROC_SERIALIZE(T, members...)).");
  static constexpr bool value = true;
};

// Instantiated for an aggregate T, not trivially copyable, whose members
// cannot be counted.
template <class T>
struct aggregate_not_inspectable {
  static_assert(dependent_false<T>,
                "mproc: this struct (the T of mproc::detail::aggregate_not_inspectable<T> in this error) would "
                "be sent member by member (an aggregate that is not trivially copyable), but its members "
                "cannot be counted: it has more than 64 members, or a reference member, or a member that "
                "cannot be initialized from a value of its type. Hold values instead of references, group "
                "members into nested structs, or give it a serializer (MPROC_SERIALIZE(T, members...)).");
  static constexpr bool value = true;
};

template <class T>
constexpr bool assert_serializable();

// Names the first member in M... that the aggregate T cannot send: the
// innermost culprit of a member that is a container or an aggregate itself.
template <class T, class M, class... Rest>
constexpr bool report_first_member(member_list<void, M, Rest...>) {
  using V = std::remove_cv_t<M>;
  if constexpr (member_crosses<M>())
    return report_first_member<T>(member_list<void, Rest...>{});
  else if constexpr (!std::is_reference_v<M> && !std::is_volatile_v<M> && std::is_class_v<V> && !serializable<V> &&
                     (std::is_aggregate_v<V> || requires { typename V::value_type; }))
    return assert_serializable<V>();
  else
    return member_cannot_cross<T, std::conditional_t<std::is_reference_v<M>, M, V>>::value;
}
template <class T>
constexpr bool report_first_member(member_list<void>) {
  return true;
}

// Says why the aggregate T, not trivially copyable, cannot be sent member
// by member. Always true, after a static_assert.
template <class T>
constexpr bool report_memberwise() {
  constexpr memberwise_fault fault = memberwise_fault_of<T>();
  if constexpr (fault == memberwise_fault::not_inspectable)
    return aggregate_not_inspectable<T>::value;
  else if constexpr (fault == memberwise_fault::base_class)
    return aggregate_has_base_class<T>::value;
  else if constexpr (fault == memberwise_fault::c_array)
    return aggregate_has_c_array<T>::value;
  else if constexpr (fault == memberwise_fault::member)
    return report_first_member<T>(member_types_t<T, aggregate_members<T>()>{});
  else
    return true;
}

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
  } else if constexpr (is_instance_v<U, std::tuple> || is_instance_v<U, std::pair> || is_instance_v<U, std::variant>) {
    if constexpr (all_serializable_v<U>)
      return cannot_cross_process_boundary<U>::value;
    else
      return []<template <class...> class Tm, class... Ts>(std::type_identity<Tm<Ts...>>) {
        return ((serializable<Ts> || assert_serializable<Ts>()) && ...);
      }(std::type_identity<U>{});
  } else if constexpr (requires {
                         typename U::key_type;
                         typename U::mapped_type;
                       }) {
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
  } else if constexpr (std::is_class_v<U> && std::is_aggregate_v<U>) {
    return report_memberwise<U>() && false;
  } else {
    return cannot_cross_process_boundary<U>::value;
  }
}

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
    if constexpr (requires {
                    { serializer<U>::borrows_input } -> std::convertible_to<bool>;
                  })
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
  if constexpr (std::is_void_v<T> || !serializable<T> || !borrows_input<T>())
    return true;
  else
    return view_cannot_outlive_buffer<first_borrowing_t<T>, Where>::value;
}

}  // namespace detail

}  // namespace mproc
