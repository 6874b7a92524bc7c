// A throwaway certificate authority for tests: EC P-256 keys, certificates with the names a
// test asks for (DNS names or IP addresses as subjectAltNames) and the validity it asks for
// (an expired one included). PEM text in memory; nothing touches the disk.
#pragma once

#include <string>
#include <vector>

namespace ferry::migrate::testing {

struct IssuedCert {
  std::string cert_pem, key_pem;
};

class TestPki {
 public:
  explicit TestPki(const std::string& name = "Ferry test CA");  // a fresh CA of that name
  const std::string& ca_pem() const { return ca_.cert_pem; }
  // A certificate for `names` signed by this CA, valid from now + not_before_s to now +
  // not_after_s (seconds; negative is the past). Aborts the test binary on an OpenSSL error.
  IssuedCert Issue(const std::vector<std::string>& names, long not_before_s = -3600, long not_after_s = 86400) const;

 private:
  IssuedCert ca_;
};

}  // namespace ferry::migrate::testing
