// The surface shared by Pool's ImapResult and ThreadPool's ThreadImapResult:
// an input range over lazily arriving results, and Python's next().
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/util/lean_std.hpp>
#include <mproc/errors.hpp>

namespace mproc::detail {

// CRTP base. Derived provides
//   std::optional<R> next_until(Clock::time_point deadline);
// (the next result, nullopt at the end; throws TimeoutError at the deadline
// or the item's exception) and a pointer member sink_, null once the result
// was moved from, and befriends this class.
template <class Derived, class R>
class LazyResults {
 public:
  class iterator {
   public:
    using value_type = R;
    using difference_type = std::ptrdiff_t;
    using iterator_concept = std::input_iterator_tag;

    iterator() = default;
    R& operator*() const { return *owner_->current_; }
    R* operator->() const { return &*owner_->current_; }
    iterator& operator++() {
      owner_->advance();
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return it.at_end(); }

   private:
    friend class LazyResults;
    explicit iterator(LazyResults* owner) : owner_(owner) {}
    bool at_end() const { return owner_ == nullptr || !owner_->current_; }
    LazyResults* owner_ = nullptr;
  };

  // Blocks until the first result (or throws its error). Throws
  // ProcessError on a moved-from result, as next() does.
  iterator begin() {
    if (!started_) {
      started_ = true;
      advance();
    }
    return iterator(this);
  }
  std::default_sentinel_t end() const noexcept { return {}; }

  // The next result, or nullopt when all were consumed (Python: next()).
  // Blocks; rethrows the item's exception. Throws ProcessError on a
  // moved-from result.
  std::optional<R> next() { return held().next_until(Clock::time_point::max()); }

  // As next(), but throws TimeoutError if no result arrives within `timeout`.
  template <class Rep, class Period>
  std::optional<R> next(std::chrono::duration<Rep, Period> timeout) {
    return held().next_until(deadline_after(timeout));
  }

  // How many results there are in all when the input range was sized (a
  // vector, an iota view), else nullopt (Python: operator.length_hint);
  // mp::progress takes its total from it. Non-blocking.
  std::optional<std::size_t> length_hint() const noexcept { return length_hint_; }

 protected:
  LazyResults() = default;
  LazyResults(LazyResults&&) noexcept = default;
  LazyResults& operator=(LazyResults&&) noexcept = default;
  LazyResults(const LazyResults&) = delete;
  LazyResults& operator=(const LazyResults&) = delete;
  ~LazyResults() = default;

 private:
  Derived& self() { return static_cast<Derived&>(*this); }
  // self(), unless it was moved from.
  Derived& held() {
    if (!self().sink_) throw ProcessError("mproc: an imap result was used after it was moved from");
    return self();
  }
  void advance() {
    current_.reset();
    current_ = next();
  }

  template <class Results>
  friend Results with_length_hint(Results results, std::optional<std::size_t> hint) noexcept;

  bool started_ = false;
  std::optional<R> current_;
  std::optional<std::size_t> length_hint_;
};

// The size of an imap's input range if it is sized (read before the range
// is moved into the results), else nullopt.
template <class Range>
std::optional<std::size_t> input_length(Range& inputs) {
  if constexpr (std::ranges::sized_range<Range&>)
    return static_cast<std::size_t>(std::ranges::size(inputs));
  else
    return std::nullopt;
}

// How an imap holds the caller's input range while it reads it lazily (what
// std::views::all would give, without <ranges>): a reference to an lvalue
// range (the caller keeps it alive), a copy of an lvalue view, the moved
// range otherwise.
template <class Range>
using held_range_t =
    std::conditional_t<std::is_lvalue_reference_v<Range> && !std::ranges::view<std::remove_cvref_t<Range>>, Range,
                       std::remove_cvref_t<Range>>;

// An imap's input: the caller's range (held as held_range_t says), the
// position of its next item, and how many chunks have been cut from it.
// Neither copyable nor movable (`next` points into `range`): keep it where
// it was made. Construct from std::forward<Range>(inputs).
template <class Range>
struct InputCursor {
  explicit InputCursor(Range&& inputs) : range(std::forward<Range>(inputs)), next(std::ranges::begin(range)) {}
  InputCursor(const InputCursor&) = delete;
  InputCursor& operator=(const InputCursor&) = delete;

  bool at_end() { return next == std::ranges::end(range); }

  // Calls take_one(item) on each of the next items, at most `max`, moving
  // past each; returns how many it took (0 at the end). Throws what reading
  // the range or take_one throws (the item that threw is not passed).
  template <class TakeOne>
  std::size_t take(std::size_t max, TakeOne&& take_one) {
    std::size_t n = 0;
    for (; n < max && !at_end(); ++n, ++next) take_one(*next);
    return n;
  }

  held_range_t<Range> range;
  std::ranges::iterator_t<held_range_t<Range>> next;
  std::size_t chunks = 0;
};

// `results` with their length_hint() set to `hint`.
template <class Results>
Results with_length_hint(Results results, std::optional<std::size_t> hint) noexcept {
  results.length_hint_ = hint;
  return results;
}

// An imap's input range (or an input's encoding) failing while the results
// read ahead are still arriving. Python raises that error at its position:
// after every result before it. The lazy results read their input through
// guard() and call raise_if_held() once nothing is outstanding.
class DeferredInputError {
 public:
  // Calls produce() (which reads and submits the next chunk of inputs); if it
  // throws, holds the exception and returns a value-initialized result (the
  // producer's "end of input").
  template <class Produce>
  auto guard(Produce&& produce) -> decltype(produce()) {
    try {
      return produce();
    } catch (...) {
      error_ = std::current_exception();
      return {};
    }
  }
  // Throws the held error, once.
  void raise_if_held() {
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  std::exception_ptr error_;
};

}  // namespace mproc::detail
