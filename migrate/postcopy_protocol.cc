#include "ferry/migrate/postcopy_protocol.h"

#include "ferry/base/coding.h"

namespace ferry::migrate {
namespace {
Status Malformed(const char* what) { return Corrupt(std::string("malformed ") + what + " message"); }
}  // namespace

std::vector<uint8_t> EncodePostcopyState(const PostcopyStateMsg& m) {
  Encoder e;
  e.PutU32(static_cast<uint32_t>(m.stream_frames.size()));
  for (uint64_t f : m.stream_frames) e.PutU64(f);
  e.PutU64(m.outstanding.size());
  for (uint64_t w = 0; w < m.outstanding.word_count(); ++w) e.PutU64(m.outstanding.words()[w]);
  e.PutU32(static_cast<uint32_t>(m.vm_state.size()));
  e.PutBytes(m.vm_state);
  return e.Take();
}

Result<PostcopyStateMsg> DecodePostcopyState(std::span<const uint8_t> p, uint32_t streams, uint64_t mem_pages) {
  Decoder d(p);
  PostcopyStateMsg m;
  uint32_t n = 0, len = 0;
  if (!d.GetU32(&n) || n != streams) return Corrupt("post-copy state names the wrong number of streams");
  m.stream_frames.resize(n);
  for (auto& f : m.stream_frames) d.GetU64(&f);
  uint64_t pages = 0;
  if (!d.GetU64(&pages)) return Malformed("post-copy state");
  if (pages != mem_pages || pages > kMaxPostcopyPages) {
    return Corrupt("post-copy state names " + std::to_string(pages) + " pages; the VM has " + std::to_string(mem_pages));
  }
  m.outstanding = Bitmap(pages);
  for (uint64_t w = 0; w < m.outstanding.word_count(); ++w) {
    if (!d.GetU64(&m.outstanding.words()[w])) return Malformed("post-copy state");
  }
  // Bits past the last page would count pages that do not exist.
  if (pages % 64 != 0 && (m.outstanding.words()[m.outstanding.word_count() - 1] >> (pages % 64)) != 0) {
    return Corrupt("post-copy state names pages beyond the VM");
  }
  std::span<const uint8_t> vm;
  if (!d.GetU32(&len) || !d.GetBytes(len, &vm) || d.remaining() != 0) return Malformed("post-copy state");
  m.vm_state.assign(vm.begin(), vm.end());
  return m;
}

std::vector<uint8_t> EncodePostcopyComplete(const PostcopyComplete& m) {
  Encoder e;
  e.PutU64(m.faults);
  e.PutU64(m.fetched_pages);
  e.PutU64(m.placed_pages);
  e.PutU32(m.fault_p50_us);
  e.PutU32(m.fault_p99_us);
  e.PutU32(m.fault_max_us);
  e.PutU64(m.held_frames);
  e.PutU64(m.held_disk_bytes);
  return e.Take();
}

Result<PostcopyComplete> DecodePostcopyComplete(std::span<const uint8_t> p) {
  Decoder d(p);
  PostcopyComplete m;
  d.GetU64(&m.faults);
  d.GetU64(&m.fetched_pages);
  d.GetU64(&m.placed_pages);
  d.GetU32(&m.fault_p50_us);
  d.GetU32(&m.fault_p99_us);
  d.GetU32(&m.fault_max_us);
  d.GetU64(&m.held_frames);
  d.GetU64(&m.held_disk_bytes);
  if (!d.ok() || d.remaining() != 0) return Malformed("post-copy-complete");
  return m;
}

}  // namespace ferry::migrate
