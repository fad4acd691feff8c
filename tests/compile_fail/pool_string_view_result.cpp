// A Pool task returning std::string_view would hand the parent a view of the
// worker's memory: it does not compile and says to return std::string (#7).
#include <string>
#include <string_view>
#include <vector>

#include <mproc/pool.hpp>

// expect-error: std::string_view points into the sender's memory
// expect-error: receive std::string instead
// expect-error: decode_site::pool_result
std::string_view first_word(std::string s) { return std::string_view(s).substr(0, 1); }

int main() {
  mproc::Pool pool(2);
  auto words = pool.map(first_word, std::vector<std::string>{"a b", "c d"});
  return static_cast<int>(words.size());
}
