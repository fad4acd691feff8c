// TaskRing: the growable ring of Tasks behind ThreadPool's queues (the
// shared injection queue and each worker's stealable queue). Layer:
// detail/threads; builds on task.hpp; used by the scheduler (scheduler.hpp),
// which does the locking.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <utility>

#include <mproc/detail/threads/task.hpp>
#include <mproc/detail/util/lean_std.hpp>

namespace mproc::detail {

// A growable FIFO/LIFO ring of Tasks. Not thread-safe.
class TaskRing {
 public:
  TaskRing() : buf_(std::make_unique<Task[]>(16)), mask_(15) {}
  std::size_t size() const noexcept { return tail_ - head_; }
  bool empty() const noexcept { return tail_ == head_; }
  void push_back(Task&& t) {
    if (size() == mask_ + 1) grow();
    buf_[tail_++ & mask_] = std::move(t);
  }
  Task pop_front() noexcept { return std::move(buf_[head_++ & mask_]); }
  Task pop_back() noexcept { return std::move(buf_[--tail_ & mask_]); }

 private:
  void grow() {
    const std::size_t cap = (mask_ + 1) * 2;
    auto bigger = std::make_unique<Task[]>(cap);
    const std::size_t n = size();
    for (std::size_t i = 0; i < n; ++i) bigger[i] = std::move(buf_[(head_ + i) & mask_]);
    buf_ = std::move(bigger);
    mask_ = cap - 1;
    head_ = 0;
    tail_ = n;
  }

  std::unique_ptr<Task[]> buf_;
  std::size_t mask_;
  std::size_t head_ = 0;
  std::size_t tail_ = 0;
};

}  // namespace mproc::detail
