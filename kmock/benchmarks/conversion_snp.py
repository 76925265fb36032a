"""Benchmark of an SNP 4K page conversion (``kmock bench conversion``, SNP row).

One conversion is what an SNP guest and its VMM do to change one 4K page's state:

to private  the guest's GHCB MSR page-state change (KVM_RUN exits with
            KVM_EXIT_HYPERCALL / KVM_HC_MAP_GPA_RANGE), the VMM's
            KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) and ``hypercall.ret = 0``, KVM_RUN again:
            the guest's PVALIDATE faults the page in (sev_gmem_prepare: RMPUPDATE) and
            validates it;
to shared   the guest's PVALIDATE (rescind), its page-state change exit, the VMM's
            KVM_SET_MEMORY_ATTRIBUTES(0) and PUNCH_HOLE of the page (sev_gmem_invalidate:
            RMPUPDATE to shared), KVM_RUN again.

Conversions alternate over scattered pages of a 1 GiB guest_memfd of a launched SNP VM
(profile linux-6.18-snp, the kmock_snp plugin). The real kernel's 4K guest_memfd
fallocate is timed in the same run (kmock.HostKernel on /dev/kvm; skipped without it).
Target: a conversion costs at most 10x a real 4K fallocate. The row also reports the
core's share: the same KVM_SET_MEMORY_ATTRIBUTES and PUNCH_HOLE calls alone, per
conversion, on the same kind of VM.

``run(quick=False, out=print)`` returns rows (kmock.benchmarks._timing.arch_row: the
mock's median and best seconds per op, the real 4K fallocate timed in rounds interleaved
with the mock's, the ratios median/median and best/best) and prints them with rich.
"""

import os
import time

from ._timing import RealFallocate, arch_row, print_arch_rows, scattered_offsets

P = 4096
GIB = 1 << 30


def _snp_vm(size):
    import ctypes

    import kmock
    import kmock_snp
    from kmock.uapi import kvm as K
    from kmock.uapi import sev as S

    k = kmock.Kernel("linux-6.18-snp", plugins=[kmock_snp])
    kvm = k.open("/dev/kvm", os.O_RDWR)
    sev = k.open("/dev/sev", os.O_RDWR)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_SNP_VM)
    gmem = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=size))
    gpa = 1 << 32
    k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
        slot=0, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=gpa, memory_size=size,
        userspace_addr=0x7F0000000000, guest_memfd=gmem))

    def op(cid, data):
        k.ioctl(vm, K.KVM_MEMORY_ENCRYPT_OP,
                S.kvm_sev_cmd(id=cid, data=ctypes.addressof(data), sev_fd=sev))

    init = S.kvm_sev_init()
    op(S.KVM_SEV_INIT2, init)
    vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    start = S.kvm_sev_snp_launch_start(policy=S.SNP_POLICY_MASK_SMT | S.SNP_POLICY_MASK_RSVD_MBO)
    op(S.KVM_SEV_SNP_LAUNCH_START, start)
    finish = S.kvm_sev_snp_launch_finish()
    op(S.KVM_SEV_SNP_LAUNCH_FINISH, finish)
    cap = K.kvm_enable_cap(cap=K.KVM_CAP_EXIT_HYPERCALL)
    cap.args[0] = 1 << K.KVM_HC_MAP_GPA_RANGE
    k.ioctl(vm, K.KVM_ENABLE_CAP, cap)
    return k, vm, vcpu, gmem, gpa


def _mock_round(size, n):
    """Seconds per conversion over ``n`` conversions (n/2 pages, each there and back)."""
    from kmock.uapi import kvm as K

    k, vm, vcpu, gmem, gpa = _snp_vm(size)
    try:
        guest = k.vm(vm).vcpus[0].guest
        offsets = scattered_offsets(size, max(1, n // 2))
        for off in offsets:
            page = gpa + off
            guest.snp.psc_msr(page, True)
            guest.snp.pvalidate(page)
            guest.snp.pvalidate(page, validate=False)
            guest.snp.psc_msr(page, False)
        guest.hlt()
        run = k.vm(vm).vcpus[0].run
        attrs = K.kvm_memory_attributes(size=P)
        ioctl, fallocate = k.ioctl, k.fallocate
        KVM_RUN, SET_ATTRS = K.KVM_RUN, K.KVM_SET_MEMORY_ATTRIBUTES
        HYPERCALL, ENCRYPTED = K.KVM_EXIT_HYPERCALL, K.KVM_MAP_GPA_RANGE_ENCRYPTED
        PRIVATE = K.KVM_MEMORY_ATTRIBUTE_PRIVATE
        hc = run.hypercall
        conversions = 0
        t0 = time.perf_counter()
        ioctl(vcpu, KVM_RUN, 0)
        while run.exit_reason == HYPERCALL:
            g = hc.args[0]
            attrs.address = g
            if hc.args[2] & ENCRYPTED:
                attrs.attributes = PRIVATE
                ioctl(vm, SET_ATTRS, attrs)
            else:
                attrs.attributes = 0
                ioctl(vm, SET_ATTRS, attrs)
                fallocate(gmem, 3, g - gpa, P)  # KEEP_SIZE | PUNCH_HOLE
            hc.ret = 0
            conversions += 1
            ioctl(vcpu, KVM_RUN, 0)
        dt = time.perf_counter() - t0
        assert run.exit_reason == K.KVM_EXIT_HLT and not k.violations, k.violations[:1]
        return dt / conversions
    finally:
        k.close_all()


def _core_share(size, n):
    """Seconds per conversion spent in the core's ioctls alone on the same kind of VM:
    one 4K KVM_SET_MEMORY_ATTRIBUTES per conversion plus one 4K PUNCH_HOLE per two."""
    from kmock.uapi import kvm as K

    k, vm, _vcpu, gmem, gpa = _snp_vm(size)
    try:
        offsets = scattered_offsets(size, max(1, n // 2))
        attrs = K.kvm_memory_attributes(size=P)
        ioctl, fallocate, SET = k.ioctl, k.fallocate, K.KVM_SET_MEMORY_ATTRIBUTES
        t0 = time.perf_counter()
        for off in offsets:
            attrs.address = gpa + off
            attrs.attributes = K.KVM_MEMORY_ATTRIBUTE_PRIVATE
            ioctl(vm, SET, attrs)
            attrs.attributes = 0
            ioctl(vm, SET, attrs)
            fallocate(gmem, 3, off, P)
        return (time.perf_counter() - t0) / (2 * len(offsets))
    finally:
        k.close_all()


def run(quick=False, out=print, rounds=5):
    n = 200 if quick else 4000
    rounds = 2 if quick else rounds
    size = (16 << 20) if quick else GIB
    real = RealFallocate(n, GIB)
    try:
        times = []
        for _ in range(rounds):  # the mock's rounds and the real kernel's, interleaved
            times.append(_mock_round(size, n))
            real.round()
    finally:
        real.close()
    core = min(_core_share(size, n) for _ in range(rounds))
    row = arch_row("SNP 4K conversion (PSC exit + attributes + RMPUPDATE + PVALIDATE)",
                   n, times, real, core)
    print_arch_rows('SNP conversion', [row], out)
    return [row]



