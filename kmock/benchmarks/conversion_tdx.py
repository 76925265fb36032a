"""Benchmark of a TDX 4K conversion (``kmock bench conversion``, TDX rows).

One op is what a TD and its VMM do to lend a page to the host and take it back, all
through the syscall API:

* to shared: the guest's TDG.VP.VMCALL<MapGPA> (shared bit set) -> KVM_RUN returns
  KVM_EXIT_HYPERCALL; the VMM's KVM_SET_MEMORY_ATTRIBUTES (PRIVATE cleared), which zaps
  the private mapping: S-EPT BLOCK, TRACK, REMOVE; ``hypercall.ret = 0``;
* to private: MapGPA (shared bit clear) -> exit; KVM_SET_MEMORY_ATTRIBUTES (PRIVATE);
  ``hypercall.ret = 0``; the guest's TDG.MEM.PAGE.ACCEPT: an EPT violation, KVM's fault
  AUGs the page (PENDING), the accept completes (MAPPED, zeroed); the guest goes on to
  its next conversion, whose MapGPA exit ends this KVM_RUN.

Conversions run back to back, as a converting guest's do: two KVM_RUNs per round trip,
no HLT between them (a TD's HLT would halt inside KVM_RUN: TDX needs the split irqchip,
an in-kernel LAPIC, so no KVM_EXIT_HLT). The last run ends with the VMM's signal
(``stop()``: EINTR, KVM_EXIT_INTR).

The timed window is what SNP's holds: everything the kernel and the TDX module do for
the conversions as the VMM sees it (the attribute changes with the S-EPT zap, both
KVM_RUNs with their exits, MapGPA's completion, the AUG and the accept). The TD's code
(its ``vcpu.guest.tdx`` actions) is written for the whole round before the clock starts:
building the script is the test's setup, not the kernel's work.

Setup: profile linux-6.18-tdx, a TD with 1 GiB of private memory, 4,096 scattered pages
accepted; ops cycle over them. Timed in the same run: 4K fallocates of a real guest_memfd
(kmock.HostKernel on /dev/kvm); the column is empty when /dev/kvm cannot be used. Target:
an op costs at most 10x a real 4K fallocate. A last row runs the same exchange on a
SW_PROTECTED VM (hypercall exits, attribute changes, a private write instead of the
accept, back to back too): the cost of the core's path, without the S-EPT.

``run(quick=False, out=print)`` returns rows (kmock.benchmarks._timing.arch_row: the
mock's median and best seconds per op, the real 4K fallocate timed in rounds interleaved
with the mock's, the ratios median/median and best/best) and prints them with rich.
"""

import ctypes
import sys
import time

from ._timing import RealFallocate, arch_row, print_arch_rows, scattered_offsets

P = 4096
GIB = 1 << 30
RAM = 1 << 32


def _td(size, naccept):
    import kmock
    import kmock_tdx
    from kmock.uapi import kvm as K
    from kmock.uapi import tdx as T

    k = kmock.Kernel("linux-6.18-tdx", plugins=[kmock_tdx])
    import os

    kvm = k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_TDX_VM)
    cap = K.kvm_enable_cap(cap=T.KVM_CAP_SPLIT_IRQCHIP)
    cap.args[0] = 24
    k.ioctl(vm, K.KVM_ENABLE_CAP, cap)
    cap = K.kvm_enable_cap(cap=K.KVM_CAP_EXIT_HYPERCALL)
    cap.args[0] = 1 << K.KVM_HC_MAP_GPA_RANGE
    k.ioctl(vm, K.KVM_ENABLE_CAP, cap)
    init = T.with_cpuid_entries(T.kvm_tdx_init_vm, 1)()
    init.hdr.cpuid.nent = 1
    init.entries[0] = K.kvm_cpuid_entry2(function=0x80000008, eax=48 << 16)
    k.ioctl(vm, K.KVM_MEMORY_ENCRYPT_OP,
            T.kvm_tdx_cmd(id=T.KVM_TDX_INIT_VM, data=ctypes.addressof(init)))
    vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    cpuid = T.with_cpuid_entries(K.kvm_cpuid2, 1)()
    cpuid.hdr.nent = 1
    cpuid.entries[0] = K.kvm_cpuid_entry2(function=1, ecx=1 << 21)  # x2APIC
    k.ioctl(vcpu, T.KVM_SET_CPUID2, bytes(cpuid))
    k.ioctl(vcpu, K.KVM_MEMORY_ENCRYPT_OP, T.kvm_tdx_cmd(id=T.KVM_TDX_INIT_VCPU))
    gmem = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=size))
    k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
        slot=0, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=RAM, memory_size=size,
        guest_memfd=gmem))
    k.ioctl(vm, K.KVM_SET_MEMORY_ATTRIBUTES, K.kvm_memory_attributes(
        address=RAM, size=size, attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE))
    k.ioctl(vm, K.KVM_MEMORY_ENCRYPT_OP, T.kvm_tdx_cmd(id=T.KVM_TDX_FINALIZE_VM))
    offsets = scattered_offsets(size, naccept)
    g = k.vm(vm).vcpus[0].guest
    for off in offsets:
        g.tdx.accept(RAM + off)
    g.hlt()
    g.stop()
    try:
        k.ioctl(vcpu, K.KVM_RUN, 0)
    except InterruptedError:  # EINTR, KVM_EXIT_INTR: the guest ran to its stop()
        pass
    if k.vm(vm).vcpus[0].run.exit_reason != K.KVM_EXIT_INTR:
        raise RuntimeError("the TD's launch run did not end at its stop()")
    return k, vm, vcpu, g, offsets


def _mock(size, naccept, n, rounds, between=None):
    from kmock.uapi import kvm as K

    k, vm, vcpu, g, offsets = _td(size, naccept)
    try:
        run = k.vm(vm).vcpus[0].run
        hc = run.hypercall
        shared_bit = k.vm(vm).arch.shared_bit
        ioctl = k.ioctl
        RUN, SET = K.KVM_RUN, K.KVM_SET_MEMORY_ATTRIBUTES
        to_shared = K.kvm_memory_attributes(size=P)
        to_private = K.kvm_memory_attributes(size=P, attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE)
        tdx = g.tdx
        HC, INTR = K.KVM_EXIT_HYPERCALL, K.KVM_EXIT_INTR
        clock = time.perf_counter
        it = 0
        per_round = []
        gpa = RAM + offsets[0]
        tdx.map_gpa(gpa | shared_bit, P)
        ioctl(vcpu, RUN, 0)  # the first conversion's MapGPA exit
        for _ in range(rounds):
            # the TD's code for the round, written before the clock starts (as SNP's is):
            # MapGPA to private, ACCEPT, MapGPA of the next page to shared
            accepts = []
            for _ in range(n):
                it += 1
                nxt = RAM + offsets[it % len(offsets)]
                tdx.map_gpa(gpa, P)
                accepts.append(tdx.accept(gpa))
                tdx.map_gpa(nxt | shared_bit, P)
                gpa = nxt
            t_sh = t_pr = 0.0
            for a in accepts:
                t0 = clock()
                to_shared.address = hc.args[0]
                ioctl(vm, SET, to_shared)  # S-EPT BLOCK, TRACK, REMOVE
                hc.ret = 0
                ioctl(vcpu, RUN, 0)  # completes the first, exits for the second
                t1 = clock()
                to_private.address = hc.args[0]
                ioctl(vm, SET, to_private)
                hc.ret = 0
                ioctl(vcpu, RUN, 0)  # completes MapGPA, ACCEPT (AUG + accept), next MapGPA
                t2 = clock()
                t_sh += t1 - t0
                t_pr += t2 - t1
                if a.result != 0 or run.exit_reason != HC:
                    raise RuntimeError(f"accept: {a.result:#x}, exit {run.exit_reason}")
            per_round.append((t_sh / n, t_pr / n))
            if between is not None:
                between()  # the real kernel's reference round
        hc.ret = 0
        g.stop()
        try:
            ioctl(vcpu, RUN, 0)
        except InterruptedError:  # EINTR: the VMM's signal ends the last run
            pass
        if run.exit_reason != INTR:
            raise RuntimeError(f"the last run ended with exit {run.exit_reason}")
        violations = len(k.violations)
    finally:
        k.close_all()
    return per_round, violations


def _baseline(size, naccept, n, rounds):
    """The same op on a SW_PROTECTED VM (no S-EPT, no accept): KVM_HC_MAP_GPA_RANGE exits,
    the attribute changes, and the guest's private write that faults the page in."""
    import os

    import kmock
    from kmock.uapi import kvm as K

    k = kmock.Kernel("linux-6.18")
    try:
        kvm = k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        vm = k.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_SW_PROTECTED_VM)
        cap = K.kvm_enable_cap(cap=K.KVM_CAP_EXIT_HYPERCALL)
        cap.args[0] = 1 << K.KVM_HC_MAP_GPA_RANGE
        k.ioctl(vm, K.KVM_ENABLE_CAP, cap)
        gmem = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=size))
        k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
            slot=0, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=RAM, memory_size=size,
            guest_memfd=gmem))
        k.ioctl(vm, K.KVM_SET_MEMORY_ATTRIBUTES, K.kvm_memory_attributes(
            address=RAM, size=size, attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE))
        vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
        offsets = scattered_offsets(size, naccept)
        g = k.vm(vm).vcpus[0].guest
        for off in offsets:
            g.write(RAM + off, b"\0", private=True)
        g.hlt()
        k.ioctl(vcpu, K.KVM_RUN, 0)
        hc = k.vm(vm).vcpus[0].run.hypercall
        ioctl = k.ioctl
        RUN, SET = K.KVM_RUN, K.KVM_SET_MEMORY_ATTRIBUTES
        to_shared = K.kvm_memory_attributes(size=P)
        to_private = K.kvm_memory_attributes(size=P, attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE)
        it = 0
        per_round = []
        gpa = RAM + offsets[0]
        g.map_gpa_range(gpa, 1, private=False)
        ioctl(vcpu, RUN, 0)  # the first conversion's exit
        for _ in range(rounds):
            for _ in range(n):  # the guest's code for the round, before the clock starts
                it += 1
                nxt = RAM + offsets[it % len(offsets)]
                g.map_gpa_range(gpa, 1, private=True)
                g.write(gpa, b"\0", private=True)
                g.map_gpa_range(nxt, 1, private=False)
                gpa = nxt
            t0 = time.perf_counter()
            for _ in range(n):
                to_shared.address = hc.args[0]
                ioctl(vm, SET, to_shared)
                hc.ret = 0
                ioctl(vcpu, RUN, 0)
                to_private.address = hc.args[0]
                ioctl(vm, SET, to_private)
                hc.ret = 0
                ioctl(vcpu, RUN, 0)  # the write faults the page in; the next exit
            per_round.append((time.perf_counter() - t0) / n)
        return per_round
    finally:
        k.close_all()


def run(quick=False, out=None):
    scale = 20 if quick else 1
    n = 2000 // scale
    rounds = 5 if not quick else 2
    real = RealFallocate(max(200, 20_000 // scale), GIB)
    try:
        per_round, violations = _mock(GIB if not quick else 64 << 20, 4096 // scale, n, rounds,
                                      between=real.round)
    finally:
        real.close()
    base = _baseline(GIB if not quick else 64 << 20, 4096 // scale, n, rounds)
    rows = []
    for name, i in (("TDX 4K to shared: MapGPA exit + attributes + S-EPT zap", 0),
                    ("TDX 4K to private: MapGPA exit + attributes + AUG + accept", 1),
                    ("TDX 4K conversion round trip (the target)", None)):
        vals = [sum(r) if i is None else r[i] for r in per_round]
        row = arch_row(name, n * rounds, vals, real, target=i is None)
        row["violations"] = violations
        rows.append(row)
    row = arch_row("same round trip on a SW_PROTECTED VM (no S-EPT, no accept)", n * rounds,
                   base, real, target=False)
    row["violations"] = 0
    rows.append(row)
    print_arch_rows("TDX 4K conversion (kmock vs a real 4K guest_memfd fallocate)", rows,
                    out or print)
    return rows


if __name__ == "__main__":  # pragma: no cover
    run(quick="--quick" in sys.argv)
