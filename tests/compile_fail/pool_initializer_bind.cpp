// PoolOptions::initializer takes the function and its arguments; an
// mp::bind(...) there is refused with a message saying so, not a template
// error from deep inside the pool.
#include <string>

#include <mproc/bind.hpp>
#include <mproc/pool.hpp>

// expect-error: mproc::PoolOptions::initializer: pass the function and its arguments
void load(const std::string& path) { (void)path; }

int main() {
  auto options = mproc::PoolOptions().initializer(mproc::bind(load, std::string("model.bin")));
  (void)options;
}
