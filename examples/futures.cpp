// examples/futures.cpp — waiting on many things at once, as Python's
// concurrent.futures (as_completed, wait, cancel) and
// multiprocessing.connection.wait do.
//
//   Python                                         C++
//   fs = [ex.submit(score, x) for x in xs]         rs.push_back(pool.submit(score, x));
//   for f in as_completed(fs, timeout=60):         for (const auto& r : mp::as_completed(rs, 60s))
//   done, rest = wait(fs, 60, FIRST_COMPLETED)     auto [done, rest] = mp::wait(rs, 60s, mp::FIRST_COMPLETED);
//   f.cancel()                                     r.cancel()
//   connection.wait([conn, p.sentinel], 10)        mp::connection::wait({conn, *p.sentinel()}, 10s)
// SPDX-License-Identifier: MIT
//
// expect-output: as_completed: sum of squares 0..9 = 285
// expect-output: wait\(FIRST_COMPLETED\): 1 done, 1 not done
// expect-output: cancelled a task that had not started: true \(CancelledError\)
// expect-output: connection::wait: the pipe is ready
// expect-output: connection::wait: the child has exited

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <mproc/connection.hpp>
#include <mproc/futures.hpp>
#include <mproc/pool.hpp>
#include <mproc/process.hpp>
#include <mproc/thread_pool.hpp>
#include <mproc/threading.hpp>

namespace mp = mproc;
using namespace std::chrono_literals;

int square(int x) { return x * x; }

int main() {
  // as_completed: results in the order they finish.
  mp::Pool pool(2);
  std::vector<mp::AsyncResult<int>> rs;
  for (int x = 0; x < 10; ++x) rs.push_back(pool.submit(square, x));
  int sum = 0;
  for (const auto& r : mp::as_completed(rs, 60s)) sum += r.get();
  std::printf("as_completed: sum of squares 0..9 = %d\n", sum);

  // wait(FIRST_COMPLETED): returns as soon as one is done.
  mp::ThreadPool threads(2);
  mp::threading::Event gate;
  std::vector<mp::AsyncResult<int>> two;
  two.push_back(threads.apply_async([] { return 1; }));
  two.push_back(threads.apply_async([&gate] {
    gate.wait();
    return 2;
  }));
  const auto [done, not_done] = mp::wait(two, 60s, mp::FIRST_COMPLETED);
  std::printf("wait(FIRST_COMPLETED): %zu done, %zu not done\n", done.size(), not_done.size());

  // cancel(): a task still queued never runs (the one worker is busy).
  mp::ThreadPool one(1);
  mp::threading::Event hold;
  auto busy = one.apply_async([&hold] { hold.wait(); });
  auto queued = one.apply_async([] { return 42; });
  const bool cancelled = queued.cancel();
  hold.set();
  gate.set();
  busy.get();
  try {
    (void)queued.get();
  } catch (const mp::CancelledError&) {
    std::printf("cancelled a task that had not started: %s (CancelledError)\n", cancelled ? "true" : "false");
  }

  // connection::wait over a Connection and a process's sentinel.
  auto [parent_end, child_end] = mp::Pipe();
  mp::Process child([](mp::Connection& c) { c.send(std::string("hello")); }, std::move(child_end));
  child.start();
  if (mp::connection::wait({parent_end}, 10s) == std::vector<std::size_t>{0})
    std::printf("connection::wait: the pipe is ready\n");
  (void)parent_end.recv<std::string>();
  if (mp::connection::wait({*child.sentinel()}, 10s) == std::vector<std::size_t>{0})
    std::printf("connection::wait: the child has exited\n");
  child.join();
  return 0;
}
