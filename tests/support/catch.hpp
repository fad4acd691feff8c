// Bridges Catch2 v3 and Debian's Catch2 2.13 so tests are written once.
#pragma once

#include <exception>
#include <string>
#include <utility>

#if __has_include(<catch2/catch_test_macros.hpp>)
#include <catch2/catch_approx.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/matchers/catch_matchers.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
namespace mproc_test {
template <class T>
using MatcherBase = Catch::Matchers::MatcherBase<T>;
using Approx = Catch::Approx;
// Matches a std::string containing `s`.
inline auto Contains(const std::string& s) { return Catch::Matchers::ContainsSubstring(s); }
}  // namespace mproc_test
#else
#include <catch2/catch.hpp>
namespace mproc_test {
template <class T>
using MatcherBase = Catch::MatcherBase<T>;
using Approx = Catch::Detail::Approx;
// Matches a std::string containing `s`.
inline auto Contains(const std::string& s) { return Catch::Matchers::Contains(s); }
}  // namespace mproc_test
#endif

namespace mproc_test {

// Matches an exception whose what() contains `s`; use with REQUIRE_THROWS_MATCHES.
class MessageContains : public MatcherBase<std::exception> {
 public:
  explicit MessageContains(std::string s) : needle_(std::move(s)) {}
  bool match(const std::exception& e) const override {
    return std::string(e.what()).find(needle_) != std::string::npos;
  }
  std::string describe() const override { return "message contains \"" + needle_ + "\""; }

 private:
  std::string needle_;
};

}  // namespace mproc_test
