// Library version. CMake reads the three numbers below (they are the single
// source of truth for `project(mproc VERSION ...)`), so edit them only here.
// SPDX-License-Identifier: MIT
#pragma once

#define MPROC_VERSION_MAJOR 0
#define MPROC_VERSION_MINOR 1
#define MPROC_VERSION_PATCH 0

#define MPROC_DETAIL_STR2(x) #x
#define MPROC_DETAIL_STR(x) MPROC_DETAIL_STR2(x)

// "MAJOR.MINOR.PATCH" as a string literal.
#define MPROC_VERSION_STRING            \
  MPROC_DETAIL_STR(MPROC_VERSION_MAJOR) \
  "." MPROC_DETAIL_STR(MPROC_VERSION_MINOR) "." MPROC_DETAIL_STR(MPROC_VERSION_PATCH)

// MAJOR * 10000 + MINOR * 100 + PATCH, for `#if MPROC_VERSION >= 10200`.
#define MPROC_VERSION (MPROC_VERSION_MAJOR * 10000 + MPROC_VERSION_MINOR * 100 + MPROC_VERSION_PATCH)

namespace mproc {

// The version of the headers in use, as compile-time values.
inline constexpr int version_major = MPROC_VERSION_MAJOR;
inline constexpr int version_minor = MPROC_VERSION_MINOR;
inline constexpr int version_patch = MPROC_VERSION_PATCH;
inline constexpr const char* version_string = MPROC_VERSION_STRING;

}  // namespace mproc
