// TLS for flintd's listeners: the certificate, key and (for mutual TLS) client
// CA from --tls-cert, --tls-key and --tls-client-ca, read and checked once at
// start so that a wrong file is a clear error, not a failed handshake later.
#pragma once
#include <memory>
#include <optional>
#include <string>

#include <grpcpp/security/server_credentials.h>

namespace flint::server {

struct TlsConfig {
  std::string cert_path, key_path, client_ca_path;  // client_ca_path "": no client certificates asked for
  std::string cert_chain_pem, private_key_pem, client_ca_pem;
};

// nullopt when no TLS flag is set. Throws flint::Error when only some are, or a
// file is missing, is not PEM, or the key does not belong to the certificate.
std::optional<TlsConfig> load_tls(const std::string& cert_path, const std::string& key_path,
                                  const std::string& client_ca_path);

// gRPC's server credentials: TLS (requiring and verifying a client certificate
// when a client CA is set), or plaintext without a config.
std::shared_ptr<grpc::ServerCredentials> grpc_server_credentials(const std::optional<TlsConfig>& tls);

}  // namespace flint::server
