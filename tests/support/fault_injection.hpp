// Test support: fault injection for pool workers. A test that includes this
// header is compiled with MPROC_TEST_HOOKS defined, under which detail/pool/worker.hpp calls
// the hook installed here (TestHook<FaultStep>::at_step) at each step of the task
// protocol (in every other build that call is an empty inline function).
//
// The plan lives in an anonymous shared mapping made by the first call to
// fault_plan(), so workers forked later (StartMethod::fork) share it: a
// fault "shot" is consumed by exactly one worker, whichever reaches the step
// first. Arm the plan before creating the pool.
#pragma once

#if !defined(MPROC_TEST_HOOKS)
#error "fault_injection.hpp: compile the whole test program with MPROC_TEST_HOOKS defined"
#endif

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <mproc/detail/pool/worker.hpp>

namespace mproc::detail {

inline constexpr int kFaultSteps = 7;  // the FaultStep values

enum class FaultAction {
  kill,             // SIGKILL itself
  exit,             // _exit(9): an abrupt exit without a signal
  throw_bad_alloc,  // throw std::bad_alloc, as an exhausted allocator would
};

struct FaultPlan {
  std::atomic<int> shots{0};  // faults left to inject (any worker consumes one)
  std::atomic<int> step{0};   // FaultStep, or -1: any step, chosen at random
  std::atomic<int> action{0};
  std::atomic<int> after{0};  // let this many matching points pass first (all workers together)
  std::atomic<std::uint32_t> per_mille{0};  // random mode: chance per point
  std::atomic<std::uint64_t> seed{1};
  std::atomic<int> fired{0};  // faults injected so far
};

// The plan shared by this process and the workers forked after it exists.
inline FaultPlan& fault_plan() {
  static FaultPlan* const plan = [] {
    void* p = ::mmap(nullptr, sizeof(FaultPlan), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) std::abort();
    return new (p) FaultPlan;
  }();
  return *plan;
}

// Arms one fault: the `after`+1-th worker to reach `step` applies `action`.
inline void arm_fault(FaultStep step, FaultAction action, int after = 0) {
  FaultPlan& plan = fault_plan();
  plan.step = static_cast<int>(step);
  plan.action = static_cast<int>(action);
  plan.after = after;
  plan.per_mille = 0;
  plan.fired = 0;
  plan.shots = 1;
}

// Arms up to `shots` faults at random steps with random actions, each
// point firing with probability per_mille / 1000.
inline void arm_random_faults(int shots, std::uint32_t per_mille, std::uint64_t seed) {
  FaultPlan& plan = fault_plan();
  plan.step = -1;
  plan.after = 0;
  plan.per_mille = per_mille;
  plan.seed = seed;
  plan.fired = 0;
  plan.shots = shots;
}

inline void disarm_faults() { fault_plan().shots = 0; }

inline void apply_fault(FaultAction action) {
  switch (action) {
    case FaultAction::kill:
      ::kill(::getpid(), SIGKILL);
      for (;;) ::pause();
    case FaultAction::exit:
      ::_exit(9);
    case FaultAction::throw_bad_alloc:
      throw std::bad_alloc();
  }
}

// Called by the worker at each step; injects the planned fault, if any.
inline void inject_planned_fault(FaultStep step) {
  FaultPlan& plan = fault_plan();
  if (plan.shots.load(std::memory_order_relaxed) <= 0) return;
  const int want = plan.step.load(std::memory_order_relaxed);
  FaultAction action;
  if (want >= 0) {
    if (want != static_cast<int>(step)) return;
    if (plan.after.fetch_sub(1) > 0) return;
    action = static_cast<FaultAction>(plan.action.load());
  } else {
    // Random mode: a per-process xorshift stream.
    static thread_local std::uint64_t state = 0;
    if (state == 0) state = (plan.seed.load() ^ (static_cast<std::uint64_t>(::getpid()) * 0x9E3779B97F4A7C15ull)) | 1;
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    if (state % 1000 >= plan.per_mille.load()) return;
    // Throwing is meaningful only where the worker catches it.
    const bool can_throw =
        step == FaultStep::in_decode || step == FaultStep::in_send || step == FaultStep::mid_large_result;
    const int choice = static_cast<int>((state >> 32) % (can_throw ? 3 : 2));
    action = static_cast<FaultAction>(choice);
  }
  if (plan.shots.fetch_sub(1) <= 0) return;  // another worker took the last shot
  plan.fired.fetch_add(1);
  apply_fault(action);
}

// Installed before main() runs (and so before any pool exists).
inline const bool fault_injection_installed = [] {
  TestHook<FaultStep>::at_step.store(&inject_planned_fault);
  return true;
}();

}  // namespace mproc::detail
