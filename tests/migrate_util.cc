#include "migrate_util.h"

#include <gtest/gtest.h>

namespace ferry::e2e {

using nlohmann::json;

Destination StartIncoming(const TempDir& dir, const std::string& name, const std::string& listen,
                          std::vector<std::string> extra, const TestHosts* hosts, int host) {
  std::vector<std::string> argv = {FerryBin(), "incoming", "--listen", listen, "--api", dir.File(name + ".sock")};
  argv.insert(argv.end(), extra.begin(), extra.end());
  if (hosts) argv = hosts->In(host, argv);
  Destination d{std::make_unique<Process>(argv, dir.File(name)), ""};
  const std::string marker = "listening on ";
  EXPECT_TRUE(WaitUntil([&] { return d.process->Stderr().find(marker) != std::string::npos; }, 10000)) << d.process->Stderr();
  std::string err = d.process->Stderr();
  size_t at = err.find(marker);
  if (at != std::string::npos) d.address = err.substr(at + marker.size(), err.find_first_of(" \n", at + marker.size()) - at - marker.size());
  return d;
}

std::unique_ptr<Process> StartGuest(const TempDir& dir, const std::string& name, const std::string& guest,
                                    const std::string& mem, std::vector<std::string> guest_args,
                                    const TestHosts* hosts, int host) {
  std::vector<std::string> argv = {FerryBin(), "run", GuestPath(guest), "--mem", mem, "--vcpus", "2", "--api",
                                   dir.File(name + ".sock")};
  if (!guest_args.empty()) {
    argv.push_back("--");
    argv.insert(argv.end(), guest_args.begin(), guest_args.end());
  }
  if (hosts) argv = hosts->In(host, argv);
  return std::make_unique<Process>(argv, dir.File(name));
}

// Waits until memcheck has written a good part of its pages, so a migration carries real data.
void AwaitMemcheckBusy(const std::string& sock) {
  ASSERT_TRUE(WaitForReport(sock, "verify_seq", 30000).ok());
  ASSERT_TRUE(WaitUntil([&] {
    auto r = Api(sock, {{"op", "status"}});
    return r.ok() && std::stoull((*r)["report"]["fields"].value("writes", std::string("0"))) > 20000;
  }, 30000));
}

void ExpectVerifies(const std::string& sock) {
  auto v = Api(sock, {{"op", "verify"}, {"timeout_ms", 60000}}, 70000);
  ASSERT_TRUE(v.ok()) << v.status().message();
  EXPECT_TRUE((*v)["passed"].get<bool>()) << (*v)["report"]["text"];
}

void ExpectRunning(const std::string& sock) {
  auto s = Api(sock, {{"op", "status"}});
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_EQ((*s)["state"], "running");
}

}  // namespace ferry::e2e
