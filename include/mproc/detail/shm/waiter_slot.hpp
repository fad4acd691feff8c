// mproc/detail/shm/waiter_slot.hpp — WaiterSlot, one blocked thread's record
// in a Condition or Barrier, linked into the thread's robust list so the
// kernel marks it when the thread dies. Layer detail/shm, on
// thread_identity.hpp; used by ConditionState and BarrierState (sync_state.hpp).
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include <mproc/detail/os/futex.hpp>
#include <mproc/detail/shm/thread_identity.hpp>

namespace mproc::detail {

// ------------------------------------------------------ waiters' records

// The kernel's robust-list head (struct robust_list_head, <linux/futex.h>).
struct RobustListHead {
  void* list;
  long futex_offset;
  void* list_op_pending;
};

// One blocked thread's record in a Condition or Barrier, in shared memory.
// The owner writes it under the object's lock before it sleeps and clears
// it after; others read it under that lock to tell whether it died.
//
// While the record is in use, the owner links it into its thread's robust
// list (the list glibc registered with set_robust_list: `next` is the
// entry, `alive` the futex word at the list's futex_offset of -32). When
// the thread dies, however it dies, the kernel sets FUTEX_OWNER_DIED in
// `alive` before anyone can see the death: no system call and no guess is
// needed to find a dead waiter. The record is linked at the head of the
// list and only while its owner is blocked inside the library, so no other
// entry is added or removed meanwhile and unlinking restores the list
// exactly. Without a usable robust list (another C library, or
// SyncTesting::no_robust_list) `alive` stays 0 and the owner's identity is
// probed instead (identity_dead).
struct WaiterSlot {
  static constexpr std::uint32_t kFree = 0;
  static constexpr std::uint32_t kWaiting = 1;   // Condition: waiting; Barrier: arrived
  static constexpr std::uint32_t kNotified = 2;  // Condition only
  static constexpr std::uint32_t kOwnerDied = 0x40000000u;  // FUTEX_OWNER_DIED

  std::atomic<std::uint32_t> alive{0};  // the owner's tid while linked; kOwnerDied once it died
  std::atomic<std::uint32_t> state{0};  // a futex word: kFree, kWaiting or kNotified
  std::uint64_t id = 0;                 // the owner's identity
  std::uint32_t reserved = 0;
  std::uint32_t ticket = 0;             // Condition: arrival order
  void* prev = nullptr;                 // the C library's robust-list convention may write here
  void* next = nullptr;                 // the robust-list entry

  static constexpr long kNodeOffset = 32;  // from `alive` to `next`

  // Takes the record for the calling thread in `st` (under the object's
  // lock) and links it into the thread's robust list.
  void claim(std::uint32_t st, std::uint32_t arrival) noexcept {
    id = current_identity();
    ticket = arrival;
    alive.store(0, std::memory_order_relaxed);
    state.store(st, std::memory_order_relaxed);
    link();
  }
  // Gives the record back (its owner, under the object's lock).
  void release() noexcept {
    unlink();
    state.store(kFree, std::memory_order_relaxed);
  }
  // Frees the record of a dead owner (under the object's lock).
  void reap() noexcept {
    alive.store(0, std::memory_order_relaxed);
    state.store(kFree, std::memory_order_relaxed);
  }
  bool mine() const noexcept { return id == current_identity() && state.load(std::memory_order_relaxed) != kFree; }

  // Whether the owner of this record (in use) has died. Non-blocking when
  // linked; otherwise it may probe the owner (a few system calls).
  bool owner_dead() const noexcept {
    const std::uint32_t a = alive.load(std::memory_order_acquire);
    if (a != 0) return (a & kOwnerDied) != 0;
    return identity_dead(id);
  }

 private:
  // The calling thread's robust-list head if we can use it; nullptr if not.
  static RobustListHead* robust_head() noexcept {
    if (SyncTesting::no_robust_list.load(std::memory_order_relaxed)) return nullptr;
    thread_local RobustListHead* head = nullptr;
    thread_local bool looked = false;
    if (!looked) {
      looked = true;
      void* h = nullptr;
      std::size_t len = 0;
      if (::syscall(SYS_get_robust_list, 0, &h, &len) == 0 && h && len == sizeof(RobustListHead) &&
          static_cast<RobustListHead*>(h)->futex_offset == -kNodeOffset)
        head = static_cast<RobustListHead*>(h);
    }
    return head;
  }
  // Stores in program order as the kernel, walking the list when the
  // thread dies, must see them.
  static void put(void*& where, void* value) noexcept {
    std::atomic_ref<void*>(where).store(value, std::memory_order_relaxed);
    std::atomic_signal_fence(std::memory_order_seq_cst);
  }
  void put_alive(std::uint32_t value) noexcept {
    alive.store(value, std::memory_order_relaxed);
    std::atomic_signal_fence(std::memory_order_seq_cst);
  }
  void* node() noexcept { return static_cast<void*>(&next); }

  void link() noexcept {
    RobustListHead* head = robust_head();
    if (!head) return;
    // The kernel also handles list_op_pending at death, so a death at any
    // point in between marks `alive` as soon as it holds our tid.
    put(head->list_op_pending, node());
    put_alive(current_tid());
    put(next, std::atomic_ref<void*>(head->list).load(std::memory_order_relaxed));
    put(head->list, node());
    put(head->list_op_pending, nullptr);
  }
  void unlink() noexcept {
    if (alive.load(std::memory_order_relaxed) == 0) return;  // not linked
    RobustListHead* head = robust_head();
    if (!head) return;
    put(head->list_op_pending, node());
    if (std::atomic_ref<void*>(head->list).load(std::memory_order_relaxed) == node()) {
      put(head->list, next);
    } else {
      // Something was linked after us (only a signal handler could): unlink
      // from the middle, walking the entries (bit 0 marks PI futexes).
      void* p = head->list;
      for (int i = 0; i < 2048 && p != static_cast<void*>(head); ++i) {
        void** entry = reinterpret_cast<void**>(reinterpret_cast<std::uintptr_t>(p) & ~std::uintptr_t{1});
        if (reinterpret_cast<std::uintptr_t>(*entry) == reinterpret_cast<std::uintptr_t>(node())) {
          put(*entry, next);
          break;
        }
        p = *entry;
      }
    }
    put_alive(0);
    put(head->list_op_pending, nullptr);
  }
};
static_assert(offsetof(WaiterSlot, next) - offsetof(WaiterSlot, alive) == WaiterSlot::kNodeOffset || sizeof(void*) != 8,
              "WaiterSlot: the robust-list entry must lie 32 bytes after the futex word");

}  // namespace mproc::detail
