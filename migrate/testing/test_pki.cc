#include "test_pki.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <arpa/inet.h>

#include <cstdio>
#include <cstdlib>

namespace ferry::migrate::testing {
namespace {

void Check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "TestPki: %s failed\n", what);
  std::abort();
}

std::string Pem(X509* cert) {
  BIO* b = BIO_new(BIO_s_mem());
  Check(b && PEM_write_bio_X509(b, cert) == 1, "PEM_write_bio_X509");
  char* data = nullptr;
  const long n = BIO_get_mem_data(b, &data);
  std::string out(data, static_cast<size_t>(n));
  BIO_free(b);
  return out;
}

std::string Pem(EVP_PKEY* key) {
  BIO* b = BIO_new(BIO_s_mem());
  Check(b && PEM_write_bio_PrivateKey(b, key, nullptr, nullptr, 0, nullptr, nullptr) == 1, "PEM_write_bio_PrivateKey");
  char* data = nullptr;
  const long n = BIO_get_mem_data(b, &data);
  std::string out(data, static_cast<size_t>(n));
  BIO_free(b);
  return out;
}

void AddExt(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  Check(ext != nullptr, "X509V3_EXT_conf_nid");
  Check(X509_add_ext(cert, ext, -1) == 1, "X509_add_ext");
  X509_EXTENSION_free(ext);
}

// Signs a certificate for `cn` with `key`'s public half, by `issuer_key` (itself when null).
IssuedCert Make(const std::string& cn, const std::vector<std::string>& names, bool ca, long from_s, long to_s,
                const IssuedCert* issuer) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  Check(key != nullptr, "EVP_EC_gen");
  X509* cert = X509_new();
  Check(cert != nullptr, "X509_new");
  X509_set_version(cert, 2);
  static long serial = 1;
  ASN1_INTEGER_set(X509_get_serialNumber(cert), ++serial);
  X509_gmtime_adj(X509_getm_notBefore(cert), from_s);
  X509_gmtime_adj(X509_getm_notAfter(cert), to_s);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509* issuer_cert = cert;
  EVP_PKEY* issuer_key = key;
  if (issuer) {
    BIO* cb = BIO_new_mem_buf(issuer->cert_pem.data(), static_cast<int>(issuer->cert_pem.size()));
    BIO* kb = BIO_new_mem_buf(issuer->key_pem.data(), static_cast<int>(issuer->key_pem.size()));
    issuer_cert = PEM_read_bio_X509(cb, nullptr, nullptr, nullptr);
    issuer_key = PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr);
    BIO_free(cb);
    BIO_free(kb);
    Check(issuer_cert && issuer_key, "reading the issuer");
  }
  X509_set_issuer_name(cert, X509_get_subject_name(issuer_cert));
  if (ca) {
    AddExt(cert, issuer_cert, NID_basic_constraints, "critical,CA:TRUE");
    AddExt(cert, issuer_cert, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    std::string san;
    for (const auto& n : names) {
      in6_addr probe{};
      const bool ip = ::inet_pton(AF_INET, n.c_str(), &probe) == 1 || ::inet_pton(AF_INET6, n.c_str(), &probe) == 1;
      san += (san.empty() ? "" : ",") + std::string(ip ? "IP:" : "DNS:") + n;
    }
    AddExt(cert, issuer_cert, NID_basic_constraints, "critical,CA:FALSE");
    AddExt(cert, issuer_cert, NID_key_usage, "critical,digitalSignature");
    AddExt(cert, issuer_cert, NID_ext_key_usage, "serverAuth,clientAuth");
    if (!san.empty()) AddExt(cert, issuer_cert, NID_subject_alt_name, san);
  }
  Check(X509_sign(cert, issuer_key, EVP_sha256()) > 0, "X509_sign");
  IssuedCert out{Pem(cert), Pem(key)};
  if (issuer) {
    X509_free(issuer_cert);
    EVP_PKEY_free(issuer_key);
  }
  X509_free(cert);
  EVP_PKEY_free(key);
  return out;
}

}  // namespace

TestPki::TestPki(const std::string& name) : ca_(Make(name, {}, true, -3600, 7 * 86400, nullptr)) {}

IssuedCert TestPki::Issue(const std::vector<std::string>& names, long not_before_s, long not_after_s) const {
  return Make(names.empty() ? "nobody" : names.front(), names, false, not_before_s, not_after_s, &ca_);
}

}  // namespace ferry::migrate::testing
