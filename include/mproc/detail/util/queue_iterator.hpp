// mproc/detail/util/queue_iterator.hpp — range-for over a queue: each step
// is a blocking get(), the range ends when the queue is shut down and
// drained. Used by mproc::Queue and mproc::threading::Queue alike.
//
// Layer: util (no OS or shared-memory code); the queues' begin() returns it.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <iterator>
#include <optional>

#include <mproc/errors.hpp>

namespace mproc::detail {

// An input iterator over Q's items (Q: value_type and get()); the end is
// std::default_sentinel. Constructing it and ++ block in Q::get(); they
// rethrow what get() throws except ShutDown, which ends the range.
template <class Q>
class QueueIterator {
 public:
  using value_type = typename Q::value_type;
  using difference_type = std::ptrdiff_t;

  QueueIterator() = default;
  explicit QueueIterator(Q& q) : queue_(&q) { next(); }

  value_type& operator*() const { return *item_; }
  value_type* operator->() const { return &*item_; }
  QueueIterator& operator++() {
    next();
    return *this;
  }
  void operator++(int) { next(); }
  friend bool operator==(const QueueIterator& it, std::default_sentinel_t) noexcept { return !it.item_; }

 private:
  void next() {
    item_.reset();
    try {
      item_.emplace(queue_->get());
    } catch (const ShutDown&) {  // the end
    }
  }

  Q* queue_ = nullptr;
  mutable std::optional<value_type> item_;  // mutable: *it of a const iterator hands out the item to move from
};

}  // namespace mproc::detail
