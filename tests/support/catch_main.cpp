// Test support: Catch2's implementation and main(), compiled with the
// project's compiler and standard library. Used only where the installed
// Catch2 main library cannot link: Debian's Catch2 2.13 ships
// libCatch2WithMain.a built against libstdc++, so a libc++ build (the
// clang-libcxx preset) compiles this TU instead (tests/CMakeLists.txt). Like
// tests/mpi/mpi_catch_main.cpp, which does the same with its own main(), it
// is built without the project's -Werror flags: they apply to our tests, not
// to Catch2.
// SPDX-License-Identifier: MIT
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
