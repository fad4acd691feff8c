// mproc/barrier.hpp — process-shared Barrier (Python: multiprocessing.Barrier).
// Public layer, part of <mproc/synchronize.hpp>: a handle over a
// BarrierState (detail/shm/sync_state.hpp: an internal mutex and one
// WaiterSlot per party) in a shared block (detail/shm/object.hpp). Copies
// are handles to the same barrier. Thread-only: threading::Barrier
// (threading.hpp).
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <utility>

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/os/futex.hpp>
#include <mproc/detail/shm/handle_serialize.hpp>
#include <mproc/detail/shm/object.hpp>
#include <mproc/detail/shm/sync_object.hpp>
#include <mproc/detail/shm/sync_state.hpp>
#include <mproc/detail/util/lean_std.hpp>
#include <mproc/errors.hpp>

namespace mproc {

// A process-shared barrier for a fixed number of parties (Python:
// multiprocessing.Barrier), with an optional action run once per round by
// the last party to arrive, before any party is released. wait() returns a
// distinct index in [0, parties) per round. A wait that times out breaks
// the barrier: every waiter, present and future, gets BrokenBarrierError
// until reset(). So does a party that dies while waiting (its process is
// killed): it never counts as arrived; the others learn it within about
// 20 ms, and the last arriver checks every party before it lets the round
// pass. A party that dies holding the barrier's internal lock breaks it
// too; one that dies after its round passed, before it left, is forgotten
// when the next round starts.
class Barrier {
 public:
  // Creates a barrier for `parties` (1 to 65536) and an optional default
  // timeout for wait(). Throws ProcessError for another number of parties.
  explicit Barrier(std::size_t parties) : Barrier(parties, -1) {}
  template <class Rep, class Period>
  Barrier(std::size_t parties, std::chrono::duration<Rep, Period> timeout)
      : Barrier(parties, std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::max(timeout, std::chrono::duration<Rep, Period>::zero()))
                             .count()) {}
  // With an action (Python: action=): a function pointer or captureless
  // lambda, called by the last party of each round to arrive, in its
  // process, before the round is released (the others are still waiting:
  // their timeouts are looked at after it returns). It must not use this
  // barrier. If it throws, the barrier breaks (the others get
  // BrokenBarrierError) and its exception reaches that party's wait().
  // Every party must run the same program (processes of mproc are forks of
  // one). Throws ValueError as above.
  Barrier(std::size_t parties, void (*action)()) : Barrier(parties, -1) { set_action(action); }
  template <class Rep, class Period>
  Barrier(std::size_t parties, void (*action)(), std::chrono::duration<Rep, Period> timeout)
      : Barrier(parties, timeout) {
    set_action(action);
  }
  Barrier(const Barrier&) = default;
  Barrier& operator=(const Barrier&) = default;

  // Blocks until all parties have called wait() (for at most the default
  // timeout, if any); returns this caller's index in [0, parties).
  // Throws BrokenBarrierError if the barrier is or becomes broken (a
  // timeout, or a party's death, breaks it). Thread- and process-safe.
  std::size_t wait() {
    const std::int64_t ns = state_->default_timeout_ns;
    return wait_until_steady(ns < 0 ? detail::Clock::time_point::max()
                                    : detail::deadline_after(std::chrono::nanoseconds(ns)));
  }
  // As wait(), for at most `timeout` (which also bounds the wait for the
  // previous round to end).
  template <class Rep, class Period>
  std::size_t wait(std::chrono::duration<Rep, Period> timeout) {
    return wait_until_steady(detail::deadline_after(timeout));
  }

  // Returns the barrier to its initial state; current waiters get
  // BrokenBarrierError. Blocks only on the internal lock.
  void reset() {
    Guard g(*this);
    auto& st = *state_;
    if (st.count > 0) {
      if (st.state == detail::BarrierState::kFilling || st.state == detail::BarrierState::kBroken)
        st.state = detail::BarrierState::kResetting;
      reap_dead();  // parties that died never leave
    } else {
      st.state = detail::BarrierState::kFilling;
    }
    broadcast();
  }
  // Breaks the barrier: current and future waiters get BrokenBarrierError
  // until reset(). Blocks only on the internal lock.
  void abort() {
    Guard g(*this);
    break_barrier(State::kAborted);
  }
  // Whether the barrier is broken. Blocks only on the internal lock.
  bool broken() const {
    Guard g(*this);
    return state_->state == detail::BarrierState::kBroken;
  }
  // Number of parties currently waiting. Blocks only on the internal lock.
  std::size_t n_waiting() const {
    Guard g(*this);
    return state_->state == detail::BarrierState::kFilling ? state_->count : 0;
  }
  // Whether the barrier has an action. Non-blocking.
  bool has_action() const noexcept { return state_->action != 0; }
  // Number of parties needed to pass the barrier.
  std::size_t parties() const noexcept { return parties_; }

  detail::ShmHandle handle() const noexcept { return block_->handle(detail::ShmKind::barrier); }
  // The barrier a handle from another process describes. Throws
  // ProcessError if the handle is malformed or its creator is gone.
  static Barrier from_handle(const detail::ShmHandle& h) { return Barrier(h); }

 private:
  using State = detail::BarrierState;

  Barrier(std::size_t parties, std::int64_t timeout_ns) {
    if (parties < 1 || parties > State::kMaxParties)
      throw ValueError("mproc: Barrier(" + std::to_string(parties) + "): parties must be between 1 and " +
                       std::to_string(State::kMaxParties));
    const auto n = static_cast<std::uint32_t>(parties);
    block_ = detail::allocate_object(detail::ShmKind::barrier, detail::kObjectStateOffset, State::size_for(n),
                                     alignof(State));
    state_ = detail::construct_state<State>(*block_, detail::kObjectStateOffset);
    for (std::uint32_t i = 0; i < n; ++i) ::new (static_cast<void*>(state_->slots() + i)) detail::WaiterSlot{};
    state_->parties = n;
    state_->default_timeout_ns = timeout_ns;
    parties_ = n;
  }
  void set_action(void (*action)()) noexcept { state_->action = reinterpret_cast<std::uint64_t>(action); }

  explicit Barrier(const detail::ShmHandle& h) {
    auto opened = detail::open_object(h, detail::ShmKind::barrier, detail::kObjectStateOffset + sizeof(State));
    block_ = std::move(opened.first);
    state_ = detail::existing_state<State>(*block_, detail::kObjectStateOffset);
    const std::uint32_t n = state_->parties;
    if (n < 1 || n > State::kMaxParties)
      throw ProcessError("mproc: invalid handle for Barrier: it has " + std::to_string(n) + " parties");
    if (detail::kObjectStateOffset + State::size_for(n) > block_->length())
      throw ProcessError("mproc: invalid handle for Barrier: " + std::to_string(n) + " parties do not fit in its " +
                         std::to_string(block_->length()) + "-byte block");
    parties_ = n;
  }

  // Holds the internal lock; a recovered lock (a party died holding it)
  // breaks the barrier.
  class Guard {
   public:
    explicit Guard(const Barrier& b) : b_(b) { b_.lock_internal(); }
    ~Guard() { b_.state_->mutex.unlock(); }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    const Barrier& b_;
  };

  detail::WaiterSlot& slot(std::uint32_t i) const noexcept { return state_->slots()[i]; }

  void lock_internal() const {
    state_->mutex.lock_id(detail::current_identity(), detail::Clock::time_point::max());
    if (state_->mutex.recovered()) break_barrier(State::kPartyDied);
  }
  void broadcast() const {
    state_->seq.fetch_add(1, std::memory_order_release);
    detail::futex_wake(state_->seq);
  }
  // Marks the barrier broken for `reason`, forgets dead parties and wakes
  // everyone. Under the internal lock.
  void break_barrier(std::uint32_t reason) const {
    state_->state = State::kBroken;
    state_->reason = reason;
    reap_dead();
    broadcast();
  }
  // Whether a party of the round being filled, other than the caller (in
  // slot `mine`), died. Under the internal lock.
  bool party_died(std::uint32_t mine) const noexcept {
    const std::uint32_t n = std::min(state_->count, static_cast<std::uint32_t>(parties_));
    for (std::uint32_t i = 0; i < n; ++i)
      if (i != mine && slot(i).state.load(std::memory_order_relaxed) != detail::WaiterSlot::kFree &&
          slot(i).owner_dead())
        return true;
    return false;
  }
  [[noreturn]] void throw_broken(const char* what) const {
    throw BrokenBarrierError(std::string("mproc: Barrier.wait(): ") + what + state_->reason_text());
  }
  // Frees the slots of parties that died and recounts the others; a round
  // that only dead parties kept from ending ends. Not while filling (where
  // slot indices are arrival indices). Under the internal lock.
  void reap_dead() const {
    auto& st = *state_;
    std::uint32_t live = 0;
    for (std::uint32_t i = 0; i < parties_; ++i) {
      detail::WaiterSlot& s = slot(i);
      if (s.state.load(std::memory_order_relaxed) == detail::WaiterSlot::kFree) continue;
      if (s.owner_dead())
        s.reap();
      else
        ++live;
    }
    st.count = live;
    if (live == 0 && (st.state == State::kDraining || st.state == State::kResetting)) {
      st.state = State::kFilling;
      broadcast();
    }
  }
  // Releases the internal lock, sleeps until a broadcast, `deadline` or a
  // slice (to look for dead parties) is over, and re-locks. Signals only
  // end the sleep early.
  void sleep(detail::Clock::time_point deadline) const {
    const std::uint32_t seq = state_->seq.load(std::memory_order_relaxed);
    state_->mutex.unlock();
    const auto until = std::min(deadline, detail::Clock::now() + detail::kDeathCheckSlice);
    try {
      while (state_->seq.load(std::memory_order_acquire) == seq && detail::Clock::now() < until)
        detail::futex_wait(state_->seq, seq, until);
    } catch (...) {
      lock_internal();
      throw;
    }
    lock_internal();
  }
  // The party in slot `index` leaves (under the internal lock); the last
  // one out of a passed or reset round opens the next.
  void leave(std::uint32_t index) const {
    auto& st = *state_;
    detail::WaiterSlot& s = slot(index);
    if (!s.mine()) return;  // forgotten as dead meanwhile: it cannot be, but the count stays right
    s.release();
    if (st.count > 0) --st.count;
    if (st.count == 0 && (st.state == State::kResetting || st.state == State::kDraining)) {
      st.state = State::kFilling;
      broadcast();
    }
  }

  std::size_t wait_until_steady(detail::Clock::time_point deadline) {
    Guard g(*this);
    auto& st = *state_;
    // The previous round must drain (or a reset end) first; parties that
    // died before leaving are forgotten.
    while (st.state == State::kDraining || st.state == State::kResetting) {
      if (detail::Clock::now() >= deadline) {
        break_barrier(State::kTimedOut);
        throw BrokenBarrierError(
            "mproc: Barrier.wait(): timed out waiting for the previous round to end; the barrier is now broken");
      }
      sleep(deadline);
      if (st.state == State::kDraining || st.state == State::kResetting) reap_dead();
    }
    if (st.state == State::kBroken) throw_broken("the barrier is broken");
    const std::uint32_t index = st.count;
    if (index >= parties_ || slot(index).state.load(std::memory_order_relaxed) != detail::WaiterSlot::kFree) {
      break_barrier(State::kInconsistent);
      throw BrokenBarrierError("mproc: Barrier.wait(): the barrier's shared state is inconsistent; it is now broken");
    }
    slot(index).claim(detail::WaiterSlot::kWaiting, index);
    ++st.count;
    struct Leave {
      const Barrier& b;
      std::uint32_t index;
      ~Leave() { b.leave(index); }
    } leave{*this, index};
    if (index + 1 == parties_) {
      // The last arriver: a party that died while waiting did not arrive.
      if (party_died(index)) {
        break_barrier(State::kPartyDied);
        throw BrokenBarrierError("mproc: Barrier.wait(): a party died while waiting; the barrier is now broken");
      }
      if (st.action != 0) {
        try {
          reinterpret_cast<void (*)()>(st.action)();
        } catch (...) {
          break_barrier(State::kActionFailed);
          throw;
        }
      }
      if (auto hook = detail::SyncTesting::barrier_releasing) hook();
      st.state = State::kDraining;
      broadcast();
      return index;
    }
    while (st.state == State::kFilling) {
      if (detail::Clock::now() >= deadline) {
        break_barrier(State::kTimedOut);
        throw BrokenBarrierError("mproc: Barrier.wait(): timed out; the barrier is now broken");
      }
      sleep(deadline);
      if (st.state == State::kFilling && party_died(index)) {
        break_barrier(State::kPartyDied);
        throw BrokenBarrierError("mproc: Barrier.wait(): a party died while waiting; the barrier is now broken");
      }
    }
    if (st.state == State::kResetting) throw BrokenBarrierError("mproc: Barrier.wait(): the barrier was reset");
    if (st.state < 0) throw_broken("the barrier was broken");
    return index;
  }

  std::shared_ptr<detail::ShmBlock> block_;
  State* state_ = nullptr;
  std::size_t parties_ = 0;
};

// A Barrier crosses processes (Pipe, Queue, Pool arguments) by handle: the
// receiver uses the same barrier.
template <>
struct serializer<Barrier> : detail::handle_serializer<Barrier> {};

}  // namespace mproc
