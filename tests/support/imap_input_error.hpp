// Test support: an imap whose input range throws while being read, checked
// the same way on Pool, ThreadPool and mpi::Pool (Python's semantics: every
// result before the failing position arrives, then the input's error is
// raised in its place, and nothing after it).
#pragma once

#include <algorithm>
#include <ranges>
#include <set>
#include <stdexcept>
#include <vector>

#include "catch.hpp"

namespace mproc_test {

// 0, 1, ..., n - 1, whose reading throws std::runtime_error("input 5 is
// unreadable") at position 5 (the error of the caller's own range).
inline auto inputs_failing_at_5(int n) {
  return std::views::iota(0, n) | std::views::transform([](int x) {
           if (x == 5) throw std::runtime_error("input 5 is unreadable");
           return x;
         });
}

// `square` must return x * x. Reads each imap to its end by next().
template <class P, class F>
void check_imap_input_error(P& pool, F square) {
  for (const std::size_t chunksize : {std::size_t{1}, std::size_t{5}}) {
    CAPTURE(chunksize);
    auto ordered = pool.imap(square, inputs_failing_at_5(40), chunksize);
    std::vector<int> got;
    bool raised = false;
    try {
      while (auto v = ordered.next()) got.push_back(*v);
    } catch (const std::runtime_error& e) {
      raised = std::string(e.what()) == "input 5 is unreadable";
    }
    CHECK(raised);
    CHECK(got == std::vector<int>{0, 1, 4, 9, 16});

    auto unordered = pool.imap_unordered(square, inputs_failing_at_5(40), chunksize);
    std::multiset<int> any;
    raised = false;
    try {
      while (auto v = unordered.next()) any.insert(*v);
    } catch (const std::runtime_error& e) {
      raised = std::string(e.what()) == "input 5 is unreadable";
    }
    CHECK(raised);
    CHECK(any == std::multiset<int>{0, 1, 4, 9, 16});
  }
}

}  // namespace mproc_test
