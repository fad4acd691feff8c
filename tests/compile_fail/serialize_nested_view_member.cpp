// A view two levels down, in a struct inside a struct inside a vector, is
// found too: the error names the innermost struct and the view (#7).
#include <string_view>
#include <vector>

#include <mproc/serialize.hpp>

struct Label {
  int id;
  std::string_view text;
};
struct Item {
  double weight;
  Label label;
};

// expect-error: is a pointer or a view that would point into the sender's memory
// expect-error: member_points_into_sender<Label, std::basic_string_view<char>
int main() { return static_cast<int>(mproc::dumps(std::vector<Item>{}).size()); }
