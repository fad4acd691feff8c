// A user type whose MPROC_SERIALIZE members include a view borrows the bytes
// it is decoded from: mp::loads refuses it and says what to hold instead (#7).
#include <string_view>

#include <mproc/serialize.hpp>

struct Label {
  int id = 0;
  std::string_view text;
};
MPROC_SERIALIZE(Label, id, text);

// expect-error: reads views (std::string_view, std::span) pointing into the bytes received
// expect-error: receive a type with owning members (std::string, std::vector<U>) instead
int main() {
  const auto frame = mproc::dumps(Label{1, "one"});
  return mproc::loads<Label>(frame).id;
}
