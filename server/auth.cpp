// ApiKeys: parsing the key file, and the constant-time lookup.
#include "server/auth.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <vector>

#include "common/error.h"

namespace flint::server {

namespace {

std::array<unsigned char, 32> sha256(std::string_view text) {
  std::array<unsigned char, 32> digest{};
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest.data());
  return digest;
}

bool is_space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

}  // namespace

void ApiKeys::add(std::string_view key, std::string name, int32_t max_concurrent) {
  if (key.empty()) fail("an API key is empty");
  for (char c : key)
    if (is_space(c) || std::iscntrl(static_cast<unsigned char>(c))) fail("API key ", name, " holds whitespace or a control character");
  if (max_concurrent < 0) fail("API key ", name, ": max_concurrent must be >= 0");
  const auto digest = sha256(key);
  for (const Key& k : keys_)
    if (k.digest == digest) fail("API key ", name, " repeats key ", k.name);
  Key& k = keys_.emplace_back();
  k.name = std::move(name);
  k.max_concurrent = max_concurrent;
  k.digest = digest;
}

void ApiKeys::load_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("--api-key-file ", path, ": cannot open it");
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    const std::string where = path + ":" + std::to_string(number);
    std::string_view rest = trim(line);
    if (rest.empty() || rest.front() == '#') continue;
    std::vector<std::string_view> fields;
    while (!rest.empty()) {
      size_t end = 0;
      while (end < rest.size() && !is_space(rest[end])) ++end;
      fields.push_back(rest.substr(0, end));
      rest = trim(rest.substr(end));
    }
    std::string name = "key" + std::to_string(keys_.size() + 1);
    int32_t max_concurrent = 0;
    for (size_t i = 1; i < fields.size(); ++i) {
      const std::string_view f = fields[i];
      if (f.starts_with("name=") && f.size() > 5) {
        name = std::string(f.substr(5));
      } else if (f.starts_with("max_concurrent=")) {
        const std::string value(f.substr(15));
        char* end = nullptr;
        errno = 0;
        const long n = std::strtol(value.c_str(), &end, 10);
        if (value.empty() || *end != '\0' || errno != 0 || n < 0 || n > 1'000'000)
          fail(where, ": max_concurrent must be an integer in [0, 1000000], not \"", value, "\"");
        max_concurrent = int32_t(n);
      } else {
        fail(where, ": unknown field \"", f, "\" (expected KEY [name=NAME] [max_concurrent=N])");
      }
    }
    try {
      add(fields[0], std::move(name), max_concurrent);
    } catch (const Error& e) {
      fail(where, ": ", e.what());
    }
  }
  if (in.bad()) fail("--api-key-file ", path, ": read error");
}

ApiKeys::Key* ApiKeys::authenticate(std::string_view authorization) {
  authorization = trim(authorization);
  constexpr std::string_view kScheme = "bearer ";
  bool bearer = authorization.size() > kScheme.size();
  for (size_t i = 0; bearer && i < kScheme.size(); ++i)
    bearer = std::tolower(static_cast<unsigned char>(authorization[i])) == kScheme[i];
  const std::string_view token = bearer ? trim(authorization.substr(kScheme.size())) : std::string_view();
  // Hashing first makes every comparison 32 bytes long, whatever was sent; every
  // key is compared, so the time does not tell which one (if any) matched.
  const auto digest = sha256(token);
  Key* match = nullptr;
  for (Key& key : keys_)
    if (CRYPTO_memcmp(digest.data(), key.digest.data(), digest.size()) == 0) match = &key;
  return bearer && !token.empty() ? match : nullptr;
}

std::optional<ApiKeys::Lease> ApiKeys::acquire(Key& key) const {
  const int32_t limit = limit_of(key);
  const int32_t before = key.in_use.fetch_add(1);
  if (limit > 0 && before >= limit) {
    key.in_use.fetch_sub(1);
    return std::nullopt;
  }
  return Lease(&key);
}

std::string key_limit_message(const ApiKeys::Key& key, int32_t limit) {
  return "API key " + key.name + " already has " + std::to_string(limit) +
         " requests open, its limit; retry when one ends";
}

}  // namespace flint::server
