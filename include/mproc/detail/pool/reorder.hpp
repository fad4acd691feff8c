// ReorderBuffer<T>: the reorder buffer of an ordered imap. Results arrive in
// completion order, each tagged with its input position; the consumer takes
// them in input order. Layer: detail/pool (a plain container over
// std::vector and std::optional, no synchronization); used by ThreadPool's
// imap (detail/threads/imap.hpp) and meant for Pool's and mpi::Pool's.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <optional>
#include <stdexcept>
#include <utility>
#include <vector>

namespace mproc::detail {

// Items numbered 0, 1, 2, ... are put in any order and taken in that order.
// Storage is a ring indexed by position, so put and take are O(1)
// (amortized: the ring doubles when an item lands beyond it); memory is
// proportional to the distance between next() and the farthest item held,
// which the callers bound by their read-ahead window.
//
// An unordered imap can use the same buffer as a FIFO by numbering items
// in arrival order.
//
// Not thread-safe: the caller locks (the producers putting and the consumer
// taking share the caller's mutex).
template <class T>
class ReorderBuffer {
 public:
  ReorderBuffer() = default;

  // Stores `item` as the item at input position `index`. Returns false, and
  // stores nothing, if that position was already taken or is already held
  // (a duplicate). Throws std::length_error if `index` is absurdly far
  // ahead of next() (more than half the address space), std::bad_alloc.
  bool put(std::size_t index, T item) {
    if (index < next_) return false;
    const std::size_t ahead = index - next_;
    if (ahead >= slots_.size()) grow(ahead + 1);
    std::optional<T>& slot = slots_[index & mask()];
    if (slot.has_value()) return false;
    slot.emplace(std::move(item));
    ++held_;
    return true;
  }

  // Whether the item at next() has arrived. Non-blocking.
  bool ready() const noexcept { return held_ != 0 && slots_[next_ & mask()].has_value(); }

  // Takes the item at next() and advances next(). Precondition: ready().
  T take() {
    std::optional<T>& slot = slots_[next_ & mask()];
    T out = std::move(*slot);
    slot.reset();
    ++next_;
    --held_;
    return out;
  }

  // The input position of the next item take() hands out.
  std::size_t next() const noexcept { return next_; }

  // Items put and not taken yet.
  std::size_t held() const noexcept { return held_; }

 private:
  static constexpr std::size_t initial_capacity = 16;  // a power of two

  std::size_t mask() const noexcept { return slots_.size() - 1; }

  // Re-homes the held items into a ring of at least `need` slots (a power of two).
  void grow(std::size_t need) {
    if (need > (std::size_t(-1) >> 2))
      throw std::length_error("mproc: ReorderBuffer: item position too far ahead of the consumer");
    std::size_t cap = slots_.empty() ? initial_capacity : slots_.size() * 2;
    while (cap < need) cap *= 2;
    std::vector<std::optional<T>> bigger(cap);
    for (std::size_t i = next_; i != next_ + slots_.size(); ++i) {
      std::optional<T>& slot = slots_[i & mask()];
      if (slot.has_value()) bigger[i & (cap - 1)].emplace(std::move(*slot));
    }
    slots_ = std::move(bigger);
  }

  std::vector<std::optional<T>> slots_;  // empty, or a power-of-two ring
  std::size_t next_ = 0;
  std::size_t held_ = 0;
};

}  // namespace mproc::detail
