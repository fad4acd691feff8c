// Without a serializer, a registered type is rebuilt from its message or by
// default construction: a type with neither is refused with the three ways out.
#include <stdexcept>

#include <mproc/remote_exception.hpp>

// expect-error: E needs a serializer (MPROC_SERIALIZE), a constructor from std::string
class Coded : public std::exception {
 public:
  Coded(int code, double where) : code_(code), where_(where) {}
  const char* what() const noexcept override { return "coded"; }

 private:
  int code_;
  double where_;
};

int main() { return mproc::register_exception<Coded>() ? 0 : 1; }
