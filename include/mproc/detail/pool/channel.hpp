// Channel: framed messages over a non-blocking AF_UNIX stream socket, with
// file descriptors passed alongside (SCM_RIGHTS). The process pool talks to
// its workers and to its zygote through channels.
//
// A frame is a 16-byte header {payload size, type, fd count, id} and the
// payload, padded to a multiple of 16 bytes so that every payload starts
// 16-byte aligned in the receiver's buffer (encoded arrays can be viewed in
// place). Sending is buffered: put() queues, flush() writes what the socket
// takes. Receiving: fill() reads what is available, next() parses one frame.
// The peer is untrusted: oversized or malformed frames are reported as
// protocol errors, never acted on.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <sys/socket.h>
#include <sys/uio.h>

#include <mproc/detail/os/fd.hpp>
#include <mproc/detail/util/test_hook.hpp>

namespace mproc::detail {

struct FrameHeader {
  std::uint32_t size;   // payload bytes after the header
  std::uint16_t type;   // meaning defined by the protocol using the channel
  std::uint16_t nfds;   // file descriptors carried by this frame (0 or 1)
  std::uint64_t id;     // task id or other correlation value
};
static_assert(sizeof(FrameHeader) == 16);

// A received frame. `payload` points into the channel's buffer and stays
// valid until the next fill() on that channel.
// Bytes a frame with `size` payload bytes occupies on the stream.
constexpr std::size_t frame_span(std::size_t size) noexcept {
  return sizeof(FrameHeader) + ((size + 15) & ~std::size_t{15});
}

struct Frame {
  FrameHeader header{};
  std::span<const std::byte> payload;
  UniqueFd fd;
};

// Creates a connected AF_UNIX stream socket pair, both ends close-on-exec
// and private (no forked child inherits them; see PrivateFds). Throws
// ProcessError (e.g. out of descriptors).
inline std::pair<UniqueFd, UniqueFd> socket_pair() {
  auto fds = PrivateFds::instance().create<2>(
      "socketpair", [](int* sv) { return ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv); });
  return {std::move(fds[0]), std::move(fds[1])};
}

// Where a test may stop a channel (TestHook<ChannelStep>, detail/util/test_hook.hpp):
// descriptors just received, still under PrivateFds' lock.
enum class ChannelStep { fds_received };

class Channel {
 public:
  // Largest payload accepted from the peer; larger ones are protocol errors.
  static constexpr std::uint32_t max_payload = 256u << 20;

  enum class Io { ok, would_block, closed, error };

  Channel() = default;
  explicit Channel(UniqueFd fd) : fd_(std::move(fd)) {}

  int fd() const noexcept { return fd_.get(); }
  bool valid() const noexcept { return fd_.valid(); }
  void close() noexcept {
    fd_.reset();
    out_.clear();
    out_pos_ = 0;
    out_fds_.clear();
  }

  // ---- sending

  // Queues a frame whose payload the caller writes into the returned span.
  std::span<std::byte> put_begin(std::uint16_t type, std::uint64_t id, std::size_t size) {
    if (size > max_payload)
      throw ProcessError("mproc: channel frame of " + std::to_string(size) + " bytes exceeds the limit");
    compact_out();
    out_recent_.note(frame_span(size));
    const FrameHeader h{static_cast<std::uint32_t>(size), type, 0, id};
    const std::size_t at = out_.size();
    out_.resize(at + frame_span(size));
    std::memcpy(out_.data() + at, &h, sizeof h);
    return {out_.data() + at + sizeof h, size};
  }

  // Queues a frame with `payload`, and `fd_to_send` if valid (the fd is
  // closed here once it has been sent).
  void put(std::uint16_t type, std::uint64_t id, std::span<const std::byte> payload, UniqueFd fd_to_send = {}) {
    auto dst = put_begin(type, id, payload.size());
    if (!payload.empty()) std::memcpy(dst.data(), payload.data(), payload.size());
    if (fd_to_send.valid()) {
      // put_begin may have compacted: locate the frame from the end.
      const std::size_t start = out_.size() - frame_span(payload.size());
      FrameHeader h;
      std::memcpy(&h, out_.data() + start, sizeof h);
      h.nfds = 1;
      std::memcpy(out_.data() + start, &h, sizeof h);
      out_fds_.push_back({start, std::move(fd_to_send)});
    }
  }

  bool has_output() const noexcept { return out_pos_ < out_.size(); }
  std::size_t pending_output() const noexcept { return out_.size() - out_pos_; }

  // Writes as much queued output as the socket takes without blocking.
  // ok: everything written; would_block: some left; closed: the peer is gone.
  Io flush() {
    while (out_pos_ < out_.size()) {
      std::size_t end = out_.size();
      int pass_fd = -1;
      if (!out_fds_.empty()) {
        if (out_fds_.front().offset == out_pos_) {
          pass_fd = out_fds_.front().fd.get();
          if (out_fds_.size() > 1) end = out_fds_[1].offset;
        } else {
          end = out_fds_.front().offset;
        }
      }
      iovec iov{out_.data() + out_pos_, end - out_pos_};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
      if (pass_fd >= 0) {
        std::memset(control, 0, sizeof control);
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        std::memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
      }
      const ssize_t n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        out_pos_ += static_cast<std::size_t>(n);
        if (pass_fd >= 0) out_fds_.pop_front();  // delivered with the first byte
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Io::would_block;
      if (n < 0 && (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN)) return Io::closed;
      return Io::error;
    }
    out_.clear();
    out_pos_ = 0;
    if (out_.capacity() > out_recent_.keep()) std::vector<std::byte>().swap(out_);  // after a huge frame
    return Io::ok;
  }

  // Flushes everything, waiting as needed. Returns false if the peer is gone.
  bool flush_blocking() {
    for (;;) {
      switch (flush()) {
        case Io::ok:
          return true;
        case Io::would_block:
          poll_until(fd_.get(), POLLOUT, Clock::time_point::max());
          break;
        default:
          return false;
      }
    }
  }

  // ---- receiving

  // Reads what is available without blocking (up to the buffer's room,
  // growing it for a large frame). closed: end of stream (data already read
  // stays parseable); error: the peer misbehaved or the socket failed.
  Io fill() {
    // A buffer that grew for one huge frame is given back once it is parsed.
    if (in_pos_ == in_end_ && in_.size() > in_recent_.keep()) {
      in_.release();
      in_pos_ = in_end_ = 0;
    }
    // Compact: keep unparsed bytes at the front.
    if (in_pos_ > 0) {
      const std::size_t left = in_end_ - in_pos_;
      if (left > 0) std::memmove(in_.data(), in_.data() + in_pos_, left);
      in_pos_ = 0;
      in_end_ = left;
    }
    std::size_t want = 64 * 1024;
    if (in_end_ >= sizeof(FrameHeader)) {
      FrameHeader h;
      std::memcpy(&h, in_.data(), sizeof h);
      const std::size_t frame = frame_span(h.size);
      // Grow toward the frame as its bytes arrive (at most doubling what
      // was received): a header claiming a huge payload costs no memory
      // until the payload comes.
      if (h.size <= max_payload && frame > in_end_) want = std::max(want, std::min(frame - in_end_, in_end_));
    }
    if (in_.size() < in_end_ + want) in_.grow(in_end_ + want, in_end_);

    iovec iov{in_.data() + in_end_, in_.size() - in_end_};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * max_fds_per_read)];
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    for (;;) {
      // Received descriptors are another channel's ends: private here too,
      // registered before any fork can copy them.
      std::array<UniqueFd, max_fds_per_read> received;
      bool lost = false;
      int err = 0;
      const ssize_t n = PrivateFds::instance().receiving([&](auto adopt) {
        const ssize_t r = ::recvmsg(fd_.get(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (r < 0) err = errno;
        if (r >= 0) lost = !adopt_fds(msg, adopt, received);
        if (received[0]) test_point(ChannelStep::fds_received);
        return r;
      });
      for (UniqueFd& fd : received)
        if (fd) in_fds_.push_back(std::move(fd));
      if (n < 0 && err == EINTR) continue;
      if (n < 0 && (err == EAGAIN || err == EWOULDBLOCK)) return Io::would_block;
      if (n < 0 && err == ECONNRESET) return Io::closed;
      if (n < 0) return Io::error;
      if (lost || (msg.msg_flags & MSG_CTRUNC)) return Io::error;
      if (n == 0) return Io::closed;
      in_end_ += static_cast<std::size_t>(n);
      drained_ = static_cast<std::size_t>(n) < iov.iov_len;
      return Io::ok;
    }
  }

  // Parses the next complete frame into `out`. Returns false if none is
  // complete yet. Throws ProcessError on a malformed frame.
  bool next(Frame& out) {
    if (in_end_ - in_pos_ < sizeof(FrameHeader)) return false;
    FrameHeader h;
    std::memcpy(&h, in_.data() + in_pos_, sizeof h);
    if (h.size > max_payload || h.nfds > 1)
      throw ProcessError("mproc: malformed frame from peer process (size " + std::to_string(h.size) + ", fds " +
                         std::to_string(h.nfds) + ")");
    if (in_end_ - in_pos_ < frame_span(h.size)) return false;
    out.header = h;
    out.payload = {in_.data() + in_pos_ + sizeof h, h.size};
    out.fd.reset();
    if (h.nfds == 1) {
      if (in_fds_.empty()) throw ProcessError("mproc: frame from peer process lacks its file descriptor");
      out.fd = std::move(in_fds_.front());
      in_fds_.pop_front();
    }
    in_pos_ += frame_span(h.size);
    in_recent_.note(frame_span(h.size));
    return true;
  }

  // Bytes reserved by the receive and send buffers (for tests).
  std::size_t buffer_capacity() const noexcept { return in_.size() + out_.capacity(); }

  // Whether the last fill() that read something read less than it had room
  // for: the socket held no more at that instant, so filling again before
  // poll() reports input would most likely find nothing.
  bool drained() const noexcept { return drained_; }

  // Whether unparsed bytes remain (a frame may be partially received).
  bool has_input() const noexcept { return in_end_ > in_pos_; }

  // Whether a complete frame is buffered (next() would return it).
  bool has_frame() const noexcept {
    if (in_end_ - in_pos_ < sizeof(FrameHeader)) return false;
    FrameHeader h;
    std::memcpy(&h, in_.data() + in_pos_, sizeof h);
    return in_end_ - in_pos_ >= frame_span(h.size);
  }

  // Blocks until a whole frame is available or the peer closes. Returns
  // false at end of stream. Throws ProcessError on errors.
  bool receive_blocking(Frame& out) {
    for (;;) {
      if (next(out)) return true;
      switch (fill()) {
        case Io::ok:
          break;
        case Io::would_block:
          poll_until(fd_.get(), POLLIN, Clock::time_point::max());
          break;
        case Io::closed:
          if (next(out)) return true;
          return false;
        case Io::error:
          throw ProcessError("mproc: channel receive failed");
      }
    }
  }

 private:
  static constexpr int max_fds_per_read = 8;
  // Buffers larger than this (grown for a large frame) are released once
  // drained, so one huge message does not pin its memory for the channel's life.
  static constexpr std::size_t kKeepCapacity = std::size_t{4} << 20;

  // The largest frames seen lately, over two windows of 16 frames: a buffer
  // keeps room for twice that (at least kKeepCapacity), so a stream of large
  // frames reuses its buffer and one huge frame among small ones does not
  // pin its memory.
  struct RecentMax {
    std::size_t current = 0, previous = 0;
    unsigned count = 0;
    void note(std::size_t bytes) noexcept {
      current = std::max(current, bytes);
      if (++count == 16) {
        previous = current;
        current = 0;
        count = 0;
      }
    }
    std::size_t keep() const noexcept { return std::max(kKeepCapacity, 2 * std::max(current, previous)); }
  };
  RecentMax in_recent_, out_recent_;

  // Registers the descriptors `msg` brought (under PrivateFds' lock, through
  // `adopt`) into `out`. Returns false if one could not be kept (it is
  // closed): the frame that needs it is lost.
  template <class Adopt>
  static bool adopt_fds(msghdr& msg, Adopt& adopt, std::array<UniqueFd, max_fds_per_read>& out) noexcept {
    bool all = true;
    std::size_t k = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const std::size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < n; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        try {
          if (k == out.size()) throw std::length_error("more descriptors than the control buffer holds");
          out[k] = adopt(fd);
          ++k;
        } catch (...) {
          ::close(fd);
          all = false;
        }
      }
    }
    return all;
  }

  void compact_out() {
    if (out_pos_ == 0 || out_pos_ < out_.size() / 2) return;
    out_.erase(out_.begin(), out_.begin() + static_cast<std::ptrdiff_t>(out_pos_));
    for (auto& p : out_fds_) p.offset -= out_pos_;
    out_pos_ = 0;
  }

  struct PendingFd {
    std::size_t offset;
    UniqueFd fd;
  };

  // The receive buffer. Its new bytes are left uninitialized (recvmsg
  // fills them): zeroing 64 KiB would write sixteen pages that small frames
  // never reach, each a copy-on-write fault in a freshly forked worker.
  class RecvBuffer {
   public:
    std::byte* data() noexcept { return p_.get(); }
    const std::byte* data() const noexcept { return p_.get(); }
    std::size_t size() const noexcept { return size_; }
    // Reallocates to at least `n` bytes (> size()) and at least twice
    // size(), as a vector grows, keeping the first `keep`.
    void grow(std::size_t n, std::size_t keep) {
      n = std::max(n, 2 * size_);
      auto bigger = std::make_unique_for_overwrite<std::byte[]>(n);
      if (keep > 0) std::memcpy(bigger.get(), p_.get(), keep);
      p_ = std::move(bigger);
      size_ = n;
    }
    void release() noexcept {
      p_.reset();
      size_ = 0;
    }

   private:
    std::unique_ptr<std::byte[]> p_;
    std::size_t size_ = 0;
  };

  UniqueFd fd_;
  std::vector<std::byte> out_;
  std::size_t out_pos_ = 0;
  std::deque<PendingFd> out_fds_;
  RecvBuffer in_;
  std::size_t in_pos_ = 0;
  std::size_t in_end_ = 0;
  bool drained_ = false;
  std::deque<UniqueFd> in_fds_;
};

}  // namespace mproc::detail
