// ApiKeys: who may call flintd's APIs (gRPC flint.v1.Inference and HTTP /v1/*)
// and how many requests each key may have open at once. Keys come from
// --api-key (or $FLINT_API_KEY) and --api-key-file; only their SHA-256 digests
// are kept, and a presented key is compared with every one of them in constant
// time, so neither the time taken nor an early exit tells how close a guess was.
#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace flint::server {

class ApiKeys {
 public:
  struct Key {
    std::string name;            // for logs and metrics, never the key itself
    int32_t max_concurrent = 0;  // requests open at once, 0: no limit
    std::array<unsigned char, 32> digest{};
    std::atomic<int32_t> in_use{0};
  };

  // A request counted against its key's limit while the lease lives.
  class Lease {
   public:
    Lease() = default;
    explicit Lease(Key* key) : key_(key) {}
    Lease(Lease&& other) noexcept : key_(std::exchange(other.key_, nullptr)) {}
    Lease& operator=(Lease&& other) noexcept {
      if (this != &other) release(), key_ = std::exchange(other.key_, nullptr);
      return *this;
    }
    ~Lease() { release(); }

   private:
    void release() {
      if (key_) key_->in_use.fetch_sub(1);
      key_ = nullptr;
    }
    Key* key_ = nullptr;
  };

  ApiKeys() = default;  // no keys: every call is allowed
  ApiKeys(const ApiKeys&) = delete;
  ApiKeys& operator=(const ApiKeys&) = delete;

  // Adds `key` under `name`; `max_concurrent` 0 means the default limit.
  // Throws flint::Error for an empty key, one with whitespace, or a repeat.
  void add(std::string_view key, std::string name, int32_t max_concurrent = 0);
  // Reads --api-key-file: one key per line, optionally followed by
  // `name=NAME` and `max_concurrent=N`; blank lines and lines starting with '#'
  // are skipped. Throws flint::Error naming the file and line.
  void load_file(const std::string& path);
  // The limit for keys that set none (--max-requests-per-key), 0: none.
  void set_default_max_concurrent(int32_t n) { default_max_concurrent_ = n; }

  bool enabled() const { return !keys_.empty(); }
  size_t size() const { return keys_.size(); }

  // The key an "authorization" value ("Bearer <key>", scheme case-insensitive)
  // carries, or nullptr when it is missing, malformed or unknown.
  Key* authenticate(std::string_view authorization);
  // Counts one more open request for `key`: nullopt when it is at its limit.
  std::optional<Lease> acquire(Key& key) const;
  int32_t limit_of(const Key& key) const { return key.max_concurrent > 0 ? key.max_concurrent : default_max_concurrent_; }

 private:
  std::deque<Key> keys_;  // a deque: Key holds an atomic and must not move
  int32_t default_max_concurrent_ = 0;
};

// What the APIs tell a caller, in one place.
inline constexpr std::string_view kMissingKeyMessage =
    "a valid API key is required: send \"authorization: Bearer <key>\"";
std::string key_limit_message(const ApiKeys::Key& key, int32_t limit);

}  // namespace flint::server
