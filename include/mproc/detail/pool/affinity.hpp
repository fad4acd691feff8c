// Which pool workers have a shared segment mapped: the memory behind the
// Pool's locality-aware dispatch. Layer detail/pool, used by engine.hpp's
// I/O thread only (not thread-safe).
//
// Why: the first read of shared memory through a new mapping makes the
// kernel fill that process's page tables, which on a virtual machine costs
// about as much as reading the data ten times over (bench/README.md, P1). A
// worker keeps the segments it has mapped (segment.hpp's retention cache),
// so a task that reads a large shared block runs fastest on a worker that
// read the same block before. Each task carries the key of the largest
// shared block among its arguments (LocalityProbe, handle_serialize.hpp);
// this table remembers which slots have been sent each key.
// SPDX-License-Identifier: MIT
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <unordered_map>

#include <mproc/detail/pool/scheduling.hpp>

namespace mproc::detail {

class SegmentAffinity {
 public:
  // Slots beyond this many are not tracked (they never count as having a
  // segment mapped, and take tasks as if none had locality).
  static constexpr std::size_t kTrackedSlots = 64;

  // Bit of `slot` in a mask (0 for an untracked slot).
  static constexpr std::uint64_t bit(std::size_t slot) noexcept {
    return slot < kTrackedSlots ? std::uint64_t{1} << slot : 0;
  }

  // The slots (as a mask) that have been sent tasks with `key`; 0 if none.
  std::uint64_t mapped_by(std::uint64_t key) const noexcept {
    if (key == 0) return 0;
    const auto it = slots_.find(key);
    return it == slots_.end() ? 0 : it->second;
  }

  // `slot` was sent a task with `key` (0: none): it will map that segment.
  void note(std::uint64_t key, std::size_t slot) {
    if (key == 0 || bit(slot) == 0) return;
    if (slots_.size() >= locality_keys_max && !slots_.contains(key)) slots_.clear();  // a hint: start over
    slots_[key] |= bit(slot);
  }

  // `slot` has a new worker, which has nothing mapped.
  void forget_slot(std::size_t slot) noexcept {
    const std::uint64_t b = bit(slot);
    if (b == 0) return;
    for (auto it = slots_.begin(); it != slots_.end();) {
      it->second &= ~b;
      it = it->second == 0 ? slots_.erase(it) : std::next(it);
    }
  }

 private:
  std::unordered_map<std::uint64_t, std::uint64_t> slots_;
};

}  // namespace mproc::detail
