// A trivially copyable struct with a pointer member used to be copied bitwise,
// so the receiver got an address in the sender's memory: now it does not
// compile, naming the struct and the member's type (#7).
#include <mproc/serialize.hpp>

struct Message {
  int id;
  const char* text;
};

// expect-error: is a pointer or a view that would point into the sender's memory
// (GCC spells the member's type "const char*", Clang "const char *".)
// expect-error: member_points_into_sender<Message, const char
// expect-error: std::string for const char*
int main() { return static_cast<int>(mproc::dumps(Message{1, "hello"}).size()); }
