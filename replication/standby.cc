// Standby: the replica's receiver (PROTOCOL.md, "Replication"): one primary, its initial sync
// applied directly, then each checkpoint staged, checked whole, applied and acknowledged.
#include "ferry/replication/standby.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>

#include "epoch_log.h"
#include "ferry/base/clock.h"
#include "ferry/base/guard.h"
#include "ferry/base/unique_fd.h"
#include "ferry/hypervisor/vm_state_codec.h"
#include "ferry/migrate/accept.h"
#include "ferry/migrate/checkpoint_protocol.h"
#include "ferry/migrate/page_sink.h"

namespace ferry::replication {

using migrate::Frame;
using migrate::MsgType;

namespace {
double Ms(uint64_t ns) { return ns / 1e6; }

bool WriteAll(int fd, const uint8_t* p, uint64_t len, uint64_t off) {
  while (len > 0) {
    ssize_t n = ::pwrite(fd, p, len, static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    len -= n;
    off += n;
  }
  return true;
}
}  // namespace

struct Standby::Impl {
  explicit Impl(const StandbyOptions& opts) : o(opts) {}

  Status Session();  // one primary, start to end
  Status AcceptPrimary(migrate::PeerGate& peers);  // its control stream, begin, ready, data streams
  Status Replicate();  // the initial sync, then checkpoints until the primary is gone
  Status Setup();
  Status ReceiveStream(uint32_t index);
  Status ControlLoop();
  Status ApplyDiskRecord(const migrate::DiskRecord& r, bool stage);
  Status Commit(const migrate::CheckpointMsg& msg);
  // Loads the committed checkpoint and starts the replica (mu held, no session using vm).
  Status ActivateLocked(uint64_t generation, PromoteStats* stats);
  void FailAll(const Status& why);
  uint64_t ReceivedBytesLocked() const;

  const StandbyOptions o;
  std::unique_ptr<migrate::Listener> listener;
  migrate::PeerGate* gate = nullptr;  // guarded by mu: Session()'s while it accepts, for Cancel()
  const migrate::Session session = migrate::NewSession();

  // Owned by the Run() thread while a session runs; Promote() touches them only after it.
  std::unique_ptr<migrate::Channel> control;
  std::vector<std::unique_ptr<migrate::Channel>> data;
  migrate::Begin begin;
  std::unique_ptr<hypervisor::Vm> vm;   // prepared, never started here; its RAM is the replica
  std::unique_ptr<hypervisor::Vm> handed_vm;  // guarded by mu: running after a handover, until taken
  UniqueFd disk;                        // this host's copy of the disk image
  uint64_t disk_bytes = 0;
  std::vector<migrate::StagedPages> staged;  // per stream, the checkpoint in transfer
  std::vector<hypervisor::DiskWrite> staged_disk;
  uint32_t disk_frames = 0;             // kDiskWrites frames of the checkpoint in transfer
  std::vector<double> apply_ms;

  mutable std::mutex mu;
  std::condition_variable cv;
  std::vector<uint64_t> arrived;         // guarded by mu: per stream, the last epoch whose end arrived
  std::vector<uint64_t> arrived_frames;  // guarded by mu: frames the stream carried at that end
  uint64_t released = 0;                 // guarded by mu: streams may read past this epoch
  bool aborting = false;                 // guarded by mu
  Status first_error;                    // guarded by mu: a stream's failure, the cause
  bool in_session = false;               // guarded by mu: a primary is connected
  int channels_set = 0;                  // guarded by mu: 1 once `control` is set, 2 once `data` is complete
  bool cancelled = false;                // guarded by mu
  StandbyStatus st;                      // guarded by mu
  hypervisor::VmState committed;         // guarded by mu: the state of checkpoint st.committed_epoch
  uint64_t commit_ns = 0;                // guarded by mu
};

Status Standby::Impl::Setup() {
  if (const uint64_t host = uint64_t(::sysconf(_SC_PHYS_PAGES)) * uint64_t(::sysconf(_SC_PAGESIZE));
      host && begin.config.mem_bytes > host) {
    return InvalidArgument("the VM's " + std::to_string(begin.config.mem_bytes >> 20) +
                           " MiB of RAM is more than this host's " + std::to_string(host >> 20) + " MiB");
  }
  FERRY_ASSIGN_OR_RETURN(auto mem, hypervisor::GuestMemory::Create(begin.config.mem_bytes));
  hypervisor::VmConfig config = begin.config;
  if (!config.devices.disk_path.empty() && !o.devices.disk_path) {
    return InvalidArgument("the standby needs its own copy of the disk image: start it with --disk IMAGE "
                           "(the size of the primary's)");
  }
  o.devices.ApplyTo(&config.devices);
  FERRY_ASSIGN_OR_RETURN(vm, hypervisor::Vm::Prepare(config, std::move(mem), o.console));
  if (!config.devices.disk_path.empty()) {
    disk = UniqueFd(::open(config.devices.disk_path.c_str(), O_RDWR | O_CLOEXEC));
    if (!disk.valid()) return ErrnoError("open the standby's disk image " + config.devices.disk_path);
    struct stat sb {};
    if (::fstat(disk.get(), &sb) != 0) return ErrnoError("stat " + config.devices.disk_path);
    disk_bytes = sb.st_size;
  }
  return Status::Ok();
}

void Standby::Impl::FailAll(const Status& why) {
  {
    std::lock_guard lock(mu);
    if (first_error.ok()) first_error = why;
    aborting = true;
    cv.notify_all();
  }
  if (control) control->Close();
  for (auto& ch : data) {
    if (ch) ch->Close();
  }
}

// The channels' own counters (atomics); the session thread only sets `control` and fills
// `data` before it raises channels_set, so reading them under mu is safe.
uint64_t Standby::Impl::ReceivedBytesLocked() const {
  uint64_t sum = channels_set >= 1 ? control->bytes_received() : 0;
  if (channels_set == 2) {
    for (const auto& ch : data) sum += ch->bytes_received();
  }
  return sum;
}

Status Standby::Impl::ReceiveStream(uint32_t index) {
  migrate::Channel& ch = *data[index];
  migrate::PageSink sink(vm->memory(), index, begin.streams);
  Frame f;
  for (uint64_t epoch = 1;; ++epoch) {
    bool first;
    {
      std::lock_guard lock(mu);
      first = st.committed_epoch == 0;
    }
    // The initial sync and the first checkpoint go straight into the replica (it is not a
    // whole state before the first commit anyway); every later checkpoint is staged.
    sink.set_staging(first ? nullptr : &staged[index]);
    ch.set_timeout_ms(first ? o.sync_timeout_ms : o.io_timeout_ms);
    uint64_t pages = 0;
    for (bool end = false; !end;) {
      FERRY_RETURN_IF_ERROR(ch.Receive(&f));
      switch (static_cast<MsgType>(f.type)) {
        case MsgType::kPages: {
          FERRY_ASSIGN_OR_RETURN(uint64_t n, sink.Apply(f.payload));
          pages += n;
          break;
        }
        case MsgType::kEpochEnd: {
          FERRY_ASSIGN_OR_RETURN(migrate::EpochEnd e, migrate::DecodeEpochEnd(f.payload));
          if (e.epoch != epoch || e.pages != pages || e.frames != ch.frames_received() - 1) {
            return Corrupt("data stream " + std::to_string(index) + " ended epoch " + std::to_string(e.epoch) +
                           " with a count mismatch (" + std::to_string(e.pages) + " pages sent, " +
                           std::to_string(pages) + " received, epoch " + std::to_string(epoch) + " expected)");
          }
          std::unique_lock lock(mu);
          arrived[index] = epoch;
          arrived_frames[index] = ch.frames_received();
          cv.notify_all();
          cv.wait(lock, [&] { return released >= epoch || aborting; });
          if (aborting) return Status(ErrorCode::kAborted, "receiving stopped");
          end = true;
          break;
        }
        case MsgType::kError:
          return Status(ErrorCode::kAborted, "the primary gave up: " + migrate::GiveUpReason(f));
        default:
          return Corrupt(std::string("unexpected ") + migrate::MsgTypeName(f.type) + " message on data stream " +
                         std::to_string(index));
      }
    }
  }
}

Status Standby::Impl::ApplyDiskRecord(const migrate::DiskRecord& r, bool stage) {
  if (!disk.valid()) return Corrupt("disk writes for a VM without a disk");
  std::vector<uint8_t> zeros;
  std::span<const uint8_t> bytes = r.data;
  if (r.zero) {
    zeros.assign(r.length, 0);
    bytes = zeros;
  }
  if (stage) {
    staged_disk.push_back(hypervisor::DiskWrite{r.offset, std::vector<uint8_t>(bytes.begin(), bytes.end())});
    return Status::Ok();
  }
  if (!WriteAll(disk.get(), bytes.data(), bytes.size(), r.offset)) return ErrnoError("write the standby's disk image");
  std::lock_guard lock(mu);
  st.disk_bytes += bytes.size();
  return Status::Ok();
}

Status Standby::Impl::Commit(const migrate::CheckpointMsg& msg) {
  uint64_t expected;
  {
    std::lock_guard lock(mu);
    expected = st.committed_epoch + 1;
  }
  if (msg.epoch != expected) {
    return Corrupt("checkpoint " + std::to_string(msg.epoch) + " arrived, " + std::to_string(expected) + " expected");
  }
  if (msg.disk_frames != disk_frames) return Corrupt("checkpoint names disk-write frames that did not arrive");
  {
    // Every stream's pages of this epoch are in (staged); the stream threads wait meanwhile.
    std::unique_lock lock(mu);
    cv.wait(lock, [&] {
      if (aborting) return true;
      for (uint64_t a : arrived) {
        if (a < msg.epoch) return false;
      }
      return true;
    });
    if (aborting) return first_error.ok() ? Status(ErrorCode::kAborted, "receiving stopped") : first_error;
    for (size_t i = 0; i < arrived.size(); ++i) {
      if (arrived_frames[i] != msg.stream_frames[i]) return Corrupt("stream frame counts do not match the checkpoint");
    }
  }
  hypervisor::VmState state;
  FERRY_RETURN_IF_ERROR(hypervisor::DecodeVmState(msg.vm_state, &state).Annotate("checkpoint state"));
  if (state.config.mem_bytes != begin.config.mem_bytes || state.config.vcpus != begin.config.vcpus) {
    return Corrupt("the checkpoint does not match the announced VM");
  }
  if (state.block.present && state.block.sectors * 512 != disk_bytes) {
    return InvalidArgument("the standby's disk image is " + std::to_string(disk_bytes) + " bytes, the primary's " +
                           std::to_string(state.block.sectors * 512));
  }
  // Whole and checked: apply. From here a failure leaves the replica torn, so it is marked
  // unusable rather than left to be promoted.
  uint64_t t0 = MonotonicNs();
  Status applied = Status::Ok();
  for (auto& s : staged) {
    if (applied.ok()) applied = migrate::ApplyStaged(vm->memory(), s);
    s.Clear();
  }
  uint64_t disk_written = 0;
  for (const auto& w : staged_disk) {
    if (applied.ok() && !WriteAll(disk.get(), w.data.data(), w.data.size(), w.offset)) {
      applied = ErrnoError("write the standby's disk image");
    }
    disk_written += w.data.size();
  }
  staged_disk.clear();
  disk_frames = 0;
  std::lock_guard lock(mu);
  if (!applied.ok()) {
    st.committed_epoch = 0;
    return applied.Annotate("applying checkpoint " + std::to_string(msg.epoch) + " (the replica is unusable)");
  }
  apply_ms.push_back(Ms(MonotonicNs() - t0));
  if (apply_ms.size() > EpochLog::kWindow) apply_ms.erase(apply_ms.begin());
  committed = std::move(state);
  st.committed_epoch = msg.epoch;
  st.disk_bytes += disk_written;
  st.state = StandbyState::kReplicating;
  commit_ns = MonotonicNs();
  released = msg.epoch;
  cv.notify_all();
  return Status::Ok();
}

Status Standby::Impl::ControlLoop() {
  Frame f;
  for (;;) {
    FERRY_RETURN_IF_ERROR(control->Receive(&f));
    switch (static_cast<MsgType>(f.type)) {
      case MsgType::kDiskWrites: {
        bool stage;
        {
          std::lock_guard lock(mu);
          stage = st.committed_epoch > 0;
        }
        ++disk_frames;
        FERRY_RETURN_IF_ERROR(migrate::DecodeDiskWrites(
            f.payload, disk_bytes, [&](const migrate::DiskRecord& r) { return ApplyDiskRecord(r, stage); }));
        break;
      }
      case MsgType::kCheckpoint: {
        FERRY_ASSIGN_OR_RETURN(migrate::CheckpointMsg msg, migrate::DecodeCheckpoint(f.payload, begin.streams));
        FERRY_RETURN_IF_ERROR(Commit(msg));
        FERRY_RETURN_IF_ERROR(control->Send(MsgType::kCheckpointAck, migrate::EncodeEpoch(msg.epoch)));
        // The next checkpoint message comes after an epoch and the whole shipment of its pages,
        // which on a slow link may take longer than io_timeout_ms while the data streams are
        // busy. Those streams hear from the primary every epoch (its end, at least) within
        // io_timeout_ms and fail the session when it goes silent, so the control stream only
        // needs to catch a primary that sends pages but no checkpoint.
        control->set_timeout_ms(std::max(o.io_timeout_ms, o.sync_timeout_ms));
        break;
      }
      case MsgType::kHandover: {
        FERRY_ASSIGN_OR_RETURN(uint64_t generation, migrate::DecodeEpoch(f.payload));
        {
          std::lock_guard lock(mu);
          if (Status s = ActivateLocked(generation, nullptr); !s.ok()) {
            control->Fail("the standby could not run the replica: " + s.message());
            return s.Annotate("handover");
          }
          st.handed_over = true;
          handed_vm = std::move(vm);
        }
        FERRY_RETURN_IF_ERROR(control->Send(MsgType::kHandoverDone, migrate::EncodeEpoch(generation)));
        return Status(ErrorCode::kAborted, "the primary ended replication: it handed the VM over");
      }
      case MsgType::kAbort:
      case MsgType::kError:
        return Status(ErrorCode::kAborted, "the primary ended replication: " + migrate::GiveUpReason(f));
      default:
        return Corrupt(std::string("unexpected ") + migrate::MsgTypeName(f.type) + " message on the control stream");
    }
  }
}

Status Standby::Impl::Session() {
  migrate::PeerGateOptions g;
  g.security = o.security;
  g.session = session;
  g.io_timeout_ms = o.sync_timeout_ms;
  g.who = "ferry standby";
  FERRY_ASSIGN_OR_RETURN(auto peers, migrate::PeerGate::Start(*listener, g));
  {
    std::lock_guard lock(mu);
    if (cancelled) return Status(ErrorCode::kAborted, "the standby was cancelled");
    gate = peers.get();
  }
  Status accepted = AcceptPrimary(*peers);
  {
    std::lock_guard lock(mu);
    gate = nullptr;
    st.refused_peers += peers->refused();
  }
  // Every peer is here (or the wait ended): later connections wait in the backlog, unanswered.
  peers.reset();
  if (!accepted.ok()) return accepted;
  return Replicate();
}

Status Standby::Impl::AcceptPrimary(migrate::PeerGate& peers) {
  FERRY_ASSIGN_OR_RETURN(auto peer, peers.Next(migrate::Role::kControl, o.accept_timeout_ms));
  control = std::move(peer.channel);
  Frame f;
  FERRY_RETURN_IF_ERROR(control->Expect(MsgType::kBegin, &f));
  auto b = migrate::DecodeBegin(f.payload);
  if (!b.ok()) {
    control->Fail(b.status().message());
    return b.status();
  }
  if (!b->replication) {
    control->Fail("this is a replication standby, not a migration destination (use ferry incoming)");
    return InvalidArgument("a migration source connected to the standby");
  }
  if (b->generation < o.min_generation) {
    std::string why = "stale generation: the primary's VM is generation " + std::to_string(b->generation) +
                      ", this standby expects " + std::to_string(o.min_generation) + " or newer (a newer primary exists)";
    control->Fail(why);
    return Status(ErrorCode::kAborted, why);
  }
  begin = *b;
  {
    std::lock_guard lock(mu);
    st.primary = control->connection().PeerAddress();
    st.generation = begin.generation;
    st.state = StandbyState::kSyncing;
    in_session = true;
    channels_set = 1;
  }
  if (Status s = Setup(); !s.ok()) {
    control->Fail("the standby cannot hold this VM: " + s.message());
    return s;
  }
  FERRY_RETURN_IF_ERROR(control->Send(MsgType::kReady));
  data.resize(begin.streams);
  for (uint32_t n = 0; n < begin.streams; ++n) {
    FERRY_ASSIGN_OR_RETURN(auto p, peers.Next(migrate::Role::kData, o.sync_timeout_ms));
    if (p.hello.stream >= begin.streams || data[p.hello.stream]) {
      p.channel->Fail("invalid or duplicate stream index");
      return Corrupt("the primary opened stream " + std::to_string(p.hello.stream) + " twice or out of range");
    }
    data[p.hello.stream] = std::move(p.channel);
  }
  return Status::Ok();
}

Status Standby::Impl::Replicate() {
  staged.resize(begin.streams);
  {
    std::lock_guard lock(mu);
    arrived.assign(begin.streams, 0);
    arrived_frames.assign(begin.streams, 0);
    channels_set = 2;
  }
  std::vector<std::thread> threads;
  for (uint32_t i = 0; i < begin.streams; ++i) {
    threads.emplace_back([this, i] {
      Status s = Guarded("receiving a data stream", [&] { return ReceiveStream(i); });
      if (!s.ok()) FailAll(s);
    });
  }
  control->set_timeout_ms(o.sync_timeout_ms);
  // Guarded: an exception (out of memory staging a checkpoint) would otherwise unwind past
  // the joinable stream threads and end the process, and the replica with it.
  Status result = Guarded("the standby's control stream", [this] { return ControlLoop(); });
  FailAll(result);
  for (auto& t : threads) t.join();
  std::lock_guard lock(mu);
  // The cause: a stream's own failure rather than the wake-up it caused on the control.
  if (result.code() != ErrorCode::kAborted && !first_error.ok() && first_error.code() != ErrorCode::kAborted) {
    result = first_error;
  }
  return result;
}

Standby::Standby(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Standby::~Standby() { Cancel(); }

Result<std::unique_ptr<Standby>> Standby::Listen(const StandbyOptions& options) {
  FERRY_ASSIGN_OR_RETURN(migrate::Endpoint at, migrate::ParseEndpoint(options.listen));
  auto impl = std::make_unique<Impl>(options);
  FERRY_ASSIGN_OR_RETURN(impl->listener, migrate::ListenTcp(at));
  impl->st.state = StandbyState::kWaiting;
  return std::unique_ptr<Standby>(new Standby(std::move(impl)));
}

std::string Standby::address() const { return impl_->listener->LocalAddress(); }

Status Standby::Run() {
  Impl& m = *impl_;
  Status why = m.Session();
  m.listener->Close();  // one primary per standby
  uint64_t partial = 0;
  for (const auto& s : m.staged) partial += s.index.size();
  std::lock_guard lock(m.mu);
  bool ended = why.code() == ErrorCode::kAborted && why.message().rfind("the primary ended", 0) == 0;
  // Anything of the next checkpoint that had arrived is thrown away: the replica stays the
  // last committed one.
  if (partial > 0 || !m.staged_disk.empty() || m.disk_frames > 0 ||
      std::any_of(m.arrived.begin(), m.arrived.end(), [&](uint64_t a) { return a > m.st.committed_epoch; })) {
    if (m.st.committed_epoch > 0) ++m.st.discarded;
  }
  for (auto& s : m.staged) s.Clear();
  m.staged_disk.clear();
  m.in_session = false;
  if (m.st.state != StandbyState::kPromoted) {
    m.st.state = m.cancelled ? StandbyState::kCancelled : ended ? StandbyState::kEnded : StandbyState::kPrimaryLost;
    m.st.error = why.message();
  }
  m.cv.notify_all();
  return why;
}

StandbyStatus Standby::status() const {
  std::lock_guard lock(impl_->mu);
  StandbyStatus s = impl_->st;
  if (impl_->commit_ns) s.since_commit_ms = Ms(MonotonicNs() - impl_->commit_ns);
  s.apply_ms_p50 = Percentile(impl_->apply_ms, 50);
  s.wire_bytes = impl_->ReceivedBytesLocked();
  return s;
}

Status Standby::Impl::ActivateLocked(uint64_t generation, PromoteStats* stats) {
  const uint64_t t0 = MonotonicNs();
  if (st.state == StandbyState::kPromoted) return InvalidArgument("this standby was promoted already");
  if (st.committed_epoch == 0) {
    return InvalidArgument(std::string("no whole checkpoint has arrived yet (state ") + StandbyStateName(st.state) + "): nothing to promote");
  }
  if (generation == 0) generation = begin.generation + 1;
  if (generation <= begin.generation) {
    return InvalidArgument("a promotion must raise the generation (the primary's is " +
                           std::to_string(begin.generation) + ")");
  }
  // Checkpoints arrive no more: the replica and its state are ours alone now.
  if (disk.valid() && ::fdatasync(disk.get()) != 0) return ErrnoError("flush the standby's disk image");
  FERRY_RETURN_IF_ERROR(vm->LoadState(committed).Annotate("load checkpoint " + std::to_string(st.committed_epoch)));
  FERRY_RETURN_IF_ERROR(vm->Start().Annotate("start the promoted VM"));
  st.state = StandbyState::kPromoted;
  st.generation = generation;
  if (stats) {
    stats->epoch = st.committed_epoch;
    stats->generation = generation;
    stats->since_commit_ms = Ms(t0 - commit_ns);
    stats->promote_ms = Ms(MonotonicNs() - t0);
  }
  return Status::Ok();
}

Result<std::unique_ptr<hypervisor::Vm>> Standby::Promote(bool force, uint64_t generation, PromoteStats* stats) {
  Impl& m = *impl_;
  const uint64_t t0 = MonotonicNs();
  std::unique_lock lock(m.mu);
  if (m.st.state == StandbyState::kPromoted) return InvalidArgument("this standby was promoted already");
  if (m.st.committed_epoch == 0) {
    return InvalidArgument(std::string("no whole checkpoint has arrived yet (state ") + StandbyStateName(m.st.state) + "): nothing to promote");
  }
  if (m.st.state == StandbyState::kCancelled) return Refused("this standby was stopped: nothing to promote");
  if (m.st.state == StandbyState::kEnded && !force) {
    // The primary ended replication on purpose and runs on: a replica started now would be
    // a second copy of the VM.
    return Refused("the primary ended replication and runs on (" + m.st.error +
                   "): promoting would run a second copy; --force if you have stopped it yourself");
  }
  if (m.in_session) {
    if (!force) {
      return Status(ErrorCode::kBusy, "the primary at " + m.st.primary +
                                          " is still replicating: promote once it is gone, or --force (then stop "
                                          "the old primary yourself)");
    }
    lock.unlock();
    m.FailAll(Status(ErrorCode::kAborted, "promoted by force"));
    lock.lock();
    m.cv.wait(lock, [&] { return !m.in_session; });
  }
  if (m.st.committed_epoch == 0) return Internal("the replica became unusable while promoting");
  FERRY_RETURN_IF_ERROR(m.ActivateLocked(generation, stats));
  if (stats) stats->promote_ms = Ms(MonotonicNs() - t0);
  return std::move(m.vm);
}

std::unique_ptr<hypervisor::Vm> Standby::TakeHandedOver() {
  std::lock_guard lock(impl_->mu);
  return std::move(impl_->handed_vm);
}

void Standby::Cancel() {
  if (!impl_) return;
  {
    std::lock_guard lock(impl_->mu);
    impl_->cancelled = true;
  }
  impl_->listener->Close();
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->gate) impl_->gate->Shutdown();
  }
  impl_->FailAll(Status(ErrorCode::kAborted, "the standby was cancelled"));
}

}  // namespace ferry::replication
