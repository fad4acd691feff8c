// mproc/detail/util/chrono.hpp — std::chrono's clocks, durations and
// literals, without <chrono>'s formatting and I/O.
//
// Layer: util. Every mproc header that needs std::chrono includes this one.
// libstdc++'s <chrono> (C++20) also pulls in <sstream> and the locale
// machinery for chrono formatting — about a quarter of a second of every
// translation unit at -O0 — while the clocks, durations, time points and
// literals mproc uses live in its <bits/chrono.h>, which <thread> and
// <mutex> include anyway. Other standard libraries get <chrono>.
// SPDX-License-Identifier: MIT
#pragma once

#include <version>  // defines __GLIBCXX__ under libstdc++

#if defined(__GLIBCXX__) && __has_include(<bits/chrono.h>)
#include <bits/chrono.h>
#else
#include <chrono>
#endif
