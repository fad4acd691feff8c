// mproc/detail/util/lean_std.hpp — the parts of <chrono>, <functional>,
// <ranges>, <algorithm> and <memory> that mproc uses, without the rest.
//
// Layer: util. mproc headers include this instead of those five. Under
// libstdc++ (C++20) each of them is heavy for what mproc takes from it:
// <chrono> pulls in <sstream> and the locale machinery for its formatting,
// <functional> the searchers and <bits/stl_algo.h>, <algorithm> the ranges
// algorithms, <ranges> every view, <memory> the ranges uninitialized
// algorithms and atomic<shared_ptr>; together about half a second of every
// translation unit at -O0. What mproc uses lives in <string_view> (range
// concepts and access, std::min/max/copy/fill, destroy_at, iterator tags)
// and in libstdc++'s internal headers below, which <thread>, <future> and
// <vector> include anyway (each after <string_view>, as libstdc++'s own
// headers do, since they are not all self-contained):
//   <bits/chrono.h>        clocks, durations, time points, literals
//   <bits/std_function.h>  std::function
//   <bits/shared_ptr.h>, <bits/unique_ptr.h>
//                          shared_ptr, weak_ptr, make_shared, unique_ptr, make_unique
// Other standard libraries get the public headers. Views (std::views::all)
// are not here: detail::InputCursor (detail/pool/lazy_results.hpp) holds
// a lazily read input range instead.
// SPDX-License-Identifier: MIT
#pragma once

#include <version>  // defines __GLIBCXX__ under libstdc++

#if defined(__GLIBCXX__) && __has_include(<bits/chrono.h>) && __has_include(<bits/std_function.h>) && \
    __has_include(<bits/shared_ptr.h>) && __has_include(<bits/unique_ptr.h>)
#include <string_view>
#include <tuple>

#include <bits/chrono.h>
#include <bits/shared_ptr.h>
#include <bits/std_function.h>
#include <bits/unique_ptr.h>
#else
#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <ranges>
#endif
