// With other.cpp: a program of two translation units that both include every
// mproc header. It links only if no header defines a non-inline entity.
#include <cstdio>

#include <mproc/mproc.hpp>

int other_cpu_count();

int main() {
  if (other_cpu_count() != mproc::cpu_count()) return 1;
  std::puts("two_tu ok");
  return 0;
}
