// The worker side of the process pool (layer detail/pool): the task
// trampolines that run a user function on decoded arguments, and the loop a
// worker process runs, speaking the protocol of protocol.hpp.
//
// A task is a chunk of `count` calls of one function. Trampolines are
// instantiated per (function type, argument type) in the program image that
// owner and workers share, so the owner sends their address; a function
// pointer's value travels alongside.
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <cerrno>
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

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <mproc/bind.hpp>
#include <mproc/detail/os/spawn.hpp>
#include <mproc/detail/pool/channel.hpp>
#include <mproc/detail/pool/protocol.hpp>
#include <mproc/detail/pool/remote_exceptions.hpp>
#include <mproc/detail/shm/segment.hpp>
#include <mproc/detail/util/demangle.hpp>
#include <mproc/detail/util/test_hook.hpp>
#include <mproc/serialize.hpp>

namespace mproc::detail {

// What the worker being run in this process knows about itself (set by
// pool_worker_main; null words outside pool workers).
struct WorkerSelf {
  std::atomic<std::uint64_t>* started = nullptr;
  std::uint64_t task = 0;  // id of the task being decoded or run
};
inline WorkerSelf& worker_self() noexcept {
  static WorkerSelf self;
  return self;
}

// Called by trampolines right before user code runs for a task.
inline void note_task_started() noexcept {
  WorkerSelf& self = worker_self();
  if (self.started != nullptr) self.started->store(self.task, std::memory_order_release);
}

// Runs `count` calls of the function `fn` (a function pointer's bits, unused
// for captureless callables), decoding arguments from `args` and appending
// results to `out`.
using Trampoline = void (*)(std::uintptr_t fn, Reader& args, std::uint64_t count, std::vector<std::byte>& out);

// ---------------------------------------------------------------- callables

// Whether F can run in a pool worker: a function pointer or a captureless
// (empty, default-constructible) callable, which exist in every worker since
// workers share the program image.
template <class F>
inline constexpr bool is_portable_callable_v =
    (std::is_pointer_v<F> && std::is_function_v<std::remove_pointer_t<F>>) ||
    (std::is_class_v<F> && std::is_empty_v<F> && std::is_default_constructible_v<F>);

template <class F>
std::uintptr_t callable_bits(const F& f) noexcept {
  if constexpr (is_bound_v<F>) {
    return callable_bits(f.function());
  } else if constexpr (std::is_pointer_v<F>) {
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

// The callable a task runs: from its bits and, for an mp::bind, the state
// that precedes the task's arguments in `args` (written by submit.hpp's
// encode_call). Throws what decoding the state throws.
template <class F>
F callable_from_task(std::uintptr_t bits, Reader& args) {
  if constexpr (is_bound_v<F>) {
    using Fn = std::remove_cvref_t<decltype(std::declval<const F&>().function())>;
    using State = std::remove_cvref_t<decltype(std::declval<const F&>().state())>;
    return F(callable_from_bits<Fn>(bits), args.template read<State>());
  } else {
    (void)args;
    return callable_from_bits<F>(bits);
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
#define MPROC_DETAIL_MEMBER_PARAMS(QUALS)                           \
  template <class R, class C, class... P>                           \
  struct member_params<R (C::*)(P...) QUALS> : param_list<P...> {}; \
  template <class R, class C, class... P>                           \
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
// An mp::bind: F's parameters after the bound ones.
template <std::size_t K, class Tuple, class = std::make_index_sequence<std::tuple_size_v<Tuple> - K>>
struct params_after;
template <std::size_t K, class Tuple, std::size_t... I>
struct params_after<K, Tuple, std::index_sequence<I...>> : param_list<std::tuple_element_t<K + I, Tuple>...> {};
template <class F, std::size_t K>
struct bound_params : unknown_params {};
template <class F, std::size_t K>
  requires(callable_params<F>::known && std::tuple_size_v<typename callable_params<F>::tuple> >= K)
struct bound_params<F, K> : params_after<K, typename callable_params<F>::tuple> {};
template <class F, class... S>
struct callable_params<Bound<F, S...>> : bound_params<F, sizeof...(S)> {};

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
using wire_arg_t =
    std::conditional_t<!shared_object<std::remove_cvref_t<In>> && serializable<std::remove_cvref_t<P>> &&
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
  requires(callable_params<F>::known && std::tuple_size_v<typename callable_params<F>::tuple> == sizeof...(In))
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

// Encodes one call's outcome: runs `call` and appends status + value, or,
// if it throws, rolls back to the item's start and appends the error (the
// call's exception as captured for the owner to rebuild typed; an error
// encoding the value goes untyped).
template <class Call>
void run_item(std::vector<std::byte>& out, Call&& call) {
  const std::size_t mark = out.size();
  bool in_call = true;
  try {
    using R = decltype(call());
    if constexpr (std::is_void_v<R>) {
      call();
      in_call = false;
      write_item_ok(out);
    } else {
      decltype(auto) value = call();
      in_call = false;
      write_item_ok(out, value);
    }
  } catch (...) {
    out.resize(mark);
    if (in_call) {
      write_item_error(out, capture_task_error());
    } else {
      write_item_error(out, describe_current_exception());
    }
  }
}

// The trampoline for map/imap (Star = false: one argument per call) and
// starmap/apply (Star = true: Arg is a tuple of arguments). Results are
// collected as values while every call succeeds; the first exception
// switches to per-call items for the whole task.
template <class F, class Arg, bool Star>
void task_trampoline(std::uintptr_t fn, Reader& args, std::uint64_t count, std::vector<std::byte>& out) {
  std::optional<F> bound;  // an mp::bind's state: decoded once per task
  try {
    bound.emplace(callable_from_task<F>(fn, args));
  } catch (...) {
    write_task_failed(out, count, describe_current_exception());
    return;
  }
  F& f = *bound;
  auto call = [&f](Arg& a) -> decltype(auto) {
    if constexpr (Star) {
      return apply_with(f, a);
    } else {
      return call_with(f, a);
    }
  };
  using R = std::remove_cvref_t<decltype(call(std::declval<Arg&>()))>;
  const std::size_t start = out.size();
  note_task_started();
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
      if (!error) {
        write_values(out, values);
        return;
      }
      write_items_form(out);
      for (std::size_t k = 0; k < values.size(); ++k)
        write_item_ok(out, static_cast<const R&>(values[k]));  // std::vector<bool> hands out proxies
    } catch (...) {
      // A value that cannot be encoded: report every call as failed.
      out.resize(start);
      write_task_failed(out, count, describe_current_exception());
      return;
    }
  } else {
    write_items_form(out);
  }

  if (error) {
    // Call i failed (or its argument did): report it, then go on per item.
    try {
      std::rethrow_exception(error);
    } catch (...) {
      if (bad_input) {
        const ExceptionInfo info = describe_current_exception();
        for (; i < count; ++i) write_item_error(out, info);
        return;
      }
      write_item_error(out, capture_task_error());
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

// The trampoline of a pool initializer: f(args...) once, its return value
// ignored (as in Python). Writes results_items and one item: ok or the error.
template <class F, class Arg>
void init_trampoline(std::uintptr_t fn, Reader& args, std::uint64_t, std::vector<std::byte>& out) {
  F f = callable_from_bits<F>(fn);
  write_items_form(out);
  run_item(out, [&] {
    Arg a = args.template read<Arg>();
    (void)apply_with(f, a);
  });
}

// ---------------------------------------------------------------- worker

// The steps of a worker's task protocol, at which a test injects faults
// through TestHook<FaultStep> (detail/util/test_hook.hpp; see
// tests/support/fault_injection.hpp).
enum class FaultStep {
  before_read,       // waiting for the next task (it may already be in the socket)
  after_read,        // the task frame has been read, nothing decoded yet
  in_decode,         // inside task handling, before the arguments are decoded
  after_run,         // user code has run; the results are encoded but not sent
  in_send,           // while the results are being sent
  mid_large_result,  // halfway through writing a large result into its memfd
  after_write,       // the results have left
};

// Sends `out` (the results of task `id`) in a sealed memfd. Returns false
// if the memfd cannot be made (the caller reports the task as failed).
// Throws ProcessError if the channel fails.
inline bool send_result_fd(Channel& ch, std::uint64_t id, std::span<const std::byte> out) {
  UniqueFd fd(::memfd_create("mproc-result", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd) return false;
  if (::ftruncate(fd.get(), static_cast<off_t>(out.size())) < 0) return false;
  std::size_t done = 0;
  bool halfway = false;
  while (done < out.size()) {
    if (!halfway && done >= out.size() / 2) {
      halfway = true;
      test_point(FaultStep::mid_large_result);
    }
    const std::size_t piece =
        std::min<std::size_t>(out.size() - done, done < out.size() / 2 ? out.size() / 2 - done : out.size());
    const ssize_t n = ::pwrite(fd.get(), out.data() + done, piece, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;  // ENOSPC/ENOMEM: tmpfs or memory limit
    done += static_cast<std::size_t>(n);
  }
  if (::fcntl(fd.get(), F_ADD_SEALS, kResultSeals) < 0) return false;
  const std::uint64_t size = out.size();
  ch.put(pm_result_fd, id, result_fd_payload(size), std::move(fd));
  return true;
}

// Runs one task frame, leaving its results in `out`. Never lets an
// exception out: a failure of the worker's own machinery (out of memory
// while decoding or encoding, shared memory that cannot be opened) fails
// every call of the task with that error. Returns false only if even that
// report cannot be written (the worker must exit).
inline bool run_task(const Frame& f, const TaskHeader& h, std::vector<std::byte>& out) noexcept {
  try {
    out.clear();
    std::shared_ptr<Mapping> heap;  // large arguments wait in the owner's transfer heap
    const std::span<const std::byte> arg_bytes = task_arguments(f.payload, h, heap);
    test_point(FaultStep::in_decode);
    Reader args(arg_bytes);
    reinterpret_cast<Trampoline>(h.trampoline)(static_cast<std::uintptr_t>(h.fn), args, h.count, out);
    return true;
  } catch (...) {
    try {
      ExceptionInfo info = describe_current_exception();
      info.message = "in the pool worker's own machinery (pid " + std::to_string(::getpid()) + "): " + info.message;
      std::vector<std::byte>().swap(out);  // free what a failed encoding held
      write_task_failed(out, h.count, info);
      return true;
    } catch (...) {
      return false;
    }
  }
}

// Sends the results of task `id`: small ones in the result `ring` (waking
// the owner through `ch` if it sleeps and waits for them), others through
// `ch`, or in a memfd when large. A result that cannot be sent at all (no
// memory for a memfd, say) is replaced by an error for each call of the
// task. Returns false if the owner is gone or nothing at all could be sent.
inline bool send_result(Channel& ch, ResultRingWriter& ring, std::uint64_t id, std::uint64_t count,
                        std::vector<std::byte>& out) noexcept {
  try {
    test_point(FaultStep::in_send);
    if (out.size() < result_via_fd()) {
      if (!ring.publish(id, out)) {
        ch.put(pm_result, id, out);
      } else if (ring.claim_wake(id)) {
        ch.put(pm_results_ready, 0, {});
      }
    } else if (!send_result_fd(ch, id, out)) {
      const int err = errno;
      const std::size_t size = out.size();
      std::vector<std::byte>().swap(out);
      write_task_failed(out, count,
                        {"mproc::ProcessError", "mproc: Pool: the task's result (" + std::to_string(size) +
                                                    " bytes encoded) could not be sent: " + std::strerror(err)});
      ch.put(pm_result, id, out);
    }
  } catch (...) {
    try {
      ExceptionInfo info = describe_current_exception();
      info.message = "mproc: Pool: the task's result could not be sent: " + info.message;
      std::vector<std::byte>().swap(out);
      write_task_failed(out, count, info);
      ch.put(pm_result, id, out);
    } catch (...) {
      return false;
    }
  }
  try {
    return ch.flush_blocking();
  } catch (...) {
    return false;
  }
}

// The loop a pool worker runs (a WorkerEntry). Returns its exit code: 0
// when told to stop or when the owner is gone, 2 on a malformed frame from
// the owner, worker_exit_internal when it cannot even report a failure.
inline int pool_worker_main(UniqueFd channel, std::uint64_t slot, std::span<const std::byte> config) noexcept {
  try {
    Channel ch(std::move(channel));
    const std::optional<WorkerConfig> cfg = decode_worker_config(config);
    if (!cfg) return 2;
    // The board: the mapping inherited from the owner, kept as it is.
    std::shared_ptr<Mapping> board = open_segment(cfg->board, "the pool's status board");
    if (board_bytes(slot + 1) > board->size()) return 2;
    const BoardView view(board->data());
    worker_self().started = &view.slot(slot).started;
    ResultRingWriter ring(&view.slot(slot).ring, view.ring_data(slot), &view.header().owner_asleep);
    // Shared memory handed to this worker task after task (Value/Array
    // arguments) stays mapped between tasks instead of being re-faulted.
    set_auto_retain(true);

    std::vector<std::byte> out;
    out.reserve(64 * 1024);
    if (cfg->init_trampoline != 0) {
      Reader args(cfg->init_args);
      reinterpret_cast<Trampoline>(cfg->init_trampoline)(static_cast<std::uintptr_t>(cfg->init_fn), args, 1, out);
      if (!init_succeeded(out)) {
        ch.put(pm_init_failed, 0, init_failure_payload(out));
        ch.flush_blocking();
        return 1;
      }
      out.clear();
    }
    ch.put(pm_ready, 0, {});
    if (!ch.flush_blocking()) return 0;

    Frame f;
    for (;;) {
      test_point(FaultStep::before_read);
      bool got = false;
      try {
        got = ch.receive_blocking(f);
      } catch (const ProcessError&) {
        return 2;  // malformed input from the owner
      }
      if (!got || f.header.type == pm_stop) return 0;
      const std::optional<TaskHeader> h = read_task_header(f.payload);
      if (f.header.type != pm_task || !h) return 2;
      worker_self().task = f.header.id;
      test_point(FaultStep::after_read);
      if (!run_task(f, *h, out)) return worker_exit_internal;
      test_point(FaultStep::after_run);
      // Every result leaves before the next task starts: if that task crashes
      // this worker, the results of the finished ones are not lost with it.
      if (!send_result(ch, ring, f.header.id, h->count, out)) return 0;
      test_point(FaultStep::after_write);
      if (out.capacity() > std::max(result_via_fd(), std::size_t{4} << 20))
        std::vector<std::byte>().swap(out);  // after a huge result
    }
  } catch (...) {
    return worker_exit_internal;  // out of memory before the loop, or a board that cannot be opened
  }
}

}  // namespace mproc::detail
