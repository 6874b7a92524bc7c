#include "ferry/migrate/stream_set.h"

#include <cstring>
#include <numeric>
#include <thread>

#include "ferry/base/checksum.h"
#include "ferry/base/guard.h"
#include "ferry/migrate/checkpoint_protocol.h"

namespace ferry::migrate {

StreamSet::StreamSet(const hypervisor::GuestMemory& memory, std::vector<std::unique_ptr<Channel>> channels,
                     const EncoderOptions& options)
    : memory_(memory), channels_(std::move(channels)), pages_sent_(channels_.size(), 0),
      epoch_start_(channels_.size(), 0),
      sent_hash_(memory.size() / kPageBytes, 0),
      dedupe_(channels_.size(), SampledCostModel(kDedupeSampleLog2)), unchanged_(channels_.size(), 0),
      unchanged_tries_(channels_.size(), 0) {
  EncoderOptions each = options;
  each.xbzrle_cache_pages = options.xbzrle_cache_pages / channels_.size();
  each.streams = static_cast<uint32_t>(channels_.size());
  for (size_t i = 0; i < channels_.size(); ++i) encoders_.push_back(std::make_unique<PageEncoder>(each));
}

Status StreamSet::SendRound(const Bitmap& pages, const uint8_t* source) {
  if (!source) source = memory_.host();
  std::vector<Status> results(channels_.size());
  std::vector<std::thread> threads;
  auto run = [this, &pages, source, &results](size_t i) {
    results[i] = Guarded("data stream", [&] { return SendStream(i, pages, source); });
    if (!results[i].ok()) failed_ = true;  // the other streams stop at their next batch
  };
  for (size_t i = 1; i < channels_.size(); ++i) threads.emplace_back(run, i);
  run(0);
  for (auto& t : threads) t.join();
  for (auto& st : results) {
    if (!st.ok() && st.code() != ErrorCode::kAborted) return st;  // the cause, not the echo
  }
  for (auto& st : results) FERRY_RETURN_IF_ERROR(st);
  return Status::Ok();
}

void StreamSet::BeginPostcopy(const Bitmap& outstanding) {
  for (uint64_t w = 0; w < outstanding.word_count(); ++w) {
    for (uint64_t bits = outstanding.words()[w]; bits; bits &= bits - 1) sent_hash_[w * 64 + __builtin_ctzll(bits)] = 0;
  }
}

Status StreamSet::SendStream(size_t stream, const Bitmap& pages, const uint8_t* host) {
  Channel& ch = *channels_[stream];
  PageEncoder& enc = *encoders_[stream];
  SampledCostModel& dedupe = dedupe_[stream];
  BatchBuilder batch;
  batch.Start();
  const uint64_t n = channels_.size(), total = pages.size();
  auto flush = [&]() -> Status {
    if (batch.count() == 0) return Status::Ok();
    if (failed_.load(std::memory_order_relaxed)) return Status(ErrorCode::kAborted, "another stream failed");
    Status st = ch.Send(MsgType::kPages, batch.Finish());
    pages_sent_[stream] += batch.count();
    batch.Start();
    return st;
  };
  for (uint64_t block = stream; block * kBlockPages < total; block += n) {
    const uint64_t first = block * kBlockPages, last = std::min(total, first + kBlockPages);
    for (uint64_t w = first / 64; w * 64 < last; ++w) {
      uint64_t bits = pages.words()[w];
      while (bits) {
        uint64_t p = w * 64 + __builtin_ctzll(bits);
        bits &= bits - 1;
        // A stable copy, made straight into the batch as a raw record (copy once): the guest
        // may be writing the page right now (it is dirty again if so, and goes in a later
        // round), and what we hash must be what we send.
        uint8_t* copy = batch.Reserve(p, PageEncoding::kRaw, kPageBytes);
        std::memcpy(copy, host + p * kPageBytes, kPageBytes);
        // A first send is hashed (the next round may find it unchanged); a resend only while
        // finding unchanged pages pays on this stream (or it is in the model's sample).
        // Unhashed, it is sent and marked so.
        const bool resend = sent_hash_[p] != 0;
        uint64_t h = kSentUnhashed;
        if (!resend || dedupe.ShouldKeep(p)) {
          h = Checksum64(copy, kPageBytes) | 1;  // odd: never 0 nor kSentUnhashed
          const bool same = sent_hash_[p] == h;
          if (resend) {
            dedupe.Record(p, same);
            ++unchanged_tries_[stream];
          }
          if (same) {
            ++unchanged_[stream];
            continue;  // the uncommitted record is dropped by the next Reserve or Finish
          }
        }
        enc.EncodeReserved(p, copy, resend, &batch);
        sent_hash_[p] = h;
        if (batch.count() == kMaxPagesPerBatch) FERRY_RETURN_IF_ERROR(flush());
      }
    }
  }
  return flush();  // a failure stops the other streams: SendRound sets failed_
}

Result<std::vector<uint64_t>> StreamSet::Finish() {
  std::vector<uint64_t> frames;
  for (size_t i = 0; i < channels_.size(); ++i) {
    Channel& ch = *channels_[i];
    StreamEnd end{pages_sent_[i], ch.frames_sent()};
    FERRY_RETURN_IF_ERROR(ch.Send(MsgType::kStreamEnd, EncodeStreamEnd(end)));
    frames.push_back(ch.frames_sent());
  }
  return frames;
}

Result<std::vector<uint64_t>> StreamSet::EndEpoch(uint64_t epoch) {
  std::vector<uint64_t> frames;
  for (size_t i = 0; i < channels_.size(); ++i) {
    Channel& ch = *channels_[i];
    EpochEnd end{epoch, pages_sent_[i] - epoch_start_[i], ch.frames_sent()};
    FERRY_RETURN_IF_ERROR(ch.Send(MsgType::kEpochEnd, EncodeEpochEnd(end)));
    epoch_start_[i] = pages_sent_[i];
    frames.push_back(ch.frames_sent());
  }
  return frames;
}

void StreamSet::FailAll(const std::string& reason) {
  for (auto& ch : channels_) ch->Fail(reason);
}

void StreamSet::CloseAll() {
  for (auto& ch : channels_) ch->Close();
}

std::vector<uint64_t> StreamSet::frames_sent() const {
  std::vector<uint64_t> out;
  for (auto& ch : channels_) out.push_back(ch->frames_sent());
  return out;
}

void StreamSet::SetLimiter(RateLimiter* limiter) {
  for (auto& ch : channels_) ch->set_limiter(limiter);
}

uint64_t StreamSet::pages_unchanged() const {
  return std::accumulate(unchanged_.begin(), unchanged_.end(), uint64_t{0});
}

uint64_t StreamSet::unchanged_tries() const {
  return std::accumulate(unchanged_tries_.begin(), unchanged_tries_.end(), uint64_t{0});
}

uint64_t StreamSet::wire_bytes() const {
  uint64_t sum = 0;
  for (auto& ch : channels_) sum += ch->bytes_sent();
  return sum;
}

EncoderCounts StreamSet::counts() const {
  EncoderCounts c;
  for (auto& e : encoders_) {
    const auto& x = e->counts();
    c.zero += x.zero;
    c.raw += x.raw;
    c.zstd += x.zstd;
    c.xbzrle += x.xbzrle;
    c.zstd_tries += x.zstd_tries;
    c.xbzrle_tries += x.xbzrle_tries;
    c.cached += x.cached;
    c.encoded_bytes += x.encoded_bytes;
  }
  return c;
}

}  // namespace ferry::migrate
