// mproc/detail/shm/lock_core.hpp — LockCore, the process-shared lock that
// Lock, RLock, Condition, Value and Array hold.
// Layer detail/shm: a MutexState (mutex_state.hpp) in a shared block
// (object.hpp), with RLock's recursion count and the handle; the public
// lock.hpp wraps it, and condition.hpp and sharedctypes.hpp embed it.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/shm/mutex_state.hpp>
#include <mproc/detail/shm/object.hpp>
#include <mproc/detail/shm/sync_object.hpp>
#include <mproc/detail/util/lean_std.hpp>
#include <mproc/errors.hpp>

namespace mproc::detail {

// The machinery shared by Lock, RLock and the lock of a Condition, Value or
// Array: a MutexState sub-object (header + state) at `offset` of a block.
class LockCore {
 public:
  static constexpr std::size_t kSize = kObjectStateOffset + sizeof(MutexState);

  // A new lock of `kind` (lock or rlock) in a block of its own.
  explicit LockCore(ShmKind kind)
      : LockCore(allocate_object(kind, kObjectStateOffset, sizeof(MutexState), alignof(MutexState)), 0, kind, true) {}

  // The lock sub-object at `offset` of `block`; `construct` writes a fresh one.
  LockCore(std::shared_ptr<ShmBlock> block, std::size_t offset, ShmKind kind, bool construct)
      : block_(std::move(block)), offset_(offset), kind_(kind) {
    if (construct) {
      write_header(block_->data() + offset, kind);
      state_ = construct_state<MutexState>(*block_, offset + kObjectStateOffset);
    } else {
      state_ = existing_state<MutexState>(*block_, offset + kObjectStateOffset);
    }
  }

  // The lock a received handle describes. Throws ProcessError.
  static LockCore open(const ShmHandle& h, ShmKind kind) {
    auto opened = open_object(h, kind, kSize);
    return LockCore(std::move(opened.first), 0, kind, false);
  }

  bool recursive() const noexcept { return kind_ == ShmKind::rlock; }
  const char* name() const noexcept { return shm_kind_name(kind_); }

  bool try_acquire() {
    const std::uint64_t me = current_identity();
    if (recursive() && state_->held_by(me)) return bump();
    if (!state_->try_lock_id(me)) return false;
    if (recursive()) state_->count = 1;
    return true;
  }

  bool acquire(Clock::time_point deadline) {
    const std::uint64_t me = current_identity();
    if (recursive() && state_->held_by(me)) return bump();
    if (!state_->lock_id(me, deadline)) return false;
    if (recursive()) state_->count = 1;
    return true;
  }

  template <class Rep, class Period>
  bool acquire_for(std::chrono::duration<Rep, Period> timeout) {
    if (timeout <= timeout.zero()) return try_acquire();
    return acquire(deadline_after(timeout));
  }

  void release() {
    const std::uint32_t owner = state_->owner();
    if (owner == 0) throw ProcessError(std::string("mproc: ") + name() + ".release(): release of an unheld " + name());
    if (recursive()) {
      if (!state_->held_by(current_identity()))
        throw ProcessError("mproc: RLock.release(): the RLock is held by another thread (tid " + std::to_string(owner) +
                           "); only its owner may release it");
      if (--state_->count > 0) return;
    }
    if ((state_->unlock() & MutexState::kOwnerMask) == 0)
      throw ProcessError(std::string("mproc: ") + name() + ".release(): release of an unheld " + name());
  }

  bool held_by_caller() const noexcept { return state_->held_by(current_identity()); }
  bool locked() const noexcept { return state_->owner() != 0; }
  bool recovered() const noexcept { return state_->recovered(); }

  // For Condition::wait: release completely, then take back at the same depth.
  std::uint32_t release_all() {
    const std::uint32_t saved = recursive() ? state_->count : 1;
    if (recursive()) state_->count = 0;
    state_->unlock();
    return saved;
  }
  void reacquire(std::uint32_t saved) {
    state_->lock_id(current_identity(), Clock::time_point::max());
    if (recursive()) state_->count = saved;
  }

  ShmHandle handle() const noexcept { return block_->handle(kind_, offset_, kSize); }
  bool same_as(const LockCore& other) const noexcept { return state_ == other.state_; }

 private:
  bool bump() {
    if (state_->count == UINT32_MAX) throw ProcessError("mproc: RLock.acquire(): recursion too deep");
    ++state_->count;
    return true;
  }

  std::shared_ptr<ShmBlock> block_;
  std::size_t offset_ = 0;
  ShmKind kind_;
  MutexState* state_ = nullptr;
};

}  // namespace mproc::detail
