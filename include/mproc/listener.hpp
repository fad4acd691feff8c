// mproc::connection::Listener and Client (Python:
// multiprocessing.connection.Listener / Client): Connections between
// processes that did not fork from each other, over a Unix-domain socket
// ("unix:/run/app.sock", or any path containing '/') or TCP ("host:port").
// Public layer, beside connection.hpp: the socket plumbing is
// detail/os/socket.hpp, the HMAC detail/util/sha256.hpp.
//
//   mp::connection::Listener listener("127.0.0.1:0", "secret");   // port 0: any free port
//   // ... another process:  auto c = mp::connection::Client(address, "secret");
//   mp::Connection c = listener.accept();
//
// Authentication (Python's authkey handshake, with its message names):
// with a non-empty authkey, each side proves to the other that it knows the
// key — the listener sends "#CHALLENGE#{sha256}" + 40 random bytes, the
// client answers "{sha256}" + HMAC-SHA256(authkey, "{sha256}" + random),
// the listener replies "#WELCOME#" or "#FAILURE#"; then the client
// challenges the listener the same way. Until both succeeded, nothing is
// decoded: the handshake reads only its own frames (at most 256 bytes each,
// each step within the handshake timeout), and any fault — wrong key,
// garbage, a longer frame, a peer that stalls — throws AuthenticationError
// and closes that connection; a peer that closes it mid-handshake gives
// EOFError (as in Python). The key authenticates;
// it does not encrypt: on an untrusted network, tunnel the TCP connection
// (ssh, TLS). Frames after the handshake are Connection's (lengths in
// native byte order: both ends must share it — any two x86-64 or arm64
// machines do).
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <sys/random.h>

#include <mproc/connection.hpp>
#include <mproc/detail/os/socket.hpp>
#include <mproc/detail/util/lean_std.hpp>
#include <mproc/detail/util/sha256.hpp>
#include <mproc/errors.hpp>

namespace mproc {

namespace detail {

// The handshake's messages (Python's, byte for byte) and limits.
inline constexpr std::string_view kHandshakeChallenge = "#CHALLENGE#";
inline constexpr std::string_view kHandshakeWelcome = "#WELCOME#";
inline constexpr std::string_view kHandshakeFailure = "#FAILURE#";
inline constexpr std::string_view kHandshakeDigest = "{sha256}";
inline constexpr std::size_t kChallengeRandomBytes = 40;  // Python's MESSAGE_LENGTH
inline constexpr std::size_t kHandshakeFrameMax = 256;    // Python: recv_bytes(256)
// Default bound on each handshake step and on Client's connect: long
// enough for a loaded machine, short enough that a stalled peer is noticed.
inline constexpr std::chrono::seconds kHandshakeTimeout{10};

// Fills `out` from the kernel's random source (getrandom). Blocks only
// before the kernel's pool is initialized (early boot). Throws ProcessError
// naming `who`.
inline void fill_random(std::span<std::byte> out, const char* who) {
  std::size_t got = 0;
  while (got < out.size()) {
    const ssize_t r = ::getrandom(out.data() + got, out.size() - got, 0);
    if (r > 0) {
      got += static_cast<std::size_t>(r);
    } else if (r < 0 && errno != EINTR) {
      throw_errno(std::string(who) + ": getrandom()");
    }
  }
}

// One side of the handshake over a connected non-blocking socket.
class Handshake {
 public:
  Handshake(int fd, std::string_view authkey, Clock::duration step_timeout)
      : fd_(fd), key_(std::as_bytes(std::span(authkey))), step_timeout_(step_timeout) {}

  // Python's deliver_challenge: the peer must prove it knows the key.
  void deliver_challenge() {
    std::vector<std::byte> message(kHandshakeDigest.size() + kChallengeRandomBytes);
    std::memcpy(message.data(), kHandshakeDigest.data(), kHandshakeDigest.size());
    fill_random(std::span(message).subspan(kHandshakeDigest.size()), "connection handshake");
    std::vector<std::byte> challenge(kHandshakeChallenge.size());
    std::memcpy(challenge.data(), kHandshakeChallenge.data(), kHandshakeChallenge.size());
    challenge.insert(challenge.end(), message.begin(), message.end());
    send(challenge, "sending the challenge");
    const std::vector<std::byte> response = receive("reading the answer to the challenge");
    if (!constant_time_equal(response, answer(message))) {
      send(as_bytes(kHandshakeFailure), nullptr);  // best effort: the peer learns why
      throw AuthenticationError("mproc: connection handshake: the digest received was wrong (a different authkey)");
    }
    send(as_bytes(kHandshakeWelcome), "sending the welcome");
  }

  // Python's answer_challenge: prove to the peer that we know the key.
  void answer_challenge() {
    const std::vector<std::byte> challenge = receive("reading the challenge");
    const std::span<const std::byte> bytes(challenge);
    if (!starts_with(bytes, kHandshakeChallenge))
      throw AuthenticationError("mproc: connection handshake: the peer sent no challenge (" +
                                std::to_string(challenge.size()) + " other bytes)");
    const auto message = bytes.subspan(kHandshakeChallenge.size());
    if (!starts_with(message, kHandshakeDigest))
      throw AuthenticationError("mproc: connection handshake: the challenge asks for a digest other than {sha256}");
    send(answer(message), "sending the answer");
    const std::vector<std::byte> verdict = receive("reading the verdict");
    if (verdict.size() != kHandshakeWelcome.size() ||
        std::memcmp(verdict.data(), kHandshakeWelcome.data(), verdict.size()) != 0)
      throw AuthenticationError("mproc: connection handshake: the digest sent was rejected (a different authkey)");
  }

 private:
  static std::span<const std::byte> as_bytes(std::string_view s) noexcept { return std::as_bytes(std::span(s)); }
  static bool starts_with(std::span<const std::byte> bytes, std::string_view prefix) noexcept {
    return bytes.size() >= prefix.size() && std::memcmp(bytes.data(), prefix.data(), prefix.size()) == 0;
  }

  // "{sha256}" + HMAC-SHA256(key, message), message including its "{sha256}".
  std::vector<std::byte> answer(std::span<const std::byte> message) const {
    const Sha256Digest mac = hmac_sha256(key_, message);
    std::vector<std::byte> out(kHandshakeDigest.size());
    std::memcpy(out.data(), kHandshakeDigest.data(), kHandshakeDigest.size());
    out.insert(out.end(), mac.begin(), mac.end());
    return out;
  }

  // A frame as Connection writes one: an 8-byte native length, then the bytes.
  void send(std::span<const std::byte> payload, const char* step) {
    const std::uint64_t n = payload.size();
    std::byte frame[8 + kHandshakeFrameMax];
    std::memcpy(frame, &n, 8);
    std::memcpy(frame + 8, payload.data(), payload.size());
    const auto deadline = deadline_after(step_timeout_);
    if (!write_all_until(fd_, frame, 8 + payload.size(), deadline) && step != nullptr) {
      if (Clock::now() < deadline)
        throw EOFError(std::string("mproc: connection handshake: the peer closed the connection while ") + step);
      throw AuthenticationError(std::string("mproc: connection handshake: the peer stopped reading while ") + step);
    }
  }

  std::vector<std::byte> receive(const char* step) {
    const auto deadline = deadline_after(step_timeout_);
    std::uint64_t n = 0;
    if (read_exact_until(fd_, &n, 8, deadline) != 8) fail_read(step, deadline);
    if (n > kHandshakeFrameMax)
      throw AuthenticationError("mproc: connection handshake: a frame of " + std::to_string(n) + " bytes while " +
                                step + " (at most " + std::to_string(kHandshakeFrameMax) +
                                " before authentication): not an mproc peer with an authkey");
    std::vector<std::byte> payload(static_cast<std::size_t>(n));
    if (read_exact_until(fd_, payload.data(), payload.size(), deadline) != payload.size()) fail_read(step, deadline);
    return payload;
  }

  [[noreturn]] void fail_read(const char* step, Clock::time_point deadline) const {
    if (Clock::now() >= deadline)
      throw AuthenticationError(
          std::string("mproc: connection handshake: no reply within ") +
          std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(step_timeout_).count()) + " ms while " +
          step);
    throw EOFError(std::string("mproc: connection handshake: the peer closed the connection while ") + step);
  }

  int fd_;
  std::span<const std::byte> key_;
  Clock::duration step_timeout_;
};

// A connected socket as a blocking Connection, after the handshake if any.
inline Connection authenticated_connection(UniqueFd fd, std::string_view authkey, bool listener_side,
                                           Clock::duration step_timeout) {
  if (!authkey.empty()) {
    Handshake h(fd.get(), authkey, step_timeout);
    if (listener_side) {
      h.deliver_challenge();
      h.answer_challenge();
    } else {
      h.answer_challenge();
      h.deliver_challenge();
    }
  }
  set_nonblocking(fd.get(), false);
  return Connection(fd.release());
}

}  // namespace detail

namespace connection {

// Accepts Connections on a Unix-domain or TCP address (Python:
// multiprocessing.connection.Listener). Move-only; one thread at a time.
class Listener {
 public:
  // Binds and listens on `address` ("unix:PATH" or a path containing '/';
  // "HOST:PORT", "[v6]:PORT", port 0 for any free one). With a non-empty
  // `authkey`, accept() authenticates each client. A Unix socket's file is
  // created here and removed by close(); one that exists already is an
  // error (EADDRINUSE), as in Python. Non-blocking. Throws ValueError for a
  // malformed address, ProcessError if it cannot be bound.
  explicit Listener(std::string_view address, std::string authkey = {}, int backlog = 16)
      : authkey_(std::move(authkey)) {
    const detail::SocketAddress a = detail::parse_socket_address(address);
    fd_ = detail::listen_socket(a, backlog);
    if (a.unix_domain) {
      unix_path_ = a.path;
      address_ = a.text();
    } else {
      address_ = detail::socket_name(fd_.get());
    }
    owner_pid_ = ::getpid();
  }
  Listener(Listener&& other) noexcept
      : fd_(std::move(other.fd_)),
        authkey_(std::move(other.authkey_)),
        address_(std::move(other.address_)),
        unix_path_(std::exchange(other.unix_path_, {})),
        owner_pid_(other.owner_pid_),
        handshake_timeout_(other.handshake_timeout_) {}
  Listener& operator=(Listener&& other) noexcept {
    if (this != &other) {
      close();
      fd_ = std::move(other.fd_);
      authkey_ = std::move(other.authkey_);
      address_ = std::move(other.address_);
      unix_path_ = std::exchange(other.unix_path_, {});
      owner_pid_ = other.owner_pid_;
      handshake_timeout_ = other.handshake_timeout_;
    }
    return *this;
  }
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  ~Listener() { close(); }

  // Waits for a client and returns its Connection, authenticated when the
  // listener has an authkey. Blocks. Throws AuthenticationError if that
  // client fails the handshake, EOFError if it closes the connection
  // during it (either way it is disconnected and the listener stays
  // usable), ProcessError if the listener is closed.
  [[nodiscard]] Connection accept() { return accept_until(detail::Clock::time_point::max()); }
  // As accept(), waiting at most `timeout` for a client to connect (the
  // handshake has its own bound). Throws TimeoutError when none came.
  template <class Rep, class Period>
  [[nodiscard]] Connection accept(std::chrono::duration<Rep, Period> timeout) {
    return accept_until(detail::deadline_after(timeout));
  }

  // The address clients connect to: "unix:PATH", or "HOST:PORT" with the
  // port chosen when it was 0. Non-blocking.
  const std::string& address() const noexcept { return address_; }
  // Bounds each step of a client's handshake (default 10 s).
  void set_handshake_timeout(std::chrono::milliseconds timeout) noexcept { handshake_timeout_ = timeout; }

  // Stops listening and removes a Unix socket's file (only in the process
  // that created it). Idempotent, non-blocking.
  void close() noexcept {
    if (!fd_) return;
    fd_.reset();
    if (!unix_path_.empty() && owner_pid_ == ::getpid()) ::unlink(unix_path_.c_str());
  }
  bool closed() const noexcept { return !fd_; }

 private:
  Connection accept_until(detail::Clock::time_point deadline) {
    if (!fd_) throw ProcessError("mproc: Listener.accept(): the listener is closed");
    detail::UniqueFd client = detail::accept_until(fd_.get(), deadline);
    if (!client) throw TimeoutError("mproc: Listener.accept(): no client connected in time");
    return detail::authenticated_connection(std::move(client), authkey_, true, handshake_timeout_);
  }

  detail::UniqueFd fd_;
  std::string authkey_;
  std::string address_;
  std::string unix_path_;
  pid_t owner_pid_ = 0;
  detail::Clock::duration handshake_timeout_ = detail::kHandshakeTimeout;
};

// Connects to a Listener's address (Python:
// multiprocessing.connection.Client) and, with a non-empty `authkey`, runs
// the handshake; `timeout` bounds the connect and each handshake step.
// Blocks. Throws ValueError for a malformed address, TimeoutError if the
// connect timed out, AuthenticationError if the handshake failed, EOFError
// if the listener closed the connection during it, ProcessError if the
// connection was refused or the path does not exist.
template <class Rep = std::int64_t, class Period = std::milli>
[[nodiscard]] Connection Client(std::string_view address, std::string_view authkey = {},
                                std::chrono::duration<Rep, Period> timeout = detail::kHandshakeTimeout) {
  const detail::SocketAddress a = detail::parse_socket_address(address);
  detail::UniqueFd fd = detail::connect_until(a, detail::deadline_after(timeout));
  return detail::authenticated_connection(std::move(fd), authkey, false,
                                          std::chrono::duration_cast<detail::Clock::duration>(timeout));
}

}  // namespace connection

}  // namespace mproc
