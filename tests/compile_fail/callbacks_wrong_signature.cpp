// A result callback that cannot take the task's result, or an error callback
// that cannot take a std::exception_ptr, is refused with a message saying so.
#include <string>

#include <mproc/thread_pool.hpp>

// expect-error: on_result must be callable with the result (const R&)
// expect-error: on_error must be callable with a std::exception_ptr
int main() {
  mproc::ThreadPool pool(1);
  auto a = pool.apply_async(mproc::callbacks([](const std::string&) {}), [] { return 1; });
  auto b = pool.apply_async(mproc::callbacks(nullptr, [](int) {}), [] { return 1; });
  return a.get() + b.get();
}
