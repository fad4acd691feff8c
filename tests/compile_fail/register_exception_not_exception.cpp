// Only exception types can be registered to come back typed from a worker.
#include <string>

#include <mproc/remote_exception.hpp>

// expect-error: mproc::register_exception<E>: E must derive from std::exception
struct NotAnError {
  std::string what;
};

int main() { return mproc::register_exception<NotAnError>() ? 0 : 1; }
