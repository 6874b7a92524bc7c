#include "ferry/base/checksum.h"

#include <xxhash.h>

namespace ferry {

uint64_t Checksum64(const void* data, size_t len) { return XXH3_64bits(data, len); }
uint64_t Checksum64Seeded(const void* data, size_t len, uint64_t seed) { return XXH3_64bits_withSeed(data, len, seed); }

struct Checksummer::State {
  XXH3_state_t* s = XXH3_createState();
  ~State() { XXH3_freeState(s); }
};

Checksummer::Checksummer() : state_(std::make_unique<State>()) { XXH3_64bits_reset(state_->s); }
Checksummer::~Checksummer() = default;
void Checksummer::Update(const void* data, size_t len) { XXH3_64bits_update(state_->s, data, len); }
uint64_t Checksummer::Digest() const { return XXH3_64bits_digest(state_->s); }

}  // namespace ferry
