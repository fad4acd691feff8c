// mproc/detail/serial/members.hpp — an aggregate's members, by structured
// binding.
//
// Layer 0 of the serialization machinery (members -> traits -> user_types ->
// checks -> core -> std_types -> frame): with_members<N>(value, f) calls
// f(member_list<void, M...>{}, members...) with the N members of an
// aggregate, in declaration order, and their declared types (a reference
// member's type is the reference type). traits.hpp finds N and decides
// whether an aggregate is sent member by member; std_types.hpp writes it.
// Part of <mproc/serialize.hpp>, which includes it after its declarations;
// not a header of its own.
// SPDX-License-Identifier: MIT
#pragma once

#ifndef MPROC_DETAIL_SERIALIZE_DECLARED
#error "mproc/detail/serial/*.hpp are parts of <mproc/serialize.hpp>: include that instead"
#endif

#include <cstddef>
#include <utility>

namespace mproc {

namespace detail {

// The declared types of an aggregate's members, after a leading void.
template <class... M>
struct member_list {};

// Most members an aggregate sent member by member may have.
inline constexpr std::size_t max_aggregate_members = 64;

// The names of the first n bindings (MPROC_DETAIL_Nn) and their declared types (MPROC_DETAIL_Tn).
// clang-format off
#define MPROC_DETAIL_N1 m0
#define MPROC_DETAIL_T1 decltype(m0)
#define MPROC_DETAIL_N2 MPROC_DETAIL_N1, m1
#define MPROC_DETAIL_T2 MPROC_DETAIL_T1, decltype(m1)
#define MPROC_DETAIL_N3 MPROC_DETAIL_N2, m2
#define MPROC_DETAIL_T3 MPROC_DETAIL_T2, decltype(m2)
#define MPROC_DETAIL_N4 MPROC_DETAIL_N3, m3
#define MPROC_DETAIL_T4 MPROC_DETAIL_T3, decltype(m3)
#define MPROC_DETAIL_N5 MPROC_DETAIL_N4, m4
#define MPROC_DETAIL_T5 MPROC_DETAIL_T4, decltype(m4)
#define MPROC_DETAIL_N6 MPROC_DETAIL_N5, m5
#define MPROC_DETAIL_T6 MPROC_DETAIL_T5, decltype(m5)
#define MPROC_DETAIL_N7 MPROC_DETAIL_N6, m6
#define MPROC_DETAIL_T7 MPROC_DETAIL_T6, decltype(m6)
#define MPROC_DETAIL_N8 MPROC_DETAIL_N7, m7
#define MPROC_DETAIL_T8 MPROC_DETAIL_T7, decltype(m7)
#define MPROC_DETAIL_N9 MPROC_DETAIL_N8, m8
#define MPROC_DETAIL_T9 MPROC_DETAIL_T8, decltype(m8)
#define MPROC_DETAIL_N10 MPROC_DETAIL_N9, m9
#define MPROC_DETAIL_T10 MPROC_DETAIL_T9, decltype(m9)
#define MPROC_DETAIL_N11 MPROC_DETAIL_N10, m10
#define MPROC_DETAIL_T11 MPROC_DETAIL_T10, decltype(m10)
#define MPROC_DETAIL_N12 MPROC_DETAIL_N11, m11
#define MPROC_DETAIL_T12 MPROC_DETAIL_T11, decltype(m11)
#define MPROC_DETAIL_N13 MPROC_DETAIL_N12, m12
#define MPROC_DETAIL_T13 MPROC_DETAIL_T12, decltype(m12)
#define MPROC_DETAIL_N14 MPROC_DETAIL_N13, m13
#define MPROC_DETAIL_T14 MPROC_DETAIL_T13, decltype(m13)
#define MPROC_DETAIL_N15 MPROC_DETAIL_N14, m14
#define MPROC_DETAIL_T15 MPROC_DETAIL_T14, decltype(m14)
#define MPROC_DETAIL_N16 MPROC_DETAIL_N15, m15
#define MPROC_DETAIL_T16 MPROC_DETAIL_T15, decltype(m15)
#define MPROC_DETAIL_N17 MPROC_DETAIL_N16, m16
#define MPROC_DETAIL_T17 MPROC_DETAIL_T16, decltype(m16)
#define MPROC_DETAIL_N18 MPROC_DETAIL_N17, m17
#define MPROC_DETAIL_T18 MPROC_DETAIL_T17, decltype(m17)
#define MPROC_DETAIL_N19 MPROC_DETAIL_N18, m18
#define MPROC_DETAIL_T19 MPROC_DETAIL_T18, decltype(m18)
#define MPROC_DETAIL_N20 MPROC_DETAIL_N19, m19
#define MPROC_DETAIL_T20 MPROC_DETAIL_T19, decltype(m19)
#define MPROC_DETAIL_N21 MPROC_DETAIL_N20, m20
#define MPROC_DETAIL_T21 MPROC_DETAIL_T20, decltype(m20)
#define MPROC_DETAIL_N22 MPROC_DETAIL_N21, m21
#define MPROC_DETAIL_T22 MPROC_DETAIL_T21, decltype(m21)
#define MPROC_DETAIL_N23 MPROC_DETAIL_N22, m22
#define MPROC_DETAIL_T23 MPROC_DETAIL_T22, decltype(m22)
#define MPROC_DETAIL_N24 MPROC_DETAIL_N23, m23
#define MPROC_DETAIL_T24 MPROC_DETAIL_T23, decltype(m23)
#define MPROC_DETAIL_N25 MPROC_DETAIL_N24, m24
#define MPROC_DETAIL_T25 MPROC_DETAIL_T24, decltype(m24)
#define MPROC_DETAIL_N26 MPROC_DETAIL_N25, m25
#define MPROC_DETAIL_T26 MPROC_DETAIL_T25, decltype(m25)
#define MPROC_DETAIL_N27 MPROC_DETAIL_N26, m26
#define MPROC_DETAIL_T27 MPROC_DETAIL_T26, decltype(m26)
#define MPROC_DETAIL_N28 MPROC_DETAIL_N27, m27
#define MPROC_DETAIL_T28 MPROC_DETAIL_T27, decltype(m27)
#define MPROC_DETAIL_N29 MPROC_DETAIL_N28, m28
#define MPROC_DETAIL_T29 MPROC_DETAIL_T28, decltype(m28)
#define MPROC_DETAIL_N30 MPROC_DETAIL_N29, m29
#define MPROC_DETAIL_T30 MPROC_DETAIL_T29, decltype(m29)
#define MPROC_DETAIL_N31 MPROC_DETAIL_N30, m30
#define MPROC_DETAIL_T31 MPROC_DETAIL_T30, decltype(m30)
#define MPROC_DETAIL_N32 MPROC_DETAIL_N31, m31
#define MPROC_DETAIL_T32 MPROC_DETAIL_T31, decltype(m31)
#define MPROC_DETAIL_N33 MPROC_DETAIL_N32, m32
#define MPROC_DETAIL_T33 MPROC_DETAIL_T32, decltype(m32)
#define MPROC_DETAIL_N34 MPROC_DETAIL_N33, m33
#define MPROC_DETAIL_T34 MPROC_DETAIL_T33, decltype(m33)
#define MPROC_DETAIL_N35 MPROC_DETAIL_N34, m34
#define MPROC_DETAIL_T35 MPROC_DETAIL_T34, decltype(m34)
#define MPROC_DETAIL_N36 MPROC_DETAIL_N35, m35
#define MPROC_DETAIL_T36 MPROC_DETAIL_T35, decltype(m35)
#define MPROC_DETAIL_N37 MPROC_DETAIL_N36, m36
#define MPROC_DETAIL_T37 MPROC_DETAIL_T36, decltype(m36)
#define MPROC_DETAIL_N38 MPROC_DETAIL_N37, m37
#define MPROC_DETAIL_T38 MPROC_DETAIL_T37, decltype(m37)
#define MPROC_DETAIL_N39 MPROC_DETAIL_N38, m38
#define MPROC_DETAIL_T39 MPROC_DETAIL_T38, decltype(m38)
#define MPROC_DETAIL_N40 MPROC_DETAIL_N39, m39
#define MPROC_DETAIL_T40 MPROC_DETAIL_T39, decltype(m39)
#define MPROC_DETAIL_N41 MPROC_DETAIL_N40, m40
#define MPROC_DETAIL_T41 MPROC_DETAIL_T40, decltype(m40)
#define MPROC_DETAIL_N42 MPROC_DETAIL_N41, m41
#define MPROC_DETAIL_T42 MPROC_DETAIL_T41, decltype(m41)
#define MPROC_DETAIL_N43 MPROC_DETAIL_N42, m42
#define MPROC_DETAIL_T43 MPROC_DETAIL_T42, decltype(m42)
#define MPROC_DETAIL_N44 MPROC_DETAIL_N43, m43
#define MPROC_DETAIL_T44 MPROC_DETAIL_T43, decltype(m43)
#define MPROC_DETAIL_N45 MPROC_DETAIL_N44, m44
#define MPROC_DETAIL_T45 MPROC_DETAIL_T44, decltype(m44)
#define MPROC_DETAIL_N46 MPROC_DETAIL_N45, m45
#define MPROC_DETAIL_T46 MPROC_DETAIL_T45, decltype(m45)
#define MPROC_DETAIL_N47 MPROC_DETAIL_N46, m46
#define MPROC_DETAIL_T47 MPROC_DETAIL_T46, decltype(m46)
#define MPROC_DETAIL_N48 MPROC_DETAIL_N47, m47
#define MPROC_DETAIL_T48 MPROC_DETAIL_T47, decltype(m47)
#define MPROC_DETAIL_N49 MPROC_DETAIL_N48, m48
#define MPROC_DETAIL_T49 MPROC_DETAIL_T48, decltype(m48)
#define MPROC_DETAIL_N50 MPROC_DETAIL_N49, m49
#define MPROC_DETAIL_T50 MPROC_DETAIL_T49, decltype(m49)
#define MPROC_DETAIL_N51 MPROC_DETAIL_N50, m50
#define MPROC_DETAIL_T51 MPROC_DETAIL_T50, decltype(m50)
#define MPROC_DETAIL_N52 MPROC_DETAIL_N51, m51
#define MPROC_DETAIL_T52 MPROC_DETAIL_T51, decltype(m51)
#define MPROC_DETAIL_N53 MPROC_DETAIL_N52, m52
#define MPROC_DETAIL_T53 MPROC_DETAIL_T52, decltype(m52)
#define MPROC_DETAIL_N54 MPROC_DETAIL_N53, m53
#define MPROC_DETAIL_T54 MPROC_DETAIL_T53, decltype(m53)
#define MPROC_DETAIL_N55 MPROC_DETAIL_N54, m54
#define MPROC_DETAIL_T55 MPROC_DETAIL_T54, decltype(m54)
#define MPROC_DETAIL_N56 MPROC_DETAIL_N55, m55
#define MPROC_DETAIL_T56 MPROC_DETAIL_T55, decltype(m55)
#define MPROC_DETAIL_N57 MPROC_DETAIL_N56, m56
#define MPROC_DETAIL_T57 MPROC_DETAIL_T56, decltype(m56)
#define MPROC_DETAIL_N58 MPROC_DETAIL_N57, m57
#define MPROC_DETAIL_T58 MPROC_DETAIL_T57, decltype(m57)
#define MPROC_DETAIL_N59 MPROC_DETAIL_N58, m58
#define MPROC_DETAIL_T59 MPROC_DETAIL_T58, decltype(m58)
#define MPROC_DETAIL_N60 MPROC_DETAIL_N59, m59
#define MPROC_DETAIL_T60 MPROC_DETAIL_T59, decltype(m59)
#define MPROC_DETAIL_N61 MPROC_DETAIL_N60, m60
#define MPROC_DETAIL_T61 MPROC_DETAIL_T60, decltype(m60)
#define MPROC_DETAIL_N62 MPROC_DETAIL_N61, m61
#define MPROC_DETAIL_T62 MPROC_DETAIL_T61, decltype(m61)
#define MPROC_DETAIL_N63 MPROC_DETAIL_N62, m62
#define MPROC_DETAIL_T63 MPROC_DETAIL_T62, decltype(m62)
#define MPROC_DETAIL_N64 MPROC_DETAIL_N63, m63
#define MPROC_DETAIL_T64 MPROC_DETAIL_T63, decltype(m63)
// clang-format on

// One case of with_members: N == n.
#define MPROC_DETAIL_BIND_MEMBERS(n)                                     \
  else if constexpr (N == n) {                                           \
    auto& [MPROC_DETAIL_N##n] = value;                                   \
    return f(member_list<void, MPROC_DETAIL_T##n>{}, MPROC_DETAIL_N##n); \
  }

// Calls f(member_list<void, M...>{}, members...) with the N members of the
// aggregate `value` (N exactly its number of non-static data members, all
// direct: traits.hpp's aggregate_members<T>() checks that before). Returns
// what f returns. A bit-field member is passed as a temporary copy.
template <std::size_t N, class T, class F>
constexpr decltype(auto) with_members([[maybe_unused]] const T& value, F&& f) {
  static_assert(N <= max_aggregate_members, "mproc: an aggregate sent member by member has at most 64 members");
  if constexpr (N == 0) {
    return f(member_list<void>{});
  }
  // clang-format off
  MPROC_DETAIL_BIND_MEMBERS(1) MPROC_DETAIL_BIND_MEMBERS(2) MPROC_DETAIL_BIND_MEMBERS(3) MPROC_DETAIL_BIND_MEMBERS(4)
  MPROC_DETAIL_BIND_MEMBERS(5) MPROC_DETAIL_BIND_MEMBERS(6) MPROC_DETAIL_BIND_MEMBERS(7) MPROC_DETAIL_BIND_MEMBERS(8)
  MPROC_DETAIL_BIND_MEMBERS(9) MPROC_DETAIL_BIND_MEMBERS(10) MPROC_DETAIL_BIND_MEMBERS(11) MPROC_DETAIL_BIND_MEMBERS(12)
  MPROC_DETAIL_BIND_MEMBERS(13) MPROC_DETAIL_BIND_MEMBERS(14) MPROC_DETAIL_BIND_MEMBERS(15) MPROC_DETAIL_BIND_MEMBERS(16)
  MPROC_DETAIL_BIND_MEMBERS(17) MPROC_DETAIL_BIND_MEMBERS(18) MPROC_DETAIL_BIND_MEMBERS(19) MPROC_DETAIL_BIND_MEMBERS(20)
  MPROC_DETAIL_BIND_MEMBERS(21) MPROC_DETAIL_BIND_MEMBERS(22) MPROC_DETAIL_BIND_MEMBERS(23) MPROC_DETAIL_BIND_MEMBERS(24)
  MPROC_DETAIL_BIND_MEMBERS(25) MPROC_DETAIL_BIND_MEMBERS(26) MPROC_DETAIL_BIND_MEMBERS(27) MPROC_DETAIL_BIND_MEMBERS(28)
  MPROC_DETAIL_BIND_MEMBERS(29) MPROC_DETAIL_BIND_MEMBERS(30) MPROC_DETAIL_BIND_MEMBERS(31) MPROC_DETAIL_BIND_MEMBERS(32)
  MPROC_DETAIL_BIND_MEMBERS(33) MPROC_DETAIL_BIND_MEMBERS(34) MPROC_DETAIL_BIND_MEMBERS(35) MPROC_DETAIL_BIND_MEMBERS(36)
  MPROC_DETAIL_BIND_MEMBERS(37) MPROC_DETAIL_BIND_MEMBERS(38) MPROC_DETAIL_BIND_MEMBERS(39) MPROC_DETAIL_BIND_MEMBERS(40)
  MPROC_DETAIL_BIND_MEMBERS(41) MPROC_DETAIL_BIND_MEMBERS(42) MPROC_DETAIL_BIND_MEMBERS(43) MPROC_DETAIL_BIND_MEMBERS(44)
  MPROC_DETAIL_BIND_MEMBERS(45) MPROC_DETAIL_BIND_MEMBERS(46) MPROC_DETAIL_BIND_MEMBERS(47) MPROC_DETAIL_BIND_MEMBERS(48)
  MPROC_DETAIL_BIND_MEMBERS(49) MPROC_DETAIL_BIND_MEMBERS(50) MPROC_DETAIL_BIND_MEMBERS(51) MPROC_DETAIL_BIND_MEMBERS(52)
  MPROC_DETAIL_BIND_MEMBERS(53) MPROC_DETAIL_BIND_MEMBERS(54) MPROC_DETAIL_BIND_MEMBERS(55) MPROC_DETAIL_BIND_MEMBERS(56)
  MPROC_DETAIL_BIND_MEMBERS(57) MPROC_DETAIL_BIND_MEMBERS(58) MPROC_DETAIL_BIND_MEMBERS(59) MPROC_DETAIL_BIND_MEMBERS(60)
  MPROC_DETAIL_BIND_MEMBERS(61) MPROC_DETAIL_BIND_MEMBERS(62) MPROC_DETAIL_BIND_MEMBERS(63) MPROC_DETAIL_BIND_MEMBERS(64)
  // clang-format on
}

#undef MPROC_DETAIL_BIND_MEMBERS

// Calls nothing: with_members's f that only names the member types.
struct member_types_fn {
  template <class List, class... A>
  List operator()(List, const A&...) const noexcept {
    return {};
  }
};

// member_list<void, M...> of the N members of the aggregate T.
template <class T, std::size_t N>
using member_types_t = decltype(with_members<N>(std::declval<const T&>(), member_types_fn{}));

}  // namespace detail

}  // namespace mproc
