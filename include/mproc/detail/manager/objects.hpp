// mproc/detail/manager/objects.hpp — the objects a Manager's server holds:
// dict, list, namespace record, queue, lock, event and value, each with the
// operations its proxy (managers.hpp) sends.
//
// Layer detail/manager, over protocol.hpp. Each object guards its state with
// its own mutex; operations that wait (Queue get/put, Lock acquire, Event
// wait) wait on its condition variable, in the server thread serving that
// client's connection, for at most the timeout the client sent (negative:
// without limit). Operation numbers are part of the wire protocol.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <mproc/detail/manager/protocol.hpp>
#include <mproc/detail/util/lean_std.hpp>

namespace mproc::detail::manager {

// How often a waiting operation checks that its client is still there.
inline constexpr std::chrono::milliseconds kClientCheckInterval{50};

// Waits on `cv` until `ready()`, at most `timeout_ms` (negative: forever).
// Returns ready(). Throws ClientGone if `caller` disconnects meanwhile (so
// a dead client's get takes no item, its acquire no lock).
template <class Ready>
bool wait_for_ms(std::condition_variable& cv, std::unique_lock<std::mutex>& lock, std::int64_t timeout_ms,
                 const Caller& caller, Ready ready) {
  using clock = std::chrono::steady_clock;
  const auto deadline =
      timeout_ms < 0 ? clock::time_point::max() : clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!ready()) {
    const auto now = clock::now();
    if (now >= deadline) return false;
    if (caller.gone()) throw ClientGone{};
    cv.wait_until(lock, deadline - now < kClientCheckInterval ? deadline : now + kClientCheckInterval);
  }
  return true;
}

[[noreturn]] inline void unknown_op(std::uint32_t op, std::string_view kind) {
  throw ProcessError("mproc: Manager: operation " + std::to_string(op) + " is not one of " + std::string(kind) +
                     "'s (a client of another mproc version?)");
}

// Python's dict; keys in ascending order (std::map).
template <class K, class V>
class DictObject final : public ServerObject {
 public:
  enum Op : std::uint32_t {
    set = 1,
    get,
    get_or,
    contains,
    pop,
    size,
    keys,
    values,
    items,
    clear,
    update,
    setdefault,
    erase
  };
  explicit DictObject(ArgReader&) {}

  void call(std::uint32_t op, ArgReader a, std::vector<std::byte>& out, const Caller&) override {
    std::lock_guard lock(mutex_);
    switch (op) {
      case set: {
        K k = a.next<K>();
        V v = a.next<V>();
        map_.insert_or_assign(std::move(k), std::move(v));
        return;
      }
      case get:
        return reply(out, find(a.next<K>())->second);
      case get_or: {
        K k = a.next<K>();
        V fallback = a.next<V>();
        const auto it = map_.find(k);
        return reply(out, it == map_.end() ? fallback : it->second);
      }
      case contains:
        return reply(out, map_.contains(a.next<K>()));
      case pop: {
        const auto it = find(a.next<K>());
        V v = std::move(it->second);
        map_.erase(it);
        return reply(out, v);
      }
      case erase:
        return reply(out, map_.erase(a.next<K>()) != 0);
      case size:
        return reply(out, static_cast<std::uint64_t>(map_.size()));
      case keys: {
        std::vector<K> ks;
        ks.reserve(map_.size());
        for (const auto& [k, v] : map_) ks.push_back(k);
        return reply(out, ks);
      }
      case values: {
        std::vector<V> vs;
        vs.reserve(map_.size());
        for (const auto& [k, v] : map_) vs.push_back(v);
        return reply(out, vs);
      }
      case items:
        return reply(out, std::vector<std::pair<K, V>>(map_.begin(), map_.end()));
      case clear:
        map_.clear();
        return;
      case update:
        for (auto& [k, v] : a.next<std::vector<std::pair<K, V>>>()) map_.insert_or_assign(std::move(k), std::move(v));
        return;
      case setdefault: {
        K k = a.next<K>();
        V v = a.next<V>();
        return reply(out, map_.try_emplace(std::move(k), std::move(v)).first->second);
      }
      default:
        unknown_op(op, "dict");
    }
  }

 private:
  template <class T>
  static void reply(std::vector<std::byte>& out, const T& value) {
    dumps_append(out, value);
  }
  typename std::map<K, V>::iterator find(const K& k) {
    const auto it = map_.find(k);
    if (it == map_.end()) throw std::out_of_range("mproc: Manager dict: key not found (Python: KeyError)");
    return it;
  }

  std::mutex mutex_;
  std::map<K, V> map_;
};

// Python's list; indexes may be negative (from the end), as in Python.
template <class T>
class ListObject final : public ServerObject {
 public:
  enum Op : std::uint32_t { append = 1, extend, get, set, pop, insert, size, items, clear };
  explicit ListObject(ArgReader&) {}

  void call(std::uint32_t op, ArgReader a, std::vector<std::byte>& out, const Caller&) override {
    std::lock_guard lock(mutex_);
    switch (op) {
      case append:
        items_.push_back(a.next<T>());
        return;
      case extend:
        for (T& v : a.next<std::vector<T>>()) items_.push_back(std::move(v));
        return;
      case get:
        dumps_append(out, items_[position(a.next<std::int64_t>(), "get")]);
        return;
      case set: {
        const std::size_t i = position(a.next<std::int64_t>(), "set");
        items_[i] = a.next<T>();
        return;
      }
      case pop: {
        const std::size_t i = position(a.next<std::int64_t>(), "pop");
        T v = std::move(items_[i]);
        items_.erase(items_.begin() + static_cast<std::ptrdiff_t>(i));
        dumps_append(out, v);
        return;
      }
      case insert: {  // Python clamps an insert position to [0, size]
        const std::int64_t n = static_cast<std::int64_t>(items_.size());
        std::int64_t i = a.next<std::int64_t>();
        if (i < 0) i = std::max<std::int64_t>(0, i + n);
        if (i > n) i = n;
        items_.insert(items_.begin() + static_cast<std::ptrdiff_t>(i), a.next<T>());
        return;
      }
      case size:
        dumps_append(out, static_cast<std::uint64_t>(items_.size()));
        return;
      case items:
        dumps_append(out, items_);
        return;
      case clear:
        items_.clear();
        return;
      default:
        unknown_op(op, "list");
    }
  }

 private:
  std::size_t position(std::int64_t i, const char* what) const {
    const std::int64_t n = static_cast<std::int64_t>(items_.size());
    const std::int64_t at = i < 0 ? i + n : i;
    if (at < 0 || at >= n)
      throw std::out_of_range("mproc: Manager list." + std::string(what) + "(): index " + std::to_string(i) +
                              " out of range for a list of " + std::to_string(n) + " (Python: IndexError)");
    return static_cast<std::size_t>(at);
  }

  std::mutex mutex_;
  std::vector<T> items_;
};

// Python's Namespace: named attributes of any serializable type, each kept
// as the frame its setter sent (the getter's decode checks the type).
class NamespaceObject final : public ServerObject {
 public:
  enum Op : std::uint32_t { set = 1, get, contains, erase, names };
  explicit NamespaceObject(ArgReader&) {}

  void call(std::uint32_t op, ArgReader a, std::vector<std::byte>& out, const Caller&) override {
    std::lock_guard lock(mutex_);
    switch (op) {
      case set: {
        auto name = a.next<std::string>();
        attributes_.insert_or_assign(std::move(name), a.next<std::vector<std::byte>>());
        return;
      }
      case get: {
        const auto name = a.next<std::string>();
        const auto it = attributes_.find(name);
        if (it == attributes_.end())
          throw std::out_of_range("mproc: Manager Namespace: no attribute '" + name + "' (Python: AttributeError)");
        dumps_append(out, it->second);
        return;
      }
      case contains:
        dumps_append(out, attributes_.contains(a.next<std::string>()));
        return;
      case erase:
        dumps_append(out, attributes_.erase(a.next<std::string>()) != 0);
        return;
      case names: {
        std::vector<std::string> all;
        for (const auto& [name, value] : attributes_) all.push_back(name);
        dumps_append(out, all);
        return;
      }
      default:
        unknown_op(op, "Namespace");
    }
  }

 private:
  std::mutex mutex_;
  std::map<std::string, std::vector<std::byte>, std::less<>> attributes_;
};

// Python's queue.Queue(maxsize): FIFO, bounded when maxsize > 0.
template <class T>
class QueueObject final : public ServerObject {
 public:
  enum Op : std::uint32_t { put = 1, get, size, empty, full };
  explicit QueueObject(ArgReader& a) : maxsize_(a.next<std::uint64_t>()) {}

  void call(std::uint32_t op, ArgReader a, std::vector<std::byte>& out, const Caller& caller) override {
    std::unique_lock lock(mutex_);
    switch (op) {
      case put: {
        T item = a.next<T>();
        const auto timeout_ms = a.next<std::int64_t>();
        if (!wait_for_ms(changed_, lock, timeout_ms, caller, [&] { return !is_full(); }))
          throw Full("mproc: Manager Queue.put(): the queue is full");
        items_.push_back(std::move(item));
        changed_.notify_all();
        return;
      }
      case get: {
        const auto timeout_ms = a.next<std::int64_t>();
        if (!wait_for_ms(changed_, lock, timeout_ms, caller, [&] { return !items_.empty(); }))
          throw Empty("mproc: Manager Queue.get(): the queue is empty");
        dumps_append(out, items_.front());
        items_.pop_front();
        changed_.notify_all();
        return;
      }
      case size:
        dumps_append(out, static_cast<std::uint64_t>(items_.size()));
        return;
      case empty:
        dumps_append(out, items_.empty());
        return;
      case full:
        dumps_append(out, is_full());
        return;
      default:
        unknown_op(op, "Queue");
    }
  }

 private:
  bool is_full() const noexcept { return maxsize_ > 0 && items_.size() >= maxsize_; }

  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<T> items_;
  std::uint64_t maxsize_;
};

// Python's threading.Lock, held by a client until any client releases it.
class LockObject final : public ServerObject {
 public:
  enum Op : std::uint32_t { acquire = 1, release, locked };
  explicit LockObject(ArgReader&) {}

  void call(std::uint32_t op, ArgReader a, std::vector<std::byte>& out, const Caller& caller) override {
    std::unique_lock lock(mutex_);
    switch (op) {
      case acquire: {
        const bool got = wait_for_ms(changed_, lock, a.next<std::int64_t>(), caller, [&] { return !locked_; });
        if (got) locked_ = true;
        dumps_append(out, got);
        return;
      }
      case release:
        if (!locked_) throw ProcessError("mproc: Manager Lock.release(): release of an unheld Lock");
        locked_ = false;
        changed_.notify_one();
        return;
      case locked:
        dumps_append(out, locked_);
        return;
      default:
        unknown_op(op, "Lock");
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  bool locked_ = false;
};

// Python's threading.Event.
class EventObject final : public ServerObject {
 public:
  enum Op : std::uint32_t { set = 1, clear, is_set, wait };
  explicit EventObject(ArgReader&) {}

  void call(std::uint32_t op, ArgReader a, std::vector<std::byte>& out, const Caller& caller) override {
    std::unique_lock lock(mutex_);
    switch (op) {
      case set:
        flag_ = true;
        changed_.notify_all();
        return;
      case clear:
        flag_ = false;
        return;
      case is_set:
        dumps_append(out, flag_);
        return;
      case wait:
        dumps_append(out, wait_for_ms(changed_, lock, a.next<std::int64_t>(), caller, [&] { return flag_; }));
        return;
      default:
        unknown_op(op, "Event");
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  bool flag_ = false;
};

// Python's Manager().Value(typecode, value): one value of type T.
template <class T>
class ValueObject final : public ServerObject {
 public:
  enum Op : std::uint32_t { get = 1, set, exchange };
  explicit ValueObject(ArgReader& a) : value_(a.next<T>()) {}

  void call(std::uint32_t op, ArgReader a, std::vector<std::byte>& out, const Caller&) override {
    std::lock_guard lock(mutex_);
    switch (op) {
      case get:
        dumps_append(out, value_);
        return;
      case set:
        value_ = a.next<T>();
        return;
      case exchange: {
        T next = a.next<T>();
        dumps_append(out, value_);
        value_ = std::move(next);
        return;
      }
      default:
        unknown_op(op, "Value");
    }
  }

 private:
  std::mutex mutex_;
  T value_;
};

}  // namespace mproc::detail::manager
