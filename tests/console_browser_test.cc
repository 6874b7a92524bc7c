// The operator console in a real browser (label `browser`): a 3-host test cluster with its
// agents, `ferry console` serving the page, and headless Debian Chromium driven by
// playwright-core (console/tests/console_browser.mjs) dragging a VM card onto another host.
// The VM must then run there, as `ferry ha status` says; the screenshot is kept as
// build/test-artifacts/console-drag.png. Actions need the token, and a drill run from the
// console ends with its scorecard in the view.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "e2e_util.h"
#include "ha_cluster_util.h"
#include "test_cluster.h"

namespace ferry::e2e {
namespace {

using nlohmann::json;

TEST(ConsoleBrowser, DraggingAVmOntoAHostLiveMigratesItThere) {
  const std::string src = FERRY_SOURCE_DIR, artifacts = FERRY_ARTIFACT_DIR;
  for (const std::string& need : {std::string("/usr/bin/chromium"), src + "/console/node_modules/playwright-core",
                                  src + "/console/node_modules/chart.js"}) {
    if (::access(need.c_str(), F_OK) != 0) GTEST_SKIP() << need << " is missing: scripts/setup installs it";
  }
  if (RunCommand({"node", "--version"}, "/tmp/ferry-node-version", 10000).code != 0) GTEST_SKIP() << "node is missing: scripts/setup installs it";
  START_CLUSTER(c, 1);
  ASSERT_TRUE(AllProtected(c, 1, 60000)) << HaStatus(c).dump() << Logs(c);

  const std::string token_file = c.tc->dir() + "/console.token";
  std::ofstream(token_file) << "browser-test-token-0123456789\n";
  Process console({FerryBin(), "console", "--config", c.config, "--listen", "127.0.0.1:0", "--token-file", token_file},
                  c.tc->dir() + "/console");
  std::string url;
  ASSERT_TRUE(WaitUntil([&] {
    std::string out = console.Stdout();
    size_t at = out.find("http://");
    if (at == std::string::npos || out.find('\n', at) == std::string::npos) return false;
    url = out.substr(at, out.find('\n', at) - at);
    return true;
  }, 10000)) << console.Stderr();

  std::filesystem::create_directories(artifacts);
  const std::string shot = artifacts + "/console-drag.png";
  auto r = RunCommand({"node", src + "/console/tests/console_browser.mjs", "--url", url, "--vm", "kv0", "--to", "h2",
                       "--screenshot", shot, "--timeout-s", "120"},
                      c.tc->dir() + "/browser", 180000);
  std::printf("%s", r.out.c_str());
  EXPECT_EQ(r.code, 0) << r.out << r.err << "\n--- console\n" << console.Stderr() << Logs(c);
  struct stat sb {};
  EXPECT_EQ(::stat(shot.c_str(), &sb), 0) << "no screenshot at " << shot;
  EXPECT_GT(sb.st_size, 10000);
  // The CLI agrees: kv0 runs on h2, at a newer generation.
  json v = VmOf(HaStatus(c), "kv0");
  EXPECT_EQ(v["owner"], "h2") << v.dump();
  EXPECT_EQ(v["state"], "running") << v.dump();
  EXPECT_GE(v.value("generation", 0), 2);

  // Actions need the token; a drill run from the console ends with its scorecard in the view.
  const std::string base = url.substr(0, url.find("/?"));
  auto post = [&](const std::string& path, const std::string& body, bool token) {
    std::vector<std::string> argv = {"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-d", body,
                                     "-H", "Content-Type: application/json"};
    if (token) argv.insert(argv.end(), {"-H", "Authorization: Bearer browser-test-token-0123456789"});
    argv.push_back(base + path);
    return RunCommand(argv, c.tc->dir() + "/post", 10000).out;
  };
  EXPECT_EQ(post("/api/drill", R"({"fault":"kill-vm","target":"kv0"})", false), "401");
  ASSERT_TRUE(AllProtected(c, 1, 60000)) << HaStatus(c).dump() << Logs(c);
  EXPECT_EQ(post("/api/drill", R"({"fault":"kill-vm","target":"kv0"})", true), "200");
  json drill;
  EXPECT_TRUE(WaitUntil([&] {
    auto r = RunCommand({"curl", "-s", "-H", "Authorization: Bearer browser-test-token-0123456789", base + "/api/cluster"}, c.tc->dir() + "/get", 10000);
    json v = json::parse(r.out, nullptr, false);
    if (!v.is_object()) return false;
    drill = v["drill"];
    return !drill["running"].get<bool>() && (drill["scorecard"].is_object() || !drill["error"].get<std::string>().empty());
  }, 120000)) << drill.dump();
  std::printf("drill from the console: %s\n", drill.dump().c_str());
  EXPECT_EQ(drill["scorecard"]["lost_writes"], 0) << drill.dump() << Logs(c);
  EXPECT_EQ(drill["scorecard"]["split_brain"], false) << drill.dump();
  console.Signal(SIGTERM);
  EXPECT_EQ(console.Wait(10000), 0) << console.Stderr();
}

}  // namespace
}  // namespace ferry::e2e
