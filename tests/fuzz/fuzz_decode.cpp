// libFuzzer target for the decoder (mproc/serialize.hpp): arbitrary bytes are
// decoded as one of several nested types; decoding must either succeed or
// throw mproc::ProcessError, never crash, over-read, over-allocate or hang.
// A value that decodes must re-encode consistently through every sink.
// Amplification: a decode, successful or not, may allocate at most
// amplification_factor times the frame's size plus amplification_slack
// bytes (counted through the sanitizer's malloc hook); more aborts.
//
// Input: byte 0 selects the type (low 7 bits) and the mode (high bit):
//   0: the rest is a payload; a valid header for the type is put in front,
//      so the fuzzer explores the payload decoder;
//   1: the rest is a whole frame (header checks included).
//
// Build and run: .ci/fuzz. `fuzz_decode --seed DIR` writes a seed corpus of
// valid inputs to DIR and exits.
// SPDX-License-Identifier: MIT
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <variant>
#include <vector>

#include <sanitizer/allocator_interface.h>

#include <mproc/serialize.hpp>

namespace fuzz {

enum class Color : std::uint16_t { red, green, blue };

struct Pod {  // no padding: bitwise copies keep every byte
  std::int32_t a;
  std::int32_t b;
  double c;
  bool operator==(const Pod&) const = default;
};

struct Inner {
  std::string label;
  std::vector<float> weights;
  bool operator==(const Inner&) const = default;
};

struct Record {
  std::int64_t id = 0;
  std::string name;
  std::vector<int> values;
  std::optional<Inner> inner;
  std::variant<std::monostate, Pod, std::string> extra;
  bool operator==(const Record&) const = default;
};

struct Tree {
  std::uint8_t tag = 0;
  std::vector<Tree> children;
  bool operator==(const Tree&) const = default;
};

}  // namespace fuzz

MPROC_SERIALIZE(fuzz::Inner, label, weights);
MPROC_SERIALIZE(fuzz::Record, id, name, values, inner, extra);
MPROC_SERIALIZE(fuzz::Tree, tag, children);

namespace fuzz {

using T0 = std::vector<std::string>;
using T1 = std::map<std::string, std::vector<double>>;
using T2 = std::tuple<int, std::optional<std::string>,
                      std::variant<std::monostate, std::int64_t, std::string, std::vector<std::uint8_t>>>;
using T3 = Record;
using T4 = Tree;
using T5 = std::unordered_map<int, std::set<std::string>>;
using T6 = std::deque<std::list<std::pair<std::int16_t, bool>>>;
using T7 = std::vector<bool>;
using T8 = std::tuple<std::array<bool, 3>, std::chrono::milliseconds, Color, std::vector<std::monostate>,
                      std::multimap<int, std::string>>;
using T9 = std::tuple<std::span<const double>, std::string_view, std::vector<std::string_view>>;
using T10 = std::pair<std::vector<std::array<float, 3>>, std::u16string>;
using T11 = std::vector<Pod>;
using T12 = std::optional<std::vector<Record>>;
using T13 = std::pair<std::vector<std::tuple<>>, std::list<std::tuple<std::tuple<>, std::monostate>>>;
using T14 = std::vector<std::vector<std::vector<std::string>>>;
using T15 = std::map<std::string, std::list<std::array<std::string, 3>>>;
constexpr int type_count = 16;

// The allocation budget of one decode: the fuzz types' elements take at most
// ~16 times their smallest encoding in memory, and containers grow by
// doubling; the slack covers error messages and first blocks (std::deque).
constexpr std::size_t amplification_factor = 64;
constexpr std::size_t amplification_slack = 16 * 1024;

// Bytes allocated while `counting` (single-threaded target).
bool counting = false;
std::size_t allocated = 0;

[[noreturn]] void fail(const char* what, int type) {
  std::fprintf(stderr, "fuzz_decode: %s (type %d)\n", what, type);
  std::abort();
}

#define FUZZ_CHECK(cond, type)      \
  do {                              \
    if (!(cond)) fail(#cond, type); \
  } while (0)

// Encodings whose decoder accepts exactly one encoding per value: re-encoding
// what decoded must give the input back.
template <class T>
constexpr bool canonical =
    !std::is_same_v<T, T1> && !std::is_same_v<T, T5> && !std::is_same_v<T, T8> && !std::is_same_v<T, T15>;

// mp::loads, or for view types (which loads refuses) the same decoder
// without that check: the views point into `frame`.
template <class T>
T load(std::span<const std::byte> frame) {
  if constexpr (mproc::owning_decodable<T>)
    return mproc::loads<T>(frame);
  else
    return mproc::detail::decode_frame<T>(frame);
}

template <class T>
void check_value(const T& value, std::span<const std::byte> frame, int type) {
  const std::vector<std::byte> again = mproc::dumps(value);
  FUZZ_CHECK(mproc::encoded_size(value) == again.size(), type);
  if constexpr (canonical<T>) {
    FUZZ_CHECK(again.size() == frame.size(), type);
    FUZZ_CHECK(std::memcmp(again.data(), frame.data(), frame.size()) == 0, type);
  }
  // A second decode is a fixed point.
  const T second = load<T>(again);
  if constexpr (std::is_same_v<T, T5>) {
    FUZZ_CHECK(second == value, type);  // unordered: iteration order may differ
  } else {
    FUZZ_CHECK(mproc::dumps(second) == again, type);
  }
  // Every sink agrees.
  std::vector<std::byte> scratch;
  std::vector<std::byte> joined;
  {
    mproc::Writer w(mproc::Writer::gather, scratch, 16);
    mproc::write_frame(w, value);
    w.for_each_piece([&](std::span<const std::byte> p) { joined.insert(joined.end(), p.begin(), p.end()); });
  }
  FUZZ_CHECK(joined == again, type);
  std::vector<std::byte> exact(again.size());
  FUZZ_CHECK(mproc::dumps_into(exact, value) == again.size(), type);
  FUZZ_CHECK(exact == again, type);
  bool threw = false;
  try {
    mproc::dumps_into(std::span(exact).first(exact.size() - 1), value);
  } catch (const mproc::ProcessError&) {
    threw = true;
  }
  FUZZ_CHECK(threw, type);
}

template <class T>
void decode(std::span<const std::byte> frame, int type) {
  std::optional<T> value;
  allocated = 0;
  counting = true;
  try {
    value.emplace(load<T>(frame));
  } catch (const mproc::ProcessError&) {
    // Rejected: fine. Anything else escapes and is reported by libFuzzer.
  }
  counting = false;
  if (allocated > amplification_factor * frame.size() + amplification_slack) {
    std::fprintf(stderr, "fuzz_decode: decoding a %zu-byte frame allocated %zu bytes\n", frame.size(), allocated);
    fail("allocation amplification", type);
  }
  if (value) check_value(*value, frame, type);
}

template <class T>
std::vector<std::byte> with_header(std::span<const std::byte> payload) {
  std::vector<std::byte> frame = mproc::dumps(std::tuple<>{});
  frame.resize(mproc::frame_header_size);
  const std::uint64_t fingerprint = mproc::type_fingerprint<T>();
  const std::uint64_t size = payload.size();
  std::memcpy(frame.data() + 8, &fingerprint, 8);
  std::memcpy(frame.data() + 16, &size, 8);
  frame.insert(frame.end(), payload.begin(), payload.end());
  return frame;
}

template <class T>
void run(std::span<const std::byte> rest, bool whole_frame, int type) {
  // Copied into a vector: 16-byte aligned like a real frame, and ASan sees its exact end.
  const std::vector<std::byte> frame =
      whole_frame ? std::vector<std::byte>(rest.begin(), rest.end()) : with_header<T>(rest);
  decode<T>(frame, type);
}

void dispatch(int type, std::span<const std::byte> rest, bool whole_frame) {
  switch (type) {
    case 0:
      return run<T0>(rest, whole_frame, type);
    case 1:
      return run<T1>(rest, whole_frame, type);
    case 2:
      return run<T2>(rest, whole_frame, type);
    case 3:
      return run<T3>(rest, whole_frame, type);
    case 4:
      return run<T4>(rest, whole_frame, type);
    case 5:
      return run<T5>(rest, whole_frame, type);
    case 6:
      return run<T6>(rest, whole_frame, type);
    case 7:
      return run<T7>(rest, whole_frame, type);
    case 8:
      return run<T8>(rest, whole_frame, type);
    case 9:
      return run<T9>(rest, whole_frame, type);
    case 10:
      return run<T10>(rest, whole_frame, type);
    case 11:
      return run<T11>(rest, whole_frame, type);
    case 12:
      return run<T12>(rest, whole_frame, type);
    case 13:
      return run<T13>(rest, whole_frame, type);
    case 14:
      return run<T14>(rest, whole_frame, type);
    case 15:
      return run<T15>(rest, whole_frame, type);
    default:
      return;
  }
}

// ------------------------------------------------------------ seed corpus

int seed_count = 0;

template <class T>
void seed(const std::filesystem::path& dir, int type, const T& value) {
  const std::vector<std::byte> frame = mproc::dumps(value);
  for (const bool whole : {false, true}) {
    std::vector<std::byte> input{static_cast<std::byte>(type | (whole ? 0x80 : 0))};
    const auto from = frame.begin() + (whole ? 0 : static_cast<std::ptrdiff_t>(mproc::frame_header_size));
    input.insert(input.end(), from, frame.end());
    std::ofstream out(dir / ("seed-" + std::to_string(seed_count++)), std::ios::binary);
    out.write(reinterpret_cast<const char*>(input.data()), static_cast<std::streamsize>(input.size()));
  }
}

void write_seeds(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  seed(dir, 0, T0{"alpha", "", "gamma"});
  seed(dir, 0, T0{});
  seed(dir, 1, T1{{"k", {1.0, -2.5}}, {"empty", {}}});
  seed(dir, 2, T2{7, "opt", std::int64_t{-3}});
  seed(dir, 2, T2{-1, std::nullopt, std::vector<std::uint8_t>{1, 2, 3}});
  seed(dir, 2, T2{0, "", std::string("alt")});
  Record r;
  r.id = 99;
  r.name = "record";
  r.values = {1, 2, 3};
  r.inner = Inner{"inner", {0.5f, 1.5f}};
  r.extra = Pod{1, 2, 3.0};
  seed(dir, 3, r);
  r.extra = std::string("extra");
  r.inner.reset();
  seed(dir, 3, r);
  seed(dir, 4, Tree{1, {Tree{2, {}}, Tree{3, {Tree{4, {}}}}}});
  seed(dir, 5, T5{{1, {"a", "b"}}, {-7, {}}});
  seed(dir, 6, T6{{{1, true}, {-2, false}}, {}});
  seed(dir, 7, T7{true, false, true, true, false, false, true, false, true});
  seed(dir, 8,
       T8{{true, false, true},
          std::chrono::milliseconds(1500),
          Color::green,
          std::vector<std::monostate>(3),
          {{1, "x"}, {1, "y"}}});
  const std::vector<double> doubles{1.0, 2.0};
  const std::vector<std::string_view> views{"v", "w"};
  seed(dir, 9, T9{doubles, "view", views});
  seed(dir, 10, T10{{{1, 2, 3}, {4, 5, 6}}, u"wide"});
  seed(dir, 11, T11{{1, 2, 3.5}, {-1, -2, -3.5}});
  seed(dir, 12, T12{std::vector<Record>{r, Record{}}});
  seed(dir, 12, T12{});
  seed(dir, 13, T13{std::vector<std::tuple<>>(3), {{}, {}}});
  seed(dir, 14, T14{{{"a", ""}, {}}, {}, {{"bc"}}});
  seed(dir, 15, T15{{"k", {{"x", "", "z"}, {}}}, {"", {}}});
}

void on_malloc(const volatile void*, std::size_t size) {
  if (counting) allocated += size;
}
void on_free(const volatile void*) {}

}  // namespace fuzz

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  __sanitizer_install_malloc_and_free_hooks(fuzz::on_malloc, fuzz::on_free);
  for (int i = 1; i < *argc; ++i) {
    const std::string_view arg = (*argv)[i];
    if (arg == "--seed" && i + 1 < *argc) {
      fuzz::write_seeds((*argv)[i + 1]);
      std::printf("fuzz_decode: wrote %d seeds to %s\n", fuzz::seed_count, (*argv)[i + 1]);
      std::exit(0);
    }
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const int type = (data[0] & 0x7F) % fuzz::type_count;
  const bool whole_frame = (data[0] & 0x80) != 0;
  fuzz::dispatch(type, std::as_bytes(std::span(data + 1, size - 1)), whole_frame);
  return 0;
}
