// A slow reader for the console's write-time tests (capped_stream_test.cc over a plain socket
// pair, tls_test.cc over TLS): test code only.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <future>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "capped_stream.h"

namespace ferry::console {

// Small buffers on both ends of a socket pair, so that a slow reader is felt at once.
inline void ShrinkBuffers(int server, int client) {
  const int small = 4096;
  ::setsockopt(server, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  ::setsockopt(client, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
}

// Writes a 256 KiB answer through `stream` while `client` takes 64 bytes every 100 ms: every
// wait for it is short, the answer is not. Expects the write cut off (-1) within 5 s (the
// stream's write time is shorter). Bounded: a write still going at 5 s is ended by shutting
// the client down.
inline void ExpectASlowReaderCutOff(CappedStream& stream, int client) {
  std::atomic<bool> stop{false};
  std::thread reader([&] {
    char buf[64];
    while (!stop) {
      (void)::recv(client, buf, sizeof buf, MSG_DONTWAIT);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  const std::string answer(256 * 1024, 'x');
  const auto t0 = std::chrono::steady_clock::now();
  auto wrote = std::async(std::launch::async, [&] { return stream.write(answer.data(), answer.size()); });
  const bool ended = wrote.wait_for(std::chrono::seconds(5)) == std::future_status::ready;
  stop = true;
  reader.join();
  if (!ended) ::shutdown(client, SHUT_RDWR);  // ends the write, so the test does too
  EXPECT_TRUE(ended) << "the answer was still being written to a slow reader after 5 s";
  EXPECT_EQ(wrote.get(), -1);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(6));
}

}  // namespace ferry::console
