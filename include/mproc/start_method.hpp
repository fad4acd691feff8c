// StartMethod, set_start_method(), get_start_method(): how a process Pool
// starts its workers (Python: multiprocessing start methods). Public API
// over the zygote and fork server of detail/pool/zygote.hpp.
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>

#include <mproc/detail/pool/zygote.hpp>

namespace mproc {

// How a process pool starts its workers (Python: multiprocessing start methods).
enum class StartMethod {
  // fork when the creating process is single-threaded, else forkserver if it
  // was started, else fork (see set_start_method).
  automatic,
  // Workers are forks of the pool's creator as it was when the pool was
  // created: they see all its state. If other threads run at that moment, a
  // lock one of them holds stays locked in the workers (as in Python).
  fork,
  // Workers are forks of the fork server, a process started by
  // set_start_method(StartMethod::forkserver) — call it early in main(),
  // before starting threads. They see the program's state as it was then;
  // pass everything else as task arguments or through the initializer.
  forkserver,
};

namespace detail {

inline std::atomic<StartMethod>& default_start_method() {
  static std::atomic<StartMethod> method{StartMethod::automatic};
  return method;
}

}  // namespace detail

// Sets the default start method of pools created afterwards (Python:
// multiprocessing.set_start_method). StartMethod::forkserver also starts the
// fork server now, from the calling process: call it early in main(), before
// any thread starts. Thread-safe. Throws ProcessError if the server cannot start.
inline void set_start_method(StartMethod method) {
  if (method == StartMethod::forkserver) detail::ForkServer::instance().start();
  detail::default_start_method().store(method);
}

// The default start method of new pools. Non-blocking, thread-safe.
inline StartMethod get_start_method() noexcept { return detail::default_start_method().load(); }

}  // namespace mproc
