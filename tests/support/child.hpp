// Test helper: run a function in a forked child and collect how it ended,
// with a timeout, always reaping the child. For tests of the low-level
// layers; tests of higher layers use mproc::Process.
#pragma once

#include <chrono>
#include <cstdio>
#include <exception>
#include <functional>
#include <string>
#include <thread>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

namespace mproc_test {

// How a child ended, Python-style: N for exit(N), -N for signal N; `timed_out`
// when it had to be killed after the timeout.
struct ChildResult {
  int exitcode = 0;
  bool timed_out = false;
};

// Forks; the child runs `fn` and exits with its return value (1 if it
// throws, after printing the message to stderr). The parent waits up to
// `timeout`, then SIGKILLs and reaps the child.
inline ChildResult run_in_child(const std::function<int()>& fn,
                                std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int code = 1;
    try {
      code = fn();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: uncaught exception: %s\n", e.what());
    } catch (...) {
      std::fprintf(stderr, "child: uncaught non-standard exception\n");
    }
    std::fflush(nullptr);
    ::_exit(code);
  }
  ChildResult result;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  for (auto pause = std::chrono::microseconds(50);; pause = std::min(pause * 2, std::chrono::microseconds(5000))) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      result.timed_out = true;
      break;
    }
    std::this_thread::sleep_for(pause);  // polling a child's exit, not settling
  }
  result.exitcode = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  return result;
}

}  // namespace mproc_test
