// mproc/detail/mpi/broadcast.hpp — values an MPI pool sends once to every
// rank: their message, their decoder record, and each rank's store of them.
//
// Layer detail/mpi, over the message format (base.hpp), the program image's
// code references (image.hpp) and the core's serialization. Also the
// serializer of the public handle mproc::mpi::Shared<T> (mpi.hpp), which
// reads the store. Used by mpi.hpp (Pool::broadcast encodes here) and
// by the serving loop (server.hpp, which decodes broadcast messages into
// the store).
// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <mproc/detail/mpi/base.hpp>
#include <mproc/detail/mpi/image.hpp>

namespace mproc::detail::mpi {

// A broadcast value's decoder record (see image.hpp: checked like a
// trampoline's before it is called).
using Decoder = std::shared_ptr<const void> (*)(Reader&);
struct DecoderInfo {
  std::uint64_t magic;
  std::uint64_t check;
  Decoder decode;
};
inline constexpr std::uint64_t kDecoderMagic = 0x6d70692d64656364ull;  // "mpi-decd"

template <class T>
struct decoder_tag {};

template <class T>
std::shared_ptr<const void> decode_value(Reader& r) {
  return std::make_shared<const T>(r.template read<T>());
}

template <class T>
inline constexpr DecoderInfo decoder_code{kDecoderMagic, fnv1a(type_name_v<decoder_tag<T>>), &decode_value<T>};

template <class T>
const CodeRef& decoder_ref() {
  static const CodeRef ref = Image::instance().locate(&decoder_code<T>);
  return ref;
}

// What follows the MsgHeader of a broadcast: the decoder record, its check,
// the value's type fingerprint; then the encoded value (from offset 64).
struct BroadcastRef {
  CodeRef decoder;
  std::uint64_t check;
  std::uint64_t fingerprint;
};
static_assert(sizeof(BroadcastRef) == 32);

// The broadcast values this rank holds, by handle id. The client's own
// values are there too, so a task run on the client (or in a process forked
// from a rank) finds them as well.
class SharedStore {
 public:
  static SharedStore& instance() {
    static SharedStore store;
    return store;
  }
  // Stores handle `id`'s value, or the error that kept it from being decoded.
  void put(std::uint64_t id, std::uint64_t fingerprint, std::shared_ptr<const void> value, std::string error = {}) {
    std::lock_guard lock(mutex_);
    values_[id] = {fingerprint, std::move(value), std::move(error)};
  }
  // The value of handle `id`, checked to be of the type with `fingerprint`.
  // Throws ProcessError when it is unknown here, of another type, or could
  // not be decoded.
  std::shared_ptr<const void> get(std::uint64_t id, std::uint64_t fingerprint, std::string_view type) {
    std::lock_guard lock(mutex_);
    const auto it = values_.find(id);
    const std::string what = "mproc::mpi::Shared<" + readable_type_name(type) + ">: handle " + std::to_string(id);
    if (it == values_.end())
      throw ProcessError(what +
                         " is unknown on this rank (a handle is valid in tasks of the pool that "
                         "broadcast it, while that pool is open)");
    if (it->second.fingerprint != fingerprint) throw ProcessError(what + " holds a value of another type");
    if (!it->second.value) throw ProcessError(what + ": the value could not be decoded here: " + it->second.error);
    return it->second.value;
  }
  void erase(std::uint64_t id) {
    std::lock_guard lock(mutex_);
    values_.erase(id);
  }
  // Forgets the values of handles in [first, last].
  void erase_range(std::uint64_t first, std::uint64_t last) {
    std::lock_guard lock(mutex_);
    values_.erase(values_.lower_bound(first), values_.upper_bound(last));
  }

 private:
  struct Entry {
    std::uint64_t fingerprint = 0;
    std::shared_ptr<const void> value;
    std::string error;
  };
  std::mutex mutex_;
  std::map<std::uint64_t, Entry> values_;
};

// Handle ids are unique within a process (every pool's client draws from
// one counter, so handles of different pools never collide in SharedStore).
inline std::uint64_t next_shared_id() {
  static std::atomic<std::uint64_t> next{0};
  return ++next;
}

// The broadcast message of `value` under handle `id`: header, BroadcastRef,
// then the encoded value. Throws what encoding the value throws.
template <class T>
std::vector<std::byte> encode_broadcast(std::uint64_t id, const T& value) {
  const std::size_t size = encoded_size(value);
  auto msg = new_message(Kind::broadcast, id, sizeof(BroadcastRef) + size);
  const BroadcastRef ref{decoder_ref<T>(), decoder_code<T>.check, type_fingerprint<T>()};
  const auto* p = reinterpret_cast<const std::byte*>(&ref);
  msg.insert(msg.end(), p, p + sizeof ref);
  {
    Writer w(msg);
    w.write(value);
  }
  seal_message(msg);
  return msg;
}

}  // namespace mproc::detail::mpi

namespace mproc::mpi {
template <class T>
class Shared;
}  // namespace mproc::mpi

// Shared<T> travels as its id and T's fingerprint; it is read back as this
// rank's copy of the value. Throws ProcessError if this rank has no value
// for the id (it belongs to a pool that is not open here) or its type differs.
template <class T>
struct mproc::serializer<mproc::mpi::Shared<T>> {
  static constexpr std::size_t min_size = 16;
  static void write(mproc::Writer& w, const mproc::mpi::Shared<T>& s) {
    if (!s) throw mproc::ProcessError("mproc::mpi::Shared: an empty handle cannot be a task argument");
    w.write(s.id_);
    w.write(mproc::type_fingerprint<T>());
  }
  static mproc::mpi::Shared<T> read(mproc::Reader& r) {
    const auto id = r.read<std::uint64_t>();
    const auto fingerprint = r.read<std::uint64_t>();
    if (fingerprint != mproc::type_fingerprint<T>())
      throw mproc::ProcessError("mproc::mpi::Shared: a handle of another type where Shared<" +
                                mproc::detail::readable_type_name(mproc::detail::type_name_v<T>) + "> was expected");
    auto value = mproc::detail::mpi::SharedStore::instance().get(id, fingerprint, mproc::detail::type_name_v<T>);
    return mproc::mpi::Shared<T>(id, std::static_pointer_cast<const T>(std::move(value)));
  }
};
