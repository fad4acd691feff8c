// mproc/futures.hpp — waiting on many results at once (Python:
// concurrent.futures.wait and as_completed), over the AsyncResults that
// Pool, ThreadPool and mpi::Pool return from apply_async / map_async.
//
//   std::vector<mp::AsyncResult<double>> rs;
//   for (auto& x : inputs) rs.push_back(pool.apply_async(score, x));
//   for (const auto& r : mp::as_completed(rs, 60s)) use(r.get());
//
// Layer: public API over async_result.hpp (each result's state reports to
// one shared waiter when it becomes ready). Neither call may be made from a
// ThreadPool task waiting on results of its own pool (they block without
// helping, unlike AsyncResult::get).
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <iterator>
#include <memory>
#include <mutex>
#include <ratio>
#include <span>
#include <string>
#include <vector>

#include <mproc/async_result.hpp>
#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/util/lean_std.hpp>
#include <mproc/errors.hpp>

namespace mproc {

// When mp::wait returns (Python: concurrent.futures.FIRST_COMPLETED, ...).
enum class ReturnWhen {
  FIRST_COMPLETED,  // as soon as one result is ready
  FIRST_EXCEPTION,  // as soon as one result holds an error, else when all are ready
  ALL_COMPLETED,    // when every result is ready
};
inline constexpr ReturnWhen FIRST_COMPLETED = ReturnWhen::FIRST_COMPLETED;
inline constexpr ReturnWhen FIRST_EXCEPTION = ReturnWhen::FIRST_EXCEPTION;
inline constexpr ReturnWhen ALL_COMPLETED = ReturnWhen::ALL_COMPLETED;

// mp::wait's answer: positions in the given results, ascending.
struct WaitOutcome {
  std::vector<std::size_t> done;
  std::vector<std::size_t> not_done;
};

namespace detail {

template <class R>
std::shared_ptr<CompletionWaiter> watch(std::span<const AsyncResult<R>> results) {
  auto waiter = std::make_shared<CompletionWaiter>();
  for (std::size_t i = 0; i < results.size(); ++i) state_of(results[i]).add_waiter(waiter, i);
  return waiter;
}

}  // namespace detail

// Blocks until `when` holds for `results` or `timeout` passes (a huge
// timeout: no limit), then returns which are ready and which are not
// (Python: concurrent.futures.wait; no TimeoutError: check not_done).
// Thread-safe. Throws ProcessError if a handle is empty.
template <class R, class Rep = long, class Period = std::ratio<1>>
WaitOutcome wait(std::span<const AsyncResult<R>> results,
                 std::chrono::duration<Rep, Period> timeout = std::chrono::duration<Rep, Period>::max(),
                 ReturnWhen when = ALL_COMPLETED) {
  const auto deadline = detail::deadline_after(timeout);
  const auto waiter = detail::watch(results);
  const auto satisfied = [&] {
    const std::size_t n = waiter->ready.size();
    if (n == results.size()) return true;
    if (when == FIRST_COMPLETED) return n > 0;
    if (when == FIRST_EXCEPTION)
      for (std::size_t i : waiter->ready)
        if (detail::state_of(results[i]).failed()) return true;
    return false;
  };
  {
    std::unique_lock lock(waiter->mutex);
    if (deadline == detail::Clock::time_point::max())
      waiter->cv.wait(lock, satisfied);
    else
      waiter->cv.wait_until(lock, deadline, satisfied);
  }
  WaitOutcome out;
  for (std::size_t i = 0; i < results.size(); ++i) (results[i].ready() ? out.done : out.not_done).push_back(i);
  return out;
}
template <class R, class Rep = long, class Period = std::ratio<1>>
WaitOutcome wait(const std::vector<AsyncResult<R>>& results,
                 std::chrono::duration<Rep, Period> timeout = std::chrono::duration<Rep, Period>::max(),
                 ReturnWhen when = ALL_COMPLETED) {
  return wait(std::span<const AsyncResult<R>>(results), timeout, when);
}

// The results of `results` in the order they become ready (Python:
// concurrent.futures.as_completed): a range of `const AsyncResult<R>&`
// whose iteration blocks for the next one. Throws TimeoutError from the
// iteration if `timeout` (counted from this call) passes first,
// ProcessError here if a handle is empty. The results must outlive it.
template <class R>
class AsCompleted {
 public:
  template <class Rep, class Period>
  AsCompleted(std::span<const AsyncResult<R>> results, std::chrono::duration<Rep, Period> timeout)
      : results_(results), deadline_(detail::deadline_after(timeout)), waiter_(detail::watch(results)) {}

  class iterator {
   public:
    using value_type = AsyncResult<R>;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    const AsyncResult<R>& operator*() const { return owner_->results_[owner_->current_]; }
    const AsyncResult<R>* operator->() const { return &**this; }
    iterator& operator++() {
      owner_->advance();
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return it.at_end(); }

   private:
    friend class AsCompleted;
    explicit iterator(AsCompleted* owner) : owner_(owner) {}
    bool at_end() const { return owner_->taken_ > owner_->results_.size(); }
    AsCompleted* owner_ = nullptr;
  };

  // Blocks for the first result (see the class comment).
  iterator begin() {
    if (taken_ == 0) advance();
    return iterator(this);
  }
  std::default_sentinel_t end() const noexcept { return {}; }

 private:
  void advance() {
    if (taken_ == results_.size()) {
      ++taken_;  // past the end
      return;
    }
    std::unique_lock lock(waiter_->mutex);
    const auto next_ready = [&] { return waiter_->ready.size() > taken_; };
    if (deadline_ == detail::Clock::time_point::max())
      waiter_->cv.wait(lock, next_ready);
    else if (!waiter_->cv.wait_until(lock, deadline_, next_ready))
      throw TimeoutError("mproc::as_completed: " + std::to_string(results_.size() - taken_) + " of " +
                         std::to_string(results_.size()) + " results were not ready in time");
    current_ = waiter_->ready[taken_++];
  }

  std::span<const AsyncResult<R>> results_;
  detail::Clock::time_point deadline_;
  std::shared_ptr<detail::CompletionWaiter> waiter_;
  std::size_t taken_ = 0;
  std::size_t current_ = 0;
};

template <class R, class Rep = long, class Period = std::ratio<1>>
AsCompleted<R> as_completed(const std::vector<AsyncResult<R>>& results,
                            std::chrono::duration<Rep, Period> timeout = std::chrono::duration<Rep, Period>::max()) {
  return AsCompleted<R>(std::span<const AsyncResult<R>>(results), timeout);
}
template <class R, class Rep = long, class Period = std::ratio<1>>
AsCompleted<R> as_completed(std::span<const AsyncResult<R>> results,
                            std::chrono::duration<Rep, Period> timeout = std::chrono::duration<Rep, Period>::max()) {
  return AsCompleted<R>(results, timeout);
}

}  // namespace mproc
