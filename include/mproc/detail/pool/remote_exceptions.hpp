// mproc/detail/pool/remote_exceptions.hpp — the exception types that cross
// typed, and how a task's exception is captured and rebuilt.
//
// Layer detail/pool, above serialization and errors.hpp (RemoteTrace,
// RemoteError, RemoteException<E>). A worker captures the exception a task
// threw (capture_task_error) with, when its exact type is in the registry,
// the encoding of its fields; the owner rebuilds it (rebuild_task_error) as
// RemoteException<E>, or RemoteError for any other type. protocol.hpp puts
// the captured error on the wire; remote_exception.hpp (mp::register_exception)
// adds user types to the registry. Used by the process Pool and mpi::Pool.
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <variant>
#include <vector>

#include <unistd.h>

#include <mproc/detail/util/demangle.hpp>
#include <mproc/errors.hpp>
#include <mproc/serialize.hpp>

namespace mproc::detail {

// One exception type that crosses typed. Entries are immutable once listed.
struct RemoteKind {
  const std::type_info* type;
  std::string name;  // demangle(*type): the type's name on the wire
  // Worker side: appends the fields of `e` (whose dynamic type is *type) to
  // `fields`; false if this one cannot cross typed (it goes as RemoteError).
  bool (*encode)(const std::exception& e, std::vector<std::byte>& fields);
  // Owner side: rebuilds the exception as RemoteException<E> from `fields`
  // (untrusted); throws ProcessError (or what E's serializer throws) if they
  // are malformed.
  std::exception_ptr (*decode)(std::span<const std::byte> fields, std::string type_name, std::string message, int pid);
  const RemoteKind* next = nullptr;
};

// Encodes and decodes an E that crosses typed: its fields through its
// serializer when it has one, else only its message (E constructible from a
// std::string) or nothing (E default-constructible).
template <class E>
bool encode_remote_fields(const std::exception& e, std::vector<std::byte>& fields) {
  if constexpr (serializable<E>) {
    const E* typed = dynamic_cast<const E*>(&e);
    if (typed == nullptr) return false;
    Writer w(fields);
    w.write(*typed);
  }
  return true;
}

template <class E>
std::exception_ptr decode_remote_fields(std::span<const std::byte> fields, std::string type_name, std::string message,
                                        int pid) {
  auto original = [&] {
    if constexpr (serializable<E>) {
      Reader r(fields);
      E value = r.read<E>();
      if (r.remaining() != 0) throw ProcessError(std::to_string(r.remaining()) + " bytes left after the fields");
      return value;
    } else {
      if (!fields.empty()) throw ProcessError("fields given for a type that has none");
      if constexpr (std::is_constructible_v<E, const std::string&>) {
        return E(message);
      } else {
        return E();
      }
    }
  };
  E rebuilt = original();  // (before `message` is moved from)
  return std::make_exception_ptr(RemoteException<E>(std::move(rebuilt), std::move(type_name), std::move(message), pid));
}

// std::system_error crosses typed when its category is the generic or the
// system one (the same in every process); any other category cannot be
// named in another process, so that error goes as RemoteError.
inline bool encode_system_error(const std::exception& e, std::vector<std::byte>& fields) {
  const auto* error = dynamic_cast<const std::system_error*>(&e);
  if (error == nullptr) return false;
  const std::error_category& category = error->code().category();
  std::uint8_t which = 0;
  if (&category == &std::generic_category()) {
    which = 0;
  } else if (&category == &std::system_category()) {
    which = 1;
  } else {
    return false;
  }
  Writer w(fields);
  w.write(static_cast<std::int32_t>(error->code().value()));
  w.write(which);
  return true;
}

inline std::exception_ptr decode_system_error(std::span<const std::byte> fields, std::string type_name,
                                              std::string message, int pid) {
  Reader r(fields);
  const auto value = r.read<std::int32_t>();
  const auto which = r.read<std::uint8_t>();
  if (which > 1) throw ProcessError("bad error category " + std::to_string(which));
  if (r.remaining() != 0) throw ProcessError(std::to_string(r.remaining()) + " bytes left after the fields");
  std::system_error original(std::error_code(value, which == 0 ? std::generic_category() : std::system_category()));
  return std::make_exception_ptr(
      RemoteException<std::system_error>(std::move(original), std::move(type_name), std::move(message), pid));
}

// The registry: a list that only grows, read without a lock (a worker
// forked while another thread registers cannot find it locked) and never
// freed (nodes stay reachable from the list's head).
class RemoteKinds {
 public:
  // The registry of this process, holding the standard types from the start.
  static RemoteKinds& instance() {
    static RemoteKinds* const kinds = [] {
      auto* k = new RemoteKinds;
      k->add_standard();
      return k;
    }();
    return *kinds;
  }

  // The entry of exactly `type`, or null. Non-blocking, thread-safe.
  const RemoteKind* find(const std::type_info& type) const noexcept {
    for (const RemoteKind* k = head_.load(std::memory_order_acquire); k != nullptr; k = k->next)
      if (*k->type == type) return k;
    return nullptr;
  }
  // The entry of the type named `name`, or null. Non-blocking, thread-safe.
  const RemoteKind* find(std::string_view name) const noexcept {
    for (const RemoteKind* k = head_.load(std::memory_order_acquire); k != nullptr; k = k->next)
      if (k->name == name) return k;
    return nullptr;
  }

  // Lists `type` under `name` (demangle(type)). Returns false (and changes
  // nothing) if it is listed already. Throws ValueError if another type has
  // the same name (two types in anonymous namespaces of different files,
  // say): the owner could not tell them apart. Thread-safe.
  bool add(const std::type_info& type, std::string name, decltype(RemoteKind::encode) encode,
           decltype(RemoteKind::decode) decode) {
    std::lock_guard lock(writers_);
    if (find(type) != nullptr) return false;
    if (find(name) != nullptr)
      throw ValueError("mproc::register_exception: another exception type is already registered as \"" + name +
                       "\"; a type crosses by its name, which must be unique");
    auto* k = new RemoteKind{&type, std::move(name), encode, decode, head_.load(std::memory_order_relaxed)};
    head_.store(k, std::memory_order_release);
    return true;
  }

 private:
  RemoteKinds() = default;

  template <class... E>
  void add_all() {
    (add(typeid(E), demangle(typeid(E)), &encode_remote_fields<E>, &decode_remote_fields<E>), ...);
  }

  void add_standard() {
    add_all<std::exception, std::logic_error, std::invalid_argument, std::domain_error, std::length_error,
            std::out_of_range, std::runtime_error, std::range_error, std::overflow_error, std::underflow_error,
            std::bad_alloc, std::bad_array_new_length, std::bad_cast, std::bad_typeid, std::bad_optional_access,
            std::bad_variant_access, std::bad_weak_ptr>();
    add(typeid(std::system_error), demangle(typeid(std::system_error)), &encode_system_error, &decode_system_error);
  }

  std::mutex writers_;
  std::atomic<const RemoteKind*> head_{nullptr};
};

// A task's exception as it crosses to the owner.
struct TaskError {
  std::string type_name;  // as the worker names it ("std::invalid_argument")
  std::string message;    // its what()
  int pid = 0;            // the process it was raised in
  bool typed = false;     // its type is registered: `fields` hold its encoding
  std::vector<std::byte> fields;
};

// The exception in flight, typed when its exact type is registered and its
// fields could be encoded (else it will arrive as RemoteError). Call only
// inside a catch block. Throws std::bad_alloc.
inline TaskError capture_task_error() {
  TaskError out;
  out.pid = static_cast<int>(::getpid());
  try {
    throw;
  } catch (const std::exception& e) {
    out.type_name = demangle(typeid(e));
    out.message = e.what();
    if (const RemoteKind* kind = RemoteKinds::instance().find(typeid(e))) {
      try {
        out.typed = kind->encode(e, out.fields);
      } catch (...) {
        out.typed = false;  // a serializer that throws: the error goes as RemoteError
      }
      if (!out.typed) out.fields.clear();
    }
  } catch (...) {
    ExceptionInfo info = describe_current_exception();
    out.type_name = std::move(info.type_name);
    out.message = std::move(info.message);
  }
  return out;
}

// The exception the owner raises for a task's error from another process:
// RemoteException<E> when `typed` and E is registered here, RemoteError
// otherwise; ProcessError (naming the type) when the fields of a registered
// type are malformed (they are untrusted). Never throws (an exception_ptr to
// std::bad_alloc when memory runs out).
inline std::exception_ptr rebuild_task_error(std::string type_name, std::string message, int pid, bool typed,
                                             std::span<const std::byte> fields) noexcept {
  try {
    if (typed) {
      if (const RemoteKind* kind = RemoteKinds::instance().find(std::string_view(type_name))) {
        try {
          return kind->decode(fields, type_name, message, pid);
        } catch (const std::bad_alloc&) {
          throw;
        } catch (...) {
          return std::make_exception_ptr(ProcessError(
              "mproc: Pool: malformed result from a worker (the fields of its " + type_name +
              " cannot be decoded: " + describe_current_exception().message + "); its message: " + message));
        }
      }
    }
    return std::make_exception_ptr(RemoteError(std::move(type_name), std::move(message), pid));
  } catch (...) {
    return std::current_exception();
  }
}

}  // namespace mproc::detail
