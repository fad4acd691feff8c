// Timeouts as absolute steady-clock deadlines, saturating instead of
// overflowing, so `get(std::chrono::hours::max())` means "forever".
// SPDX-License-Identifier: MIT
#pragma once

#include <mproc/detail/util/lean_std.hpp>

namespace mproc::detail {

using Clock = std::chrono::steady_clock;

// now + timeout, clamped to [now, time_point::max()]. A negative timeout
// yields now (poll once).
template <class Rep, class Period>
Clock::time_point deadline_after(std::chrono::duration<Rep, Period> timeout) noexcept {
  const auto now = Clock::now();
  if (timeout <= timeout.zero()) return now;
  using namespace std::chrono;
  // Compare in long double seconds to avoid overflow in the conversion itself.
  const long double room = duration<long double>(Clock::time_point::max() - now).count();
  if (duration<long double>(timeout).count() >= room) return Clock::time_point::max();
  return now + duration_cast<Clock::duration>(timeout);
}

// Time left until `deadline`, never negative.
inline Clock::duration remaining(Clock::time_point deadline) noexcept {
  const auto now = Clock::now();
  return deadline > now ? deadline - now : Clock::duration::zero();
}

}  // namespace mproc::detail
