// P5: Connection vs raw pipe(2) between two processes, same binary, same run.
//   round trip of a tiny message: raw 1-byte pipe ping-pong vs Connection
//     send_bytes/recv_bytes (duplex socketpair and simplex pipes);
//   one-way 1 MiB messages: raw write/read loops vs Connection.
//   small object round trip: send(std::vector<int>{1, 2, 3}) / recv<...>() both ways;
//   one-way 1 MiB std::vector<double> with send()/recv<>().
// Targets (bench/README.md, P5): round trip <= 1.1 x raw; 1 MiB throughput >= 0.9 x raw.
// Run: bench_connection --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <csignal>
#include <cstring>
#include <tuple>
#include <vector>

#include <benchmark/benchmark.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mproc/connection.hpp>
#include <mproc/process.hpp>

namespace mp = mproc;

namespace {

constexpr std::size_t MiB = std::size_t{1} << 20;

// A raw forked peer: runs `fn` and _exits; the parent reaps it in the destructor.
struct RawChild {
  pid_t pid = -1;
  template <class F>
  explicit RawChild(F fn) {
    pid = ::fork();
    if (pid == 0) {
      std::signal(SIGPIPE, SIG_IGN);
      fn();
      ::_exit(0);
    }
  }
  ~RawChild() {
    int status = 0;
    ::waitpid(pid, &status, 0);
  }
};

void read_exact(int fd, void* p, std::size_t n) {
  auto* c = static_cast<char*>(p);
  while (n > 0) {
    const ssize_t r = ::read(fd, c, n);
    if (r <= 0) std::abort();
    c += r;
    n -= static_cast<std::size_t>(r);
  }
}

void BM_RawPipe_RoundTrip_1B(benchmark::State& state) {
  int to_child[2], to_parent[2];
  if (::pipe(to_child) != 0 || ::pipe(to_parent) != 0) std::abort();
  {
    RawChild child([&] {
      ::close(to_child[1]);
      ::close(to_parent[0]);
      char c;
      while (::read(to_child[0], &c, 1) == 1)
        if (::write(to_parent[1], &c, 1) != 1) break;
    });
    ::close(to_child[0]);
    ::close(to_parent[1]);
    char c = 'x';
    for (auto _ : state) {
      if (::write(to_child[1], &c, 1) != 1) std::abort();
      read_exact(to_parent[0], &c, 1);
    }
    ::close(to_child[1]);
    ::close(to_parent[0]);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RawPipe_RoundTrip_1B)->UseRealTime();

// Reference: the same ping-pong over a raw AF_UNIX socketpair (what a duplex
// Pipe is made of), to separate the transport's cost from mproc's.
void BM_RawSocketpair_RoundTrip_1B(benchmark::State& state) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) std::abort();
  {
    RawChild child([&] {
      ::close(sv[0]);
      char c;
      while (::read(sv[1], &c, 1) == 1)
        if (::write(sv[1], &c, 1) != 1) break;
    });
    ::close(sv[1]);
    char c = 'x';
    for (auto _ : state) {
      if (::write(sv[0], &c, 1) != 1) std::abort();
      read_exact(sv[0], &c, 1);
    }
    ::close(sv[0]);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RawSocketpair_RoundTrip_1B)->UseRealTime();

// Arg 0: duplex Pipe (socketpair); 1: two simplex Pipes (pipe2), like the raw peer.
void BM_Connection_RoundTrip_1B(benchmark::State& state) {
  const bool duplex = state.range(0) == 0;
  mp::Connection out, child_in, child_out, in;
  if (duplex) {
    std::tie(out, child_in) = mp::Pipe(true);
  } else {
    std::tie(child_in, out) = mp::Pipe(false);
    std::tie(in, child_out) = mp::Pipe(false);
  }
  mp::Process echo([&] {
    out.close();
    in.close();
    mp::Connection& reply = duplex ? child_in : child_out;
    std::vector<std::byte> buf;
    try {
      for (;;) {
        child_in.recv_bytes_into(buf);
        reply.send_bytes(buf);
      }
    } catch (const mp::EOFError&) {
    }
  });
  echo.start();
  child_in.close();
  child_out.close();
  mp::Connection& from = duplex ? out : in;
  const std::byte one[1] = {std::byte{'x'}};
  std::vector<std::byte> buf;
  for (auto _ : state) {
    out.send_bytes(one);
    from.recv_bytes_into(buf);
  }
  out.close();
  in.close();
  echo.join();
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Connection_RoundTrip_1B)->Arg(0)->Arg(1)->UseRealTime();

// Small object echo: the parent sends std::vector<int>{1, 2, 3}, the child
// recv<>()s it and sends it back. Arg as above.
void BM_Connection_RoundTrip_SmallObject(benchmark::State& state) {
  const bool duplex = state.range(0) == 0;
  mp::Connection out, child_in, child_out, in;
  if (duplex) {
    std::tie(out, child_in) = mp::Pipe(true);
  } else {
    std::tie(child_in, out) = mp::Pipe(false);
    std::tie(in, child_out) = mp::Pipe(false);
  }
  mp::Process echo([&] {
    out.close();
    in.close();
    mp::Connection& reply = duplex ? child_in : child_out;
    try {
      for (;;) reply.send(child_in.recv<std::vector<int>>());
    } catch (const mp::EOFError&) {
    }
  });
  echo.start();
  child_in.close();
  child_out.close();
  mp::Connection& from = duplex ? out : in;
  const std::vector<int> message{1, 2, 3};
  for (auto _ : state) {
    out.send(message);
    auto back = from.recv<std::vector<int>>();
    benchmark::DoNotOptimize(back.data());
  }
  out.close();
  in.close();
  echo.join();
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Connection_RoundTrip_SmallObject)->Arg(0)->Arg(1)->UseRealTime();

void BM_RawPipe_OneWay_1MiB(benchmark::State& state) {
  int fds[2];
  if (::pipe(fds) != 0) std::abort();
  {
    RawChild child([&] {
      ::close(fds[0]);
      std::vector<char> block(MiB, 'x');
      for (;;) {
        std::size_t off = 0;
        while (off < block.size()) {
          const ssize_t w = ::write(fds[1], block.data() + off, block.size() - off);
          if (w <= 0) return;
          off += static_cast<std::size_t>(w);
        }
      }
    });
    ::close(fds[1]);
    std::vector<char> buf(MiB);
    for (auto _ : state) read_exact(fds[0], buf.data(), MiB);
    ::close(fds[0]);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(MiB));
}
BENCHMARK(BM_RawPipe_OneWay_1MiB)->UseRealTime();

// Arg 0: duplex (socketpair); 1: simplex (pipe2).
void BM_Connection_OneWay_1MiB(benchmark::State& state) {
  const bool duplex = state.range(0) == 0;
  auto [r, w] = mp::Pipe(duplex);
  mp::Process producer(
      [](mp::Connection& out, mp::Connection& unused) {
        unused.close();
        const std::vector<std::byte> block(MiB, std::byte{'x'});
        try {
          for (;;) out.send_bytes(block);
        } catch (const mp::EOFError&) {
        }
      },
      std::move(w), std::ref(r));
  producer.start();
  std::vector<std::byte> buf;
  for (auto _ : state) r.recv_bytes_into(buf);
  r.close();
  producer.join();
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(MiB));
}
BENCHMARK(BM_Connection_OneWay_1MiB)->Arg(0)->Arg(1)->UseRealTime();

// One-way std::vector<double> of 1 MiB: send() gathers the data in place,
// recv<>() returns a fresh vector. Arg as above.
void BM_Connection_OneWay_1MiB_VectorDouble(benchmark::State& state) {
  const bool duplex = state.range(0) == 0;
  auto [r, w] = mp::Pipe(duplex);
  mp::Process producer(
      [](mp::Connection& out, mp::Connection& unused) {
        unused.close();
        const std::vector<double> block(MiB / sizeof(double), 0.5);
        try {
          for (;;) out.send(block);
        } catch (const mp::EOFError&) {
        }
      },
      std::move(w), std::ref(r));
  producer.start();
  for (auto _ : state) {
    auto v = r.recv<std::vector<double>>();
    benchmark::DoNotOptimize(v.data());
  }
  r.close();
  producer.join();
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(MiB));
}
BENCHMARK(BM_Connection_OneWay_1MiB_VectorDouble)->Arg(0)->Arg(1)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
