"""bench/migrate-vs-qemu: Ferry and QEMU migrate the same 1 GiB guest under the same dirty
rates over the same link, side by side in one run.

Both guests dirty memory with the same code and data (guest/workloads/dirtier.c and
guest/qemu/qemu_dirtier.c: whole pages of xorshift words, uniform over the working set, paced
at rate_mbps * 256 pages/s). The link is two network namespaces joined by a veth pair shaped
by tbf at --link (default 2gbit = 250 MB/s), so "above the link" means something. QEMU runs
twice per rate: its defaults, and tuned (qmp_peer.TUNED_*). One JSON object per line on
stdout; medians, ratios and the plot path on stderr.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmp_peer import Link, host_tsc_khz, run_qemu_migration  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FERRY = os.path.join(ROOT, "build", "bin", "ferry")
WARMUP_S = 3  # as long as QEMU's guest is given (3 of its 1 s reports): first touches are slow here
DEADLINE_S = 60


def _ticks(path):
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _cpu(pid):
    """(process utime+stime, its vCPU threads' share) in clock ticks."""
    vcpu = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().startswith("vcpu "):
                    vcpu += _ticks(f"/proc/{pid}/task/{tid}/stat")
        except (FileNotFoundError, ProcessLookupError):
            pass
    return _ticks(f"/proc/{pid}/stat"), vcpu


def _status(sock):
    out = subprocess.run([FERRY, "status", "--api", sock, "--json"], capture_output=True, text=True, timeout=10)
    return json.loads(out.stdout) if out.returncode == 0 else None


def _first_report_here(sock):
    """The dirtier's first report on the destination (fields), which holds the migration's
    pause as the guest's own loop saw it (QEMU's guest reports the same), or None."""
    # A VMM that has just started may answer before its guest's first report (no "report").
    first = _status(sock)
    seen = (first or {}).get("report", {}).get("text", "")
    end = time.monotonic() + 5
    while time.monotonic() < end:
        report = (_status(sock) or {}).get("report", {})
        if report.get("text", "") != seen and "window_max_pause_us" in report.get("fields", {}):
            return report["fields"]
        time.sleep(0.05)
    return None


def _guest_mbps(before, after):
    """The guest's own dirtying rate between two of its reports (pages, elapsed_us): MB/s."""
    try:
        pages = int(after["pages"]) - int(before["pages"])
        us = int(after["elapsed_us"]) - int(before["elapsed_us"])
    except (KeyError, TypeError, ValueError):
        return None
    return round(pages * 4096 / us, 1) if us > 0 else None


def run_ferry_migration(mem_mib, dirty_mbps, workdir, link, mode="precopy", tls=True):
    """tls: both ends keyed (TLS 1.3 with the key as PSK, the product's default between hosts);
    False: both ends --insecure (plaintext), for issue 18's TLS-vs-plaintext rows."""
    tmp = tempfile.mkdtemp(prefix="ferry-bench-", dir=workdir)
    net, procs = None, []
    try:
        net = Link(link) if link else None
        key = f"{tmp}/key"
        with open(key, "w") as f:
            f.write(os.urandom(16).hex())
        os.chmod(key, 0o600)
        wrap = (lambda i, argv: Link.exec(net.ns[i]) + argv) if net else (lambda i, argv: argv)
        listen = f"{net.addr[1]}:4410" if net else "127.0.0.1:0"
        src = subprocess.Popen(wrap(0, [FERRY, "run", os.path.join(ROOT, "build/guests/dirtier.elf"), "--mem",
                                        f"{mem_mib}M", "--vcpus", "1", "--api", f"{tmp}/src.sock", "--",
                                        f"rate_mbps={dirty_mbps}"]),
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/src.err", "w"))
        procs.append(src)
        security = ["--key", key] if tls else ["--insecure"]
        dst = subprocess.Popen(wrap(1, [FERRY, "incoming", "--listen", listen] + security + ["--api",
                                        f"{tmp}/dst.sock"]),
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/dst.err", "w"))
        procs.append(dst)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            st = _status(f"{tmp}/src.sock")
            with open(f"{tmp}/dst.err") as f:
                listening = re.search(r"listening on (\S+)", f.read())
            if st and "achieved_mbps" in st["report"]["fields"] and listening:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("ferry did not start: " + open(f"{tmp}/src.err").read() + open(f"{tmp}/dst.err").read())
        to = listening.group(1)
        time.sleep(WARMUP_S)
        # The source VMM exits when the migration completes: sample its vCPU time until then.
        cpu0 = [_cpu(p.pid) for p in procs]
        last = {"src": cpu0[0]}
        done = threading.Event()

        def sample():
            while not done.is_set():
                try:
                    now = _cpu(src.pid)
                except (FileNotFoundError, ProcessLookupError):
                    return
                if now[1] < last["src"][1]:
                    return  # exiting: the vCPU threads are gone, keep the last full reading
                last["src"] = now
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        before = (_status(f"{tmp}/src.sock") or {}).get("report", {}).get("fields")
        t0 = time.monotonic()
        mig = subprocess.run(wrap(0, [FERRY, "migrate", "--api", f"{tmp}/src.sock", "--to", to] + security +
                                     ["--deadline-s", str(DEADLINE_S), "--mode", mode, "--json"]),
                             capture_output=True, text=True, timeout=DEADLINE_S + 60)
        wall_ms = (time.monotonic() - t0) * 1000
        done.set()
        sampler.join()
        r = json.loads(mig.stdout.strip().splitlines()[-1]) if mig.stdout.strip() else {"ok": False}
        converged = bool(r.get("ok")) and r.get("converged", False)
        if converged:
            _, status, usage = os.wait4(src.pid, 0)
            src_total = (usage.ru_utime + usage.ru_stime) * os.sysconf("SC_CLK_TCK")
            src.returncode = os.waitstatus_to_exitcode(status)
        else:
            src_total = _cpu(src.pid)[0]
        dst_now = _cpu(dst.pid)
        hz = os.sysconf("SC_CLK_TCK")
        cpu_all = (src_total - cpu0[0][0] + dst_now[0] - cpu0[1][0]) / hz
        cpu_vcpu = (last["src"][1] - cpu0[0][1] + dst_now[1] - cpu0[1][1]) / hz
        result = {
            "system": "ferry", "config": ("default" if mode == "precopy" else mode) + ("" if tls else "-plaintext"),
            "dirty_mbps": dirty_mbps,
            "mem_mib": mem_mib,
            "downtime_ms": round(r["downtime_ms"], 3) if converged else None,
            "total_ms": round(r["total_ms"], 1) if converged else round(wall_ms),
            "bytes": r.get("bytes"), "cpu_s": round(cpu_all, 3), "cpu_s_migration": round(max(0.0, cpu_all - cpu_vcpu), 3),
            "converged": converged, "link": link or "loopback",
        }
        if converged:
            after = _first_report_here(f"{tmp}/dst.sock")
            pause = int(after["window_max_pause_us"]) / 1000 if after else None
            mbps = _guest_mbps(before, after) if before and after else None
            p = r.get("postcopy", {})
            result.update({"guest_mbps_during": mbps, "guest_share_during": round(mbps / dirty_mbps, 3)
                           if mbps is not None and dirty_mbps else None,
                           "postcopy": p.get("used", False), "postcopy_ms": p.get("ms"), "faults": p.get("faults"),
                           "fault_p50_us": p.get("fault_p50_us"), "fault_p99_us": p.get("fault_p99_us")})
            result.update({"guest_pause_ms": pause,
                           "clock_gap_ms": round(r["guest_pause_ms"], 3), "rounds": r["rounds"],
                           "throttle_max": r["throttle_max"], "pages": r["pages"]})
        else:
            result["error"] = r.get("error", mig.stderr.strip()[-300:])
        if net:
            result["wire_bytes"] = net.tx_bytes()
        return result
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=10)
            except ChildProcessError:
                pass
        if net:
            net.close()
        shutil.rmtree(tmp, ignore_errors=True)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {("ferry", "default"): "Ferry", ("qemu", "default"): "QEMU default", ("qemu", "tuned"): "QEMU tuned"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "downtime_ms", "downtime (ms, median)"), (axes[1], "total_ms", "total time (ms, median)")):
        for (system, config), name in series.items():
            xs, ys = [], []
            for rate in sorted({r["dirty_mbps"] for r in rows}):
                vals = [r[key] for r in rows if r["system"] == system and r["config"] == config
                        and r["dirty_mbps"] == rate and r["converged"] and r.get(key) is not None]
                if vals:
                    xs.append(rate)
                    ys.append(statistics.median(vals))
            ax.plot(xs, ys, marker="o", label=name)
        ax.set_yscale("log")
        ax.set_xlabel("guest dirty rate (MB/s)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.suptitle("1 GiB guest live migration, Ferry vs QEMU (missing point = did not converge)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report_postcopy(rows):
    """Issue 20's targets at each rate: Ferry post-copy total time <= 0.7x QEMU post-copy's, and
    the guest keeps >= 50% of its throughput during the migration."""
    for rate in sorted({r["dirty_mbps"] for r in rows}):
        def med(system, config, key):
            vals = [r[key] for r in rows if (r["system"], r["config"], r["dirty_mbps"]) == (system, config, rate)
                    and r["converged"] and r.get(key) is not None]
            return statistics.median(vals) if vals else None
        line = [f"rate {rate} MB/s:"]
        for system, config in (("ferry", "default"), ("ferry", "postcopy"), ("ferry", "auto"), ("qemu", "postcopy")):
            line.append(f"{system} {config}: total {med(system, config, 'total_ms')} ms, downtime "
                        f"{med(system, config, 'downtime_ms')} ms, guest share {med(system, config, 'guest_share_during')}"
                        + (f", fault p50/p99 {med(system, config, 'fault_p50_us')}/{med(system, config, 'fault_p99_us')} us"
                           if system == "ferry" and config != "default" else ""))
        f_total, q_total = med("ferry", "postcopy", "total_ms"), med("qemu", "postcopy", "total_ms")
        ratio = f"{f_total / q_total:.3f}" if f_total is not None and q_total else "n/a"
        line.append(f"ratio total ferry/qemu post-copy {ratio} (target <= 0.7); "
                    f"guest share ferry post-copy {med('ferry', 'postcopy', 'guest_share_during')} (target >= 0.5)")
        print("; ".join(line), file=sys.stderr)


def report_tls(rows):
    """Issue 18's targets: TLS costs <= 15% of plaintext throughput and <= 10% more downtime."""
    for rate in sorted({r["dirty_mbps"] for r in rows}):
        def med(config, key):
            vals = [r[key] for r in rows if (r["config"], r["dirty_mbps"]) == (config, rate) and r["converged"]
                    and r.get(key) is not None]
            return statistics.median(vals) if vals else None
        line = []
        for config in ("default", "default-plaintext"):
            total, nbytes = med(config, "total_ms"), med(config, "bytes")
            gbs = nbytes / total / 1e6 if total and nbytes else None
            line.append(f"{config}: total {total} ms, downtime {med(config, 'downtime_ms')} ms, "
                        f"{gbs and round(gbs, 3)} GB/s on the wire")
        tls_t, pt_t = med("default", "total_ms"), med("default-plaintext", "total_ms")
        tls_d, pt_d = med("default", "downtime_ms"), med("default-plaintext", "downtime_ms")
        ratio = lambda a, b: f"{a / b:.3f}" if a is not None and b else "n/a"
        print(f"rate {rate} MB/s: " + "; ".join(line) + f"; TLS/plaintext total {ratio(tls_t, pt_t)} "
              f"(target <= 1.176, i.e. >= 85% of the throughput), downtime {ratio(tls_d, pt_d)} (target <= 1.1)",
              file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mem-mib", type=int, default=1024)
    ap.add_argument("--rates", default="0,50,200,400", help="MB/s; the last should exceed the link")
    ap.add_argument("--link", default="2gbit", help="tbf rate of the veth link, or 'loopback'")
    ap.add_argument("--workdir", default="/dev/shm")
    ap.add_argument("--postcopy", action="store_true",
                    help="issue 20's comparison: Ferry auto-converge vs Ferry post-copy and auto vs QEMU post-copy "
                         "(use with --rates 400)")
    ap.add_argument("--tls-vs-plaintext", action="store_true",
                    help="issue 18's rows: Ferry keyed (TLS 1.3) vs Ferry --insecure (plaintext), side by side")
    ap.add_argument("--plot", default=os.path.join(ROOT, "build", "bench", "migrate-vs-qemu.png"))
    a = ap.parse_args()
    link = None if a.link == "loopback" else a.link
    tsc = host_tsc_khz()
    image = os.path.join(ROOT, "build", "guests", "qemu-dirtier.bin")
    rows = []
    for run in range(a.runs):
        for rate in [int(x) for x in a.rates.split(",")]:
            if a.postcopy:
                configs = (("ferry", "default"), ("ferry", "postcopy"), ("ferry", "auto"), ("qemu", "postcopy"))
            elif a.tls_vs_plaintext:
                configs = (("ferry", "default"), ("ferry", "default-plaintext"))
            else:
                configs = (("ferry", "default"), ("qemu", "default"), ("qemu", "tuned"))
            for system, config in configs:
                if system == "ferry":
                    r = run_ferry_migration(a.mem_mib, rate, a.workdir, link,
                                            mode="precopy" if config.startswith("default") else config,
                                            tls=not config.endswith("-plaintext"))
                else:
                    r = run_qemu_migration(image, a.mem_mib, rate, config, tsc, a.workdir, link, deadline_s=DEADLINE_S)
                r["run"] = run
                rows.append(r)
                print(json.dumps(r), flush=True)
    if a.postcopy:
        report_postcopy(rows)
        return
    if a.tls_vs_plaintext:
        report_tls(rows)
        return
    # Medians and the targets: Ferry against the better QEMU config at each rate.
    for rate in sorted({r["dirty_mbps"] for r in rows}):
        def med(system, config, key):
            vals = [r[key] for r in rows if (r["system"], r["config"], r["dirty_mbps"]) == (system, config, rate)
                    and r["converged"] and r.get(key) is not None]
            return statistics.median(vals) if vals else None
        f_down, f_total = med("ferry", "default", "downtime_ms"), med("ferry", "default", "total_ms")
        f_guest = med("ferry", "default", "guest_pause_ms")
        q_guest = min((g for g in (med("qemu", c, "guest_pause_ms") for c in ("default", "tuned")) if g is not None),
                      default=None)
        q = [(med("qemu", c, "downtime_ms"), med("qemu", c, "total_ms")) for c in ("default", "tuned")]
        q_down = min((d for d, _ in q if d is not None), default=None)
        q_total = min((t for _, t in q if t is not None), default=None)
        ratio = lambda f, x: f"{f / x:.3f}" if f is not None and x else "n/a"
        print(f"rate {rate} MB/s: ferry downtime {f_down} ms total {f_total} ms; best qemu downtime {q_down} ms "
              f"total {q_total} ms; ratios downtime {ratio(f_down, q_down)} (target <= 0.5), "
              f"total {ratio(f_total, q_total)} (target <= 0.8); guest-observed pause ferry {f_guest} ms, "
              f"best qemu {q_guest} ms, ratio {ratio(f_guest, q_guest)}", file=sys.stderr)
    try:
        os.makedirs(os.path.dirname(a.plot), exist_ok=True)
        plot(rows, a.plot)
        print(f"plot: {a.plot}", file=sys.stderr)
    except ImportError:
        print("plot skipped: python3-matplotlib is not installed (scripts/setup --bench)", file=sys.stderr)


if __name__ == "__main__":
    main()
