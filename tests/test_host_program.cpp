// mproc inside host programs that set up signals and limits their own way:
// SIGCHLD ignored or handled by a reaper, signals blocked or interrupting
// every system call, SIGPIPE ignored or fatal, descriptor and process limits
// reached. Each setup runs in a forked child (so this test program keeps its
// own), where a Pool, a Process, a Queue and a Pipe must work and a killed
// worker must be reported within 1 s.
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <functional>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mproc/connection.hpp>
#include <mproc/pool.hpp>
#include <mproc/process.hpp>
#include <mproc/queue.hpp>

#include "catch.hpp"
#include "child.hpp"
#include "proc.hpp"

namespace mp = mproc;
namespace d = mproc::detail;
using namespace std::chrono_literals;

namespace {

int square(int x) { return x * x; }
std::vector<int> iota_vec(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}
// Writes the worker's pid to `fd`, then works for 5 s (it will be killed).
int announce_then_wait(int fd) {
  const int pid = static_cast<int>(::getpid());
  if (::write(fd, &pid, sizeof pid) != sizeof pid) return -1;
  std::this_thread::sleep_for(5s);
  return 0;
}

// Fails the scenario with a message (the exit code says which check).
#define HOST_CHECK(cond, code)                                          \
  do {                                                                  \
    if (!(cond)) {                                                      \
      std::fprintf(stderr, "host scenario: check failed: %s\n", #cond); \
      return code;                                                      \
    }                                                                   \
  } while (0)

// What every host program must be able to do with mproc. Returns 0, or the
// number of the check that failed.
int exercise_everything() {
  // A pool: right results; a worker SIGKILLed mid-task fails that task
  // within 1 s; the pool serves on.
  {
    int fds[2];  // made before the pool, so that its workers inherit it
    HOST_CHECK(::pipe2(fds, O_CLOEXEC) == 0, 11);
    d::UniqueFd rd(fds[0]), wr(fds[1]);
    mp::Pool pool(2);
    HOST_CHECK(pool.map(square, iota_vec(50)) == std::vector<int>([] {
                 auto v = iota_vec(50);
                 for (int& x : v) x *= x;
                 return v;
               }()),
               10);
    auto r = pool.apply_async(announce_then_wait, wr.get());
    int pid = 0;
    HOST_CHECK(d::poll_until(rd.get(), POLLIN, d::deadline_after(10s)) != 0, 12);
    HOST_CHECK(d::read_full(rd.get(), &pid, sizeof pid) == sizeof pid, 13);
    const auto killed_at = d::Clock::now();
    HOST_CHECK(::kill(pid, SIGKILL) == 0, 14);
    try {
      (void)r.get(10s);
      HOST_CHECK(false, 15);
    } catch (const mp::WorkerCrashed& e) {
      HOST_CHECK(e.signal() == SIGKILL, 16);
    }
    HOST_CHECK(d::Clock::now() - killed_at < 1s, 17);
    HOST_CHECK(pool.apply(square, 12) == 144, 18);
  }
  // A Process: join, exit codes, terminate.
  {
    mp::Process ok([] { return 7; });
    ok.start();
    HOST_CHECK(ok.join(10s), 20);
    HOST_CHECK(ok.exitcode() == 7, 21);
    mp::Process sleeper([] {
      for (;;) ::pause();
    });
    sleeper.start();
    sleeper.terminate();
    HOST_CHECK(sleeper.join(10s), 22);
    HOST_CHECK(sleeper.exitcode() == -SIGTERM, 23);
    mp::Process thrower([] { throw std::runtime_error("expected"); });
    thrower.start();
    HOST_CHECK(thrower.join(10s), 24);
    HOST_CHECK(thrower.exitcode() == 1, 25);
  }
  // A Queue between processes.
  {
    mp::Queue<int> q(8);
    mp::Process producer([q]() mutable {
      for (int i = 0; i < 100; ++i) q.put(i, 10s);
    });
    producer.start();
    long sum = 0;
    for (int i = 0; i < 100; ++i) sum += q.get(10s);
    HOST_CHECK(sum == 4950, 30);
    HOST_CHECK(producer.join(10s), 31);
    HOST_CHECK(producer.exitcode() == 0, 32);
  }
  // A Pipe: messages both ways; a peer that closed gives EOFError, and
  // writing to it an error (never a SIGPIPE death).
  {
    auto [a, b] = mp::Pipe();
    mp::Process echo([&b]() {
      const auto msg = b.recv<std::string>();
      b.send(msg + "!");
    });
    echo.start();
    b.close();
    a.send(std::string("hi"));
    HOST_CHECK(a.poll(10s), 40);
    HOST_CHECK(a.recv<std::string>() == "hi!", 41);
    HOST_CHECK(echo.join(10s), 42);
    try {
      (void)a.recv<std::string>();
      HOST_CHECK(false, 43);
    } catch (const mp::EOFError&) {
    }
    bool refused = false;
    try {
      for (int i = 0; i < 100; ++i) a.send_bytes(std::string(1000, 'x'));
    } catch (const mp::ProcessError&) {
      refused = true;
    }
    HOST_CHECK(refused, 44);
    auto [r, w] = mp::Pipe(false);  // a plain pipe: EPIPE raises SIGPIPE
    r.close();
    try {
      w.send_bytes("nobody reads this");
      HOST_CHECK(false, 45);
    } catch (const mp::ProcessError&) {
    }
  }
  return 0;
}

void install(int sig, void (*handler)(int), int flags) {
  struct sigaction sa{};
  sa.sa_handler = handler;
  sa.sa_flags = flags;
  sigemptyset(&sa.sa_mask);
  ::sigaction(sig, &sa, nullptr);
}

std::atomic<int> signals_seen{0};
void count_signal(int) { signals_seen.fetch_add(1, std::memory_order_relaxed); }
void reap_everything(int) {
  const int saved = errno;
  while (::waitpid(-1, nullptr, WNOHANG) > 0) {
  }
  errno = saved;
}

// Runs the scenario in a child set up by `setup`; checks it succeeded.
void in_host(const std::function<void()>& setup) {
  const auto result = mproc_test::run_in_child(
      [&] {
        setup();
        return exercise_everything();
      },
      120s);
  CHECK_FALSE(result.timed_out);
  CHECK(result.exitcode == 0);
}

}  // namespace

TEST_CASE("host program: SIGCHLD ignored (the kernel reaps children) (#2)", "[failure-model][host]") {
  in_host([] { install(SIGCHLD, SIG_IGN, 0); });
}

TEST_CASE("host program: SIGCHLD handled with SA_NOCLDWAIT (#2)", "[failure-model][host]") {
  in_host([] { install(SIGCHLD, count_signal, SA_NOCLDWAIT | SA_RESTART); });
}

TEST_CASE("host program: a SIGCHLD handler reaps every child, without SA_RESTART (#2)", "[failure-model][host]") {
  in_host([] { install(SIGCHLD, reap_everything, 0); });
}

TEST_CASE("host program: a reaper thread waits for any child all the time (#2)", "[failure-model][host][tsan-skip]") {
  in_host([] {
    std::thread([] {
      for (;;) {
        if (::waitpid(-1, nullptr, 0) < 0 && errno == ECHILD) std::this_thread::sleep_for(1ms);
      }
    }).detach();
  });
}

TEST_CASE("host program: every signal blocked in every thread (#2)", "[failure-model][host]") {
  in_host([] {
    sigset_t all;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, nullptr);
  });
}

TEST_CASE("host program: SIGCHLD blocked, as by a signalfd user (#2)", "[failure-model][host]") {
  in_host([] {
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    ::pthread_sigmask(SIG_BLOCK, &chld, nullptr);
  });
}

TEST_CASE("host program: SIGPIPE ignored, handled, or default (fatal) (#2)", "[failure-model][host]") {
  in_host([] { install(SIGPIPE, SIG_IGN, 0); });
  in_host([] { install(SIGPIPE, count_signal, 0); });
  in_host([] { install(SIGPIPE, SIG_DFL, 0); });
}

TEST_CASE("host program: a 1 ms SIGALRM timer interrupts every system call (no SA_RESTART) (#2)",
          "[failure-model][host]") {
  in_host([] {
    install(SIGALRM, count_signal, 0);
    const itimerval every_ms{{0, 1000}, {0, 1000}};
    ::setitimer(ITIMER_REAL, &every_ms, nullptr);
  });
}

TEST_CASE("host program: SIGTERM and SIGINT ignored (#2)", "[failure-model][host]") {
  in_host([] {
    install(SIGTERM, SIG_IGN, 0);
    install(SIGINT, SIG_IGN, 0);
  });
}

// ------------------------------------------------------------- limits (#3)

TEST_CASE(
    "descriptor limit reached: a worker that cannot be replaced leaves the others serving, with none left "
    "every call fails with the cause (#3)",
    "[failure-model][limits][asan-skip]") {
  const auto result = mproc_test::run_in_child(
      [] {
        mp::Pool pool(2);
        if (pool.map(square, iota_vec(10)) != std::vector<int>{0, 1, 4, 9, 16, 25, 36, 49, 64, 81}) return 10;
        const auto pids = pool.worker_pids();
        if (pids.size() != 2) return 11;
        // No descriptor may be opened from now on (0, 1 and 2 are open: none
        // is free below the limit, even after others are closed).
        for (int fd = 0; fd < 3; ++fd)
          if (::fcntl(fd, F_GETFD) < 0) ::open("/dev/null", O_RDWR);
        const rlimit lim{3, 3};
        if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) return 12;
        ::kill(pids[0], SIGKILL);
        // The other worker serves while the first cannot be replaced.
        for (int i = 0; i < 20; ++i)
          if (pool.apply(square, i) != i * i) return 13;
        ::kill(pids[1], SIGKILL);
        // No worker left and none can start: calls fail, naming the cause.
        const auto t0 = d::Clock::now();
        auto pending = pool.apply_async(square, 3);
        try {
          (void)pending.get(10s);
          return 14;
        } catch (const mp::ProcessError& e) {
          const std::string what = e.what();
          if (what.find("cannot start a worker") == std::string::npos) return 15;
          if (what.find("Too many open files") == std::string::npos) return 16;
        }
        if (d::Clock::now() - t0 > 5s) return 17;
        try {
          (void)pool.map(square, iota_vec(4));
          return 18;
        } catch (const mp::ProcessError& e) {
          if (std::string(e.what()).find("cannot start a worker") == std::string::npos) return 19;
        }
        return 0;
      },
      60s);
  CHECK_FALSE(result.timed_out);
  CHECK(result.exitcode == 0);
}

TEST_CASE("process limit reached: a pool runs on the workers it could start, with none it fails with the cause (#3)",
          "[failure-model][limits][tsan-skip]") {
  if (::geteuid() != 0) {
    WARN("skipped: needs root to run as a fresh uid whose process count is known");
    return;
  }
  // RLIMIT_NPROC counts threads: this process's (a sanitizer may add its
  // own), the pool's I/O thread, the zygote, then `workers` workers.
  auto limited = [](int workers, int processes) {
    return mproc_test::run_in_child(
        [=] {
          // A uid with no other process.
          if (::setgid(54321) != 0 || ::setuid(54321) != 0) return 10;
          const auto nproc = static_cast<rlim_t>(d::thread_count() + 2 + workers);
          const rlimit lim{nproc, nproc};
          if (::setrlimit(RLIMIT_NPROC, &lim) != 0) return 11;
          try {
            mp::Pool pool(processes, mp::PoolOptions().start_method(mp::StartMethod::fork));
            const auto r = pool.map(square, iota_vec(30), 1);
            return r[29] == 29 * 29 ? 0 : 12;
          } catch (const mp::ProcessError& e) {
            std::fprintf(stderr, "%s\n", e.what());
            const std::string what = e.what();
            if (what.find("cannot start a worker") == std::string::npos) return 13;
            if (what.find("Resource temporarily unavailable") == std::string::npos) return 14;
            return 20;  // failed, naming the cause
          }
        },
        60s);
  };
  // One worker of three can start: the pool runs on it.
  auto degraded = limited(1, 3);
  CHECK_FALSE(degraded.timed_out);
  CHECK(degraded.exitcode == 0);
  // No worker can ever start.
  auto none = limited(0, 2);
  CHECK_FALSE(none.timed_out);
  CHECK(none.exitcode == 20);
}

TEST_CASE("address space limit: a result too large to map fails that task alone (#3)",
          "[failure-model][limits][asan-skip]") {
  const auto result = mproc_test::run_in_child(
      [] {
        mp::Pool pool(1);
        if (pool.apply(square, 3) != 9) return 10;
        // Room for this process as it is, not for a 256 MiB result.
        rlimit lim{};
        ::getrlimit(RLIMIT_AS, &lim);
        std::size_t vm_kib = 0;
        if (FILE* f = std::fopen("/proc/self/status", "r")) {
          char line[256];
          while (std::fgets(line, sizeof line, f))
            if (std::sscanf(line, "VmSize: %zu kB", &vm_kib) == 1) break;
          std::fclose(f);
        }
        if (vm_kib == 0) return 11;
        lim.rlim_cur = (vm_kib << 10) + (std::size_t{128} << 20);
        if (::setrlimit(RLIMIT_AS, &lim) != 0) return 12;
        try {
          (void)pool.apply([](int mib) { return std::string(static_cast<std::size_t>(mib) << 20, 'x'); }, 256);
          return 13;
        } catch (const mp::ProcessError& e) {
          std::fprintf(stderr, "%s\n", e.what());
        }
        return pool.apply(square, 4) == 16 ? 0 : 14;
      },
      60s);
  CHECK_FALSE(result.timed_out);
  CHECK(result.exitcode == 0);
}
