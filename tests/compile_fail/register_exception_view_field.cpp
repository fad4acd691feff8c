// A registered type's fields are decoded in the parent from the worker's
// bytes: a view field would point into a buffer that is gone.
#include <stdexcept>
#include <string_view>

#include <mproc/remote_exception.hpp>
#include <mproc/serialize.hpp>

// expect-error: E's fields must own their data
class BadKey : public std::exception {
 public:
  BadKey() = default;
  explicit BadKey(std::string_view key) : key_(key) {}
  const char* what() const noexcept override { return "bad key"; }

 private:
  friend struct mproc::serializer<BadKey>;
  std::string_view key_;
};
MPROC_SERIALIZE(BadKey, key_)

int main() { return mproc::register_exception<BadKey>() ? 0 : 1; }
