// A consumer of the installed or vendored mproc package.
#include <mproc/mproc.hpp>

#include <cstdio>

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
