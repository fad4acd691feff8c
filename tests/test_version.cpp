// Tests of <mproc/version.hpp>: the version macros agree with the CMake project version.
#include <string>

#include <mproc/version.hpp>

#include "catch.hpp"

TEST_CASE("version macros match the CMake project version") {
  // MPROC_TEST_PROJECT_VERSION is PROJECT_VERSION, passed in by CMake.
  CHECK(std::string(MPROC_VERSION_STRING) == MPROC_TEST_PROJECT_VERSION);
  CHECK(std::string(mproc::version_string) == MPROC_TEST_PROJECT_VERSION);
}

TEST_CASE("version number and parts agree") {
  STATIC_REQUIRE(MPROC_VERSION == MPROC_VERSION_MAJOR * 10000 + MPROC_VERSION_MINOR * 100 + MPROC_VERSION_PATCH);
  STATIC_REQUIRE(mproc::version_major == MPROC_VERSION_MAJOR);
  STATIC_REQUIRE(mproc::version_minor == MPROC_VERSION_MINOR);
  STATIC_REQUIRE(mproc::version_patch == MPROC_VERSION_PATCH);
  CHECK(std::string(MPROC_VERSION_STRING) == std::to_string(MPROC_VERSION_MAJOR) + "." +
                                                 std::to_string(MPROC_VERSION_MINOR) + "." +
                                                 std::to_string(MPROC_VERSION_PATCH));
}
