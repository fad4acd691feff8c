// mproc — Python's multiprocessing model for C++20.
// SPDX-License-Identifier: MIT
//
// Umbrella header: everything public. Documentation writes
//   #include <mproc/mproc.hpp>
//   namespace mp = mproc;
#pragma once

#include "async_result.hpp"
#include "connection.hpp"
#include "errors.hpp"
#include "pool.hpp"
#include "process.hpp"
#include "progress.hpp"
#include "queue.hpp"
#include "serialize.hpp"
#include "shared_memory.hpp"
#include "sharedctypes.hpp"
#include "synchronize.hpp"
#include "system.hpp"
#include "thread_pool.hpp"
#include "threading.hpp"
#include "version.hpp"
