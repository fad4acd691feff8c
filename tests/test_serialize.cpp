// Tests of <mproc/serialize.hpp>: every supported type round trip, user types, fingerprints, and
// untrusted frames (truncated, oversized, corrupted).
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <list>
#include <map>
#include <memory>
#include <memory_resource>
#include <new>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include <mproc/serialize.hpp>

#include "catch.hpp"

namespace mp = mproc;
using mproc_test::Contains;
using mproc_test::MessageContains;
using Bytes = std::vector<std::byte>;

// ------------------------------------------------------------ test types

enum class Color : std::uint8_t { red, green, blue };
enum Legacy : int { legacy_a = 1, legacy_b = -5 };

struct Pod {
  std::int32_t a;
  double b;
  char tag[4];
  bool operator==(const Pod&) const = default;
};

// A user type through a hand-written specialization.
struct Sample {
  std::string label;
  std::vector<float> features;
  bool operator==(const Sample&) const = default;
};

template <>
struct mproc::serializer<Sample> {
  static void write(mproc::Writer& w, const Sample& s) {
    w.write(s.label);
    w.write(s.features);
  }
  static Sample read(mproc::Reader& r) {
    Sample s;
    s.label = r.read<std::string>();
    s.features = r.read<std::vector<float>>();
    return s;
  }
};

// The same through the macro, with a nested user type.
struct Record {
  std::int64_t id = 0;
  std::string name;
  std::vector<double> values;
  std::optional<Sample> sample;
  std::map<std::string, int> counts;
  bool operator==(const Record&) const = default;
};
MPROC_SERIALIZE(Record, id, name, values, sample, counts);

// Recursive user type.
struct Tree {
  int value = 0;
  std::vector<Tree> children;
  bool operator==(const Tree&) const = default;
};
MPROC_SERIALIZE(Tree, value, children);

// No members at all.
struct Nothing {
  bool operator==(const Nothing&) const = default;
};
MPROC_SERIALIZE(Nothing);

// A hand-written serializer that writes a temporary copy (no zero_copy).
struct Copying {
  std::vector<double> data;
};
template <>
struct mproc::serializer<Copying> {
  static void write(mproc::Writer& w, const Copying& c) {
    const std::vector<double> local = c.data;  // dies before the pieces are used
    w.write(local);
  }
  static Copying read(mproc::Reader& r) { return {r.read<std::vector<double>>()}; }
};

// A trivially copyable type with its own serializer: the serializer wins,
// also inside containers.
struct Celsius {
  double degrees;
  bool operator==(const Celsius&) const = default;
};
template <>
struct mproc::serializer<Celsius> {
  static constexpr std::size_t min_size = 8;
  static void write(mproc::Writer& w, const Celsius& c) { w.write(c.degrees); }
  static Celsius read(mproc::Reader& r) {
    const double d = r.read<double>();
    if (d < -273.15) r.fail("temperature below absolute zero");
    return {d};
  }
};

// ------------------------------------------------------------ allocation counting

// Counts the bytes this thread allocates through operator new while an
// AllocationCount is alive (the decoder's containers and strings).
namespace {
thread_local std::size_t* counted_bytes = nullptr;
}  // namespace

// Not inlined, neither new nor delete: GCC would see free() meet operator
// new's pointer, or operator delete meet malloc's, and warn.
[[gnu::noinline]] void* operator new(std::size_t n) {
  if (counted_bytes != nullptr) *counted_bytes += n;
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
[[gnu::noinline]] void* operator new[](std::size_t n) { return ::operator new(n); }
// Every unaligned form is replaced, so that all of them allocate with malloc
// and free with free (the aligned forms stay the library's, as a pair).
[[gnu::noinline]] void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return ::operator new(n);
  } catch (...) {
    return nullptr;
  }
}
[[gnu::noinline]] void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  return ::operator new(n, std::nothrow);
}
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

class AllocationCount {
 public:
  AllocationCount() noexcept { counted_bytes = &bytes_; }
  AllocationCount(const AllocationCount&) = delete;
  AllocationCount& operator=(const AllocationCount&) = delete;
  ~AllocationCount() { counted_bytes = nullptr; }
  std::size_t bytes() const noexcept { return bytes_; }

 private:
  std::size_t bytes_ = 0;
};

// Decodes `frame` as a T, which must fail: the error, and the bytes the
// attempt allocated.
template <class T>
std::pair<std::string, std::size_t> failed_decode(const std::vector<std::byte>& frame) {
  std::size_t bytes = 0;
  std::string error = "(decoded)";
  try {
    AllocationCount count;
    try {
      (void)mp::loads<T>(frame);
    } catch (...) {
      bytes = count.bytes();
      throw;
    }
  } catch (const mp::ProcessError& e) {
    error = e.what();
  }
  return {error, bytes};
}

// ------------------------------------------------------------ helpers

// Encodes `value` through every sink, checks they agree, and decodes it.
template <class T>
T round_trip(const T& value) {
  const Bytes frame = mp::dumps(value);
  CHECK(mp::encoded_size(value) == frame.size());
  CHECK(mp::frame_size(frame) == frame.size());

  Bytes into(frame.size());
  CHECK(mp::dumps_into(into, value) == frame.size());
  CHECK(into == frame);

  Bytes scratch;
  Bytes gathered;
  {
    mp::Writer w(mp::Writer::gather, scratch, 64);
    mp::write_frame(w, value);
    w.for_each_piece([&](std::span<const std::byte> p) { gathered.insert(gathered.end(), p.begin(), p.end()); });
  }
  CHECK(gathered == frame);

  return mp::loads<T>(frame);
}

// Builds a frame of T around a hand-written payload.
template <class T, class F>
Bytes frame_with_payload(F&& write_payload) {
  Bytes payload;
  {
    mp::Writer w(payload);
    // Pad so that the payload's alignment matches a real frame's.
    w.write_bytes(std::vector<std::byte>(mp::frame_header_size).data(), mp::frame_header_size);
    write_payload(w);
  }
  Bytes frame = mp::dumps(T{});
  frame.resize(mp::frame_header_size);
  frame.insert(frame.end(), payload.begin() + mp::frame_header_size, payload.end());
  const std::uint64_t size = frame.size() - mp::frame_header_size;
  std::memcpy(frame.data() + 16, &size, 8);
  return frame;
}

// Rewrites the header's payload size to match the bytes present.
Bytes with_fixed_size(Bytes frame) {
  const std::uint64_t size = frame.size() - mp::frame_header_size;
  std::memcpy(frame.data() + 16, &size, 8);
  return frame;
}

void put_u64(mp::Writer& w, std::uint64_t v) { w.write_bytes(&v, 8); }

// Decodes the payload of `frame` as a T the way a pool worker decodes task
// parameters: through a Reader over the received bytes, so that a view type
// points into `frame` (mp::loads refuses view types).
template <class T>
T read_in_place(std::span<const std::byte> frame) {
  mp::Reader r(frame);
  r.read_span(mp::frame_header_size);
  T value = r.read<T>();
  CHECK(r.remaining() == 0);
  return value;
}

// ------------------------------------------------------------ round trips

TEST_CASE("arithmetic types, enums, bool and std::byte round-trip") {
  CHECK(round_trip(std::int8_t{-7}) == -7);
  CHECK(round_trip(std::uint8_t{250}) == 250);
  CHECK(round_trip(std::int16_t{-30000}) == -30000);
  CHECK(round_trip(std::uint16_t{65000}) == 65000);
  CHECK(round_trip(std::int32_t{-2000000000}) == -2000000000);
  CHECK(round_trip(std::uint32_t{4000000000u}) == 4000000000u);
  CHECK(round_trip(std::numeric_limits<std::int64_t>::min()) == std::numeric_limits<std::int64_t>::min());
  CHECK(round_trip(std::numeric_limits<std::uint64_t>::max()) == std::numeric_limits<std::uint64_t>::max());
  CHECK(round_trip('x') == 'x');
  CHECK(round_trip(3.5f) == 3.5f);
  CHECK(round_trip(-1e300) == -1e300);
  CHECK(round_trip(1.25L) == 1.25L);
  CHECK(round_trip(true) == true);
  CHECK(round_trip(false) == false);
  CHECK(round_trip(Color::blue) == Color::blue);
  CHECK(round_trip(legacy_b) == legacy_b);
  CHECK(round_trip(std::byte{0xAB}) == std::byte{0xAB});
  CHECK(mp::dumps(std::int32_t{1}).size() == mp::frame_header_size + 4);  // fixed width
  CHECK(mp::dumps(true).size() == mp::frame_header_size + 1);
}

TEST_CASE("trivially copyable structs are copied bitwise, alone and in containers") {
  const Pod pod{42, 2.5, {'a', 'b', 'c', '\0'}};
  CHECK(round_trip(pod) == pod);
  CHECK(mp::dumps(pod).size() == mp::frame_header_size + sizeof(Pod));
  const std::vector<Pod> pods{pod, Pod{-1, -0.5, {'x', 'y', 'z', 'w'}}};
  CHECK(round_trip(pods) == pods);
  const std::array<float, 5> floats{1, 2, 3, 4, 5};
  CHECK(round_trip(floats) == floats);
  CHECK(mp::dumps(floats).size() == mp::frame_header_size + sizeof(floats));  // one block, no size prefix
}

TEST_CASE("strings round-trip, including empty, long, and embedded NULs") {
  CHECK(round_trip(std::string()).empty());
  CHECK(round_trip(std::string("hello")) == "hello");
  const std::string with_nul("a\0b\0c", 5);
  CHECK(round_trip(with_nul) == with_nul);
  const std::string long_string(100000, 'q');
  CHECK(round_trip(long_string) == long_string);
  CHECK(round_trip(std::u16string(u"h\u00e9llo")) == u"h\u00e9llo");
  CHECK(round_trip(std::u32string(U"\U0001F600")) == U"\U0001F600");
}

TEST_CASE("sequence containers round-trip") {
  CHECK(round_trip(std::vector<int>{}).empty());
  CHECK(round_trip(std::vector<int>{1, -2, 3}) == std::vector<int>{1, -2, 3});
  std::vector<double> big(100000);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<double>(i) * 0.5;
  CHECK(round_trip(big) == big);
  CHECK(round_trip(std::vector<std::string>{"a", "", "ccc"}) == std::vector<std::string>{"a", "", "ccc"});
  CHECK(round_trip(std::vector<std::byte>{std::byte{1}, std::byte{2}}) ==
        std::vector<std::byte>{std::byte{1}, std::byte{2}});
  CHECK(round_trip(std::deque<int>{5, 6, 7}) == std::deque<int>{5, 6, 7});
  CHECK(round_trip(std::deque<std::string>{"x", "y"}) == std::deque<std::string>{"x", "y"});
  CHECK(round_trip(std::list<std::string>{"p", "q", "r"}) == std::list<std::string>{"p", "q", "r"});
  CHECK(round_trip(std::list<long>{}).empty());
  const std::array<std::string, 3> strings{"one", "two", "three"};
  CHECK(round_trip(strings) == strings);
  const std::array<bool, 3> flags{true, false, true};
  CHECK(round_trip(flags) == flags);
  const std::vector<std::array<float, 3>> points{{1, 2, 3}, {4, 5, 6}};
  CHECK(round_trip(points) == points);
}

TEST_CASE("vector<bool> round-trips packed, at every length around byte boundaries") {
  for (std::size_t n : {0u, 1u, 7u, 8u, 9u, 15u, 16u, 17u, 2047u, 2048u, 2049u, 5000u}) {
    std::vector<bool> bits(n);
    for (std::size_t i = 0; i < n; ++i) bits[i] = (i * 7 + i / 3) % 3 == 0;
    CHECK(round_trip(bits) == bits);
    CHECK(mp::dumps(bits).size() == mp::frame_header_size + 8 + (n + 7) / 8);
  }
}

TEST_CASE("pair, tuple, optional, variant and monostate round-trip") {
  CHECK(round_trip(std::pair<int, std::string>{3, "three"}) == std::pair<int, std::string>{3, "three"});
  using Tup = std::tuple<int, double, std::string, bool>;
  CHECK(round_trip(Tup{1, 2.5, "x", true}) == Tup{1, 2.5, "x", true});
  CHECK(round_trip(std::tuple<>{}) == std::tuple<>{});
  CHECK(mp::dumps(std::tuple<>{}).size() == mp::frame_header_size + 1);  // every value takes a byte
  CHECK(round_trip(std::optional<std::string>{}) == std::nullopt);
  CHECK(round_trip(std::optional<std::string>{"set"}) == std::optional<std::string>{"set"});
  CHECK(round_trip(std::optional<int>{7}) == std::optional<int>{7});
  using Var = std::variant<std::monostate, int, std::string, std::vector<double>>;
  CHECK(round_trip(Var{}) == Var{});
  CHECK(round_trip(Var{42}) == Var{42});
  CHECK(round_trip(Var{std::string("s")}) == Var{std::string("s")});
  CHECK(round_trip(Var{std::vector<double>{1.5}}) == Var{std::vector<double>{1.5}});
  // Alternatives of the same type keep their index.
  using Twin = std::variant<int, int>;
  const Twin second(std::in_place_index<1>, 9);
  CHECK(round_trip(second).index() == 1);
  CHECK(std::get<1>(round_trip(second)) == 9);
  CHECK(round_trip(std::monostate{}) == std::monostate{});
}

TEST_CASE("associative containers round-trip") {
  const std::map<std::string, int> m{{"a", 1}, {"b", 2}};
  CHECK(round_trip(m) == m);
  const std::set<int> s{3, 1, 2};
  CHECK(round_trip(s) == s);
  const std::multimap<int, std::string> mm{{1, "x"}, {1, "y"}, {0, "z"}, {1, "w"}};
  CHECK(round_trip(mm) == mm);  // equal keys keep their order
  const std::multiset<std::string> ms{"a", "a", "b"};
  CHECK(round_trip(ms) == ms);
  const std::unordered_map<std::string, std::vector<int>> um{{"x", {1}}, {"y", {}}, {"z", {2, 3}}};
  CHECK(round_trip(um) == um);
  const std::unordered_set<long> us{10, 20, 30};
  CHECK(round_trip(us) == us);
  const std::unordered_multimap<int, int> umm{{1, 1}, {1, 2}, {2, 3}};
  CHECK(round_trip(umm) == umm);
  const std::unordered_multiset<int> ums{4, 4, 5};
  CHECK(round_trip(ums) == ums);
  CHECK(round_trip(std::map<int, int>{}).empty());
}

TEST_CASE("chrono durations and time points round-trip") {
  using namespace std::chrono_literals;
  CHECK(round_trip(1500ms) == 1500ms);
  CHECK(round_trip(std::chrono::duration<double>(0.25)) == std::chrono::duration<double>(0.25));
  CHECK(round_trip(std::chrono::nanoseconds::max()) == std::chrono::nanoseconds::max());
  const auto now = std::chrono::system_clock::now();
  CHECK(round_trip(now) == now);
  const std::vector<std::chrono::microseconds> durations{1us, 2us};
  CHECK(round_trip(durations) == durations);
}

TEST_CASE("types nest freely") {
  using Deep = std::map<std::string, std::vector<std::tuple<int, std::optional<std::vector<std::string>>,
                                                            std::variant<std::monostate, double, std::set<int>>>>>;
  Deep deep;
  deep["first"].emplace_back(1, std::nullopt, std::monostate{});
  deep["first"].emplace_back(2, std::vector<std::string>{"a", "b"}, 3.5);
  deep["second"].emplace_back(3, std::vector<std::string>{}, std::set<int>{7, 8});
  deep["empty"];
  CHECK(round_trip(deep) == deep);

  const std::vector<std::vector<std::vector<int>>> cube{{{1, 2}, {}}, {}, {{3}}};
  CHECK(round_trip(cube) == cube);
  const std::list<std::deque<std::pair<std::int16_t, bool>>> odd{{{1, true}, {-2, false}}, {}};
  CHECK(round_trip(odd) == odd);
}

TEST_CASE("containers with allocators of their own round-trip, also across allocators") {
  std::pmr::vector<int> pmr_vec{1, 2, 3};
  CHECK(round_trip(pmr_vec) == pmr_vec);
  std::pmr::string pmr_str("pmr");
  CHECK(round_trip(pmr_str) == pmr_str);
  // A frame of std::vector<int> loads as std::pmr::vector<int>: same wire type.
  CHECK(mp::loads<std::pmr::vector<int>>(mp::dumps(std::vector<int>{4, 5})) == std::pmr::vector<int>{4, 5});
}

// ------------------------------------------------------------ user types

TEST_CASE("a user type through a serializer specialization round-trips") {
  const Sample s{"cat", {0.5f, 1.5f, -2.0f}};
  CHECK(round_trip(s) == s);
  CHECK(round_trip(std::vector<Sample>{s, Sample{}, s}) == std::vector<Sample>{s, Sample{}, s});
  CHECK(round_trip(std::map<int, Sample>{{1, s}}) == std::map<int, Sample>{{1, s}});
}

TEST_CASE("MPROC_SERIALIZE generates the specialization") {
  Record r;
  r.id = -12;
  r.name = "record";
  r.values = {1.0, 2.0, 3.0};
  r.sample = Sample{"nested", {9.0f}};
  r.counts = {{"x", 1}, {"y", 2}};
  CHECK(round_trip(r) == r);
  CHECK(round_trip(Record{}) == Record{});
  CHECK(round_trip(Nothing{}) == Nothing{});
  CHECK(mp::dumps(Nothing{}).size() == mp::frame_header_size + 1);  // every value takes a byte
  STATIC_REQUIRE(mp::serializer<Record>::zero_copy);
}

TEST_CASE("a user specialization of a trivially copyable type wins, also inside containers") {
  CHECK(round_trip(Celsius{21.5}) == Celsius{21.5});
  CHECK(round_trip(std::vector<Celsius>{{1}, {2}}) == std::vector<Celsius>{{1}, {2}});
  // Its validation runs for every element (no bitwise shortcut).
  const Bytes frame = mp::dumps(std::vector<double>{1.0, -300.0});
  Bytes bad = frame_with_payload<std::vector<Celsius>>([](mp::Writer& w) {
    put_u64(w, 2);
    w.write(1.0);
    w.write(-300.0);
  });
  REQUIRE_THROWS_MATCHES(mp::loads<std::vector<Celsius>>(bad), mp::ProcessError,
                         MessageContains("mproc: corrupted frame: temperature below absolute zero"));
}

TEST_CASE("a recursive user type round-trips, and its nesting depth is bounded") {
  Tree tree{1, {Tree{2, {}}, Tree{3, {Tree{4, {}}}}}};
  CHECK(round_trip(tree) == tree);

  const auto chain = [](int depth) {
    Tree root{0, {}};
    Tree* at = &root;
    for (int i = 1; i < depth; ++i) {
      at->children.push_back(Tree{i, {}});
      at = &at->children.back();
    }
    return root;
  };
  const Tree ok = chain(static_cast<int>(mp::Reader::default_max_depth));
  CHECK(mp::loads<Tree>(mp::dumps(ok)) == ok);
  const Bytes too_deep = mp::dumps(chain(static_cast<int>(mp::Reader::default_max_depth) + 1));
  REQUIRE_THROWS_MATCHES(mp::loads<Tree>(too_deep), mp::ProcessError,
                         MessageContains("mproc: corrupted frame: nesting deeper than 256 levels while decoding Tree"));

  mp::Reader r{std::span(too_deep).subspan(mp::frame_header_size)};
  r.set_max_depth(1000);
  CHECK(r.read<Tree>() == chain(static_cast<int>(mp::Reader::default_max_depth) + 1));
}

// ------------------------------------------------------------ compile time

struct NotSerializable {
  std::unique_ptr<int> p;  // an aggregate, but its member has no serialization
};

TEST_CASE("types that cannot cross a process boundary are rejected at compile time") {
  STATIC_REQUIRE(!mp::serializable<int*>);
  STATIC_REQUIRE(!mp::serializable<const char*>);
  STATIC_REQUIRE(!mp::serializable<int&>);
  STATIC_REQUIRE(!mp::serializable<const std::string&>);
  STATIC_REQUIRE(!mp::serializable<void>);
  STATIC_REQUIRE(!mp::serializable<int[3]>);
  STATIC_REQUIRE(!mp::serializable<std::nullptr_t>);
  STATIC_REQUIRE(!mp::serializable<void (*)()>);
  STATIC_REQUIRE(!mp::serializable<int Pod::*>);
  STATIC_REQUIRE(!mp::serializable<std::function<void()>>);
  STATIC_REQUIRE(!mp::serializable<std::unique_ptr<int>>);
  STATIC_REQUIRE(!mp::serializable<std::shared_ptr<int>>);
  STATIC_REQUIRE(!mp::serializable<std::reference_wrapper<int>>);
  STATIC_REQUIRE(!mp::serializable<std::span<double>>);  // mutable view: nothing to point at
  STATIC_REQUIRE(!mp::serializable<std::span<const std::string>>);
  STATIC_REQUIRE(!mp::serializable<std::span<const double, 3>>);
  STATIC_REQUIRE(!mp::serializable<std::initializer_list<int>>);
  STATIC_REQUIRE(!mp::serializable<NotSerializable>);
  STATIC_REQUIRE(!mp::serializable<std::vector<int*>>);
  STATIC_REQUIRE(!mp::serializable<std::vector<NotSerializable>>);
  STATIC_REQUIRE(!mp::serializable<std::map<std::string, std::unique_ptr<int>>>);
  STATIC_REQUIRE(!mp::serializable<std::map<int*, int>>);
  STATIC_REQUIRE(!mp::serializable<std::set<std::function<void()>>>);
  STATIC_REQUIRE(!mp::serializable<std::tuple<int, int*>>);
  STATIC_REQUIRE(!mp::serializable<std::pair<std::string, std::shared_ptr<int>>>);
  STATIC_REQUIRE(!mp::serializable<std::optional<std::function<void()>>>);
  STATIC_REQUIRE(!mp::serializable<std::variant<int, std::unique_ptr<int>>>);
  STATIC_REQUIRE(!mp::serializable<std::array<std::unique_ptr<int>, 2>>);

  STATIC_REQUIRE(mp::serializable<const int>);
  STATIC_REQUIRE(mp::serializable<Pod>);
  STATIC_REQUIRE(mp::serializable<Sample>);
  STATIC_REQUIRE(mp::serializable<Tree>);
  STATIC_REQUIRE(mp::serializable<std::span<const double>>);
  STATIC_REQUIRE(mp::serializable<std::string_view>);
  STATIC_REQUIRE(mp::serializable<std::vector<std::string_view>>);
  STATIC_REQUIRE(mp::serializable<std::unordered_map<std::string, std::vector<Sample>>>);
  STATIC_REQUIRE(mp::detail::assert_serializable<std::vector<Record>>());
}

// Trivially copyable aggregates that point into the sender's memory.
struct WithPointer {
  int id;
  const char* name;
};
struct WithView {
  int id;
  std::string_view name;
};
struct WithSpan {
  std::span<const double> values;
};
struct WithReference {
  const int& ref;
};
struct WithMemberPointer {
  int Pod::* field;
};
struct WithPointerArray {
  int id;
  int* slots[3];
};
struct WithOptionalPointer {
  std::optional<int*> maybe;
};
struct WithViewArray {
  std::array<std::string_view, 2> names;
};
struct NestedPointer {
  double x;
  WithPointer inner;
};
struct NestedPointerArray {
  int n;
  WithPointer items[2];
};
struct DerivedPointer : WithPointer {};

// Trivially copyable aggregates without pointers: one memcpy.
struct Empty {
  bool operator==(const Empty&) const = default;
};
struct MixedPod {
  std::chrono::milliseconds when;
  Empty tag;
  Color color;
  std::array<float, 3> xyz;
  std::int16_t grid[2][3];
  Pod pod;
  std::optional<int> maybe;
  bool operator==(const MixedPod&) const = default;
};
struct DerivedPod : Pod {};
struct LargeArray {
  std::int32_t id;
  std::array<char, 100000> bytes;
};
// Not an aggregate: cannot be inspected, sent by bytes on its author's word.
class Opaque {
 public:
  Opaque() = default;
  explicit Opaque(int v) : v_(v) {}
  int value() const { return v_; }

 private:
  int v_ = 0;
};

TEST_CASE("a trivially copyable struct holding a pointer, reference or view cannot cross, also nested (#7)",
          "[failure-model]") {
  STATIC_REQUIRE(!mp::serializable<WithPointer>);
  STATIC_REQUIRE(!mp::serializable<WithView>);
  STATIC_REQUIRE(!mp::serializable<WithSpan>);
  STATIC_REQUIRE(!mp::serializable<WithReference>);
  STATIC_REQUIRE(!mp::serializable<WithMemberPointer>);
  STATIC_REQUIRE(!mp::serializable<WithPointerArray>);
  STATIC_REQUIRE(!mp::serializable<WithOptionalPointer>);
  STATIC_REQUIRE(!mp::serializable<WithViewArray>);
  STATIC_REQUIRE(!mp::serializable<NestedPointer>);
  STATIC_REQUIRE(!mp::serializable<NestedPointerArray>);
  STATIC_REQUIRE(!mp::serializable<DerivedPointer>);
  STATIC_REQUIRE(!mp::serializable<std::vector<WithPointer>>);
  STATIC_REQUIRE(!mp::serializable<std::map<int, NestedPointer>>);
  STATIC_REQUIRE(!mp::serializable<std::array<WithView, 2>>);
  STATIC_REQUIRE(!mp::serializable<std::optional<WithSpan>>);

  // Without pointers: still serializable, still one memcpy.
  STATIC_REQUIRE(mp::detail::bitwise<Pod>);
  STATIC_REQUIRE(mp::detail::bitwise<MixedPod>);
  STATIC_REQUIRE(mp::detail::bitwise<DerivedPod>);
  STATIC_REQUIRE(mp::detail::bitwise<LargeArray>);
  STATIC_REQUIRE(mp::detail::bitwise<Empty>);
  STATIC_REQUIRE(mp::detail::bitwise<Opaque>);  // documented: its author answers for it
  MixedPod mixed{};
  mixed.when = std::chrono::milliseconds(1500);
  mixed.color = Color::green;
  mixed.xyz = {1, 2, 3};
  mixed.grid[1][2] = -7;
  mixed.pod = Pod{1, 2.5, {'a', 'b', 'c', 'd'}};
  mixed.maybe = 42;
  CHECK(round_trip(mixed) == mixed);
  CHECK(mp::dumps(mixed).size() == mp::frame_header_size + sizeof(MixedPod));
  CHECK(round_trip(std::vector<MixedPod>{mixed, MixedPod{}}) == std::vector<MixedPod>{mixed, MixedPod{}});
  DerivedPod derived{};
  derived.a = 5;
  CHECK(round_trip(derived).a == 5);
  CHECK(round_trip(Opaque(9)).value() == 9);
  auto large = std::make_unique<LargeArray>();
  large->id = 3;
  large->bytes[99999] = 'z';
  const auto large_back = mp::loads<LargeArray>(mp::dumps(*large));
  CHECK(large_back.id == 3);
  CHECK(large_back.bytes[99999] == 'z');
}

// Views in user types: a task's arguments read in place, and a serializer
// that declares it.
struct ViewArgs {
  int n = 0;
  std::string_view text;
  std::span<const double> values;
};
MPROC_SERIALIZE(ViewArgs, n, text, values);
struct Borrowing {
  std::string_view text;
};
template <>
struct mproc::serializer<Borrowing> {
  static constexpr bool borrows_input = true;
  static void write(mproc::Writer& w, const Borrowing& b) { w.write(b.text); }
  static Borrowing read(mproc::Reader& r) { return {r.read<std::string_view>()}; }
};

TEST_CASE("views are encoded by copy and decoded only where they cannot outlive the bytes (#7)", "[failure-model]") {
  STATIC_REQUIRE(!mp::owning_decodable<std::string_view>);
  STATIC_REQUIRE(!mp::owning_decodable<std::span<const double>>);
  STATIC_REQUIRE(!mp::owning_decodable<std::vector<std::string_view>>);
  STATIC_REQUIRE(!mp::owning_decodable<std::list<std::span<const int>>>);
  STATIC_REQUIRE(!mp::owning_decodable<std::map<std::string, std::span<const int>>>);
  STATIC_REQUIRE(!mp::owning_decodable<std::map<std::string_view, int>>);
  STATIC_REQUIRE(!mp::owning_decodable<std::set<std::string_view>>);
  STATIC_REQUIRE(!mp::owning_decodable<std::optional<std::string_view>>);
  STATIC_REQUIRE(!mp::owning_decodable<std::variant<int, std::string_view>>);
  STATIC_REQUIRE(!mp::owning_decodable<std::tuple<int, std::pair<double, std::span<const float>>>>);
  STATIC_REQUIRE(!mp::owning_decodable<std::array<std::string_view, 2>>);
  STATIC_REQUIRE(!mp::owning_decodable<ViewArgs>);
  STATIC_REQUIRE(!mp::owning_decodable<std::vector<ViewArgs>>);
  STATIC_REQUIRE(!mp::owning_decodable<Borrowing>);
  STATIC_REQUIRE(!mp::owning_decodable<int*>);  // not serializable at all
  STATIC_REQUIRE(mp::serializable<ViewArgs>);
  STATIC_REQUIRE(mp::owning_decodable<std::string>);
  STATIC_REQUIRE(mp::owning_decodable<std::vector<double>>);
  STATIC_REQUIRE(mp::owning_decodable<Record>);
  STATIC_REQUIRE(mp::owning_decodable<Tree>);  // recursive
  STATIC_REQUIRE(mp::owning_decodable<std::map<std::string, std::vector<Sample>>>);
  STATIC_REQUIRE(mp::owning_decodable<std::tuple<int, std::optional<std::string>>>);
  // The check the receiving sites use: true for owning types (and void).
  STATIC_REQUIRE(mp::detail::check_owning_decodable<std::string, mp::detail::decode_site::queue_item>());
  STATIC_REQUIRE(mp::detail::check_owning_decodable<void, mp::detail::decode_site::pool_result>());

  // Encoding copies what a view refers to: the frame of the owning type.
  const std::string text = "contents";
  CHECK(mp::dumps(std::string_view(text)) == mp::dumps(text));
  CHECK(mp::loads<std::string>(mp::dumps(std::string_view(text))) == text);
  const std::vector<double> values{1.5, 2.5};
  CHECK(mp::loads<std::vector<double>>(mp::dumps(std::span<const double>(values))) == values);

  // Read in place where the bytes outlive the value (a Pool task's
  // parameters): the views point into the frame.
  const ViewArgs args{3, text, values};
  const Bytes frame = mp::dumps(args);
  const ViewArgs in_place = read_in_place<ViewArgs>(frame);
  CHECK(in_place.n == 3);
  CHECK(in_place.text == text);
  CHECK(std::vector<double>(in_place.values.begin(), in_place.values.end()) == values);
  CHECK(reinterpret_cast<const std::byte*>(in_place.text.data()) > frame.data());
  CHECK(reinterpret_cast<const std::byte*>(in_place.text.data()) < frame.data() + frame.size());
  CHECK(read_in_place<Borrowing>(mp::dumps(Borrowing{text})).text == text);
}

TEST_CASE("type fingerprints are compile-time, distinct per type, shared by a view and its owner") {
  constexpr std::uint64_t f = mp::type_fingerprint<std::vector<double>>();
  STATIC_REQUIRE(f != 0);
  const std::vector<std::uint64_t> distinct{mp::type_fingerprint<int>(),
                                            mp::type_fingerprint<unsigned>(),
                                            mp::type_fingerprint<long>(),
                                            mp::type_fingerprint<long long>(),
                                            mp::type_fingerprint<float>(),
                                            mp::type_fingerprint<double>(),
                                            mp::type_fingerprint<std::string>(),
                                            mp::type_fingerprint<std::vector<int>>(),
                                            mp::type_fingerprint<std::vector<double>>(),
                                            mp::type_fingerprint<std::vector<std::string>>(),
                                            mp::type_fingerprint<Sample>(),
                                            mp::type_fingerprint<Record>(),
                                            mp::type_fingerprint<std::map<int, int>>(),
                                            mp::type_fingerprint<std::tuple<int, int>>(),
                                            mp::type_fingerprint<std::pair<int, int>>(),
                                            mp::type_fingerprint<Color>()};
  for (std::size_t i = 0; i < distinct.size(); ++i)
    for (std::size_t j = i + 1; j < distinct.size(); ++j) CHECK(distinct[i] != distinct[j]);
  STATIC_REQUIRE(mp::type_fingerprint<std::span<const double>>() == mp::type_fingerprint<std::vector<double>>());
  STATIC_REQUIRE(mp::type_fingerprint<std::string_view>() == mp::type_fingerprint<std::string>());
  STATIC_REQUIRE(mp::type_fingerprint<std::tuple<int, std::span<const double>>>() ==
                 mp::type_fingerprint<std::tuple<int, std::vector<double>>>());
  STATIC_REQUIRE(mp::type_fingerprint<const int>() == mp::type_fingerprint<int>());
}

// ------------------------------------------------------------ sinks

TEST_CASE("a vector writer appends after existing bytes and reuses the vector's capacity") {
  Bytes buffer{std::byte{0xEE}};
  buffer.reserve(1 << 20);
  const std::byte* data = buffer.data();
  const std::size_t capacity = buffer.capacity();

  const std::vector<double> v(1000, 2.0);
  const std::string s = "second";
  // Frames start 16-byte aligned in practice: pad the prefix like a user would.
  buffer.resize(16);
  const std::size_t first = mp::dumps_append(buffer, v);
  const std::size_t second = mp::dumps_append(buffer, s);
  CHECK(buffer.data() == data);
  CHECK(buffer.capacity() == capacity);
  CHECK(buffer.size() == 16 + first + second);
  CHECK(buffer[0] == std::byte{0xEE});
  const std::span<const std::byte> all(buffer);
  CHECK(mp::loads<std::vector<double>>(all.subspan(16, first)) == v);
  CHECK(mp::loads<std::string>(all.subspan(16 + first, second)) == s);

  // Cleared and reused: still no reallocation.
  buffer.clear();
  mp::dumps_append(buffer, v);
  CHECK(buffer.data() == data);
  CHECK(mp::loads<std::vector<double>>(buffer) == v);
}

TEST_CASE("a vector writer trims its spare bytes in finish() and keeps writing after it") {
  Bytes buffer;
  mp::Writer w(buffer);
  w.write(std::int32_t{1});
  w.finish();
  CHECK(buffer.size() == 4);
  w.write(std::string("ab"));
  CHECK(w.size() == 4 + 8 + 2);
  w.finish();
  CHECK(buffer.size() == 14);
  mp::Reader r(buffer);
  CHECK(r.read<std::int32_t>() == 1);
  CHECK(r.read<std::string>() == "ab");
  CHECK(r.remaining() == 0);
}

TEST_CASE("a span writer throws when the buffer is too small, and fits exactly otherwise") {
  const std::vector<std::string> value{"alpha", "beta", "gamma"};
  const std::size_t need = mp::encoded_size(value);
  Bytes exact(need);
  CHECK(mp::dumps_into(exact, value) == need);
  CHECK(mp::loads<std::vector<std::string>>(exact) == value);

  for (std::size_t size : {std::size_t{0}, std::size_t{10}, mp::frame_header_size, need - 1}) {
    Bytes small(size);
    REQUIRE_THROWS_MATCHES(mp::dumps_into(small, value), mp::ProcessError,
                           MessageContains("mproc: buffer too small for a frame of std::vector<std::string>: need " +
                                           std::to_string(need) + " bytes, have " + std::to_string(size)));
  }
  // The same error from a large contiguous block.
  Bytes small(100);
  REQUIRE_THROWS_AS(mp::dumps_into(small, std::vector<double>(1000)), mp::ProcessError);
}

TEST_CASE("counting equals the bytes written, and costs nothing for contiguous data") {
  const std::vector<double> big(1 << 20, 1.0);
  CHECK(mp::encoded_size(big) == mp::frame_header_size + 8 + big.size() * sizeof(double));
  CHECK(mp::encoded_size(big) == mp::dumps(big).size());
  mp::Writer w(mp::Writer::count_only);
  w.write(std::int16_t{1});
  w.align(8);
  w.write(std::string("xyz"));
  CHECK(w.size() == 8 + 8 + 3);
  CHECK(w.piece_count() == 0);
}

TEST_CASE("a gather writer references large blocks in place and copies the rest") {
  const auto value = std::make_tuple(std::string("head"), std::vector<double>(100000, 3.0), 7);
  const std::vector<double>& big = std::get<1>(value);
  Bytes scratch;
  mp::Writer w(mp::Writer::gather, scratch);
  mp::write_frame(w, value);
  const std::vector<std::span<const std::byte>> pieces = w.pieces();
  REQUIRE(pieces.size() == 3);
  CHECK(pieces[1].data() == reinterpret_cast<const std::byte*>(big.data()));  // zero copy
  CHECK(pieces[1].size() == big.size() * sizeof(double));
  CHECK(w.piece_count() == 3);
  CHECK(scratch.size() < 200);  // only the small parts were copied
  Bytes joined;
  for (auto p : pieces) joined.insert(joined.end(), p.begin(), p.end());
  CHECK(joined == mp::dumps(value));
  CHECK(w.size() == joined.size());

  // Several blocks, and a block at the very end.
  Bytes scratch2;
  mp::Writer w2(mp::Writer::gather, scratch2, 1024);
  const std::vector<std::vector<float>> blocks{std::vector<float>(1000, 1.f), std::vector<float>(10, 2.f),
                                               std::vector<float>(2000, 3.f)};
  mp::write_frame(w2, blocks);
  CHECK(w2.piece_count() == 4);  // head+size, block, small vector+size, block
  Bytes joined2;
  w2.for_each_piece([&](std::span<const std::byte> p) { joined2.insert(joined2.end(), p.begin(), p.end()); });
  CHECK(joined2 == mp::dumps(blocks));
}

TEST_CASE("a gather writer copies what may not outlive the write") {
  const std::vector<double> big(10000, 1.0);
  Bytes scratch;
  {
    // A temporary passed to write() or write_frame().
    mp::Writer w(mp::Writer::gather, scratch, 1024);
    w.write(std::vector<double>(big));
    CHECK(w.piece_count() == 1);
    mp::write_frame(w, std::make_tuple(1, big));
    CHECK(w.piece_count() == 1);
  }
  scratch.clear();
  {
    // A user serializer without zero_copy writes a local copy: copied, so the
    // pieces stay valid (ASan would catch a dangling reference here).
    mp::Writer w(mp::Writer::gather, scratch, 1024);
    mp::write_frame(w, Copying{big});
    CHECK(w.piece_count() == 1);
    Bytes joined;
    w.for_each_piece([&](std::span<const std::byte> p) { joined.insert(joined.end(), p.begin(), p.end()); });
    CHECK(mp::loads<Copying>(joined).data == big);
  }
  scratch.clear();
  {
    // MPROC_SERIALIZE writes members: referenced in place.
    Record r;
    r.values = big;
    mp::Writer w(mp::Writer::gather, scratch, 1024);
    mp::write_frame(w, r);
    CHECK(w.piece_count() == 3);
    CHECK(w.pieces()[1].data() == reinterpret_cast<const std::byte*>(r.values.data()));
  }
}

TEST_CASE("Writer::align pads with zeros relative to its start") {
  Bytes out;
  {
    mp::Writer w(out);
    w.write(std::uint8_t{1});
    w.align(8);
    CHECK(w.size() == 8);
    w.align(8);
    CHECK(w.size() == 8);
    w.write(std::uint8_t{2});
    w.align(128);
    CHECK(w.size() == 128);
  }
  REQUIRE(out.size() == 128);
  CHECK(out[0] == std::byte{1});
  CHECK(out[8] == std::byte{2});
  for (std::size_t i : {1u, 7u, 9u, 127u}) CHECK(out[i] == std::byte{0});
}

// ------------------------------------------------------------ views

TEST_CASE("a span<const T> view reads in place through a Reader from a frame of vector<T>") {
  const std::vector<double> v{1.0, 2.0, 3.0, 4.0};
  const Bytes frame = mp::dumps(v);
  const std::span<const double> view = read_in_place<std::span<const double>>(frame);
  REQUIRE(view.size() == 4);
  const auto* p = reinterpret_cast<const std::byte*>(view.data());
  CHECK(p >= frame.data());
  CHECK(p + view.size_bytes() <= frame.data() + frame.size());
  CHECK(std::vector<double>(view.begin(), view.end()) == v);

  // A span frame is a vector frame.
  const Bytes from_span = mp::dumps(std::span<const double>(v));
  CHECK(from_span == frame);
  CHECK(mp::loads<std::vector<double>>(from_span) == v);
  CHECK(read_in_place<std::span<const double>>(mp::dumps(std::vector<double>{})).empty());
}

TEST_CASE("string_view views read in place through a Reader, also nested") {
  const Bytes frame = mp::dumps(std::string("in place"));
  const auto sv = read_in_place<std::string_view>(frame);
  CHECK(sv == "in place");
  CHECK(reinterpret_cast<const std::byte*>(sv.data()) > frame.data());
  CHECK(reinterpret_cast<const std::byte*>(sv.data()) < frame.data() + frame.size());

  const std::vector<std::string> words{"a", "bb", "ccc"};
  const Bytes words_frame = mp::dumps(words);
  const auto views = read_in_place<std::vector<std::string_view>>(words_frame);
  CHECK(views == std::vector<std::string_view>{"a", "bb", "ccc"});

  // The pool's case: a tuple of arguments, one of them viewed in place.
  const auto args = std::make_tuple(7, std::vector<double>{0.5, 1.5});
  const Bytes args_frame = mp::dumps(args);
  const auto [n, data] = read_in_place<std::tuple<int, std::span<const double>>>(args_frame);
  CHECK(n == 7);
  CHECK(data.size() == 2);
  CHECK(data[1] == 1.5);
  CHECK(reinterpret_cast<const std::byte*>(data.data()) > args_frame.data());
}

TEST_CASE("a misaligned frame cannot be viewed, but still loads as the owning type") {
  const std::vector<double> v{1.0, 2.0, 3.0};
  const Bytes frame = mp::dumps(v);
  Bytes shifted(frame.size() + 1);
  std::memcpy(shifted.data() + 1, frame.data(), frame.size());
  const std::span<const std::byte> misaligned(shifted.data() + 1, frame.size());
  REQUIRE_THROWS_MATCHES(read_in_place<std::span<const double>>(misaligned), mp::ProcessError,
                         MessageContains("mproc: cannot view std::span<const double> in place: its data is not "
                                         "8-byte aligned in memory"));
  CHECK(mp::loads<std::vector<double>>(misaligned) == v);  // copied through memcpy

  // Characters need no alignment: a string frame is viewable anywhere.
  const Bytes text = mp::dumps(std::string("anywhere"));
  Bytes shifted_text(text.size() + 1);
  std::memcpy(shifted_text.data() + 1, text.data(), text.size());
  CHECK(read_in_place<std::string_view>(std::span(shifted_text).subspan(1)) == "anywhere");
}

// ------------------------------------------------------------ frames

TEST_CASE("frames with a bad magic, version or flags are rejected") {
  const Bytes frame = mp::dumps(std::int32_t{5});
  Bytes bad = frame;
  bad[0] = std::byte{'X'};
  REQUIRE_THROWS_MATCHES(mp::loads<std::int32_t>(bad), mp::ProcessError, MessageContains("mproc: not an mproc frame"));
  REQUIRE_THROWS_MATCHES(mp::frame_size(bad), mp::ProcessError, MessageContains("mproc: not an mproc frame"));
  const Bytes text{std::byte{'h'}, std::byte{'e'}, std::byte{'l'}, std::byte{'l'}, std::byte{'o'}};
  REQUIRE_THROWS_MATCHES(mp::loads<std::string>(text), mp::ProcessError, MessageContains("not an mproc frame"));

  bad = frame;
  bad[4] = std::byte{9};
  REQUIRE_THROWS_MATCHES(mp::loads<std::int32_t>(bad), mp::ProcessError,
                         MessageContains("mproc: unsupported version 9 of the mproc frame format"));
  bad = frame;
  bad[6] = std::byte{1};
  REQUIRE_THROWS_MATCHES(mp::loads<std::int32_t>(bad), mp::ProcessError,
                         MessageContains("mproc: unsupported mproc frame flags"));
  REQUIRE_THROWS_MATCHES(mp::loads<std::int32_t>(Bytes{}), mp::ProcessError,
                         MessageContains("mproc: truncated frame: need 24 bytes for the frame header, 0 left"));
}

TEST_CASE("a frame of another type is a type mismatch naming the expected type") {
  const Bytes frame = mp::dumps(std::vector<double>{1.0});
  REQUIRE_THROWS_MATCHES(mp::loads<std::vector<float>>(frame), mp::ProcessError,
                         MessageContains("mproc: type mismatch: expected a frame of std::vector<float>"));
  REQUIRE_THROWS_MATCHES(mp::loads<std::string>(frame), mp::ProcessError,
                         MessageContains("mproc: type mismatch: expected a frame of std::string"));
  REQUIRE_THROWS_MATCHES(mp::loads<Sample>(mp::dumps(Record{})), mp::ProcessError,
                         MessageContains("expected a frame of Sample"));
}

TEST_CASE("frames truncated at every byte offset are rejected") {
  Record r;
  r.id = 3;
  r.name = "truncate me";
  r.values = {1, 2, 3};
  r.sample = Sample{"s", {1.f, 2.f}};
  r.counts = {{"k", 1}};
  using Mixed = std::tuple<std::vector<std::string>, std::optional<std::map<int, std::vector<bool>>>,
                           std::variant<std::monostate, std::list<double>>>;
  const Mixed mixed{{"a", "bc"}, std::map<int, std::vector<bool>>{{1, {true, false, true}}}, std::list<double>{1.5}};
  const std::vector<Bytes> frames{mp::dumps(r), mp::dumps(mixed), mp::dumps(std::vector<double>(10, 1.0)),
                                  mp::dumps(std::string("abc"))};
  const auto check_all_prefixes = [](const Bytes& frame, auto type_tag) {
    using T = typename decltype(type_tag)::type;
    for (std::size_t k = 0; k < frame.size(); ++k) {
      const Bytes prefix(frame.begin(), frame.begin() + static_cast<std::ptrdiff_t>(k));
      CHECK_THROWS_AS(mp::loads<T>(prefix), mp::ProcessError);
      if (k >= mp::frame_header_size) {
        // With the header's size fixed up, the payload decoder meets the end:
        // a read past it, or a size prefix larger than what remains.
        std::string message;
        try {
          mp::loads<T>(with_fixed_size(prefix));
        } catch (const mp::ProcessError& e) {
          message = e.what();
        }
        const bool named =
            message.starts_with("mproc: truncated frame: need ") ||
            (message.starts_with("mproc: corrupted frame: ") && message.find(" claims ") != std::string::npos);
        if (!named) UNSCOPED_INFO("prefix " << k << ": " << message);
        CHECK(named);
      }
    }
    CHECK(mp::dumps(mp::loads<T>(frame)) == frame);
  };
  check_all_prefixes(frames[0], std::type_identity<Record>{});
  check_all_prefixes(frames[1], std::type_identity<Mixed>{});
  check_all_prefixes(frames[2], std::type_identity<std::vector<double>>{});
  check_all_prefixes(frames[3], std::type_identity<std::string>{});
}

TEST_CASE("truncation errors name what was being decoded") {
  Bytes frame = mp::dumps(std::vector<double>(1000, 1.0));
  frame.resize(mp::frame_header_size + 8 + 12);  // size prefix + 12 bytes of elements
  REQUIRE_THROWS_MATCHES(
      mp::loads<std::vector<double>>(with_fixed_size(frame)), mp::ProcessError,
      MessageContains("mproc: truncated frame: need 8000 bytes for std::vector<double> elements, 12 left"));
  frame.resize(mp::frame_header_size + 3);
  REQUIRE_THROWS_MATCHES(mp::loads<std::vector<double>>(with_fixed_size(frame)), mp::ProcessError,
                         MessageContains("mproc: truncated frame: need 8 bytes for std::vector<double>, 3 left"));
}

TEST_CASE("trailing and left-over bytes are rejected") {
  Bytes frame = mp::dumps(std::string("abc"));
  frame.push_back(std::byte{0});
  REQUIRE_THROWS_MATCHES(mp::loads<std::string>(frame), mp::ProcessError,
                         MessageContains("mproc: corrupted frame: 1 trailing bytes after the 11-byte payload"));
  REQUIRE_THROWS_MATCHES(mp::loads<std::string>(with_fixed_size(frame)), mp::ProcessError,
                         MessageContains("mproc: corrupted frame: 1 bytes left over after decoding std::string"));
  frame.resize(frame.size() - 3);
  REQUIRE_THROWS_MATCHES(mp::loads<std::string>(frame), mp::ProcessError,
                         MessageContains("mproc: truncated frame: the header announces 11 payload bytes, 9 present"));
}

TEST_CASE("oversized size prefixes throw ProcessError before allocating") {
  const std::uint64_t huge = std::uint64_t{1} << 60;
  const auto check = [](const Bytes& frame, auto type_tag, const std::string& message) {
    using T = typename decltype(type_tag)::type;
    REQUIRE_THROWS_MATCHES(mp::loads<T>(frame), mp::ProcessError, MessageContains(message));
  };
  const auto claim = [](std::uint64_t n) { return [n](mp::Writer& w) { put_u64(w, n); }; };
  check(frame_with_payload<std::vector<double>>(claim(huge)), std::type_identity<std::vector<double>>{},
        "mproc: truncated frame: need 9223372036854775808 bytes for std::vector<double> elements, 0 left");
  check(frame_with_payload<std::vector<double>>(claim(~std::uint64_t{0})), std::type_identity<std::vector<double>>{},
        "std::vector<double> claims 18446744073709551615 elements but only 0 bytes remain");
  check(frame_with_payload<std::string>(claim(huge)), std::type_identity<std::string>{},
        "need 1152921504606846976 bytes for std::string elements, 0 left");
  check(frame_with_payload<std::vector<std::string>>(claim(huge)), std::type_identity<std::vector<std::string>>{},
        "mproc: corrupted frame: std::vector<std::string> claims 1152921504606846976 elements but only 0 bytes "
        "remain for them (an element takes at least 8)");
  check(frame_with_payload<std::map<int, int>>(claim(huge)), std::type_identity<std::map<int, int>>{},
        "std::map<int, int> claims 1152921504606846976 elements");
  check(frame_with_payload<std::deque<std::int16_t>>(claim(huge)), std::type_identity<std::deque<std::int16_t>>{},
        "claims 1152921504606846976 elements");
  check(frame_with_payload<std::vector<bool>>(claim(huge)), std::type_identity<std::vector<bool>>{},
        "need 144115188075855872 bytes for std::vector<bool> bits, 0 left");
  check(frame_with_payload<std::list<Sample>>(claim(huge)), std::type_identity<std::list<Sample>>{},
        "mproc: corrupted frame: std::list<Sample> claims 1152921504606846976 elements but only 0 bytes remain for "
        "them (an element takes at least 1)");
  check(frame_with_payload<std::list<Record>>(claim(3)), std::type_identity<std::list<Record>>{},
        "std::list<Record> claims 3 elements but only 0 bytes remain for them (an element takes at least 33)");
  // A nested claim inside otherwise valid data.
  check(frame_with_payload<std::vector<std::vector<int>>>([&](mp::Writer& w) {
          put_u64(w, 1);
          put_u64(w, huge);
        }),
        std::type_identity<std::vector<std::vector<int>>>{}, "bytes for std::vector<int> elements");
}

TEST_CASE("a frame too short for a fixed-size object is rejected before the object is built or reserved (#15)",
          "[failure-model]") {
  // 1 byte of payload announcing an engaged std::optional of 4 KiB: neither
  // reserved as a vector element nor built before its bytes are there.
  using Big = std::optional<std::array<char, 4096>>;
  const auto [big_error, big_bytes] =
      failed_decode<std::vector<Big>>(frame_with_payload<std::vector<Big>>([](mp::Writer& w) {
        put_u64(w, 1);
        w.write_bytes("\1", 1);
      }));
  CHECK_THAT(big_error, Contains("mproc: truncated frame: need 4096 bytes for std::array<char, 4096>, 0 left"));
  CHECK(big_bytes < 1024);
  CHECK_THROWS_MATCHES(mp::loads<Big>(frame_with_payload<Big>([](mp::Writer& w) { w.write_bytes("\1", 1); })),
                       mp::ProcessError, MessageContains("need 4096 bytes for std::array<char, 4096>, 0 left"));
  // A fixed array of non-bitwise elements is checked as a whole first.
  using Strings = std::array<std::string, 1000>;
  CHECK_THROWS_MATCHES(
      mp::loads<Strings>(frame_with_payload<Strings>([](mp::Writer& w) { put_u64(w, 0); })), mp::ProcessError,
      MessageContains("mproc: truncated frame: need 8000 bytes for std::array<std::string, 1000>, 8 left"));
  // A user type is checked against the sum of its members' minimum sizes.
  CHECK_THROWS_MATCHES(mp::loads<Record>(frame_with_payload<Record>([](mp::Writer& w) { put_u64(w, 0); })),
                       mp::ProcessError, MessageContains("need 33 bytes for Record, 8 left"));
  // Legitimate values: reserved capacity stays within 16 times the bytes
  // their elements take at least, the rest grows as elements arrive.
  CHECK(round_trip(std::vector<Big>(40)).size() == 40);
  CHECK(mp::detail::reserve_hint<Big>(40) == 0);
  CHECK(mp::detail::reserve_hint<std::string>(40) == 40);
}

TEST_CASE("nested containers cannot claim the same bytes twice: decoding allocates in proportion to the frame (#15)",
          "[failure-model]") {
  // A chain of Tree levels (int value, child count: 12 bytes each), every
  // level claiming as many children as the bytes after it could hold.
  constexpr std::size_t levels = 200;
  const auto chain = [&](bool huge_counts) {
    return frame_with_payload<Tree>([&](mp::Writer& w) {
      for (std::size_t k = 0; k < levels; ++k) {
        w.write(static_cast<int>(k));
        put_u64(w, huge_counts ? std::uint64_t{1} << 32 : levels - 1 - k);
      }
    });
  };
  for (const bool huge_counts : {false, true}) {
    const Bytes frame = chain(huge_counts);
    const auto [error, bytes] = failed_decode<Tree>(frame);
    INFO("counts: " << (huge_counts ? "2^32" : "what remains") << ", frame: " << frame.size()
                    << " bytes, allocated: " << bytes << ", error: " << error);
    CHECK_THAT(error, Contains("mproc: corrupted frame: std::vector<Tree> claims "));
    CHECK(bytes <= 64 * frame.size() + 16 * 1024);
  }
  // The sibling still to come keeps its bytes: the first inner vector may
  // not claim them.
  using Nested = std::vector<std::vector<std::string>>;
  const Bytes nested = frame_with_payload<Nested>([](mp::Writer& w) {
    put_u64(w, 2);  // two inner vectors: 16 bytes at least
    put_u64(w, 1);  // the first claims one string: 8 bytes at least
    put_u64(w, 0);  //   ""
    put_u64(w, 0);  // the second: empty
  });
  CHECK(mp::loads<Nested>(nested) == Nested{{""}, {}});
  const Bytes overclaim = frame_with_payload<Nested>([](mp::Writer& w) {
    put_u64(w, 2);
    put_u64(w, 2);  // two strings would take the second vector's bytes
    put_u64(w, 0);
    put_u64(w, 0);
  });
  CHECK_THROWS_MATCHES(mp::loads<Nested>(overclaim), mp::ProcessError,
                       MessageContains("std::vector<std::string> claims 2 elements but only 8 bytes remain for them"));
}

TEST_CASE("every value takes at least one byte, so element counts are bounded by the bytes received (#15)",
          "[failure-model]") {
  const std::uint64_t huge = std::uint64_t{1} << 60;
  const auto claims = [&](auto type_tag, std::uint64_t n, const std::string& message) {
    using T = typename decltype(type_tag)::type;
    REQUIRE_THROWS_MATCHES(mp::loads<T>(frame_with_payload<T>([&](mp::Writer& w) { put_u64(w, n); })), mp::ProcessError,
                           MessageContains(message));
  };
  // Empty values: one zero byte each, so a count of them needs that many bytes.
  CHECK(mp::dumps(std::tuple<>{}).size() == mp::frame_header_size + 1);
  CHECK(mp::dumps(std::array<std::string, 0>{}).size() == mp::frame_header_size + 1);
  CHECK(mp::dumps(Nothing{}).size() == mp::frame_header_size + 1);
  CHECK(mp::dumps(std::vector<std::tuple<>>(3)).size() == mp::frame_header_size + 8 + 3);
  claims(std::type_identity<std::vector<std::tuple<>>>{}, huge,
         "mproc: corrupted frame: std::vector<std::tuple<>> claims 1152921504606846976 elements but only 0 bytes "
         "remain for them (an element takes at least 1)");
  claims(std::type_identity<std::vector<std::tuple<>>>{}, 1u << 20, "claims 1048576 elements but only 0 bytes");
  claims(std::type_identity<std::list<std::tuple<>>>{}, 2, "std::list<std::tuple<>> claims 2 elements");
  claims(std::type_identity<std::vector<Nothing>>{}, 5, "std::vector<Nothing> claims 5 elements");
  claims(std::type_identity<std::vector<std::array<std::string, 0>>>{}, 5, "claims 5 elements");
  claims(std::type_identity<std::vector<std::monostate>>{}, huge,
         "std::vector<std::monostate> claims 1152921504606846976 elements");
  const Bytes sets = frame_with_payload<std::set<std::tuple<>>>([&](mp::Writer& w) {
    put_u64(w, 2);
    w.write_bytes(std::array<std::byte, 2>{}.data(), 2);
  });
  REQUIRE_THROWS_MATCHES(mp::loads<std::set<std::tuple<>>>(sets), mp::ProcessError, MessageContains("duplicate key"));
  // The zero byte is checked.
  REQUIRE_THROWS_MATCHES(mp::loads<Nothing>(frame_with_payload<Nothing>([](mp::Writer& w) { w.write_bytes("\7", 1); })),
                         mp::ProcessError,
                         MessageContains("mproc: corrupted frame: invalid byte 7 after an empty Nothing (must be 0)"));
  REQUIRE_THROWS_MATCHES(
      mp::loads<std::tuple<>>(frame_with_payload<std::tuple<>>([](mp::Writer& w) { w.write_bytes("\1", 1); })),
      mp::ProcessError, MessageContains("invalid std::tuple<> byte 1 (must be 0)"));
  // Legitimate ones still round-trip.
  CHECK(round_trip(std::vector<std::tuple<>>(1000)).size() == 1000);
  CHECK(round_trip(std::list<std::tuple<>>(3)).size() == 3);
  CHECK(round_trip(std::vector<Nothing>(10)).size() == 10);
  CHECK(round_trip(std::vector<std::monostate>(100000)).size() == 100000);
  CHECK(round_trip(std::make_tuple(std::tuple<>{}, Nothing{}, 7)) == std::make_tuple(std::tuple<>{}, Nothing{}, 7));
}

TEST_CASE("invalid bool, optional flag, variant index, padding and duplicate keys are rejected") {
  REQUIRE_THROWS_MATCHES(mp::loads<bool>(frame_with_payload<bool>([](mp::Writer& w) { w.write(std::uint8_t{2}); })),
                         mp::ProcessError, MessageContains("mproc: corrupted frame: invalid bool value 2"));
  REQUIRE_THROWS_MATCHES(mp::loads<std::optional<int>>(
                             frame_with_payload<std::optional<int>>([](mp::Writer& w) { w.write(std::uint8_t{7}); })),
                         mp::ProcessError, MessageContains("invalid std::optional<int> flag 7"));
  using Var = std::variant<int, std::string>;
  REQUIRE_THROWS_MATCHES(
      mp::loads<Var>(frame_with_payload<Var>([](mp::Writer& w) {
        w.write(std::uint32_t{2});
        put_u64(w, 0);
      })),
      mp::ProcessError,
      MessageContains("mproc: corrupted frame: std::variant<int, std::string> alternative index 2 out of range "
                      "(2 alternatives)"));
  REQUIRE_THROWS_AS(mp::loads<Var>(frame_with_payload<Var>([](mp::Writer& w) {
                      w.write(std::uint32_t{0xFFFFFFFF});
                      put_u64(w, 0);
                    })),
                    mp::ProcessError);
  REQUIRE_THROWS_MATCHES(
      mp::loads<std::monostate>(frame_with_payload<std::monostate>([](mp::Writer& w) { w.write(std::uint8_t{3}); })),
      mp::ProcessError, MessageContains("invalid std::monostate byte 3"));

  // Padding before the doubles of a vector must be zero.
  Bytes frame = mp::dumps(std::make_tuple(std::int8_t{1}, std::vector<double>{1.0}));
  const std::size_t pad_at = mp::frame_header_size + 1 + 8;  // int8, size
  CHECK(frame[pad_at] == std::byte{0});
  frame[pad_at] = std::byte{1};
  REQUIRE_THROWS_MATCHES((mp::loads<std::tuple<std::int8_t, std::vector<double>>>(frame)), mp::ProcessError,
                         MessageContains("non-zero alignment padding before std::vector<double>"));

  // Unused bits of a vector<bool>.
  Bytes bits = mp::dumps(std::vector<bool>{true, false, true});
  bits.back() = std::byte{0xFF};
  REQUIRE_THROWS_MATCHES(mp::loads<std::vector<bool>>(bits), mp::ProcessError,
                         MessageContains("non-zero padding bits after the last element of std::vector<bool>"));

  const auto dup = frame_with_payload<std::map<int, int>>([](mp::Writer& w) {
    put_u64(w, 2);
    w.write(1);
    w.write(10);
    w.write(1);
    w.write(20);
  });
  REQUIRE_THROWS_MATCHES((mp::loads<std::map<int, int>>(dup)), mp::ProcessError,
                         MessageContains("mproc: corrupted frame: duplicate key in std::map<int, int>"));
  REQUIRE_THROWS_AS(
      (mp::loads<std::unordered_map<int, int>>(frame_with_payload<std::unordered_map<int, int>>([](mp::Writer& w) {
        put_u64(w, 2);
        w.write(5);
        w.write(0);
        w.write(5);
        w.write(0);
      }))),
      mp::ProcessError);
  // Keys out of order are accepted (and sorted).
  const auto unordered = frame_with_payload<std::map<int, int>>([](mp::Writer& w) {
    put_u64(w, 2);
    w.write(2);
    w.write(20);
    w.write(1);
    w.write(10);
  });
  CHECK(mp::loads<std::map<int, int>>(unordered) == std::map<int, int>{{1, 10}, {2, 20}});
}

TEST_CASE("random corruption of valid frames never crashes: it decodes or throws ProcessError") {
  using Mixed = std::tuple<std::vector<std::string>, std::map<std::string, std::vector<double>>,
                           std::optional<std::variant<std::monostate, std::int64_t, std::string>>, Record>;
  Record rec;
  rec.name = "r";
  rec.values = {1, 2};
  rec.sample = Sample{"s", {1.f}};
  const Mixed value{{"a", "bb", ""},
                    {{"k", {1.0, 2.0}}, {"l", {}}},
                    std::variant<std::monostate, std::int64_t, std::string>{"v"},
                    rec};
  const Bytes frame = mp::dumps(value);
  std::mt19937_64 rng(12345);
  int decoded = 0;
  for (int round = 0; round < 20000; ++round) {
    Bytes bad = frame;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < flips; ++i) {
      const std::size_t at = mp::frame_header_size + rng() % (bad.size() - mp::frame_header_size);
      bad[at] = static_cast<std::byte>(rng());
    }
    try {
      const Mixed out = mp::loads<Mixed>(bad);
      ++decoded;
      CHECK(mp::loads<Mixed>(mp::dumps(out)) == out);
    } catch (const mp::ProcessError&) {
    }
  }
  CHECK(decoded > 0);  // some flips hit plain data
}

// ------------------------------------------------------------ Reader, threads

TEST_CASE("Reader reads bounds-checked, in place, and names what it reads") {
  const std::array<std::byte, 6> bytes{std::byte{1}, std::byte{2}, std::byte{3},
                                       std::byte{4}, std::byte{5}, std::byte{6}};
  mp::Reader r(bytes);
  CHECK(r.remaining() == 6);
  std::uint16_t v = 0;
  r.read_bytes(&v, 2);
  CHECK(v == 0x0201);
  const auto s = r.read_span(3);
  CHECK(s.data() == bytes.data() + 2);
  CHECK(r.position() == 5);
  REQUIRE_THROWS_MATCHES(r.read_bytes(&v, 2, "the widget count"), mp::ProcessError,
                         MessageContains("mproc: truncated frame: need 2 bytes for the widget count, 1 left"));
  CHECK(r.remaining() == 1);  // a failed read consumes nothing
  REQUIRE_THROWS_AS(r.read<std::uint64_t>(), mp::ProcessError);
  CHECK(r.read<std::uint8_t>() == 6);
  CHECK(r.remaining() == 0);
}

TEST_CASE("encoding and decoding run concurrently from many threads") {
  Record rec;
  rec.name = "shared";
  rec.values.assign(5000, 1.5);
  rec.counts = {{"a", 1}};
  const Bytes expected = mp::dumps(rec);
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        const Bytes frame = mp::dumps(rec);
        if (frame == expected && mp::loads<Record>(frame) == rec &&
            read_in_place<std::span<const double>>(mp::dumps(rec.values)).size() == 5000)
          ++ok[static_cast<std::size_t>(t)];
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(ok == std::vector<int>(4, 200));
}

// ------------------------------------------------ plain structs, no macro

namespace agg {

struct Sample {
  std::string path;
  std::vector<float> x;
  int label = 0;
  bool operator==(const Sample&) const = default;
};

struct Nested {
  const std::string name;  // const members: rebuilt, not assigned
  Sample sample;
  std::vector<Sample> samples;
  std::map<std::string, Sample> by_name;
  std::optional<Sample> maybe;
  std::tuple<Sample, int> pair;
  std::array<Sample, 2> two;
  Pod pod;  // trivially copyable: one memcpy inside
  Record record;  // MPROC_SERIALIZE inside
  bool operator==(const Nested&) const = default;
};

// No default constructor in a member: read builds the struct from its members.
struct NoDefault {
  explicit NoDefault(int v) : value(v) {}
  int value;
  bool operator==(const NoDefault&) const = default;
};
struct HoldsNoDefault {
  std::string tag;
  NoDefault n;
  bool operator==(const HoldsNoDefault&) const = default;
};

// 40 members (the limit is 64).
struct Wide {
  std::string m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19;
  int i0, i1, i2, i3, i4, i5, i6, i7, i8, i9, i10, i11, i12, i13, i14, i15, i16, i17, i18, i19;
  bool operator==(const Wide&) const = default;
};

// Aggregates, not trivially copyable, without a member-wise serialization.
struct Base {
  int b = 0;
};
struct WithBase : Base {
  std::string s;
};
struct WithCArray {
  std::string s;
  int a[3];
};
struct WithPointer {
  std::string s;
  const char* text;
};
struct WithReference {
  std::string s;
  const int& r;
};
struct WithView {
  std::string s;
  std::string_view v;
};
union Number {
  int i;
  float f;
};
struct WithUnion {
  std::string s;
  Number n;
};
struct WithUniquePtr {
  std::string s;
  std::unique_ptr<int> p;
};

// A user serializer wins over the member-wise path.
struct Shouted {
  std::string text;
};

// Two structs that differ only in their members.
struct OneMember {
  std::string a;
};
template <class M>
struct Holder {
  std::string s;
  M m;
};

}  // namespace agg

template <>
struct mproc::serializer<agg::Shouted> {
  static void write(mproc::Writer& w, const agg::Shouted& s) { w.write(s.text + "!"); }
  static agg::Shouted read(mproc::Reader& r) { return {r.read<std::string>() + "?"}; }
};

TEST_CASE("a plain struct crosses member by member, without a serializer") {
  STATIC_REQUIRE(mp::serializable<agg::Sample>);
  STATIC_REQUIRE(mp::owning_decodable<agg::Sample>);
  STATIC_REQUIRE(mp::detail::min_size_v<agg::Sample> == 8 + 8 + 4);

  const agg::Sample s{"img/0001.png", {0.5f, 1.5f}, 7};
  CHECK(mp::loads<agg::Sample>(mp::dumps(s)) == s);
  // Members in declaration order, each as on its own.
  Bytes members;
  {
    mp::Writer w(members);
    w.write(s.path);
    w.write(s.x);
    w.write(s.label);
  }
  const Bytes frame = mp::dumps(s);
  CHECK(Bytes(frame.begin() + mp::frame_header_size, frame.end()) == members);

  const agg::Nested n{"n",
                      s,
                      {s, {"b", {}, 2}},
                      {{"k", s}},
                      s,
                      {s, 3},
                      {{s, s}},
                      Pod{1, 2.0, {'a', 'b', 'c', 0}},
                      Record{1, "r", {1.0}, std::nullopt, {{"c", 1}}}};
  CHECK(mp::loads<agg::Nested>(mp::dumps(n)) == n);
  CHECK(mp::loads<std::vector<agg::Nested>>(mp::dumps(std::vector<agg::Nested>{n, n})) ==
        std::vector<agg::Nested>{n, n});
  const std::map<int, std::optional<agg::Sample>> m{{1, s}, {2, std::nullopt}};
  CHECK(mp::loads<decltype(m)>(mp::dumps(m)) == m);

  const agg::HoldsNoDefault h{"t", agg::NoDefault(5)};
  CHECK(mp::loads<agg::HoldsNoDefault>(mp::dumps(h)) == h);

  agg::Wide wide{};
  wide.m19 = "last string";
  wide.i19 = 19;
  CHECK(mp::loads<agg::Wide>(mp::dumps(wide)) == wide);
}

TEST_CASE("a trivially copyable struct stays one block, a user serializer wins over the member-wise path") {
  STATIC_REQUIRE(mp::detail::bitwise<Pod>);
  CHECK(mp::encoded_size(Pod{}) == mp::frame_header_size + sizeof(Pod));
  STATIC_REQUIRE(!mp::detail::is_builtin_v<agg::Shouted>);
  CHECK(mp::loads<agg::Shouted>(mp::dumps(agg::Shouted{"hi"})).text == "hi!?");
  CHECK(mp::loads<Sample>(mp::dumps(Sample{"s", {1.0f}})) == Sample{"s", {1.0f}});  // hand-written, an aggregate
  CHECK(mp::loads<Record>(mp::dumps(Record{})) == Record{});                         // MPROC_SERIALIZE
}

TEST_CASE("an aggregate that cannot be sent member by member is a compile error") {
  using mp::detail::memberwise_fault;
  STATIC_REQUIRE(!mp::serializable<agg::WithBase>);
  STATIC_REQUIRE(mp::detail::memberwise_fault_of<agg::WithBase>() == memberwise_fault::base_class);
  STATIC_REQUIRE(!mp::serializable<agg::WithCArray>);
  STATIC_REQUIRE(mp::detail::memberwise_fault_of<agg::WithCArray>() == memberwise_fault::c_array);
  STATIC_REQUIRE(!mp::serializable<agg::WithPointer>);
  STATIC_REQUIRE(!mp::serializable<agg::WithReference>);
  STATIC_REQUIRE(!mp::serializable<agg::WithView>);
  STATIC_REQUIRE(!mp::serializable<agg::WithUnion>);
  STATIC_REQUIRE(!mp::serializable<agg::WithUniquePtr>);
  STATIC_REQUIRE(!mp::serializable<std::vector<agg::WithPointer>>);
  STATIC_REQUIRE(mp::detail::memberwise_fault_of<agg::WithUniquePtr>() == memberwise_fault::member);
}

TEST_CASE("the fingerprint of a struct sent member by member includes its member types") {
  // Types without such a struct keep the hash of their name alone.
  CHECK(mp::type_fingerprint<std::vector<int>>() == mp::detail::fnv1a(mp::detail::type_name_v<std::vector<int>>));
  CHECK(mp::type_fingerprint<Pod>() == mp::detail::fnv1a(mp::detail::type_name_v<Pod>));
  CHECK(mp::type_fingerprint<Record>() == mp::detail::fnv1a(mp::detail::type_name_v<Record>));
  CHECK(mp::type_fingerprint<agg::Sample>() != mp::detail::fnv1a(mp::detail::type_name_v<agg::Sample>));
  // The member lists differ, also seen through containers.
  CHECK(mp::detail::members_hash<agg::Holder<int>>() != mp::detail::members_hash<agg::Holder<double>>());
  CHECK(mp::detail::members_hash<agg::OneMember>() != mp::detail::members_hash<agg::Holder<int>>());
  CHECK(mp::detail::members_hash<std::vector<agg::Sample>>() == mp::detail::members_hash<agg::Sample>());
  CHECK(mp::detail::members_hash<std::optional<std::map<int, agg::Sample>>>() != 0);
  CHECK_THROWS_WITH(mp::loads<agg::Holder<int>>(mp::dumps(agg::Holder<double>{"x", 1.0})),
                    Contains("mproc: type mismatch"));
}

TEST_CASE("truncated or corrupted bytes of a plain struct throw ProcessError") {
  const Bytes frame = mp::dumps(agg::Sample{"path", {1.0f, 2.0f}, 3});
  for (std::size_t cut = mp::frame_header_size; cut < frame.size(); ++cut) {
    Bytes part(frame.begin(), frame.begin() + static_cast<std::ptrdiff_t>(cut));
    const std::uint64_t payload = cut - mp::frame_header_size;
    std::memcpy(part.data() + 16, &payload, sizeof payload);
    CHECK_THROWS_AS(mp::loads<agg::Sample>(part), mp::ProcessError);
  }
  Bytes bad = frame;
  const std::uint64_t huge = 1u << 30;
  std::memcpy(bad.data() + mp::frame_header_size, &huge, sizeof huge);  // the path's length
  CHECK_THROWS_WITH(mp::loads<agg::Sample>(bad), Contains("mproc: truncated frame"));
}

// ------------------------------------------------ MPROC_SERIALIZE, namespaces

namespace geo {

// Not an aggregate: private members, a constructor.
class Point {
 public:
  Point() = default;
  Point(double x, double y, std::string label) : x_(x), y_(y), label_(std::move(label)) {}
  bool operator==(const Point&) const = default;

 private:
  friend struct mproc::serializer<Point>;
  double x_ = 0;
  double y_ = 0;
  std::string label_;
};

struct Segment {
  Segment() = default;
  Segment(Point a, Point b) : from(std::move(a)), to(std::move(b)) {}
  Point from, to;
  bool operator==(const Segment&) const = default;
};

}  // namespace geo

// At global scope, with the namespace's qualified name; with or without the
// trailing semicolon (both compile under -Wpedantic -Werror).
MPROC_SERIALIZE(geo::Point, x_, y_, label_);
MPROC_SERIALIZE(geo::Segment, from, to)

TEST_CASE("MPROC_SERIALIZE serializes a class of a namespace, with or without a semicolon") {
  const geo::Segment seg{{1, 2, "a"}, {3, 4, "b"}};
  CHECK(mp::loads<geo::Segment>(mp::dumps(seg)) == seg);
  CHECK(mp::loads<std::vector<geo::Point>>(mp::dumps(std::vector<geo::Point>{{5, 6, "c"}})) ==
        std::vector<geo::Point>{{5, 6, "c"}});
}
