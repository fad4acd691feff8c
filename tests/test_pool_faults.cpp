// Pool workers failing at every step of the task protocol (fault injection,
// tests/support/fault_injection.hpp), and a soak of 1,000 random faults.
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mproc/detail/os/oom.hpp>
#include <mproc/pool.hpp>
#include <mproc/process.hpp>

#include "catch.hpp"
#include "child.hpp"
#include "fault_injection.hpp"
#include "proc.hpp"
#include "within.hpp"

namespace mp = mproc;
namespace d = mproc::detail;
using namespace std::chrono_literals;
using mproc_test::MessageContains;

namespace {

int square(int x) { return x * x; }
std::vector<int> iota_vec(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}
std::vector<int> squares(int n) {
  std::vector<int> v = iota_vec(n);
  for (int& x : v) x *= x;
  return v;
}
// A result of `mib` MiB (at least 1: it travels in a memfd).
std::string big(int mib) { return std::string(static_cast<std::size_t>(mib) << 20, static_cast<char>('a' + mib % 26)); }
// Sums a large argument (it travels through the transfer heap).
long long sum_of(const std::vector<int>& v) { return std::accumulate(v.begin(), v.end(), 0LL); }

struct Unencodable {
  int x = 0;
};
Unencodable make_unencodable(int x) { return {x}; }

// Every fault point is reachable by workers forked from now on; results of
// 1 MiB and more take the memfd path.
const bool plan_ready = [] {
  d::fault_plan();
  d::result_via_fd() = std::size_t{1} << 20;
  return true;
}();

// The outcome a fault at a step must produce.
enum class Expect { success, remote_error, crashed };

Expect expected(d::FaultStep step, d::FaultAction action) {
  using S = d::FaultStep;
  const bool thrown = action == d::FaultAction::throw_bad_alloc;
  switch (step) {
    case S::before_read:
    case S::after_read:
      return Expect::success;  // never started: the task runs on another worker
    case S::in_decode:
      return thrown ? Expect::remote_error : Expect::success;
    case S::after_run:
      return Expect::crashed;  // started, result not sent: lost (a throw here exits 70)
    case S::in_send:
    case S::mid_large_result:
      return thrown ? Expect::remote_error : Expect::crashed;
    case S::after_write:
      return Expect::success;  // the result had left
  }
  return Expect::success;
}

const char* step_name(d::FaultStep s) {
  static const char* names[] = {"before_read", "after_read",       "in_decode",  "after_run",
                                "in_send",     "mid_large_result", "after_write"};
  return names[static_cast<int>(s)];
}

// A worker that unwound into this test's code would run it: it would then
// reach one of these checks and report itself through the pipe.
struct EscapeWatch {
  EscapeWatch() { REQUIRE(::pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0); }
  ~EscapeWatch() {
    ::close(fds[0]);
    ::close(fds[1]);
  }
  void check_here() const {
    if (::getpid() != owner) {
      [[maybe_unused]] auto n = ::write(fds[1], "!", 1);
      ::_exit(99);
    }
  }
  bool escaped() const {
    char c;
    return ::read(fds[0], &c, 1) == 1;
  }
  pid_t owner = ::getpid();
  int fds[2] = {-1, -1};
};

}  // namespace

template <>
struct mproc::serializer<Unencodable> {
  static void write(Writer&, const Unencodable&) { throw std::length_error("cannot encode an Unencodable"); }
  static Unencodable read(Reader& r) { return {r.read<int>()}; }
};

TEST_CASE("fault walk: a worker failing at each step of the task protocol gives the defined outcome (#6, R13)",
          "[failure-model][faults]") {
  REQUIRE(plan_ready);
  EscapeWatch watch;
  using S = d::FaultStep;
  using A = d::FaultAction;
  for (int step = 0; step < d::kFaultSteps; ++step) {
    for (A action : {A::kill, A::exit, A::throw_bad_alloc}) {
      const auto s = static_cast<S>(step);
      const Expect want = expected(s, action);
      INFO("fault at " << step_name(s) << ", action " << static_cast<int>(action));
      mp::Pool pool(2);
      watch.check_here();
      REQUIRE(pool.map(square, iota_vec(4)) == squares(4));  // workers are up
      d::arm_fault(s, action, 2);
      const bool large = s == S::mid_large_result;
      mproc_test::within_10s([&] {
        try {
          if (large) {
            const auto r = pool.map(big, std::vector<int>{1, 2, 1, 3, 2, 1}, 1);
            CHECK(want == Expect::success);
            CHECK(r[3] == big(3));
          } else {
            const auto r = pool.map(square, iota_vec(24), 1);
            CHECK(want == Expect::success);
            CHECK(r == squares(24));
          }
        } catch (const mp::WorkerCrashed& e) {
          CHECK(want == Expect::crashed);
          const int code = action == A::kill ? -SIGKILL : action == A::exit ? 9 : d::worker_exit_internal;
          CHECK(e.exitcode() == code);
        } catch (const mp::RemoteError& e) {
          CHECK(want == Expect::remote_error);
          CHECK(e.type_name() == "std::bad_alloc");
        }
      });
      watch.check_here();
      CHECK(d::fault_plan().fired.load() == 1);
      d::disarm_faults();
      // The pool serves on, with its full complement of workers.
      CHECK(pool.map(square, iota_vec(10), 1) == squares(10));
      const auto deadline = d::deadline_after(10s);
      while (pool.worker_pids().size() != 2 && d::Clock::now() < deadline) std::this_thread::sleep_for(1ms);
      CHECK(pool.worker_pids().size() == 2);
    }
  }
  CHECK_FALSE(watch.escaped());
}

TEST_CASE("a result that cannot be encoded fails each call of its task with the encoder's error (#6)",
          "[failure-model][faults]") {
  mp::Pool pool(2);
  REQUIRE_THROWS_MATCHES(pool.map(make_unencodable, iota_vec(6), 3), mp::RemoteError,
                         MessageContains("cannot encode an Unencodable"));
  CHECK(pool.map(square, iota_vec(3)) == squares(3));
}

TEST_CASE("soak: 1,000 random faults in one pool, every call returns right or with the right error, nothing leaks",
          "[failure-model][faults][soak]") {
  REQUIRE(plan_ready);
  EscapeWatch watch;
  const std::size_t fds_before = mproc_test::open_fd_count();
  const std::size_t shm_before = mproc_test::dev_shm_entries();
  int calls = 0, failures = 0;
  {
    mp::Pool pool(3);
    watch.check_here();
    d::arm_random_faults(1000, 40, 12345);
    const std::vector<int> large_arg(100'000, 3);  // through the transfer heap
    const auto start = d::Clock::now();
    while (d::fault_plan().fired.load() < 1000 && d::Clock::now() - start < 240s) {
      const int kind = calls % 4;
      ++calls;
      mproc_test::within_10s([&] {
        try {
          // (Calls outside CHECK: it would swallow the exceptions.)
          if (kind == 0) {
            const auto r = pool.map(square, iota_vec(40), 1);
            CHECK(r == squares(40));
          } else if (kind == 1) {
            const auto r = pool.map(square, iota_vec(200));
            CHECK(r == squares(200));
          } else if (kind == 2) {
            const long long r = pool.apply(sum_of, large_arg);
            CHECK(r == 300'000);
          } else {
            const std::string r = pool.apply(big, 1);
            CHECK(r == big(1));
          }
        } catch (const mp::WorkerCrashed& e) {
          ++failures;
          const int c = e.exitcode();
          CHECK((c == -SIGKILL || c == 9 || c == d::worker_exit_internal));
        } catch (const mp::RemoteError& e) {
          ++failures;
          CHECK(e.type_name() == "std::bad_alloc");
        }
      });
      watch.check_here();
    }
    d::disarm_faults();
    CHECK(d::fault_plan().fired.load() >= 1000);
    CHECK(pool.map(square, iota_vec(50), 1) == squares(50));
  }
  INFO(calls << " calls, " << failures << " failed with an injected fault");
  CHECK(failures > 0);
  CHECK(failures < calls);
  CHECK_FALSE(watch.escaped());
  CHECK(mproc_test::no_children());
  CHECK(mproc_test::open_fd_count() == fds_before);
  CHECK(mproc_test::dev_shm_entries() == shm_before);
}

// ------------------------------------------------------------ the OOM killer

namespace {

bool write_file(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return ok;
}

// A new memory cgroup of `limit` bytes (no swap) below this process's own,
// or "" where this process may not create one (cgroup v1 or v2).
std::string make_small_memory_cgroup(std::size_t limit) {
  const auto cg = d::memory_cgroups();
  const std::string v1 = cg.v1_memory.value_or(""), v2 = cg.v2.value_or("");
  const std::string name = "/mproc_oom_test_" + std::to_string(::getpid());
  const std::string bytes = std::to_string(limit);
  for (const std::string& base : {"/sys/fs/cgroup/memory" + v1, std::string("/sys/fs/cgroup/memory")}) {
    if (v1.empty()) break;
    const std::string dir = base + name;
    if (::mkdir(dir.c_str(), 0755) != 0) continue;
    if (write_file(dir + "/memory.limit_in_bytes", bytes)) {
      (void)write_file(dir + "/memory.memsw.limit_in_bytes", bytes);  // (absent without swap accounting)
      return dir;
    }
    ::rmdir(dir.c_str());
  }
  if (!v2.empty()) {
    const std::string dir = "/sys/fs/cgroup" + v2 + name;
    if (::mkdir(dir.c_str(), 0755) == 0) {
      if (write_file(dir + "/memory.max", bytes)) {
        (void)write_file(dir + "/memory.swap.max", "0");
        return dir;
      }
      ::rmdir(dir.c_str());
    }
  }
  return "";
}

std::size_t touch_megabytes(std::size_t mb) {
  std::vector<char> big(mb << 20);
  for (std::size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>(i);
  return big.size();
}

}  // namespace

TEST_CASE("a worker killed by the kernel's OOM killer: WorkerCrashed says so, and the pool serves on",
          "[failure-model][asan-skip][tsan-skip]") {
  const std::string cgroup = make_small_memory_cgroup(std::size_t{96} << 20);
  if (cgroup.empty()) {
    WARN("skipped: this process may not create a memory cgroup (needs root and cgroup v1 or v2 delegation)");
    return;
  }
  // In a child moved into the 96 MiB cgroup: its pool, its template process
  // and its workers are all there; a task touching 1 GiB is OOM-killed.
  const auto r = mproc_test::run_in_child(
      [&cgroup] {
        if (!write_file(cgroup + "/cgroup.procs", "0")) return 10;
        mp::Pool pool(1);
        try {
          (void)pool.apply(touch_megabytes, std::size_t{1024});
          return 11;
        } catch (const mp::WorkerCrashed& e) {
          if (e.signal() != SIGKILL) return 12;
          if (e.oom_killed() != true) return 13;
          if (std::string(e.what()).find("the kernel's OOM killer killed it") == std::string::npos) return 14;
          // It was killed near the cgroup's 96 MiB limit.
          if (!e.peak_memory() || *e.peak_memory() < (std::size_t{32} << 20) ||
              *e.peak_memory() > (std::size_t{200} << 20))
            return 16;
        }
        if (pool.apply(touch_megabytes, std::size_t{1}) != (std::size_t{1} << 20)) return 15;
        return 0;
      },
      60s);
  ::rmdir(cgroup.c_str());
  CHECK_FALSE(r.timed_out);
  CHECK(r.exitcode == 0);
}

// ------------------------------------------------------------ a worker that corrupts its result ring

namespace {
int g_ring_pipe[2] = {-1, -1};  // made before the pool: its workers inherit it
// Writes a position no correct worker writes into its own result ring, says
// so through the pipe, then waits to be killed.
int scribble_on_ring(int) {
  auto* status = reinterpret_cast<d::SlotStatus*>(d::worker_self().started);
  status->ring.tail.store(3);
  [[maybe_unused]] auto n = ::write(g_ring_pipe[1], "s", 1);
  std::this_thread::sleep_for(60s);
  return -1;
}
}  // namespace

TEST_CASE("a worker that writes nonsense into its result ring is killed: its task fails, the pool serves on",
          "[failure-model]") {
  REQUIRE(::pipe2(g_ring_pipe, O_CLOEXEC) == 0);
  {
    mp::Pool pool(1);
    REQUIRE(pool.map(square, iota_vec(4)) == squares(4));
    auto scribbler = pool.apply_async(scribble_on_ring, 0);
    pollfd p{g_ring_pipe[0], POLLIN, 0};
    REQUIRE(::poll(&p, 1, 10'000) == 1);
    char c = 0;
    REQUIRE(::read(g_ring_pipe[0], &c, 1) == 1);
    // The next submission wakes the owner, which reads the ring and kills the worker.
    auto next = pool.apply_async(square, 5);
    mproc_test::within_10s([&] {
      CHECK_THROWS_AS(scribbler.get(), mp::WorkerCrashed);
      CHECK(next.get() == 25);
    });
    CHECK(pool.map(square, iota_vec(50), 1) == squares(50));
  }
  ::close(g_ring_pipe[0]);
  ::close(g_ring_pipe[1]);
}

// ------------------------------------------------------------ descriptors received while another thread forks

namespace {
pid_t g_receiving_owner = 0;
// Widens the moment between receiving descriptors and registering them: 20 ms, in the pool's owner only.
void slow_fd_receipt(d::ChannelStep) {
  if (::getpid() == g_receiving_owner) std::this_thread::sleep_for(20ms);
}
// A result large enough to travel in a memfd, passed to the owner with SCM_RIGHTS.
std::vector<char> large_result(int i) { return std::vector<char>(std::size_t{4} << 20, static_cast<char>(i)); }
}  // namespace

TEST_CASE("descriptors a pool receives are registered before any fork can copy them (#1)") {
  // Large results arrive as memfds that the pool's I/O thread receives
  // (SCM_RIGHTS) — while this thread forks children, which must hold none.
  g_receiving_owner = ::getpid();
  d::TestHook<d::ChannelStep>::at_step = &slow_fd_receipt;
  struct Unhook {
    ~Unhook() { d::TestHook<d::ChannelStep>::at_step = nullptr; }
  } const unhook;
  const std::size_t saved = d::result_via_fd();
  d::result_via_fd() = std::size_t{1} << 20;  // inherited by the workers forked below
  struct Restore {
    std::size_t bytes;
    ~Restore() { d::result_via_fd() = bytes; }
  } const restore{saved};
  mp::Pool pool(2);
  std::vector<int> inputs(40);
  std::iota(inputs.begin(), inputs.end(), 0);
  auto results = pool.map_async(large_result, inputs, 1);
  int forked = 0, leaked = 0;
  while (!results.ready()) {
    mp::Process p([] {
      int memfds = 0;
      for (const auto& target : mproc_test::fd_targets(::getpid()))
        if (target.find("mproc-result") != std::string::npos) ++memfds;
      return memfds == 0 ? 0 : 3;
    });
    p.start();
    REQUIRE(p.join(10s));
    if (p.exitcode() != 0) ++leaked;
    ++forked;
  }
  REQUIRE(results.wait(60s));
  CHECK(results.get().at(39).at(5) == 39);
  CHECK(forked > 10);
  CHECK(leaked == 0);
}
