#include "ferry/migrate/postcopy_channel.h"

#include <cstring>

#include "ferry/base/coding.h"
#include "ferry/migrate/protocol.h"

namespace ferry::migrate {
namespace {

constexpr size_t kReplyHeader = 8 + 8 + 4;

}  // namespace

std::vector<uint8_t> EncodePageRequest(const PageRequest& r) {
  Encoder e;
  e.PutU64(r.id);
  e.PutU64(r.first);
  e.PutU32(r.count);
  return e.Take();
}

std::vector<uint8_t> EncodePageReply(const PageRequest& r, const uint8_t* pages) {
  std::vector<uint8_t> reply = EncodePageRequest(r);  // the same three fields lead the reply
  reply.insert(reply.end(), pages, pages + static_cast<size_t>(r.count) * kPageBytes);
  return reply;
}

Result<PageRequest> DecodePageRequest(std::span<const uint8_t> payload) {
  Decoder d(payload);
  PageRequest r;
  d.GetU64(&r.id);
  d.GetU64(&r.first);
  d.GetU32(&r.count);
  if (!d.ok() || d.remaining() != 0) return Status(ErrorCode::kCorrupt, "malformed page-request");
  if (r.count == 0 || r.count > kMaxPagesPerBatch) {
    return Status(ErrorCode::kCorrupt, "page-request for " + std::to_string(r.count) + " pages (1.." +
                                           std::to_string(kMaxPagesPerBatch) + ")");
  }
  return r;
}

Status PageRequester::Fetch(uint64_t first, uint32_t count, uint8_t* out) {
  if (count == 0 || count > kMaxPagesPerBatch) return InvalidArgument("a page request asks for 1..256 pages");
  std::lock_guard lock(mu_);
  // Ended: every page had arrived, so no answer would come to a request sent after the end.
  if (ended_) return Status(ErrorCode::kAborted, "post-copy: the page-request stream has ended");
  const PageRequest req{next_id_++, first, count};
  FERRY_RETURN_IF_ERROR(channel_.Send(MsgType::kPageRequest, EncodePageRequest(req)));
  FERRY_RETURN_IF_ERROR(channel_.Expect(MsgType::kPageReply, &frame_));
  Decoder d(frame_.payload);
  uint64_t id = 0, got_first = 0;
  uint32_t got_count = 0;
  d.GetU64(&id);
  d.GetU64(&got_first);
  d.GetU32(&got_count);
  if (!d.ok() || id != req.id || got_first != first || got_count != count ||
      frame_.payload.size() != kReplyHeader + static_cast<size_t>(count) * kPageBytes) {
    return Status(ErrorCode::kCorrupt, "page-reply does not answer request " + std::to_string(req.id) + " for pages " +
                                           std::to_string(first) + "+" + std::to_string(count));
  }
  std::memcpy(out, frame_.payload.data() + kReplyHeader, static_cast<size_t>(count) * kPageBytes);
  return Status::Ok();
}

Status PageRequester::End() {
  std::lock_guard lock(mu_);
  ended_ = true;
  return channel_.Send(MsgType::kStreamEnd, EncodeStreamEnd(StreamEnd{0, channel_.frames_sent()}));
}

Result<PageServerStats> ServePageRequests(Channel& channel, const uint8_t* memory, uint64_t pages,
                                          const std::atomic<bool>& stop) {
  PageServerStats stats;
  Frame f;
  while (!stop.load(std::memory_order_relaxed)) {
    FERRY_RETURN_IF_ERROR(channel.Receive(&f));
    if (f.type == static_cast<uint16_t>(MsgType::kStreamEnd)) return stats;  // every page has arrived there
    if (f.type == static_cast<uint16_t>(MsgType::kError)) {
      return Status(ErrorCode::kAborted, "the destination gave up post-copy");
    }
    if (f.type != static_cast<uint16_t>(MsgType::kPageRequest)) {
      channel.Fail(std::string("unexpected ") + MsgTypeName(f.type) + " on the post-copy stream");
      return Status(ErrorCode::kCorrupt, std::string("post-copy stream: unexpected ") + MsgTypeName(f.type));
    }
    auto req = DecodePageRequest(f.payload);
    if (req.ok() && (req->first >= pages || req->count > pages - req->first)) {
      req = Status(ErrorCode::kCorrupt, "page-request for pages " + std::to_string(req->first) + "+" +
                                            std::to_string(req->count) + " beyond the VM's " + std::to_string(pages));
    }
    if (!req.ok()) {
      channel.Fail(req.status().message());
      return req.status();
    }
    FERRY_RETURN_IF_ERROR(channel.Send(MsgType::kPageReply, EncodePageReply(*req, memory + req->first * kPageBytes)));
    ++stats.requests;
    stats.pages += req->count;
  }
  return Status(ErrorCode::kAborted, "post-copy page server stopped");
}

}  // namespace ferry::migrate
