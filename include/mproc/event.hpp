// mproc/event.hpp — process-shared Event (Python: multiprocessing.Event).
// Public layer, part of <mproc/synchronize.hpp>: a handle over an
// EventState (detail/shm/sync_state.hpp) in a shared block
// (detail/shm/object.hpp). Copies are handles to the same event.
// SPDX-License-Identifier: MIT
#pragma once

#include <memory>
#include <utility>

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/shm/handle_serialize.hpp>
#include <mproc/detail/shm/object.hpp>
#include <mproc/detail/shm/sync_object.hpp>
#include <mproc/detail/shm/sync_state.hpp>
#include <mproc/detail/util/lean_std.hpp>

namespace mproc {

// A process-shared flag threads and processes can wait for (Python:
// multiprocessing.Event).
class Event {
 public:
  // Creates a cleared event. Throws ProcessError.
  Event() {
    block_ = detail::allocate_object(detail::ShmKind::event, detail::kObjectStateOffset, sizeof(detail::EventState),
                                     alignof(detail::EventState));
    state_ = detail::construct_state<detail::EventState>(*block_, detail::kObjectStateOffset);
  }
  Event(const Event&) = default;
  Event& operator=(const Event&) = default;

  // Sets the flag and wakes every waiter. Non-blocking.
  void set() { state_->set(); }
  // Clears the flag. Non-blocking.
  void clear() noexcept { state_->clear(); }
  // Whether the flag is set. Non-blocking.
  bool is_set() const noexcept { return state_->is_set(); }
  // Blocks until the flag is set; returns true.
  bool wait() { return state_->wait(detail::Clock::time_point::max()); }
  // Blocks up to `timeout`; returns whether the flag was set (a set()
  // during the wait counts even if clear() followed).
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) {
    return state_->wait(detail::deadline_after(timeout));
  }

  detail::ShmHandle handle() const noexcept { return block_->handle(detail::ShmKind::event); }
  static Event from_handle(const detail::ShmHandle& h) { return Event(h); }

 private:
  explicit Event(const detail::ShmHandle& h) {
    auto opened =
        detail::open_object(h, detail::ShmKind::event, detail::kObjectStateOffset + sizeof(detail::EventState));
    block_ = std::move(opened.first);
    state_ = detail::existing_state<detail::EventState>(*block_, detail::kObjectStateOffset);
  }

  std::shared_ptr<detail::ShmBlock> block_;
  detail::EventState* state_ = nullptr;
};

// An Event crosses processes (Pipe, Queue, Pool arguments) by handle: the
// receiver uses the same event.
template <>
struct serializer<Event> : detail::handle_serializer<Event> {};

}  // namespace mproc
