// Human-readable type names, for errors that cross process boundaries.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstdlib>
#include <exception>
#include <string>
#include <typeinfo>

#include <mproc/detail/util/lean_std.hpp>
#include <mproc/detail/util/type_name.hpp>

#if __has_include(<cxxabi.h>)
#include <cxxabi.h>
#define MPROC_DETAIL_HAS_CXXABI 1
#endif

namespace mproc::detail {

// "std::invalid_argument" for typeid(std::invalid_argument); the standard
// library's inline ABI namespace left out ("std::system_error", never
// "std::__1::system_error"), so a name reads the same under every library.
inline std::string demangle(const std::type_info& type) {
#ifdef MPROC_DETAIL_HAS_CXXABI
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> name(abi::__cxa_demangle(type.name(), nullptr, nullptr, &status), std::free);
  if (status == 0 && name) return readable_type_name(name.get());
#endif
  return type.name();
}

// Type name and message of the exception in flight, for reporting it in
// another process. Call only inside a catch block.
struct ExceptionInfo {
  std::string type_name;
  std::string message;
};

inline ExceptionInfo describe_current_exception() {
  try {
    throw;
  } catch (const std::exception& e) {
    return {demangle(typeid(e)), e.what()};
  } catch (...) {
#ifdef MPROC_DETAIL_HAS_CXXABI
    if (const std::type_info* t = abi::__cxa_current_exception_type()) return {demangle(*t), ""};
#endif
    return {"unknown exception", ""};
  }
}

}  // namespace mproc::detail
