// mproc/detail/mpi/init.hpp — MPI's initialization for mproc::mpi, and the
// one client pool open in this process.
//
// Layer detail/mpi, over the MPI error check (base.hpp) and the client
// (client.hpp). Used by mpi.hpp: Pool's constructor initializes MPI if
// nobody has and registers its client; Environment and the exit handler
// registered here terminate and join a pool left open before MPI_Finalize,
// so that its serving ranks reach MPI_Finalize too.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>

#include <mproc/detail/mpi/base.hpp>
#include <mproc/detail/mpi/client.hpp>

namespace mproc::detail::mpi {

// The pool whose client side is open in this process, if any (at most one:
// serving ranks serve one pool at a time).
struct OpenClient {
  std::mutex mutex;
  std::weak_ptr<Client> client;
};
inline OpenClient& open_client() {
  static OpenClient* open = new OpenClient;  // never destroyed: used by exit handlers
  return *open;
}

// Whether a pool's client side is open (not yet joined) in this process.
inline bool client_open() {
  OpenClient& o = open_client();
  std::lock_guard lock(o.mutex);
  const auto c = o.client.lock();
  return c && !c->joined();
}

// Before MPI is finalized: a pool the program left open (it called exit()
// with a pool alive, say) is terminated and joined, so that its serving ranks
// reach MPI_Finalize too instead of serving for ever (MPI_Finalize waits for
// every rank). Never throws.
inline void shut_down_open_client() noexcept {
  try {
    std::shared_ptr<Client> c;
    {
      OpenClient& o = open_client();
      std::lock_guard lock(o.mutex);
      c = o.client.lock();
    }
    if (c && !c->joined()) {
      c->terminate();
      c->join();
    }
  } catch (...) {
  }
}

// Initializes MPI if nobody has (MPI_THREAD_MULTIPLE; finalized at exit,
// after shut_down_open_client()), and checks the thread level. Throws
// ProcessError: MPI already finalized, or without MPI_THREAD_MULTIPLE.
inline void ensure_initialized() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized)
    throw ProcessError("mproc::mpi: MPI was already finalized in this process; a pool cannot be created any more");
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread");
    // Nobody else will finalize it: do it when the program exits (after
    // stopping a pool left open, whose serving ranks would wait for ever).
    std::atexit([] {
      int done = 0;
      MPI_Finalized(&done);
      if (done) return;
      shut_down_open_client();
      MPI_Finalize();
    });
  }
  int level = MPI_THREAD_SINGLE;
  check(MPI_Query_thread(&level), "MPI_Query_thread");
  if (level < MPI_THREAD_MULTIPLE) {
    const char* names[] = {"MPI_THREAD_SINGLE", "MPI_THREAD_FUNNELED", "MPI_THREAD_SERIALIZED"};
    const char* name = level >= 0 && level < 3 ? names[level] : "an unknown level";
    throw ProcessError(std::string("mproc::mpi: MPI provides ") + name +
                       "; mproc::mpi needs MPI_THREAD_MULTIPLE (the pool's progress thread makes MPI calls). "
                       "Initialize MPI with MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided) or "
                       "mproc::mpi::Environment, with an MPI library built with thread support");
  }
}

}  // namespace mproc::detail::mpi
