// CappedStream's answer side on a socket pair with small buffers (the console's tests over
// loopback TCP cannot show a slow reader: the kernel takes a whole 210 KB answer into its
// buffers at once).
#include "capped_stream.h"

#include <sys/socket.h>

#include <chrono>
#include <future>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "ferry/base/unique_fd.h"
#include "slow_reader_test_util.h"

namespace ferry::console {
namespace {

// A reader that takes 64 bytes every 100 ms: every wait for it is short, the answer is not.
// The answer is cut off once its write time is up. Before, each wait was bounded (5 s) but the
// answer was not: such a reader held a console thread until it had read everything (the
// 210 KB chart script: minutes), and eight of them held every thread.
TEST(CappedStream, AnAnswerReadSlowerThanItsWriteTimeIsCutOff) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd server(sv[0]), client(sv[1]);
  ShrinkBuffers(server.get(), client.get());
  PlainWire wire(server.get());
  CappedStream stream(wire, 1024, std::chrono::steady_clock::now() + std::chrono::seconds(10),
                      std::chrono::milliseconds(500));
  ExpectASlowReaderCutOff(stream, client.get());
}

// An answer its reader takes at once is written whole, however long the request took.
TEST(CappedStream, AnAnswerReadAtOnceIsWrittenWhole) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd server(sv[0]), client(sv[1]);
  const std::string answer(256 * 1024, 'y');
  auto got = std::async(std::launch::async, [&] {
    std::string in;
    char buf[65536];
    for (ssize_t n; in.size() < answer.size() && (n = ::recv(client.get(), buf, sizeof buf, 0)) > 0;) in.append(buf, n);
    return in;
  });
  PlainWire wire(server.get());
  CappedStream stream(wire, 1024, std::chrono::steady_clock::now(), std::chrono::milliseconds(2000));
  EXPECT_EQ(stream.write(answer.data(), answer.size()), static_cast<ssize_t>(answer.size()));
  EXPECT_EQ(got.get(), answer);
}

}  // namespace
}  // namespace ferry::console
