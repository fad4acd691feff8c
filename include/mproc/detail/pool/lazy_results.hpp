// The surface shared by Pool's ImapResult and ThreadPool's ThreadImapResult:
// an input range over lazily arriving results, and Python's next().
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <exception>
#include <iterator>
#include <optional>
#include <utility>

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/util/chrono.hpp>

namespace mproc::detail {

// CRTP base. Derived provides
//   std::optional<R> next_until(Clock::time_point deadline);
// (the next result, nullopt at the end; throws TimeoutError at the deadline
// or the item's exception) and befriends this class.
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

  // Blocks until the first result (or throws its error).
  iterator begin() {
    if (!started_) {
      started_ = true;
      advance();
    }
    return iterator(this);
  }
  std::default_sentinel_t end() const noexcept { return {}; }

  // The next result, or nullopt when all were consumed (Python: next()).
  // Blocks; rethrows the item's exception.
  std::optional<R> next() { return self().next_until(Clock::time_point::max()); }

  // As next(), but throws TimeoutError if no result arrives within `timeout`.
  template <class Rep, class Period>
  std::optional<R> next(std::chrono::duration<Rep, Period> timeout) {
    return self().next_until(deadline_after(timeout));
  }

 protected:
  LazyResults() = default;
  LazyResults(LazyResults&&) noexcept = default;
  LazyResults& operator=(LazyResults&&) noexcept = default;
  LazyResults(const LazyResults&) = delete;
  LazyResults& operator=(const LazyResults&) = delete;
  ~LazyResults() = default;

 private:
  Derived& self() { return static_cast<Derived&>(*this); }
  void advance() {
    current_.reset();
    current_ = next();
  }

  bool started_ = false;
  std::optional<R> current_;
};

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
