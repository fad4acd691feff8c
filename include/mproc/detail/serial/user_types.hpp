// Serialization machinery, layer 2: what a user's serializer<T> may declare
// besides write() and read() (min_size, zero_copy; borrows_input is read in
// checks.hpp), read with defaults, and MPROC_SERIALIZE's per-member
// steps and its preprocessor loop (the macro itself is in <mproc/serialize.hpp>).
// Part of <mproc/serialize.hpp>, which includes it after its declarations
// (serializer, serializable, Writer/Reader); not a header of its own.
// SPDX-License-Identifier: MIT
#pragma once

#ifndef MPROC_DETAIL_SERIALIZE_DECLARED
#error "mproc/detail/serial/*.hpp are parts of <mproc/serialize.hpp>: include that instead"
#endif

#include <concepts>
#include <cstddef>
#include <type_traits>
#include <utility>

namespace mproc {

namespace detail {

// A lower bound of the encoded size of any T: at least 1, since every value
// takes at least one byte (a user type whose serializer writes nothing is
// followed by a zero byte; see Writer::write).
template <class T>
constexpr std::size_t min_size_of() noexcept {
  std::size_t n = 0;
  if constexpr (requires {
                  { serializer<T>::min_size } -> std::convertible_to<std::size_t>;
                })
    n = serializer<T>::min_size;
  else if constexpr (requires {
                       { serializer<T>::template mproc_min_size<T>() } -> std::convertible_to<std::size_t>;
                     })
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
  else if constexpr (requires {
                       { serializer<T>::zero_copy } -> std::convertible_to<bool>;
                     })
    return serializer<T>::zero_copy;
  else
    return false;
}

}  // namespace detail

}  // namespace mproc

// MPROC_SERIALIZE's per-member steps.
#define MPROC_DETAIL_WRITE_MEMBER(member) w.write(value.member);
#define MPROC_DETAIL_READ_MEMBER(member) value.member = r.read<decltype(value.member)>();
#define MPROC_DETAIL_MIN_SIZE_MEMBER(member) +::mproc::detail::min_size_v<decltype(std::declval<const Self&>().member)>
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
