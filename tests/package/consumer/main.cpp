// A consumer of the installed or vendored mproc package.
#include <cstdio>

#include <mproc/mproc.hpp>

namespace mp = mproc;

int main() {
  if (mp::cpu_count() < 1) return 1;
  try {
    throw mp::TimeoutError();
  } catch (const mp::ProcessError&) {
  }
  std::printf("mproc %s ok\n", MPROC_VERSION_STRING);
  return 0;
}
