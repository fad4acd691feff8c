// A registered type is rebuilt in the parent as RemoteException<E>, which
// derives from E: a final E is refused, saying why.
#include <stdexcept>

#include <mproc/remote_exception.hpp>

// expect-error: E must not be final
struct QuotaExceeded final : std::runtime_error {
  using std::runtime_error::runtime_error;
};

int main() { return mproc::register_exception<QuotaExceeded>() ? 0 : 1; }
