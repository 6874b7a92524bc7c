#include "ferry/vmhost/requests.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "test_pki.h"

namespace ferry::vmhost {
namespace {

using nlohmann::json;

DecodeLimits Limits() {
  DecodeLimits l;
  l.guest_mem_bytes = 256ull << 20;
  l.vcpus = 2;
  l.host_mem_available = 8ull << 30;
  l.generation = 5;
  return l;
}

Status Decode(const json& j) {
  auto r = DecodeRequest(j, Limits());
  return r.ok() ? Status::Ok() : r.status();
}

TEST(Requests, DecodesTypedFields) {
  auto r = DecodeRequest({{"op", "migrate"}, {"to", "127.0.0.1:4410"}, {"streams", 4}, {"compress", "none"},
                          {"downtime_ms", 12.5}, {"xbzrle_cache", 1 << 20}, {"verify", true}},
                         Limits());
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->event, Event::kMigrate);
  const auto& m = std::get<MigrateRequest>(r->body);
  EXPECT_EQ(m.peer.to, "127.0.0.1:4410");
  EXPECT_EQ(m.peer.streams, 4u);
  EXPECT_FALSE(m.peer.compress);
  EXPECT_DOUBLE_EQ(m.downtime_ms, 12.5);
  EXPECT_TRUE(m.verify);
  auto resume = DecodeRequest({{"op", "resume"}, {"force", true}}, Limits());
  ASSERT_TRUE(resume.ok());
  EXPECT_EQ(resume->event, Event::kForceResume);
  auto rep = DecodeRequest({{"op", "replicate"}, {"to", "127.0.0.1:1"}, {"interval_ms", 25.0}}, Limits());
  ASSERT_TRUE(rep.ok()) << rep.status().message();
  EXPECT_EQ(std::get<ReplicateRequest>(rep->body).interval_ms, 25u);
}

TEST(Requests, RefusesWrongTypesMissingNegativeNonFiniteAndHugeFields) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  const json bad[] = {
      json::array(),
      json("status"),
      {{"op", 7}},
      {{"op", "nope"}},
      {{"op", "verify"}, {"timeout_ms", "x"}},
      {{"op", "verify"}, {"timeout_ms", -1}},
      {{"op", "verify"}, {"timeout_ms", nullptr}},
      {{"op", "verify"}, {"timeout_ms", 1e300}},
      {{"op", "verify"}, {"timeout_ms", 1.5}},
      {{"op", "verify"}, {"timout_ms", 5}},
      {{"op", "dirty_rate"}, {"seconds", nan}},
      {{"op", "dirty_rate"}, {"seconds", inf}},
      {{"op", "dirty_rate"}, {"seconds", 0}},
      {{"op", "throttle"}},
      {{"op", "throttle"}, {"percent", 100}},
      {{"op", "throttle"}, {"percent", 10}, {"vcpu", 2}},
      {{"op", "throttle"}, {"percent", 10}, {"vcpu", -2}},
      {{"op", "snapshot"}},
      {{"op", "snapshot"}, {"file", ""}},
      {{"op", "snapshot"}, {"file", 3}},
      {{"op", "snapshot"}, {"file", "/tmp/x"}, {"stop", "yes"}},
      {{"op", "migrate"}},
      {{"op", "migrate"}, {"to", "nowhere"}},
      {{"op", "migrate"}, {"to", "127.0.0.1:99999"}},
      {{"op", "migrate"}, {"to", "127.0.0.1:1"}, {"streams", 0}},
      {{"op", "migrate"}, {"to", "127.0.0.1:1"}, {"streams", 17}},
      {{"op", "migrate"}, {"to", "127.0.0.1:1"}, {"compress", "lz4"}},
      {{"op", "migrate"}, {"to", "127.0.0.1:1"}, {"transport", "udp"}},
      {{"op", "migrate"}, {"to", "127.0.0.1:1"}, {"key", "zz"}},
      {{"op", "migrate"}, {"to", "127.0.0.1:1"}, {"xbzrle_cache", 1ull << 40}},
      {{"op", "migrate"}, {"to", "127.0.0.1:1"}, {"xbzrle_cache", 512ull << 20}},
      {{"op", "migrate"}, {"to", "127.0.0.1:1"}, {"downtime_ms", nullptr}},
      {{"op", "migrate"}, {"to", "127.0.0.1:1"}, {"downtime_ms", -3}},
      {{"op", "replicate"}, {"to", "127.0.0.1:1"}, {"interval_ms", 0}},
      {{"op", "replicate"}, {"to", "127.0.0.1:1"}, {"generation", -1}},
      {{"op", "set_generation"}},
      {{"op", "set_generation"}, {"generation", 4}},
      {{"op", "set_generation"}, {"generation", 1ull << 60}},
      {{"op", "handover"}, {"generation", 5}},
      {{"op", "promote"}, {"force", 1}},
      {{"op", "pause"}, {"extra", true}},
  };
  for (const auto& j : bad) {
    Status st = Decode(j);
    EXPECT_FALSE(st.ok()) << j.dump();
    EXPECT_EQ(st.code(), ErrorCode::kInvalidArgument) << j.dump();
  }
}

// The default XBZRLE cache (64 MiB) fits the VM: a 32 MiB guest migrates with a 32 MiB cache,
// and only a cache asked for beyond the VM's RAM is refused.
TEST(Requests, TheDefaultXbzrleCacheIsCutToTheVmsRam) {
  DecodeLimits small = Limits();
  small.guest_mem_bytes = 32ull << 20;
  auto r = DecodeRequest({{"op", "migrate"}, {"to", "127.0.0.1:1"}}, small);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(std::get<MigrateRequest>(r->body).xbzrle_cache, 32ull << 20);
  auto big = DecodeRequest({{"op", "migrate"}, {"to", "127.0.0.1:1"}}, Limits());
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(std::get<MigrateRequest>(big->body).xbzrle_cache, 64ull << 20);
  auto asked = DecodeRequest({{"op", "migrate"}, {"to", "127.0.0.1:1"}, {"xbzrle_cache", 64ull << 20}}, small);
  ASSERT_FALSE(asked.ok());
  EXPECT_NE(asked.status().message().find("more than this VM's RAM"), std::string::npos) << asked.status().message();
}

TEST(Requests, EveryOpDecodesWithItsDefaults) {
  for (const auto& op : ApiOps()) {
    json j = {{"op", op}};
    if (op == "snapshot") j["file"] = "/tmp/s";
    if (op == "throttle") j["percent"] = 0;
    if (op == "migrate" || op == "replicate") j["to"] = "127.0.0.1:4410";
    if (op == "set_generation") j["generation"] = 5;
    if (op == "lease") j["ttl_ms"] = 1000;
    EXPECT_TRUE(Decode(j).ok()) << op << ": " << Decode(j).message();
  }
}

TEST(Requests, KeysRoundTripThroughHex) {
  std::vector<uint8_t> bytes;
  for (int i = 0; i < 32; ++i) bytes.push_back(static_cast<uint8_t>(i * 37));
  auto key = KeyFromHex(KeyToHex(bytes));
  ASSERT_TRUE(key.ok());
  EXPECT_EQ(key->bytes, bytes);
  EXPECT_FALSE(KeyFromHex("abc").ok());
  EXPECT_FALSE(KeyFromHex(std::string(32, 'g')).ok());
  EXPECT_FALSE(KeyFromHex("0011").ok()) << "too short";
}

}  // namespace
}  // namespace ferry::vmhost

namespace ferry::vmhost {
namespace {

TEST(Requests, SecurityFieldsRoundTripAndContradictionsAreRefused) {
  migrate::testing::TestPki pki;
  auto cert = pki.Issue({"host-b"});
  migrate::Security sent;
  sent.certs = migrate::Certificates{cert.cert_pem, cert.key_pem, pki.ca_pem(), "host-b"};
  json j = {{"op", "replicate"}, {"to", "127.0.0.1:4410"}};
  SecurityToRequest(sent, &j);
  auto r = DecodeRequest(j, Limits());
  ASSERT_TRUE(r.ok()) << r.status().message();
  const auto& got = std::get<ReplicateRequest>(r->body).peer.security;
  ASSERT_TRUE(got.certs.has_value());
  EXPECT_EQ(got.certs->peer_name, "host-b");
  EXPECT_EQ(got.mode(), migrate::SecurityMode::kCertificates);
  // Two of the three PEM texts, a key that is not the certificate's, both kinds at once,
  // --insecure with a key, a peer name without certificates: refused.
  json partial = j;
  partial.erase("tls_ca");
  EXPECT_FALSE(Decode(partial).ok());
  json wrong_key = j;
  wrong_key["tls_key"] = pki.Issue({"host-c"}).key_pem;
  EXPECT_NE(Decode(wrong_key).message().find("does not belong"), std::string::npos) << Decode(wrong_key).message();
  json both = j;
  both["key"] = KeyToHex(std::vector<uint8_t>(32, 7));
  EXPECT_FALSE(Decode(both).ok());
  json insecure_keyed = {{"op", "migrate"}, {"to", "127.0.0.1:1"}, {"key", KeyToHex(std::vector<uint8_t>(32, 7))}, {"insecure", true}};
  EXPECT_FALSE(Decode(insecure_keyed).ok());
  EXPECT_FALSE(Decode({{"op", "migrate"}, {"to", "127.0.0.1:1"}, {"tls_peer_name", "host-b"}}).ok());
  EXPECT_FALSE(Decode({{"op", "migrate"}, {"to", "127.0.0.1:1"}, {"insecure", "yes"}}).ok());
  auto plain = DecodeRequest({{"op", "migrate"}, {"to", "127.0.0.1:1"}, {"insecure", true}}, Limits());
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(std::get<MigrateRequest>(plain->body).peer.security.mode(), migrate::SecurityMode::kInsecure);
}

TEST(Requests, ReplicateStopTakesAKeepStandbyFlagAndNothingElse) {
  auto r = DecodeRequest({{"op", "replicate_stop"}, {"keep_standby", true}}, Limits());
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_TRUE(std::get<ReplicateStopRequest>(r->body).keep_standby);
  r = DecodeRequest({{"op", "replicate_stop"}}, Limits());
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(std::get<ReplicateStopRequest>(r->body).keep_standby);
  EXPECT_FALSE(Decode({{"op", "replicate_stop"}, {"keep_standby", "yes"}}).ok());
  EXPECT_FALSE(Decode({{"op", "replicate_stop"}, {"keep_standbys", true}}).ok());
}

}  // namespace
}  // namespace ferry::vmhost

namespace ferry::vmhost {
namespace {

TEST(Requests, MigrationModeIsAnEnumAndPostcopyAfterBelongsToAuto) {
  auto r = DecodeRequest({{"op", "migrate"}, {"to", "127.0.0.1:4410"}, {"mode", "auto"}, {"postcopy_after_ms", 1500}},
                         DecodeLimits{});
  ASSERT_TRUE(r.ok()) << r.status().message();
  const auto& m = std::get<MigrateRequest>(r->body);
  EXPECT_EQ(m.mode, migrate::MigrationMode::kAuto);
  EXPECT_EQ(m.postcopy_after_ms, 1500u);
  auto p = DecodeRequest({{"op", "migrate"}, {"to", "127.0.0.1:4410"}, {"mode", "postcopy"}}, DecodeLimits{});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(std::get<MigrateRequest>(p->body).mode, migrate::MigrationMode::kPostcopy);
  auto bad = DecodeRequest({{"op", "migrate"}, {"to", "127.0.0.1:4410"}, {"mode", "fast"}}, DecodeLimits{});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("precopy or postcopy or auto"), std::string::npos) << bad.status().message();
  EXPECT_FALSE(DecodeRequest({{"op", "migrate"}, {"to", "127.0.0.1:4410"}, {"mode", 3}}, DecodeLimits{}).ok());
  auto stray = DecodeRequest({{"op", "migrate"}, {"to", "127.0.0.1:4410"}, {"postcopy_after_ms", 10}}, DecodeLimits{});
  ASSERT_FALSE(stray.ok());
  EXPECT_NE(stray.status().message().find("auto"), std::string::npos) << stray.status().message();
  for (auto m : {migrate::MigrationMode::kPrecopy, migrate::MigrationMode::kPostcopy, migrate::MigrationMode::kAuto}) {
    EXPECT_EQ(migrate::ParseMigrationMode(migrate::MigrationModeName(m)), m);
  }
}

}  // namespace
}  // namespace ferry::vmhost
