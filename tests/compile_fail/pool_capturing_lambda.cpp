// A capturing lambda cannot run in a worker process: Pool says what to do instead.
#include <vector>

#include <mproc/pool.hpp>

// expect-error: the task function must be a function pointer or a captureless lambda
// expect-error: bind the state to it
int main() {
  mproc::Pool pool(1);
  int offset = 3;
  return pool.map([offset](int x) { return x + offset; }, std::vector<int>{1, 2})[0];
}
