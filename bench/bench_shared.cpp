// P7: `Value<int>` increments under get_lock() from 2 processes (total
// increments per second), beside the same loop over a process-shared
// pthread mutex, a robust one, and Boost.Interprocess' interprocess_mutex;
// plus uncontended lock/unlock costs, and the cost of creating (and
// destroying) Values, Arrays and SharedMemory blocks. Python's Value('i') does 1.1 M/s
// (bench/README.md). Run with --benchmark_repetitions=5
// --benchmark_report_aggregates_only=true and compare medians.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <new>

#include <benchmark/benchmark.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mproc/shared_memory.hpp>
#include <mproc/sharedctypes.hpp>
#include <mproc/synchronize.hpp>

#ifdef MPROC_BENCH_HAVE_BOOST
#include <boost/interprocess/sync/interprocess_mutex.hpp>
#endif

namespace mp = mproc;

namespace {

constexpr int kPerProcess = 1'000'000;

// Anonymous shared memory for the peers' mutexes and the start flags.
template <class T>
T* shared_new() {
  void* p = ::mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) std::abort();
  return ::new (p) T();
}
template <class T>
void shared_delete(T* p) {
  p->~T();
  ::munmap(p, sizeof(T));
}

struct StartFlags {
  std::atomic<int> ready{0};
  std::atomic<int> go{0};
};

// Runs `body(n)` in this process and a forked child at the same moment;
// returns the wall time until both finished.
template <class Body>
double run_pair(Body body) {
  auto* flags = shared_new<StartFlags>();
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    flags->ready.store(1);
    while (flags->go.load() == 0) {
    }
    body(kPerProcess);
    ::_exit(0);
  }
  while (flags->ready.load() == 0) {
  }
  const auto start = std::chrono::steady_clock::now();
  flags->go.store(1);
  body(kPerProcess);
  int status = 0;
  ::waitpid(pid, &status, 0);
  const auto stop = std::chrono::steady_clock::now();
  shared_delete(flags);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) std::abort();
  return std::chrono::duration<double>(stop - start).count();
}

template <class Body, class Check>
void contended(benchmark::State& state, Body body, Check final_count) {
  for (auto _ : state) {
    const double seconds = run_pair(body);
    const long got = final_count();
    if (got != 2L * kPerProcess) {
      state.SkipWithError("wrong final count");
      return;
    }
    state.SetIterationTime(seconds);
  }
  state.SetItemsProcessed(state.iterations() * 2 * kPerProcess);
}

// ---------------------------------------------------------------- P7

void BM_P7_mproc_Value_get_lock(benchmark::State& state) {
  for (auto _ : state) {
    mp::Value<int> v(0);
    const double seconds = run_pair([&](int n) {
      for (int i = 0; i < n; ++i) {
        std::lock_guard guard(v.get_lock());
        v.get_obj() += 1;
      }
    });
    if (v.get() != 2 * kPerProcess) {
      state.SkipWithError("wrong final count");
      return;
    }
    state.SetIterationTime(seconds);
  }
  state.SetItemsProcessed(state.iterations() * 2 * kPerProcess);
}
BENCHMARK(BM_P7_mproc_Value_get_lock)->UseManualTime()->Iterations(3)->Unit(benchmark::kMillisecond);

void BM_P7_mproc_Lock_RawValue(benchmark::State& state) {
  mp::Lock lock;
  mp::RawValue<int> counter(0);
  contended(
      state,
      [&](int n) {
        for (int i = 0; i < n; ++i) {
          std::lock_guard guard(lock);
          counter.get_obj() += 1;
        }
      },
      [&] { return static_cast<long>(std::exchange(counter.get_obj(), 0)); });
}
BENCHMARK(BM_P7_mproc_Lock_RawValue)->UseManualTime()->Iterations(3)->Unit(benchmark::kMillisecond);

struct PthreadShared {
  pthread_mutex_t mutex;
  int counter = 0;
  explicit PthreadShared(bool robust = false) {
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    if (robust) pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&mutex, &attr);
    pthread_mutexattr_destroy(&attr);
  }
  ~PthreadShared() { pthread_mutex_destroy(&mutex); }
};
struct RobustShared : PthreadShared {
  RobustShared() : PthreadShared(true) {}
};

template <class Shared>
void pthread_contended(benchmark::State& state) {
  auto* s = shared_new<Shared>();
  contended(
      state,
      [&](int n) {
        for (int i = 0; i < n; ++i) {
          pthread_mutex_lock(&s->mutex);
          s->counter += 1;
          pthread_mutex_unlock(&s->mutex);
        }
      },
      [&] { return static_cast<long>(std::exchange(s->counter, 0)); });
  shared_delete(s);
}
void BM_P7_pthread_mutex_pshared(benchmark::State& state) { pthread_contended<PthreadShared>(state); }
void BM_P7_pthread_mutex_robust(benchmark::State& state) { pthread_contended<RobustShared>(state); }
BENCHMARK(BM_P7_pthread_mutex_pshared)->UseManualTime()->Iterations(3)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_P7_pthread_mutex_robust)->UseManualTime()->Iterations(3)->Unit(benchmark::kMillisecond);

#ifdef MPROC_BENCH_HAVE_BOOST
struct BoostShared {
  boost::interprocess::interprocess_mutex mutex;
  int counter = 0;
};
void BM_P7_boost_interprocess_mutex(benchmark::State& state) {
  auto* s = shared_new<BoostShared>();
  contended(
      state,
      [&](int n) {
        for (int i = 0; i < n; ++i) {
          std::lock_guard guard(s->mutex);
          s->counter += 1;
        }
      },
      [&] { return static_cast<long>(std::exchange(s->counter, 0)); });
  shared_delete(s);
}
BENCHMARK(BM_P7_boost_interprocess_mutex)->UseManualTime()->Iterations(3)->Unit(benchmark::kMillisecond);
#endif

// ------------------------------------------------------- uncontended

template <class L>
void uncontended(benchmark::State& state, L& lock) {
  for (auto _ : state) {
    lock.lock();
    lock.unlock();
  }
}
void BM_uncontended_mproc_Lock(benchmark::State& state) {
  mp::Lock lock;
  uncontended(state, lock);
}
void BM_uncontended_mproc_RLock(benchmark::State& state) {
  mp::RLock lock;
  uncontended(state, lock);
}
void BM_uncontended_mproc_Value_get_lock_increment(benchmark::State& state) {
  mp::Value<int> v(0);
  for (auto _ : state) {
    std::lock_guard guard(v.get_lock());
    v.get_obj() += 1;
  }
  benchmark::DoNotOptimize(v.get());
}
struct PthreadLockable {
  pthread_mutex_t* m;
  void lock() { pthread_mutex_lock(m); }
  void unlock() { pthread_mutex_unlock(m); }
};
void BM_uncontended_pthread_mutex_pshared(benchmark::State& state) {
  auto* s = shared_new<PthreadShared>();
  PthreadLockable l{&s->mutex};
  uncontended(state, l);
  shared_delete(s);
}
void BM_uncontended_pthread_mutex_robust(benchmark::State& state) {
  auto* s = shared_new<RobustShared>();
  PthreadLockable l{&s->mutex};
  uncontended(state, l);
  shared_delete(s);
}
void BM_uncontended_std_mutex(benchmark::State& state) {
  std::mutex m;
  uncontended(state, m);
}
BENCHMARK(BM_uncontended_mproc_Lock);
BENCHMARK(BM_uncontended_mproc_RLock);
BENCHMARK(BM_uncontended_mproc_Value_get_lock_increment);
BENCHMARK(BM_uncontended_pthread_mutex_pshared);
BENCHMARK(BM_uncontended_pthread_mutex_robust);
BENCHMARK(BM_uncontended_std_mutex);
#ifdef MPROC_BENCH_HAVE_BOOST
void BM_uncontended_boost_interprocess_mutex(benchmark::State& state) {
  auto* s = shared_new<BoostShared>();
  uncontended(state, s->mutex);
  shared_delete(s);
}
BENCHMARK(BM_uncontended_boost_interprocess_mutex);
#endif

// ---------------------------------------------------------- creation

// Create and destroy one object per iteration. A Value and a small Array
// come from the arena (no system call once its chunk exists); a 1 MiB Array
// and a SharedMemory block get a segment of their own (memfd_create,
// fchmod, ftruncate, seals, fstat, mmap; munmap and close on destruction).
void BM_create_Value_int(benchmark::State& state) {
  for (auto _ : state) {
    mp::Value<int> v(1);
    benchmark::DoNotOptimize(&v.get_obj());
  }
}
void BM_create_Array_double_100(benchmark::State& state) {
  for (auto _ : state) {
    mp::Array<double> a(100);
    benchmark::DoNotOptimize(a.data());
  }
}
void BM_create_Array_double_1MiB(benchmark::State& state) {
  for (auto _ : state) {
    mp::Array<double> a(131072);
    benchmark::DoNotOptimize(a.data());
  }
}
void BM_create_SharedMemory_64KiB(benchmark::State& state) {
  for (auto _ : state) {
    mp::SharedMemory shm(65536);
    benchmark::DoNotOptimize(shm.buf().data());
  }
}
BENCHMARK(BM_create_Value_int);
BENCHMARK(BM_create_Array_double_100);
BENCHMARK(BM_create_Array_double_1MiB);
BENCHMARK(BM_create_SharedMemory_64KiB);

}  // namespace

BENCHMARK_MAIN();
