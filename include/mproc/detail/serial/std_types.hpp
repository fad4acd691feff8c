// Serialization machinery, layer 5: the built-in serializers, one per kind
// (traits.hpp's kind_of): bool, bitwise values, empty values, optional,
// variant, tuple/pair, std::array, contiguous blocks (vector/string of
// trivially copyable data, one memcpy), views, vector<bool>, other sequences,
// associative containers, and aggregates member by member; each bounds its allocation by the bytes
// received. The primary serializer<T> (in <mproc/serialize.hpp>) derives from
// builtin_serializer<T>.
// Part of <mproc/serialize.hpp>, which includes it after its declarations
// (serializer, serializable, Writer/Reader); not a header of its own.
// SPDX-License-Identifier: MIT
#pragma once

#ifndef MPROC_DETAIL_SERIALIZE_DECLARED
#error "mproc/detail/serial/*.hpp are parts of <mproc/serialize.hpp>: include that instead"
#endif

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>

#include <mproc/detail/util/type_name.hpp>
#include <mproc/errors.hpp>

namespace mproc {

namespace detail {

inline void write_size(Writer& w, std::size_t n) {
  const auto v = static_cast<std::uint64_t>(n);
  w.write_bytes(&v, sizeof v);
}

// Reads a 64-bit element count.
inline std::uint64_t read_size(Reader& r, std::string_view type) {
  std::uint64_t n;
  r.read_bytes(&n, sizeof n, type);
  return n;
}

[[noreturn]] inline void fail_count(Reader& r, std::string_view type, std::uint64_t n, std::size_t element_min) {
  r.fail(readable_type_name(type) + " claims " + std::to_string(n) + " elements but only " +
         std::to_string(r.available()) + " bytes remain for them (an element takes at least " +
         std::to_string(element_min) + ")");
}

// Reads an element count and checks it against the bytes available, given
// that every element takes at least min_size_v<E> (>= 1) bytes.
template <class E>
std::size_t read_count(Reader& r, std::string_view type) {
  const std::uint64_t n = read_size(r, type);
  constexpr std::size_t m = min_size_v<E>;
  if (n > r.available() / m) fail_count(r, type, n, m);
  return static_cast<std::size_t>(n);
}

// Capacity worth reserving ahead for n elements of E (a count from
// read_count<E>): all of them unless that would take more than
// reserve_factor times the bytes they encode to at least, so that a frame
// of small encodings of large objects (std::optional<std::array<char,
// 4096>>) reserves no more than its size allows. More elements grow the
// container as they are decoded.
inline constexpr std::size_t reserve_factor = 16;
template <class E>
constexpr std::size_t reserve_hint(std::size_t n) noexcept {
  constexpr std::size_t m = min_size_v<E>;
  if constexpr (sizeof(E) <= reserve_factor * m)
    return n;
  else
    return n / (sizeof(E) / m) * reserve_factor;
}

// Size, zero padding to alignof(E), then the elements as one block.
template <class E>
void write_block(Writer& w, const E* data, std::size_t n) {
  write_size(w, n);
  w.align(alignof(E));
  w.write_borrowed(std::as_bytes(std::span<const E>(data, n)));
}

// Reads what write_block wrote, in place: the count and the bytes.
template <class E>
std::pair<const std::byte*, std::size_t> read_block(Reader& r, std::string_view type) {
  const std::uint64_t n = read_size(r, type);
  r.align(alignof(E), type);
  if (n > r.remaining() / sizeof(E)) {
    if (n > std::numeric_limits<std::size_t>::max() / sizeof(E)) fail_count(r, type, n, sizeof(E));
    r.require(static_cast<std::size_t>(n) * sizeof(E), type, "elements");
  }
  const std::size_t count = static_cast<std::size_t>(n);
  return {r.read_span(count * sizeof(E), type).data(), count};
}

template <kind K, class T>
struct builtin_impl;  // K == kind::unsupported: no write/read

template <class T>
struct builtin_impl<kind::bitwise, T> : builtin_tag {
  static constexpr bool mproc_bitwise = true;
  static constexpr std::size_t min_size = sizeof(T);
  // (A byte span made from the address: a std::span<const T> would check the
  // range concepts once more for every T sent.)
  static void write(Writer& w, const T& value) {
    w.write_borrowed(std::span<const std::byte>(reinterpret_cast<const std::byte*>(&value), sizeof(T)));
  }
  static T read(Reader& r) {
    const std::byte* p = r.read_span(sizeof(T), type_name_v<T>).data();
    if constexpr (std::is_default_constructible_v<T>) {
      T value;
      std::memcpy(static_cast<void*>(&value), p, sizeof(T));
      return value;
    } else {
      std::array<std::byte, sizeof(T)> raw;
      std::memcpy(raw.data(), p, sizeof(T));
      return std::bit_cast<T>(raw);
    }
  }
};

template <class T>
struct builtin_impl<kind::boolean, T> : builtin_tag {
  static constexpr std::size_t min_size = 1;
  static void write(Writer& w, bool value) {
    const std::uint8_t b = value ? 1 : 0;
    w.write_bytes(&b, 1);
  }
  static bool read(Reader& r) {
    std::uint8_t b;
    r.read_bytes(&b, 1, "bool");
    if (b > 1) r.fail("invalid bool value " + std::to_string(b) + " (must be 0 or 1)");
    return b == 1;
  }
};

template <class T>
struct builtin_impl<kind::empty, T> : builtin_tag {
  static constexpr std::size_t min_size = 1;
  static void write(Writer& w, const T&) {
    const std::uint8_t zero = 0;
    w.write_bytes(&zero, 1);
  }
  static T read(Reader& r) {
    std::uint8_t b;
    r.read_bytes(&b, 1, type_name_v<T>);
    if (b != 0) r.fail("invalid " + readable_type_name(type_name_v<T>) + " byte " + std::to_string(b) + " (must be 0)");
    return T{};
  }
};

template <class T>
struct builtin_impl<kind::optional, T> : builtin_tag {
  using E = typename T::value_type;
  static constexpr std::size_t min_size = 1;
  static void write(Writer& w, const T& value) {
    const std::uint8_t engaged = value.has_value() ? 1 : 0;
    w.write_bytes(&engaged, 1);
    if (value) w.write(*value);
  }
  static T read(Reader& r) {
    std::uint8_t engaged;
    r.read_bytes(&engaged, 1, type_name_v<T>);
    if (engaged == 0) return T();
    if (engaged != 1)
      r.fail("invalid " + readable_type_name(type_name_v<T>) + " flag " + std::to_string(engaged) +
             " (must be 0 or 1)");
    return T(std::in_place, r.read<E>());
  }
};

template <class T>
struct builtin_impl<kind::variant, T> : builtin_tag {
  static constexpr std::size_t alternatives = std::variant_size_v<T>;
  static constexpr std::size_t min_size = 4 + []<std::size_t... I>(std::index_sequence<I...>) {
    return std::min({min_size_v<std::variant_alternative_t<I, T>>...});
  }(std::make_index_sequence<alternatives>());

  static void write(Writer& w, const T& value) {
    if (value.valueless_by_exception())
      throw ProcessError("mproc: cannot serialize a valueless " + readable_type_name(type_name_v<T>) +
                         " (an exception interrupted its last assignment)");
    const auto index = static_cast<std::uint32_t>(value.index());
    w.write_bytes(&index, sizeof index);
    std::visit([&w](const auto& alternative) { w.write(alternative); }, value);
  }
  static T read(Reader& r) {
    std::uint32_t index;
    r.read_bytes(&index, sizeof index, type_name_v<T>);
    if (index >= alternatives)
      r.fail(readable_type_name(type_name_v<T>) + " alternative index " + std::to_string(index) + " out of range (" +
             std::to_string(alternatives) + " alternatives)");
    return read_alternative(r, index, std::make_index_sequence<alternatives>());
  }

 private:
  template <std::size_t... I>
  static T read_alternative(Reader& r, std::uint32_t index, std::index_sequence<I...>) {
    using reader_fn = T (*)(Reader&);
    static constexpr reader_fn readers[] = {
        [](Reader& rr) -> T { return T(std::in_place_index<I>, rr.read<std::variant_alternative_t<I, T>>()); }...};
    return readers[index](r);
  }
};

template <class T>
struct builtin_impl<kind::tuple, T> : builtin_tag {
  static constexpr std::size_t size = std::tuple_size_v<T>;
  static constexpr std::size_t min_size = []<std::size_t... I>(std::index_sequence<I...>) {
    return (std::size_t{0} + ... + min_size_v<std::tuple_element_t<I, T>>);
  }(std::make_index_sequence<size>());

  static void write(Writer& w, const T& value) {
    std::apply([&w](const auto&... element) { (w.write(element), ...); }, value);
  }
  static T read(Reader& r) { return read_elements(r, std::make_index_sequence<size>()); }

 private:
  template <std::size_t... I>
  static T read_elements([[maybe_unused]] Reader& r, std::index_sequence<I...>) {
    return T{r.read<std::tuple_element_t<I, T>>()...};  // braced: read in order
  }
};

template <class T>
struct builtin_impl<kind::fixed_array, T> : builtin_tag {
  using E = typename T::value_type;
  static constexpr std::size_t min_size = std::tuple_size_v<T> * min_size_v<E>;
  static void write(Writer& w, const T& value) {
    for (const E& element : value) w.write(element);
  }
  static T read(Reader& r) {  // Reader::read checked min_size
    T value{};
    reader_access::pledge pledge(r, std::tuple_size_v<T>, min_size_v<E>);
    for (E& element : value) {
      pledge.next();
      element = r.read<E>();
    }
    return value;
  }
};

template <class T>
struct builtin_impl<kind::contiguous, T> : builtin_tag {
  using E = typename T::value_type;
  static constexpr std::size_t min_size = 8;
  static void write(Writer& w, const T& value) { write_block<E>(w, value.data(), value.size()); }
  static T read(Reader& r) {
    const auto [p, n] = read_block<E>(r, type_name_v<T>);
    T value;
    if (reinterpret_cast<std::uintptr_t>(p) % alignof(E) == 0) {
      const E* first = reinterpret_cast<const E*>(p);
      value.assign(first, first + n);  // one copy, no zero-fill
    } else {
      value.resize(n);
      if (n != 0) std::memcpy(static_cast<void*>(value.data()), p, n * sizeof(E));
    }
    return value;
  }
};

template <class T>
struct builtin_impl<kind::view, T> : builtin_tag {
  using E = std::remove_cv_t<typename T::value_type>;
  static constexpr std::size_t min_size = 8;
  static void write(Writer& w, const T& value) { write_block<E>(w, value.data(), value.size()); }
  static T read(Reader& r) {
    const auto [p, n] = read_block<E>(r, type_name_v<T>);
    if (n == 0) return T();
    if (reinterpret_cast<std::uintptr_t>(p) % alignof(E) != 0)
      throw ProcessError("mproc: cannot view " + readable_type_name(type_name_v<T>) + " in place: its data is not " +
                         std::to_string(alignof(E)) +
                         "-byte aligned in memory (the frame must start at a 16-byte aligned "
                         "address); load the owning type instead");
    return T(reinterpret_cast<const E*>(p), n);
  }
};

template <class T>
struct builtin_impl<kind::bit_vector, T> : builtin_tag {
  static constexpr std::size_t min_size = 8;
  static void write(Writer& w, const T& value) {
    const std::size_t n = value.size();
    write_size(w, n);
    std::array<std::uint8_t, 256> chunk;
    std::size_t bit = 0;
    while (bit < n) {
      chunk.fill(0);
      const std::size_t bits = std::min(n - bit, chunk.size() * 8);
      for (std::size_t i = 0; i < bits; ++i)
        if (value[bit + i]) chunk[i / 8] = static_cast<std::uint8_t>(chunk[i / 8] | (1u << (i % 8)));
      w.write_bytes(chunk.data(), (bits + 7) / 8);
      bit += bits;
    }
  }
  static T read(Reader& r) {
    const std::uint64_t n = read_size(r, type_name_v<T>);
    const std::uint64_t bytes = n / 8 + (n % 8 != 0 ? 1 : 0);
    if (bytes > r.remaining()) {
      if (bytes > std::numeric_limits<std::size_t>::max()) fail_count(r, type_name_v<T>, n, 0);
      r.require(static_cast<std::size_t>(bytes), type_name_v<T>, "bits");
    }
    const std::byte* p = r.read_span(static_cast<std::size_t>(bytes), type_name_v<T>).data();
    const auto count = static_cast<std::size_t>(n);
    if (count % 8 != 0 && (std::to_integer<unsigned>(p[count / 8]) >> (count % 8)) != 0)
      r.fail("non-zero padding bits after the last element of " + readable_type_name(type_name_v<T>));
    T value;
    value.reserve(count);
    for (std::size_t i = 0; i < count; ++i)
      value.push_back(((std::to_integer<unsigned>(p[i / 8]) >> (i % 8)) & 1u) != 0);
    return value;
  }
};

template <class T>
struct builtin_impl<kind::sequence, T> : builtin_tag {
  using E = typename T::value_type;
  static constexpr std::size_t min_size = 8;
  static void write(Writer& w, const T& value) {
    write_size(w, static_cast<std::size_t>(value.size()));
    for (const E& element : value) w.write(element);
  }
  static T read(Reader& r) {
    const std::size_t n = read_count<E>(r, type_name_v<T>);
    T value;
    if constexpr (requires { value.reserve(n); }) value.reserve(reserve_hint<E>(n));
    reader_access::pledge pledge(r, n, min_size_v<E>);
    for (std::size_t i = 0; i < n; ++i) {
      pledge.next();
      value.push_back(r.read<E>());
    }
    return value;
  }
};

template <class T>
struct builtin_impl<kind::associative, T> : builtin_tag {
  using K = typename T::key_type;
  static constexpr bool is_map = map_like<T>;
  static constexpr std::size_t element_min = [] {
    if constexpr (map_like<T>)
      return min_size_v<K> + min_size_v<typename T::mapped_type>;
    else
      return min_size_v<K>;
  }();
  static constexpr std::size_t min_size = 8;

  static void write(Writer& w, const T& value) {
    write_size(w, static_cast<std::size_t>(value.size()));
    for (const auto& element : value) {
      if constexpr (is_map) {
        w.write(element.first);
        w.write(element.second);
      } else {
        w.write(element);
      }
    }
  }
  static T read(Reader& r) {
    const std::uint64_t n = read_size(r, type_name_v<T>);
    if (n > r.available() / element_min) fail_count(r, type_name_v<T>, n, element_min);
    const auto count = static_cast<std::size_t>(n);
    T value;
    // Buckets: a pointer each, at most 8 times the bytes the elements take.
    if constexpr (requires { value.reserve(count); }) value.reserve(count);
    reader_access::pledge pledge(r, count, element_min);
    for (std::size_t i = 0; i < count; ++i) {
      pledge.next();
      const std::size_t before = value.size();
      if constexpr (is_map) {
        K key = r.read<K>();
        auto mapped = r.read<typename T::mapped_type>();
        value.emplace_hint(value.cend(), std::move(key), std::move(mapped));
      } else {
        value.emplace_hint(value.cend(), r.read<K>());
      }
      if (value.size() == before) r.fail("duplicate key in " + readable_type_name(type_name_v<T>));
    }
    return value;
  }
};

// Members in declaration order (traits.hpp's memberwise_fault_of checked
// them); read back into T by aggregate initialization, in order.
template <class T>
struct builtin_impl<kind::aggregate, T> : builtin_tag {
  static constexpr std::size_t count = aggregate_members<T>();
  using members = member_types_t<T, count>;
  static constexpr std::size_t min_size = []<class... M>(member_list<void, M...>) {
    return (std::size_t{0} + ... + min_size_v<M>);
  }(members{});

  static void write(Writer& w, const T& value) {
    with_members<count>(value, [&w](auto, const auto&... member) { (w.write(member), ...); });
  }
  static T read(Reader& r) {
    return []<class... M>(Reader& rr, member_list<void, M...>) {
      return T{rr.read<std::remove_cv_t<M>>()...};  // braced: read in order
    }(r, members{});
  }
};

template <class T>
struct builtin_serializer : builtin_impl<kind_of<T>(), T> {};

template <class T>
struct builtin_impl<kind::unsupported, T> {
  static constexpr bool mproc_unsupported = true;
};

}  // namespace detail

}  // namespace mproc
