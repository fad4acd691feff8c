// mproc/detail/mpi/imap_result.hpp — mproc::mpi::ImapResult, the lazy
// results of mpi::Pool::imap and imap_unordered.
//
// Layer detail/mpi (a public type, named mproc::mpi::ImapResult, that only
// Pool creates) and its task producer, over the client (client.hpp:
// submit, drive_until), the task encoder (encode.hpp) and the core's
// imap pieces: LazyResults (the input range and next(),
// detail/pool/lazy_results.hpp) and ImapSink (pool.hpp). Used by mpi.hpp.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <utility>

#include <mproc/detail/mpi/base.hpp>
#include <mproc/detail/mpi/client.hpp>
#include <mproc/detail/mpi/encode.hpp>
#include <mproc/detail/pool/lazy_results.hpp>

namespace mproc::detail::mpi {

// The producer of an imap's tasks over the caller's `inputs` (held by an
// InputCursor): each call encodes the next chunk of at most `chunksize`
// inputs as wire type Arg, registers it with the sink it is given and
// submits it to `client`; false when no input is left. Copyable (it shares
// its position in the inputs).
template <class F, class Arg, class R, class Range>
auto imap_producer(std::shared_ptr<Client> client, Range&& inputs, const CodeRef& fn, std::size_t chunksize,
                   const std::shared_ptr<ImapSink<R>>& sink) {
  auto source = std::make_shared<mproc::detail::InputCursor<Range>>(std::forward<Range>(inputs));
  return [client = std::move(client), source, fn, chunksize,
          weak = std::weak_ptr<ImapSink<R>>(sink)](ImapSink<R>& s) -> bool {
    OutTask t = encode_imap_chunk<F, Arg>(fn, *source, chunksize);
    if (t.count == 0) return false;
    t.chunk = source->chunks++;
    t.sink = weak.lock();
    s.submitted(t.chunk, static_cast<std::size_t>(t.count));
    client->submit(std::move(t));
    return true;
  };
}

}  // namespace mproc::detail::mpi

namespace mproc::mpi {

class Pool;

// The lazily computed results of Pool::imap / imap_unordered: an input
// range (for (R r : pool.imap(f, xs))) and next(), as mproc::ImapResult.
// Inputs are encoded and submitted as results are consumed (a bounded window
// ahead). Iterating drives the pool's communication. Use from one thread at a time.
template <class R>
class ImapResult : public mproc::detail::LazyResults<ImapResult<R>, R> {
 public:
  ImapResult(ImapResult&&) noexcept = default;
  ImapResult& operator=(ImapResult&&) noexcept = default;
  // Abandons the remaining results: undispatched tasks are dropped.
  ~ImapResult() {
    if (sink_) sink_->abandon();
  }

 private:
  friend class Pool;
  friend class mproc::detail::LazyResults<ImapResult<R>, R>;
  using Produce = std::function<bool(mproc::detail::ImapSink<R>&)>;  // submits a chunk; false at the end

  ImapResult(std::shared_ptr<mproc::detail::mpi::Client> client, std::shared_ptr<mproc::detail::ImapSink<R>> sink,
             Produce produce, std::size_t window)
      : client_(std::move(client)), sink_(std::move(sink)), produce_(std::move(produce)), window_(window) {}

  void top_up() {
    while (!exhausted_ && sink_->outstanding() < window_)
      if (!input_error_.guard([&] { return produce_(*sink_); })) exhausted_ = true;
  }

  std::optional<R> next_until(mproc::detail::Clock::time_point deadline) {
    top_up();
    if (exhausted_ && sink_->outstanding() == 0) {
      input_error_.raise_if_held();
      return std::nullopt;
    }
    std::optional<typename mproc::detail::ImapSink<R>::Outcome> outcome;
    client_->drive_until(
        [&] {
          outcome = sink_->try_take();
          return outcome.has_value();
        },
        deadline);
    if (!outcome) {
      if (client_->joined()) throw ProcessError("mproc::mpi::Pool.imap: the pool was joined before this result came");
      throw TimeoutError("mproc::mpi::Pool.imap: no result within the timeout");
    }
    top_up();
    if (outcome->error) std::rethrow_exception(outcome->error);
    return std::move(outcome->value);
  }

  std::shared_ptr<mproc::detail::mpi::Client> client_;
  std::shared_ptr<mproc::detail::ImapSink<R>> sink_;
  Produce produce_;
  std::size_t window_;
  mproc::detail::DeferredInputError input_error_;
  bool exhausted_ = false;
};

}  // namespace mproc::mpi
