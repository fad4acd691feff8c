// The main() of mproc's MPI test programs (run as `mpiexec -n 3 prog`).
//
// The program initializes MPI itself, as an MPI application does (so the
// pools under test find MPI initialized by the user, use it and leave it
// alone). Every rank runs every test case in the same order; pools are made
// with servers_return(), so on serving ranks the constructor serves the
// client's tasks and returns an empty pool, and the test case skips its
// client-side part (`if (!pool) return;`). A failed assertion on any rank
// fails the run: each rank's failure count is combined with MPI_Allreduce
// and every rank exits non-zero, so mpiexec (and ctest) report the failure.
// Serving ranks' own reports are shown only if they failed. Under ASan the
// leak check runs before MPI_Finalize (see below).
#if __has_include(<catch2/catch_session.hpp>)
#include <catch2/catch_session.hpp>
#else
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#endif

#include <cstdio>
#include <cstdlib>
#include <string>

#include <mpi.h>
#include <unistd.h>

#if defined(MPROC_MPI_TEST_LSAN)
#include <sanitizer/lsan_interface.h>
#endif

int main(int argc, char** argv) {
  int provided = 0;
  if (MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) return 2;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);

  // Serving ranks write their report to a temporary file.
  std::FILE* report = nullptr;
  int saved_stdout = -1;
  if (rank != 0) {
    report = std::tmpfile();
    std::fflush(stdout);
    saved_stdout = ::dup(STDOUT_FILENO);
    if (report != nullptr) ::dup2(::fileno(report), STDOUT_FILENO);
  }

  int failures = Catch::Session().run(argc, argv);

  if (report != nullptr) {
    std::fflush(stdout);
    ::dup2(saved_stdout, STDOUT_FILENO);
    ::close(saved_stdout);
    if (failures != 0) {
      std::rewind(report);
      std::fprintf(stderr, "==== report of serving rank %d (it failed) ====\n", rank);
      char buf[4096];
      std::size_t n = 0;
      while ((n = std::fread(buf, 1, sizeof buf, report)) > 0) std::fwrite(buf, 1, n, stderr);
    }
    std::fclose(report);
  }

  int any = 0;
  MPI_Allreduce(&failures, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0 && any != 0 && failures == 0) std::fprintf(stderr, "FAILED: a serving rank failed (see its report)\n");
#if defined(MPROC_MPI_TEST_LSAN)
  // The leak check runs here, while Open MPI is loaded (its frames have
  // names for the suppressions) and still holds its state: what it frees
  // only in MPI_Finalize, or unloads with its plugins, is not reported. The
  // end-of-process check then does not run.
  __lsan_do_leak_check();
#endif
  MPI_Finalize();
  return any != 0 ? 1 : 0;
}
