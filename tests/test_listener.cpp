// Tests of <mproc/listener.hpp>: connection::Listener / Client over Unix-domain and TCP (loopback)
// sockets, the authkey handshake (right and wrong keys, garbage, oversized, truncated and stalled
// handshake frames, each failing with AuthenticationError within its timeout), addresses, and the
// SHA-256 / HMAC-SHA256 underneath checked against the FIPS 180-4 and RFC 4231 test vectors.
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <mproc/listener.hpp>
#include <mproc/pool.hpp>
#include <mproc/process.hpp>

#include "catch.hpp"

namespace mp = mproc;
namespace mc = mproc::connection;
using namespace std::chrono_literals;
using Catch::Matchers::Contains;
using mproc_test::MessageContains;
using Clock = std::chrono::steady_clock;

namespace {

std::string hex(std::span<const std::byte> bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (std::byte b : bytes) {
    out += digits[static_cast<unsigned>(b) >> 4];
    out += digits[static_cast<unsigned>(b) & 15];
  }
  return out;
}
std::vector<std::byte> bytes_of(std::string_view s) {
  const auto b = std::as_bytes(std::span(s));
  return {b.begin(), b.end()};
}
std::vector<std::byte> repeated(unsigned char c, std::size_t n) { return std::vector<std::byte>(n, std::byte{c}); }

// A fresh directory for Unix socket files, removed at the end of the test.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "mproc-listener-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string socket(const char* name) const { return (path / name).string(); }
};

// A raw client for sending the listener what an attacker would: connects
// to a Unix socket, writes bytes as given.
struct RawClient {
  int fd = -1;
  explicit RawClient(const std::string& path) {
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  }
  ~RawClient() { close(); }
  void close() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  void write(const void* data, std::size_t n) const { REQUIRE(::send(fd, data, n, MSG_NOSIGNAL) == ssize_t(n)); }
  void write_length(std::uint64_t n) const { write(&n, sizeof n); }
  // Reads the listener's challenge frame (8-byte length + "#CHALLENGE#{sha256}" + 40 bytes): the
  // listener then waits for the answer.
  void read_challenge() const {
    const timeval tv{10, 0};
    REQUIRE(::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    char frame[8 + 59];
    REQUIRE(::recv(fd, frame, sizeof frame, MSG_WAITALL) == ssize_t(sizeof frame));
    CHECK(std::string_view(frame + 8, 19) == "#CHALLENGE#{sha256}");
  }
};

// Runs listener.accept() on a thread; wait() returns what it threw ("accepted" if nothing),
// its message prefixed with "(EOFError) " for an EOFError and with "(not AuthenticationError) "
// for anything but the two.
struct AcceptInBackground {
  std::string outcome;
  std::thread thread;
  explicit AcceptInBackground(mc::Listener& listener)
      : thread([this, &listener] {
          try {
            (void)listener.accept(10s);
            outcome = "accepted";
          } catch (const mp::AuthenticationError& e) {
            outcome = e.what();
          } catch (const mp::EOFError& e) {
            outcome = std::string("(EOFError) ") + e.what();
          } catch (const std::exception& e) {
            outcome = std::string("(not AuthenticationError) ") + e.what();
          }
        }) {}
  ~AcceptInBackground() {
    if (thread.joinable()) thread.join();
  }
  std::string wait() {
    thread.join();
    return outcome;
  }
};

int plus_one(int x) { return x + 1; }

}  // namespace

// ------------------------------------------------------------ digests

TEST_CASE("SHA-256 and HMAC-SHA256 match the FIPS 180-4 and RFC 4231 test vectors") {
  using mproc::detail::hmac_sha256;
  using mproc::detail::sha256;
  CHECK(hex(sha256(bytes_of("abc"))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(hex(sha256({})) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(hex(sha256(bytes_of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))) ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(hex(sha256(repeated('a', 1000000))) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // Every padding boundary: 55, 56 and 64 bytes hash as one-shot and piecewise alike.
  for (std::size_t n : {55u, 56u, 63u, 64u, 65u, 119u, 120u}) {
    const auto data = repeated('x', n);
    mproc::detail::Sha256 h;
    h.update(std::span(data).first(n / 3));
    h.update(std::span(data).subspan(n / 3));
    CHECK(hex(h.finish()) == hex(sha256(data)));
  }

  CHECK(hex(hmac_sha256(repeated(0x0b, 20), bytes_of("Hi There"))) ==
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  CHECK(hex(hmac_sha256(bytes_of("Jefe"), bytes_of("what do ya want for nothing?"))) ==
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  CHECK(hex(hmac_sha256(repeated(0xaa, 20), repeated(0xdd, 50))) ==
        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
  std::vector<std::byte> key4;
  for (unsigned i = 1; i <= 25; ++i) key4.push_back(std::byte(i));
  CHECK(hex(hmac_sha256(key4, repeated(0xcd, 50))) ==
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
  CHECK(hex(hmac_sha256(repeated(0xaa, 131), bytes_of("Test Using Larger Than Block-Size Key - Hash Key First"))) ==
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
  CHECK(hex(hmac_sha256(repeated(0xaa, 131),
                        bytes_of("This is a test using a larger than block-size key and a larger than block-size data. "
                                 "The key needs to be hashed before being used by the HMAC algorithm."))) ==
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}

// ------------------------------------------------------------ connecting

TEST_CASE("Listener/Client: a process connects over a Unix socket with the right authkey and talks both ways") {
  TempDir dir;
  const std::string path = dir.socket("app.sock");
  mc::Listener listener(path, "s3cret");
  CHECK(listener.address() == "unix:" + path);
  CHECK(std::filesystem::exists(path));
  mp::Process client([address = listener.address()] {
    mp::Connection c = mc::Client(address, "s3cret");
    c.send(std::vector<int>{1, 2, 3});
    return c.recv<std::string>() == "got 3" ? 0 : 2;
  });
  client.start();
  mp::Connection c = listener.accept(10s);
  CHECK(c.recv<std::vector<int>>() == std::vector<int>{1, 2, 3});
  c.send(std::string("got 3"));
  REQUIRE(client.join(10s));
  CHECK(client.exitcode() == 0);
  listener.close();
  CHECK_FALSE(std::filesystem::exists(path));  // the socket file goes with the listener
  CHECK(listener.closed());
  REQUIRE_THROWS_MATCHES(listener.accept(), mp::ProcessError, MessageContains("the listener is closed"));
}

TEST_CASE("Listener/Client over TCP loopback: port 0 picks a free port, no authkey, IPv4 and the address given back") {
  mc::Listener listener("127.0.0.1:0");
  const std::string address = listener.address();
  REQUIRE(address.rfind("127.0.0.1:", 0) == 0);
  CHECK(address != "127.0.0.1:0");
  std::optional<mp::Connection> client;
  std::thread t([&] { client.emplace(mc::Client(address)); });
  mp::Connection server = listener.accept(10s);
  t.join();
  REQUIRE(client);
  client->send_bytes(std::string_view("ping"));
  const auto got = server.recv_bytes();
  CHECK(std::string(reinterpret_cast<const char*>(got.data()), got.size()) == "ping");
  server.send(3.5);
  CHECK(client->recv<double>() == 3.5);
  // The connection ends cleanly: the peer sees end of file.
  client.reset();
  REQUIRE_THROWS_AS(server.recv_bytes(), mp::EOFError);
}

TEST_CASE("Listener/Client with TCP and an authkey, and a Listener moved from hand to hand") {
  mc::Listener first("localhost:0", "key");
  mc::Listener listener = std::move(first);
  CHECK(first.closed());
  std::optional<mp::Connection> client;
  std::thread t([&] { client.emplace(mc::Client(listener.address(), "key")); });
  mp::Connection server = listener.accept(10s);
  t.join();
  client->send(42);
  CHECK(server.recv<int>() == 42);
}

// ------------------------------------------------------------ authentication failures

TEST_CASE("a wrong authkey fails on both sides with AuthenticationError, and the listener keeps serving") {
  TempDir dir;
  mc::Listener listener(dir.socket("s"), "right key");
  std::string client_error;
  std::thread t([&] {
    try {
      (void)mc::Client(listener.address(), "wrong key");
    } catch (const mp::AuthenticationError& e) {
      client_error = e.what();
    }
  });
  REQUIRE_THROWS_MATCHES(listener.accept(10s), mp::AuthenticationError,
                         MessageContains("the digest received was wrong"));
  t.join();
  CHECK(client_error.find("the digest sent was rejected") != std::string::npos);

  // A client without a key, against a listener with one: it never answers
  // the challenge (it does not read it), so the listener gives up at its timeout.
  listener.set_handshake_timeout(300ms);
  std::optional<mp::Connection> keyless;
  std::thread t2([&] { keyless.emplace(mc::Client(listener.address())); });
  t2.join();
  const auto t0 = Clock::now();
  REQUIRE_THROWS_MATCHES(listener.accept(10s), mp::AuthenticationError,
                         MessageContains("no reply within 300 ms while reading the answer to the challenge"));
  CHECK(Clock::now() - t0 < 5s);

  // ... and then a right client is served as usual.
  std::optional<mp::Connection> good;
  std::thread t3([&] { good.emplace(mc::Client(listener.address(), "right key")); });
  mp::Connection c = listener.accept(10s);
  t3.join();
  good->send(std::string("fine"));
  CHECK(c.recv<std::string>() == "fine");
}

TEST_CASE("a client with an authkey against a listener without one gives up at its timeout") {
  TempDir dir;
  mc::Listener listener(dir.socket("s"));
  std::optional<mp::Connection> server;
  std::thread t([&] { server.emplace(listener.accept(10s)); });  // accepts, sends no challenge
  const auto t0 = Clock::now();
  REQUIRE_THROWS_MATCHES(mc::Client(listener.address(), "key", 300ms), mp::AuthenticationError,
                         MessageContains("no reply within 300 ms while reading the challenge"));
  CHECK(Clock::now() - t0 < 5s);
  t.join();
}

TEST_CASE("handshake frames from an attacker: oversized, garbage, truncated, stalled — refused, nothing decoded") {
  TempDir dir;
  mc::Listener listener(dir.socket("s"), "key");
  listener.set_handshake_timeout(300ms);
  const std::string path = listener.address().substr(5);

  SECTION("a length far beyond the 256 bytes allowed before authentication") {
    AcceptInBackground accepting(listener);
    RawClient raw(path);
    raw.read_challenge();
    raw.write_length(std::uint64_t{1} << 40);
    CHECK_THAT(accepting.wait(),
               Contains("a frame of 1099511627776 bytes while reading the answer to the challenge (at most 256"));
  }
  SECTION("257 bytes: one more than allowed") {
    AcceptInBackground accepting(listener);
    RawClient raw(path);
    raw.read_challenge();
    raw.write_length(257);
    CHECK_THAT(accepting.wait(), Contains("a frame of 257 bytes"));
  }
  SECTION("garbage of the right size") {
    AcceptInBackground accepting(listener);
    RawClient raw(path);
    raw.read_challenge();
    raw.write_length(40);
    const std::vector<char> junk(40, 'z');
    raw.write(junk.data(), junk.size());
    CHECK_THAT(accepting.wait(), Contains("the digest received was wrong"));
  }
  SECTION("a frame cut short, then the connection closed") {
    AcceptInBackground accepting(listener);
    RawClient raw(path);
    raw.read_challenge();
    raw.write_length(40);
    raw.write("{sha256}", 8);
    raw.close();
    CHECK_THAT(accepting.wait(),
               Contains("(EOFError) mproc: connection handshake: the peer closed the connection while reading the "
                        "answer to the challenge"));
  }
  SECTION("a frame cut short, then silence") {
    AcceptInBackground accepting(listener);
    RawClient raw(path);
    raw.read_challenge();
    raw.write("\x28\0\0", 3);  // 3 of the 8 length bytes
    const auto t0 = Clock::now();
    CHECK_THAT(accepting.wait(), Contains("no reply within 300 ms while reading the answer to the challenge"));
    CHECK(Clock::now() - t0 < 5s);
  }
  SECTION("a client that connects, reads the challenge and closes") {
    AcceptInBackground accepting(listener);
    RawClient raw(path);
    raw.read_challenge();
    raw.close();
    CHECK_THAT(accepting.wait(),
               Contains("(EOFError) mproc: connection handshake: the peer closed the connection while reading the "
                        "answer"));
  }
  // After every attack, the listener still authenticates a real client.
  std::optional<mp::Connection> good;
  std::thread t([&] { good.emplace(mc::Client(listener.address(), "key")); });
  mp::Connection c = listener.accept(10s);
  t.join();
  good->send(7);
  CHECK(c.recv<int>() == 7);
}

TEST_CASE("a client answering a listener that is not an mproc peer refuses its oversized or foreign challenge") {
  TempDir dir;
  const std::string path = dir.socket("fake");
  // A fake listener: a plain Listener without a key, whose accepted socket we write to by hand.
  mc::Listener fake(path);
  SECTION("oversized") {
    std::thread t([&] {
      mp::Connection c = fake.accept(10s);
      c.send_bytes(std::vector<std::byte>(1000));
      (void)c.poll(2s);  // keep it open until the client gave up
    });
    REQUIRE_THROWS_MATCHES(mc::Client("unix:" + path, "key", 2s), mp::AuthenticationError,
                           MessageContains("a frame of 1000 bytes while reading the challenge"));
    t.join();
  }
  SECTION("not a challenge") {
    std::thread t([&] {
      mp::Connection c = fake.accept(10s);
      c.send_bytes(std::string_view("#WELCOME#"));
      (void)c.poll(2s);
    });
    REQUIRE_THROWS_MATCHES(mc::Client("unix:" + path, "key", 2s), mp::AuthenticationError,
                           MessageContains("the peer sent no challenge"));
    t.join();
  }
  SECTION("a challenge for another digest") {
    std::thread t([&] {
      mp::Connection c = fake.accept(10s);
      c.send_bytes(std::string_view("#CHALLENGE#{md5}0123456789"));
      (void)c.poll(2s);
    });
    REQUIRE_THROWS_MATCHES(mc::Client("unix:" + path, "key", 2s), mp::AuthenticationError,
                           MessageContains("a digest other than {sha256}"));
    t.join();
  }
  SECTION("a listener that hangs up before its challenge: EOFError, as in Python") {
    std::thread t([&] { fake.accept(10s).close(); });
    REQUIRE_THROWS_MATCHES(mc::Client("unix:" + path, "key", 2s), mp::EOFError,
                           MessageContains("the peer closed the connection while reading the challenge"));
    t.join();
  }
}

// ------------------------------------------------------------ addresses and lifetimes

TEST_CASE("Listener/Client: malformed addresses, a taken path, nothing listening, accept timeouts") {
  REQUIRE_THROWS_MATCHES(mc::Listener("no-colon-no-slash"), mp::ValueError, MessageContains("expected HOST:PORT"));
  REQUIRE_THROWS_MATCHES(mc::Listener("127.0.0.1:65536"), mp::ValueError,
                         MessageContains("port must be a number from 0 to 65535"));
  REQUIRE_THROWS_MATCHES(mc::Listener(":80"), mp::ValueError, MessageContains("empty host"));
  REQUIRE_THROWS_MATCHES(mc::Listener("unix:"), mp::ValueError, MessageContains("empty socket path"));
  REQUIRE_THROWS_MATCHES(mc::Listener("/tmp/" + std::string(200, 'x')), mp::ValueError,
                         MessageContains("socket path longer than 107 bytes"));
  REQUIRE_THROWS_MATCHES(mc::Client("localhost"), mp::ValueError, MessageContains("expected HOST:PORT"));

  TempDir dir;
  const std::string path = dir.socket("taken");
  mc::Listener listener(path);
  REQUIRE_THROWS_MATCHES(mc::Listener(path), mp::ProcessError, MessageContains("Address already in use"));
  REQUIRE_THROWS_MATCHES(mc::Client(dir.socket("nobody")), mp::ProcessError,
                         MessageContains("No such file or directory"));
  const auto t0 = Clock::now();
  REQUIRE_THROWS_MATCHES(listener.accept(100ms), mp::TimeoutError, MessageContains("no client connected in time"));
  CHECK(Clock::now() - t0 >= 100ms);
}

TEST_CASE("a closed TCP listener refuses clients, even while a pool forked after it lives (no worker holds it)") {
  mc::Listener listener("127.0.0.1:0");
  const std::string address = listener.address();
  mp::Pool pool(2);
  CHECK(pool.map(plus_one, std::vector<int>{1, 2}) == std::vector<int>{2, 3});
  listener.close();
  REQUIRE_THROWS_MATCHES(mc::Client(address, {}, 2s), mp::ProcessError,
                         MessageContains("Client(\"" + address + "\"): connect(): Connection refused"));
}

TEST_CASE("an IPv6 listener gives its address back in brackets, and a Client reaches it there") {
  std::optional<mc::Listener> listener;
  try {
    listener.emplace("[::1]:0", "k");
  } catch (const mp::ProcessError& e) {
    WARN("no IPv6 loopback on this machine: " << e.what());
    return;
  }
  const std::string& address = listener->address();
  REQUIRE(address.rfind("[::1]:", 0) == 0);
  CHECK(address.size() > 6);
  std::thread client([address] {
    mp::Connection c = mc::Client(address, "k");
    c.send(std::string("over v6"));
  });
  mp::Connection c = listener->accept(10s);
  CHECK(c.recv<std::string>() == "over v6");
  client.join();
}

TEST_CASE("errors name the address as the user writes it (unix:PATH, HOST:PORT, [v6]:PORT)") {
  mc::Listener listener("127.0.0.1:0");
  REQUIRE_THROWS_MATCHES(mc::Listener(listener.address()), mp::ProcessError,
                         MessageContains("Listener(\"" + listener.address() + "\"): bind()"));
  CHECK(mp::detail::parse_socket_address("[::1]:7").text() == "[::1]:7");
  CHECK(mp::detail::parse_socket_address("localhost:7").text() == "localhost:7");
  CHECK(mp::detail::parse_socket_address("/tmp/x").text() == "unix:/tmp/x");
  CHECK(mp::detail::parse_socket_address("unix:rel").text() == "unix:rel");
}
