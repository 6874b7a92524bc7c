#include "ferry/base/checksum.h"

#include <xxhash.h>

#if defined(__x86_64__)
// libxxhash's x86 dispatch entry points pick the widest vector unit the CPU has (SSE2, AVX2,
// AVX-512) at the first call; the plain entry points are built for SSE2 only. Same digests:
// XXH3's output does not depend on the vector width.
#define XXH_DISPATCH_DISABLE_REPLACE
#include <xxh_x86dispatch.h>
#define FERRY_XXH3(name) name##_dispatch
#else
#define FERRY_XXH3(name) name
#endif

namespace ferry {

uint64_t Checksum64(const void* data, size_t len) { return FERRY_XXH3(XXH3_64bits)(data, len); }
uint64_t Checksum64Seeded(const void* data, size_t len, uint64_t seed) {
  return FERRY_XXH3(XXH3_64bits_withSeed)(data, len, seed);
}

struct Checksummer::State {
  XXH3_state_t* s = XXH3_createState();
  ~State() { XXH3_freeState(s); }
};

Checksummer::Checksummer() : state_(std::make_unique<State>()) { XXH3_64bits_reset(state_->s); }
Checksummer::~Checksummer() = default;
void Checksummer::Update(const void* data, size_t len) { FERRY_XXH3(XXH3_64bits_update)(state_->s, data, len); }
uint64_t Checksummer::Digest() const { return XXH3_64bits_digest(state_->s); }

}  // namespace ferry
