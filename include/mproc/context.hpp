// mproc::Context and get_context() (Python: multiprocessing.get_context):
// an object with the module's factories — Pool, Process, Queue, Pipe, the
// locks, Value, Array, ... — whose pools start their workers with one
// start method, whatever the process-wide default (set_start_method) is.
// Public layer, above pool.hpp, process.hpp and the shared objects.
//
//   auto ctx = mp::get_context(mp::StartMethod::forkserver);
//   auto pool = ctx.Pool(4);               // workers forked from the fork server
//   auto q = ctx.Queue<int>();
//
// Only a Pool's workers depend on the start method. A Process always forks
// its creator, in every context: its target is any C++ callable, which only
// fork() can carry to the child (Python's forkserver pickles the target
// instead); the shared objects (queues, locks, Value/Array) are the same in
// every context, as in Python.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <optional>
#include <utility>

#include <mproc/barrier.hpp>
#include <mproc/condition.hpp>
#include <mproc/connection.hpp>
#include <mproc/event.hpp>
#include <mproc/lock.hpp>
#include <mproc/pool.hpp>
#include <mproc/process.hpp>
#include <mproc/queue.hpp>
#include <mproc/semaphore.hpp>
#include <mproc/sharedctypes.hpp>
#include <mproc/start_method.hpp>

namespace mproc {

// The factories of the module, bound to a start method (Python: a context
// object). Cheap to copy; thread-safe.
class Context {
 public:
  // A context for `method`. StartMethod::forkserver starts the fork server
  // now if it is not running (as set_start_method does: create the context
  // early in main(), before threads start). Throws ProcessError if the
  // server cannot start.
  explicit Context(StartMethod method) : method_(method) {
    if (method == StartMethod::forkserver) detail::ForkServer::instance().start();
  }

  // This context's start method (Python: ctx.get_start_method()).
  [[nodiscard]] StartMethod get_start_method() const noexcept { return method_; }

  // A process pool whose workers start with this context's method (it
  // replaces a start method set in `options`). Throws as Pool's constructor.
  [[nodiscard]] mproc::Pool Pool(std::optional<std::size_t> processes = std::nullopt, PoolOptions options = {}) const {
    options.start_method(method_);
    return mproc::Pool(processes, std::move(options));
  }

  // The other factories make what the namespace-level types make; each
  // throws what that type's constructor throws.
  template <class... A>
  [[nodiscard]] mproc::Process Process(A&&... args) const {
    return mproc::Process(std::forward<A>(args)...);
  }
  template <class T, class... A>
  [[nodiscard]] mproc::Queue<T> Queue(A&&... args) const {
    return mproc::Queue<T>(std::forward<A>(args)...);
  }
  template <class T, class... A>
  [[nodiscard]] mproc::JoinableQueue<T> JoinableQueue(A&&... args) const {
    return mproc::JoinableQueue<T>(std::forward<A>(args)...);
  }
  template <class T, class... A>
  [[nodiscard]] mproc::SimpleQueue<T> SimpleQueue(A&&... args) const {
    return mproc::SimpleQueue<T>(std::forward<A>(args)...);
  }
  [[nodiscard]] std::pair<Connection, Connection> Pipe(bool duplex = true) const { return mproc::Pipe(duplex); }
  [[nodiscard]] mproc::Lock Lock() const { return mproc::Lock(); }
  [[nodiscard]] mproc::RLock RLock() const { return mproc::RLock(); }
  template <class... A>
  [[nodiscard]] mproc::Condition Condition(A&&... args) const {
    return mproc::Condition(std::forward<A>(args)...);
  }
  template <class... A>
  [[nodiscard]] mproc::Semaphore Semaphore(A&&... args) const {
    return mproc::Semaphore(std::forward<A>(args)...);
  }
  template <class... A>
  [[nodiscard]] mproc::BoundedSemaphore BoundedSemaphore(A&&... args) const {
    return mproc::BoundedSemaphore(std::forward<A>(args)...);
  }
  [[nodiscard]] mproc::Event Event() const { return mproc::Event(); }
  template <class... A>
  [[nodiscard]] mproc::Barrier Barrier(A&&... args) const {
    return mproc::Barrier(std::forward<A>(args)...);
  }
  template <class T, class L = mproc::RLock, class... A>
  [[nodiscard]] mproc::Value<T, L> Value(A&&... args) const {
    return mproc::Value<T, L>(std::forward<A>(args)...);
  }
  template <class T, class L = mproc::RLock, class... A>
  [[nodiscard]] mproc::Array<T, L> Array(A&&... args) const {
    return mproc::Array<T, L>(std::forward<A>(args)...);
  }
  template <class T, class... A>
  [[nodiscard]] mproc::RawValue<T> RawValue(A&&... args) const {
    return mproc::RawValue<T>(std::forward<A>(args)...);
  }
  template <class T, class... A>
  [[nodiscard]] mproc::RawArray<T> RawArray(A&&... args) const {
    return mproc::RawArray<T>(std::forward<A>(args)...);
  }

  friend bool operator==(const Context&, const Context&) = default;

 private:
  StartMethod method_;
};

// The context of `method` (Python: multiprocessing.get_context(method)).
// Throws as Context's constructor.
[[nodiscard]] inline Context get_context(StartMethod method) { return Context(method); }
// The context of the current default start method (Python:
// get_context() with no argument). Non-blocking.
[[nodiscard]] inline Context get_context() { return Context(get_start_method()); }

}  // namespace mproc
