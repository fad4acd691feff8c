// What mproc sees of this machine: the version and the usable CPU count
// (Python: multiprocessing.cpu_count(), honouring CPU affinity).
#include <cstdio>

#include <mproc/mproc.hpp>

namespace mp = mproc;

// expect-output: ^mproc [0-9]+\.[0-9]+\.[0-9]+
// expect-output: cpu_count: [1-9][0-9]*
int main() {
  std::printf("mproc %s\n", MPROC_VERSION_STRING);
  std::printf("cpu_count: %d\n", mp::cpu_count());
  return 0;
}
