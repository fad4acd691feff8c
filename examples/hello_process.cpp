// The article's first multiprocessing sample: run a function in a child
// process and wait for it.
//
//   Python                                   C++
//   p = Process(target=f, args=('world',))   mp::Process p(f, "world");
//   p.start()                                p.start();
//   p.join()                                 p.join();
#include <cstdio>
#include <string>

#include <mproc/process.hpp>

namespace mp = mproc;

void f(const std::string& name) { std::printf("hello %s\n", name.c_str()); }

// expect-output: ^hello world
// expect-output: exit code 0
int main() {
  mp::Process p(f, "world");
  p.start();
  p.join();
  std::printf("%s exit code %d\n", p.name().c_str(), *p.exitcode());
  return 0;
}
