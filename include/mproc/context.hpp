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

  // The other factories make what the namespace-level types make, with
  // their parameters; each throws what that type's constructor throws.
  template <class F, class... A>
  [[nodiscard]] mproc::Process Process(F&& target, A&&... args) const {
    return mproc::Process(std::forward<F>(target), std::forward<A>(args)...);
  }
  template <class T>
  [[nodiscard]] mproc::Queue<T> Queue(int maxsize = 0, std::size_t ring_bytes = detail::kQueueDefaultRingBytes) const {
    return mproc::Queue<T>(maxsize, ring_bytes);
  }
  template <class T>
  [[nodiscard]] mproc::JoinableQueue<T> JoinableQueue(int maxsize = 0,
                                                      std::size_t ring_bytes = detail::kQueueDefaultRingBytes) const {
    return mproc::JoinableQueue<T>(maxsize, ring_bytes);
  }
  template <class T>
  [[nodiscard]] mproc::SimpleQueue<T> SimpleQueue(std::size_t ring_bytes = detail::kQueueDefaultRingBytes) const {
    return mproc::SimpleQueue<T>(ring_bytes);
  }
  [[nodiscard]] std::pair<Connection, Connection> Pipe(bool duplex = true) const { return mproc::Pipe(duplex); }
  [[nodiscard]] mproc::Lock Lock() const { return mproc::Lock(); }
  [[nodiscard]] mproc::RLock RLock() const { return mproc::RLock(); }
  [[nodiscard]] mproc::Condition Condition() const { return mproc::Condition(); }
  [[nodiscard]] mproc::Condition Condition(mproc::Lock lock) const { return mproc::Condition(std::move(lock)); }
  [[nodiscard]] mproc::Condition Condition(mproc::RLock lock) const { return mproc::Condition(std::move(lock)); }
  [[nodiscard]] mproc::Semaphore Semaphore(int value = 1) const { return mproc::Semaphore(value); }
  [[nodiscard]] mproc::BoundedSemaphore BoundedSemaphore(int value = 1) const { return mproc::BoundedSemaphore(value); }
  [[nodiscard]] mproc::Event Event() const { return mproc::Event(); }
  // Barrier(parties), Barrier(parties, action), Barrier(parties, timeout),
  // Barrier(parties, action, timeout).
  template <class... A>
  [[nodiscard]] mproc::Barrier Barrier(std::size_t parties, A&&... action_and_timeout) const {
    return mproc::Barrier(parties, std::forward<A>(action_and_timeout)...);
  }
  template <class T, class L = mproc::RLock>
  [[nodiscard]] mproc::Value<T, L> Value(const T& init = T{}) const {
    return mproc::Value<T, L>(init);
  }
  template <class T, detail::ObjectLock L>
  [[nodiscard]] mproc::Value<T, L> Value(const T& init, L lock) const {
    return mproc::Value<T, L>(init, std::move(lock));
  }
  // Array<T, L>(n), (n, lock), (range), (range, lock).
  template <class T, class L = mproc::RLock, class... A>
  [[nodiscard]] mproc::Array<T, L> Array(A&&... args) const {
    return mproc::Array<T, L>(std::forward<A>(args)...);
  }
  template <class T>
  [[nodiscard]] mproc::RawValue<T> RawValue(const T& init = T{}) const {
    return mproc::RawValue<T>(init);
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
