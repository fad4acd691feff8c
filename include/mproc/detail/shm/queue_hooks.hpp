// Test hooks of the shared-memory Queue: the named steps of put and get at
// which a test may stop the calling process, to kill it at the worst instant
// (tests/test_queue.cpp). Compiled out unless MPROC_TEST_HOOKS is defined.
// Layer detail/shm; used by queue_ring.hpp.
// SPDX-License-Identifier: MIT
#pragma once

#include <mproc/detail/util/test_hook.hpp>

namespace mproc::detail {

// The steps of put and get at which a test may stop the calling process (to
// kill it there, at the worst instant) through TestHook<QueueStep>
// (detail/util/test_hook.hpp).
enum class QueueStep : int {
  put_locked,          // holds the producers' lock
  put_room_found,      // found room for its record
  put_header_written,  // wrote the record's header (and the skip record), not its payload
  put_written,         // wrote the whole record
  put_journaled,       // about to publish the item
  put_counted,         // published the item's count, not yet the tail
  put_published,       // published the tail, still holds the lock
  get_locked,          // holds the consumers' lock
  get_skipped,         // moved the head past a skip record, has not read the item
  get_taken,           // decoded the item, has not consumed it
  get_journaled,       // about to consume the item
  get_counted,         // published the consumed count, not yet the head
  get_published,       // published the head, still holds the lock
  realign_locked,      // holds both locks to move an empty queue's positions
  realign_half,        // moved the head, not yet the tail
};

}  // namespace mproc::detail
