// The process pool's transfer heap: shared memory that large task arguments
// are encoded into by the submitting thread, so they reach a worker with one
// copy and no trip through a socket. A task carries a handle to its block;
// the worker maps the segment once (and keeps it mapped) and reads the
// arguments in place — as a zero-copy view when the task takes a span.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <cstddef>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include <mproc/detail/shm/segment.hpp>

namespace mproc::detail {

class TransferHeap : public std::enable_shared_from_this<TransferHeap> {
 public:
  // Payloads at least this large go through the heap.
  static constexpr std::size_t threshold = 64 * 1024;

  // A block of the heap; returns itself to the heap when destroyed. Move-only.
  class Block {
   public:
    Block() = default;
    Block(Block&& o) noexcept
        : heap_(std::move(o.heap_)), segment_(std::move(o.segment_)), offset_(o.offset_), size_(o.size_) {}
    Block& operator=(Block&& o) noexcept {
      if (this != &o) {
        release();
        heap_ = std::move(o.heap_);
        segment_ = std::move(o.segment_);
        offset_ = o.offset_;
        size_ = o.size_;
      }
      return *this;
    }
    Block(const Block&) = delete;
    Block& operator=(const Block&) = delete;
    ~Block() { release(); }

    explicit operator bool() const noexcept { return segment_ != nullptr; }
    std::span<std::byte> bytes() const noexcept {
      return segment_ ? std::span<std::byte>(segment_->data() + offset_, size_) : std::span<std::byte>();
    }
    ShmHandle handle() const noexcept { return segment_->handle(ShmKind::shared_memory, offset_, size_); }

   private:
    friend class TransferHeap;
    void release() noexcept {
      if (heap_ && segment_) heap_->free(segment_, offset_, size_);
      heap_.reset();
      segment_.reset();
    }
    std::shared_ptr<TransferHeap> heap_;
    std::shared_ptr<Mapping> segment_;
    std::size_t offset_ = 0;
    std::size_t size_ = 0;
  };

  // A block of at least `n` bytes, 64-byte aligned. Thread-safe. Throws
  // ProcessError when shared memory cannot be had.
  Block allocate(std::size_t n) {
    n = std::max<std::size_t>(round_up(n, 64), 64);
    std::lock_guard lock(mutex_);
    for (auto& seg : segments_) {
      if (auto b = take(seg, n)) return b;
    }
    const std::size_t size = std::max(min_segment, round_up(n, std::size_t{2} << 20));
    segments_.push_back(Segment{create_segment(size, "mproc-pool-heap"), {}});
    segments_.back().free.emplace(0, size);
    return take(segments_.back(), n);
  }

 private:
  static constexpr std::size_t min_segment = std::size_t{32} << 20;

  struct Segment {
    std::shared_ptr<Mapping> mapping;
    std::map<std::size_t, std::size_t> free;  // offset -> size, coalesced
  };

  static std::size_t round_up(std::size_t n, std::size_t a) noexcept { return (n + a - 1) / a * a; }

  Block take(Segment& seg, std::size_t n) {
    for (auto it = seg.free.begin(); it != seg.free.end(); ++it) {
      if (it->second < n) continue;
      Block b;
      b.heap_ = shared_from_this();
      b.segment_ = seg.mapping;
      b.offset_ = it->first;
      b.size_ = n;
      const std::size_t rest = it->second - n;
      const std::size_t at = it->first + n;
      seg.free.erase(it);
      if (rest > 0) seg.free.emplace(at, rest);
      return b;
    }
    return {};
  }

  void free(const std::shared_ptr<Mapping>& mapping, std::size_t offset, std::size_t size) noexcept {
    std::lock_guard lock(mutex_);
    auto seg = std::find_if(segments_.begin(), segments_.end(), [&](const Segment& s) { return s.mapping == mapping; });
    if (seg == segments_.end()) return;
    auto [it, ok] = seg->free.emplace(offset, size);
    if (!ok) return;
    if (auto next = std::next(it); next != seg->free.end() && it->first + it->second == next->first) {
      it->second += next->second;
      seg->free.erase(next);
    }
    if (it != seg->free.begin()) {
      auto prev = std::prev(it);
      if (prev->first + prev->second == it->first) {
        prev->second += it->second;
        seg->free.erase(it);
      }
    }
    // A segment that is entirely free again goes back to the system, but the
    // first one stays for the next map.
    if (segments_.size() > 1 && seg != segments_.begin() && seg->free.size() == 1 &&
        seg->free.begin()->second == seg->mapping->size())
      segments_.erase(seg);
  }

  std::mutex mutex_;
  std::vector<Segment> segments_;
};

}  // namespace mproc::detail
