// RDMA transport entry point. The pipeline needs only the Connection interface (transport.h);
// an RC queue-pair implementation over librdmacm/libibverbs plugs in here.
#include "ferry/migrate/transport.h"

namespace ferry::migrate {

Result<std::unique_ptr<Connection>> ConnectRdma(const Endpoint& to, uint64_t) {
  return Unsupported("--transport rdma: this build has no RDMA transport yet (and this host has no RDMA device); "
                     "use --transport tcp to reach " + to.host);
}

}  // namespace ferry::migrate
