// Typed shared memory (Python: multiprocessing.sharedctypes): Value<T> and
// Array<T>, each with an RLock (get_lock()), and RawValue<T> / RawArray<T>
// without one. T must be trivially copyable.
//
// Like the objects of synchronize.hpp, these are handles: copies (and
// moves) refer to the same shared memory, and const-ness is shallow, as
// with std::span (a const Array still reads and writes the shared
// elements). Objects created before fork() are inherited; later ones reach
// another process through a Pipe, a Queue or a Pool argument as a handle,
// never as a copy of the data. The creating process owns the memory and
// must outlive the other processes' use of it (as in Python).
// SPDX-License-Identifier: MIT
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <mutex>
#include <new>
#include <ranges>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <mproc/detail/shm/handle_serialize.hpp>
#include <mproc/detail/shm/object.hpp>
#include <mproc/errors.hpp>
#include <mproc/lock.hpp>

namespace mproc {

namespace detail {

// Where the data of a Value/Array starts: after its header, and after its
// embedded RLock when it has one (the lock word and the first elements
// share a cache line).
inline constexpr std::size_t kLockedDataBase = kEmbeddedLockOffset + LockCore::kSize;

constexpr bool has_lock(ShmKind kind) noexcept { return kind == ShmKind::value || kind == ShmKind::array; }
constexpr bool is_array(ShmKind kind) noexcept { return kind == ShmKind::array || kind == ShmKind::raw_array; }

// Alignment of the data: T's, and a cache line for arrays (vector loads).
template <class T>
constexpr std::size_t data_align(ShmKind kind) noexcept {
  return is_array(kind) && alignof(T) < kArenaMinBlock ? kArenaMinBlock : alignof(T);
}
template <class T>
constexpr std::size_t data_offset(ShmKind kind) noexcept {
  return round_up(has_lock(kind) ? kLockedDataBase : kObjectStateOffset, data_align<T>(kind));
}

template <class T>
concept SharedCType =
    std::is_trivially_copyable_v<T> && !std::is_const_v<T> && !std::is_volatile_v<T> && alignof(T) <= 4096;

// The shared block of a Value or Array and where its elements lie.
template <class T>
struct TypedBlock {
  std::shared_ptr<ShmBlock> block;
  T* data = nullptr;
  std::size_t count = 0;
};

inline std::string count_text(const char* what, std::size_t n) {
  return std::string("mproc: ") + what + "(" + std::to_string(n) + ")";
}

// Allocates zero-filled room for `count` Ts of a `kind` object (the
// embedded lock, if any, is built by the caller). Throws ProcessError if it
// is too large.
template <class T>
TypedBlock<T> create_typed(ShmKind kind, std::size_t count) {
  if (count > (kMaxSegmentSize - 2 * kArenaMinBlock) / sizeof(T))
    throw ProcessError(count_text(shm_kind_name(kind), count) + ": too large (" + std::to_string(count) + " x " +
                       std::to_string(sizeof(T)) + " bytes)");
  auto block = allocate_object(kind, has_lock(kind) ? kLockedDataBase : kObjectStateOffset, count * sizeof(T),
                               data_align<T>(kind), element_fingerprint<T>(), static_cast<std::uint32_t>(sizeof(T)),
                               static_cast<std::uint32_t>(alignof(T)), count);
  T* data = std::launder(reinterpret_cast<T*>(block->data() + data_offset<T>(kind)));
  return {std::move(block), data, count};
}

// Opens a received Value/Array of T and checks its element type and size
// against the block. Throws ProcessError naming the object and the fault.
template <class T>
TypedBlock<T> open_typed(const ShmHandle& h, ShmKind kind) {
  const std::size_t offset = data_offset<T>(kind);
  auto [block, header] = open_object(h, kind, offset);
  const std::string what = shm_kind_name(kind);
  if (header.type_hash != element_fingerprint<T>() || header.elem_size != sizeof(T) || header.elem_align != alignof(T))
    throw ProcessError("mproc: invalid handle for " + what +
                       ": its element type differs from this one (the sender's is " + std::to_string(header.elem_size) +
                       " bytes, aligned to " + std::to_string(header.elem_align) + "; this one " +
                       std::to_string(sizeof(T)) + ", aligned to " + std::to_string(alignof(T)) + ")");
  if (!is_array(kind) && header.count != 1)
    throw ProcessError("mproc: invalid handle for " + what + ": it holds " + std::to_string(header.count) +
                       " elements, not 1");
  if (header.count > (block->length() - offset) / sizeof(T))
    throw ProcessError("mproc: invalid handle for " + what + ": " + std::to_string(header.count) +
                       " elements do not fit in its " + std::to_string(block->length()) + "-byte block");
  T* data = std::launder(reinterpret_cast<T*>(block->data() + offset));
  return {std::move(block), data, static_cast<std::size_t>(header.count)};
}

// Checks a signed or unsigned element count. Throws ProcessError for n < 0.
template <std::integral I>
std::size_t checked_count(const char* what, I n) {
  if constexpr (std::is_signed_v<I>) {
    if (n < 0) throw ProcessError(std::string("mproc: ") + what + "(" + std::to_string(n) + "): the size must be >= 0");
  }
  if constexpr (sizeof(I) > sizeof(std::size_t)) {
    if (n > static_cast<I>(SIZE_MAX)) throw ProcessError(std::string("mproc: ") + what + ": size too large");
  }
  return static_cast<std::size_t>(n);
}

// Value-initializes `n` Ts at `p` (already zero bytes: nothing to do when
// that is what T{} is).
template <class T>
void value_construct(T* p, std::size_t n) {
  if constexpr (!std::is_trivially_default_constructible_v<T>) std::uninitialized_value_construct_n(p, n);
}

// Copies a range into a new block of `kind`.
template <class T, class R>
TypedBlock<T> create_from_range(ShmKind kind, R&& r) {
  if constexpr (std::ranges::sized_range<R> && std::ranges::forward_range<R>) {
    auto tb = create_typed<T>(kind, static_cast<std::size_t>(std::ranges::size(r)));
    std::size_t i = 0;
    for (auto&& x : r) ::new (static_cast<void*>(tb.data + i++)) T(static_cast<T>(std::forward<decltype(x)>(x)));
    return tb;
  } else {
    std::vector<T> tmp;
    for (auto&& x : r) tmp.push_back(static_cast<T>(std::forward<decltype(x)>(x)));
    auto tb = create_typed<T>(kind, tmp.size());
    if (!tmp.empty()) std::memcpy(static_cast<void*>(tb.data), tmp.data(), tmp.size() * sizeof(T));
    return tb;
  }
}

template <class R, class Self, class T>
concept ElementRange = std::ranges::input_range<R> && !std::same_as<std::remove_cvref_t<R>, Self> &&
                       std::convertible_to<std::ranges::range_reference_t<R>, T>;

}  // namespace detail

// A T in shared memory with an RLock (Python: multiprocessing.Value).
// get() and set() take the lock; for read-modify-write, hold get_lock()
// and use get_obj():
//   { std::lock_guard g(v.get_lock()); v.get_obj() += 1; }
template <class T>
class Value {
  static_assert(detail::SharedCType<T>,
                "mproc::Value<T>: T must be trivially copyable (it lives in shared memory seen by other "
                "processes), not const or volatile, and aligned to at most 4096");

 public:
  using value_type = T;

  // Creates a value holding `init`. Throws ProcessError (out of memory or
  // descriptors).
  explicit Value(const T& init = T{}) : Value(detail::create_typed<T>(detail::ShmKind::value, 1), true) {
    ::new (static_cast<void*>(data_)) T(init);
  }
  Value(const Value&) = default;
  Value& operator=(const Value&) = default;

  // A copy of the value, read under the lock. Blocks on the lock;
  // thread- and process-safe.
  T get() const {
    std::lock_guard guard(lock_);
    return *data_;
  }
  // Stores `x` under the lock. Blocks on the lock; thread- and process-safe.
  void set(const T& x) const {
    std::lock_guard guard(lock_);
    *data_ = x;
  }
  // The lock guarding the value (recursive; usable with std::lock_guard).
  RLock& get_lock() const noexcept { return lock_; }
  // The shared value itself; the caller synchronizes.
  T& get_obj() const noexcept { return *data_; }

  // The handle that identifies this value to another process.
  detail::ShmHandle handle() const noexcept { return block_->handle(detail::ShmKind::value); }
  // The value a handle from another process describes. Throws ProcessError
  // if the handle is malformed, its creator is gone, or its type is not T.
  static Value from_handle(const detail::ShmHandle& h) {
    return Value(detail::open_typed<T>(h, detail::ShmKind::value), false);
  }

 private:
  Value(detail::TypedBlock<T> tb, bool fresh)
      : lock_(detail::LockCore(tb.block, detail::kEmbeddedLockOffset, detail::ShmKind::rlock, fresh)),
        block_(std::move(tb.block)),
        data_(tb.data) {}

  mutable RLock lock_;
  std::shared_ptr<detail::ShmBlock> block_;
  T* data_;
};

// A T in shared memory without a lock (Python: sharedctypes.RawValue).
template <class T>
class RawValue {
  static_assert(detail::SharedCType<T>,
                "mproc::RawValue<T>: T must be trivially copyable (it lives in shared memory seen by other "
                "processes), not const or volatile, and aligned to at most 4096");

 public:
  using value_type = T;

  // Creates a value holding `init`. Throws ProcessError.
  explicit RawValue(const T& init = T{}) : RawValue(detail::create_typed<T>(detail::ShmKind::raw_value, 1)) {
    ::new (static_cast<void*>(data_)) T(init);
  }
  RawValue(const RawValue&) = default;
  RawValue& operator=(const RawValue&) = default;

  // Plain (unsynchronized) read and write. Not atomic.
  T get() const noexcept { return *data_; }
  void set(const T& x) const noexcept { *data_ = x; }
  T& get_obj() const noexcept { return *data_; }

  detail::ShmHandle handle() const noexcept { return block_->handle(detail::ShmKind::raw_value); }
  static RawValue from_handle(const detail::ShmHandle& h) {
    return RawValue(detail::open_typed<T>(h, detail::ShmKind::raw_value));
  }

 private:
  explicit RawValue(detail::TypedBlock<T> tb) : block_(std::move(tb.block)), data_(tb.data) {}

  std::shared_ptr<detail::ShmBlock> block_;
  T* data_;
};

namespace detail {

// The element access Array and RawArray share: std::span-like, with
// shallow const. Unsynchronized: the caller coordinates writers.
template <class T>
class ArrayAccess {
 public:
  using value_type = T;
  using size_type = std::size_t;
  using iterator = T*;
  using reference = T&;

  // Number of elements.
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  // Element i, unchecked.
  T& operator[](std::size_t i) const noexcept { return data_[i]; }
  // Element i; throws ProcessError if i >= size().
  T& at(std::size_t i) const {
    if (i >= size_)
      throw ProcessError(std::string("mproc: ") + shm_kind_name(kind_) + ".at(" + std::to_string(i) +
                         "): index out of range (size " + std::to_string(size_) + ")");
    return data_[i];
  }
  T* begin() const noexcept { return data_; }
  T* end() const noexcept { return data_ + size_; }
  T* data() const noexcept { return data_; }
  // The elements as a span (Python: get_obj()). An lvalue array also
  // converts to std::span<T> directly, being a contiguous sized range.
  std::span<T> get_obj() const noexcept { return {data_, size_}; }

  // The handle that identifies this array to another process (from_handle).
  ShmHandle handle() const noexcept { return block_->handle(kind_); }

 protected:
  ArrayAccess(ShmKind kind, TypedBlock<T> tb) noexcept
      : block_(std::move(tb.block)), data_(tb.data), size_(tb.count), kind_(kind) {}
  ~ArrayAccess() = default;
  ArrayAccess(const ArrayAccess&) = default;
  ArrayAccess& operator=(const ArrayAccess&) = default;

  std::shared_ptr<ShmBlock> block_;
  T* data_;
  std::size_t size_;
  ShmKind kind_;
};

}  // namespace detail

// n Ts in shared memory with an RLock (Python: multiprocessing.Array).
// Element access is unsynchronized: hold get_lock() when processes write
// the same elements.
template <class T>
class Array : public detail::ArrayAccess<T> {
  static_assert(detail::SharedCType<T>,
                "mproc::Array<T>: T must be trivially copyable (it lives in shared memory seen by other "
                "processes), not const or volatile, and aligned to at most 4096");

 public:
  // `n` value-initialized (zero) elements. Non-blocking. Throws
  // ProcessError if n < 0 or too large, or when out of memory.
  template <std::integral I>
  explicit Array(I n)
      : Array(detail::create_typed<T>(detail::ShmKind::array, detail::checked_count("Array", n)), true) {
    detail::value_construct(this->data_, this->size_);
  }
  // A copy of the elements of `r` (e.g. std::views::iota(0, 10), a vector).
  template <class R>
    requires detail::ElementRange<R, Array, T>
  explicit Array(R&& r) : Array(detail::create_from_range<T>(detail::ShmKind::array, std::forward<R>(r)), true) {}
  Array(const Array&) = default;
  Array& operator=(const Array&) = default;

  // The lock guarding the array (recursive; usable with std::lock_guard).
  RLock& get_lock() const noexcept { return lock_; }

  // The array a handle from another process describes. Throws ProcessError
  // if the handle is malformed, its creator is gone, or its type is not T.
  static Array from_handle(const detail::ShmHandle& h) {
    return Array(detail::open_typed<T>(h, detail::ShmKind::array), false);
  }

  // A read-only view of the same memory and lock (Array<const T>), e.g. to
  // pass to a task that must not write. Non-blocking.
  Array<const T> as_const() const noexcept { return Array<const T>(*this); }

 private:
  friend class Array<const T>;

  Array(detail::TypedBlock<T> tb, bool fresh)
      : detail::ArrayAccess<T>(detail::ShmKind::array, tb),
        lock_(detail::LockCore(this->block_, detail::kEmbeddedLockOffset, detail::ShmKind::rlock, fresh)) {}

  mutable RLock lock_;
};

// n Ts in shared memory without a lock (Python: sharedctypes.RawArray).
template <class T>
class RawArray : public detail::ArrayAccess<T> {
  static_assert(detail::SharedCType<T>,
                "mproc::RawArray<T>: T must be trivially copyable (it lives in shared memory seen by other "
                "processes), not const or volatile, and aligned to at most 4096");

 public:
  // Same constructors as Array.
  template <std::integral I>
  explicit RawArray(I n)
      : RawArray(detail::create_typed<T>(detail::ShmKind::raw_array, detail::checked_count("RawArray", n))) {
    detail::value_construct(this->data_, this->size_);
  }
  template <class R>
    requires detail::ElementRange<R, RawArray, T>
  explicit RawArray(R&& r) : RawArray(detail::create_from_range<T>(detail::ShmKind::raw_array, std::forward<R>(r))) {}
  RawArray(const RawArray&) = default;
  RawArray& operator=(const RawArray&) = default;

  static RawArray from_handle(const detail::ShmHandle& h) {
    return RawArray(detail::open_typed<T>(h, detail::ShmKind::raw_array));
  }

  // A read-only view of the same memory (RawArray<const T>). Non-blocking.
  RawArray<const T> as_const() const noexcept { return RawArray<const T>(*this); }

 private:
  friend class RawArray<const T>;

  explicit RawArray(detail::TypedBlock<T> tb) : detail::ArrayAccess<T>(detail::ShmKind::raw_array, std::move(tb)) {}
};

// Array<const T> / RawArray<const T>: a read-only view of an Array<T> /
// RawArray<T> — the same shared memory (and lock), element access by const
// reference only, so a task given one cannot write. Converts implicitly from
// the writable array (as std::span<const T> from std::span<T>); crosses
// processes by handle as the array does, and a receiving process gets a
// read-only view too. (Read-only by type: the memory itself stays writable
// to whoever holds the writable array.)
template <class T>
class Array<const T> : public detail::ArrayAccess<const T> {
 public:
  Array(const Array<T>& a) noexcept  // NOLINT: converts implicitly, as span<T> to span<const T>
      : detail::ArrayAccess<const T>(detail::ShmKind::array, detail::TypedBlock<const T>{a.block_, a.data_, a.size_}),
        lock_(a.lock_) {}
  Array(const Array&) = default;
  Array& operator=(const Array&) = default;

  // The lock of the array (to read consistently while others write).
  RLock& get_lock() const noexcept { return lock_; }

  // The read-only view of the array a handle describes. Throws as
  // Array<T>::from_handle.
  static Array from_handle(const detail::ShmHandle& h) { return Array(Array<T>::from_handle(h)); }

 private:
  mutable RLock lock_;
};

template <class T>
class RawArray<const T> : public detail::ArrayAccess<const T> {
 public:
  RawArray(const RawArray<T>& a) noexcept  // NOLINT: converts implicitly
      : detail::ArrayAccess<const T>(detail::ShmKind::raw_array,
                                     detail::TypedBlock<const T>{a.block_, a.data_, a.size_}) {}
  RawArray(const RawArray&) = default;
  RawArray& operator=(const RawArray&) = default;

  static RawArray from_handle(const detail::ShmHandle& h) { return RawArray(RawArray<T>::from_handle(h)); }
};

// Value, Array, RawValue and RawArray cross processes (Pipe, Queue, Pool
// arguments) by handle: the receiver sees the same shared memory.
template <class T>
struct serializer<Value<T>> : detail::handle_serializer<Value<T>> {};
template <class T>
struct serializer<RawValue<T>> : detail::handle_serializer<RawValue<T>> {};
template <class T>
struct serializer<Array<T>> : detail::handle_serializer<Array<T>> {};
template <class T>
struct serializer<RawArray<T>> : detail::handle_serializer<RawArray<T>> {};

}  // namespace mproc
