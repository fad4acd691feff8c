// Test helpers for the shared-memory tests: several forked children at
// once (mproc_test::run_in_child runs one at a time), and plain pipes to
// pass handles to children started before the object existed.
#pragma once

#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mproc/detail/os/fd.hpp>

#include "child.hpp"

namespace shm_test {

using namespace std::chrono_literals;

// Forks; the child runs `fn` and _exits with its result (1 if it throws).
inline pid_t spawn(const std::function<int()>& fn) {
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
  return pid;
}

// Waits for `pid` up to `timeout` (then SIGKILLs it) and reaps it.
inline mproc_test::ChildResult join(pid_t pid, std::chrono::milliseconds timeout = 60s) {
  mproc_test::ChildResult result;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  for (auto pause = 50us;; pause = std::min(pause * 2, std::chrono::microseconds(5000))) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) throw std::runtime_error("waitpid failed");
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

// A pipe; both ends close on destruction.
struct Pipe {
  mproc::detail::UniqueFd r, w;
  Pipe() {
    int fds[2];
    if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
    r.reset(fds[0]);
    w.reset(fds[1]);
  }
};

// Sends / receives a trivially copyable value through a pipe (timed).
template <class T>
void send(int fd, const T& value) {
  if (!mproc::detail::write_all(fd, &value, sizeof value)) throw std::runtime_error("pipe closed");
}
template <class T>
T recv(int fd, std::chrono::milliseconds timeout = 30s) {
  if (!(mproc::detail::poll_until(fd, POLLIN, mproc::detail::deadline_after(timeout)) & (POLLIN | POLLHUP)))
    throw std::runtime_error("timed out waiting on a pipe");
  T value;
  if (mproc::detail::read_full(fd, &value, sizeof value) != sizeof value) throw std::runtime_error("pipe closed early");
  return value;
}

// Sends / receives a byte frame (e.g. mproc::dumps output), size first.
inline void send_frame(int fd, const std::vector<std::byte>& frame) {
  send(fd, frame.size());
  if (!mproc::detail::write_all(fd, frame.data(), frame.size())) throw std::runtime_error("pipe closed");
}
inline std::vector<std::byte> recv_frame(int fd, std::chrono::milliseconds timeout = 30s) {
  std::vector<std::byte> frame(recv<std::size_t>(fd, timeout));
  if (mproc::detail::read_full(fd, frame.data(), frame.size()) != frame.size())
    throw std::runtime_error("pipe closed early");
  return frame;
}

// Number of open descriptors of this process.
inline std::size_t open_fd_count() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

// Names in /dev/shm, leaving out the named blocks that other test
// processes running in parallel create ("mproc_test_<tag>_<their pid>...").
inline std::set<std::string> dev_shm_entries() {
  const std::string mine = "_" + std::to_string(::getpid());
  std::set<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm")) {
    std::string name = entry.path().filename();
    if (name.rfind("mproc_test_", 0) == 0 && name.find(mine) == std::string::npos) continue;
    names.insert(std::move(name));
  }
  return names;
}

// Resident set size of this process in KiB (VmRSS).
inline long rss_kib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

// Whether this process has an unreaped child.
inline bool has_zombie_children() {
  siginfo_t info{};
  info.si_pid = 0;
  return ::waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid != 0;
}

}  // namespace shm_test
