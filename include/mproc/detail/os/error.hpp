// errno failures as exceptions: throw_errno. Layer detail/os, the bottom
// (only errors.hpp below it); used by fd.hpp, futex.hpp and everything that
// makes system calls. Its own file so that futex.hpp (and through it
// thread_pool.hpp and the process-shared locks) does not pull in fd.hpp.
// SPDX-License-Identifier: MIT
#pragma once

#include <cerrno>
#include <cstring>
#include <string>

#include <mproc/errors.hpp>

namespace mproc::detail {

// Throws ProcessError("mproc: <what>: <strerror(err)>").
[[noreturn]] inline void throw_errno(const std::string& what, int err = errno) {
  throw ProcessError("mproc: " + what + ": " + std::strerror(err));
}

}  // namespace mproc::detail
