// Tests of mproc/remote_exception.hpp: a task's exception in a process Pool
// reaches the caller as its own type (standard and registered types), or as
// RemoteError; malformed fields from a worker give ProcessError.
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <typeinfo>
#include <variant>
#include <vector>

#include <mproc/detail/pool/protocol.hpp>
#include <mproc/pool.hpp>
#include <mproc/remote_exception.hpp>

#include "catch.hpp"

namespace mp = mproc;
using mproc_test::MessageContains;

// A user type with fields, registered: crosses with them.
struct QuotaExceeded : std::runtime_error {
  QuotaExceeded() : std::runtime_error("quota exceeded") {}
  QuotaExceeded(std::string u, long b) : std::runtime_error("quota exceeded for " + u), user(std::move(u)), bytes(b) {}
  std::string user;
  long bytes = 0;
};
MPROC_SERIALIZE(QuotaExceeded, user, bytes);
inline const bool quota_registered = mp::register_exception<QuotaExceeded>();

// A message-only user type, registered (no serializer needed).
struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
inline const bool config_registered = mp::register_exception<ConfigError>();

// Not registered.
struct Unlisted : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// A subclass of a standard type, not registered.
struct BadShard : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// A category other than generic/system.
struct OwnCategory : std::error_category {
  const char* name() const noexcept override { return "own"; }
  std::string message(int) const override { return "own error"; }
};
const OwnCategory& own_category() {
  static const OwnCategory c;
  return c;
}

int throw_kind(int kind) {
  switch (kind) {
    case 0:
      throw std::logic_error("logic");
    case 1:
      throw std::invalid_argument("invalid");
    case 2:
      throw std::domain_error("domain");
    case 3:
      throw std::length_error("length");
    case 4:
      throw std::out_of_range("range");
    case 5:
      throw std::runtime_error("runtime");
    case 6:
      throw std::range_error("range error");
    case 7:
      throw std::overflow_error("overflow");
    case 8:
      throw std::underflow_error("underflow");
    case 9:
      throw std::bad_alloc();
    case 10:
      throw std::system_error(std::make_error_code(std::errc::no_such_file_or_directory), "open model");
    case 11:
      throw std::system_error(EACCES, std::system_category(), "chmod");
    case 12: {
      std::optional<int> none;
      return none.value();
    }
    case 13:
      return std::get<int>(std::variant<int, double>(1.5));
    case 14:
      throw QuotaExceeded("ann", 1 << 20);
    case 15:
      throw ConfigError("no such key: threads");
    case 16:
      throw Unlisted("not listed");
    case 17:
      throw BadShard("shard 3");
    case 18:
      throw std::system_error(1, own_category(), "custom");
    case 19:
      throw 42;
    default:
      return kind;
  }
}

// Rethrows `e` and returns the dynamic type's name when it is a
// RemoteException of E (checked through `catch (const E&)`).
template <class E>
bool arrives_as(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const E& x) {
    return typeid(x) == typeid(mp::RemoteException<E>);
  } catch (...) {
    return false;
  }
}

std::exception_ptr failure_of(mp::Pool& pool, int kind) {
  auto r = pool.apply_async(throw_kind, kind);
  REQUIRE(r.wait(std::chrono::seconds(10)));
  try {
    r.get();
  } catch (...) {
    return std::current_exception();
  }
  FAIL("no exception");
  return nullptr;
}

std::string what_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "(not a std::exception)";
  }
}

const mp::RemoteTrace* trace_of(const std::exception_ptr& e, std::shared_ptr<void>& keep) {
  // The exception object lives as long as the exception_ptr: keep one.
  keep = std::shared_ptr<void>(new std::exception_ptr(e), [](void* p) { delete static_cast<std::exception_ptr*>(p); });
  try {
    std::rethrow_exception(e);
  } catch (const mp::RemoteTrace& t) {
    return &t;
  } catch (...) {
    return nullptr;
  }
}

TEST_CASE("each standard exception arrives as itself, with the worker named in what()") {
  REQUIRE(quota_registered);
  mp::Pool pool(2);
  std::vector<int> raised_in;
  struct Case {
    int kind;
    bool (*check)(const std::exception_ptr&);
    std::string what;
  };
  // The standard library words these two itself (libstdc++ and libc++ differ).
  const std::string bad_alloc_what = std::bad_alloc().what();
  const std::string bad_optional_what = std::bad_optional_access().what();
  const Case cases[] = {
      {0, arrives_as<std::logic_error>, "std::logic_error: logic"},
      {1, arrives_as<std::invalid_argument>, "std::invalid_argument: invalid"},
      {2, arrives_as<std::domain_error>, "std::domain_error: domain"},
      {3, arrives_as<std::length_error>, "std::length_error: length"},
      {4, arrives_as<std::out_of_range>, "std::out_of_range: range"},
      {5, arrives_as<std::runtime_error>, "std::runtime_error: runtime"},
      {6, arrives_as<std::range_error>, "std::range_error: range error"},
      {7, arrives_as<std::overflow_error>, "std::overflow_error: overflow"},
      {8, arrives_as<std::underflow_error>, "std::underflow_error: underflow"},
      {9, arrives_as<std::bad_alloc>, "std::bad_alloc: " + bad_alloc_what},
      {12, arrives_as<std::bad_optional_access>, "std::bad_optional_access: " + bad_optional_what},
      {13, arrives_as<std::bad_variant_access>, "std::bad_variant_access: "},
  };
  for (const Case& c : cases) {
    CAPTURE(c.kind);
    const std::exception_ptr e = failure_of(pool, c.kind);
    CHECK(c.check(e));
    const std::string what = what_of(e);
    CHECK_THAT(what, mproc_test::Contains(c.what));
    std::shared_ptr<void> keep;
    const mp::RemoteTrace* trace = trace_of(e, keep);
    REQUIRE(trace != nullptr);
    CHECK(what == std::string(trace->what()));
    CHECK(what.ends_with(" (raised in worker process " + std::to_string(trace->pid()) + ")"));
    raised_in.push_back(trace->pid());
  }
  const auto pids = pool.worker_pids();  // (workers are not replaced: these raised the exceptions)
  for (int pid : raised_in) CHECK(std::find(pids.begin(), pids.end(), pid) != pids.end());
  // The pool serves on.
  CHECK(pool.apply(throw_kind, 100) == 100);
}

TEST_CASE("a std::system_error of the generic or system category arrives with its code") {
  mp::Pool pool(1);
  try {
    std::rethrow_exception(failure_of(pool, 10));
  } catch (const std::system_error& e) {
    CHECK(e.code() == std::errc::no_such_file_or_directory);
    CHECK(&e.code().category() == &std::generic_category());
    CHECK_THAT(std::string(e.what()), mproc_test::Contains("std::system_error: open model: "));
  }
  try {
    std::rethrow_exception(failure_of(pool, 11));
  } catch (const std::system_error& e) {
    CHECK(e.code().value() == EACCES);
    CHECK(&e.code().category() == &std::system_category());
  }
  // Another category cannot be named in this process: RemoteError.
  try {
    std::rethrow_exception(failure_of(pool, 18));
  } catch (const mp::RemoteError& e) {
    CHECK(e.type_name() == "std::system_error");
    CHECK_THAT(e.message(), mproc_test::Contains("custom"));
  }
}

TEST_CASE("a registered user type arrives with its fields, a message-only one with its message") {
  mp::Pool pool(2);
  try {
    pool.apply(throw_kind, 14);
    FAIL("no exception");
  } catch (const QuotaExceeded& e) {
    CHECK(e.user == "ann");
    CHECK(e.bytes == 1 << 20);
    CHECK_THAT(std::string(e.what()), mproc_test::Contains("QuotaExceeded: quota exceeded for ann (raised in worker"));
  }
  try {
    pool.apply(throw_kind, 15);
    FAIL("no exception");
  } catch (const ConfigError& e) {
    CHECK_THAT(std::string(e.what()), mproc_test::Contains("ConfigError: no such key: threads (raised in worker"));
    CHECK(std::string(e.std::runtime_error::what()) == "no such key: threads");
  }
}

TEST_CASE("an unregistered type, a subclass of a standard type included, arrives as RemoteError") {
  mp::Pool pool(1);
  try {
    pool.apply(throw_kind, 16);
    FAIL("no exception");
  } catch (const mp::RemoteError& e) {
    CHECK(e.type_name() == "Unlisted");
    CHECK(e.message() == "not listed");
    CHECK(std::string(e.what()) == "Unlisted: not listed");
    CHECK(e.pid() == pool.worker_pids().at(0));
  }
  // Exact type only: not sliced to std::invalid_argument.
  try {
    pool.apply(throw_kind, 17);
    FAIL("no exception");
  } catch (const mp::RemoteError& e) {
    CHECK(e.type_name() == "BadShard");
    CHECK(e.message() == "shard 3");
  }
  // Not a std::exception at all.
  REQUIRE_THROWS_MATCHES(pool.apply(throw_kind, 19), mp::RemoteError, MessageContains("int: "));
}

TEST_CASE("map, imap, starmap and apply_async are all typed, and RemoteTrace catches every kind") {
  mp::Pool pool(2);
  std::vector<int> kinds{100, 101, 1, 102, 16};
  REQUIRE_THROWS_AS(pool.map(throw_kind, kinds, 1), mp::RemoteTrace);
  REQUIRE_THROWS_AS(pool.map(throw_kind, std::vector<int>{100, 4, 100}, 3), std::out_of_range);
  REQUIRE_THROWS_AS(pool.starmap(throw_kind, std::vector<std::tuple<int>>{{100}, {14}}), QuotaExceeded);
  auto async = pool.map_async(throw_kind, std::vector<int>{5});
  REQUIRE_THROWS_AS(async.get(std::chrono::seconds(10)), std::runtime_error);
  // imap: each item in turn, the calls around a failed one keep their values.
  for (std::size_t cs : {1u, 5u}) {
    CAPTURE(cs);
    auto it = pool.imap(throw_kind, kinds, cs);
    CHECK(it.next() == 100);
    CHECK(it.next() == 101);
    REQUIRE_THROWS_AS(it.next(), std::invalid_argument);
    CHECK(it.next() == 102);
    REQUIRE_THROWS_AS(it.next(), mp::RemoteError);
    CHECK_FALSE(it.next().has_value());
  }
}

void failing_initializer() { throw std::invalid_argument("bad configuration"); }

TEST_CASE("a pool initializer's standard exception stays RemoteError (the pool is broken, not a task)") {
  mp::Pool broken(1, mp::PoolOptions().initializer(failing_initializer));
  try {
    broken.apply(throw_kind, 100);
    FAIL("no exception");
  } catch (const mp::RemoteError& e) {
    CHECK(e.type_name() == "std::invalid_argument");
    CHECK_THAT(e.message(), mproc_test::Contains("in the pool initializer: bad configuration"));
  }
}

// Results of two calls as a worker would write them, the first failed with
// `typed` and `fields` under `type`, the second a value.
std::vector<std::byte> two_results(const std::string& type, std::uint8_t typed, const std::vector<std::byte>& fields) {
  std::vector<std::byte> out;
  mp::detail::write_items_form(out);
  {
    mp::detail::ItemWriter w(out);
    w.write(std::uint8_t{1});  // item_error
    w.write(type);
    w.write(std::string("the message"));
    w.write(std::int32_t{4242});
    w.write(typed);
    if (typed != 0) w.write(fields);
  }
  mp::detail::write_item_ok(out, 7);
  return out;
}

struct Read {
  std::exception_ptr error;
  int value = 0;
};
Read read_two(const std::vector<std::byte>& bytes) {
  Read got;
  mp::Reader r(bytes);
  mp::detail::read_results<int>(
      r, 2, [&](std::uint64_t i, int&& v) { got.value = i == 1 ? v : -1; },
      [&](std::uint64_t i, std::exception_ptr e) {
        if (i == 0) got.error = e;
      });
  return got;
}

TEST_CASE("malformed fields of a registered type give ProcessError for that call, and the others are read") {
  std::vector<std::byte> quota;
  {
    mp::Writer w(quota);
    w.write(QuotaExceeded("bob", 5));
  }
  // Well-formed: typed, with the fields and the pid.
  Read ok = read_two(two_results("QuotaExceeded", 1, quota));
  CHECK(ok.value == 7);
  try {
    std::rethrow_exception(ok.error);
  } catch (const QuotaExceeded& e) {
    CHECK(e.user == "bob");
    CHECK(std::string(e.what()) == "QuotaExceeded: the message (raised in worker process 4242)");
  }
  const auto is_malformed = [](const std::exception_ptr& e, const std::string& type) {
    try {
      std::rethrow_exception(e);
    } catch (const mp::RemoteTrace&) {
      return false;
    } catch (const mp::ProcessError& x) {
      const std::string what = x.what();
      return what.find("malformed result from a worker") != std::string::npos &&
             what.find("its " + type) != std::string::npos;
    } catch (...) {
      return false;
    }
  };
  // Truncated fields, trailing bytes, fields for a type that has none, a bad category.
  std::vector<std::byte> truncated(quota.begin(), quota.begin() + 3);
  std::vector<std::byte> trailing = quota;
  trailing.resize(trailing.size() + 8);
  std::vector<std::byte> bad_category;
  {
    mp::Writer w(bad_category);
    w.write(std::int32_t{2});
    w.write(std::uint8_t{9});
  }
  struct Case {
    std::string type;
    std::vector<std::byte> fields;
  };
  for (const Case& c :
       {Case{"QuotaExceeded", truncated}, Case{"QuotaExceeded", trailing}, Case{"std::invalid_argument", quota},
        Case{"std::system_error", bad_category}, Case{"std::system_error", {}}}) {
    CAPTURE(c.type, c.fields.size());
    Read got = read_two(two_results(c.type, 1, c.fields));
    CHECK(is_malformed(got.error, c.type));
    CHECK(got.value == 7);
  }
  // A typed error of a type this process does not know: RemoteError.
  Read unknown = read_two(two_results("NotRegisteredHere", 1, quota));
  REQUIRE_THROWS_MATCHES(std::rethrow_exception(unknown.error), mp::RemoteError,
                         MessageContains("NotRegisteredHere: the message"));
  CHECK(unknown.value == 7);
  // A bad kind byte: the results cannot be read further.
  REQUIRE_THROWS_MATCHES(read_two(two_results("x", 2, {})), mp::ProcessError, MessageContains("bad error kind byte"));
  // A negative pid is not shown.
  std::vector<std::byte> negative;
  mp::detail::write_items_form(negative);
  {
    mp::detail::ItemWriter w(negative);
    w.write(std::uint8_t{1});
    w.write(std::string("std::logic_error"));
    w.write(std::string("m"));
    w.write(std::int32_t{-5});
    w.write(std::uint8_t{1});
    w.write(std::vector<std::byte>{});
  }
  mp::detail::write_item_ok(negative, 7);
  Read neg = read_two(negative);
  CHECK(what_of(neg.error) == "std::logic_error: m");
}

struct SameName : std::runtime_error {
  using std::runtime_error::runtime_error;
};

TEST_CASE("registering twice changes nothing, and another type under a taken name is refused") {
  CHECK_FALSE(mp::register_exception<QuotaExceeded>());
  CHECK_FALSE(mp::register_exception<std::invalid_argument>());
  auto& kinds = mp::detail::RemoteKinds::instance();
  REQUIRE_THROWS_MATCHES(kinds.add(typeid(SameName), "QuotaExceeded", &mp::detail::encode_remote_fields<SameName>,
                                   &mp::detail::decode_remote_fields<SameName>),
                         mp::ValueError, MessageContains("already registered as \"QuotaExceeded\""));
  CHECK(kinds.find(typeid(SameName)) == nullptr);
  CHECK(kinds.find(typeid(QuotaExceeded))->name == "QuotaExceeded");
}
