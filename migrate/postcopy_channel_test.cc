// Post-copy's on-demand path end to end without a VM: a source's page server and a
// destination's PostcopyMemory fetching through a PageRequester over real loopback TCP. Every
// page touched is the source's; a source that goes away mid-way fails the destination's
// memory once and leaves touchers blocked; requests beyond the VM and replies that answer
// another request are refused.
#include "ferry/migrate/postcopy_channel.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "ferry/base/coding.h"
#include "ferry/migrate/postcopy_memory.h"
#include "ferry/migrate/transport.h"

namespace ferry::migrate {
namespace {

constexpr uint64_t kPage = kPageBytes;

struct Link {
  std::unique_ptr<Listener> listener;
  std::unique_ptr<Channel> src, dst;
};

Link Connect() {
  Link l;
  auto listener = ListenTcp(Endpoint{"127.0.0.1", 0});
  EXPECT_TRUE(listener.ok());
  l.listener = std::move(*listener);
  auto at = ParseEndpoint(l.listener->LocalAddress());
  std::thread t([&] {
    auto s = l.listener->Accept(5000);
    if (s.ok()) l.src = std::make_unique<Channel>(std::move(*s), "post-copy (source)");
  });
  auto c = ConnectTcp(*at, 5000);
  if (c.ok()) l.dst = std::make_unique<Channel>(std::move(*c), "post-copy (destination)");
  t.join();
  l.src->set_timeout_ms(3000);
  l.dst->set_timeout_ms(3000);
  return l;
}

std::vector<uint8_t> SourceMemory(uint64_t pages) {
  std::vector<uint8_t> m(pages * kPage);
  for (uint64_t p = 0; p < pages; ++p) {
    for (uint64_t w = 0; w < kPage / 8; ++w) {
      const uint64_t v = (p + 1) * 0x9e3779b97f4a7c15ull ^ w;
      std::memcpy(m.data() + p * kPage + w * 8, &v, 8);
    }
  }
  return m;
}

struct Region {
  explicit Region(uint64_t pages) : bytes(pages * kPage) {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    base = p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p);
  }
  ~Region() {
    if (base) ::munmap(base, bytes);
  }
  uint64_t bytes;
  uint8_t* base = nullptr;
};

TEST(PostcopyChannel, FaultsAreServedByTheSourceOverTcpAndEveryTouchedPageIsItsOwn) {
  constexpr uint64_t kPages = 2048;  // 8 MiB
  const auto source = SourceMemory(kPages);
  Link link = Connect();
  std::atomic<bool> stop{false};
  Result<PageServerStats> served = Status(ErrorCode::kAborted, "not run");
  std::thread server([&] { served = ServePageRequests(*link.src, source.data(), kPages, stop); });
  Region r(kPages);
  PageRequester requester(*link.dst);
  PostcopyOptions o;
  o.window_pages = 16;
  o.fetch = [&](uint64_t first, uint32_t count, uint8_t* out) { return requester.Fetch(first, count, out); };
  auto m = PostcopyMemory::Register(r.base, r.bytes, o);
  ASSERT_TRUE(m.ok()) << m.status().message();
  std::atomic<uint64_t> wrong{0};
  std::thread a([&] {
    for (uint64_t p = 0; p < kPages; p += 3) wrong += std::memcmp(r.base + p * kPage, source.data() + p * kPage, kPage) != 0;
  });
  std::thread b([&] {
    for (uint64_t p = kPages; p-- > 0;) wrong += std::memcmp(r.base + p * kPage, source.data() + p * kPage, kPage) != 0;
  });
  a.join();
  b.join();
  EXPECT_EQ(wrong.load(), 0u);
  ASSERT_TRUE((*m)->WaitComplete(5000));
  auto stats = (*m)->stats();
  ASSERT_TRUE(link.dst->Send(MsgType::kStreamEnd, std::vector<uint8_t>(16, 0)).ok());
  server.join();
  ASSERT_TRUE(served.ok()) << served.status().message();
  EXPECT_EQ(served->pages, kPages);
  EXPECT_EQ(served->requests, stats.faults);
  std::printf("%llu faults over TCP: p50 %.0f us, p99 %.0f us, max %.0f us\n", static_cast<unsigned long long>(stats.faults),
              stats.fault_p50_us, stats.fault_p99_us, stats.fault_max_us);
}

TEST(PostcopyChannel, ASourceThatGoesAwayFailsTheDestinationOnceAndTouchersWait) {
  constexpr uint64_t kPages = 64;
  const auto source = SourceMemory(kPages);
  Link link = Connect();
  Region r(kPages);
  PageRequester requester(*link.dst);
  std::atomic<int> failures{0};
  PostcopyOptions o;
  o.window_pages = 1;
  o.fetch = [&](uint64_t first, uint32_t count, uint8_t* out) { return requester.Fetch(first, count, out); };
  o.on_failure = [&](const Status&) { ++failures; };
  auto m = PostcopyMemory::Register(r.base, r.bytes, o);
  ASSERT_TRUE(m.ok());
  std::atomic<bool> stop{false};
  std::thread server([&] {  // serves one request, then the source host dies
    Frame f;
    if (!link.src->Expect(MsgType::kPageRequest, &f).ok()) return;
    auto req = DecodePageRequest(f.payload);
    (void)link.src->Send(MsgType::kPageReply, EncodePageReply(*req, source.data() + req->first * kPage));
    link.src->Close();
  });
  EXPECT_EQ(std::memcmp(r.base, source.data(), kPage), 0);
  server.join();
  std::atomic<bool> returned{false};
  std::thread toucher([&] {
    volatile uint8_t v = r.base[10 * kPage];
    (void)v;
    returned = true;
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (failures.load() == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(failures.load(), 1);
  EXPECT_FALSE((*m)->error().ok());
  std::printf("destination: %s\n", (*m)->error().message().c_str());
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(returned.load());
  m->reset();  // the destination's VM is stopped; the source resumes
  toucher.join();
}

TEST(PostcopyChannel, RequestsBeyondTheVmAndRepliesToAnotherRequestAreRefused) {
  constexpr uint64_t kPages = 16;
  const auto source = SourceMemory(kPages);
  {
    Link link = Connect();
    std::atomic<bool> stop{false};
    Result<PageServerStats> served = Status(ErrorCode::kAborted, "not run");
    std::thread server([&] { served = ServePageRequests(*link.src, source.data(), kPages, stop); });
    PageRequester requester(*link.dst);
    std::vector<uint8_t> out(4 * kPage);
    EXPECT_TRUE(requester.Fetch(12, 4, out.data()).ok());
    EXPECT_EQ(std::memcmp(out.data(), source.data() + 12 * kPage, 4 * kPage), 0);
    Status beyond = requester.Fetch(14, 4, out.data());
    server.join();
    EXPECT_FALSE(beyond.ok());
    EXPECT_NE(beyond.message().find("beyond the VM"), std::string::npos) << beyond.message();
    EXPECT_FALSE(served.ok());
  }
  {
    Link link = Connect();
    std::thread liar([&] {
      Frame f;
      if (!link.src->Expect(MsgType::kPageRequest, &f).ok()) return;
      auto req = DecodePageRequest(f.payload);
      PageRequest other = *req;
      other.id += 1;  // answers some other request
      std::vector<uint8_t> zeros(other.count * kPage);
      (void)link.src->Send(MsgType::kPageReply, EncodePageReply(other, zeros.data()));
    });
    PageRequester requester(*link.dst);
    std::vector<uint8_t> out(kPage);
    Status st = requester.Fetch(3, 1, out.data());
    liar.join();
    EXPECT_EQ(st.code(), ErrorCode::kCorrupt) << st.message();
  }
  EXPECT_FALSE(DecodePageRequest(std::vector<uint8_t>(20, 0)).ok());  // zero pages
  EXPECT_FALSE(DecodePageRequest(std::vector<uint8_t>(19, 0)).ok());
}

}  // namespace
}  // namespace ferry::migrate
