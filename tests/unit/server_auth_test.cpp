// ApiKeys (server/auth.h): the key file, lookup, and per-key limits; and the
// TLS files' checks (server/tls.h) on certificates made here with OpenSSL.
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "common/error.h"
#include "server/auth.h"
#include "server/tls.h"

namespace flint::server {
namespace {

std::filesystem::path temp_file(const std::string& name, const std::string& text) {
  const auto path = std::filesystem::temp_directory_path() / ("flint-auth-test-" + std::to_string(::getpid()) + "-" + name);
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ApiKeys, NoKeysMeansDisabled) {
  ApiKeys keys;
  EXPECT_FALSE(keys.enabled());
  EXPECT_EQ(keys.authenticate("Bearer anything"), nullptr);
}

TEST(ApiKeys, AuthenticatesOnlyBearerWithAKnownKey) {
  ApiKeys keys;
  keys.add("sk-one", "one");
  keys.add("sk-two", "two");
  ASSERT_NE(keys.authenticate("Bearer sk-two"), nullptr);
  EXPECT_EQ(keys.authenticate("Bearer sk-two")->name, "two");
  EXPECT_EQ(keys.authenticate("bearer sk-one")->name, "one");  // the scheme is case-insensitive
  EXPECT_EQ(keys.authenticate("  Bearer   sk-one  ")->name, "one");
  for (const char* bad : {"", "Bearer", "Bearer ", "sk-one", "Basic sk-one", "Bearer sk-on", "Bearer sk-one1",
                          "Bearer SK-ONE", "Bearersk-one"})
    EXPECT_EQ(keys.authenticate(bad), nullptr) << bad;
}

TEST(ApiKeys, RefusesEmptyRepeatedAndWhitespaceKeys) {
  ApiKeys keys;
  keys.add("sk-a", "a");
  EXPECT_NE(error_of([&] { keys.add("", "empty"); }), "");
  EXPECT_NE(error_of([&] { keys.add("sk a", "space"); }).find("whitespace"), std::string::npos);
  EXPECT_NE(error_of([&] { keys.add("sk-a", "again"); }).find("repeats key a"), std::string::npos);
  EXPECT_EQ(keys.size(), 1u);
}

TEST(ApiKeys, LoadsAFileWithNamesLimitsAndComments) {
  const auto path = temp_file("keys", "# team keys\n\nsk-alpha name=alpha max_concurrent=2\n  sk-beta\t name=beta \nsk-gamma\n");
  ApiKeys keys;
  keys.set_default_max_concurrent(5);
  keys.load_file(path.string());
  ASSERT_EQ(keys.size(), 3u);
  ApiKeys::Key* alpha = keys.authenticate("Bearer sk-alpha");
  ApiKeys::Key* beta = keys.authenticate("Bearer sk-beta");
  ApiKeys::Key* gamma = keys.authenticate("Bearer sk-gamma");
  ASSERT_TRUE(alpha && beta && gamma);
  EXPECT_EQ(alpha->name, "alpha");
  EXPECT_EQ(keys.limit_of(*alpha), 2);
  EXPECT_EQ(keys.limit_of(*beta), 5);  // the default
  EXPECT_EQ(gamma->name, "key3");
  std::filesystem::remove(path);
}

TEST(ApiKeys, FileErrorsNameTheLine) {
  const std::pair<const char*, const char*> cases[] = {
      {"sk-a\nsk-b max_concurrent=x\n", ":2: max_concurrent must be an integer"},
      {"sk-a\nsk-b max_concurrent=-1\n", ":2: max_concurrent"},
      {"sk-a colour=red\n", ":1: unknown field \"colour=red\""},
      {"sk-a\n# c\nsk-a\n", ":3: API key key2 repeats key key1"},
  };
  for (const auto& [text, expected] : cases) {
    const auto path = temp_file("bad-keys", text);
    ApiKeys keys;
    const std::string error = error_of([&] { keys.load_file(path.string()); });
    EXPECT_NE(error.find(path.string() + expected), std::string::npos) << text << " gave: " << error;
    std::filesystem::remove(path);
  }
  ApiKeys keys;
  EXPECT_NE(error_of([&] { keys.load_file("/nonexistent/flint-keys"); }).find("cannot open"), std::string::npos);
}

TEST(ApiKeys, LimitsOpenRequestsPerKeyAndLeasesGiveThemBack) {
  ApiKeys keys;
  keys.add("sk-a", "a", 2);
  keys.add("sk-b", "b");  // no limit
  ApiKeys::Key& a = *keys.authenticate("Bearer sk-a");
  ApiKeys::Key& b = *keys.authenticate("Bearer sk-b");
  auto first = keys.acquire(a);
  auto second = keys.acquire(a);
  ASSERT_TRUE(first && second);
  EXPECT_FALSE(keys.acquire(a));
  EXPECT_EQ(a.in_use.load(), 2);  // the refused one is not counted
  std::vector<ApiKeys::Lease> many;
  for (int i = 0; i < 100; ++i) many.push_back(std::move(*keys.acquire(b)));
  EXPECT_EQ(b.in_use.load(), 100);
  many.clear();
  EXPECT_EQ(b.in_use.load(), 0);
  {
    ApiKeys::Lease moved = std::move(*first);  // a moved-from lease releases nothing
    first.reset();
    EXPECT_EQ(a.in_use.load(), 2);
  }
  EXPECT_EQ(a.in_use.load(), 1);
  EXPECT_TRUE(keys.acquire(a));
  EXPECT_NE(key_limit_message(a, 2).find("API key a already has 2 requests open"), std::string::npos);
}

// ---- TLS files

struct KeyPair {
  std::string cert_pem, key_pem;
};

// A self-signed P-256 certificate for `name`.
KeyPair make_self_signed(const char* name) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* cert = X509_new();
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
  X509_set_pubkey(cert, key);
  X509_NAME* subject = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(name), -1, -1, 0);
  X509_set_issuer_name(cert, subject);
  X509_sign(cert, key, EVP_sha256());
  auto to_pem = [](auto write) {
    BIO* bio = BIO_new(BIO_s_mem());
    write(bio);
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio, &data);
    std::string pem(data, size_t(n));
    BIO_free(bio);
    return pem;
  };
  KeyPair pair{to_pem([&](BIO* b) { PEM_write_bio_X509(b, cert); }),
               to_pem([&](BIO* b) { PEM_write_bio_PrivateKey(b, key, nullptr, nullptr, 0, nullptr, nullptr); })};
  X509_free(cert);
  EVP_PKEY_free(key);
  return pair;
}

TEST(Tls, NoFlagsMeansPlaintext) { EXPECT_FALSE(load_tls("", "", "")); }

TEST(Tls, LoadsAMatchingCertificateAndKeyAndAClientCa) {
  const KeyPair server = make_self_signed("server"), ca = make_self_signed("ca");
  const auto cert = temp_file("cert.pem", server.cert_pem), key = temp_file("key.pem", server.key_pem),
             ca_file = temp_file("ca.pem", ca.cert_pem + ca.cert_pem);
  auto tls = load_tls(cert.string(), key.string(), ca_file.string());
  ASSERT_TRUE(tls);
  EXPECT_EQ(tls->cert_chain_pem, server.cert_pem);
  EXPECT_EQ(tls->private_key_pem, server.key_pem);
  EXPECT_EQ(tls->client_ca_path, ca_file.string());
  EXPECT_NE(grpc_server_credentials(tls), nullptr);
  for (const auto& p : {cert, key, ca_file}) std::filesystem::remove(p);
}

TEST(Tls, ErrorsSayWhichFileIsWrong) {
  const KeyPair server = make_self_signed("server"), other = make_self_signed("other");
  const auto cert = temp_file("cert.pem", server.cert_pem), key = temp_file("key.pem", server.key_pem),
             other_key = temp_file("other-key.pem", other.key_pem), junk = temp_file("junk.pem", "-----BEGIN nonsense");
  auto error = [](auto... args) { return error_of([&] { load_tls(args...); }); };
  EXPECT_NE(error(cert.string(), std::string(), std::string()).find("both --tls-cert and --tls-key"), std::string::npos);
  EXPECT_NE(error(std::string(), key.string(), std::string()).find("both --tls-cert and --tls-key"), std::string::npos);
  EXPECT_NE(error(std::string(), std::string(), cert.string()).find("both"), std::string::npos);
  EXPECT_NE(error(std::string("/nonexistent.pem"), key.string(), std::string()).find("--tls-cert /nonexistent.pem: cannot open"),
            std::string::npos);
  EXPECT_NE(error(junk.string(), key.string(), std::string()).find("not a PEM certificate"), std::string::npos);
  EXPECT_NE(error(cert.string(), junk.string(), std::string()).find("not an unencrypted PEM private key"), std::string::npos);
  EXPECT_NE(error(cert.string(), other_key.string(), std::string()).find("is not the private key of the certificate"),
            std::string::npos);
  EXPECT_NE(error(cert.string(), key.string(), junk.string()).find("--tls-client-ca"), std::string::npos);
  for (const auto& p : {cert, key, other_key, junk}) std::filesystem::remove(p);
}

}  // namespace
}  // namespace flint::server
