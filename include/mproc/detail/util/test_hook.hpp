// mproc/detail/util/test_hook.hpp — the one fault-injection hook of the
// library's protocols. Layer detail/util (no dependency beyond <atomic>);
// the pool worker (detail/pool/worker.hpp, FaultStep) and the shared-memory
// queue (detail/shm/queue_hooks.hpp, QueueStep) name their steps and call
// test_point(step) at each.
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>

namespace mproc::detail {

// Test-only. A test defines MPROC_TEST_HOOKS before including mproc (in every
// translation unit of its program, or in none) and stores a function in
// TestHook<Step>::at_step; test_point(step) then calls it, so the test can
// stop, kill or fail the calling process at that step. Without
// MPROC_TEST_HOOKS, test_point is an empty inline function and costs nothing.
#if defined(MPROC_TEST_HOOKS)
template <class Step>
struct TestHook {
  static inline std::atomic<void (*)(Step)> at_step{nullptr};
};
template <class Step>
inline void test_point(Step step) {
  if (auto f = TestHook<Step>::at_step.load(std::memory_order_relaxed)) f(step);
}
#else
template <class Step>
inline void test_point(Step) noexcept {}
#endif

}  // namespace mproc::detail
