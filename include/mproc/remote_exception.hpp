// mproc/remote_exception.hpp — registering your own exception types so that
// a task's exception of that type reaches the caller as itself.
//
// Public layer, above serialization and the pool's exception registry
// (detail/pool/remote_exceptions.hpp). The types in errors.hpp
// (RemoteTrace, RemoteError, RemoteException<E>) need nothing from here.
//
// An exception a task throws in a process Pool or mpi::Pool worker is
// rethrown by the call that collects the task's result (get(), map(), an
// imap iterator's next()). Which type it has there:
//
//   - its exact type is known (the standard types below, or registered
//     here): RemoteException<E>, an E, so `catch (const E&)` and
//     `catch (const std::exception&)` work, with what() "<type>: <message>
//     (raised in worker process <pid>)". Not a ProcessError.
//   - any other type, a subclass of a known type included (matching is by
//     exact type, never by a base): RemoteError, a ProcessError, with
//     type_name() and message().
//   - the machinery failed around the task (an argument or result could not
//     be encoded, decoded or sent; memory ran out outside the task): RemoteError.
//   - the fields of a known type arrive malformed: ProcessError naming it.
//
// Both RemoteException<E> and RemoteError are RemoteTrace, so `catch (const
// mp::RemoteTrace&)` catches every task failure from another process. A pool
// initializer's exception stays RemoteError (the pool is broken; the
// exception is not the task's).
//
// Known from the start: std::exception, std::logic_error,
// std::invalid_argument, std::domain_error, std::length_error,
// std::out_of_range, std::runtime_error, std::range_error,
// std::overflow_error, std::underflow_error (their message crosses),
// std::bad_alloc, std::bad_array_new_length, std::bad_cast, std::bad_typeid,
// std::bad_optional_access, std::bad_variant_access, std::bad_weak_ptr, and
// std::system_error with the generic or system category (its code crosses;
// another category cannot be named in another process: RemoteError).
//
//   struct QuotaExceeded : std::runtime_error {
//     QuotaExceeded() : std::runtime_error("quota exceeded") {}
//     std::string user;
//     long bytes = 0;
//   };
//   MPROC_SERIALIZE(QuotaExceeded, user, bytes);
//   inline const bool quota_registered = mp::register_exception<QuotaExceeded>();
//   ...
//   try { pool.map(upload, files); }
//   catch (const QuotaExceeded& e) { e.user, e.bytes; }  // e.what() names the worker
#pragma once

#include <exception>
#include <string>
#include <type_traits>
#include <typeinfo>

#include <mproc/detail/pool/remote_exceptions.hpp>
#include <mproc/errors.hpp>
#include <mproc/serialize.hpp>

namespace mproc {

// Makes a task's exception of exact type E reach the caller as
// RemoteException<E> (an E) instead of RemoteError. E derives from
// std::exception, is not final and is move-constructible; what crosses is:
//   - E's fields, through its serializer (MPROC_SERIALIZE or a
//     mproc::serializer<E> specialization), when it has one (E's base
//     message need not: the remote what() is kept apart and is what the
//     rebuilt exception's what() shows);
//   - else only the message, if E is constructible from a std::string;
//   - else nothing (E default-constructible).
// Call it in the pool's owner and its workers before the pool is created:
// at namespace scope, through an inline variable, as above (workers are
// forks of the owner or of a process forked from it, so they inherit what
// is registered at that time; a type registered later in the owner only
// crosses from workers created afterwards, and until then arrives as
// RemoteError). For mpi::Pool every rank must register it (the same program
// does). Returns true, or false if E was registered already (nothing
// changes). Throws ValueError if another type with the same name
// (demangled, e.g. two types of anonymous namespaces) is registered: a
// type crosses by its name. Thread-safe; non-blocking but for other
// registrations.
template <class E>
bool register_exception() {
  static_assert(std::is_class_v<E> && std::is_base_of_v<std::exception, E>,
                "mproc::register_exception<E>: E must derive from std::exception");
  static_assert(!std::is_final_v<E>,
                "mproc::register_exception<E>: E must not be final (it is rebuilt as a "
                "RemoteException<E> deriving from E)");
  static_assert(std::is_move_constructible_v<E>, "mproc::register_exception<E>: E must be move-constructible");
  if constexpr (serializable<E>) {
    static_assert(owning_decodable<E>,
                  "mproc::register_exception<E>: E's fields must own their data (no std::string_view or std::span)");
  } else {
    static_assert(std::is_constructible_v<E, const std::string&> || std::is_default_constructible_v<E>,
                  "mproc::register_exception<E>: E needs a serializer (MPROC_SERIALIZE), a constructor from "
                  "std::string (the message) or a default constructor");
  }
  return detail::RemoteKinds::instance().add(typeid(E), detail::demangle(typeid(E)), &detail::encode_remote_fields<E>,
                                             &detail::decode_remote_fields<E>);
}

}  // namespace mproc
