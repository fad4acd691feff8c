// mproc/detail/mpi/inputs.hpp — the types an MPI task's inputs travel as,
// and the compile-time checks of what may travel to another machine.
//
// Layer detail/mpi, over the core's task type traits (shared_object,
// single_wire_arg, tuple_wire_args, check_pool_*, wire_type, sized:
// detail/pool/worker.hpp and detail/pool/submit.hpp). Used by mpi.hpp's Pool before it
// encodes a task (encode.hpp) or a broadcast value.
// SPDX-License-Identifier: MIT
#pragma once

#include <optional>
#include <ranges>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <mproc/detail/mpi/base.hpp>
#include <mproc/detail/pool/submit.hpp>

namespace mproc::detail::mpi {

// Whether T is, or contains, a process-shared object (its serializer sends
// a handle to memory of this machine).
template <class T, class = void>
struct holds_shared_object : std::bool_constant<mproc::detail::shared_object<T>> {};
template <class T>
inline constexpr bool holds_shared_object_v = holds_shared_object<std::remove_cvref_t<T>>::value;
template <class... E>
struct holds_shared_object<std::tuple<E...>> : std::bool_constant<(holds_shared_object_v<E> || ...)> {};
template <class A, class B>
struct holds_shared_object<std::pair<A, B>> : std::bool_constant<holds_shared_object_v<A> || holds_shared_object_v<B>> {
};
template <class T>
struct holds_shared_object<std::optional<T>> : std::bool_constant<holds_shared_object_v<T>> {};
template <class... E>
struct holds_shared_object<std::variant<E...>> : std::bool_constant<(holds_shared_object_v<E> || ...)> {};
template <class T>
struct holds_shared_object<T, std::enable_if_t<std::ranges::range<T> && !mproc::detail::shared_object<T> &&
                                               !std::is_same_v<std::remove_cvref_t<std::ranges::range_value_t<T>>, T>>>
    : std::bool_constant<holds_shared_object_v<std::ranges::range_value_t<T>>> {};

template <class Arg>
constexpr void check_mpi_argument() {
  static_assert(!holds_shared_object_v<Arg>,
                "mproc::mpi::Pool: a task argument is (or contains) a process-shared object (mp::Array, mp::Value, "
                "mp::SharedMemory, a lock or a queue): its memory exists on this machine only. Pass the contents "
                "by value (std::vector, std::span), or send large read-only data once with pool.broadcast().");
}

template <class R>
constexpr void check_mpi_result() {
  static_assert(!holds_shared_object_v<R>,
                "mproc::mpi::Pool: the task function returns a process-shared object (mp::Array, mp::Value, ...), "
                "whose memory exists on its own machine only; return the contents by value.");
}

// Every compile-time check of a task: F is portable, Arg (what its inputs
// travel as) and R (what it returns) serialize and stay on no machine.
template <class F>
constexpr void check_mpi_callable() {
  static_assert(!is_bound_v<F>,
                "mproc::mpi::Pool: mp::bind is not supported here; send the state once per rank with "
                "pool.broadcast(state) and pass the handle as a task argument.");
  check_pool_callable<F>();
}

template <class F, class Arg, class R>
constexpr void check_task_types() {
  check_mpi_callable<F>();
  check_pool_argument<Arg>();
  check_mpi_argument<Arg>();
  check_pool_result<R>();
  check_mpi_result<R>();
}

}  // namespace mproc::detail::mpi
