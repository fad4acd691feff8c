// mproc — Python's multiprocessing model for C++20.
// SPDX-License-Identifier: MIT
//
// The worker side of the process pool: the message protocol, the task
// trampolines that run a user function on decoded arguments, and the loop a
// worker process runs.
//
// A task is a chunk of `count` calls of one function. Its payload is a
// TaskHeader followed by the encoded arguments of each call. The result
// payload holds, for each call in order, a status byte and then either the
// encoded return value (status 0) or the exception's type name and message
// (status 1). Trampolines are instantiated per (function type, argument type)
// in the program image that owner and workers share, so the owner sends
// their address; a function pointer's value travels alongside.
#pragma once

#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "../serialize.hpp"
#include "channel.hpp"
#include "demangle.hpp"
#include "shm_segment.hpp"

namespace mproc::detail {

enum PoolMsg : std::uint16_t {
  pm_task = 1,         // owner -> worker: id = task id, payload = TaskHeader + arguments
  pm_stop = 2,         // owner -> worker: exit once idle
  pm_ready = 10,       // worker -> owner: the initializer succeeded
  pm_init_failed = 11, // worker -> owner: payload = ErrorInfo of the initializer
  pm_result = 12,      // worker -> owner: id = task id, payload = results
};

// Runs `count` calls of the function `fn` (a function pointer's bits, unused
// for captureless callables), decoding arguments from `args` and appending
// results to `out`.
using Trampoline = void (*)(std::uintptr_t fn, Reader& args, std::uint64_t count,
                            std::vector<std::byte>& out);

// 32 bytes, so the arguments after it start 16-byte aligned like the frame.
struct TaskHeader {
  std::uint64_t trampoline;
  std::uint64_t fn;
  std::uint64_t count;
  std::uint64_t flags;  // task_args_in_heap: a ShmHandle follows instead of the arguments
};
enum : std::uint64_t { task_args_in_heap = 1 };
static_assert(sizeof(TaskHeader) == 32);

enum : std::uint8_t { item_ok = 0, item_error = 1 };

// ---------------------------------------------------------------- callables

// Whether F can run in a pool worker: a function pointer or a captureless
// (empty, default-constructible) callable, which exist in every worker since
// workers share the program image.
template <class F>
inline constexpr bool is_portable_callable_v =
    (std::is_pointer_v<F> && std::is_function_v<std::remove_pointer_t<F>>) ||
    (std::is_class_v<F> && std::is_empty_v<F> && std::is_default_constructible_v<F>);

template <class F>
std::uintptr_t callable_bits(F f) noexcept {
  if constexpr (std::is_pointer_v<F>) {
    return reinterpret_cast<std::uintptr_t>(f);
  } else {
    (void)f;
    return 0;
  }
}

template <class F>
F callable_from_bits(std::uintptr_t bits) noexcept {
  if constexpr (std::is_pointer_v<F>) {
    return reinterpret_cast<F>(bits);
  } else {
    (void)bits;
    return F{};
  }
}

// Parameter types of a callable when they are knowable (function pointers,
// non-generic lambdas and function objects with one operator()).
template <class... P>
struct param_list {
  static constexpr bool known = true;
  using tuple = std::tuple<P...>;
};
struct unknown_params {
  static constexpr bool known = false;
};

template <class M>
struct member_params : unknown_params {};
#define MPROC_DETAIL_MEMBER_PARAMS(QUALS)                        \
  template <class R, class C, class... P>                        \
  struct member_params<R (C::*)(P...) QUALS> : param_list<P...> {}; \
  template <class R, class C, class... P>                        \
  struct member_params<R (C::*)(P...) QUALS noexcept> : param_list<P...> {};
MPROC_DETAIL_MEMBER_PARAMS()
MPROC_DETAIL_MEMBER_PARAMS(const)
MPROC_DETAIL_MEMBER_PARAMS(&)
MPROC_DETAIL_MEMBER_PARAMS(const&)
#undef MPROC_DETAIL_MEMBER_PARAMS

template <class F, class = void>
struct callable_params : unknown_params {};
template <class R, class... P>
struct callable_params<R (*)(P...)> : param_list<P...> {};
template <class R, class... P>
struct callable_params<R (*)(P...) noexcept> : param_list<P...> {};
template <class F>
struct callable_params<F, std::void_t<decltype(&F::operator())>> : member_params<decltype(&F::operator())> {};

// Shared-memory objects (Value, Array, SharedMemory, locks) travel by handle:
// they are recognised by their handle() member and never converted to a
// parameter type that would copy their contents.
template <class T>
concept shared_object = requires(const T& t) { t.handle(); };

// The type an argument of type In travels as when it feeds parameter P: P's
// value type when that is serializable and constructible from In (so a
// std::vector<double> argument reaches a std::span<const double> parameter as
// a zero-copy view), else In's own value type.
template <class P, class In>
using wire_arg_t = std::conditional_t<
    !shared_object<std::remove_cvref_t<In>> && serializable<std::remove_cvref_t<P>> &&
        std::is_constructible_v<std::remove_cvref_t<P>, const std::remove_cvref_t<In>&>,
    std::remove_cvref_t<P>, std::remove_cvref_t<In>>;

template <class F, class In>
struct single_wire_arg {
  using type = std::remove_cvref_t<In>;
};
template <class F, class In>
  requires(callable_params<F>::known && std::tuple_size_v<typename callable_params<F>::tuple> == 1)
struct single_wire_arg<F, In> {
  using type = wire_arg_t<std::tuple_element_t<0, typename callable_params<F>::tuple>, In>;
};

template <class F, class ArgsTuple, class = std::make_index_sequence<std::tuple_size_v<ArgsTuple>>>
struct tuple_wire_args {
  using type = ArgsTuple;
};
template <class F, class... In, std::size_t... I>
  requires(callable_params<F>::known &&
           std::tuple_size_v<typename callable_params<F>::tuple> == sizeof...(In))
struct tuple_wire_args<F, std::tuple<In...>, std::index_sequence<I...>> {
  using type = std::tuple<wire_arg_t<std::tuple_element_t<I, typename callable_params<F>::tuple>, In>...>;
};

// Calls f with a decoded argument, moving it when f accepts an rvalue.
template <class F, class A>
decltype(auto) call_with(F& f, A& a) {
  if constexpr (std::is_invocable_v<F&, A&&>) {
    return std::invoke(f, std::move(a));
  } else {
    return std::invoke(f, a);
  }
}
template <class F, class Tuple>
decltype(auto) apply_with(F& f, Tuple& t) {
  if constexpr (requires { std::apply(f, std::move(t)); }) {
    return std::apply(f, std::move(t));
  } else {
    return std::apply(f, t);
  }
}

// ---------------------------------------------------------------- results

// A writer appending one item to a task's results, aligning relative to the
// start of the results, where the owner's Reader starts.
class ItemWriter : public Writer {
 public:
  explicit ItemWriter(std::vector<std::byte>& out) : Writer(out) {
    writer_access::set_origin(*this, std::size_t{0} - out.size());
  }
};

inline void write_item_error(std::vector<std::byte>& out, const ExceptionInfo& info) {
  ItemWriter w(out);
  w.write(item_error);
  w.write(info.type_name);
  w.write(info.message);
}

// Encodes one call's outcome: runs `call` and appends status + value, or,
// if it throws, rolls back to the item's start and appends the error.
template <class Call>
void run_item(std::vector<std::byte>& out, Call&& call) {
  const std::size_t mark = out.size();
  try {
    using R = decltype(call());
    if constexpr (std::is_void_v<R>) {
      call();
      ItemWriter w(out);
      w.write(item_ok);
    } else {
      auto value = call();
      ItemWriter w(out);
      w.write(item_ok);
      w.write(value);
    }
  } catch (...) {
    out.resize(mark);
    write_item_error(out, describe_current_exception());
  }
}

// The forms of a task's results.
enum : std::uint8_t {
  results_items = 0x10,   // per call: status byte, then value or error
  results_values = 0x11,  // every call succeeded: one std::vector<R> (one copy for arithmetic R)
};

// The trampoline for map/imap (Star = false: one argument per call) and
// starmap/apply (Star = true: Arg is a tuple of arguments). Results are
// collected as values while every call succeeds; the first exception
// switches to per-call items for the whole task.
template <class F, class Arg, bool Star>
void task_trampoline(std::uintptr_t fn, Reader& args, std::uint64_t count, std::vector<std::byte>& out) {
  F f = callable_from_bits<F>(fn);
  auto call = [&f](Arg& a) -> decltype(auto) {
    if constexpr (Star) {
      return apply_with(f, a);
    } else {
      return call_with(f, a);
    }
  };
  using R = std::remove_cvref_t<decltype(call(std::declval<Arg&>()))>;
  const std::size_t start = out.size();
  std::uint64_t i = 0;
  std::exception_ptr error;   // of call i, when it threw
  bool bad_input = false;     // argument i could not be decoded

  if constexpr (!std::is_void_v<R>) {
    std::vector<R> values;
    values.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(count, 1u << 16)));
    for (; i < count; ++i) {
      std::optional<Arg> a;
      try {
        a.emplace(args.template read<Arg>());
      } catch (...) {
        error = std::current_exception();
        bad_input = true;
        break;
      }
      try {
        values.push_back(call(*a));
      } catch (...) {
        error = std::current_exception();
        break;
      }
    }
    try {
      ItemWriter w(out);
      if (!error) {
        w.write(results_values);
        w.write(values);
        return;
      }
      w.write(results_items);
      for (const auto& v : values) {
        w.write(item_ok);
        w.write(v);
      }
    } catch (...) {
      // A value that cannot be encoded: report every call as failed.
      out.resize(start);
      ItemWriter w(out);
      w.write(results_items);
      const ExceptionInfo info = describe_current_exception();
      for (std::uint64_t k = 0; k < count; ++k) write_item_error(out, info);
      return;
    }
  } else {
    ItemWriter w(out);
    w.write(results_items);
  }

  if (error) {
    // Call i failed (or its argument did): report it, then go on per item.
    try {
      std::rethrow_exception(error);
    } catch (...) {
      const ExceptionInfo info = describe_current_exception();
      if (bad_input) {
        for (; i < count; ++i) write_item_error(out, info);
        return;
      }
      write_item_error(out, info);
    }
    ++i;
  }
  for (; i < count; ++i) {
    std::optional<Arg> a;
    try {
      a.emplace(args.template read<Arg>());
    } catch (...) {
      // Arguments after a malformed one cannot be located: fail them all.
      const ExceptionInfo info = describe_current_exception();
      for (; i < count; ++i) write_item_error(out, info);
      return;
    }
    run_item(out, [&]() -> decltype(auto) { return call(*a); });
  }
}

// ---------------------------------------------------------------- worker

// The pool configuration a worker receives: [initializer trampoline][fn]
// [encoded initializer arguments]. A zero trampoline means no initializer.
inline int pool_worker_main(int channel_fd, std::span<const std::byte> config) {
  // Shared memory handed to this worker task after task (Value/Array
  // arguments) stays mapped between tasks instead of being re-faulted.
  set_auto_retain(true);
  Channel ch{UniqueFd(channel_fd)};
  std::vector<std::byte> out;
  out.reserve(64 * 1024);

  if (config.size() >= 2 * sizeof(std::uint64_t)) {
    std::uint64_t tramp = 0, fn = 0;
    std::memcpy(&tramp, config.data(), sizeof tramp);
    std::memcpy(&fn, config.data() + sizeof tramp, sizeof fn);
    if (tramp != 0) {
      Reader args(config.subspan(2 * sizeof(std::uint64_t)));
      reinterpret_cast<Trampoline>(tramp)(static_cast<std::uintptr_t>(fn), args, 1, out);
      // [results_items][status][type, message when it threw]
      if (out.size() < 2 || out[1] != std::byte{item_ok}) {
        ch.put(pm_init_failed, 0, std::span<const std::byte>(out).subspan(2));
        ch.flush_blocking();
        return 1;
      }
      out.clear();
    }
  }
  ch.put(pm_ready, 0, {});
  if (!ch.flush_blocking()) return 0;

  Frame f;
  for (;;) {
    bool got = false;
    try {
      got = ch.receive_blocking(f);
    } catch (const ProcessError&) {
      return 2;  // malformed input from the owner
    }
    if (!got || f.header.type == pm_stop) return 0;
    if (f.header.type != pm_task || f.payload.size() < sizeof(TaskHeader)) return 2;
    TaskHeader h;
    std::memcpy(&h, f.payload.data(), sizeof h);
    std::span<const std::byte> arg_bytes = f.payload.subspan(sizeof h);
    out.clear();
    std::shared_ptr<Mapping> heap;
    if (h.flags & task_args_in_heap) {
      // Large arguments wait in the owner's transfer heap.
      ShmHandle where;
      if (arg_bytes.size() != sizeof where) return 2;
      std::memcpy(&where, arg_bytes.data(), sizeof where);
      try {
        heap = open_segment(where, "the arguments of a pool task");
        arg_bytes = {heap->data() + where.offset, static_cast<std::size_t>(where.length)};
      } catch (...) {
        const ExceptionInfo info = describe_current_exception();
        for (std::uint64_t i = 0; i < h.count; ++i) write_item_error(out, info);
      }
    }
    if (out.empty()) {
      Reader args(arg_bytes);
      reinterpret_cast<Trampoline>(h.trampoline)(static_cast<std::uintptr_t>(h.fn), args, h.count, out);
    }
    ch.put(pm_result, f.header.id, out);
    // Every result leaves before the next task starts: if that task crashes
    // this worker, the results of the finished ones are not lost with it.
    if (!ch.flush_blocking()) return 0;
  }
}

}  // namespace mproc::detail
