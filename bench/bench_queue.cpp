// P6: Queue<std::int64_t> from a producer process to a consumer process
// (items per second), beside Boost.Interprocess' message_queue with the same
// item count and capacity; also an unbounded Queue, and items of 1000
// doubles (Queue<std::vector<double>> vs 8000-byte messages). The producer
// is forked per repetition and timed from the start signal to the last
// item received. Run with --benchmark_repetitions=5
// --benchmark_enable_random_interleaving=true
// --benchmark_report_aggregates_only=true and compare medians (interleaving
// spreads load changes of a shared machine over both peers); under
// `taskset -c 0` both processes share one CPU.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mproc/queue.hpp>

#ifdef MPROC_BENCH_HAVE_BOOST
#include <boost/interprocess/ipc/message_queue.hpp>
#endif

namespace mp = mproc;

namespace {

constexpr int kItems = 1'000'000;
constexpr int kVectorItems = 50'000;
constexpr int kCapacity = 1024;  // items, for the bounded queues
constexpr std::size_t kDoubles = 1000;

struct StartFlag {
  std::atomic<int> ready{0};
  std::atomic<int> go{0};
};

// Forks a producer running produce(); the caller consumes with consume().
// Returns the seconds from the go signal until consume() returned and the
// producer was reaped.
template <class Produce, class Consume>
double run_transfer(Produce produce, Consume consume) {
  void* mem = ::mmap(nullptr, sizeof(StartFlag), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) std::abort();
  auto* flag = ::new (mem) StartFlag();
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    flag->ready.store(1);
    while (flag->go.load() == 0) {
    }
    produce();
    ::_exit(0);
  }
  while (flag->ready.load() == 0) {
  }
  const auto start = std::chrono::steady_clock::now();
  flag->go.store(1);
  const bool ok = consume();
  int status = 0;
  ::waitpid(pid, &status, 0);
  const auto stop = std::chrono::steady_clock::now();
  ::munmap(mem, sizeof(StartFlag));
  if (!ok || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return -1;
  return std::chrono::duration<double>(stop - start).count();
}

template <class Run>
void transfer_bench(benchmark::State& state, int items, Run run) {
  for (auto _ : state) {
    const double seconds = run();
    if (seconds < 0) {
      state.SkipWithError("wrong items received");
      return;
    }
    state.SetIterationTime(seconds);
  }
  state.SetItemsProcessed(state.iterations() * items);
}

// ---------------------------------------------------------------- mproc

void queue_int64(benchmark::State& state, int maxsize) {
  mp::Queue<std::int64_t> q(maxsize);
  transfer_bench(state, kItems, [&] {
    return run_transfer(
        [&] {
          for (std::int64_t i = 0; i < kItems; ++i) q.put(i);
        },
        [&] {
          std::int64_t sum = 0;
          for (int i = 0; i < kItems; ++i) sum += q.get();
          return sum == std::int64_t{kItems} * (kItems - 1) / 2;
        });
  });
}
void BM_P6_mproc_Queue_int64_bounded(benchmark::State& state) { queue_int64(state, kCapacity); }
void BM_P6_mproc_Queue_int64_unbounded(benchmark::State& state) { queue_int64(state, 0); }
BENCHMARK(BM_P6_mproc_Queue_int64_bounded)->UseManualTime()->Iterations(3)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_P6_mproc_Queue_int64_unbounded)->UseManualTime()->Iterations(3)->Unit(benchmark::kMillisecond);

// Polling an empty queue: get_nowait() throws Empty, try_get() returns
// nullopt (issue 11's new path).
void BM_mproc_Queue_poll_empty_get_nowait(benchmark::State& state) {
  mp::Queue<std::int64_t> q;
  for (auto _ : state) {
    try {
      benchmark::DoNotOptimize(q.get_nowait());
    } catch (const mp::Empty&) {
    }
  }
}
void BM_mproc_Queue_poll_empty_try_get(benchmark::State& state) {
  mp::Queue<std::int64_t> q;
  for (auto _ : state) benchmark::DoNotOptimize(q.try_get());
}
BENCHMARK(BM_mproc_Queue_poll_empty_get_nowait)->Unit(benchmark::kNanosecond);
BENCHMARK(BM_mproc_Queue_poll_empty_try_get)->Unit(benchmark::kNanosecond);

void BM_mproc_Queue_vector1000_bounded(benchmark::State& state) {
  mp::Queue<std::vector<double>> q(kCapacity);
  transfer_bench(state, kVectorItems, [&] {
    return run_transfer(
        [&] {
          std::vector<double> v(kDoubles, 1.0);
          for (int i = 0; i < kVectorItems; ++i) {
            v[0] = i;
            q.put(v);
          }
        },
        [&] {
          double sum = 0;
          for (int i = 0; i < kVectorItems; ++i) {
            const auto v = q.get();
            if (v.size() != kDoubles) return false;
            sum += v[0];
          }
          return sum == double(kVectorItems) * (kVectorItems - 1) / 2;
        });
  });
}
BENCHMARK(BM_mproc_Queue_vector1000_bounded)->UseManualTime()->Iterations(3)->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------- Boost

#ifdef MPROC_BENCH_HAVE_BOOST
namespace bip = boost::interprocess;

template <class Body>
void with_message_queue(std::size_t max_msgs, std::size_t msg_size, Body body) {
  const std::string name = "mproc_bench_mq_" + std::to_string(::getpid());
  bip::message_queue::remove(name.c_str());
  {
    bip::message_queue mq(bip::create_only, name.c_str(), max_msgs, msg_size);
    body(mq);
  }
  bip::message_queue::remove(name.c_str());
}

void BM_P6_boost_message_queue_int64(benchmark::State& state) {
  with_message_queue(kCapacity, sizeof(std::int64_t), [&](bip::message_queue& mq) {
    transfer_bench(state, kItems, [&] {
      return run_transfer(
          [&] {
            for (std::int64_t i = 0; i < kItems; ++i) mq.send(&i, sizeof i, 0);
          },
          [&] {
            std::int64_t sum = 0;
            for (int i = 0; i < kItems; ++i) {
              std::int64_t x = 0;
              bip::message_queue::size_type got = 0;
              unsigned prio = 0;
              mq.receive(&x, sizeof x, got, prio);
              if (got != sizeof x) return false;
              sum += x;
            }
            return sum == std::int64_t{kItems} * (kItems - 1) / 2;
          });
    });
  });
}
BENCHMARK(BM_P6_boost_message_queue_int64)->UseManualTime()->Iterations(3)->Unit(benchmark::kMillisecond);

void BM_boost_message_queue_vector1000(benchmark::State& state) {
  with_message_queue(kCapacity, kDoubles * sizeof(double), [&](bip::message_queue& mq) {
    transfer_bench(state, kVectorItems, [&] {
      return run_transfer(
          [&] {
            std::vector<double> v(kDoubles, 1.0);
            for (int i = 0; i < kVectorItems; ++i) {
              v[0] = i;
              mq.send(v.data(), v.size() * sizeof(double), 0);
            }
          },
          [&] {
            double sum = 0;
            for (int i = 0; i < kVectorItems; ++i) {
              std::vector<double> v(kDoubles);  // what a receiver hands on, as Queue::get does
              bip::message_queue::size_type got = 0;
              unsigned prio = 0;
              mq.receive(v.data(), v.size() * sizeof(double), got, prio);
              if (got != kDoubles * sizeof(double)) return false;
              sum += v[0];
            }
            return sum == double(kVectorItems) * (kVectorItems - 1) / 2;
          });
    });
  });
}
BENCHMARK(BM_boost_message_queue_vector1000)->UseManualTime()->Iterations(3)->Unit(benchmark::kMillisecond);
#endif

}  // namespace

BENCHMARK_MAIN();
