// A trivially copyable struct with a reference member refers to the sender's
// memory: it cannot be copied bitwise, and says so (#7).
#include <mproc/serialize.hpp>

struct Ref {
  const int& value;
};

// expect-error: mproc cannot check that it holds no pointer
// expect-error: cannot_inspect_members<Ref>
int main() {
  const int x = 1;
  return static_cast<int>(mproc::dumps(Ref{x}).size());
}
