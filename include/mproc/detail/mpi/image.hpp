// mproc/detail/mpi/image.hpp — references to the program image's code that
// another rank can resolve.
//
// Layer detail/mpi, over base.hpp (errors, hashing); used by the client's
// hello (client.hpp), the encoders (encode.hpp, broadcast.hpp) and the
// serving loop (server.hpp), which resolves what they send.
// SPDX-License-Identifier: MIT
//
// Address-independent references to the code and data of the program image,
// so a task function can be named to another MPI rank.
//
// Every rank runs the same binary, but at other addresses (PIE and ASLR, and
// other nodes). A CodeRef names an address as (object, offset): the object is
// the loaded ELF file containing it (the executable or a shared library),
// identified by its GNU build-id (a hash of its contents the linker stores),
// and the offset is relative to where that object is loaded. The receiving
// rank finds the object with the same build-id among its own (dl_iterate_phdr)
// and adds its own load address. If it has no such object, or the address is
// outside the object's mapped segments, resolution fails with ProcessError.
//
// Task trampolines are not referred to directly: each has a CodeInfo record
// (magic, a hash of the trampoline's type name, its address) and the record's
// address travels. The receiver reads the record only after checking that it
// lies in a readable segment, compares magic and hash with what the sender
// sent, and calls the function only if both match and it lies in an
// executable segment. A mismatch is an error, never a jump to a wrong address.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <elf.h>
#include <link.h>

#include <mproc/detail/mpi/base.hpp>

namespace mproc::detail::mpi {

struct CodeRef {
  std::uint64_t object = 0;  // id of the containing object (hash of its build-id)
  std::uint64_t offset = 0;  // from the object's load address
};

// Checked before a referenced record is used.
inline constexpr std::uint64_t kCodeMagic = 0x6d70692d636f6465ull;  // "mpi-code"

// A trampoline's record: the receiver calls `run` only if magic and check match.
struct CodeInfo {
  std::uint64_t magic;
  std::uint64_t check;  // fnv1a of the trampoline's type name
  Trampoline run;
};

template <class F, class Arg, bool Star>
struct task_code_tag {};

template <class F, class Arg, bool Star>
inline constexpr CodeInfo task_code{kCodeMagic, fnv1a(type_name_v<task_code_tag<F, Arg, Star>>),
                                    &task_trampoline<F, Arg, Star>};

// The loaded objects of this process and their segments.
class Image {
 public:
  struct Segment {
    std::uintptr_t lo;
    std::uintptr_t hi;  // exclusive
    std::uint32_t flags;  // PF_R | PF_W | PF_X
  };
  struct Object {
    std::uint64_t id = 0;
    bool has_build_id = false;
    std::uintptr_t base = 0;
    std::string name;
    std::vector<Segment> segments;
  };

  static Image& instance() {
    static Image image;
    return image;
  }

  // The reference of `addr`. Throws ProcessError if no loaded object contains it.
  CodeRef locate(const void* addr) {
    const auto a = reinterpret_cast<std::uintptr_t>(addr);
    std::lock_guard lock(mutex_);
    for (int pass = 0; pass < 2; ++pass) {
      if (pass == 1) rescan_locked();
      for (const Object& o : objects_)
        for (const Segment& s : o.segments)
          if (a >= s.lo && a < s.hi) return {o.id, a - o.base};
    }
    throw ProcessError("mproc::mpi: the address of a task function is in no loaded object of this program");
  }

  // The address `ref` names in this process, checked to lie with its `size`
  // bytes inside one segment of the object that has all of `flags`. Throws
  // ProcessError naming `what` otherwise.
  std::uintptr_t resolve(CodeRef ref, std::size_t size, std::uint32_t flags, std::string_view what) {
    std::lock_guard lock(mutex_);
    const Object* o = find_locked(ref.object);
    if (o == nullptr) {
      rescan_locked();
      o = find_locked(ref.object);
    }
    if (o == nullptr)
      throw ProcessError("mproc::mpi: " + std::string(what) + " lives in an object (build-id hash " + hex(ref.object) +
                         ") that this rank has not loaded: every rank must run the same build of the program "
                         "(and load the same shared libraries)");
    const std::uintptr_t a = o->base + ref.offset;
    if (a >= o->base && contained_locked(*o, a, size, flags)) return a;
    throw ProcessError("mproc::mpi: " + std::string(what) + " (offset " + hex(ref.offset) + " in " +
                       (o->name.empty() ? std::string("the executable") : o->name) + ") is outside the object's " +
                       ((flags & PF_X) ? "code" : "data") + " on this rank");
  }

  // Whether [addr, addr + size) lies in one segment with all of `flags`, in any object.
  bool contains(std::uintptr_t addr, std::size_t size, std::uint32_t flags) {
    std::lock_guard lock(mutex_);
    for (const Object& o : objects_)
      if (contained_locked(o, addr, size, flags)) return true;
    return false;
  }

  // Id of the main executable (the hash of its build-id).
  std::uint64_t main_id() {
    std::lock_guard lock(mutex_);
    return objects_.empty() ? 0 : objects_.front().id;
  }
  bool main_has_build_id() {
    std::lock_guard lock(mutex_);
    return !objects_.empty() && objects_.front().has_build_id;
  }

  static std::string hex(std::uint64_t v) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string s = "0x";
    for (int shift = 60; shift >= 0; shift -= 4) s.push_back(digits[(v >> shift) & 0xf]);
    return s;
  }

 private:
  Image() { rescan_locked(); }

  const Object* find_locked(std::uint64_t id) const {
    for (const Object& o : objects_)
      if (o.id == id) return &o;
    return nullptr;
  }

  static bool contained_locked(const Object& o, std::uintptr_t a, std::size_t size, std::uint32_t flags) {
    for (const Segment& s : o.segments)
      if (a >= s.lo && a < s.hi && size <= s.hi - a && (s.flags & flags) == flags) return true;
    return false;
  }

  // The object's GNU build-id, hashed; 0 when it has none.
  static std::uint64_t build_id(const dl_phdr_info& info) {
    for (int i = 0; i < info.dlpi_phnum; ++i) {
      const ElfW(Phdr)& ph = info.dlpi_phdr[i];
      if (ph.p_type != PT_NOTE) continue;
      const auto* p = reinterpret_cast<const unsigned char*>(info.dlpi_addr + ph.p_vaddr);
      std::size_t left = ph.p_memsz;
      while (left >= sizeof(ElfW(Nhdr))) {
        ElfW(Nhdr) n;
        std::memcpy(&n, p, sizeof n);
        const std::size_t name = (n.n_namesz + 3u) & ~std::size_t{3};
        const std::size_t desc = (n.n_descsz + 3u) & ~std::size_t{3};
        if (sizeof n + name + desc > left) break;
        if (n.n_type == NT_GNU_BUILD_ID && n.n_namesz == 4 && std::memcmp(p + sizeof n, "GNU", 4) == 0 &&
            n.n_descsz > 0) {
          const std::string_view bytes(reinterpret_cast<const char*>(p + sizeof n + name), n.n_descsz);
          return fnv1a(bytes) | 1;  // never 0
        }
        p += sizeof n + name + desc;
        left -= sizeof n + name + desc;
      }
    }
    return 0;
  }

  void rescan_locked() {
    std::vector<Object> found;
    dl_iterate_phdr(
        [](dl_phdr_info* info, std::size_t, void* data) -> int {
          auto& out = *static_cast<std::vector<Object>*>(data);
          Object o;
          o.base = info->dlpi_addr;
          o.name = info->dlpi_name != nullptr ? info->dlpi_name : "";
          std::string layout;  // for objects without a build-id
          for (int i = 0; i < info->dlpi_phnum; ++i) {
            const ElfW(Phdr)& ph = info->dlpi_phdr[i];
            if (ph.p_type != PT_LOAD) continue;
            o.segments.push_back({info->dlpi_addr + ph.p_vaddr, info->dlpi_addr + ph.p_vaddr + ph.p_memsz, ph.p_flags});
            layout +=
                std::to_string(ph.p_vaddr) + ":" + std::to_string(ph.p_memsz) + ":" + std::to_string(ph.p_flags) + ";";
          }
          o.id = build_id(*info);
          o.has_build_id = o.id != 0;
          if (!o.has_build_id) {
            // Weaker: the file's name and segment layout.
            const std::string_view name = o.name;
            layout += name.substr(name.rfind('/') == std::string_view::npos ? 0 : name.rfind('/') + 1);
            o.id = fnv1a(layout) & ~std::uint64_t{1};
          }
          out.push_back(std::move(o));
          return 0;
        },
        &found);
    objects_ = std::move(found);  // the executable comes first
  }

  std::mutex mutex_;
  std::vector<Object> objects_;
};

// The reference of the trampoline record for (F, Arg, Star), computed once.
template <class F, class Arg, bool Star>
const CodeRef& task_code_ref() {
  static const CodeRef ref = Image::instance().locate(&task_code<F, Arg, Star>);
  return ref;
}

// The reference of a task function pointer, or {0, 0} for a captureless
// callable (the receiver default-constructs it).
template <class F>
CodeRef function_ref(F f) {
  if constexpr (std::is_pointer_v<F>) {
    return Image::instance().locate(reinterpret_cast<const void*>(f));
  } else {
    (void)f;
    return {};
  }
}

// The trampoline `ref` names, checked against `check` (see the top of this
// file). Throws ProcessError if anything does not match.
inline Trampoline resolve_trampoline(CodeRef ref, std::uint64_t check_hash) {
  Image& image = Image::instance();
  const std::uintptr_t at = image.resolve(ref, sizeof(CodeInfo), PF_R, "the task's trampoline record");
  if (at % alignof(CodeInfo) != 0)
    throw ProcessError("mproc::mpi: the task's trampoline record is misaligned on this rank (a different build?)");
  CodeInfo info;
  std::memcpy(&info, reinterpret_cast<const void*>(at), sizeof info);
  if (info.magic != kCodeMagic || info.check != check_hash)
    throw ProcessError(
        "mproc::mpi: the task function does not match on this rank (its record has another "
        "type hash): every rank must run the same build of the program");
  const auto run = reinterpret_cast<std::uintptr_t>(info.run);
  if (!image.contains(run, 1, PF_X)) throw ProcessError("mproc::mpi: the task's trampoline is not in this rank's code");
  return info.run;
}

// The task function pointer `ref` names ({0, 0}: none, for captureless callables).
inline std::uintptr_t resolve_function(CodeRef ref) {
  if (ref.object == 0 && ref.offset == 0) return 0;
  return Image::instance().resolve(ref, 1, PF_X, "the task function");
}

}  // namespace mproc::detail::mpi
