// Typed shared memory (Python: multiprocessing.sharedctypes): Value<T> and
// Array<T>, each with a lock (get_lock(): an RLock of their own by default,
// or a Lock/RLock the caller gives, Python's `lock=` argument), and
// RawValue<T> / RawArray<T> without one (Python's `lock=False`). T must be
// trivially copyable.
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
#include <cstring>
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
// embedded lock, if any, is built by the caller). Throws ProcessError,
// naming `what` (default: the kind's name), if it is too large.
template <class T>
TypedBlock<T> create_typed(ShmKind kind, std::size_t count, const char* what = nullptr) {
  if (count > (kMaxSegmentSize - 2 * kArenaMinBlock) / sizeof(T))
    throw ProcessError(count_text(what != nullptr ? what : shm_kind_name(kind), count) + ": too large (" +
                       std::to_string(count) + " x " + std::to_string(sizeof(T)) + " bytes)");
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
TypedBlock<T> create_from_range(ShmKind kind, R&& r, const char* what = nullptr) {
  if constexpr (std::ranges::sized_range<R> && std::ranges::forward_range<R>) {
    auto tb = create_typed<T>(kind, static_cast<std::size_t>(std::ranges::size(r)), what);
    std::size_t i = 0;
    for (auto&& x : r) ::new (static_cast<void*>(tb.data + i++)) T(static_cast<T>(std::forward<decltype(x)>(x)));
    return tb;
  } else {
    std::vector<T> tmp;
    for (auto&& x : r) tmp.push_back(static_cast<T>(std::forward<decltype(x)>(x)));
    auto tb = create_typed<T>(kind, tmp.size(), what);
    if (!tmp.empty()) std::memcpy(static_cast<void*>(tb.data), tmp.data(), tmp.size() * sizeof(T));
    return tb;
  }
}

template <class R, class Self, class T>
concept ElementRange = std::ranges::input_range<R> && !std::same_as<std::remove_cvref_t<R>, Self> &&
                       std::convertible_to<std::ranges::range_reference_t<R>, T>;

// The lock types a Value or Array may use.
template <class L>
concept ObjectLock = std::same_as<L, Lock> || std::same_as<L, RLock>;

template <ObjectLock L>
inline constexpr ShmKind lock_kind = std::same_as<L, Lock> ? ShmKind::lock : ShmKind::rlock;

// The lock embedded in a Value/Array block: built when `fresh`, else
// checked to be an L (a Value<T, Lock> is not a Value<T, RLock>). Throws
// ProcessError naming `what` and the mismatch.
template <ObjectLock L>
L embedded_lock(std::shared_ptr<ShmBlock> block, bool fresh, const char* what) {
  if (!fresh) {
    ObjectHeader header;
    std::memcpy(&header, block->data() + kEmbeddedLockOffset, sizeof header);
    if (header.magic != ObjectHeader::kMagic || header.kind != static_cast<std::uint16_t>(lock_kind<L>))
      throw ProcessError(std::string("mproc: invalid handle for ") + what + ": its lock is not a" +
                         (std::same_as<L, Lock> ? " Lock" : "n RLock") + " (the sender's type differs)");
  }
  return LockAccess::make<L>(LockCore(std::move(block), kEmbeddedLockOffset, lock_kind<L>, fresh));
}

// Refuses a one-handle from_handle of a Value/Array (`what`) whose data
// block is of the `raw` kind: it uses a given lock, whose handle must come
// too. Throws ProcessError.
inline void refuse_given_lock(const ShmHandle& h, ShmKind raw, const char* what) {
  if (h.kind == static_cast<std::uint16_t>(raw))
    throw ProcessError(std::string("mproc: invalid handle for ") + what +
                       ": it uses a lock of its own choosing; pass that lock's handle too (from_handle(data, lock))");
}

// serializer<T> for a Value or Array: its data handle, then, when the
// object uses a lock of the caller's (its data block is then of the Raw
// kind), that lock's handle. read() throws ProcessError as from_handle.
template <class T>
struct locked_object_serializer {
  static constexpr std::size_t min_size = sizeof(ShmHandle);
  static void write(Writer& w, const T& object) {
    write_shm_handle(w, object.handle());
    if (object.has_given_lock()) write_shm_handle(w, object.get_lock().handle());
  }
  static T read(Reader& r) {
    const ShmHandle data = read_shm_handle(r, type_name_v<T>);
    if (data.kind == static_cast<std::uint16_t>(ShmKind::raw_value) ||
        data.kind == static_cast<std::uint16_t>(ShmKind::raw_array))
      return T::from_handle(data, read_shm_handle(r, type_name_v<T>));
    return T::from_handle(data);
  }
};

}  // namespace detail

// A T in shared memory with a lock (Python: multiprocessing.Value). The
// lock is an RLock of its own by default; `L` = Lock makes it a Lock, and
// the constructor taking a lock uses that one (Python: Value(..., lock=l)),
// e.g. one lock for several values. RawValue is Python's `lock=False`.
// get() and set() take the lock; for read-modify-write, hold get_lock()
// and use get_obj():
//   { std::lock_guard g(v.get_lock()); v.get_obj() += 1; }
template <class T, class L = RLock>
class Value {
  static_assert(detail::SharedCType<T>,
                "mproc::Value<T>: T must be trivially copyable (it lives in shared memory seen by other "
                "processes), not const or volatile, and aligned to at most 4096");
  static_assert(detail::ObjectLock<L>, "mproc::Value<T, L>: L must be mproc::Lock or mproc::RLock");

 public:
  using value_type = T;
  using lock_type = L;

  // Creates a value holding `init`, with a lock of its own. Throws
  // ProcessError (out of memory or descriptors).
  explicit Value(const T& init = T{}) : Value(detail::create_typed<T>(detail::ShmKind::value, 1), true) {
    ::new (static_cast<void*>(data_)) T(init);
  }
  // Creates a value holding `init`, guarded by `lock` (shared with whatever
  // else uses it). Throws ProcessError.
  Value(const T& init, L lock)
      : Value(detail::create_typed<T>(detail::ShmKind::raw_value, 1, "Value"), std::move(lock)) {
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
  // The lock guarding the value (usable with std::lock_guard).
  L& get_lock() const noexcept { return lock_; }
  // The shared value itself; the caller synchronizes.
  T& get_obj() const noexcept { return *data_; }
  // Whether the lock is one the caller gave (not the value's own).
  bool has_given_lock() const noexcept { return given_lock_; }

  // The handle that identifies this value's memory to another process
  // (with a given lock, the lock's handle is needed too; a Pipe, Queue or
  // Pool argument sends both).
  detail::ShmHandle handle() const noexcept {
    return block_->handle(given_lock_ ? detail::ShmKind::raw_value : detail::ShmKind::value);
  }
  // The value a handle from another process describes. Throws ProcessError
  // if the handle is malformed, its creator is gone, its type is not T or
  // its lock not an L, or it uses a given lock (use the two-handle form).
  static Value from_handle(const detail::ShmHandle& h) {
    detail::refuse_given_lock(h, detail::ShmKind::raw_value, "Value");
    return Value(detail::open_typed<T>(h, detail::ShmKind::value), false);
  }
  // The value with a given lock that two handles describe. Throws as above.
  static Value from_handle(const detail::ShmHandle& data, const detail::ShmHandle& lock) {
    return Value(detail::open_typed<T>(data, detail::ShmKind::raw_value), L::from_handle(lock));
  }

 private:
  Value(detail::TypedBlock<T> tb, bool fresh)
      : lock_(detail::embedded_lock<L>(tb.block, fresh, "Value")), block_(std::move(tb.block)), data_(tb.data) {}
  Value(detail::TypedBlock<T> tb, L lock)
      : lock_(std::move(lock)), block_(std::move(tb.block)), data_(tb.data), given_lock_(true) {}

  mutable L lock_;
  std::shared_ptr<detail::ShmBlock> block_;
  T* data_;
  bool given_lock_ = false;
};

template <class T, detail::ObjectLock L>
Value(T, L) -> Value<T, L>;

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
      throw ProcessError(std::string("mproc: ") + name_ + ".at(" + std::to_string(i) + "): index out of range (size " +
                         std::to_string(size_) + ")");
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
  // `name`: the public type's name for messages (default: the kind's).
  ArrayAccess(ShmKind kind, TypedBlock<T> tb, const char* name = nullptr) noexcept
      : block_(std::move(tb.block)),
        data_(tb.data),
        size_(tb.count),
        kind_(kind),
        name_(name != nullptr ? name : shm_kind_name(kind)) {}
  ~ArrayAccess() = default;
  ArrayAccess(const ArrayAccess&) = default;
  ArrayAccess& operator=(const ArrayAccess&) = default;

  std::shared_ptr<ShmBlock> block_;
  T* data_;
  std::size_t size_;
  ShmKind kind_;
  const char* name_;
};

}  // namespace detail

// n Ts in shared memory with a lock (Python: multiprocessing.Array): an
// RLock of its own by default, a Lock when `L` = Lock, or the lock given to
// the constructor (Python: Array(..., lock=l)). RawArray is Python's
// `lock=False`. Element access is unsynchronized: hold get_lock() when
// processes write the same elements.
template <class T, class L = RLock>
class Array : public detail::ArrayAccess<T> {
  static_assert(detail::SharedCType<T>,
                "mproc::Array<T>: T must be trivially copyable (it lives in shared memory seen by other "
                "processes), not const or volatile, and aligned to at most 4096");
  static_assert(detail::ObjectLock<L>, "mproc::Array<T, L>: L must be mproc::Lock or mproc::RLock");

 public:
  using lock_type = L;

  // `n` value-initialized (zero) elements, with a lock of their own.
  // Non-blocking. Throws ProcessError if n < 0 or too large, or when out
  // of memory.
  template <std::integral I>
  explicit Array(I n)
      : Array(detail::create_typed<T>(detail::ShmKind::array, detail::checked_count("Array", n)), true) {
    detail::value_construct(this->data_, this->size_);
  }
  // `n` zero elements guarded by `lock`. Throws as above.
  template <std::integral I>
  Array(I n, L lock)
      : Array(detail::create_typed<T>(detail::ShmKind::raw_array, detail::checked_count("Array", n), "Array"),
              std::move(lock)) {
    detail::value_construct(this->data_, this->size_);
  }
  // A copy of the elements of `r` (e.g. std::views::iota(0, 10), a vector).
  template <class R>
    requires detail::ElementRange<R, Array, T>
  explicit Array(R&& r) : Array(detail::create_from_range<T>(detail::ShmKind::array, std::forward<R>(r)), true) {}
  // A copy of the elements of `r`, guarded by `lock`.
  template <class R>
    requires detail::ElementRange<R, Array, T>
  Array(R&& r, L lock)
      : Array(detail::create_from_range<T>(detail::ShmKind::raw_array, std::forward<R>(r), "Array"), std::move(lock)) {}
  Array(const Array&) = default;
  Array& operator=(const Array&) = default;

  // The lock guarding the array (usable with std::lock_guard).
  L& get_lock() const noexcept { return lock_; }
  // Whether the lock is one the caller gave (not the array's own).
  bool has_given_lock() const noexcept { return given_lock_; }

  // The array a handle from another process describes. Throws ProcessError
  // if the handle is malformed, its creator is gone, its type is not T or
  // its lock not an L, or it uses a given lock (use the two-handle form).
  static Array from_handle(const detail::ShmHandle& h) {
    detail::refuse_given_lock(h, detail::ShmKind::raw_array, "Array");
    return Array(detail::open_typed<T>(h, detail::ShmKind::array), false);
  }
  // The array with a given lock that two handles describe. Throws as above.
  static Array from_handle(const detail::ShmHandle& data, const detail::ShmHandle& lock) {
    return Array(detail::open_typed<T>(data, detail::ShmKind::raw_array), L::from_handle(lock));
  }

  // A read-only view of the same memory and lock (Array<const T, L>), e.g.
  // to pass to a task that must not write. Non-blocking.
  Array<const T, L> as_const() const noexcept { return Array<const T, L>(*this); }

 private:
  friend class Array<const T, L>;

  Array(detail::TypedBlock<T> tb, bool fresh)
      : detail::ArrayAccess<T>(detail::ShmKind::array, tb),
        lock_(detail::embedded_lock<L>(this->block_, fresh, "Array")) {}
  Array(detail::TypedBlock<T> tb, L lock)
      : detail::ArrayAccess<T>(detail::ShmKind::raw_array, std::move(tb), "Array"),
        lock_(std::move(lock)),
        given_lock_(true) {}

  mutable L lock_;
  bool given_lock_ = false;
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
template <class T, class L>
class Array<const T, L> : public detail::ArrayAccess<const T> {
 public:
  using lock_type = L;

  Array(const Array<T, L>& a) noexcept  // NOLINT: converts implicitly, as span<T> to span<const T>
      : detail::ArrayAccess<const T>(a.kind_, detail::TypedBlock<const T>{a.block_, a.data_, a.size_}, "Array"),
        lock_(a.lock_),
        given_lock_(a.given_lock_) {}
  Array(const Array&) = default;
  Array& operator=(const Array&) = default;

  // The lock of the array (to read consistently while others write).
  L& get_lock() const noexcept { return lock_; }
  bool has_given_lock() const noexcept { return given_lock_; }

  // The read-only view of the array the handle(s) describe. Throws as
  // Array<T, L>::from_handle.
  static Array from_handle(const detail::ShmHandle& h) { return Array(Array<T, L>::from_handle(h)); }
  static Array from_handle(const detail::ShmHandle& data, const detail::ShmHandle& lock) {
    return Array(Array<T, L>::from_handle(data, lock));
  }

 private:
  mutable L lock_;
  bool given_lock_ = false;
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
template <class T, class L>
struct serializer<Value<T, L>> : detail::locked_object_serializer<Value<T, L>> {};
template <class T>
struct serializer<RawValue<T>> : detail::handle_serializer<RawValue<T>> {};
template <class T, class L>
struct serializer<Array<T, L>> : detail::locked_object_serializer<Array<T, L>> {};
template <class T>
struct serializer<RawArray<T>> : detail::handle_serializer<RawArray<T>> {};

}  // namespace mproc
