#include "ferry/migrate/channel.h"

namespace ferry::migrate {

Channel::Channel(std::unique_ptr<Connection> connection, std::string name)
    : connection_(std::move(connection)), name_(std::move(name)) {}

Status Channel::Send(MsgType type, std::span<const uint8_t> payload) {
  // Over TLS the record's AEAD tag covers every byte: no XXH3 pass of our own (PROTOCOL.md).
  auto header = EncodeHeader(type, send_seq_.load(std::memory_order_relaxed), payload, !connection_->Authenticated());
  if (limiter_) limiter_->Acquire(kHeaderSize + payload.size());
  FERRY_RETURN_IF_ERROR(connection_->Write(header, payload, timeout_ms_).Annotate(name_));
  ++send_seq_;
  bytes_sent_.fetch_add(kHeaderSize + payload.size(), std::memory_order_relaxed);
  return Status::Ok();
}

Status Channel::Receive(Frame* frame) {
  std::array<uint8_t, kHeaderSize> header;
  FERRY_RETURN_IF_ERROR(connection_->Read(header, timeout_ms_).Annotate(name_));
  auto h = DecodeHeader(header);
  if (!h.ok()) return h.status().Annotate(name_);
  if (h->length > max_payload_) {
    return Corrupt(name_ + ": a " + MsgTypeName(h->type) + " message of " + std::to_string(h->length) +
                   " bytes where at most " + std::to_string(max_payload_) + " may come now");
  }
  const uint32_t due = recv_seq_.load(std::memory_order_relaxed);
  if (h->seq != due) {
    return Corrupt(name_ + ": frame " + std::to_string(h->seq) + " arrived where " + std::to_string(due) +
                   " was due (lost or replayed data)");
  }
  frame->type = h->type;
  frame->payload.resize(h->length);
  FERRY_RETURN_IF_ERROR(connection_->Read(frame->payload, timeout_ms_).Annotate(name_));
  FERRY_RETURN_IF_ERROR(VerifyPayload(header, *h, frame->payload, !connection_->Authenticated()).Annotate(name_));
  ++recv_seq_;
  bytes_received_.fetch_add(kHeaderSize + h->length, std::memory_order_relaxed);
  return Status::Ok();
}

bool IsGiveUp(const Frame& f) {
  return f.type == static_cast<uint16_t>(MsgType::kError) || f.type == static_cast<uint16_t>(MsgType::kAbort);
}

std::string GiveUpReason(const Frame& f) {
  auto reason = DecodeReason(f.payload);
  return reason.ok() ? *reason : reason.status().message();
}

Status Channel::Expect(MsgType type, Frame* frame) {
  FERRY_RETURN_IF_ERROR(Receive(frame));
  if (IsGiveUp(*frame)) {
    return Status(ErrorCode::kAborted, "the peer (" + connection_->PeerAddress() + ") gave up: " + GiveUpReason(*frame));
  }
  if (frame->type != static_cast<uint16_t>(type)) {
    return Corrupt(name_ + ": expected a " + MsgTypeName(static_cast<uint16_t>(type)) + " message, got " +
                   MsgTypeName(frame->type));
  }
  return Status::Ok();
}

void Channel::Fail(const std::string& reason) {
  // The peer may have stopped reading: do not wait long to say goodbye. The channel is done
  // after this, so the shorter timeout stays.
  timeout_ms_.store(1000);
  (void)Send(MsgType::kError, EncodeReason(reason));
  Close();
}

}  // namespace ferry::migrate
