// A plain struct that is not trivially copyable is sent member by member; a
// pointer member would arrive as an address in the sender's memory: it does
// not compile, naming the struct and the member's type.
#include <string>

#include <mproc/serialize.hpp>

struct Document {
  std::string title;
  const char* body;
};

// expect-error: it is sent member by member
// expect-error: member_cannot_cross<Document, const char
// expect-error: std::string for const char*
int main() { return static_cast<int>(mproc::dumps(Document{"t", "b"}).size()); }
