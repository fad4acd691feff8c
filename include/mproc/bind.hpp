// mproc/bind.hpp — a task function with constant leading arguments (Python:
// functools.partial), for state every call needs but no input should carry.
//
//   std::vector<int> labels = pool.map(mp::bind(classify, model), images);
//   // classify(const Model&, const Image&): in a worker, once per chunk
//
// mproc::Pool sends the state once per chunk of inputs (not once per input)
// and decodes it once per chunk in the worker; ThreadPool shares it between
// threads by const reference. mpi::Pool refuses it: there, Pool::broadcast
// sends it once per rank. Layer: public API; the Pool's encoding of the
// state is in detail/pool/submit.hpp and worker.hpp.
// SPDX-License-Identifier: MIT
#pragma once

#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

namespace mproc {

// f with its first arguments fixed: Bound(args...) calls f(state..., args...),
// each state value passed as a const lvalue (take it by const reference in f,
// or as a view such as std::span<const T>, to avoid a copy per call). Copyable
// when F and the state are; thread-safe to call concurrently.
template <class F, class... S>
class Bound {
 public:
  Bound(F f, std::tuple<S...> state) : fn_(std::move(f)), state_(std::move(state)) {}

  // Calls f(state..., args...). Blocks as f does; throws what f throws.
  template <class... A>
    requires std::invocable<const F&, const S&..., A...>
  decltype(auto) operator()(A&&... args) const {
    return std::apply([&](const S&... s) -> decltype(auto) { return std::invoke(fn_, s..., std::forward<A>(args)...); },
                      state_);
  }

  // The function and the fixed arguments. Non-blocking; never throw.
  [[nodiscard]] const F& function() const noexcept { return fn_; }
  [[nodiscard]] const std::tuple<S...>& state() const noexcept { return state_; }

 private:
  F fn_;
  std::tuple<S...> state_;
};

// f with `state` fixed as its leading arguments (copied or moved into the
// result). For mproc::Pool, f must be a task function (a function pointer or
// a captureless lambda) and every state type serializable (checked at compile
// time). Non-blocking; throws what copying the state throws.
template <class F, class... S>
[[nodiscard]] Bound<std::decay_t<F>, std::decay_t<S>...> bind(F&& f, S&&... state) {
  return {std::forward<F>(f), std::tuple<std::decay_t<S>...>(std::forward<S>(state)...)};
}

namespace detail {
template <class F>
inline constexpr bool is_bound_v = false;
template <class F, class... S>
inline constexpr bool is_bound_v<Bound<F, S...>> = true;
}  // namespace detail

}  // namespace mproc
