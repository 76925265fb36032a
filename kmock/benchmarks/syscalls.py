"""``kmock bench syscalls``: the same operation mix on the real kernel and on the mock.

Each operation runs on ``HostKernel()`` (the real /dev/kvm through Python's os/fcntl,
as a Python VMM would call it) and on ``Kernel(profile="host")`` in the same run,
rounds interleaved, and the table gives the best and the median time per operation
and the mock/host ratios. Target (issue 14): the mock no slower than the real kernel
(1.0x) on every row, judged on the median ratio.
"""

import os

from ..uapi import kvm as K
from ._timing import scattered_offsets, side_by_side

PAGE = 4096
TARGET_RATIO = 1.0


def _ops(sys, kvm, vm, gmem, big):
    """(name, callable, iterations) of the operation mix, bound to one kernel."""
    ioctl, fallocate, close = sys.ioctl, sys.fallocate, sys.close
    create = K.kvm_create_guest_memfd(1 << 20, 0)
    region = K.kvm_userspace_memory_region2(
        slot=7, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=1 << 32,
        memory_size=1 << 20, guest_memfd=gmem)
    delete = K.kvm_userspace_memory_region2(slot=7, memory_size=0)
    offsets = scattered_offsets(big)

    def check_extension():
        ioctl(kvm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_GUEST_MEMFD)

    def create_close():
        close(ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, create))

    it = [0]

    def falloc():
        i = it[0] = (it[0] + 1) & 4095
        fallocate(gmem, 0x01, offsets[i], PAGE)

    def punch():
        i = it[0] = (it[0] + 1) & 4095
        fallocate(gmem, 0x03, offsets[i], PAGE)

    def bind_delete():
        ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, region)
        ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, delete)

    return [
        ("KVM_CHECK_EXTENSION", check_extension, 20000),
        ("CREATE_GUEST_MEMFD + close", create_close, 5000),
        ("fallocate 4K", falloc, 20000),
        ("PUNCH_HOLE 4K", punch, 20000),
        ("memslot bind + delete", bind_delete, 2000),
    ]


def _setup(sys, big):
    kvm = sys.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    vm = sys.ioctl(kvm, K.KVM_CREATE_VM, 0)
    gmem = sys.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(big, 0))
    return kvm, vm, gmem


def run(quick=False, out=print, rounds=7):
    """Run the mix on both kernels; return rows and print the table (best and median of
    ``rounds`` interleaved rounds; the verdict is on the median ratio)."""
    from .. import HostKernel, Kernel

    if not os.path.exists("/dev/kvm"):
        out("kmock bench syscalls: no /dev/kvm on this machine, nothing to compare against")
        return []
    big = 1 << 30
    host, mock = HostKernel(), Kernel(profile="host")
    rows = []
    try:
        hops = _ops(host, *_setup(host, big), big)
        mops = _ops(mock, *_setup(mock, big), big)
        for (name, hfn, n), (_, mfn, _) in zip(hops, mops):
            if quick:
                n = max(50, n // 50)
            (hb, hm), (mb, mm) = side_by_side((hfn, mfn), n, 1 if quick else rounds)
            rows.append({"op": name, "host_us": hb * 1e6, "mock_us": mb * 1e6, "ratio": mb / hb,
                         "host_median_us": hm * 1e6, "mock_median_us": mm * 1e6,
                         "median_ratio": mm / hm})
    finally:
        host.close_all()
        mock.close_all()
    out(f"{'operation':<28} {'host us':>15} {'mock us':>15} {'mock/host':>15}  "
        f"target <= {TARGET_RATIO}x")
    out(f"{'':<28} {'best / median':>15} {'best / median':>15} {'best / median':>15}")
    for r in rows:
        verdict = "ok" if r["median_ratio"] <= TARGET_RATIO else "MISSED"
        out(f"{r['op']:<28} {r['host_us']:7.2f}/{r['host_median_us']:<7.2f} "
            f"{r['mock_us']:7.2f}/{r['mock_median_us']:<7.2f} "
            f"{r['ratio']:6.2f}x/{str(round(r['median_ratio'], 2)) + 'x':<7} {verdict}")
    return rows
