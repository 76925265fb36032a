"""``kmock bench longrun``: memory in long runs (bounded history and logs, issue 14).

Two rows, each with the resident set size (RSS, /proc/self/statm) before and after:

(a) 10**6 guest exits: a VMM loop that queues one ``outb`` on vCPU 0 and calls
    KVM_RUN (KVM_EXIT_IO), as a VMM's run loop does; the guest script keeps only the
    pending actions and the newest ``guest_history`` completed ones.
(b) 10**5 host accesses that get SIGBUS (a private guest_memfd page read through the
    host mapping): ``sigbus_log`` keeps the newest ``log_limit`` entries.

Time per iteration is reported as the best and the median of 10 chunks. Quick mode
runs 1/100 of the iterations.
"""

import os
import statistics
import time

from .. import _libc
from ..uapi import kvm as K

EXITS = 10 ** 6
SIGBUS = 10 ** 5
CHUNKS = 10


def rss_bytes():
    """The resident set size of this process now (not the peak)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _chunked(step, n):
    """Run ``step(i)`` n times in CHUNKS chunks; (best, median) seconds per call."""
    per = []
    size = max(1, n // CHUNKS)
    for c in range(CHUNKS):
        t0 = time.perf_counter()
        for i in range(c * size, (c + 1) * size):
            step(i)
        per.append((time.perf_counter() - t0) / size)
    return min(per), statistics.median(per)


def _exits(n):
    from .. import Kernel

    k = Kernel()
    try:
        kvm = k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        vm = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
        vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
        script = k.vm(vm).vcpus[0].guest
        ioctl, outb, RUN = k.ioctl, script.outb, K.KVM_RUN

        def step(i):
            outb(0x80, i)
            ioctl(vcpu, RUN, 0)

        for i in range(min(n, 5000)):  # warm up: the history fills
            step(i)
        before = rss_bytes()
        best, median = _chunked(step, n)
        after = rss_bytes()
        kept = len(script.actions)
        return {"op": f"{n} guest exits (outb + KVM_RUN)", "best_us": best * 1e6,
                "median_us": median * 1e6, "rss_before": before, "rss_after": after,
                "kept": kept, "what": "actions kept"}
    finally:
        k.close_all()


def _sigbus(n):
    from .. import Kernel, SigBus

    k = Kernel()
    try:
        kvm = k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        vm = k.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_SW_PROTECTED_VM)
        gmem = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD,
                       K.kvm_create_guest_memfd(size=1 << 20, flags=K.GUEST_MEMFD_FLAG_MMAP))
        m = k.mmap(gmem, 1 << 20, _libc.PROT_READ | _libc.PROT_WRITE, _libc.MAP_SHARED, 0)

        def step(i):
            try:
                m[0]
            except SigBus:
                pass

        step(0)
        if not k.sigbus_log:
            raise RuntimeError("longrun: the private page did not SIGBUS")
        for i in range(min(n, 20000)):
            step(i)
        before = rss_bytes()
        best, median = _chunked(step, n)
        after = rss_bytes()
        return {"op": f"{n} host SIGBUS accesses", "best_us": best * 1e6,
                "median_us": median * 1e6, "rss_before": before, "rss_after": after,
                "kept": len(k.sigbus_log), "what": "sigbus_log entries"}
    finally:
        k.close_all()


def run(quick=False, out=print):
    """Run both rows; return them and print the table."""
    scale = 100 if quick else 1
    rows = [_exits(EXITS // scale), _sigbus(SIGBUS // scale)]
    out(f"{'operation':<36} {'us/iter best/median':>20} {'RSS before':>11} {'RSS after':>10} "
        f"{'growth':>8}  kept")
    for r in rows:
        growth = r["rss_after"] - r["rss_before"]
        out(f"{r['op']:<36} {r['best_us']:9.2f}/{r['median_us']:<9.2f} "
            f"{r['rss_before'] / 2**20:9.1f}M {r['rss_after'] / 2**20:9.1f}M "
            f"{growth / 2**20:7.1f}M  {r['kept']} {r['what']}")
    return rows
