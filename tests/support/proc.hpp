// Test support: what /proc says about processes — whether one is gone, its
// parent, its open descriptors — and this process's leftovers (descriptors,
// children, /dev/shm entries), for tests that check nothing leaks.
#pragma once

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>
#include <system_error>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

namespace mproc_test {

// The state letter of /proc/<pid>/stat ('R', 'S', 'Z', ...), or 0 if gone.
inline char process_state(int pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE* f = std::fopen(path, "r");
  if (f == nullptr) return 0;
  char buf[512] = {};
  const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  const char* p = std::strrchr(buf, ')');
  if (n == 0 || p == nullptr || p[1] == '\0') return 0;
  return p[2];
}

// Dead: no such process, or a zombie waiting for a reaper that is not us.
inline bool process_gone(int pid) {
  if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
  const char state = process_state(pid);
  return state == 0 || state == 'Z' || state == 'X';
}

// The parent pid of `pid` (field 4 of /proc/<pid>/stat), or -1.
inline int parent_of(int pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE* f = std::fopen(path, "r");
  if (f == nullptr) return -1;
  char buf[512] = {};
  const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  const char* p = std::strrchr(buf, ')');
  int ppid = -1;
  char state = 0;
  if (n == 0 || p == nullptr || std::sscanf(p + 1, " %c %d", &state, &ppid) != 2) return -1;
  return ppid;
}

// What the descriptors of process `pid` refer to ("socket:[123]",
// "/dev/null", ...), or only that of `fd` when fd >= 0.
inline std::set<std::string> fd_targets(int pid, int fd = -1) {
  std::set<std::string> out;
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (fd >= 0 && e.path().filename() != std::to_string(fd)) continue;
    const auto target = std::filesystem::read_symlink(e.path(), ec);
    if (!ec) out.insert(target.string());
  }
  return out;
}

inline std::size_t open_fd_count() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

// This process has no child at all, not even a zombie.
inline bool no_children() {
  errno = 0;
  return ::waitpid(-1, nullptr, WNOHANG) == -1 && errno == ECHILD;
}

// Entries in /dev/shm (mproc creates none unless asked for a named segment).
inline std::size_t dev_shm_entries() {
  std::size_t n = 0;
  std::error_code ec;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/dev/shm", ec)) ++n;
  return n;
}

}  // namespace mproc_test
