// mproc/detail/pool/submit.hpp — what Pool checks and encodes before a task
// leaves the parent: the compile-time rules on task functions, arguments and
// results, the wire type of a map's inputs, and one chunk of inputs encoded
// as a task (through protocol.hpp's encode_task). Layer detail/pool, on top
// of the engine (PoolTask) and the worker (task_trampoline); used by
// pool.hpp and mpi.hpp.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <ranges>
#include <type_traits>
#include <utility>
#include <vector>

#include <mproc/detail/pool/engine.hpp>
#include <mproc/detail/pool/worker.hpp>
#include <mproc/detail/shm/handle_serialize.hpp>
#include <mproc/serialize.hpp>

namespace mproc::detail {

template <class F>
struct bound_parts {
  static constexpr bool portable = is_portable_callable_v<F>;
  static constexpr bool state_serializable = true;
};
template <class F, class... S>
struct bound_parts<Bound<F, S...>> {
  static constexpr bool portable = is_portable_callable_v<F>;
  static constexpr bool state_serializable = (serializable<S> && ...);
};

template <class F>
constexpr void check_pool_callable() {
  static_assert(bound_parts<F>::portable,
                "mproc::Pool: the task function must be a function pointer or a captureless lambda, "
                "because it runs in another process. A capturing lambda or a stateful function object "
                "cannot cross: bind the state to it (pool.map(mp::bind(f, state), xs)), pass it as a task "
                "argument (pool.apply(f, state, x)), or load it once per worker with PoolOptions::initializer.");
  static_assert(bound_parts<F>::state_serializable,
                "mproc::bind: a bound argument's type cannot cross a process boundary; bind a serializable "
                "type or specialize mproc::serializer<T> (see serialize.hpp).");
}

// Return type of calling F on a decoded Arg (a tuple of arguments when Star).
template <class F, class Arg, bool Star>
struct pool_result {
  using type = std::remove_cvref_t<decltype(call_with(std::declval<F&>(), std::declval<Arg&>()))>;
};
template <class F, class Arg>
struct pool_result<F, Arg, true> {
  using type = std::remove_cvref_t<decltype(apply_with(std::declval<F&>(), std::declval<Arg&>()))>;
};
template <class F, class Arg, bool Star>
using pool_result_t = typename pool_result<F, Arg, Star>::type;

template <class R>
constexpr void check_pool_result() {
  static_assert(std::is_void_v<R> || serializable<R>,
                "mproc::Pool: the task function's return type cannot cross a process boundary; "
                "return a serializable type or specialize mproc::serializer<T> (see serialize.hpp).");
  static_assert(check_owning_decodable<R, decode_site::pool_result>());  // no views into the worker
}

template <class Arg>
constexpr void check_pool_argument() {
  static_assert(serializable<Arg>,
                "mproc::Pool: a task argument's type cannot cross a process boundary; pass a "
                "serializable type or specialize mproc::serializer<T> (see serialize.hpp).");
}

// The address of the trampoline that runs F on Arg in a worker.
template <class F, class Arg, bool Star>
std::uint64_t trampoline_bits() noexcept {
  return reinterpret_cast<std::uint64_t>(&task_trampoline<F, Arg, Star>);
}

// Encodes a task of calls of `f` into t.payload / t.args (protocol.hpp's
// encode_task): an mp::bind's state first (decoded by worker.hpp's
// callable_from_task), then the arguments `write(Writer&)` writes, returning
// their number of calls (`size`: their encoded size, 0 if unknown); notes
// the largest shared block among them as t.locality (affinity.hpp).
template <class F, class Arg, bool Star, class Write>
std::uint64_t encode_call(PoolTask& t, TransferHeap& heap, const F& f, std::size_t size, Write&& write) {
  if constexpr (is_bound_v<F>) {
    if (size != 0) size += encoded_size(f.state());
  }
  LocalityProbe probe;
  const std::uint64_t calls = encode_task(t.payload, t.args, heap, trampoline_bits<F, Arg, Star>(), callable_bits(f),
                                          size, [&](Writer& w) -> std::uint64_t {
                                            if constexpr (is_bound_v<F>) w.write(f.state());
                                            return write(w);
                                          });
  if (probe.bytes() >= locality_min_bytes) {
    t.locality = probe.key();
    t.locality_bytes = probe.bytes();
  }
  return calls;
}

// Encodes the next `n` inputs from `it` as one task.
template <class F, class Arg, bool Star, class It>
PoolTask encode_chunk(TransferHeap& heap, const F& f, It& it, std::size_t n, std::shared_ptr<TaskSink> sink,
                      std::size_t chunk) {
  PoolTask t;
  t.count = n;
  t.sink = std::move(sink);
  t.chunk = chunk;
  encode_call<F, Arg, Star>(t, heap, f, inputs_encoded_size<Arg>(it, n), [&](Writer& w) -> std::uint64_t {
    write_inputs<Arg>(w, it, n);
    return n;
  });
  return t;
}

// The type a map's input travels as: the decoded parameter of F (Star: the
// tuple of F's parameters).
template <bool Star, class F, class Range>
auto wire_type() {
  using In = std::ranges::range_value_t<Range>;
  if constexpr (Star) {
    return std::type_identity<typename tuple_wire_args<F, std::remove_cvref_t<In>>::type>{};
  } else {
    return std::type_identity<typename single_wire_arg<F, In>::type>{};
  }
}

// `inputs` itself if its size is known without consuming it, else its
// elements moved into a vector (map needs the count to cut chunks).
template <class Range>
decltype(auto) sized(Range&& inputs) {
  if constexpr (std::ranges::sized_range<Range> && std::ranges::forward_range<Range>) {
    return std::forward<Range>(inputs);
  } else {
    using V = std::ranges::range_value_t<Range>;
    std::vector<V> all;
    for (auto&& x : inputs) all.push_back(std::forward<decltype(x)>(x));
    return all;
  }
}

}  // namespace mproc::detail
