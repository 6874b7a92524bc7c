// corosync.conf rendering and validation, and the authkey and config writers (label unit).
#include "ferry/ha/corosync_conf.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace ferry::ha {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

CorosyncSpec ThreeNodes() {
  CorosyncSpec s;
  s.cluster_name = "prod-1";
  s.nodes = {{1, "h0", "127.33.0.1"}, {2, "h1", "127.33.0.2"}, {3, "h2", "127.33.0.3"}};
  return s;
}

// The error's message for a spec that must be refused ("" if it was accepted).
std::string Refusal(const CorosyncSpec& s) {
  auto r = RenderCorosyncConf(s);
  if (r.ok()) return "";
  EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
  return r.status().message();
}

TEST(CorosyncConf, ThreeNodesRenderWithCryptoOnByDefault) {
  auto r = RenderCorosyncConf(ThreeNodes());
  ASSERT_TRUE(r.ok()) << r.status().message();
  const std::string& t = r->text;
  EXPECT_TRUE(r->warnings.empty());
  EXPECT_THAT(t, HasSubstr("  cluster_name: prod-1\n"));
  EXPECT_THAT(t, HasSubstr("  transport: knet\n"));
  EXPECT_THAT(t, HasSubstr("  crypto_cipher: aes256\n"));
  EXPECT_THAT(t, HasSubstr("  crypto_hash: sha256\n"));
  EXPECT_THAT(t, HasSubstr("  keyfile: /etc/corosync/authkey\n"));
  EXPECT_THAT(t, HasSubstr("  token: 1000\n  token_coefficient: 650\n"));
  EXPECT_THAT(t, Not(HasSubstr("consensus")));
  EXPECT_THAT(t, Not(HasSubstr("knet_ping")));
  EXPECT_THAT(t, Not(HasSubstr("WARNING")));
  EXPECT_THAT(t, HasSubstr("  node {\n    nodeid: 1\n    name: h0\n    ring0_addr: 127.33.0.1\n  }\n"
                           "  node {\n    nodeid: 2\n    name: h1\n    ring0_addr: 127.33.0.2\n  }\n"
                           "  node {\n    nodeid: 3\n    name: h2\n    ring0_addr: 127.33.0.3\n  }\n"));
  EXPECT_THAT(t, HasSubstr("provider: corosync_votequorum"));
  EXPECT_THAT(t, HasSubstr("  to_syslog: yes\n"));
}

TEST(CorosyncConf, TimersKeyfileAndLoggingAsGiven) {
  CorosyncSpec s = ThreeNodes();
  s.token_ms = 300;
  s.token_coefficient_ms = 0;
  s.consensus_ms = 400;
  s.knet_ping_interval_ms = 100;
  s.knet_ping_timeout_ms = 1000;
  s.keyfile = "/tmp/x/authkey";
  s.cipher = CorosyncCipher::kAes128;
  s.hash = CorosyncHash::kSha512;
  s.log = CorosyncLog::kStderr;
  auto r = RenderCorosyncConf(s);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_THAT(r->text, HasSubstr("  token: 300\n  token_coefficient: 0\n  consensus: 400\n"));
  EXPECT_THAT(r->text, HasSubstr("    knet_ping_interval: 100\n    knet_ping_timeout: 1000\n"));
  EXPECT_THAT(r->text, HasSubstr("  crypto_cipher: aes128\n  crypto_hash: sha512\n  keyfile: /tmp/x/authkey\n"));
  EXPECT_THAT(r->text, HasSubstr("  to_stderr: yes\n"));
  EXPECT_THAT(r->text, HasSubstr("  to_syslog: no\n"));
}

TEST(CorosyncConf, CryptoOffOnlyWhenAskedAndThenWarned) {
  CorosyncSpec s = ThreeNodes();
  s.cipher = CorosyncCipher::kNone;
  s.hash = CorosyncHash::kNone;
  EXPECT_THAT(Refusal(s), HasSubstr("allow_no_crypto"));
  s.cipher = CorosyncCipher::kAes256;
  EXPECT_THAT(Refusal(s), HasSubstr("allow_no_crypto"));  // a cipher without a hash: still off
  s.allow_no_crypto = true;
  EXPECT_THAT(Refusal(s), HasSubstr("needs a crypto_hash"));  // corosync refuses it too

  s.cipher = CorosyncCipher::kNone;
  auto r = RenderCorosyncConf(s);
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->warnings.size(), 2u);
  EXPECT_THAT(r->warnings[0], HasSubstr("not authenticated"));
  EXPECT_THAT(r->warnings[1], HasSubstr("in the clear"));
  EXPECT_THAT(r->text, HasSubstr("# WARNING: crypto_hash is none"));
  EXPECT_THAT(r->text, HasSubstr("  crypto_cipher: none\n  crypto_hash: none\n"));
  EXPECT_THAT(r->text, Not(HasSubstr("keyfile")));

  s.hash = CorosyncHash::kSha256;  // authenticated, not encrypted: allowed, one warning
  r = RenderCorosyncConf(s);
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->warnings.size(), 1u);
  EXPECT_THAT(r->text, HasSubstr("keyfile: /etc/corosync/authkey"));
}

TEST(CorosyncConf, RefusesDuplicateAndMalformedNodes) {
  CorosyncSpec s = ThreeNodes();
  s.nodes[2].name = "h0";
  EXPECT_THAT(Refusal(s), HasSubstr("node name h0 is used twice"));
  s = ThreeNodes();
  s.nodes[2].nodeid = 1;
  EXPECT_THAT(Refusal(s), HasSubstr("nodeid 1 is used twice"));
  s = ThreeNodes();
  s.nodes[2].ring0_addr = "127.33.0.1";
  EXPECT_THAT(Refusal(s), HasSubstr("ring0_addr 127.33.0.1 is used twice"));
  s = ThreeNodes();
  s.nodes.clear();
  EXPECT_THAT(Refusal(s), HasSubstr("nodelist is empty"));
  for (const char* bad : {"", "h 1", "h{", "h:1", "#h"}) {
    s = ThreeNodes();
    s.nodes[1].name = bad;
    EXPECT_THAT(Refusal(s), HasSubstr("the name must be")) << bad;
  }
  for (uint32_t id : {0u, 65536u}) {
    s = ThreeNodes();
    s.nodes[1].nodeid = id;
    EXPECT_THAT(Refusal(s), HasSubstr("out of range 1..65535")) << id;
  }
  for (const char* bad : {"", "127.33.0.300", "host.example", "127.33.0.2 ", "127.33.0.2/24"}) {
    s = ThreeNodes();
    s.nodes[1].ring0_addr = bad;
    EXPECT_THAT(Refusal(s), HasSubstr("is not an IPv4 or IPv6 address")) << bad;
  }
  s = ThreeNodes();
  s.nodes[1].ring0_addr = "fd00::2";
  EXPECT_THAT(Refusal(s), HasSubstr("mixes IPv4 and IPv6"));
  for (auto& n : s.nodes) n.ring0_addr = "fd00::" + std::to_string(n.nodeid);
  EXPECT_EQ(Refusal(s), "");
}

TEST(CorosyncConf, RefusesValuesOutOfRange) {
  CorosyncSpec s = ThreeNodes();
  s.cluster_name = "";
  EXPECT_THAT(Refusal(s), HasSubstr("cluster_name"));
  s.cluster_name = "a b";
  EXPECT_THAT(Refusal(s), HasSubstr("cluster_name"));
  s = ThreeNodes();
  s.token_ms = 50;
  EXPECT_THAT(Refusal(s), HasSubstr("token is 50, must be 100..60000"));
  s = ThreeNodes();
  s.token_coefficient_ms = -1;
  EXPECT_THAT(Refusal(s), HasSubstr("token_coefficient is -1"));
  // 3 nodes, token 1000 + 1 * 650: corosync wants consensus >= 1.2 * 1650 = 1980.
  s = ThreeNodes();
  s.consensus_ms = 1979;
  EXPECT_THAT(Refusal(s), HasSubstr("at least 1.2 * the token of 1650 ms"));
  s.consensus_ms = 1980;
  EXPECT_EQ(Refusal(s), "");
  s = ThreeNodes();
  s.knet_ping_timeout_ms = 1000;
  EXPECT_THAT(Refusal(s), HasSubstr("go together"));
  s.knet_ping_interval_ms = 1000;
  EXPECT_THAT(Refusal(s), HasSubstr("knet_ping_timeout is 1000, must be 1001.."));
  s = ThreeNodes();
  s.keyfile = "authkey";
  EXPECT_THAT(Refusal(s), HasSubstr("must be an absolute path"));
  s.keyfile = "/etc/corosync/auth key";
  EXPECT_THAT(Refusal(s), HasSubstr("has a space"));
}

TEST(CorosyncConf, NamesParseBack) {
  for (auto c : {CorosyncCipher::kNone, CorosyncCipher::kAes128, CorosyncCipher::kAes192, CorosyncCipher::kAes256}) {
    CorosyncCipher back = CorosyncCipher::kNone;
    ASSERT_TRUE(ParseCorosyncCipher(CorosyncCipherName(c), &back));
    EXPECT_EQ(back, c);
  }
  for (auto h : {CorosyncHash::kNone, CorosyncHash::kSha256, CorosyncHash::kSha384, CorosyncHash::kSha512}) {
    CorosyncHash back = CorosyncHash::kNone;
    ASSERT_TRUE(ParseCorosyncHash(CorosyncHashName(h), &back));
    EXPECT_EQ(back, h);
  }
  CorosyncCipher c;
  CorosyncHash h;
  EXPECT_FALSE(ParseCorosyncCipher("3des", &c));
  EXPECT_FALSE(ParseCorosyncHash("md5", &h));
}

class CorosyncFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/corosync_conf_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static std::string Read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  static unsigned Mode(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
    return st.st_mode & 07777;
  }
  // Every name in the directory (to see that no temporary file is left).
  std::vector<std::string> Names() const {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(dir_)) names.push_back(e.path().filename());
    std::sort(names.begin(), names.end());
    return names;
  }

  std::string dir_;
};

TEST_F(CorosyncFiles, AuthkeyIsFreshPrivateAndNeverSilentlyReplaced) {
  const std::string key = dir_ + "/authkey";
  ASSERT_TRUE(WriteCorosyncAuthkey(key).ok());
  EXPECT_EQ(Mode(key), 0400u);
  const std::string first = Read(key);
  ASSERT_EQ(first.size(), kCorosyncAuthkeyBytes);
  EXPECT_NE(first, std::string(kCorosyncAuthkeyBytes, '\0'));

  Status again = WriteCorosyncAuthkey(key);
  EXPECT_EQ(again.code(), ErrorCode::kRefused) << again.message();
  EXPECT_THAT(again.message(), HasSubstr("exists"));
  EXPECT_EQ(Read(key), first);
  EXPECT_EQ(Names(), std::vector<std::string>{"authkey"});

  ASSERT_TRUE(WriteCorosyncAuthkey(key, {.overwrite = true, .mode = 0600}).ok());
  EXPECT_EQ(Mode(key), 0600u);
  const std::string second = Read(key);
  EXPECT_EQ(second.size(), kCorosyncAuthkeyBytes);
  EXPECT_NE(second, first);
  EXPECT_EQ(Names(), std::vector<std::string>{"authkey"});
}

TEST_F(CorosyncFiles, AuthkeyRefusesLooseModesAndMissingDirectories) {
  Status loose = WriteCorosyncAuthkey(dir_ + "/authkey", {.mode = 0644});
  EXPECT_EQ(loose.code(), ErrorCode::kInvalidArgument);
  Status nodir = WriteCorosyncAuthkey(dir_ + "/missing/authkey");
  EXPECT_FALSE(nodir.ok());
  EXPECT_THAT(nodir.message(), HasSubstr("missing/authkey"));
  EXPECT_TRUE(Names().empty());
}

TEST_F(CorosyncFiles, AnExistingKeyIsCheckedBeforeItIsKept) {
  const std::string key = dir_ + "/authkey";
  EXPECT_FALSE(CheckCorosyncAuthkey(key).ok());  // missing
  ASSERT_TRUE(WriteCorosyncAuthkey(key).ok());
  EXPECT_TRUE(CheckCorosyncAuthkey(key).ok());
  ASSERT_EQ(::chmod(key.c_str(), 0644), 0);
  EXPECT_THAT(CheckCorosyncAuthkey(key).message(), HasSubstr("mode 0644"));
  const std::string short_key = dir_ + "/short";
  std::ofstream(short_key) << "0123456789";
  ASSERT_EQ(::chmod(short_key.c_str(), 0600), 0);
  EXPECT_THAT(CheckCorosyncAuthkey(short_key).message(), HasSubstr("has 10 bytes"));
  EXPECT_THAT(CheckCorosyncAuthkey(dir_).message(), HasSubstr("not a regular file"));
}

TEST_F(CorosyncFiles, ConfIsWrittenWholeAndReplaced) {
  auto r = RenderCorosyncConf(ThreeNodes());
  ASSERT_TRUE(r.ok());
  const std::string conf = dir_ + "/corosync.conf";
  ASSERT_TRUE(WriteCorosyncConf(conf, "old\n").ok());
  ASSERT_TRUE(WriteCorosyncConf(conf, r->text).ok());
  EXPECT_EQ(Read(conf), r->text);
  EXPECT_EQ(Mode(conf), 0644u);
  EXPECT_EQ(Names(), std::vector<std::string>{"corosync.conf"});
}

}  // namespace
}  // namespace ferry::ha
