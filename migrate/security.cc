#include "ferry/migrate/security.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <cerrno>
#include <fstream>
#include <iterator>
#include <memory>

namespace ferry::migrate {
namespace {

constexpr size_t kMaxPemBytes = 1 << 20;

struct BioFree { void operator()(BIO* b) const { BIO_free(b); } };
struct X509Free { void operator()(X509* x) const { X509_free(x); } };
struct PkeyFree { void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); } };
using BioPtr = std::unique_ptr<BIO, BioFree>;

BioPtr Mem(const std::string& s) { return BioPtr(BIO_new_mem_buf(s.data(), static_cast<int>(s.size()))); }

Result<std::string> ReadPem(const std::string& path, bool secret) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return ErrnoError("TLS file " + path, errno);
  if (!S_ISREG(st.st_mode)) return InvalidArgument("TLS file " + path + " is not a regular file");
  if (secret && (st.st_mode & 077) != 0) {
    return InvalidArgument("TLS private key " + path + " is accessible by group or others; chmod 600 it");
  }
  if (static_cast<size_t>(st.st_size) > kMaxPemBytes) return InvalidArgument("TLS file " + path + " is larger than 1 MiB");
  std::ifstream in(path, std::ios::binary);
  if (!in) return ErrnoError("TLS file " + path, errno);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// "notAfter" of a certificate as text.
std::string NotAfter(const X509* x) {
  BioPtr b(BIO_new(BIO_s_mem()));
  if (!b || !ASN1_TIME_print(b.get(), X509_get0_notAfter(x))) return "?";
  char* data = nullptr;
  const long n = BIO_get_mem_data(b.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

}  // namespace

SecurityMode Security::mode() const {
  if (key) return SecurityMode::kKey;
  if (certs) return SecurityMode::kCertificates;
  return insecure ? SecurityMode::kInsecure : SecurityMode::kLocalOnly;
}

std::string Security::Describe() const {
  switch (mode()) {
    case SecurityMode::kKey: return "TLS 1.3, shared key";
    case SecurityMode::kCertificates: return "TLS 1.3, certificates";
    case SecurityMode::kInsecure: return "plaintext, by --insecure";
    case SecurityMode::kLocalOnly: break;
  }
  return "plaintext, peers on this host only";
}

Result<Certificates> ParseCertificates(std::string cert_pem, std::string key_pem, std::string ca_pem, std::string peer_name) {
  if (peer_name.size() > 253) return InvalidArgument("--tls-peer-name is longer than 253 characters");
  for (char c : peer_name) {
    if (c <= ' ' || c == 0x7f) return InvalidArgument("--tls-peer-name holds a space or a control character");
  }
  ERR_clear_error();
  auto cb = Mem(cert_pem), kb = Mem(key_pem), ab = Mem(ca_pem);
  if (!cb || !kb || !ab) return Internal("TLS: out of memory");
  std::unique_ptr<X509, X509Free> cert(PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr));
  if (!cert) return InvalidArgument("the TLS certificate is not a PEM certificate");
  std::unique_ptr<EVP_PKEY, PkeyFree> key(PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr));
  if (!key) return InvalidArgument("the TLS private key is not an unencrypted PEM private key");
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return InvalidArgument("the TLS private key does not belong to the certificate");
  }
  if (X509_cmp_current_time(X509_get0_notAfter(cert.get())) <= 0) {
    return InvalidArgument("the TLS certificate expired (not after " + NotAfter(cert.get()) + ")");
  }
  if (X509_cmp_current_time(X509_get0_notBefore(cert.get())) >= 0) {
    return InvalidArgument("the TLS certificate is not valid yet");
  }
  int cas = 0;
  while (X509* ca = PEM_read_bio_X509(ab.get(), nullptr, nullptr, nullptr)) {
    X509_free(ca);
    ++cas;
  }
  ERR_clear_error();  // the end of the PEM text
  if (cas == 0) return InvalidArgument("the TLS CA file holds no PEM certificate");
  return Certificates{std::move(cert_pem), std::move(key_pem), std::move(ca_pem), std::move(peer_name)};
}

Result<Certificates> LoadCertificates(const std::string& cert_file, const std::string& key_file, const std::string& ca_file,
                                      const std::string& peer_name) {
  if (cert_file.empty() || key_file.empty() || ca_file.empty()) {
    return InvalidArgument("certificates need all three of --tls-cert, --tls-key and --tls-ca");
  }
  FERRY_ASSIGN_OR_RETURN(std::string cert, ReadPem(cert_file, false));
  FERRY_ASSIGN_OR_RETURN(std::string key, ReadPem(key_file, true));
  FERRY_ASSIGN_OR_RETURN(std::string ca, ReadPem(ca_file, false));
  auto parsed = ParseCertificates(std::move(cert), std::move(key), std::move(ca), peer_name);
  if (!parsed.ok()) {
    return InvalidArgument(parsed.status().message() + " (--tls-cert " + cert_file + ", --tls-key " + key_file +
                           ", --tls-ca " + ca_file + ")");
  }
  return parsed;
}

Status CheckSecurity(const Security& s) {
  if (s.key && s.certs) return InvalidArgument("give either --key or certificates (--tls-cert/--tls-key/--tls-ca), not both");
  if (s.insecure && s.tls()) return InvalidArgument("--insecure contradicts --key and certificates: choose one");
  return Status::Ok();
}

}  // namespace ferry::migrate
