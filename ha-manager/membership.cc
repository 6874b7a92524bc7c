#include "ferry/ha/membership.h"

#include <corosync/cpg.h>
#include <corosync/votequorum.h>
#include <sys/epoll.h>
#include <sys/uio.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "ferry/base/clock.h"

namespace ferry::ha {
namespace {

const char* CsErrorName(cs_error_t e) {
  switch (e) {
    case CS_OK: return "CS_OK";
    case CS_ERR_LIBRARY: return "CS_ERR_LIBRARY";
    case CS_ERR_VERSION: return "CS_ERR_VERSION";
    case CS_ERR_INIT: return "CS_ERR_INIT";
    case CS_ERR_TIMEOUT: return "CS_ERR_TIMEOUT";
    case CS_ERR_TRY_AGAIN: return "CS_ERR_TRY_AGAIN";
    case CS_ERR_INVALID_PARAM: return "CS_ERR_INVALID_PARAM";
    case CS_ERR_NO_MEMORY: return "CS_ERR_NO_MEMORY";
    case CS_ERR_BAD_HANDLE: return "CS_ERR_BAD_HANDLE";
    case CS_ERR_BUSY: return "CS_ERR_BUSY";
    case CS_ERR_ACCESS: return "CS_ERR_ACCESS";
    case CS_ERR_NOT_EXIST: return "CS_ERR_NOT_EXIST";
    case CS_ERR_NAME_TOO_LONG: return "CS_ERR_NAME_TOO_LONG";
    case CS_ERR_EXIST: return "CS_ERR_EXIST";
    case CS_ERR_NO_SPACE: return "CS_ERR_NO_SPACE";
    case CS_ERR_INTERRUPT: return "CS_ERR_INTERRUPT";
    case CS_ERR_NAME_NOT_FOUND: return "CS_ERR_NAME_NOT_FOUND";
    case CS_ERR_NO_RESOURCES: return "CS_ERR_NO_RESOURCES";
    case CS_ERR_NOT_SUPPORTED: return "CS_ERR_NOT_SUPPORTED";
    case CS_ERR_BAD_OPERATION: return "CS_ERR_BAD_OPERATION";
    case CS_ERR_FAILED_OPERATION: return "CS_ERR_FAILED_OPERATION";
    case CS_ERR_MESSAGE_ERROR: return "CS_ERR_MESSAGE_ERROR";
    case CS_ERR_QUEUE_FULL: return "CS_ERR_QUEUE_FULL";
    case CS_ERR_QUEUE_NOT_AVAILABLE: return "CS_ERR_QUEUE_NOT_AVAILABLE";
    case CS_ERR_BAD_FLAGS: return "CS_ERR_BAD_FLAGS";
    case CS_ERR_TOO_BIG: return "CS_ERR_TOO_BIG";
    case CS_ERR_NO_SECTIONS: return "CS_ERR_NO_SECTIONS";
    case CS_ERR_CONTEXT_NOT_FOUND: return "CS_ERR_CONTEXT_NOT_FOUND";
    case CS_ERR_TOO_MANY_GROUPS: return "CS_ERR_TOO_MANY_GROUPS";
    case CS_ERR_SECURITY: return "CS_ERR_SECURITY";
  }
  return "CS_ERR_UNKNOWN";
}

// "cpg_join: CS_ERR_LIBRARY (6)" plus a hint where the cause is usually the environment.
Status CsError(const std::string& call, cs_error_t e) {
  std::string text = call + ": " + CsErrorName(e) + " (cs_error_t " + std::to_string(int(e)) + ")";
  if (e == CS_ERR_LIBRARY) text += " (is corosync running in this network namespace?)";
  ErrorCode code = e == CS_ERR_TRY_AGAIN || e == CS_ERR_TIMEOUT ? ErrorCode::kTimeout : ErrorCode::kIo;
  return Status(code, text);
}

// Calls `op` until it returns something other than CS_ERR_TRY_AGAIN, for up to `budget_ms`.
template <typename Op>
cs_error_t RetryTryAgain(Op op, int budget_ms) {
  uint64_t deadline = MonotonicNs() + uint64_t(budget_ms) * 1000000;
  for (;;) {
    cs_error_t e = op();
    if (e != CS_ERR_TRY_AGAIN || MonotonicNs() > deadline) return e;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

Status MakeGroupName(const std::string& group, cpg_name* name) {
  if (group.empty() || group.size() >= CPG_MAX_NAME_LENGTH)
    return InvalidArgument("cpg group name must be 1.." + std::to_string(CPG_MAX_NAME_LENGTH - 1) + " bytes");
  std::memset(name, 0, sizeof *name);
  std::memcpy(name->value, group.data(), group.size());
  name->length = group.size();
  return Status::Ok();
}

}  // namespace

struct Membership::Hooks {
  static Membership* From(cpg_handle_t h) {
    void* self = nullptr;
    return cpg_context_get(h, &self) == CS_OK ? static_cast<Membership*>(self) : nullptr;
  }
  static Membership* From(votequorum_handle_t h, int) {
    void* self = nullptr;
    return votequorum_context_get(h, &self) == CS_OK ? static_cast<Membership*>(self) : nullptr;
  }

  static void Deliver(cpg_handle_t h, const cpg_name*, uint32_t nodeid, uint32_t, void* msg, size_t len) {
    Membership* m = From(h);
    if (m && m->callbacks_.on_message) m->callbacks_.on_message(nodeid, std::string(static_cast<char*>(msg), len));
  }

  static void Confchg(cpg_handle_t h, const cpg_name*, const cpg_address* members, size_t n, const cpg_address*,
                      size_t, const cpg_address*, size_t) {
    Membership* m = From(h);
    if (!m) return;
    std::vector<uint32_t> ids;
    for (size_t i = 0; i < n; ++i) ids.push_back(members[i].nodeid);
    m->ChangeView(&ids, nullptr);
  }

  static void Quorum(votequorum_handle_t h, uint64_t, uint32_t quorate, uint32_t, votequorum_node_t*) {
    Membership* m = From(h, 0);
    if (!m) return;
    bool q = quorate != 0;
    m->ChangeView(nullptr, &q);
  }
};

void Membership::ChangeView(std::vector<uint32_t>* members, const bool* quorate) {
  if (members) {
    std::sort(members->begin(), members->end());
    view_.members = std::move(*members);
  }
  if (quorate) view_.quorate = *quorate;
  ++view_.seq;
  if (callbacks_.on_view) callbacks_.on_view(view_);
}

Result<std::unique_ptr<Membership>> Membership::Join(const std::string& group, Callbacks callbacks) {
  std::unique_ptr<Membership> m(new Membership());
  FERRY_RETURN_IF_ERROR(m->Init(group, std::move(callbacks)));
  return m;
}

Status Membership::Init(const std::string& group, Callbacks callbacks) {
  callbacks_ = std::move(callbacks);
  group_ = group;
  cpg_name name;
  FERRY_RETURN_IF_ERROR(MakeGroupName(group, &name));

  // Quorum tracking first, so the agent knows its quorum state before its first CPG view.
  votequorum_callbacks_t vq_callbacks{};
  vq_callbacks.votequorum_quorum_notify_fn = &Hooks::Quorum;
  if (cs_error_t e = votequorum_initialize(&votequorum_, &vq_callbacks); e != CS_OK) {
    votequorum_ = 0;
    return CsError("votequorum_initialize", e);
  }
  if (cs_error_t e = votequorum_context_set(votequorum_, this); e != CS_OK) return CsError("votequorum_context_set", e);

  cpg_model_v1_data_t model{};
  model.model = CPG_MODEL_V1;
  model.cpg_deliver_fn = &Hooks::Deliver;
  model.cpg_confchg_fn = &Hooks::Confchg;
  if (cs_error_t e = cpg_model_initialize(&cpg_, CPG_MODEL_V1, reinterpret_cast<cpg_model_data_t*>(&model), this);
      e != CS_OK) {
    cpg_ = 0;
    return CsError("cpg_initialize", e);
  }
  if (cs_error_t e = cpg_local_get(cpg_, &local_nodeid_); e != CS_OK) return CsError("cpg_local_get", e);
  view_.quorate = QuorateNow();
  if (cs_error_t e = votequorum_trackstart(votequorum_, 0, CS_TRACK_CHANGES); e != CS_OK)
    return CsError("votequorum_trackstart", e);

  int cpg_fd = -1, vq_fd = -1;
  if (cs_error_t e = cpg_fd_get(cpg_, &cpg_fd); e != CS_OK) return CsError("cpg_fd_get", e);
  if (cs_error_t e = votequorum_fd_get(votequorum_, &vq_fd); e != CS_OK) return CsError("votequorum_fd_get", e);
  epoll_.Reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_.valid()) return ErrnoError("epoll_create1");
  for (int fd : {cpg_fd, vq_fd}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) return ErrnoError("epoll_ctl");
  }

  if (cs_error_t e = RetryTryAgain([&] { return cpg_join(cpg_, &name); }, 1000); e != CS_OK)
    return CsError("cpg_join " + group, e);
  joined_ = true;
  return Status::Ok();
}

Membership::~Membership() {
  if (joined_) {
    cpg_name name;
    if (MakeGroupName(group_, &name).ok()) RetryTryAgain([&] { return cpg_leave(cpg_, &name); }, 1000);
  }
  if (cpg_) cpg_finalize(cpg_);
  if (votequorum_) {
    votequorum_trackstop(votequorum_);
    votequorum_finalize(votequorum_);
  }
}

Status Membership::Dispatch() {
  // The epoll fd is level-triggered: once both handles are drained it stops being readable.
  if (cs_error_t e = cpg_dispatch(cpg_, CS_DISPATCH_ALL); e != CS_OK && e != CS_ERR_TRY_AGAIN)
    return CsError("cpg_dispatch", e);
  if (cs_error_t e = votequorum_dispatch(votequorum_, CS_DISPATCH_ALL); e != CS_OK && e != CS_ERR_TRY_AGAIN)
    return CsError("votequorum_dispatch", e);
  return Status::Ok();
}

Status Membership::Send(const std::string& payload) {
  iovec iov{const_cast<char*>(payload.data()), payload.size()};
  cs_error_t e = RetryTryAgain([&] { return cpg_mcast_joined(cpg_, CPG_TYPE_AGREED, &iov, 1); }, 1000);
  return e == CS_OK ? Status::Ok() : CsError("cpg_mcast_joined", e);
}

bool Membership::QuorateNow() {
  votequorum_info info{};
  if (votequorum_getinfo(votequorum_, local_nodeid_, &info) != CS_OK) return false;
  return (info.flags & VOTEQUORUM_INFO_QUORATE) != 0;
}

}  // namespace ferry::ha
