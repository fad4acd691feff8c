// mproc/mpi.hpp — mproc::mpi::Pool, the pool over the ranks of an MPI job.
//
// Public API, optional (the umbrella mproc.hpp never includes it). Built on
// detail/mpi/ (transport, client, serving loop, encoders) and the core's
// serialization, task traits and result types (pool.hpp, async_result.hpp).
// SPDX-License-Identifier: MIT
//
// mproc::mpi — the same Pool over the ranks of an MPI job (Python:
// mpi4py.futures). Optional: link the CMake target mproc::mpi (mproc +
// MPI::MPI_CXX); the umbrella mproc.hpp never includes this header.
//
//   mp::mpi::Pool pool;                                    // every rank runs this line
//   std::vector<double> means = pool.map(analyze_data, data_sets);   // only the client gets here
//
//   $ mpiexec -n 4 ./prog        # rank 0 is the client, ranks 1..3 serve its tasks
//
// Every rank runs the same binary. One rank (the root, 0 by default) is the
// client: it runs the program's code and submits tasks. The constructor is
// collective: on every other rank it serves tasks until the client closes the
// pool, then ends the process (MPI_Finalize, exit 0) — so code after it runs
// on the client only. With PoolOptions().servers_return(), serving ranks
// return from the constructor instead, with an empty pool (`if (pool)` is
// false), for programs that must go on on every rank (mpi4py's
// MPICommExecutor).
//
// Tasks follow mproc::Pool's rules: the task function is a function pointer
// or a captureless lambda, arguments and results cross through mproc's
// serialization, a task's exception comes back as in Pool, chunksize
// defaults to Python's formula. Tasks are pulled dynamically (each serving
// rank holds at most `prefetch` tasks; a result frees its rank's slot), map
// and imap return results in input order, imap_unordered in completion order.
// Large read-only data go to every rank once with broadcast(); tasks receive
// the returned handle (Shared<T>) by reference. Process-shared objects
// (Array, Value, SharedMemory, locks, queues) cannot cross machines: passing
// one is a compile error.
//
// Failures: MPI without fault tolerance (ULFM) cannot survive the death of
// a rank. If a serving rank dies, mpiexec aborts the whole job within
// seconds with a non-zero exit code and its own message naming the rank;
// nothing hangs. Ranks running another build are refused when the pool is
// created (ProcessError). A task naming code its rank does not have fails
// with RemoteError. A malformed protocol message (corruption, another mproc
// version) fails the client's pending calls with ProcessError and aborts
// the job when the pool is joined; on a serving rank it aborts the job at
// once, with a message.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <mproc/detail/mpi/base.hpp>
#include <mproc/detail/mpi/broadcast.hpp>
#include <mproc/detail/mpi/client.hpp>
#include <mproc/detail/mpi/encode.hpp>
#include <mproc/detail/mpi/image.hpp>
#include <mproc/detail/mpi/imap_result.hpp>
#include <mproc/detail/mpi/init.hpp>
#include <mproc/detail/mpi/inputs.hpp>
#include <mproc/detail/mpi/server.hpp>

namespace mproc::mpi {

namespace detail {

// mproc::mpi::detail is a lookup bridge only: `detail::X` in this file names
// the core's internals (mproc::detail) and the MPI ones (mproc::detail::mpi).
using namespace mproc::detail;
using namespace mproc::detail::mpi;
// The MPI encoders, not the process pool's of the same names in mproc::detail.
using mproc::detail::mpi::encode_chunk;
using mproc::detail::mpi::encode_task;

}  // namespace detail

// RAII MPI environment: MPI_Init_thread on construction, MPI_Finalize on
// destruction — unless MPI was already initialized (by the program itself
// or by a Pool), in which case it uses that initialization and leaves
// finalizing to its owner. Create it first thing in main(), on every rank:
//
//   int main(int argc, char** argv) { mp::mpi::Environment env(argc, argv); ... }
//
// mproc::mpi asks for MPI_THREAD_MULTIPLE and requires it: the pool's
// progress thread makes MPI calls (on the pool's own communicator) while
// the program's threads may make theirs; only MPI_THREAD_MULTIPLE allows
// calls from several threads at once. Blocks (MPI_Init_thread may wait for
// the other ranks). Not thread-safe: one Environment per process.
class Environment {
 public:
  // Throws ProcessError if another Environment is alive (MPI is initialized
  // once per process: nested initialization), if MPI was already finalized,
  // or if MPI does not provide MPI_THREAD_MULTIPLE.
  Environment() : Environment(nullptr, nullptr) {}
  Environment(int& argc, char**& argv) : Environment(&argc, &argv) {}
  Environment(const Environment&) = delete;
  Environment& operator=(const Environment&) = delete;

  // MPI_Finalize if this object initialized MPI (a pool still open on this
  // client is terminated and joined first). Blocks (MPI_Finalize is collective).
  ~Environment() {
    alive() = false;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owner_ && !finalized) {
      detail::shut_down_open_client();  // a pool still open would keep its serving ranks waiting
      MPI_Finalize();
    }
  }

  // Whether this object initialized MPI (and will finalize it).
  bool owns_mpi() const noexcept { return owner_; }
  // This process's rank in MPI_COMM_WORLD and the world's size.
  int rank() const {
    int r = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
  }
  int size() const {
    int n = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    return n;
  }

 private:
  static bool& alive() noexcept {
    static bool flag = false;
    return flag;
  }

  Environment(int* argc, char*** argv) {
    if (alive())
      throw ProcessError(
          "mproc::mpi::Environment: another Environment is alive in this process; MPI is "
          "initialized once per process: create one Environment at the top of main()");
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized)
      throw ProcessError(
          "mproc::mpi::Environment: MPI was already finalized in this process; it cannot be "
          "initialized again");
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      mproc::detail::mpi::check(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread");
      owner_ = true;
    }
    try {
      detail::ensure_initialized();  // checks the thread level
    } catch (...) {
      if (owner_) MPI_Finalize();
      throw;
    }
    alive() = true;
  }

  bool owner_ = false;
};

// A value sent once to every rank of a pool by Pool::broadcast(), and the
// handle task functions receive it by:
//
//   auto model = pool.broadcast(load_model());           // once per rank
//   double score(const mp::mpi::Shared<Model>& m, const Sample& s) { return m->predict(s); }
//   pool.starmap(score, pairs_of(model, samples));         // each task sends 16 bytes for `model`
//
// A task argument of type Shared<T> travels as its id; on the serving rank
// it refers to that rank's copy. Valid in tasks of the pool that made it,
// until that pool is joined. Copies share the value. Read-only. (Its
// serializer: detail/mpi/broadcast.hpp.)
template <class T>
class Shared {
 public:
  // An empty handle.
  Shared() = default;

  // The value (on the client: the broadcast object; on a serving rank: its
  // copy). Throws ProcessError if the handle is empty.
  const T& get() const {
    if (!value_) throw ProcessError("mproc::mpi::Shared: empty handle");
    return *value_;
  }
  const T& operator*() const { return get(); }
  const T* operator->() const { return &get(); }
  explicit operator bool() const noexcept { return value_ != nullptr; }
  // The handle's id (unique in the client's process).
  std::uint64_t id() const noexcept { return id_; }

 private:
  friend class Pool;
  friend struct mproc::serializer<Shared<T>>;
  Shared(std::uint64_t id, std::shared_ptr<const T> value) : id_(id), value_(std::move(value)) {}
  std::uint64_t id_ = 0;
  std::shared_ptr<const T> value_;
};

// Options of an MPI pool, set fluently:
//   mp::mpi::Pool pool(mp::mpi::PoolOptions().root(0).servers_return());
class PoolOptions {
 public:
  // The communicator whose ranks form the pool (default MPI_COMM_WORLD; the
  // pool duplicates it, so its traffic never mixes with the program's).
  PoolOptions& comm(MPI_Comm c) noexcept {
    comm_ = c;
    return *this;
  }
  // The client's rank in it (default 0).
  PoolOptions& root(int r) noexcept {
    root_ = r;
    return *this;
  }
  // Serving ranks return from the constructor once the client closes the
  // pool (with an empty pool) instead of ending the process.
  PoolOptions& servers_return(bool yes = true) noexcept {
    servers_return_ = yes;
    return *this;
  }
  // Tasks a serving rank holds at once (default 2: the next one waits while
  // it runs one). 1 balances the last tasks of a map best; more hides latency.
  PoolOptions& prefetch(std::size_t n) noexcept {
    prefetch_ = n;
    return *this;
  }

 private:
  friend class Pool;
  MPI_Comm comm_ = MPI_COMM_WORLD;
  int root_ = 0;
  bool servers_return_ = false;
  std::size_t prefetch_ = 2;
};

// ImapResult<R>, what imap returns: detail/mpi/imap_result.hpp.

// A pool of MPI ranks (Python: mpi4py.futures.MPIPoolExecutor /
// MPICommExecutor), with mproc::Pool's interface. See the top of this file.
// All methods are thread-safe on the client; on a serving rank (servers_return
// form) every method but the observers throws ProcessError.
class Pool {
 public:
  // Collective over the options' communicator: every rank must construct the
  // pool. Initializes MPI if needed (MPI_THREAD_MULTIPLE, finalized at
  // exit). On the client: duplicates the communicator, checks that every
  // serving rank runs the same program image, returns. On a serving rank:
  // serves until the client closes the pool, then ends the process
  // (MPI_Finalize, exit 0), or returns an empty pool with servers_return().
  // Throws ProcessError: a communicator of one rank (no one to serve), an
  // invalid root, a client that still has another pool open (serving ranks
  // serve one pool at a time: close() and join() it first), MPI that lacks
  // MPI_THREAD_MULTIPLE, serving ranks that run another build.
  explicit Pool(PoolOptions options = {}) : root_(options.root_) {
    detail::ensure_initialized();
    int size = 0;
    detail::check(MPI_Comm_size(options.comm_, &size), "MPI_Comm_size");
    detail::check(MPI_Comm_rank(options.comm_, &rank_), "MPI_Comm_rank");
    if (size < 2)
      throw ProcessError("mproc::mpi::Pool: the communicator has " + std::to_string(size) +
                         " rank; a pool needs a client and at least one serving rank: launch the program with "
                         "mpiexec -n N (N >= 2)");
    if (root_ < 0 || root_ >= size)
      throw ProcessError("mproc::mpi::Pool: root " + std::to_string(root_) +
                         " is not a rank of the communicator (size " + std::to_string(size) + ")");
    if (rank_ == root_ && detail::client_open())
      throw ProcessError(
          "mproc::mpi::Pool: another pool is open in this process; serving ranks serve one pool at "
          "a time: close() and join() it (or destroy it) before creating the next");
    MPI_Comm comm = MPI_COMM_NULL;
    detail::check(MPI_Comm_dup(options.comm_, &comm), "MPI_Comm_dup");
    MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
    if (rank_ == root_) {
      client_ = std::make_shared<detail::Client>(comm, root_, options.prefetch_);
      detail::OpenClient& open = detail::open_client();
      std::lock_guard lock(open.mutex);
      open.client = client_;
      return;
    }
    try {
      detail::serve(comm, root_);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "mproc::mpi::Pool: serving rank %d: %s; aborting the MPI job\n", rank_, e.what());
      std::fflush(stderr);
      MPI_Abort(comm, 70);
    }
    MPI_Comm_free(&comm);
    if (!options.servers_return_) {
      MPI_Finalize();
      std::exit(0);
    }
  }

  Pool(Pool&& other) noexcept
      : client_(std::move(other.client_)), rank_(other.rank_), root_(other.root_), joined_(other.joined_) {}
  Pool& operator=(Pool&&) = delete;
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  // On the client: close() + join() — every submitted task runs; blocks
  // until the serving ranks have stopped. Nothing on a serving rank.
  ~Pool() {
    if (!client_) return;
    try {
      client_->close();
      finish_join();
    } catch (...) {
    }
  }

  // Whether this rank is the pool's client (false on serving ranks, which
  // reach this only with servers_return()). Non-blocking.
  explicit operator bool() const noexcept { return client_ != nullptr; }
  bool is_client() const noexcept { return client_ != nullptr; }
  // This process's rank in the pool's communicator, and the client's.
  int rank() const noexcept { return rank_; }
  int root() const noexcept { return root_; }

  // Number of serving ranks (the communicator's size - 1). Non-blocking.
  [[nodiscard]] std::size_t size() const { return static_cast<std::size_t>(client().servers()); }

  // f applied to every input, results in input order (Python: map). Inputs
  // go in chunks of `chunksize` (0: Python's default, ceil(n / (4 * size()));
  // more than n: one chunk). Blocks, driving the pool's communication.
  // Throws the first failure: the task's exception (RemoteException<E> or
  // RemoteError), ProcessError; before anything runs, ValueError for a
  // chunksize above PTRDIFF_MAX (a negative number converted). The same
  // holds for starmap, the async forms and imap.
  template <class F, std::ranges::input_range Range>
  auto map(F f, Range&& inputs, std::size_t chunksize = 0) {
    return map_impl<false>(f, std::forward<Range>(inputs), chunksize);
  }

  // map with each input a tuple unpacked into f's arguments (Python: starmap).
  template <class F, std::ranges::input_range Range>
  auto starmap(F f, Range&& inputs, std::size_t chunksize = 0) {
    return map_impl<true>(f, std::forward<Range>(inputs), chunksize);
  }

  // map without blocking: encodes every input now, returns an AsyncResult
  // of the vector of results (or of the first failure).
  template <class F, std::ranges::input_range Range>
  [[nodiscard]] auto map_async(F f, Range&& inputs, std::size_t chunksize = 0) {
    return map_async_impl<false>(f, std::forward<Range>(inputs), chunksize);
  }

  // starmap without blocking.
  template <class F, std::ranges::input_range Range>
  [[nodiscard]] auto starmap_async(F f, Range&& inputs, std::size_t chunksize = 0) {
    return map_async_impl<true>(f, std::forward<Range>(inputs), chunksize);
  }

  // Lazy map: returns at once; results come in input order as they are
  // iterated; inputs are consumed progressively. An lvalue range must
  // outlive the ImapResult; an rvalue range is moved into it.
  template <class F, std::ranges::input_range Range>
  [[nodiscard]] auto imap(F f, Range&& inputs, std::size_t chunksize = 1) {
    return imap_impl(f, std::forward<Range>(inputs), chunksize, true);
  }

  // As imap, but results come in completion order.
  template <class F, std::ranges::input_range Range>
  [[nodiscard]] auto imap_unordered(F f, Range&& inputs, std::size_t chunksize = 1) {
    return imap_impl(f, std::forward<Range>(inputs), chunksize, false);
  }

  // f(args...) on a serving rank, without blocking; the AsyncResult yields
  // its value or rethrows the task's exception / ProcessError. Throws ProcessError if
  // the pool is closed.
  template <class F, class... Args>
  [[nodiscard]] auto apply_async(F f, Args&&... args) {
    detail::check_mpi_callable<F>();
    using Arg = typename detail::tuple_wire_args<F, std::tuple<std::remove_cvref_t<Args>...>>::type;
    mproc::detail::check_pool_argument<Arg>();
    detail::check_mpi_argument<Arg>();
    using R = detail::pool_result_t<F, Arg, true>;
    mproc::detail::check_pool_result<R>();
    detail::check_mpi_result<R>();
    detail::Client& c = client();
    auto state = std::make_shared<detail::ResultState<R>>(&c);
    detail::OutTask task;
    task.sink = std::make_shared<detail::ApplySink<R>>(state);
    const Arg packed(std::forward<Args>(args)...);
    task.msg = detail::encode_task<F, Arg, true>(detail::function_ref(f), 1, encoded_size(packed),
                                                 [&](Writer& w) { w.write(packed); });
    c.submit(std::move(task));
    return AsyncResult<R>(std::move(state));
  }

  // f(args...) on a serving rank; blocks for the result (Python: apply).
  template <class F, class... Args>
  auto apply(F f, Args&&... args) {
    return apply_async(f, std::forward<Args>(args)...).get();
  }

  // Sends `value` to every serving rank once (point to point from the
  // client, ahead of every task submitted later) and returns its handle;
  // pass the handle as a task argument (Shared<T> const& parameter) to use
  // the rank's copy. The copies live until the pool is joined. Blocks only
  // to encode `value`. Thread-safe. Throws ProcessError if the pool is closed.
  template <class T>
  [[nodiscard]] Shared<std::remove_cvref_t<T>> broadcast(T&& value) {
    using U = std::remove_cvref_t<T>;
    static_assert(serializable<U>,
                  "mproc::mpi::Pool::broadcast: the value's type is not serializable "
                  "(see serialize.hpp)");
    static_assert(!mproc::detail::is_std_span_v<U> && !mproc::detail::is_instance_v<U, std::basic_string_view>,
                  "mproc::mpi::Pool::broadcast: broadcast a type that owns its data (std::vector, std::string), "
                  "not a view");
    static_assert(!detail::holds_shared_object_v<U>,
                  "mproc::mpi::Pool::broadcast: a process-shared object (mp::Array, mp::Value, ...) cannot be "
                  "sent to other machines; broadcast its contents by value");
    detail::Client& c = client();
    auto ptr = std::make_shared<const U>(std::forward<T>(value));
    const std::uint64_t id = detail::next_shared_id();
    auto msg = detail::encode_broadcast(id, *ptr);
    detail::SharedStore::instance().put(id, type_fingerprint<U>(), ptr);
    try {
      c.broadcast(id, std::move(msg));
    } catch (...) {
      detail::SharedStore::instance().erase(id);
      throw;
    }
    return Shared<U>(id, std::move(ptr));
  }

  // No more tasks may be submitted; queued ones still run. Non-blocking.
  void close() { client().close(); }

  // Fails every queued and running task with ProcessError. Tasks already
  // running on serving ranks run to their end there (MPI cannot interrupt
  // them); their results are discarded. Non-blocking; follow with join().
  void terminate() { client().terminate(); }

  // Blocks until every task has finished and the serving ranks have
  // stopped (they then end, or return from their constructor). Throws
  // ProcessError unless close() or terminate() was called first.
  void join() {
    client();
    finish_join();
  }

 private:
  detail::Client& client() const {
    if (!client_)
      throw ProcessError("mproc::mpi::Pool: this is serving rank " + std::to_string(rank_) +
                         "; only the client (rank " + std::to_string(root_) +
                         ") submits tasks and manages the pool: test `if (pool)` first");
    return *client_;
  }

  void finish_join() {
    client_->join();
    if (!joined_) {
      joined_ = true;
      for (const std::uint64_t id : client_->shared_ids()) detail::SharedStore::instance().erase(id);
    }
  }

  template <bool Star, class F, class Range>
  auto map_impl(F f, Range&& inputs_in, std::size_t chunksize) {
    detail::check_mpi_callable<F>();
    using Arg = typename decltype(detail::wire_type<Star, F, Range>())::type;
    using R = detail::pool_result_t<F, Arg, Star>;
    detail::check_task_types<F, Arg, R>();
    detail::Client& c = client();
    c.check_accepting();

    mproc::detail::check_chunksize(chunksize, "mpi::Pool: chunksize");
    decltype(auto) inputs = detail::sized(std::forward<Range>(inputs_in));
    const auto plan = detail::plan_chunks(static_cast<std::size_t>(std::ranges::distance(inputs)), chunksize, size());
    auto sink = std::make_shared<detail::MapSink<R>>(plan.items, plan.size, plan.count);
    auto counter = std::make_shared<detail::CountingSink>(sink);
    const detail::CodeRef fn = detail::function_ref(f);
    auto it = std::ranges::begin(inputs);
    // The inputs outlive this call, so large ones are sent from where they
    // are (no copy); the call returns only once no send reads them any more.
    auto borrowing = std::make_shared<std::atomic<std::size_t>>(0);
    std::size_t next = 0;
    // Chunks are encoded while earlier ones travel and run, a few ahead of
    // the serving ranks (not all at once: memory stays bounded).
    const std::size_t window = size() + 1;
    c.drive_until([&] {
      while (next < plan.count && !sink->failed() && c.backlog() < window) {
        const std::size_t count = plan.items_in(next);
        if constexpr (std::is_lvalue_reference_v<std::iter_reference_t<decltype(it)>>) {
          c.submit(detail::encode_chunk_in_place<F, Arg, Star>(fn, it, count, counter, next, borrowing));
        } else {
          c.submit(detail::encode_chunk<F, Arg, Star>(fn, it, count, counter, next));
        }
        ++next;
      }
      return (sink->failed() || counter->finished() == plan.count) &&
             (borrowing->load(std::memory_order_acquire) == 0 || c.broken());
    });
    return sink->wait_results();
  }

  template <bool Star, class F, class Range>
  auto map_async_impl(F f, Range&& inputs_in, std::size_t chunksize) {
    detail::check_mpi_callable<F>();
    using Arg = typename decltype(detail::wire_type<Star, F, Range>())::type;
    using R = detail::pool_result_t<F, Arg, Star>;
    detail::check_task_types<F, Arg, R>();
    detail::Client& c = client();
    c.check_accepting();

    mproc::detail::check_chunksize(chunksize, "mpi::Pool: chunksize");
    decltype(auto) inputs = detail::sized(std::forward<Range>(inputs_in));
    const auto plan = detail::plan_chunks(static_cast<std::size_t>(std::ranges::distance(inputs)), chunksize, size());
    auto sink = std::make_shared<detail::MapSink<R>>(plan.items, plan.size, plan.count);
    const detail::CodeRef fn = detail::function_ref(f);
    std::vector<detail::OutTask> tasks;
    tasks.reserve(plan.count);
    auto it = std::ranges::begin(inputs);
    for (std::size_t k = 0; k < plan.count; ++k)
      tasks.push_back(detail::encode_chunk<F, Arg, Star>(fn, it, plan.items_in(k), sink, k));
    using Out = typename detail::MapSink<R>::Out;
    auto state = std::make_shared<detail::ResultState<Out>>(&c);
    sink->complete_into(state);
    c.submit(tasks);
    return AsyncResult<Out>(std::move(state));
  }

  template <class F, class Range>
  auto imap_impl(F f, Range&& inputs, std::size_t chunksize, bool ordered) {
    detail::check_mpi_callable<F>();
    using Arg = typename decltype(detail::wire_type<false, F, Range>())::type;
    using R = detail::pool_result_t<F, Arg, false>;
    detail::check_task_types<F, Arg, R>();
    static_assert(!std::is_void_v<R>, "mproc::mpi::Pool::imap: f returns void; use map or apply_async");
    detail::Client& c = client();
    c.check_accepting();
    mproc::detail::check_chunksize(chunksize, "mpi::Pool.imap: chunksize");
    if (chunksize == 0) chunksize = 1;

    auto sink = std::make_shared<detail::ImapSink<R>>(ordered, chunksize);
    const std::optional<std::size_t> length = mproc::detail::input_length(inputs);
    auto produce =
        detail::imap_producer<F, Arg>(client_, std::forward<Range>(inputs), detail::function_ref(f), chunksize, sink);
    return mproc::detail::with_length_hint(
        ImapResult<R>(client_, sink, std::move(produce), mproc::detail::imap_window(size(), chunksize)), length);
  }

  std::shared_ptr<detail::Client> client_;
  int rank_ = 0;
  int root_ = 0;
  bool joined_ = false;
};

}  // namespace mproc::mpi
