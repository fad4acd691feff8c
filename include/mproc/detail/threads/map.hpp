// The pieces of ThreadPool's map family: indexed access to the inputs
// (MapInputs), the result slots (MapOutput), the call f(x) or
// std::apply(f, x) (call_item), and MapAsyncJob, the loop that map_async and
// starmap_async leave running. Layer: detail/threads; builds on
// loop_job.hpp and async_result.hpp; used by thread_pool.hpp.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <exception>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <mproc/async_result.hpp>
#include <mproc/detail/threads/loop_job.hpp>
#include <mproc/detail/threads/task.hpp>
#include <mproc/detail/util/lean_std.hpp>

namespace mproc::detail {

// Result slots of a map: the values themselves when default-constructible
// (bool excepted: vector<bool> elements share bytes), else optionals.
template <class R>
class MapOutput {
  static constexpr bool direct = std::is_default_constructible_v<R> && !std::is_same_v<R, bool>;
  using Slot = std::conditional_t<direct, R, std::optional<R>>;

 public:
  using Out = std::vector<R>;
  explicit MapOutput(std::size_t n) : slots_(n) {}
  template <class G>
  void set(std::size_t i, G&& produce) {
    if constexpr (direct) {
      slots_[i] = std::forward<G>(produce)();
    } else {
      slots_[i].emplace(std::forward<G>(produce)());
    }
  }
  Out take() {
    if constexpr (direct) {
      return std::move(slots_);
    } else {
      Out out;
      out.reserve(slots_.size());
      for (auto& s : slots_) out.push_back(std::move(*s));
      return out;
    }
  }

 private:
  std::vector<Slot> slots_;
};

template <>
class MapOutput<void> {
 public:
  using Out = void;
  explicit MapOutput(std::size_t) noexcept {}
  template <class G>
  void set(std::size_t, G&& produce) {
    std::forward<G>(produce)();
  }
  void take() noexcept {}
};

// Stands for MapInputs' unused members (std::monostate without <variant>).
struct NoMapStore {};

// Indexed access to a map's inputs by reference: random-access sized ranges
// directly, forward ranges through a vector of iterators, single-pass ranges
// through a vector of their values (moved or copied out once).
template <class Range>
class MapInputs {
 public:
  explicit MapInputs(Range& r) {
    if constexpr (direct) {
      first_ = std::ranges::begin(r);
      size_ = static_cast<std::size_t>(std::ranges::size(r));
    } else if constexpr (std::ranges::forward_range<Range>) {
      for (auto it = std::ranges::begin(r); it != std::ranges::end(r); ++it) store_.push_back(it);
      size_ = store_.size();
    } else {
      for (auto&& x : r) store_.push_back(std::forward<decltype(x)>(x));
      size_ = store_.size();
    }
  }
  std::size_t size() const noexcept { return size_; }
  decltype(auto) operator[](std::size_t i) const {
    if constexpr (direct) {
      return first_[static_cast<std::ranges::range_difference_t<Range>>(i)];
    } else if constexpr (std::ranges::forward_range<Range>) {
      return *store_[i];
    } else {
      return static_cast<const std::ranges::range_value_t<Range>&>(store_[i]);
    }
  }

 private:
  static constexpr bool direct = std::ranges::random_access_range<Range> && std::ranges::sized_range<Range>;
  using Store = std::conditional_t<
      direct, NoMapStore,
      std::conditional_t<std::ranges::forward_range<Range>, std::vector<std::ranges::iterator_t<Range>>,
                         std::vector<std::ranges::range_value_t<Range>>>>;
  std::conditional_t<direct, std::ranges::iterator_t<Range>, NoMapStore> first_{};
  Store store_{};
  std::size_t size_ = 0;
};

// f(x), or std::apply(f, x) for starmap.
template <bool Star, class F, class X>
decltype(auto) call_item(F& f, X&& x) {
  if constexpr (Star) {
    return std::apply(f, std::forward<X>(x));
  } else {
    return apply_invoke(f, std::forward<X>(x));
  }
}

template <bool Star, class F, class X>
struct item_result;
template <class F, class X>
struct item_result<false, F, X> {
  using type = std::remove_cvref_t<std::invoke_result_t<F&, X>>;
};
template <class F, class X>
struct item_result<true, F, X> {
  using type = std::remove_cvref_t<decltype(std::apply(std::declval<F&>(), std::declval<X>()))>;
};
template <bool Star, class F, class X>
using item_result_t = typename item_result<Star, F, X>::type;

// The loop of map_async/starmap_async: owns copies of f and of the inputs,
// and completes `state` with the results (or the first exception) when the
// last chunk is done, or with ProcessError if terminate() dropped a runner.
template <bool Star, class Fn, class V, class R>
class MapAsyncJob final : public LoopJob {
 public:
  using Out = typename MapOutput<R>::Out;

  MapAsyncJob(std::size_t count, std::size_t grain, std::size_t threads, Fn fn, std::vector<V> in,
              std::shared_ptr<ResultState<Out>> st)
      : LoopJob(count, grain, threads), f_(std::move(fn)), inputs_(std::move(in)), out_(count), state_(std::move(st)) {}

  void cancel() noexcept override {
    try {
      state_->set_exception(thread_pool_terminated_error());
    } catch (...) {
    }
  }

 private:
  void run_range(std::size_t b, std::size_t e) override {
    for (std::size_t i = b; i < e; ++i)
      out_.set(i, [&]() -> decltype(auto) { return call_item<Star>(f_, std::as_const(inputs_[i])); });
  }
  void on_finish() noexcept override {
    try {
      if (auto e = error()) {
        state_->set_exception(e);
      } else if constexpr (std::is_void_v<Out>) {
        state_->set_value();
      } else {
        state_->set_value(out_.take());
      }
    } catch (...) {
      state_->set_exception(std::current_exception());
    }
  }

  Fn f_;
  std::vector<V> inputs_;
  MapOutput<R> out_;
  std::shared_ptr<ResultState<Out>> state_;
};

}  // namespace mproc::detail
