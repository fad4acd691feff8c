// Compile-time type names and their 64-bit hashes, for frame fingerprints and
// for error messages that name the type being decoded.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace mproc::detail {

// The compiler's spelling of T ("std::vector<double>"), extracted from
// __PRETTY_FUNCTION__ at compile time. The same in every process of one
// program image; differs between compilers. Use type_name_v.
template <class T>
constexpr std::string_view type_name_of() noexcept {
  // GCC:   "... [with T = std::vector<double>; std::string_view = ...]"
  // Clang: "... [T = std::vector<double>]"
  const std::string_view pretty = __PRETTY_FUNCTION__;
  const std::size_t key = pretty.find("T = ");
  if (key == std::string_view::npos) return pretty;
  const std::size_t first = key + 4;
  std::size_t last = pretty.find(';', first);
  if (last == std::string_view::npos) last = pretty.rfind(']');
  if (last == std::string_view::npos || last < first) return pretty.substr(first);
  return pretty.substr(first, last - first);
}

template <class T>
inline constexpr std::string_view type_name_v = type_name_of<T>();

// 64-bit FNV-1a.
constexpr std::uint64_t fnv1a(std::string_view s) noexcept {
  std::uint64_t h = 14695981039346656037ull;
  for (const char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h;
}

// A compiler's type name made readable for messages: "std::string" for
// "std::__cxx11::basic_string<char>" (libstdc++) or "std::__1::basic_string<char>"
// (libc++), no default span extent, ">>" for "> >".
inline std::string readable_type_name(std::string_view raw) {
  static constexpr std::string_view rules[][2] = {
      {"std::__cxx11::", "std::"},  // libstdc++'s inline ABI namespace
      {"std::__1::", "std::"},  // libc++'s
      {"std::basic_string<char, std::char_traits<char>, std::allocator<char> >", "std::string"},
      {"std::basic_string<char>", "std::string"},
      {"std::basic_string_view<char, std::char_traits<char> >", "std::string_view"},
      {"std::basic_string_view<char>", "std::string_view"},
      {", 18446744073709551615>", ">"},  // std::span's dynamic extent (Clang)
      {" >", ">"},  // GCC writes "> >"
  };
  std::string s(raw);
  for (const auto& rule : rules) {
    const std::string_view from = rule[0];
    const std::string_view to = rule[1];
    // Rebuilt rather than replace()d in place: GCC 12 warns falsely (-Wrestrict)
    // about std::string::replace. Repeated until stable for "> > >".
    for (bool changed = true; changed;) {
      changed = false;
      std::string out;
      out.reserve(s.size());
      for (std::size_t at = 0; at < s.size();) {
        if (s.compare(at, from.size(), from) == 0) {
          out.append(to);
          at += from.size();
          changed = true;
        } else {
          out.push_back(s[at++]);
        }
      }
      s = std::move(out);
    }
  }
  return s;
}

}  // namespace mproc::detail
