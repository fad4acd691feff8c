// mproc/synchronize.hpp — process-shared synchronization (Python:
// multiprocessing.synchronize): Lock, RLock, Semaphore, BoundedSemaphore,
// Event, Condition, Barrier.
// Public layer: includes the header of each (lock.hpp, semaphore.hpp,
// event.hpp, condition.hpp, barrier.hpp); include one of those alone to
// compile less. Their shared machinery is in detail/shm/ (mutex_state.hpp,
// sync_state.hpp, sync_object.hpp, lock_core.hpp).
// SPDX-License-Identifier: MIT
//
// Each object lives in shared memory and works between processes and
// between threads. Objects created before fork() are inherited (the child
// uses the same object); objects created later reach another process
// through a Pipe or Queue (they travel as a handle, never as bytes).
//
// Copies are handles: copying a Lock (or moving it: moves copy) gives
// another reference to the same lock, like a second Python reference.
// An object is never empty. The process that created an object owns its
// memory: its copies elsewhere keep the mapping alive, but the creator must
// outlive their use (as in Python); a handle received from a creator that
// exited fails with ProcessError, never a crash.
//
// Every blocking call has a timed variant taking a std::chrono duration.
// Locks are recoverable: when the thread holding a Lock or RLock dies (its
// process was killed, or it exited holding the lock), the next acquirer
// takes it over within about 20 ms of blocking, acquire() returns true as
// usual, and recovered() tells the new holder that the data it protects may
// be inconsistent. Locks satisfy Lockable/TimedLockable, so std::lock_guard,
// std::unique_lock and std::scoped_lock work.
#pragma once

#include <mproc/barrier.hpp>
#include <mproc/condition.hpp>
#include <mproc/event.hpp>
#include <mproc/lock.hpp>
#include <mproc/semaphore.hpp>
