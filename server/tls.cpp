// TLS: the PEM files checked with OpenSSL, then handed to gRPC.
#include "server/tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fstream>
#include <sstream>

#include <grpcpp/security/server_credentials.h>

#include "common/error.h"

namespace flint::server {

namespace {

std::string read_file(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(flag, " ", path, ": cannot open it");
  std::ostringstream s;
  s << in.rdbuf();
  if (in.bad()) fail(flag, " ", path, ": read error");
  return s.str();
}

std::string openssl_error() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "no PEM block found";
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Bio = std::unique_ptr<BIO, BioFree>;

Bio memory_bio(const std::string& pem) { return Bio(BIO_new_mem_buf(pem.data(), int(pem.size()))); }

// The certificates in a PEM text: the first, and how many there are.
std::unique_ptr<X509, X509Free> read_certificates(const std::string& flag, const std::string& path,
                                                  const std::string& pem, int& count) {
  Bio bio = memory_bio(pem);
  std::unique_ptr<X509, X509Free> first(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!first) fail(flag, " ", path, ": not a PEM certificate (", openssl_error(), ")");
  count = 1;
  while (std::unique_ptr<X509, X509Free> next{PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)}) ++count;
  ERR_clear_error();  // the end of the text reads as an error
  return first;
}

}  // namespace

std::optional<TlsConfig> load_tls(const std::string& cert_path, const std::string& key_path,
                                  const std::string& client_ca_path) {
  if (cert_path.empty() && key_path.empty() && client_ca_path.empty()) return std::nullopt;
  if (cert_path.empty() || key_path.empty())
    fail("TLS needs both --tls-cert and --tls-key", client_ca_path.empty() ? "" : " (--tls-client-ca adds to them)");
  TlsConfig tls;
  tls.cert_path = cert_path, tls.key_path = key_path, tls.client_ca_path = client_ca_path;
  tls.cert_chain_pem = read_file("--tls-cert", cert_path);
  tls.private_key_pem = read_file("--tls-key", key_path);
  int count = 0;
  auto cert = read_certificates("--tls-cert", cert_path, tls.cert_chain_pem, count);
  Bio key_bio = memory_bio(tls.private_key_pem);
  std::unique_ptr<EVP_PKEY, KeyFree> key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  if (!key) fail("--tls-key ", key_path, ": not an unencrypted PEM private key (", openssl_error(), ")");
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    fail("--tls-key ", key_path, " is not the private key of the certificate in --tls-cert ", cert_path);
  }
  if (!client_ca_path.empty()) {
    tls.client_ca_pem = read_file("--tls-client-ca", client_ca_path);
    read_certificates("--tls-client-ca", client_ca_path, tls.client_ca_pem, count);
  }
  return tls;
}

std::shared_ptr<grpc::ServerCredentials> grpc_server_credentials(const std::optional<TlsConfig>& tls) {
  if (!tls) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options(tls->client_ca_pem.empty()
                                                ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                                : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = tls->client_ca_pem;
  options.pem_key_cert_pairs.push_back({tls->private_key_pem, tls->cert_chain_pem});
  return grpc::SslServerCredentials(options);
}

}  // namespace flint::server
