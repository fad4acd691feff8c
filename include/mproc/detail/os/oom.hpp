// mproc/detail/os/oom.hpp — the kernel OOM killer's count for this
// process's memory cgroup, so a SIGKILLed worker can be reported as killed
// for lack of memory.
//
// Layer: detail/os (files under /proc and /sys only). cgroup v2: the
// "oom_kill" line of memory.events (it counts the cgroup and its
// descendants); cgroup v1: the "oom_kill" line of memory.oom_control.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <string>

namespace mproc::detail {

// The value of the `key` line ("key N") of a small text file, or nullopt.
inline std::optional<std::uint64_t> read_keyed_counter(const std::string& path, const char* key) {
  std::FILE* f = std::fopen(path.c_str(), "re");
  if (f == nullptr) return std::nullopt;
  std::optional<std::uint64_t> out;
  char line[256];
  const std::size_t klen = std::strlen(key);
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::strncmp(line, key, klen) != 0 || line[klen] != ' ') continue;
    unsigned long long v = 0;
    if (std::sscanf(line + klen + 1, "%llu", &v) == 1) out = static_cast<std::uint64_t>(v);
    break;
  }
  std::fclose(f);
  return out;
}

// This process's cgroups as /proc/self/cgroup names them: the cgroup v2
// path ("0::<path>") and the v1 memory controller's path, each nullopt
// when absent. Blocks briefly on a file read; thread-safe.
struct MemoryCgroups {
  std::optional<std::string> v2;
  std::optional<std::string> v1_memory;
};
inline MemoryCgroups memory_cgroups() {
  MemoryCgroups out;
  std::FILE* f = std::fopen("/proc/self/cgroup", "re");
  if (f == nullptr) return out;
  char line[1024];
  while (std::fgets(line, sizeof line, f) != nullptr) {
    std::string s(line);
    if (!s.empty() && s.back() == '\n') s.pop_back();
    if (s.rfind("0::", 0) == 0) {
      out.v2 = s.substr(3);
    } else if (const auto at = s.find(":memory:"); at != std::string::npos) {
      out.v1_memory = s.substr(at + 8);
    }
  }
  std::fclose(f);
  return out;
}

// The OOM kills counted for this process's memory cgroup so far, or
// nullopt when no counter is readable (no cgroup memory controller, an
// older kernel, a sandbox). Blocks briefly on file reads; thread-safe.
inline std::optional<std::uint64_t> oom_kill_count() {
  const MemoryCgroups cg = memory_cgroups();
  const auto first_of = [](std::initializer_list<std::string> paths, const char* file) {
    for (const std::string& dir : paths)
      if (auto v = read_keyed_counter(dir + "/" + file, "oom_kill")) return v;
    return std::optional<std::uint64_t>{};
  };
  // Inside a cgroup namespace the mount shows our own cgroup at its root.
  if (cg.v1_memory)
    if (auto v = first_of({"/sys/fs/cgroup/memory" + *cg.v1_memory, "/sys/fs/cgroup/memory"}, "memory.oom_control"))
      return v;
  if (cg.v2)
    return first_of({"/sys/fs/cgroup" + *cg.v2, "/sys/fs/cgroup/unified" + *cg.v2, "/sys/fs/cgroup"}, "memory.events");
  return std::nullopt;
}

}  // namespace mproc::detail
