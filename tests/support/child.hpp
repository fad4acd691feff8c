// Test helper: run a function in a forked child and collect how it ended,
// with a timeout, always reaping the child. For tests of the low-level
// layers; tests of higher layers use mproc::Process.
#pragma once

#include <chrono>
#include <cstdio>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>

#include <signal.h>
#include <stdlib.h>
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

// How a child ended that is expected to abort, and what it wrote to stderr.
struct AbortedChild {
  ChildResult result;
  std::string stderr_text;
};

// As run_in_child, with the child's stderr captured (up to 64 KiB) and
// SIGABRT at its default in the child (not the test framework's inherited
// handler, which TSan reports as a signal-unsafe call), for tests of code
// that must terminate the program with a message.
inline AbortedChild run_in_child_to_abort(const std::function<int()>& fn,
                                          std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  char path[] = "/tmp/mproc_test_stderr_XXXXXX";
  const int fd = ::mkstemp(path);
  if (fd < 0) throw std::runtime_error("mkstemp failed");
  ::unlink(path);
  AbortedChild out;
  out.result = run_in_child(
      [&] {
        ::dup2(fd, STDERR_FILENO);
        ::signal(SIGABRT, SIG_DFL);
        return fn();
      },
      timeout);
  std::string text(64 * 1024, '\0');
  const ssize_t n = ::pread(fd, text.data(), text.size(), 0);
  ::close(fd);
  text.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  out.stderr_text = std::move(text);
  return out;
}

}  // namespace mproc_test
