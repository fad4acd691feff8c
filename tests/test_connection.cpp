// Tests of <mproc/connection.hpp>: Pipe and Connection between processes — send/recv, bytes, polling,
// timeouts, end of file, malformed and oversized messages, buffers that follow what arrives.
#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mproc/connection.hpp>
#include <mproc/process.hpp>
#include <mproc/queue.hpp>
#include <mproc/threading.hpp>

#include "catch.hpp"
#include "child.hpp"

namespace mp = mproc;
using namespace std::chrono_literals;
using mproc_test::MessageContains;
using Clock = std::chrono::steady_clock;

namespace {

std::string as_string(const std::vector<std::byte>& bytes) {
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

// Deterministic bytes, different for every (seed, index).
std::vector<std::byte> pattern(std::size_t n, unsigned seed) {
  std::vector<std::byte> v(n);
  std::uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<std::byte>(x >> 24);
  }
  return v;
}

bool no_children() {
  errno = 0;
  return ::waitpid(-1, nullptr, WNOHANG) == -1 && errno == ECHILD;
}

std::size_t open_fd_count() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

void raw_write(int fd, const void* data, std::size_t n) { REQUIRE(::write(fd, data, n) == static_cast<ssize_t>(n)); }

bool sigpipe_pending() {
  sigset_t pending;
  sigemptyset(&pending);
  ::sigpending(&pending);
  return sigismember(&pending, SIGPIPE) == 1;
}

bool sigpipe_blocked() {
  sigset_t mask;
  ::pthread_sigmask(SIG_SETMASK, nullptr, &mask);
  return sigismember(&mask, SIGPIPE) == 1;
}

// Runs `fn` on a thread, ignoring the mproc errors it ends with; the
// destructor closes `mine`, the test's end (which unblocks a peer the test
// stopped serving), and joins the thread.
class PeerThread {
 public:
  template <class F>
  PeerThread(mp::Connection& mine, F fn)
      : mine_(mine), thread_([fn = std::move(fn)]() mutable {
          try {
            fn();
          } catch (const mp::ProcessError&) {
          }
        }) {}
  PeerThread(const PeerThread&) = delete;
  PeerThread& operator=(const PeerThread&) = delete;
  ~PeerThread() {
    mine_.close();
    thread_.join();
  }

 private:
  mp::Connection& mine_;
  std::thread thread_;
};

// Bytes of [p, p + n) resident in memory.
std::size_t resident_bytes(const void* p, std::size_t n) {
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto first = reinterpret_cast<std::uintptr_t>(p) / page * page;
  const std::size_t pages = (reinterpret_cast<std::uintptr_t>(p) + n - first + page - 1) / page;
  std::vector<unsigned char> in_core(pages);
  REQUIRE(::mincore(reinterpret_cast<void*>(first), pages * page, in_core.data()) == 0);
  std::size_t resident = 0;
  for (unsigned char c : in_core) resident += (c & 1) ? page : 0;
  return resident;
}

}  // namespace

TEST_CASE("Pipe(): duplex ends both ways, simplex receive end first") {
  auto [a, b] = mp::Pipe();
  CHECK(a.readable());
  CHECK(a.writable());
  CHECK(b.readable());
  CHECK(b.writable());
  a.send_bytes("to b");
  b.send_bytes("to a");
  CHECK(as_string(b.recv_bytes()) == "to b");
  CHECK(as_string(a.recv_bytes()) == "to a");

  auto [r, w] = mp::Pipe(false);
  CHECK(r.readable());
  CHECK_FALSE(r.writable());
  CHECK_FALSE(w.readable());
  CHECK(w.writable());
  w.send_bytes("one way");
  CHECK(as_string(r.recv_bytes()) == "one way");
  for (auto* c : {&a, &b, &r, &w}) {
    const int flags = ::fcntl(c->fileno(), F_GETFD);
    CHECK((flags & FD_CLOEXEC) != 0);
  }
}

TEST_CASE("send_bytes/recv_bytes across processes: 0 B, 1 B, 64 KiB, 8 MiB") {
  const bool duplex = GENERATE(true, false);
  CAPTURE(duplex);
  const std::vector<std::size_t> sizes{0, 1, 64 * 1024, 8 * 1024 * 1024};
  // to_child/from_child are the parent's ends; the child gets the others.
  mp::Connection to_child, child_in, child_out, from_child;
  if (duplex) {
    std::tie(to_child, child_in) = mp::Pipe(true);
  } else {
    std::tie(child_in, to_child) = mp::Pipe(false);
    std::tie(from_child, child_out) = mp::Pipe(false);
  }
  mp::Process echo([&] {
    to_child.close();
    from_child.close();
    mp::Connection& out = duplex ? child_in : child_out;
    std::vector<std::byte> buf;
    for (;;) {
      try {
        child_in.recv_bytes_into(buf);
      } catch (const mp::EOFError&) {
        return 0;
      }
      out.send_bytes(buf);
    }
  });
  echo.start();
  child_in.close();
  child_out.close();
  mp::Connection& in = duplex ? to_child : from_child;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const auto sent = pattern(sizes[i], static_cast<unsigned>(i));
    to_child.send_bytes(sent);
    REQUIRE(in.poll(30s));
    const auto got = in.recv_bytes();
    REQUIRE(got.size() == sizes[i]);
    CHECK(got == sent);
  }
  to_child.close();
  REQUIRE(echo.join(30s));
  CHECK(echo.exitcode() == 0);
  if (!duplex) CHECK_THROWS_AS(in.recv_bytes(), mp::EOFError);  // the echo's end is gone
  CHECK(no_children());
}

TEST_CASE("recv_bytes_into reuses the buffer's capacity") {
  auto [a, b] = mp::Pipe();
  std::vector<std::byte> buf;
  buf.reserve(1 << 20);
  const auto* data = buf.data();
  a.send_bytes("0123456789");
  CHECK(b.recv_bytes_into(buf) == 10);
  CHECK(as_string(buf) == "0123456789");
  CHECK(buf.data() == data);
  a.send_bytes("");
  CHECK(b.recv_bytes_into(buf) == 0);
  CHECK(buf.empty());
  CHECK(buf.capacity() >= std::size_t{1} << 20);
}

TEST_CASE("recv_bytes_into a fixed buffer at an offset, and BufferTooShort holding the message") {
  auto [a, b] = mp::Pipe();
  std::array<std::byte, 8> buf{};
  a.send_bytes("abc");
  CHECK(b.recv_bytes_into(std::span<std::byte>(buf), 5) == 3);
  CHECK(std::string(reinterpret_cast<const char*>(buf.data()) + 5, 3) == "abc");
  CHECK(buf[0] == std::byte{0});

  a.send_bytes("0123456");  // 7 bytes into the 4 after offset 4
  try {
    (void)b.recv_bytes_into(std::span<std::byte>(buf), 4);
    FAIL("expected BufferTooShort");
  } catch (const mp::BufferTooShort& e) {
    CHECK(as_string(e.message()) == "0123456");
    CHECK_THAT(std::string(e.what()),
               mproc_test::Contains("a message of 7 bytes does not fit in the buffer's 4 bytes"));
  }
  // The stream goes on, large messages (read past the read-ahead) included.
  std::vector<std::byte> big(300000, std::byte{7});
  std::thread sender([&end = a, &big] { end.send_bytes(big); });  // more than the pipe holds
  std::vector<std::byte> room(400000);
  CHECK(b.recv_bytes_into(std::span<std::byte>(room), 100) == big.size());
  sender.join();
  CHECK(std::equal(big.begin(), big.end(), room.begin() + 100));
  CHECK(room[99] == std::byte{0});

  REQUIRE_THROWS_MATCHES(b.recv_bytes_into(std::span<std::byte>(buf), 9), mp::ValueError,
                         MessageContains("offset 9 is beyond the buffer's 8 bytes"));
  a.send_bytes("xy");
  CHECK(b.recv_bytes_into(std::span<std::byte>(buf), 8 - 2) == 2);  // nothing was read by the refused call
  a.close();
  REQUIRE_THROWS_AS(b.recv_bytes_into(std::span<std::byte>(buf)), mp::EOFError);
}

TEST_CASE("poll() waits up to its timeout, sees data and end of file") {
  mp::Connection parent_end, child_end;
  std::tie(parent_end, child_end) = mp::Pipe();
  CHECK_FALSE(parent_end.poll());
  auto t0 = Clock::now();
  CHECK_FALSE(parent_end.poll(50ms));
  CHECK(Clock::now() - t0 >= 50ms);
  CHECK(Clock::now() - t0 < 2s);

  mp::Process p([&] {
    parent_end.close();
    std::this_thread::sleep_for(100ms);
    child_end.send_bytes("late");
  });
  p.start();
  child_end.close();
  t0 = Clock::now();
  REQUIRE(parent_end.poll(30s));
  CHECK(Clock::now() - t0 >= 90ms);
  CHECK(parent_end.poll());  // still there until received
  CHECK(as_string(parent_end.recv_bytes()) == "late");
  REQUIRE(p.join(10s));
  // The peer is gone: poll() reports it (recv would not block) and recv throws.
  CHECK(parent_end.poll(5s));
  REQUIRE_THROWS_MATCHES(parent_end.recv_bytes(), mp::EOFError,
                         MessageContains("end of file (the other end was closed)"));
  CHECK(no_children());
}

TEST_CASE("read-ahead: queued messages of mixed sizes arrive whole and in order") {
  const bool duplex = GENERATE(true, false);
  auto [r, w] = mp::Pipe(duplex);
  // Small messages queue up in the kernel, so one read() takes several; a
  // large one then starts inside the read-ahead buffer and ends past it.
  const auto big = pattern(200 * 1024, 7);
  mp::Process p([&] {
    r.close();
    for (unsigned i = 0; i < 20; ++i) w.send_bytes(pattern(i * 37, i));
    w.send(std::string("typed"));
    w.send_bytes(big);
    for (unsigned i = 0; i < 3; ++i) w.send_bytes(pattern(5000, 100 + i));
  });
  p.start();
  w.close();
  for (unsigned i = 0; i < 20; ++i) {
    CHECK(r.poll(10s));  // buffered, or in the kernel
    CHECK(r.recv_bytes() == pattern(i * 37, i));
  }
  CHECK(r.recv<std::string>() == "typed");
  CHECK(r.recv_bytes() == big);
  for (unsigned i = 0; i < 3; ++i) CHECK(r.recv_bytes() == pattern(5000, 100 + i));
  CHECK_THROWS_AS(r.recv_bytes(), mp::EOFError);
  REQUIRE(p.join(30s));
  CHECK(p.exitcode() == 0);
}

TEST_CASE("EOFError after the peer closed and the channel drained, every time") {
  const bool duplex = GENERATE(true, false);
  auto [r, w] = mp::Pipe(duplex);
  w.send_bytes("first");
  w.send_bytes("second");
  w.close();
  CHECK(w.closed());
  CHECK(as_string(r.recv_bytes()) == "first");
  CHECK(as_string(r.recv_bytes()) == "second");
  CHECK_THROWS_AS(r.recv_bytes(), mp::EOFError);
  CHECK_THROWS_AS(r.recv_bytes(), mp::EOFError);
}

TEST_CASE("a peer killed by SIGKILL gives EOFError, not a hang") {
  mp::Connection parent_end, child_end;
  std::tie(parent_end, child_end) = mp::Pipe();
  mp::Process p([&] {
    parent_end.close();
    child_end.send_bytes("alive");
    for (;;) ::pause();
  });
  p.start();
  child_end.close();
  REQUIRE(parent_end.poll(30s));
  CHECK(as_string(parent_end.recv_bytes()) == "alive");
  p.kill();
  REQUIRE(p.join(10s));
  CHECK(p.exitcode() == -SIGKILL);
  REQUIRE(parent_end.poll(5s));
  CHECK_THROWS_AS(parent_end.recv_bytes(), mp::EOFError);
}

TEST_CASE("a peer dying mid-message gives a 'truncated' EOFError, then the end is unusable") {
  const bool duplex = GENERATE(true, false);
  CAPTURE(duplex);
  mp::Connection r, w;
  std::tie(r, w) = mp::Pipe(duplex);
  mp::Process p([&] {
    r.close();
    const std::uint64_t claimed = 1000;
    (void)::write(w.fileno(), &claimed, sizeof claimed);
    (void)::write(w.fileno(), "only ten b", 10);
    ::raise(SIGKILL);
  });
  p.start();
  w.close();
  REQUIRE(p.join(10s));
  REQUIRE(r.poll(5s));
  REQUIRE_THROWS_MATCHES(r.recv_bytes(), mp::EOFError,
                         MessageContains("truncated message: end of file after 10 of 1000 bytes"));
  REQUIRE_THROWS_MATCHES(r.recv_bytes(), mp::ProcessError,
                         MessageContains("unusable after an earlier malformed or truncated message"));
  CHECK(r.poll());  // recv would not block (it throws)
}

TEST_CASE("a truncated header then close is an error, not a hang") {
  auto [r, w] = mp::Pipe(false);
  raw_write(w.fileno(), "abc", 3);
  w.close();
  REQUIRE_THROWS_MATCHES(r.recv_bytes(), mp::EOFError,
                         MessageContains("truncated message: end of file inside a message header"));
}

TEST_CASE("an oversized length prefix is refused without allocating it") {
  const bool duplex = GENERATE(true, false);
  auto [r, w] = mp::Pipe(duplex);
  const std::uint64_t bogus = ~std::uint64_t{0};
  raw_write(w.fileno(), &bogus, sizeof bogus);
  raw_write(w.fileno(), "junk", 4);
  REQUIRE_THROWS_MATCHES(
      r.recv_bytes(), mp::ProcessError,
      MessageContains("message of 18446744073709551615 bytes exceeds max_message_size (1073741824)"));
  REQUIRE_THROWS_MATCHES(r.recv_bytes(), mp::ProcessError, MessageContains("unusable"));
}

TEST_CASE("a length under the limit but never delivered costs no huge allocation") {
  // 900 MiB claimed, 4 bytes delivered: recv allocates at most 16 MiB ahead
  // of the data it has actually received.
  auto [r, w] = mp::Pipe(false);
  const std::uint64_t claimed = std::uint64_t{900} << 20;
  raw_write(w.fileno(), &claimed, sizeof claimed);
  raw_write(w.fileno(), "four", 4);
  w.close();
  std::vector<std::byte> buf;
  REQUIRE_THROWS_MATCHES(r.recv_bytes_into(buf), mp::EOFError, MessageContains("after 4 of 943718400 bytes"));
  CHECK(buf.capacity() <= std::size_t{16} << 20);
}

TEST_CASE("a length claimed but never delivered touches no memory for it, and a broken end frees its buffer (#17)",
          "[connection][failure-model]") {
  const std::uint64_t claimed = std::uint64_t{900} << 20;
  SECTION("recv_bytes_into: at most 1 MiB of the reserved room is touched") {
    // In a child, with large blocks always fresh from mmap: resident pages
    // are the ones recv touched, not ones an earlier test left behind.
    CHECK(mproc_test::run_in_child([&] {
            ::mallopt(M_MMAP_THRESHOLD, 1 << 20);
            auto [r, w] = mp::Pipe(false);
            raw_write(w.fileno(), &claimed, sizeof claimed);
            raw_write(w.fileno(), "four", 4);
            w.close();
            std::vector<std::byte> buf;
            try {
              r.recv_bytes_into(buf);
              return 3;
            } catch (const mp::EOFError&) {
            }
            if (buf.capacity() > std::size_t{16} << 20) return 4;
            const std::size_t touched = resident_bytes(buf.data(), buf.capacity());
            if (touched > std::size_t{1} << 21) {
              std::fprintf(stderr, "child: %zu bytes touched for 4 received\n", touched);
              return 5;
            }
            return 0;
          }).exitcode == 0);
  }
  SECTION("recv<T>: the truncated message's buffer is freed with the broken end") {
    auto [r, w] = mp::Pipe(false);
    raw_write(w.fileno(), &claimed, sizeof claimed);
    raw_write(w.fileno(), "four", 4);
    w.close();
    REQUIRE_THROWS_MATCHES(r.recv<std::vector<char>>(), mp::EOFError, MessageContains("after 4 of 943718400 bytes"));
    CHECK(mp::detail::ConnectionAccess::receive_capacity(r) == 0);
  }
}

TEST_CASE("recv<T>: a buffer grown for one large message is released once decoded, reused over a run of them (#17)",
          "[connection][failure-model]") {
  using Access = mp::detail::ConnectionAccess;
  constexpr std::size_t kBig = std::size_t{32} << 20;
  constexpr std::size_t kKept = std::size_t{1} << 20;
  const std::vector<char> big(kBig, 'x');
  const std::vector<char> small(100, 's');
  auto [a, b] = mp::Pipe();
  PeerThread sender(b, [&a, &big, &small] {
    for (const auto* m : {&small, &big, &small, &big, &big, &big, &small, &big, &small}) a.send(*m);
  });
  const auto next = [&b] {
    REQUIRE(b.poll(30s));
    return b.recv<std::vector<char>>();
  };
  CHECK(next() == small);
  CHECK(Access::receive_capacity(b) <= kKept);
  CHECK(next() == big);  // a lone large message: its buffer goes as soon as it is decoded
  CHECK(Access::receive_capacity(b) <= kKept);
  CHECK(next() == small);
  CHECK(Access::receive_capacity(b) <= kKept);
  CHECK(next() == big);  // a run of large messages: the first one cannot know
  CHECK(Access::receive_capacity(b) <= kKept);
  CHECK(next() == big);  // the second keeps its buffer...
  const std::size_t run_capacity = Access::receive_capacity(b);
  CHECK(run_capacity >= kBig);
  CHECK(next() == big);  // ...which the third reuses
  CHECK(Access::receive_capacity(b) == run_capacity);
  CHECK(next() == small);  // and the next small message releases it
  CHECK(Access::receive_capacity(b) <= kKept);
}

TEST_CASE("send(): an encoding buffer grown for one large message is released after it, close() frees all (#17)",
          "[connection][failure-model]") {
  using Access = mp::detail::ConnectionAccess;
  constexpr std::size_t kKept = std::size_t{1} << 20;
  const std::vector<std::string> many(200000, std::string(24, 'm'));  // ~6 MiB of small parts to copy
  const std::vector<std::string> few{"a", "b"};
  auto [a, b] = mp::Pipe();
  PeerThread receiver(a, [&b] {
    for (;;) b.recv<std::vector<std::string>>();
  });
  a.send(few);
  CHECK(Access::send_capacity(a) <= kKept);
  a.send(many);  // alone: its buffer goes once sent
  CHECK(Access::send_capacity(a) <= kKept);
  a.send(few);
  a.send(many);
  a.send(many);  // a run: kept
  CHECK(Access::send_capacity(a) > std::size_t{4} << 20);
  a.send(few);  // the run is over
  CHECK(Access::send_capacity(a) <= kKept);
  a.send(many);
  a.send(many);
  REQUIRE(Access::send_capacity(a) > std::size_t{4} << 20);
  a.close();
  CHECK(Access::send_capacity(a) == 0);
  CHECK(Access::receive_capacity(a) == 0);
}

TEST_CASE("max_message_size is enforced on both sides") {
  auto [a, b] = mp::Pipe();
  a.set_max_message_size(8);
  b.set_max_message_size(4);
  CHECK(a.max_message_size() == 8);
  a.send_bytes("12345678");
  REQUIRE_THROWS_MATCHES(a.send_bytes("123456789"), mp::ProcessError,
                         MessageContains("Connection.send_bytes(): message of 9 bytes exceeds "
                                         "max_message_size (8)"));
  REQUIRE_THROWS_MATCHES(b.recv_bytes(), mp::ProcessError,
                         MessageContains("message of 8 bytes exceeds max_message_size (4)"));
}

TEST_CASE("sending to a vanished peer throws EOFError and raises no SIGPIPE") {
  const bool duplex = GENERATE(true, false);
  CAPTURE(duplex);
  const bool sigpipe_was_blocked = sigpipe_blocked();
  {
    auto [r, w] = mp::Pipe(duplex);
    r.close();
    // SIGPIPE's default action would kill this test process.
    REQUIRE_THROWS_MATCHES(w.send_bytes("anyone?"), mp::EOFError, MessageContains("send_bytes(): broken pipe"));
    REQUIRE_THROWS_AS(w.send_bytes(std::vector<std::byte>(1 << 20)), mp::EOFError);
  }
  CHECK_FALSE(sigpipe_pending());
  CHECK(sigpipe_blocked() == sigpipe_was_blocked);  // the mask is restored
  {
    // The same with a peer process that died.
    mp::Connection mine, theirs;
    std::tie(mine, theirs) = mp::Pipe(duplex);
    if (!duplex) std::swap(mine, theirs);  // we write, the child holds the receive end
    mp::Process p([&] { mine.close(); });
    p.start();
    theirs.close();
    REQUIRE(p.join(10s));
    REQUIRE_THROWS_AS(mine.send_bytes("x"), mp::EOFError);
  }
  CHECK_FALSE(sigpipe_pending());
  CHECK(no_children());
}

TEST_CASE("a caller's own blocked SIGPIPE, pending or not, is left as it was") {
  const auto result = mproc_test::run_in_child([] {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
    auto [r, w] = mp::Pipe(false);
    r.close();
    ::raise(SIGPIPE);  // the caller's own, pending
    try {
      w.send_bytes("x");
      return 1;
    } catch (const mp::EOFError&) {
    }
    if (!sigpipe_pending() || !sigpipe_blocked()) return 2;
    const timespec zero{0, 0};
    if (::sigtimedwait(&set, nullptr, &zero) != SIGPIPE) return 3;
    try {
      w.send_bytes("x");
      return 4;
    } catch (const mp::EOFError&) {
    }
    // Not pending before the call: the SIGPIPE the write raised was dropped.
    if (sigpipe_pending() || !sigpipe_blocked()) return 5;
    return 0;
  });
  CHECK_FALSE(result.timed_out);
  CHECK(result.exitcode == 0);
}

TEST_CASE("direction misuse on a simplex Pipe throws") {
  auto [r, w] = mp::Pipe(false);
  REQUIRE_THROWS_MATCHES(r.send_bytes("x"), mp::ProcessError,
                         MessageContains("Connection.send_bytes(): connection is read-only"));
  REQUIRE_THROWS_MATCHES(w.recv_bytes(), mp::ProcessError,
                         MessageContains("Connection.recv_bytes(): connection is write-only"));
  REQUIRE_THROWS_MATCHES(w.poll(), mp::ProcessError, MessageContains("Connection.poll(): connection is write-only"));
  std::vector<std::byte> buf;
  REQUIRE_THROWS_AS(w.recv_bytes_into(buf), mp::ProcessError);
}

TEST_CASE("use after close throws ProcessError naming the call") {
  auto [a, b] = mp::Pipe();
  a.close();
  a.close();  // idempotent
  CHECK(a.closed());
  CHECK_FALSE(b.closed());
  REQUIRE_THROWS_MATCHES(a.send_bytes("x"), mp::ProcessError,
                         MessageContains("Connection.send_bytes() on a closed connection"));
  REQUIRE_THROWS_MATCHES(a.recv_bytes(), mp::ProcessError,
                         MessageContains("Connection.recv_bytes() on a closed connection"));
  REQUIRE_THROWS_MATCHES(a.poll(), mp::ProcessError, MessageContains("Connection.poll() on a closed connection"));
  REQUIRE_THROWS_MATCHES(a.fileno(), mp::ProcessError, MessageContains("Connection.fileno() on a closed connection"));
  mp::Connection none;
  CHECK(none.closed());
  REQUIRE_THROWS_AS(none.recv_bytes(), mp::ProcessError);
  mp::Connection moved = std::move(b);
  CHECK(b.closed());
  CHECK_FALSE(moved.closed());
}

TEST_CASE("Connection(fd) adopts an fd and validates its arguments") {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  mp::Connection r(fds[0], true, false);
  mp::Connection w(fds[1], false, true);
  w.send_bytes("adopted");
  CHECK(as_string(r.recv_bytes()) == "adopted");
  REQUIRE_THROWS_MATCHES(mp::Connection(-1), mp::ProcessError, MessageContains("-1 is not an open file descriptor"));
  int spare = ::dup(fds[0]);
  REQUIRE_THROWS_MATCHES(mp::Connection(spare, false, false), mp::ProcessError,
                         MessageContains("at least one of readable and writable"));
  CHECK(::close(spare) == 0);  // not taken over when the constructor throws
}

TEST_CASE("one thread sends while another receives on the same duplex end") {
  mp::Connection parent_end, child_end;
  std::tie(parent_end, child_end) = mp::Pipe();
  mp::Process echo([&] {
    parent_end.close();
    std::vector<std::byte> buf;
    try {
      for (;;) {
        child_end.recv_bytes_into(buf);
        child_end.send_bytes(buf);
      }
    } catch (const mp::EOFError&) {
    }
  });
  echo.start();
  child_end.close();
  constexpr int n = 2000;
  std::thread sender([&] {
    for (int i = 0; i < n; ++i) parent_end.send_bytes(std::to_string(i) + std::string(100, 'x'));
  });
  bool in_order = true;
  for (int i = 0; i < n; ++i) {
    if (!parent_end.poll(30s)) break;
    in_order = in_order && as_string(parent_end.recv_bytes()) == std::to_string(i) + std::string(100, 'x');
  }
  sender.join();
  CHECK(in_order);
  parent_end.close();
  REQUIRE(echo.join(10s));
  CHECK(echo.exitcode() == 0);
}

TEST_CASE("R4: 1000 x Pipe create/use/close leaks no fd") {
  const std::size_t before = open_fd_count();
  for (int i = 0; i < 1000; ++i) {
    auto [a, b] = mp::Pipe(i % 2 == 0);
    b.send_bytes("x");
    REQUIRE(a.recv_bytes().size() == 1);
    if (i % 3 == 0) a.close();
  }
  CHECK(open_fd_count() == before);
}

// ------------------------------------------------------------ typed send/recv

namespace {
struct Sample {
  std::string label;
  std::vector<float> features;
  std::map<std::string, int> counts;
  bool operator==(const Sample&) const = default;
};
struct Point {  // trivially copyable: copied bitwise
  double x, y;
  bool operator==(const Point&) const = default;
};
}  // namespace
MPROC_SERIALIZE(Sample, label, features, counts);

TEST_CASE("send/recv carry typed values across processes") {
  const bool duplex = GENERATE(true, false);
  CAPTURE(duplex);
  mp::Connection r, w;
  std::tie(r, w) = mp::Pipe(duplex);
  const Sample sample{"cat", {0.5f, 1.5f}, {{"a", 1}, {"b", 2}}};
  std::vector<double> big(1 << 20);  // 8 MiB: sent in place (gather), one writev
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<double>(i) * 0.5;
  mp::Process p([&] {
    r.close();
    w.send(std::vector<int>{1, 2, 3});
    w.send(std::string("hello"));
    w.send(sample);
    w.send(std::make_tuple(Point{1, 2}, std::optional<int>{}, std::int64_t{-7}));
    w.send(big);
    w.send(std::vector<double>{});
  });
  p.start();
  w.close();
  CHECK(r.recv<std::vector<int>>() == std::vector<int>{1, 2, 3});
  CHECK(r.recv<std::string>() == "hello");
  CHECK(r.recv<Sample>() == sample);
  const auto t = r.recv<std::tuple<Point, std::optional<int>, std::int64_t>>();
  CHECK(std::get<0>(t) == Point{1, 2});
  CHECK_FALSE(std::get<1>(t).has_value());
  CHECK(std::get<2>(t) == -7);
  CHECK(r.recv<std::vector<double>>() == big);
  CHECK(r.recv<std::vector<double>>().empty());
  CHECK_THROWS_AS(r.recv<int>(), mp::EOFError);
  REQUIRE(p.join(30s));
  CHECK(p.exitcode() == 0);
}

TEST_CASE("recv<T> of another type or of raw bytes throws and the stream goes on") {
  auto [a, b] = mp::Pipe();
  a.send(std::vector<int>{1, 2, 3});
  REQUIRE_THROWS_MATCHES(b.recv<std::vector<double>>(), mp::ProcessError,
                         MessageContains("mproc: Connection.recv(): type mismatch: expected a frame of"));
  a.send_bytes("not a frame at all, just bytes");
  REQUIRE_THROWS_MATCHES(b.recv<std::string>(), mp::ProcessError,
                         MessageContains("mproc: Connection.recv(): not an mproc frame"));
  // A valid frame with a corrupted payload size.
  auto frame = mp::dumps(std::string("abc"));
  frame[16] = std::byte{99};
  a.send_bytes(frame);
  REQUIRE_THROWS_MATCHES(b.recv<std::string>(), mp::ProcessError,
                         MessageContains("mproc: Connection.recv(): truncated frame"));
  // Every mismatch consumed exactly its message: the next one is intact.
  a.send(std::string("still in sync"));
  CHECK(b.recv<std::string>() == "still in sync");
  // send() and send_bytes(dumps()) are the same message.
  a.send_bytes(mp::dumps(Point{3, 4}));
  CHECK(b.recv<Point>() == Point{3, 4});
}

TEST_CASE("send on a closed or read-only end fails before encoding") {
  auto [r, w] = mp::Pipe(false);
  REQUIRE_THROWS_MATCHES(r.send(1), mp::ProcessError, MessageContains("Connection.send(): connection is read-only"));
  REQUIRE_THROWS_MATCHES(w.recv<int>(), mp::ProcessError,
                         MessageContains("Connection.recv(): connection is write-only"));
  w.close();
  REQUIRE_THROWS_MATCHES(w.send(1), mp::ProcessError, MessageContains("Connection.send() on a closed connection"));
  w = mp::Connection();
  auto [r2, w2] = mp::Pipe(false);
  r2.close();
  REQUIRE_THROWS_MATCHES(w2.send(std::vector<double>(1 << 20)), mp::EOFError,
                         MessageContains("Connection.send(): broken pipe"));
}

// ------------------------------------------------------------ connection::wait

namespace {
void exit_when_told(mp::Connection c) { (void)c.recv<int>(); }
}  // namespace

TEST_CASE("connection::wait returns the ready Connections and sentinels, or nothing at the timeout") {
  auto [a, b] = mp::Pipe();
  auto [c, d] = mp::Pipe(false);  // c reads, d writes
  const auto t0 = Clock::now();
  CHECK(mp::connection::wait({a, c}, 50ms).empty());
  CHECK(Clock::now() - t0 >= 45ms);

  d.send(std::string("to c"));
  CHECK(mp::connection::wait({a, c}, 10s) == std::vector<std::size_t>{1});
  b.send(7);
  CHECK(mp::connection::wait({a, c}, 10s) == std::vector<std::size_t>{0, 1});
  CHECK(a.recv<int>() == 7);
  CHECK(c.recv<std::string>() == "to c");
  CHECK(mp::connection::wait({a, c}, 0ms).empty());

  // A peer that is gone makes its end ready (recv then throws EOFError).
  d.close();
  CHECK(mp::connection::wait({a, c}, 10s) == std::vector<std::size_t>{1});
  CHECK_THROWS_AS(c.recv<int>(), mp::EOFError);

  // A Process's sentinel: ready once it has exited.
  auto [keep, told] = mp::Pipe();
  mp::Process p(exit_when_told, std::move(told));
  CHECK_FALSE(p.sentinel().has_value());  // not started
  p.start();
  REQUIRE(p.sentinel().has_value());
  const int sentinel = *p.sentinel();
  CHECK(mp::connection::wait({a, sentinel}, 30ms).empty());
  keep.send(1);
  CHECK(mp::connection::wait({a, sentinel}, 10s) == std::vector<std::size_t>{1});
  REQUIRE(p.join(10s));
  CHECK(p.exitcode() == 0);
}

namespace {
void put_when_told(mp::Connection c, mp::Queue<int> q) {
  (void)c.recv<int>();
  q.put(5);
}
}  // namespace

TEST_CASE("connection::wait watches queues too: an item put by another process, a shut-down queue") {
  auto [a, b] = mp::Pipe();
  mp::Queue<int> q;
  const auto t0 = Clock::now();
  CHECK(mp::connection::wait({a, q}, 50ms).empty());
  CHECK(Clock::now() - t0 >= 45ms);

  auto [go, told] = mp::Pipe();
  mp::Process p(put_when_told, std::move(told), q);
  p.start();
  go.send(1);
  CHECK(mp::connection::wait({a, q}, 10s) == std::vector<std::size_t>{1});
  CHECK(q.get(1s) == 5);
  REQUIRE(p.join(10s));
  CHECK(p.exitcode() == 0);

  mp::threading::Queue<int> tq;
  mp::SimpleQueue<int> sq;
  CHECK(mp::connection::wait({tq, sq}, 0ms).empty());
  tq.put(1);
  b.send(2);
  CHECK(mp::connection::wait({a, tq, sq}, 10s) == std::vector<std::size_t>{0, 1});
  sq.shutdown();  // a get would not block now: it throws ShutDown
  CHECK(mp::connection::wait({sq}, 10s) == std::vector<std::size_t>{0});
  CHECK(a.recv<int>() == 2);
}

TEST_CASE("connection::wait refuses a closed or write-only Connection and a bad descriptor") {
  auto [r, w] = mp::Pipe(false);
  CHECK_THROWS_MATCHES(mp::connection::wait({w}, 0ms), mp::ProcessError, MessageContains("write-only"));
  CHECK_THROWS_MATCHES(mp::connection::wait({-1}, 0ms), mp::ProcessError,
                       MessageContains("connection::wait(): descriptor -1 is invalid"));
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  ::close(fds[0]);
  ::close(fds[1]);
  CHECK_THROWS_MATCHES(mp::connection::wait({fds[0]}, 1s), mp::ProcessError, MessageContains("is not open"));
  r.close();
  CHECK_THROWS_AS(mp::connection::wait({r}, 0ms), mp::ProcessError);
}
