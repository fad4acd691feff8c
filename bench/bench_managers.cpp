// P11/P12: Manager proxies and Listener/Client connections vs a raw Unix-domain socket round trip
// between two processes, same binary, same run.
//   raw: a forked peer echoes a 64-byte request over an AF_UNIX socket it accepted (listen/connect
//     through a path, as a Manager's clients do);
//   Listener/Client: send_bytes/recv_bytes of the same 64 bytes, authenticated connection;
//   Manager: dict<std::string, int> set and get from this process to the server process (each
//     one round trip); cold: Manager() + dict() + one set and get + shutdown.
// Targets (bench/README.md, P11/P12): Manager dict op <= 1.2 x raw, >= 2 x Python's
// Manager().dict() (bench/manager_compare.py runs both); Listener/Client <= 1.2 x raw.
// Run: bench_managers --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <csignal>
#include <cstdlib>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mproc/listener.hpp>
#include <mproc/managers.hpp>

namespace mp = mproc;

namespace {

constexpr std::size_t kRequest = 64;

std::string socket_path() { return "/tmp/mproc-bench-" + std::to_string(::getpid()) + ".sock"; }

bool read_exact(int fd, void* p, std::size_t n) {
  auto* c = static_cast<char*>(p);
  while (n > 0) {
    const ssize_t r = ::read(fd, c, n);
    if (r <= 0) return false;
    c += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

void BM_RawUnixSocket_RoundTrip_64B(benchmark::State& state) {
  const std::string path = socket_path();
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  path.copy(sa.sun_path, sizeof sa.sun_path - 1);
  const int listener = ::socket(AF_UNIX, SOCK_STREAM, 0);
  if (::bind(listener, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(listener, 1) != 0) std::abort();
  const pid_t pid = ::fork();
  if (pid == 0) {
    std::signal(SIGPIPE, SIG_IGN);
    const int c = ::accept(listener, nullptr, nullptr);
    char buf[kRequest];
    while (read_exact(c, buf, kRequest))
      if (::write(c, buf, kRequest) != static_cast<ssize_t>(kRequest)) break;
    ::_exit(0);
  }
  ::close(listener);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) std::abort();
  char buf[kRequest] = {};
  for (auto _ : state) {
    if (::write(fd, buf, kRequest) != static_cast<ssize_t>(kRequest) || !read_exact(fd, buf, kRequest)) std::abort();
  }
  ::close(fd);
  ::waitpid(pid, nullptr, 0);
  ::unlink(path.c_str());
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RawUnixSocket_RoundTrip_64B)->UseRealTime();

void BM_ListenerClient_RoundTrip_64B(benchmark::State& state) {
  mp::connection::Listener listener("unix:" + socket_path(), "bench-key");
  const std::string address = listener.address();
  const pid_t pid = ::fork();  // the echoing peer is the Client (a forked child keeps no Listener)
  if (pid == 0) {
    try {
      mp::Connection c = mp::connection::Client(address, "bench-key");
      std::vector<std::byte> buf;
      for (;;) {
        c.recv_bytes_into(buf);
        c.send_bytes(buf);
      }
    } catch (...) {
    }
    ::_exit(0);
  }
  {
    mp::Connection c = listener.accept();
    const std::vector<std::byte> request(kRequest);
    std::vector<std::byte> reply;
    for (auto _ : state) {
      c.send_bytes(request);
      c.recv_bytes_into(reply);
    }
  }
  ::waitpid(pid, nullptr, 0);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ListenerClient_RoundTrip_64B)->UseRealTime();

void BM_Manager_DictSet(benchmark::State& state) {
  mp::Manager mgr;
  auto d = mgr.dict<std::string, int>();
  int i = 0;
  for (auto _ : state) d.set("key", ++i);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Manager_DictSet)->UseRealTime();

void BM_Manager_DictGet(benchmark::State& state) {
  mp::Manager mgr;
  auto d = mgr.dict<std::string, int>();
  d.set("key", 1);
  for (auto _ : state) benchmark::DoNotOptimize(d.get("key"));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Manager_DictGet)->UseRealTime();

// Cold: what a user's first use costs, server start and shutdown included.
void BM_Manager_Cold(benchmark::State& state) {
  for (auto _ : state) {
    mp::Manager mgr;
    auto d = mgr.dict<std::string, int>();
    d.set("key", 1);
    benchmark::DoNotOptimize(d.get("key"));
  }
}
BENCHMARK(BM_Manager_Cold)->UseRealTime()->Unit(benchmark::kMillisecond)->Iterations(20);

}  // namespace

BENCHMARK_MAIN();
