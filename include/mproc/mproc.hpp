// mproc — Python's multiprocessing model for C++20.
// SPDX-License-Identifier: MIT
//
// Umbrella header: everything public. Documentation writes
//   #include <mproc/mproc.hpp>
//   namespace mp = mproc;
#pragma once

#include "async_result.hpp"
#include "errors.hpp"
#include "system.hpp"
#include "version.hpp"
