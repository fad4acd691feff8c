// Second translation unit: includes every header again.
#include <mproc/mproc.hpp>

int other_cpu_count() { return mproc::cpu_count(); }
