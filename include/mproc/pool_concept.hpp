// mproc::pool_like — what mproc::ThreadPool, mproc::Pool and
// mproc::mpi::Pool have in common, so a program written against it runs
// unchanged on threads, processes or MPI ranks:
//
//   template <mproc::pool_like P>
//   std::vector<double> analyze(P& pool, const std::vector<std::vector<double>>& sets) {
//     return pool.map(mean, sets);          // mean: a plain function (the portable task rule)
//   }
//
// Portable task functions are function pointers or captureless lambdas taking
// and returning serializable types (mproc::Pool's rule; ThreadPool accepts
// more). Needs no MPI.
// SPDX-License-Identifier: MIT
#pragma once

#include <concepts>
#include <cstddef>
#include <tuple>
#include <vector>

namespace mproc {

// P is a pool with Python's Pool interface for portable task functions:
// map and starmap (results in input order, as std::vector), imap (a range
// of results in input order), apply_async (an AsyncResult-like handle with
// get()), size() as std::size_t, close and join. Checked with `int (*)(int)` and
// `int (*)(int, int)` tasks over std::vector inputs.
template <class P>
concept pool_like = requires(P& pool, const std::vector<int>& xs, const std::vector<std::tuple<int, int>>& pairs,
                             int (*unary)(int), int (*binary)(int, int)) {
  { pool.map(unary, xs) } -> std::same_as<std::vector<int>>;
  { pool.map(unary, xs, std::size_t{1}) } -> std::same_as<std::vector<int>>;
  { pool.starmap(binary, pairs) } -> std::same_as<std::vector<int>>;
  { *pool.imap(unary, xs).begin() } -> std::convertible_to<int>;
  { pool.apply_async(unary, 1).get() } -> std::same_as<int>;
  { pool.apply(binary, 1, 2) } -> std::same_as<int>;
  { pool.size() } -> std::same_as<std::size_t>;
  pool.close();
  pool.join();
};

}  // namespace mproc
