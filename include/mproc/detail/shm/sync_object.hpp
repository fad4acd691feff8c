// mproc/detail/shm/sync_object.hpp — what every process-shared synchronization
// object does with its block: place or find its state, and turn a deadline of
// any clock into a steady one.
// Layer detail/shm: builds on object.hpp (ShmBlock) and detail/os/deadline.hpp;
// used by lock_core.hpp and by the public lock.hpp, semaphore.hpp, event.hpp,
// condition.hpp and barrier.hpp.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <new>
#include <type_traits>

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/shm/object.hpp>
#include <mproc/detail/util/lean_std.hpp>

namespace mproc::detail {

// A steady-clock deadline for a time_point of any clock.
template <class C, class D>
Clock::time_point steady_deadline(std::chrono::time_point<C, D> tp) {
  if constexpr (std::is_same_v<C, Clock>) {
    if (tp >= std::chrono::time_point<C, D>::max()) return Clock::time_point::max();
  }
  return deadline_after(tp - C::now());
}

// A State constructed at `offset` of `block` (fresh object) or found there
// (object received by handle).
template <class State>
State* construct_state(ShmBlock& block, std::size_t offset) {
  return ::new (static_cast<void*>(block.data() + offset)) State{};
}
template <class State>
State* existing_state(ShmBlock& block, std::size_t offset) {
  return std::launder(reinterpret_cast<State*>(block.data() + offset));
}

}  // namespace mproc::detail
