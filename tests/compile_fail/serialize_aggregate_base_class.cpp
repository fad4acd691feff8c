// Structured bindings do not reach the members of a base class, so a plain
// struct with one is not sent member by member: it does not compile, and the
// error says to write MPROC_SERIALIZE.
#include <string>

#include <mproc/serialize.hpp>

struct Header {
  int id = 0;
};
struct Message : Header {
  std::string text;
};

// expect-error: aggregate_has_base_class<Message>
// expect-error: MPROC_SERIALIZE(T, base_member..., member...)
int main() { return static_cast<int>(mproc::dumps(Message{}).size()); }
