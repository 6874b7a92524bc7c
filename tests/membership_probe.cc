// membership_probe GROUP SECONDS: joins CPG group GROUP through ha::Membership and prints one
// JSON line per event on stdout, for cluster tests that run it in a host's network namespace
// (`ip netns exec NS membership_probe ...`):
//   {"t_ms":..., "event":"joined", "nodeid":1}
//   {"t_ms":..., "event":"view", "seq":3, "members":[1,2,3], "quorate":true}
//   {"t_ms":..., "event":"message", "from":2, "payload":"hello from 2 #1"}
//   {"t_ms":..., "event":"error", "error":"..."}
// t_ms is CLOCK_MONOTONIC in milliseconds, comparable with the test's own clock. It sends a
// greeting after joining and again whenever the group grows, so members that join later hear
// from it too. Exits 0 after SECONDS, or on SIGTERM/SIGINT (leaving the group); 1 on errors.
#include <poll.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

#include "ferry/base/clock.h"
#include "ferry/ha/membership.h"

namespace {

volatile sig_atomic_t stop_requested = 0;
void OnSignal(int) { stop_requested = 1; }

void Emit(nlohmann::json event) {
  event["t_ms"] = ferry::MonotonicMs();
  std::printf("%s\n", event.dump().c_str());
  std::fflush(stdout);
}

int Fail(const std::string& error) {
  Emit({{"event", "error"}, {"error", error}});
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: membership_probe GROUP SECONDS\n");
    return 2;
  }
  const std::string group = argv[1];
  const uint64_t end_ns = ferry::MonotonicNs() + uint64_t(std::atof(argv[2]) * 1e9);
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);

  size_t last_members = 0;
  int greetings = 0;
  bool resend = false;  // set in on_view, acted on outside the dispatch
  ferry::ha::Membership::Callbacks callbacks;
  callbacks.on_view = [&](const ferry::ha::View& v) {
    Emit({{"event", "view"}, {"seq", v.seq}, {"members", v.members}, {"quorate", v.quorate}});
    if (v.members.size() > last_members) resend = true;
    last_members = v.members.size();
  };
  callbacks.on_message = [&](uint32_t nodeid, const std::string& payload) {
    Emit({{"event", "message"}, {"from", nodeid}, {"payload", payload}});
  };
  auto joined = ferry::ha::Membership::Join(group, callbacks);
  if (!joined.ok()) return Fail(joined.status().message());
  ferry::ha::Membership& m = **joined;
  Emit({{"event", "joined"}, {"nodeid", m.local_nodeid()}, {"quorate_now", m.QuorateNow()}});
  resend = true;

  while (!stop_requested) {
    if (resend) {
      resend = false;
      std::string hello = "hello from " + std::to_string(m.local_nodeid()) + " #" + std::to_string(++greetings);
      if (ferry::Status s = m.Send(hello); !s.ok()) Emit({{"event", "send-error"}, {"error", s.message()}});
    }
    const uint64_t now = ferry::MonotonicNs();
    if (now >= end_ns) break;
    pollfd p{m.fd(), POLLIN, 0};
    int wait_ms = static_cast<int>(std::min<uint64_t>((end_ns - now) / 1000000 + 1, 100));
    if (::poll(&p, 1, wait_ms) > 0) {
      if (ferry::Status s = m.Dispatch(); !s.ok()) return Fail(s.message());
    }
  }
  Emit({{"event", "exit"}});
  return 0;
}
