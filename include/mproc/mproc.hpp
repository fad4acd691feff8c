// Umbrella header: everything public but two headers that cost compile time
// in every unit that includes them and that most programs do not need:
// <mproc/managers.hpp> (Manager, its server and proxies: +0.7 s of g++ -O0
// per unit) and <mproc/mpi.hpp> (needs MPI). Documentation writes
//   #include <mproc/mproc.hpp>
//   namespace mp = mproc;
// SPDX-License-Identifier: MIT
#pragma once

#include <mproc/async_result.hpp>
#include <mproc/barrier.hpp>
#include <mproc/bind.hpp>
#include <mproc/condition.hpp>
#include <mproc/connection.hpp>
#include <mproc/context.hpp>
#include <mproc/errors.hpp>
#include <mproc/event.hpp>
#include <mproc/futures.hpp>
#include <mproc/listener.hpp>
#include <mproc/lock.hpp>
#include <mproc/pool.hpp>
#include <mproc/process.hpp>
#include <mproc/progress.hpp>
#include <mproc/queue.hpp>
#include <mproc/remote_exception.hpp>
#include <mproc/semaphore.hpp>
#include <mproc/serialize.hpp>
#include <mproc/shared_memory.hpp>
#include <mproc/sharedctypes.hpp>
#include <mproc/start_method.hpp>
#include <mproc/system.hpp>
#include <mproc/thread_pool.hpp>
#include <mproc/threading.hpp>
#include <mproc/version.hpp>
