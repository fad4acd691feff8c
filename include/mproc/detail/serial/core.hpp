// Serialization machinery, layer 4: the byte level. Writer (four sinks:
// vector, caller span, count only, gather for writev) and Reader (bounds-
// checked reads of untrusted bytes, nesting depth, the bytes pledged to
// elements still to come), and Writer::write / Reader::read, which every
// serializer calls. Writer and Reader are public (mproc::Writer,
// mproc::Reader: the arguments of a user's serializer<T>).
// Part of <mproc/serialize.hpp>, which includes it after its declarations
// (serializer, serializable, Writer/Reader); not a header of its own.
// SPDX-License-Identifier: MIT
#pragma once

#ifndef MPROC_DETAIL_SERIALIZE_DECLARED
#error "mproc/detail/serial/*.hpp are parts of <mproc/serialize.hpp>: include that instead"
#endif

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <mproc/detail/util/type_name.hpp>
#include <mproc/errors.hpp>

namespace mproc {

namespace detail {

struct writer_access;
struct reader_access;

// Thrown by a span-backed Writer that runs out of room.
class BufferFull : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

}  // namespace detail

// ------------------------------------------------------------------- Writer

// Appends encoded bytes to a sink. Four sinks, one code path for serializers:
//   Writer w(vec);                      appends to a std::vector<std::byte>,
//                                       reusing its capacity
//   Writer w(span);                     fills caller memory (e.g. shared memory);
//                                       throws ProcessError when it is full
//   Writer w(Writer::count_only);       counts bytes only (encoded_size)
//   Writer w(Writer::gather, scratch);  copies small parts into `scratch` and
//                                       references contiguous blocks of at least
//                                       `threshold` bytes in place; the frame is
//                                       then pieces() (for writev)
// A vector-backed writer keeps spare bytes at the end of the vector while it
// writes; finish() (or the destructor) trims them. Alignment (align()) is
// relative to where the writer started, or to the frame start in write_frame.
// Not thread-safe; a writer is used by one thread at a time.
class Writer {
 public:
  struct count_only_t {
    explicit count_only_t() = default;
  };
  struct gather_t {
    explicit gather_t() = default;
  };
  static constexpr count_only_t count_only{};
  static constexpr gather_t gather{};

  // Appends to `out` after its current contents. Never throws.
  explicit Writer(std::vector<std::byte>& out) noexcept : mode_(mode::vector), vec_(&out), vec_start_(out.size()) {
    cur_ = end_ = win_ = out.data() + out.size();
  }
  // Writes into `out` from its start; a write beyond its end throws ProcessError.
  explicit Writer(std::span<std::byte> out) noexcept
      : cur_(out.data()), end_(out.data() + out.size()), win_(out.data()), mode_(mode::span) {}
  // Counts the bytes that would be written.
  explicit Writer(count_only_t) noexcept : mode_(mode::count) {}
  // Appends small parts to `scratch`; contiguous blocks of at least `threshold`
  // bytes written with write_borrowed() are referenced, not copied.
  Writer(gather_t, std::vector<std::byte>& scratch, std::size_t threshold = default_gather_threshold) noexcept
      : mode_(mode::gather),
        vec_(&scratch),
        vec_start_(scratch.size()),
        threshold_(std::max<std::size_t>(threshold, 1)),
        borrow_min_(threshold_) {
    cur_ = end_ = win_ = scratch.data() + scratch.size();
  }

  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;
  ~Writer() { finish(); }

  // Appends a copy of n bytes. Throws ProcessError when a span sink is full,
  // std::bad_alloc when a vector cannot grow.
  void write_bytes(const void* data, std::size_t n) {
    if (n <= static_cast<std::size_t>(end_ - cur_)) [[likely]] {
      if (n != 0) std::memcpy(cur_, data, n);
      cur_ += n;
    } else {
      write_slow(static_cast<const std::byte*>(data), n, false);
    }
  }
  void write_bytes(std::span<const std::byte> bytes) { write_bytes(bytes.data(), bytes.size()); }

  // Like write_bytes, but a gather writer references a block of at least its
  // threshold in place instead of copying it: the bytes must then stay alive
  // and unchanged until pieces() have been consumed. Other sinks copy.
  void write_borrowed(std::span<const std::byte> bytes) {
    const std::size_t n = bytes.size();
    if (n < borrow_min_ && n <= static_cast<std::size_t>(end_ - cur_)) [[likely]] {
      if (n != 0) std::memcpy(cur_, bytes.data(), n);
      cur_ += n;
    } else {
      write_slow(bytes.data(), n, true);
    }
  }

  // Writes `value` with serializer<T>. A value that cannot be serialized is a
  // compile error. Throws what the sink or the serializer throws.
  template <class T>
  void write(const T& value);
  // A temporary is always copied, never referenced by a gather writer.
  template <class T>
  void write(const T&& value);

  // Writes zero bytes until size() (relative to the writer's or frame's start)
  // is a multiple of `alignment`, a power of two.
  void align(std::size_t alignment) {
    const std::size_t pad = (alignment - ((size() - origin_) & (alignment - 1))) & (alignment - 1);
    if (pad != 0) write_zeros(pad);
  }

  // Makes room for n more bytes in a vector sink (capacity only). No-op for
  // other sinks.
  void reserve(std::size_t n) {
    if (vec_ != nullptr) {
      const std::size_t used = static_cast<std::size_t>(cur_ - vec_->data());
      if (vec_->capacity() - used < n) {
        vec_->resize(used);
        vec_->reserve(used + n);
        reset_window(used);
      }
    }
  }

  // Bytes written so far, including blocks a gather writer referenced.
  std::size_t size() const noexcept { return flushed_ + static_cast<std::size_t>(cur_ - win_); }

  // Trims a vector sink to the bytes written (drops its spare bytes). Called by
  // the destructor; writing may continue afterwards. Never throws.
  void finish() noexcept {
    if (vec_ != nullptr) {
      const std::size_t used = static_cast<std::size_t>(cur_ - vec_->data());
      if (vec_->size() != used) vec_->resize(used);  // shrinking: no allocation
      end_ = cur_;
    }
  }

  // The bytes written, as consecutive pieces to send in order (writev): a
  // gather writer alternates scratch parts and referenced blocks; the vector
  // and span sinks have one piece; count_only has none. Valid until the next
  // write or the end of the sink's (and referenced values') lifetime.
  template <class F>
  void for_each_piece(F&& f) const {
    if (mode_ == mode::count) return;
    const std::byte* base = mode_ == mode::span ? win_ : vec_->data();
    std::size_t prev = mode_ == mode::span ? 0 : vec_start_;
    for (const borrowed& ref : refs_) {
      if (ref.offset > prev) f(std::span<const std::byte>(base + prev, ref.offset - prev));
      f(std::span<const std::byte>(ref.data, ref.size));
      prev = ref.offset;
    }
    const std::size_t used = static_cast<std::size_t>(cur_ - base);
    if (used > prev) f(std::span<const std::byte>(base + prev, used - prev));
  }
  std::size_t piece_count() const noexcept {
    std::size_t n = 0;
    for_each_piece([&n](std::span<const std::byte>) noexcept { ++n; });
    return n;
  }
  std::vector<std::span<const std::byte>> pieces() const {
    std::vector<std::span<const std::byte>> out;
    out.reserve(2 * refs_.size() + 1);
    for_each_piece([&out](std::span<const std::byte> p) { out.push_back(p); });
    return out;
  }

 private:
  friend struct detail::writer_access;
  enum class mode : unsigned char { vector, span, count, gather };
  struct borrowed {
    std::size_t position;  // logical position of the block
    std::size_t offset;    // scratch bytes in front of it
    const std::byte* data;
    std::size_t size;
  };

  void write_zeros(std::size_t n) {
    static constexpr std::byte zeros[64] = {};
    for (; n > sizeof zeros; n -= sizeof zeros) write_bytes(zeros, sizeof zeros);
    write_bytes(zeros, n);
  }

  // Points the window at vec_[used, size()) with the same logical size.
  void reset_window(std::size_t used) noexcept {
    const std::size_t logical = size();
    win_ = cur_ = vec_->data() + used;
    end_ = vec_->data() + vec_->size();
    flushed_ = logical;
  }

  void write_slow(const std::byte* p, std::size_t n, bool borrowable) {
    switch (mode_) {
      case mode::count:
        flushed_ += n;
        return;
      case mode::span:
        throw detail::BufferFull("mproc: output buffer too small: " + std::to_string(n) + " more bytes at offset " +
                                 std::to_string(size()) + " of a " +
                                 std::to_string(static_cast<std::size_t>(end_ - win_)) + "-byte buffer");
      case mode::gather:
        if (borrowable && n >= borrow_min_) {
          refs_.push_back({size(), static_cast<std::size_t>(cur_ - vec_->data()), p, n});
          flushed_ += n;
          return;
        }
        break;
      case mode::vector:
        break;
    }
    append_to_vector(p, n);
  }

  void append_to_vector(const std::byte* p, std::size_t n) {
    std::vector<std::byte>& v = *vec_;
    const std::size_t used = static_cast<std::size_t>(cur_ - v.data());
    if (n <= static_cast<std::size_t>(end_ - cur_)) {
      std::memcpy(cur_, p, n);
      cur_ += n;
      return;
    }
    constexpr std::size_t direct_min = 1024;  // large: one copy, no zero-fill
    constexpr std::size_t slack = 4096;       // room after a large block
    if (n >= direct_min) {
      v.resize(used);
      if (v.capacity() - used < n) v.reserve(std::max(used + n + slack, 2 * v.capacity()));
      v.insert(v.end(), p, p + n);
      const std::size_t logical = size() + n;
      win_ = cur_ = end_ = v.data() + v.size();
      flushed_ = logical;
      return;
    }
    // Small: grow the vector's size ahead (zero-filled spare bytes, trimmed by
    // finish()), geometrically but by at most 64 KiB, within capacity if possible.
    const std::size_t written = used - vec_start_;
    std::size_t want = std::max(n, std::clamp<std::size_t>(written, 64, 64 * 1024));
    const std::size_t spare = v.capacity() - used;
    if (spare >= n) want = std::min(want, spare);
    v.resize(used + want);
    reset_window(used);
    std::memcpy(cur_, p, n);
    cur_ += n;
  }

  // Overwrites n bytes at logical position pos (written before, not inside a
  // referenced block).
  void overwrite(std::size_t pos, const void* data, std::size_t n) noexcept {
    switch (mode_) {
      case mode::count:
        return;
      case mode::span:
        std::memcpy(win_ + pos, data, n);
        return;
      case mode::vector:
      case mode::gather: {
        std::size_t offset = vec_start_ + pos;
        for (const borrowed& ref : refs_)
          if (ref.position <= pos) offset -= ref.size;
        std::memcpy(vec_->data() + offset, data, n);
        return;
      }
    }
  }

  std::byte* cur_ = nullptr;  // next byte to write
  std::byte* end_ = nullptr;  // end of the writable window
  std::byte* win_ = nullptr;  // start of the window
  std::size_t flushed_ = 0;   // logical size at win_
  std::size_t origin_ = 0;    // alignment is relative to this logical position
  mode mode_;
  std::vector<std::byte>* vec_ = nullptr;  // vector and gather sinks
  std::size_t vec_start_ = 0;              // vec_->size() when the writer started
  std::size_t threshold_ = std::numeric_limits<std::size_t>::max();
  std::size_t borrow_min_ = std::numeric_limits<std::size_t>::max();  // threshold, or max when borrowing is off
  std::vector<borrowed> refs_;
};

// ------------------------------------------------------------------- Reader

// Bounds-checked reading of untrusted bytes. Every read checks that the bytes
// are there and throws ProcessError naming what was being decoded otherwise
// ("mproc: truncated frame: need 8000 bytes for std::vector<double> elements,
// 12 left"). Views returned by read_span() and by view types point into the
// reader's bytes. Not thread-safe.
class Reader {
 public:
  // Nesting limit of user-type reads (recursive types), against stack exhaustion.
  static constexpr unsigned default_max_depth = 256;

  explicit Reader(std::span<const std::byte> data) noexcept
      : begin_(data.data()), cur_(data.data()), end_(data.data() + data.size()) {}

  // Copies the next n bytes to `out`. Throws ProcessError naming `what` when
  // fewer than n remain.
  void read_bytes(void* out, std::size_t n, std::string_view what = "bytes") {
    require(n, what);
    if (n != 0) std::memcpy(out, cur_, n);
    cur_ += n;
  }
  // The next n bytes, in place (no copy). Throws like read_bytes.
  std::span<const std::byte> read_span(std::size_t n, std::string_view what = "bytes") {
    require(n, what);
    const std::span<const std::byte> s(cur_, n);
    cur_ += n;
    return s;
  }
  // Reads a T with serializer<T>; checks first that the least bytes any T
  // encodes to are there, so nothing is built for a frame too short to hold
  // it. A view type (std::string_view, std::span<const U>, or holding one)
  // points into the reader's bytes. Throws ProcessError on bad data.
  template <class T>
  T read();

  // Throws ProcessError("mproc: truncated frame: need n bytes for <what> <part>,
  // m left") unless n bytes remain.
  void require(std::size_t n, std::string_view what, std::string_view part = {}) const {
    if (n > remaining()) [[unlikely]]
      fail_truncated(n, what, part);
  }
  // Skips the zero padding up to a multiple of `alignment` (a power of two)
  // from the start of the bytes; non-zero padding is an error.
  void align(std::size_t alignment, std::string_view what = "data") {
    const std::size_t pad = (alignment - (position() & (alignment - 1))) & (alignment - 1);
    if (pad == 0) return;
    require(pad, what, "alignment padding");
    for (std::size_t i = 0; i < pad; ++i)
      if (cur_[i] != std::byte{0}) fail("non-zero alignment padding before " + detail::readable_type_name(what));
    cur_ += pad;
  }

  std::size_t remaining() const noexcept { return static_cast<std::size_t>(end_ - cur_); }
  // The bytes that remain for the value being read: remaining() minus those
  // that the elements still to come of the containers being read need at
  // least. Element counts are checked against it.
  std::size_t available() const noexcept { return remaining() - std::min(pledged_, remaining()); }
  std::size_t position() const noexcept { return static_cast<std::size_t>(cur_ - begin_); }
  // The current position in memory.
  const std::byte* current() const noexcept { return cur_; }

  unsigned max_depth() const noexcept { return max_depth_; }
  void set_max_depth(unsigned depth) noexcept { max_depth_ = depth; }

  // Throws ProcessError("mproc: corrupted frame: <problem>").
  [[noreturn]] void fail(std::string_view problem) const {
    throw ProcessError("mproc: corrupted frame: " + std::string(problem));
  }

 private:
  friend struct detail::reader_access;

  [[noreturn]] void fail_truncated(std::size_t n, std::string_view what, std::string_view part) const {
    std::string msg =
        "mproc: truncated frame: need " + std::to_string(n) + " bytes for " + detail::readable_type_name(what);
    if (!part.empty()) msg.append(" ").append(part);
    msg += ", " + std::to_string(remaining()) + " left";
    throw ProcessError(msg);
  }

  const std::byte* begin_;
  const std::byte* cur_;
  const std::byte* end_;
  unsigned depth_ = 0;
  unsigned max_depth_ = default_max_depth;
  std::size_t pledged_ = 0;  // bytes at the end promised to elements not read yet
};

namespace detail {

struct writer_access {
  // Disables in-place references for values a user serializer writes (they may
  // be temporaries), for the scope of the object.
  class no_borrow {
   public:
    explicit no_borrow(Writer& w) noexcept : w_(w), saved_(w.borrow_min_) {
      w.borrow_min_ = std::numeric_limits<std::size_t>::max();
    }
    no_borrow(const no_borrow&) = delete;
    no_borrow& operator=(const no_borrow&) = delete;
    ~no_borrow() { w_.borrow_min_ = saved_; }

   private:
    Writer& w_;
    std::size_t saved_;
  };
  static std::size_t origin(const Writer& w) noexcept { return w.origin_; }
  static void set_origin(Writer& w, std::size_t origin) noexcept { w.origin_ = origin; }
  static void overwrite(Writer& w, std::size_t pos, const void* data, std::size_t n) noexcept {
    w.overwrite(pos, data, n);
  }
};

struct reader_access {
  class depth_guard {
   public:
    depth_guard(Reader& r, std::string_view type) : r_(r) {
      if (r.depth_ >= r.max_depth_)
        r.fail("nesting deeper than " + std::to_string(r.max_depth_) + " levels while decoding " +
               readable_type_name(type));
      ++r.depth_;
    }
    depth_guard(const depth_guard&) = delete;
    depth_guard& operator=(const depth_guard&) = delete;
    ~depth_guard() { --r_.depth_; }

   private:
    Reader& r_;
  };
  // Promises the bytes that the elements of a container need at least
  // (count * element_min, checked against available()) to those elements,
  // so that what the elements read before them contain cannot claim them
  // too; next() hands the next element its share. Restores the reader's
  // promise on destruction.
  class pledge {
   public:
    pledge(Reader& r, std::size_t count, std::size_t element_min) noexcept
        : r_(r), saved_(r.pledged_), element_min_(element_min) {
      r.pledged_ += count * element_min;
    }
    pledge(const pledge&) = delete;
    pledge& operator=(const pledge&) = delete;
    ~pledge() { r_.pledged_ = saved_; }
    void next() noexcept { r_.pledged_ -= element_min_; }

   private:
    Reader& r_;
    std::size_t saved_;
    std::size_t element_min_;
  };
};

}  // namespace detail

template <class T>
void Writer::write(const T& value) {
  static_assert(detail::assert_serializable<T>());
  using U = std::remove_cv_t<T>;
  if constexpr (detail::is_builtin_v<U>) {
    serializer<U>::write(*this, value);  // never empty
  } else {
    const std::size_t start = size();
    if constexpr (detail::zero_copy_of<U>()) {
      serializer<U>::write(*this, value);
    } else {
      detail::writer_access::no_borrow guard(*this);
      serializer<U>::write(*this, value);
    }
    // Every value takes at least one byte, so that a count of them is
    // bounded by the bytes received: an empty encoding becomes a zero byte.
    if (size() == start) write_zeros(1);
  }
}

template <class T>
void Writer::write(const T&& value) {
  detail::writer_access::no_borrow guard(*this);
  write(static_cast<const T&>(value));
}

template <class T>
T Reader::read() {
  static_assert(detail::assert_serializable<T>());
  using U = std::remove_cv_t<T>;
  require(detail::min_size_v<U>, detail::type_name_v<U>);
  if constexpr (detail::is_builtin_v<U>) {
    return serializer<U>::read(*this);
  } else {
    detail::reader_access::depth_guard guard(*this, detail::type_name_v<U>);
    const std::size_t start = position();
    U value = serializer<U>::read(*this);
    if (position() == start) {  // written empty: the zero byte Writer::write added
      std::uint8_t zero;
      read_bytes(&zero, 1, detail::type_name_v<U>);
      if (zero != 0)
        fail("invalid byte " + std::to_string(zero) + " after an empty " +
             detail::readable_type_name(detail::type_name_v<U>) + " (must be 0)");
    }
    return value;
  }
}

}  // namespace mproc
