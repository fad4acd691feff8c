// Test helpers shared by the tests of the process-shared synchronization
// objects (test_lock, test_condition, test_barrier, ...): timing a call,
// polling shared state with a deadline, and killing a child without (or
// with) reaping it.
#pragma once

#include <chrono>
#include <stdexcept>
#include <thread>

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>

#include "shm_children.hpp"

namespace sync_test {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Upper slack for "returns after about the timeout" on a noisy shared machine.
inline constexpr auto kSlack = 400ms;

template <class F>
Clock::duration time_of(F&& f) {
  const auto start = Clock::now();
  f();
  return Clock::now() - start;
}

// Polls `pred` (shared state, not settling) until true or 10 s passed.
template <class Pred>
bool eventually(Pred pred) {
  const auto deadline = Clock::now() + 10s;
  while (!pred()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// SIGKILLs `pid` and returns once it is dead, leaving it a zombie (unreaped)
// unless `reap`. Its exit status, when reaped, is returned (-1 otherwise).
inline int kill_dead(pid_t pid, bool reap) {
  ::kill(pid, SIGKILL);
  if (reap) return shm_test::join(pid, 10s).exitcode;
  const auto deadline = Clock::now() + 10s;
  for (;;) {
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid)
      return -1;
    if (Clock::now() > deadline) throw std::runtime_error("child did not die");
    std::this_thread::sleep_for(1ms);  // polling a child's death, not settling
  }
}

}  // namespace sync_test
