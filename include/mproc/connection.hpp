// mproc::Pipe and mproc::Connection (Python: multiprocessing.Pipe and
// multiprocessing.connection.Connection): message channels between
// processes, made before fork() and inherited by children.
//
//   auto [a, b] = mp::Pipe();         // duplex: AF_UNIX stream socketpair
//   auto [r, w] = mp::Pipe(false);    // simplex: pipe2(); r receives, w sends
//   a.send(std::vector<int>{1, 2, 3});            // any serializable value
//   auto v = b.recv<std::vector<int>>();          // type-checked
//   a.send_bytes(bytes);  b.recv_bytes();         // raw bytes
//
// Wire format: each message is an 8-byte length (native byte order; both
// ends run on the same machine) followed by the payload; send() payloads are
// mproc frames (see serialize.hpp), so recv<T>() checks the type. Bytes read are
// untrusted: a length above max_message_size(), a truncated message or any
// other framing fault throws, after which the receiving side is unusable
// (the stream cannot be resynchronized) and says so.
//
// A vanished peer never raises SIGPIPE: sockets send with MSG_NOSIGNAL, and
// pipe writes block SIGPIPE in the writing thread only (detail::SigpipeGuard).
// Caveat inherited from fork(): a peer's end held open by another process
// (for instance the parent's own copy of the end it gave a child) keeps the
// channel open — close the ends you do not use, or recv() waits for them.
//
// Receiving reads ahead: one read() takes whatever the kernel holds (up to
// 64 KiB), so a small message costs one system call; bytes of later messages
// stay buffered in this Connection object (a child forked meanwhile inherits
// them, as it would a FILE*'s buffer).
//
// Memory follows what actually arrives, not what a length header claims:
// a message's buffer is reserved at most 16 MiB ahead of the bytes received
// (untouched address space) and filled in steps of 1 MiB. The buffers a
// Connection reuses from message to message (recv<T>()'s frame, send()'s
// encoding) keep more than 1 MiB only while a run of large messages needs
// it: past 1 MiB, a buffer more than four times larger than the smaller of
// the last two messages it served is released — once a large message has
// been decoded (or, for a T holding views, at the next recv), after a send.
//
// Thread-safety: one thread may send while another receives on the same
// Connection; concurrent sends (or concurrent receives), from threads or
// processes sharing the fd, need external locking. Messages of up to
// PIPE_BUF - 8 bytes are written atomically to a pipe.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <cerrno>
#include <climits>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <ratio>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/os/fd.hpp>
#include <mproc/detail/os/sigpipe.hpp>
#include <mproc/detail/util/lean_std.hpp>
#include <mproc/errors.hpp>
#include <mproc/serialize.hpp>

namespace mproc {

namespace detail {
struct ConnectionAccess;
}

// One end of a Pipe. Move-only; the destructor closes it.
class Connection {
 public:
  // Default limit on a received message's size: 1 GiB.
  static constexpr std::size_t default_max_message_size = std::size_t{1} << 30;

  // A closed connection (every operation but close()/closed() throws).
  Connection() noexcept = default;

  // Takes ownership of `fd` (a pipe end or a stream socket). Throws
  // ProcessError if `fd` is not open or neither direction is allowed.
  explicit Connection(int fd, bool readable = true, bool writable = true)
      : fd_(fd), readable_(readable), writable_(writable) {
    struct stat st{};
    if (fd < 0 || ::fstat(fd, &st) != 0) {
      fd_.release();
      throw ProcessError("mproc: Connection: " + std::to_string(fd) + " is not an open file descriptor");
    }
    if (!readable && !writable) {
      fd_.release();
      throw ProcessError("mproc: Connection: at least one of readable and writable must be true");
    }
    socket_ = S_ISSOCK(st.st_mode);
  }

  Connection(Connection&&) noexcept = default;
  Connection& operator=(Connection&&) noexcept = default;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() = default;

  // Sends `data` as one message. Blocks until it is all written (the peer
  // may need to read for that). Throws EOFError ("broken pipe") if the peer
  // has closed its end, ProcessError if this end is closed or read-only, or
  // if the message exceeds max_message_size().
  void send_bytes(std::span<const std::byte> data) {
    const std::span<const std::byte> pieces[1] = {data};
    send_pieces("send_bytes", pieces);
  }
  void send_bytes(std::string_view text) { send_bytes(std::as_bytes(std::span(text))); }

  // Sends `value` serialized as one message (Python: send(obj)). Small parts
  // are encoded into a buffer the Connection reuses; large contiguous blocks
  // (a std::vector<double>'s data, ...) are written straight from `value`, in
  // one writev with the rest. Blocks until written. Throws what send_bytes()
  // throws; a value that cannot be serialized is a compile error.
  template <class T>
  void send(const T& value) {
    check_writable("send");
    send_pieces_.clear();
    send_scratch_.clear();
    struct TrimAfterSend {  // declared before the writer: runs once it is gone
      Connection& c;
      ~TrimAfterSend() {
        trim(c.send_scratch_, recent_need(c.scratch_last_, c.send_scratch_.size()));
        trim(c.send_pieces_, recent_need(c.pieces_last_, c.send_pieces_.size()) * sizeof(c.send_pieces_[0]));
      }
    } const trim_after{*this};
    Writer w(Writer::gather, send_scratch_);
    write_frame(w, value);
    w.for_each_piece([this](std::span<const std::byte> p) { send_pieces_.push_back(p); });
    send_pieces("send", send_pieces_);
  }

  // Receives one message sent with send() and decodes it as a T. Blocks until
  // a whole message has arrived. Throws EOFError as recv_bytes(); ProcessError
  // if the message is not a T (type mismatch, or bytes from send_bytes()) or
  // is malformed — the message is consumed and the next recv works as usual.
  // A T holding views (std::string_view, std::span<const U>) points into the
  // Connection's receive buffer: valid until the next recv<>() or close().
  template <class T>
  T recv() {
    static_assert(detail::check_owning_decodable<T, detail::decode_site::connection_recv>());  // no views
    const std::size_t size = read_header("recv");
    const std::size_t need = recent_need(recv_last_, size);
    trim(recv_buffer_, need);  // the previous message's views end here
    read_payload("recv", recv_buffer_, size);
    try {
      struct TrimAfterDecode {  // runs once the T is built (it needs the buffer no more)
        Connection& c;
        std::size_t need;
        ~TrimAfterDecode() {
          if constexpr (decodes_to_owned<T>()) trim(c.recv_buffer_, need);
        }
      } const trim_after{*this, need};
      return loads<T>(recv_buffer_);
    } catch (const ProcessError& e) {
      trim(recv_buffer_, need);  // no view into it escaped
      std::string what = e.what();
      if (what.rfind("mproc: ", 0) == 0) what.erase(0, 7);
      throw ProcessError("mproc: Connection.recv(): " + what);
    }
  }

  // Receives one message. Blocks until a whole message has arrived. Throws
  // EOFError if the peer closed its end and everything was read (or closed
  // it mid-message: "truncated"), ProcessError if this end is closed or
  // write-only, or the message is malformed or above max_message_size().
  std::vector<std::byte> recv_bytes() {
    std::vector<std::byte> message;
    recv_bytes_into(message);
    return message;
  }

  // As recv_bytes(), into `buffer` (resized to the message's length, its
  // capacity reused; never shrunk: the caller owns it). Returns the length.
  std::size_t recv_bytes_into(std::vector<std::byte>& buffer) {
    const std::size_t size = read_header("recv_bytes");
    read_payload("recv_bytes", buffer, size);
    return size;
  }

  // As recv_bytes(), into buffer[offset, buffer.size()) (Python:
  // recv_bytes_into(buffer, offset)). Returns the message's length. Blocks
  // as recv_bytes(). Throws BufferTooShort (holding the message, which is
  // consumed) if it does not fit, ValueError if offset > buffer.size()
  // (nothing is read), and what recv_bytes() throws.
  std::size_t recv_bytes_into(std::span<std::byte> buffer, std::size_t offset = 0) {
    if (offset > buffer.size())
      throw ValueError("mproc: Connection.recv_bytes_into(): offset " + std::to_string(offset) +
                       " is beyond the buffer's " + std::to_string(buffer.size()) + " bytes");
    const std::size_t size = read_header("recv_bytes_into");
    if (size > buffer.size() - offset) {
      std::vector<std::byte> message;
      read_payload("recv_bytes_into", message, size);
      throw BufferTooShort(std::move(message), buffer.size() - offset);
    }
    read_exact("recv_bytes_into", buffer.data() + offset, size, 0, size);
    return size;
  }

  // True if recv would not block: a message (or part of one) is waiting, or
  // the peer closed its end. Waits up to `timeout` (0: just checks; a huge
  // timeout means forever). Throws ProcessError if closed or write-only.
  template <class Rep, class Period>
  bool poll(std::chrono::duration<Rep, Period> timeout) const {
    check_open("poll");
    if (!readable_) throw ProcessError("mproc: Connection.poll(): connection is write-only");
    if (read_broken_ || buffered() > 0) return true;
    return detail::poll_until(fd_.get(), POLLIN, detail::deadline_after(timeout)) != 0;
  }
  bool poll() const { return poll(std::chrono::seconds(0)); }

  // Closes this end (idempotent) and frees its buffers. The peer sees end of
  // file once every other copy of this end (in forked processes) is closed
  // too. Never throws.
  void close() noexcept {
    fd_.reset();
    rpos_ = rend_ = 0;
    release(recv_buffer_);
    release(rbuf_);
    release(send_scratch_);
    release(send_pieces_);
  }
  bool closed() const noexcept { return !fd_.valid(); }

  // The file descriptor (close-on-exec; inherited by fork()). Throws
  // ProcessError if closed.
  int fileno() const {
    check_open("fileno");
    return fd_.get();
  }
  bool readable() const noexcept { return readable_; }
  bool writable() const noexcept { return writable_; }

  // Largest message send_bytes() sends and recv_bytes() accepts; a received
  // length above it is treated as corruption. Not thread-safe with
  // concurrent sends or receives.
  std::size_t max_message_size() const noexcept { return max_message_size_; }
  void set_max_message_size(std::size_t limit) noexcept { max_message_size_ = limit; }

 private:
  friend struct detail::ConnectionAccess;
  using Header = std::uint64_t;
  // recv reserves at most this much ahead of the bytes actually received,
  // so a corrupted length cannot make it allocate gigabytes for nothing...
  static constexpr std::size_t eager_allocation = std::size_t{16} << 20;
  // ...and touches (zero-fills) at most this much ahead of them.
  static constexpr std::size_t fill_step = std::size_t{1} << 20;
  // Reused buffers keep a capacity above this only while it serves (trim()).
  static constexpr std::size_t kept_capacity = std::size_t{1} << 20;

  // Whether a T decoded from the receive buffer certainly holds no view into
  // it (built-in kinds that copy), so the buffer may go once T is built.
  template <class T>
  static constexpr bool decodes_to_owned() noexcept {
    if constexpr (!detail::is_builtin_v<T>) {
      return false;
    } else {
      constexpr detail::kind k = detail::kind_of<T>();
      return k == detail::kind::boolean || k == detail::kind::empty || k == detail::kind::bitwise ||
             k == detail::kind::bit_vector || k == detail::kind::contiguous;
    }
  }

  // The smaller of `now` and `last` (the size a buffer served before);
  // records `now` as the last.
  static std::size_t recent_need(std::size_t& last, std::size_t now) noexcept {
    return std::min(std::exchange(last, now), now);
  }
  // Frees `buffer` if it holds more than kept_capacity bytes and over four
  // times `need` bytes (the smaller of the last two messages it served): a
  // buffer grown for one large message does not outlive it, one serving a run
  // of large messages is reused. Never throws.
  template <class V>
  static void trim(V& buffer, std::size_t need) noexcept {
    const std::size_t bytes = buffer.capacity() * sizeof(typename V::value_type);
    if (bytes > kept_capacity && bytes / 4 > need) release(buffer);
  }
  template <class V>
  static void release(V& buffer) noexcept {
    V().swap(buffer);
  }

  void check_open(const char* op) const {
    if (!fd_.valid()) throw ProcessError(std::string("mproc: Connection.") + op + "() on a closed connection");
  }

  // Writes one message made of `pieces` with a single writev/sendmsg where
  // the kernel allows it.
  void check_writable(const char* op) const {
    check_open(op);
    if (!writable_) throw ProcessError(std::string("mproc: Connection.") + op + "(): connection is read-only");
    if (write_broken_)
      throw ProcessError(std::string("mproc: Connection.") + op +
                         "(): connection is unusable after an earlier send failed mid-message");
  }

  void send_pieces(const char* op, std::span<const std::span<const std::byte>> pieces) {
    check_writable(op);
    std::size_t total = 0;
    for (const auto& p : pieces) total += p.size();
    if (total > max_message_size_)
      throw ProcessError(std::string("mproc: Connection.") + op + "(): message of " + std::to_string(total) +
                         " bytes exceeds max_message_size (" + std::to_string(max_message_size_) + ")");
    Header header = total;
    constexpr std::size_t inline_iov = 8;
    iovec small[inline_iov];
    std::vector<iovec> large;
    iovec* iov = small;
    if (pieces.size() + 1 > inline_iov) {
      large.resize(pieces.size() + 1);
      iov = large.data();
    }
    std::size_t count = 0;
    iov[count++] = iovec{&header, sizeof header};
    for (const auto& p : pieces)
      if (!p.empty()) iov[count++] = iovec{const_cast<std::byte*>(p.data()), p.size()};
    write_iov(op, iov, count);
  }

  void write_iov(const char* op, iovec* iov, std::size_t count) {
    std::optional<detail::SigpipeGuard> guard;
    if (!socket_) guard.emplace();
    bool wrote = false;
    while (count > 0) {
      const std::size_t n = std::min<std::size_t>(count, IOV_MAX);
      ssize_t w;
      if (socket_) {
        msghdr msg{};
        msg.msg_iov = iov;
        msg.msg_iovlen = n;
        w = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
      } else {
        w = ::writev(fd_.get(), iov, static_cast<int>(n));
      }
      if (w < 0) {
        const int err = errno;
        if (err == EINTR) continue;
        if (err == EAGAIN || err == EWOULDBLOCK) {  // the user made the fd non-blocking
          detail::poll_until(fd_.get(), POLLOUT, detail::Clock::time_point::max());
          continue;
        }
        write_broken_ = wrote;
        if (err == EPIPE || err == ECONNRESET) {
          if (guard) guard->discard();
          throw EOFError(std::string("mproc: Connection.") + op + "(): broken pipe (the other end was closed)");
        }
        detail::throw_errno(std::string("Connection.") + op + "()", err);
      }
      wrote = true;
      auto left = static_cast<std::size_t>(w);
      while (count > 0 && left >= iov->iov_len) {
        left -= iov->iov_len;
        ++iov;
        --count;
      }
      if (count > 0) {
        iov->iov_base = static_cast<char*>(iov->iov_base) + left;
        iov->iov_len -= left;
      }
    }
  }

  // Marks the receiving side unusable (its buffers are freed: nothing will
  // be received any more) and throws E(what).
  template <class E>
  [[noreturn]] void read_failed_as(const std::string& what) {
    read_broken_ = true;
    release(recv_buffer_);
    throw E(what);
  }

  // Reads and validates a message header; returns the payload length.
  std::size_t read_header(const char* op) {
    check_open(op);
    if (!readable_) throw ProcessError(std::string("mproc: Connection.") + op + "(): connection is write-only");
    if (read_broken_)
      throw ProcessError(std::string("mproc: Connection.") + op +
                         "(): connection is unusable after an earlier malformed or truncated "
                         "message");
    while (buffered() < sizeof(Header) && fill() > 0) {
    }
    const std::size_t got = buffered();
    if (got == 0) throw EOFError(std::string("mproc: Connection.") + op + "(): end of file (the other end was closed)");
    if (got < sizeof(Header))
      read_failed_as<EOFError>(std::string("mproc: Connection.") + op +
                               "(): truncated message: end of file inside a message header");
    Header header = 0;
    take(&header, sizeof header);
    if (header > max_message_size_)
      read_failed_as<ProcessError>(std::string("mproc: Connection.") + op + "(): message of " + std::to_string(header) +
                                   " bytes exceeds max_message_size (" + std::to_string(max_message_size_) +
                                   "): corrupted stream or oversized message");
    return static_cast<std::size_t>(header);
  }

  // Reads `size` payload bytes into `buffer`. Memory follows the bytes that
  // arrive: capacity is reserved at most eager_allocation ahead of them (and
  // doubled when full), pages are zero-filled at most fill_step ahead. What is
  // left of a small message goes through the read-ahead buffer; a large
  // remainder is read straight into `buffer`, without reading past it.
  void read_payload(const char* op, std::vector<std::byte>& buffer, std::size_t size) {
    if (buffer.capacity() < size) {
      buffer.clear();  // nothing to keep: growing copies no stale bytes
      buffer.reserve(std::min(size, std::max(buffer.capacity(), eager_allocation)));
    }
    std::size_t got = 0;
    while (got < size) {
      if (got == buffer.capacity()) buffer.reserve(std::min(size, 2 * got));
      const std::size_t step_end = std::min({size, buffer.capacity(), got + fill_step});
      if (buffer.size() < step_end) buffer.resize(step_end);  // zero-fills only [size(), step_end)
      read_exact(op, buffer.data() + got, step_end - got, got, size);
      got = step_end;
    }
    buffer.resize(size);  // a reused buffer may hold more
  }

  // Reads exactly `n` bytes of a message to `out`, `done` of its `size`
  // bytes being read already: the read-ahead bytes first, then a small rest
  // through the read-ahead buffer, a large one straight from the fd (never
  // past the message). Throws EOFError (truncated) at end of file.
  void read_exact(const char* op, std::byte* out, std::size_t n, std::size_t done, std::size_t size) {
    std::size_t got = take(out, std::min(n, buffered()));
    while (got < n) {
      const std::size_t want = n - got;
      bool eof = false;
      if (want < read_ahead / 2) {
        eof = fill() == 0;
        got += take(out + got, std::min(want, buffered()));
      } else {
        const std::size_t r = detail::read_full(fd_.get(), out + got, want);
        eof = r < want;
        got += r;
      }
      if (eof)
        read_failed_as<EOFError>(std::string("mproc: Connection.") + op + "(): truncated message: end of file after " +
                                 std::to_string(done + got) + " of " + std::to_string(size) + " bytes");
    }
  }

  std::size_t buffered() const noexcept { return rend_ - rpos_; }

  // One read() into the read-ahead buffer, after the bytes it holds. Blocks
  // until at least one byte arrives; returns the count, 0 at end of file.
  std::size_t fill() {
    if (rbuf_.empty()) rbuf_.resize(read_ahead);
    if (rpos_ == rend_) {
      rpos_ = rend_ = 0;
    } else if (rend_ == rbuf_.size()) {  // only a message's head is left: move it to the front
      std::copy(rbuf_.begin() + static_cast<std::ptrdiff_t>(rpos_), rbuf_.begin() + static_cast<std::ptrdiff_t>(rend_),
                rbuf_.begin());
      rend_ -= rpos_;
      rpos_ = 0;
    }
    const std::size_t n = detail::read_some(fd_.get(), rbuf_.data() + rend_, rbuf_.size() - rend_);
    rend_ += n;
    return n;
  }

  // Moves `n` (<= buffered()) read-ahead bytes to `out`; returns `n`.
  std::size_t take(void* out, std::size_t n) noexcept {
    if (n > 0) std::memcpy(out, rbuf_.data() + rpos_, n);
    rpos_ += n;
    return n;
  }

  static constexpr std::size_t read_ahead = std::size_t{64} << 10;

  detail::UniqueFd fd_;
  bool readable_ = false;
  bool writable_ = false;
  bool socket_ = false;
  bool read_broken_ = false;
  bool write_broken_ = false;
  std::size_t max_message_size_ = default_max_message_size;
  // Reused by send() and recv<T>(): small encoded parts, the piece list, and
  // the received frame.
  std::vector<std::byte> send_scratch_;
  std::vector<std::span<const std::byte>> send_pieces_;
  std::vector<std::byte> recv_buffer_;
  // The size of the last message each reused buffer served (see trim()).
  std::size_t scratch_last_ = 0;
  std::size_t pieces_last_ = 0;
  std::size_t recv_last_ = 0;
  // Read-ahead: rbuf_[rpos_, rend_) was received and not yet consumed.
  std::vector<std::byte> rbuf_;
  std::size_t rpos_ = 0;
  std::size_t rend_ = 0;
};

namespace detail {

// Test access to a Connection's internals.
struct ConnectionAccess {
  // Capacity in bytes of the buffer recv<T>() decodes from.
  static std::size_t receive_capacity(const Connection& c) noexcept { return c.recv_buffer_.capacity(); }
  // Capacity in bytes of the buffers send() encodes into.
  static std::size_t send_capacity(const Connection& c) noexcept {
    return c.send_scratch_.capacity() + c.send_pieces_.capacity() * sizeof(c.send_pieces_[0]);
  }
};

}  // namespace detail

// Creates a connected pair of Connections (Python: multiprocessing.Pipe).
// duplex: both ends send and receive (an AF_UNIX stream socketpair);
// simplex: `first` only receives and `second` only sends (a pipe). Both fds
// are close-on-exec. Throws ProcessError if the system is out of fds.
inline std::pair<Connection, Connection> Pipe(bool duplex = true) {
  int fds[2];
  if (duplex) {
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) detail::throw_errno("Pipe(): socketpair()");
    detail::UniqueFd a(fds[0]), b(fds[1]);
    Connection first(a.release(), true, true);
    Connection second(b.release(), true, true);
    return {std::move(first), std::move(second)};
  }
  if (::pipe2(fds, O_CLOEXEC) != 0) detail::throw_errno("Pipe(): pipe2()");
  detail::UniqueFd r(fds[0]), w(fds[1]);
  Connection first(r.release(), true, false);
  Connection second(w.release(), false, true);
  return {std::move(first), std::move(second)};
}

namespace connection {

// What mp::connection::wait watches: a Connection (ready when recv would
// not block: a message waiting, or the peer gone), a file descriptor (ready
// when readable, e.g. a Process's sentinel()), or a queue (mp::Queue,
// JoinableQueue, SimpleQueue, threading::Queue: ready when it holds an item
// or was shut down; a queue has no descriptor, so it is looked at every
// millisecond while wait() blocks). Refers to, does not own, the object.
class Waitable {
 public:
  Waitable(const Connection& c) noexcept : conn_(&c) {}  // NOLINT: converts implicitly, as in Python's list
  Waitable(int fd) noexcept : fd_(fd) {}                 // NOLINT
  template <class Q>
    requires requires(const Q& q) {
      { q.empty() } -> std::convertible_to<bool>;
      { q.closed() } -> std::convertible_to<bool>;
    }
  Waitable(const Q& q) noexcept  // NOLINT
      : queue_(&q), queue_ready_([](const void* p) {
          const Q& queue = *static_cast<const Q*>(p);
          return !queue.empty() || queue.closed();
        }) {}

  // The Connection watched, or null for a descriptor or a queue.
  const Connection* connection() const noexcept { return conn_; }
  // The descriptor watched (-1 for a Connection or a queue).
  int fd() const noexcept { return fd_; }
  // Whether this is a queue, and whether it is ready now. Non-blocking.
  bool is_queue() const noexcept { return queue_ != nullptr; }
  bool queue_ready() const { return queue_ready_(queue_); }

 private:
  const Connection* conn_ = nullptr;
  int fd_ = -1;
  const void* queue_ = nullptr;
  bool (*queue_ready_)(const void*) = nullptr;
};

// Blocks until at least one of `objects` is ready or `timeout` passes (a
// huge timeout: no limit; Python: multiprocessing.connection.wait), and
// returns the positions of the ready ones, ascending; empty after the
// timeout. Thread-safe for distinct Connections. Throws ProcessError if a
// Connection is closed or write-only, or a descriptor is not open.
template <class Rep = long, class Period = std::ratio<1>>
std::vector<std::size_t> wait(std::span<const Waitable> objects,
                              std::chrono::duration<Rep, Period> timeout = std::chrono::duration<Rep, Period>::max()) {
  const auto deadline = detail::deadline_after(timeout);
  std::vector<pollfd> fds(objects.size());
  bool queues = false;
  for (std::size_t i = 0; i < objects.size(); ++i) {
    const Waitable& w = objects[i];
    if (w.is_queue()) {
      fds[i] = pollfd{-1, 0, 0};  // (poll() skips it)
      queues = true;
    } else if (w.connection() != nullptr) {
      (void)w.connection()->poll();  // throws if closed or write-only
      fds[i] = pollfd{w.connection()->fileno(), POLLIN, 0};
    } else {
      if (w.fd() < 0)
        throw ProcessError("mproc: connection::wait(): descriptor " + std::to_string(w.fd()) + " is invalid");
      fds[i] = pollfd{w.fd(), POLLIN, 0};
    }
  }
  for (;;) {
    std::vector<std::size_t> ready;
    for (std::size_t i = 0; i < objects.size(); ++i)
      if ((objects[i].connection() != nullptr && objects[i].connection()->poll()) ||
          (objects[i].is_queue() && objects[i].queue_ready()))
        ready.push_back(i);  // (bytes read ahead count)
    if (!ready.empty()) return ready;
    for (pollfd& p : fds) p.revents = 0;
    int timeout_ms = detail::poll_timeout_ms(deadline);
    if (queues && (timeout_ms < 0 || timeout_ms > 1)) timeout_ms = 1;  // look at the queues again
    const int rc = detail::poll_fds(fds.data(), fds.size(), timeout_ms);
    if (rc < 0) {
      if (errno == EINTR) continue;
      detail::throw_errno("connection::wait(): poll()");
    }
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      if ((fds[i].revents & POLLNVAL) != 0)
        throw ProcessError("mproc: connection::wait(): descriptor " + std::to_string(fds[i].fd) + " is not open");
      if (objects[i].connection() == nullptr && !objects[i].is_queue()) ready.push_back(i);
    }
    for (std::size_t i = 0; i < objects.size(); ++i)
      if (objects[i].connection() != nullptr && fds[i].revents != 0 && objects[i].connection()->poll())
        ready.push_back(i);
    std::sort(ready.begin(), ready.end());
    if (!ready.empty()) return ready;
    if (rc == 0 && detail::Clock::now() >= deadline) return {};
  }
}
template <class Rep = long, class Period = std::ratio<1>>
std::vector<std::size_t> wait(std::initializer_list<Waitable> objects,
                              std::chrono::duration<Rep, Period> timeout = std::chrono::duration<Rep, Period>::max()) {
  return wait(std::span<const Waitable>(objects.begin(), objects.size()), timeout);
}

}  // namespace connection

}  // namespace mproc
