// Membership: one HA agent's connection to its node's Corosync. The agent is a member of a
// closed process group (libcpg, agreed ordering: every member sees the same messages and view
// changes in the same order) and a votequorum client whose quorum changes are tracked.
//
// Corosync's client libraries reach the daemon over abstract unix sockets, which belong to a
// network namespace: the process must run in its node's namespace (see
// shared/notes/corosync-in-namespaces.md).
//
// Threading: single-threaded. Every method, and every callback (run inside Dispatch()), is on
// the owner's thread; callbacks must not destroy the Membership. The object owns both
// Corosync handles and the epoll fd returned by fd(); the destructor leaves the group and
// finalizes both handles.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ferry/base/status.h"
#include "ferry/base/unique_fd.h"

namespace ferry::ha {

struct View {
  std::vector<uint32_t> members;  // nodeids of the processes in the CPG group, sorted
  bool quorate = false;           // votequorum's verdict for this node
  uint64_t seq = 0;               // increases with every view change delivered (CPG confchg or quorum change)
};

class Membership {
 public:
  struct Callbacks {
    std::function<void(const View&)> on_view;                                     // membership or quorum changed
    std::function<void(uint32_t nodeid, const std::string& payload)> on_message;  // agreed order, own messages included
  };

  // Connects to the local Corosync, starts quorum tracking and joins `group` (at most 127
  // bytes). The first view arrives through on_view from a later Dispatch().
  static Result<std::unique_ptr<Membership>> Join(const std::string& group, Callbacks callbacks);
  ~Membership();
  Membership(const Membership&) = delete;
  Membership& operator=(const Membership&) = delete;

  uint32_t local_nodeid() const { return local_nodeid_; }
  // An epoll fd holding the cpg and votequorum fds: poll() it for readability, then Dispatch().
  int fd() const { return epoll_.get(); }
  // Dispatches everything pending on both handles (CS_DISPATCH_ALL); callbacks run here.
  Status Dispatch();
  // Multicasts `payload` to the group (CPG_TYPE_AGREED); retries CS_ERR_TRY_AGAIN (the daemon's
  // flow control, or a membership change in progress) for up to 1 s.
  Status Send(const std::string& payload);
  View view() const { return view_; }
  // Asks votequorum now (votequorum_getinfo) rather than trusting the cached flag; false as
  // well when the daemon cannot be asked (the safe answer for an agent about to act).
  bool QuorateNow();

 private:
  Membership() = default;
  Status Init(const std::string& group, Callbacks callbacks);
  // Applies a CPG member list and/or a quorum verdict, bumps seq and calls on_view.
  void ChangeView(std::vector<uint32_t>* members, const bool* quorate);

  struct Hooks;  // the C callbacks given to libcpg and libvotequorum (membership.cc)
  friend struct Hooks;

  Callbacks callbacks_;
  uint64_t cpg_ = 0, votequorum_ = 0;  // 0: not initialized
  bool joined_ = false;
  std::string group_;
  uint32_t local_nodeid_ = 0;
  UniqueFd epoll_;
  View view_;
};

}  // namespace ferry::ha
