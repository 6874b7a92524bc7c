"""QEMU as the peer in migration benchmarks: boot guest/qemu's dirtier in two local QEMUs and
live-migrate it, reporting QEMU's own figures (query-migrate) in the same shape as Ferry's.

Stdlib only. Everything started here (QEMU processes, network namespaces, temp files) is
removed by PID or by name in a finally block, on success and on failure.

    from qmp_peer import run_qemu_migration, host_tsc_khz
    run_qemu_migration("build/guests/qemu-dirtier.bin", 1024, 50, "tuned", host_tsc_khz(),
                       "/dev/shm", link="2gbit")
"""
import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

QEMU = "qemu-system-x86_64"
DEADLINE_S = 120  # a migration still running then counts as not converged
BOOT_TIMEOUT_S = 60  # SeaBIOS and the guest's CPL0 boot are emulated here: seconds, not ms
# Fresh guest RAM costs milliseconds per first touch here, so the dirtier needs ~2 s to reach
# its paced rate; migrating earlier would measure a guest dirtying less than asked.
WARMUP_REPORTS = 3

# Tuned = the settings QEMU's docs (docs/devel/migration.rst, qapi/migration.json) give for
# a fast link: no bandwidth cap (QEMU's default max-bandwidth is 128 MiB/s), multifd streams
# (one per core here), auto-converge so a guest dirtying faster than the link is throttled
# instead of never converging. downtime-limit stays at QEMU's default 300 ms in both configs.
TUNED_CAPS = {"multifd": True, "auto-converge": True}
TUNED_PARAMS = {"max-bandwidth": 1 << 40, "multifd-channels": 2, "multifd-compression": "zstd"}
INCOMING_ONLY = ("multifd",)  # what the destination must also be told before migrate-incoming
# Post-copy (issue 20's peer row): postcopy-ram on both ends (QEMU 7.2 cannot combine it with
# multifd), no bandwidth cap, and migrate-start-postcopy once the first pass is done
# (dirty-sync-count 2), as QEMU's docs suggest: the remaining dirty pages follow on demand.
POSTCOPY_CAPS = {"postcopy-ram": True}
POSTCOPY_PARAMS = {"max-bandwidth": 1 << 40}


def _pages_line(path, which):
    """The dirtier's first (which=0) or last (-1) "pages=N ms=T" line in a console log:
    (pages, ms) or None."""
    try:
        with open(path) as f:
            found = re.findall(r"pages=(\d+) ms=(\d+)", f.read())
    except FileNotFoundError:
        return None
    return (int(found[which][0]), int(found[which][1])) if found else None


def host_tsc_khz():
    """The host TSC rate the guest's rdtsc counts at, as KVM reports it (KVM_GET_TSC_KHZ on a
    scratch vCPU: the same call Ferry's pvclock makes), so both guests share one clock."""
    kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    fds = [kvm]
    try:
        fds.append(fcntl.ioctl(kvm, 0xAE01, 0))  # KVM_CREATE_VM
        fds.append(fcntl.ioctl(fds[-1], 0xAE41, 0))  # KVM_CREATE_VCPU 0
        return fcntl.ioctl(fds[-1], 0xAEA3, 0)  # KVM_GET_TSC_KHZ
    finally:
        for fd in reversed(fds):
            os.close(fd)


class Qmp:
    """A QMP client over a unix socket: one command at a time, async events skipped."""

    def __init__(self, path, proc, timeout=10):
        end = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if proc.poll() is not None or time.monotonic() > end:
                    raise
                time.sleep(0.05)
        self.sock.settimeout(30)
        self.buf = b""
        self._read()  # greeting
        self.execute("qmp_capabilities")

    def _read(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("QMP socket closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def execute(self, cmd, args=None):
        msg = {"execute": cmd, **({"arguments": args} if args else {})}
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = self._read()
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise RuntimeError(f"QMP {cmd}: {reply['error']}")

    def close(self):
        self.sock.close()


class Link:
    """Two network namespaces joined by a veth pair with 127.31.0.1/.2, each end shaped by a
    tbf qdisc at `rate` (e.g. "2gbit"; "unlimited": no qdisc, ~18 Gbit/s here): a real
    bandwidth limit for the migration stream, and a byte counter that sees what really went on
    the wire. (netem is not available on these kernels; tbf is.)"""

    count = 0

    def __init__(self, rate):
        Link.count += 1
        tag = f"fq{os.getpid() % 100000}x{Link.count % 1000}"  # interface names: 15 chars at most
        self.ns = (tag + "s", tag + "d")
        self.dev = (tag + "a", tag + "b")
        self.addr = ("127.31.0.1", "127.31.0.2")
        self.created = []
        try:
            for ns in self.ns:
                _sh("ip", "netns", "add", ns)
                self.created.append(ns)
            _sh("ip", "link", "add", self.dev[0], "type", "veth", "peer", "name", self.dev[1])
            for ns, dev, addr in zip(self.ns, self.dev, self.addr):
                _sh("ip", "link", "set", dev, "netns", ns)
                # 127.x packets off `lo` are martians unless route_localnet is on.
                _sh(*self.exec(ns), "sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1",
                    f"net.ipv4.conf.{dev}.route_localnet=1")
                _sh(*self.exec(ns), "ip", "link", "set", "lo", "up")
                _sh(*self.exec(ns), "ip", "addr", "add", addr + "/24", "dev", dev)
                _sh(*self.exec(ns), "ip", "link", "set", dev, "up")
                if rate != "unlimited":
                    _sh(*self.exec(ns), "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate,
                        "burst", "1mb", "latency", "50ms")
        except BaseException:
            self.close()
            raise

    @staticmethod
    def exec(ns):
        return ["ip", "netns", "exec", ns]

    def tx_bytes(self):
        """Bytes the source end put on the wire: the ground truth for `bytes`."""
        return int(subprocess.check_output(
            self.exec(self.ns[0]) + ["cat", f"/sys/class/net/{self.dev[0]}/statistics/tx_bytes"]))

    def close(self):
        for ns in self.created:  # deleting a namespace deletes its veth end, and so the pair
            subprocess.run(["ip", "netns", "del", ns], check=False)
        self.created = []
        # A pair not yet moved into a namespace (setup failed halfway) lives in ours.
        subprocess.run(["ip", "link", "del", self.dev[0]], check=False, stderr=subprocess.DEVNULL)


def _sh(*argv):
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_ticks(pid):
    """(utime+stime of the whole process, of its vCPU threads), in clock ticks. The process
    figure keeps the time of threads that already exited (multifd senders)."""
    def ticks(path):
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime (stat fields 14, 15)

    vcpu = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if re.match(r"CPU \d+/KVM", f.read()):
                    vcpu += ticks(f"/proc/{pid}/task/{tid}/stat")
        except FileNotFoundError:
            pass
    return ticks(f"/proc/{pid}/stat"), vcpu


def _wait_for_line(path, pattern, count, timeout, proc):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"QEMU exited with {proc.returncode} before '{pattern}'")
        try:
            with open(path) as f:
                if len(re.findall(pattern, f.read(), re.M)) >= count:
                    return
        except FileNotFoundError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"no '{pattern}' x{count} in {path} after {timeout} s")


def qemu_argv(image, mem_mib, dirty_mbps, tsc_khz, qmp_path, console_path):
    """The QEMU command line for one side (the destination adds -incoming defer)."""
    return [QEMU, "-enable-kvm", "-cpu", "qemu64", "-nodefaults", "-net", "none", "-display", "none",
            "-no-reboot", "-name", "peer,debug-threads=on",  # names vCPU threads "CPU n/KVM"
            "-m", str(mem_mib), "-kernel", image,
            "-append", f"rate_mbps={dirty_mbps} tsc_khz={tsc_khz}",
            "-chardev", f"file,id=dbg,path={console_path}", "-device", "isa-debugcon,iobase=0xe9,chardev=dbg",
            "-qmp", f"unix:{qmp_path},server=on,wait=off"]


def run_qemu_migration(qemu_image, mem_mib, dirty_mbps, config, tsc_khz, workdir, link=None,
                       deadline_s=DEADLINE_S):
    """Migrate one QEMU guest dirtying `dirty_mbps` between two local QEMUs.

    config: "default" (QEMU's defaults untouched), "tuned" (TUNED_CAPS/TUNED_PARAMS) or
    "postcopy" (POSTCOPY_CAPS/POSTCOPY_PARAMS, switched once the first pass is done).
    link: None for plain 127.0.0.1 loopback, or a tbf rate ("1gbit", or "unlimited") for a
    veth link between two namespaces. Returns the figures as a dict; raises if the guest never boots."""
    assert config in ("default", "tuned", "postcopy")
    tmp = tempfile.mkdtemp(prefix="qmp-peer-", dir=workdir)
    net, procs, qmps = None, [], []
    try:
        net = Link(link) if link else None
        host, port = (net.addr[1], 4444) if net else ("127.0.0.1", _free_port())
        for i, name in enumerate(("src", "dst")):
            argv = qemu_argv(os.path.abspath(qemu_image), mem_mib, dirty_mbps, tsc_khz,
                             f"{tmp}/{name}.qmp", f"{tmp}/{name}.log")
            if name == "dst":
                argv += ["-incoming", "defer"]  # so multifd can be set before it listens
            if net:
                argv = Link.exec(net.ns[i]) + argv  # ip execs QEMU: the PID is QEMU's
            err = open(f"{tmp}/{name}.err", "w")
            procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err))
            err.close()
            qmps.append(Qmp(f"{tmp}/{name}.qmp", procs[-1]))
        src, dst = qmps
        if config == "tuned":
            for q, side in ((src, "src"), (dst, "dst")):
                caps = {k: v for k, v in TUNED_CAPS.items() if side == "src" or k in INCOMING_ONLY}
                q.execute("migrate-set-capabilities",
                          {"capabilities": [{"capability": k, "state": v} for k, v in caps.items()]})
                params = TUNED_PARAMS if side == "src" else {
                    k: v for k, v in TUNED_PARAMS.items() if k.startswith("multifd")}
                q.execute("migrate-set-parameters", params)
        if config == "postcopy":
            for q in (src, dst):
                q.execute("migrate-set-capabilities",
                          {"capabilities": [{"capability": k, "state": v} for k, v in POSTCOPY_CAPS.items()]})
            src.execute("migrate-set-parameters", POSTCOPY_PARAMS)
        dst.execute("migrate-incoming", {"uri": f"tcp:{host}:{port}"})
        params = src.execute("query-migrate-parameters")

        _wait_for_line(f"{tmp}/src.log", r"^pages=", WARMUP_REPORTS, BOOT_TIMEOUT_S, procs[0])
        tx0 = net.tx_bytes() if net else 0
        cpu0 = [_cpu_ticks(p.pid) for p in procs]
        before = _pages_line(f"{tmp}/src.log", -1)
        t0 = time.monotonic()
        src.execute("migrate", {"uri": f"tcp:{host}:{port}"})
        switched = False
        while True:
            info = src.execute("query-migrate")
            status = info.get("status")
            if (config == "postcopy" and not switched and status == "active"
                    and info.get("ram", {}).get("dirty-sync-count", 0) >= 2):
                src.execute("migrate-start-postcopy")
                switched = True
            if status in ("failed", "cancelled"):
                break
            if status == "completed":
                # QEMU flips the status before it stores total-time and downtime: re-read.
                for _ in range(40):
                    if info.get("total-time"):
                        break
                    time.sleep(0.05)
                    info = src.execute("query-migrate")
                break
            if time.monotonic() - t0 > deadline_s:
                src.execute("migrate_cancel")
                break
            time.sleep(0.05)
        waited_ms = (time.monotonic() - t0) * 1000
        cpu1 = [_cpu_ticks(p.pid) for p in procs]
        hz = os.sysconf("SC_CLK_TCK")
        cpu_all = sum(b[0] - a[0] for a, b in zip(cpu0, cpu1)) / hz
        cpu_vcpu = sum(b[1] - a[1] for a, b in zip(cpu0, cpu1)) / hz
        converged = status == "completed"
        ram = info.get("ram", {})
        result = {
            "system": "qemu", "config": config, "dirty_mbps": dirty_mbps, "mem_mib": mem_mib,
            "downtime_ms": info.get("downtime") if converged else None,
            "total_ms": info.get("total-time") if converged else round(waited_ms),
            # ram.transferred already includes multifd-bytes, but QEMU 7.2 counts multifd pages
            # before compression; wire_bytes (links only) is what the sender put on the wire.
            "bytes": ram.get("transferred"),
            # The guest spins when idle (no hlt at CPL3), so the vCPU thread is always busy;
            # cpu_s_migration leaves it out and is the figure to compare with Ferry's.
            "cpu_s": round(cpu_all, 3), "cpu_s_migration": round(cpu_all - cpu_vcpu, 3),
            "converged": converged, "status": status,
            "setup_ms": info.get("setup-time"), "link": link or "loopback",
            "multifd_bytes": ram.get("multifd-bytes"), "dirty_sync_count": ram.get("dirty-sync-count"),
            "max_bandwidth": params.get("max-bandwidth"), "downtime_limit_ms": params.get("downtime-limit"),
            "postcopy_requests": ram.get("postcopy-requests"),
        }
        if net:
            result["wire_bytes"] = net.tx_bytes() - tx0
        if converged:  # the guest must go on dirtying on the destination
            def reports():
                with open(f"{tmp}/dst.log") as f:
                    return f.read().count("pages=")
            seen, end = reports(), time.monotonic() + 3
            while reports() == seen and time.monotonic() < end:
                time.sleep(0.1)
            result["guest_runs_on_dst"] = reports() > seen
            # The destination's console starts at resume: its first report's window holds the
            # migration's pause as the guest's own clock saw it (same measure as Ferry's dirtier).
            with open(f"{tmp}/dst.log") as f:
                gap = re.search(r"max_gap_us=(\d+)", f.read())
            result["guest_pause_ms"] = int(gap.group(1)) / 1000 if gap else None
            # The guest's own throughput across the migration: its page counter from its last
            # report on the source to its first on the destination, over its own clock.
            after = _pages_line(f"{tmp}/dst.log", 0)
            if before and after and after[1] > before[1]:
                result["guest_mbps_during"] = round((after[0] - before[0]) * 4096 / ((after[1] - before[1]) * 1000), 1)
                result["guest_share_during"] = round(result["guest_mbps_during"] / dirty_mbps, 3) if dirty_mbps else None
        return result
    finally:
        for q in qmps:
            q.close()
        for p in procs:
            p.kill()
            p.wait()
        if net:
            net.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="One QEMU live migration; prints a JSON line.")
    ap.add_argument("image")
    ap.add_argument("--mem-mib", type=int, default=1024)
    ap.add_argument("--dirty-mbps", type=int, default=50)
    ap.add_argument("--config", choices=("default", "tuned", "postcopy"), default="default")
    ap.add_argument("--link", default=None, help="tbf rate, e.g. 2gbit (default: plain loopback)")
    ap.add_argument("--workdir", default="/dev/shm")
    a = ap.parse_args()
    print(json.dumps(run_qemu_migration(a.image, a.mem_mib, a.dirty_mbps, a.config, host_tsc_khz(),
                                        a.workdir, a.link)), flush=True)
