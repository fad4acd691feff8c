// mp::bind's state travels to the worker with each chunk: a state type that
// cannot be serialized is refused at compile time, saying which part.
#include <functional>
#include <vector>

#include <mproc/bind.hpp>
#include <mproc/pool.hpp>

// expect-error: mproc::bind: a bound argument's type cannot cross a process boundary
int use(const std::function<int(int)>& g, int x) { return g(x); }

int main() {
  mproc::Pool pool(1);
  return pool.map(mproc::bind(use, std::function<int(int)>([](int v) { return v; })), std::vector<int>{1, 2})[0];
}
