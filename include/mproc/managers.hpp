// mproc::Manager (Python: multiprocessing.Manager / managers.BaseManager):
// a server process that owns shared objects — dict, list, Namespace, Queue,
// Lock, Event, Value — and typed proxies that any process can use.
// Public layer; the protocol, server and client are in detail/manager/.
//
//   mp::Manager mgr;                                  // starts the server
//   auto scores = mgr.dict<std::string, double>();
//   mp::Pool pool(4);
//   pool.map([](mp::DictProxy<std::string, double> d, int i) { ... }, ...);
//
// Proxies are copyable and serializable: pass them to a Process, a Pool
// task or through a Queue, and every process operates on the one object in
// the server. Each operation is a round trip to the server, in the order a
// thread issues them; the server runs each object's operations one at a
// time. Every thread of every process opens its own connection at its first
// call. Proxy calls are thread-safe and process-safe.
//
// Lifetime: an object lives while its creator process holds a proxy to it
// (copies included), or — created under a Named — as long as the server.
// A proxy received by another process does not keep the object alive: after
// the creator dropped its last proxy, a call throws ProcessError ("does not
// exist"). The server ends with Manager::shutdown(), the Manager's
// destruction, or its owner process's death (even by SIGKILL); a call to a
// server that is gone throws ProcessError at once, never hangs. Operations
// that wait (Queue get/put, Lock acquire, Event wait) wait on the server,
// each in its client's server thread.
//
// Remote use (Python: BaseManager(address, authkey)): Manager(address,
// authkey) serves on a Unix ("unix:PATH") or TCP ("HOST:PORT") address;
// Manager::connect(address, authkey) from another process — of a program
// that uses the same object types — reaches it, and both find objects by
// Named. A proxy carries its server's authkey (in the bytes that cross to
// another process): treat a serialized proxy as a secret on that channel.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <unistd.h>

#include <mproc/detail/manager/client.hpp>
#include <mproc/detail/manager/objects.hpp>
#include <mproc/detail/manager/server.hpp>
#include <mproc/detail/util/lean_std.hpp>
#include <mproc/errors.hpp>
#include <mproc/listener.hpp>
#include <mproc/serialize.hpp>

namespace mproc {

// A name under which Manager finds or creates an object (Python: the typeid
// of BaseManager.register), shared by every process that knows it.
struct Named {
  std::string name;
};

namespace detail::manager {

// What every copy of one proxy in one process shares: where the object is,
// and whether this process created it (then the last copy releases it).
class ObjectRef {
 public:
  ObjectRef(Endpoint endpoint, std::uint64_t kind, std::uint64_t id, bool release_at_end)
      : endpoint_(std::move(endpoint)), kind_(kind), id_(id), creator_(release_at_end ? ::getpid() : 0) {}
  ObjectRef(const ObjectRef&) = delete;
  ObjectRef& operator=(const ObjectRef&) = delete;
  ~ObjectRef() {
    if (creator_ != ::getpid()) return;  // received, or a forked copy: not ours to release
    try {
      call<void>(endpoint_, kind_, 0, op_release, id_);
    } catch (...) {  // the server is gone (so is the object), or this thread exits: it stays until the server ends
    }
  }

  const Endpoint& endpoint() const noexcept { return endpoint_; }
  std::uint64_t kind() const noexcept { return kind_; }
  std::uint64_t id() const noexcept { return id_; }

 private:
  Endpoint endpoint_;
  std::uint64_t kind_;
  std::uint64_t id_;
  pid_t creator_;
};

// The base of the proxies: a shared ObjectRef and the call to the object.
template <class Object>
class Proxy {
 public:
  using object_type = Object;
  // The object type's kind, registered at the program's start (odr-use of
  // `id`); its value is a constant, right even before that registration ran.
  static std::uint64_t kind() noexcept {
    (void)kind_registration<Object>::id;
    return kind_registration<Object>::kind.id;
  }

  // The object's id on its server, and the server's address. Non-blocking.
  std::uint64_t id() const noexcept { return ref_->id(); }
  const std::string& address() const noexcept { return ref_->endpoint().address; }

  explicit Proxy(std::shared_ptr<const ObjectRef> ref) : ref_(std::move(ref)) {}
  const std::shared_ptr<const ObjectRef>& ref() const noexcept { return ref_; }

 protected:
  template <class R, class... A>
  R call(typename Object::Op op, const A&... args) const {
    return manager::call<R>(ref_->endpoint(), ref_->kind(), ref_->id(), op, args...);
  }
  static std::int64_t millis(std::optional<std::chrono::milliseconds> timeout) noexcept {
    return timeout ? std::max<std::int64_t>(0, timeout->count()) : -1;
  }

 private:
  std::shared_ptr<const ObjectRef> ref_;
};

template <class P>
concept manager_proxy = requires { typename P::object_type; } && std::is_base_of_v<Proxy<typename P::object_type>, P>;

}  // namespace detail::manager

// A Manager's dict<K, V> (Python: Manager().dict()). Keys are kept in
// ascending order (std::map: K needs operator<); Python keeps insertion
// order. Every member is a blocking round trip to the server, thread- and
// process-safe, and throws ProcessError if the server is gone.
template <class K, class V>
class DictProxy : public detail::manager::Proxy<detail::manager::DictObject<K, V>> {
  using Base = detail::manager::Proxy<detail::manager::DictObject<K, V>>;
  using Op = typename detail::manager::DictObject<K, V>::Op;

 public:
  using Base::Base;
  // d[key] = value.
  void set(const K& key, const V& value) const { this->template call<void>(Op::set, key, value); }
  // d[key]. Throws std::out_of_range if absent (Python: KeyError).
  V get(const K& key) const { return this->template call<V>(Op::get, key); }
  // d.get(key, fallback).
  V get(const K& key, const V& fallback) const { return this->template call<V>(Op::get_or, key, fallback); }
  // key in d.
  bool contains(const K& key) const { return this->template call<bool>(Op::contains, key); }
  // d.pop(key). Throws std::out_of_range if absent.
  V pop(const K& key) const { return this->template call<V>(Op::pop, key); }
  // del d[key], if present; returns whether it was.
  bool erase(const K& key) const { return this->template call<bool>(Op::erase, key); }
  // d.setdefault(key, value): the value at key, inserting `value` if absent.
  V setdefault(const K& key, const V& value) const { return this->template call<V>(Op::setdefault, key, value); }
  // d.update(items).
  void update(const std::vector<std::pair<K, V>>& items) const { this->template call<void>(Op::update, items); }
  // len(d), d.keys(), d.values(), d.items() (copies), d.clear().
  std::size_t size() const { return static_cast<std::size_t>(this->template call<std::uint64_t>(Op::size)); }
  std::vector<K> keys() const { return this->template call<std::vector<K>>(Op::keys); }
  std::vector<V> values() const { return this->template call<std::vector<V>>(Op::values); }
  std::vector<std::pair<K, V>> items() const { return this->template call<std::vector<std::pair<K, V>>>(Op::items); }
  void clear() const { this->template call<void>(Op::clear); }
};

// A Manager's list<T> (Python: Manager().list()). Indexes may be negative,
// counting from the end. Members block, are thread- and process-safe, and
// throw std::out_of_range for an index outside the list (Python:
// IndexError), ProcessError if the server is gone.
template <class T>
class ListProxy : public detail::manager::Proxy<detail::manager::ListObject<T>> {
  using Base = detail::manager::Proxy<detail::manager::ListObject<T>>;
  using Op = typename detail::manager::ListObject<T>::Op;

 public:
  using Base::Base;
  void append(const T& value) const { this->template call<void>(Op::append, value); }
  void extend(const std::vector<T>& values) const { this->template call<void>(Op::extend, values); }
  // l[index], l[index] = value.
  T get(std::int64_t index) const { return this->template call<T>(Op::get, index); }
  void set(std::int64_t index, const T& value) const { this->template call<void>(Op::set, index, value); }
  // l.pop(index): removes and returns the item (default: the last).
  T pop(std::int64_t index = -1) const { return this->template call<T>(Op::pop, index); }
  // l.insert(index, value) (index clamped to the list, as in Python).
  void insert(std::int64_t index, const T& value) const { this->template call<void>(Op::insert, index, value); }
  // len(l), list(l) (a copy), l.clear().
  std::size_t size() const { return static_cast<std::size_t>(this->template call<std::uint64_t>(Op::size)); }
  std::vector<T> items() const { return this->template call<std::vector<T>>(Op::items); }
  void clear() const { this->template call<void>(Op::clear); }
};

// A Manager's Namespace (Python: Manager().Namespace()): named attributes
// of any serializable types. Members block, are thread- and process-safe,
// and throw ProcessError if the server is gone.
class NamespaceProxy : public detail::manager::Proxy<detail::manager::NamespaceObject> {
  using Op = detail::manager::NamespaceObject::Op;

 public:
  using Proxy::Proxy;
  // ns.name = value.
  template <class T>
  void set(std::string_view name, const T& value) const {
    call<void>(Op::set, std::string(name), dumps(value));
  }
  // ns.name, decoded as a T. Throws std::out_of_range if there is no such
  // attribute (Python: AttributeError), ProcessError if it holds another type.
  template <class T>
  T get(std::string_view name) const {
    const auto frame = call<std::vector<std::byte>>(Op::get, std::string(name));
    try {
      return loads<T>(frame);
    } catch (const ProcessError& e) {
      throw ProcessError("mproc: Manager Namespace: attribute '" + std::string(name) + "' is not a " +
                         detail::readable_type_name(detail::type_name_v<T>) + " (" + e.what() + ")");
    }
  }
  // hasattr(ns, name); delattr (returns whether it existed); the names, sorted.
  bool contains(std::string_view name) const { return call<bool>(Op::contains, std::string(name)); }
  bool erase(std::string_view name) const { return call<bool>(Op::erase, std::string(name)); }
  std::vector<std::string> names() const { return call<std::vector<std::string>>(Op::names); }
};

// A Manager's Queue<T> (Python: Manager().Queue(maxsize)). Members block as
// Python's (a get waits on the server for an item), are thread- and
// process-safe, and throw ProcessError if the server is gone.
template <class T>
class QueueProxy : public detail::manager::Proxy<detail::manager::QueueObject<T>> {
  using Base = detail::manager::Proxy<detail::manager::QueueObject<T>>;
  using Op = typename detail::manager::QueueObject<T>::Op;

 public:
  using Base::Base;
  // Appends `item`, waiting for room (at most `timeout`). Throws Full on timeout.
  void put(const T& item, std::optional<std::chrono::milliseconds> timeout = std::nullopt) const {
    this->template call<void>(Op::put, item, Base::millis(timeout));
  }
  // Removes and returns the first item, waiting for one (at most
  // `timeout`). Throws Empty on timeout.
  T get(std::optional<std::chrono::milliseconds> timeout = std::nullopt) const {
    return this->template call<T>(Op::get, Base::millis(timeout));
  }
  // put/get that do not wait: throw Full/Empty at once.
  void put_nowait(const T& item) const { put(item, std::chrono::milliseconds(0)); }
  T get_nowait() const { return get(std::chrono::milliseconds(0)); }
  // qsize(), empty(), full() — a snapshot.
  std::size_t qsize() const { return static_cast<std::size_t>(this->template call<std::uint64_t>(Op::size)); }
  bool empty() const { return this->template call<bool>(Op::empty); }
  bool full() const { return this->template call<bool>(Op::full); }
};

// A Manager's Lock (Python: Manager().Lock(), a threading.Lock in the
// server): any client may release it. Thread- and process-safe; throws
// ProcessError if the server is gone.
class LockProxy : public detail::manager::Proxy<detail::manager::LockObject> {
  using Op = detail::manager::LockObject::Op;

 public:
  using Proxy::Proxy;
  // Takes the lock, waiting at most `timeout` (none: until it is free).
  // Returns whether it was taken. Blocks.
  bool acquire(std::optional<std::chrono::milliseconds> timeout = std::nullopt) const {
    return call<bool>(Op::acquire, millis(timeout));
  }
  // Takes it if free. Non-blocking (one round trip).
  bool try_acquire() const { return acquire(std::chrono::milliseconds(0)); }
  // Releases it. Throws ProcessError if it is not held.
  void release() const { call<void>(Op::release); }
  bool locked() const { return call<bool>(Op::locked); }
  // BasicLockable, for std::lock_guard / std::unique_lock.
  void lock() const { acquire(); }
  void unlock() const { release(); }
};

// A Manager's Event (Python: Manager().Event()). Thread- and process-safe;
// throws ProcessError if the server is gone.
class EventProxy : public detail::manager::Proxy<detail::manager::EventObject> {
  using Op = detail::manager::EventObject::Op;

 public:
  using Proxy::Proxy;
  void set() const { call<void>(Op::set); }
  void clear() const { call<void>(Op::clear); }
  bool is_set() const { return call<bool>(Op::is_set); }
  // Waits until set, at most `timeout`; returns whether it is set. Blocks.
  bool wait(std::optional<std::chrono::milliseconds> timeout = std::nullopt) const {
    return call<bool>(Op::wait, millis(timeout));
  }
};

// A Manager's Value<T> (Python: Manager().Value(typecode, value)).
// Thread- and process-safe; throws ProcessError if the server is gone.
template <class T>
class ValueProxy : public detail::manager::Proxy<detail::manager::ValueObject<T>> {
  using Base = detail::manager::Proxy<detail::manager::ValueObject<T>>;
  using Op = typename detail::manager::ValueObject<T>::Op;

 public:
  using Base::Base;
  T get() const { return this->template call<T>(Op::get); }
  void set(const T& value) const { this->template call<void>(Op::set, value); }
  // Sets `value` and returns the previous one, in one step.
  T exchange(const T& value) const { return this->template call<T>(Op::exchange, value); }
};

// Proxies cross processes as (address, authkey, kind, id); a received proxy
// does not keep its object alive (see the file comment).
template <detail::manager::manager_proxy P>
struct serializer<P> {
  static void write(Writer& w, const P& p) {
    const auto& ref = *p.ref();
    w.write(ref.endpoint().address);
    w.write(ref.endpoint().authkey);
    w.write(ref.kind());
    w.write(ref.id());
  }
  static P read(Reader& r) {
    auto address = r.read<std::string>();
    auto authkey = r.read<std::string>();
    const auto kind = r.read<std::uint64_t>();
    const auto id = r.read<std::uint64_t>();
    if (kind != P::kind()) throw ProcessError("mproc: Manager: a proxy of another object type");
    return P(std::make_shared<const detail::manager::ObjectRef>(
        detail::manager::Endpoint{std::move(address), std::move(authkey)}, kind, id, false));
  }
};

// Starts and owns a Manager's server, or connects to one (Python:
// multiprocessing.Manager(), BaseManager(address, authkey)).
// Move-only. The object-creating members are thread-safe.
class Manager {
 public:
  // Starts a server on a private Unix socket (a fresh directory of $TMPDIR
  // or /tmp) with a random authkey. Blocks until it listens (it is forked
  // from this process). Throws ProcessError if it cannot start.
  Manager() : Manager(std::string_view{}, random_key()) {}

  // Starts a server on `address` ("unix:PATH", or a path containing '/';
  // "HOST:PORT", port 0 for any free one) that clients authenticate to with
  // `authkey` (empty: no handshake — anyone who can connect is served).
  // Blocks until it listens. Throws ValueError for a malformed address,
  // ProcessError if it cannot listen there (e.g. the path exists).
  Manager(std::string_view address, std::string authkey) {
    auto started = detail::manager::start_server(address, authkey);
    server_ = std::move(started.child);
    unix_path_ = std::move(started.unix_path);
    endpoint_ = {std::move(started.address), std::move(authkey)};
  }

  // A Manager for the server at `address`, which this process does not own
  // (shutdown() only forgets it). Connects once to check the server and the
  // key. Blocks. Throws AuthenticationError for a wrong key, ProcessError
  // if no server answers there.
  [[nodiscard]] static Manager connect(std::string_view address, std::string authkey) {
    Manager m(nullptr);
    m.endpoint_ = {std::string(address), std::move(authkey)};
    detail::manager::ThreadConnections::mine().get(m.endpoint_);
    return m;
  }

  Manager(Manager&& other) noexcept = default;
  Manager& operator=(Manager&& other) noexcept {
    if (this != &other) {
      shutdown();
      server_ = std::move(other.server_);
      endpoint_ = std::move(other.endpoint_);
      unix_path_ = std::move(other.unix_path_);
    }
    return *this;
  }
  Manager(const Manager&) = delete;
  Manager& operator=(const Manager&) = delete;
  // shutdown().
  ~Manager() { shutdown(); }

  // Stops the server this process started (its objects die with it; their
  // proxies then throw ProcessError) and removes its socket file. Blocks
  // until it is reaped. Idempotent; does nothing in a forked copy or for a
  // connect()ed Manager. Never throws.
  void shutdown() noexcept {
    if (!server_.valid() || !server_.owned_here() || server_.reaped()) return;
    server_.send_signal(SIGKILL);
    try {
      server_.wait_exited(detail::Clock::time_point::max());
    } catch (...) {
    }
    server_.try_reap();
    if (!unix_path_.empty()) detail::manager::remove_socket_path(unix_path_);
  }

  // The address clients connect to ("unix:PATH" or "HOST:PORT"), the
  // server's pid (0 when connect()ed). Non-blocking.
  const std::string& address() const noexcept { return endpoint_.address; }
  int pid() const noexcept { return server_.valid() ? static_cast<int>(server_.pid()) : 0; }

  // New objects (Python: dict(), list(), Namespace(), Queue(maxsize),
  // Lock(), Event(), Value(typecode, value)), or with a Named the object of
  // that name — created by the first caller, found by the others. Each
  // blocks for one round trip. Throws ValueError if the name holds another
  // type, ProcessError if the server is gone or does not know the type
  // (a server of a program that never uses it).
  template <class K, class V>
  [[nodiscard]] DictProxy<K, V> dict(const Named& name = {}) {
    return make<DictProxy<K, V>>(name);
  }
  template <class T>
  [[nodiscard]] ListProxy<T> list(const Named& name = {}) {
    return make<ListProxy<T>>(name);
  }
  [[nodiscard]] NamespaceProxy Namespace(const Named& name = {}) { return make<NamespaceProxy>(name); }
  // maxsize 0: unbounded.
  template <class T>
  [[nodiscard]] QueueProxy<T> Queue(std::size_t maxsize = 0, const Named& name = {}) {
    return make<QueueProxy<T>>(name, static_cast<std::uint64_t>(maxsize));
  }
  [[nodiscard]] LockProxy Lock(const Named& name = {}) { return make<LockProxy>(name); }
  [[nodiscard]] EventProxy Event(const Named& name = {}) { return make<EventProxy>(name); }
  template <class T>
  [[nodiscard]] ValueProxy<T> Value(const T& initial = T{}, const Named& name = {}) {
    return make<ValueProxy<T>>(name, initial);
  }

 private:
  Manager(std::nullptr_t) {}

  template <class P, class... A>
  P make(const Named& name, const A&... args) {
    using Object = typename P::object_type;
    const std::uint64_t kind = P::kind();
    const auto id = detail::manager::call<std::uint64_t>(endpoint_, kind, 0, detail::manager::op_create,
                                                         std::string(detail::type_name_v<Object>), name.name, args...);
    return P(std::make_shared<const detail::manager::ObjectRef>(endpoint_, kind, id, name.name.empty()));
  }

  static std::string random_key() {
    std::string key(32, '\0');
    detail::fill_random(std::as_writable_bytes(std::span(key)), "Manager");
    return key;
  }

  detail::Child server_;
  detail::manager::Endpoint endpoint_;
  std::string unix_path_;
};

}  // namespace mproc
