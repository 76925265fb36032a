"""Benchmark of an Arm CCA 4K conversion (``kmock bench conversion``, CCA rows).

One conversion is what a realm and its VMM do for one page, end to end, through the
syscall API (plugins kmock_arm64 and kmock_cca, profile linux-arm64-cca, v14):

to private  the realm calls RSI_IPA_STATE_SET(page, RAM) -> KVM_RUN returns EFAULT with
            KVM_EXIT_MEMORY_FAULT (the RSI exit) -> the VMM sets the page PRIVATE with
            KVM_SET_MEMORY_ATTRIBUTES (the attribute change) -> KVM_RUN: RTT_SET_RIPAS
            (the RIPAS change), the RSI call returns, the realm writes the page and KVM
            maps it (delegate + RTT_DATA_MAP: the lazy mapping), then the realm's vCPU
            ends the KVM_RUN (see below).
to shared   RSI_IPA_STATE_SET(page, EMPTY, RSI_CHANGE_DESTROYED) -> EFAULT -> the VMM
            sets the page shared (KVM's unmap destroys the data) and punches it from the
            guest_memfd (as QEMU) -> KVM_RUN: RTT_SET_RIPAS, then the end of KVM_RUN.

arm64 has no KVM_EXIT_HLT: a realm's WFI waits inside KVM_RUN. Each conversion's second
KVM_RUN ends with a signal for the VMM's vCPU thread instead (the guest's ``stop()``:
EINTR, KVM_EXIT_INTR), the exit a VMM gets back from an idle realm.

The timed window is what SNP's holds: everything the kernel and the hardware do for the
conversion as the VMM sees it (both KVM_RUNs and their exits, the OSError of the RSI exit
and of the end included, the attribute change, the punch, the RSI call's effect and the
realm's access). The realm's code (its ``vcpu.guest`` actions) is written for the whole
round before the clock starts: building the script is the test's setup, not the
kernel's work (inside the window it was a tenth to a fifth of a conversion's time).

The pages are scattered over a 1 GiB guest_memfd memslot. The real kernel's 4K
guest_memfd fallocate is timed in the same run (kmock.HostKernel on /dev/kvm); the
target is a conversion at most 10x that. Each row also reports the share of the
attribute change and the punch alone (the same ioctls on the same realm, no RSI exit,
no KVM_RUN), as the SNP rows do.

``run(quick=False, out=print)`` returns rows (kmock.benchmarks._timing.arch_row: the
mock's median and best seconds per op, the real 4K fallocate timed in rounds interleaved
with the mock's, the ratios median/median and best/best) and prints them with rich.
"""

import errno
import os
import time

from ._timing import RealFallocate, arch_row, print_arch_rows, scattered_offsets

P = 4096
GIB = 1 << 30
RAM = 1 << 32


def _realm(size):
    import ctypes
    import mmap

    import kmock
    import kmock_arm64
    import kmock_cca
    from kmock.uapi import arm64 as A
    from kmock.uapi import cca as C
    from kmock.uapi import kvm as K

    k = kmock.Kernel("linux-arm64-cca", plugins=[kmock_arm64, kmock_cca])
    kvm = k.open("/dev/kvm", os.O_RDWR)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, C.KVM_VM_TYPE_ARM_REALM | 40)
    cd = A.kvm_create_device(type=A.KVM_DEV_TYPE_ARM_VGIC_V3)
    k.ioctl(vm, A.KVM_CREATE_DEVICE, cd)
    for attr, val in ((A.KVM_VGIC_V3_ADDR_TYPE_DIST, 0x08000000),
                      (A.KVM_VGIC_V3_ADDR_TYPE_REDIST, 0x080A0000)):
        v = ctypes.c_uint64(val)
        k.ioctl(cd.fd, A.KVM_SET_DEVICE_ATTR, A.kvm_device_attr(
            group=A.KVM_DEV_ARM_VGIC_GRP_ADDR, attr=attr, addr=ctypes.addressof(v)))
    gmem = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=size))
    shared = mmap.mmap(-1, size)
    k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
        slot=0, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=RAM, memory_size=size,
        userspace_addr=ctypes.addressof(ctypes.c_char.from_buffer(shared)), guest_memfd=gmem))
    attrs = K.kvm_memory_attributes(address=RAM, size=size,
                                    attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    k.ioctl(vm, K.KVM_SET_MEMORY_ATTRIBUTES, attrs)
    vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    init = A.kvm_vcpu_init()
    k.ioctl(vm, A.KVM_ARM_PREFERRED_TARGET, init)
    init.features[0] |= 1 << A.KVM_ARM_VCPU_PSCI_0_2
    k.ioctl(vcpu, A.KVM_ARM_VCPU_INIT, init)
    v = ctypes.c_uint64(0)
    k.ioctl(cd.fd, A.KVM_SET_DEVICE_ATTR, A.kvm_device_attr(
        group=A.KVM_DEV_ARM_VGIC_GRP_CTRL, attr=A.KVM_DEV_ARM_VGIC_CTRL_INIT,
        addr=ctypes.addressof(v)))
    g = k.vm(vm).vcpus[0].guest
    g.stop()
    try:
        k.ioctl(vcpu, K.KVM_RUN, 0)  # activates the realm; ends at the stop (EINTR)
    except OSError as e:
        if e.errno != errno.EINTR:
            raise
    return k, vm, vcpu, gmem, g, shared


def _conversions(size, pages, rounds, between=None):
    """(to-private seconds per op for each round, to-shared seconds per op for each round);
    ``between()`` runs after each round (the real kernel's reference round)."""
    from kmock.uapi import kvm as K
    from kmock_cca.rtt import RSI_CHANGE_DESTROYED, Ripas

    k, vm, vcpu, gmem, g, _shared = _realm(size)
    try:
        ioctl, fallocate = k.ioctl, k.fallocate
        run, set_attrs = K.KVM_RUN, K.KVM_SET_MEMORY_ATTRIBUTES
        a = K.kvm_memory_attributes(size=P)
        PRIV = K.KVM_MEMORY_ATTRIBUTE_PRIVATE
        EMPTY, RAM_ = int(Ripas.EMPTY), int(Ripas.RAM)
        cca = g.cca
        to_shared_t, to_private_t = [], []

        def kvm_run():
            """True for the RSI exit (EFAULT), False for the end (EINTR at the stop)."""
            try:
                ioctl(vcpu, run, 0)
            except OSError as e:
                if e.errno == errno.EFAULT:
                    return True
                if e.errno == errno.EINTR:
                    return False
                raise
            raise AssertionError(f"unexpected exit {k.vm(vm).vcpus[0].run.exit_reason}")

        for _ in range(rounds):
            # the realm's code for the round, written before the clock starts (as SNP's
            # is): the window holds what KVM_RUN does with it, not the test's scripting
            for off in pages:
                gpa = RAM + off
                cca.ipa_state_set(gpa, gpa + P, EMPTY, RSI_CHANGE_DESTROYED)
                g.stop()
            t0 = time.perf_counter()
            for off in pages:  # to shared
                assert kvm_run()  # the RSI exit
                a.address, a.attributes = RAM + off, 0
                ioctl(vm, set_attrs, a)
                fallocate(gmem, 3, off, P)
                assert not kvm_run()  # RIPAS change, the end
            to_shared_t.append((time.perf_counter() - t0) / len(pages))
            for off in pages:  # to private, then the realm touches the page
                gpa = RAM + off
                cca.ipa_state_set(gpa, gpa + P, RAM_)
                g.write(gpa, b"x")
                g.stop()
            t0 = time.perf_counter()
            for off in pages:
                assert kvm_run()  # the RSI exit
                a.address, a.attributes = RAM + off, PRIV
                ioctl(vm, set_attrs, a)
                assert not kvm_run()  # RIPAS change, lazy mapping, the end
            to_private_t.append((time.perf_counter() - t0) / len(pages))
            if between is not None:
                between()
            g.clear()
            del g.actions[:]
            g.pc = 0
        assert not k.violations.of_kind("realm_data_destroyed")
        return to_private_t, to_shared_t
    finally:
        k.close_all()


def _core_share(size, pages):
    """Seconds per conversion of the attribute changes and punches alone on a realm:
    one 4K KVM_SET_MEMORY_ATTRIBUTES per conversion plus one 4K PUNCH_HOLE per two."""
    from kmock.uapi import kvm as K

    k, vm, _vcpu, gmem, _g, _shared = _realm(size)
    try:
        attrs = K.kvm_memory_attributes(size=P)
        ioctl, fallocate, SET = k.ioctl, k.fallocate, K.KVM_SET_MEMORY_ATTRIBUTES
        t0 = time.perf_counter()
        for off in pages:
            attrs.address = RAM + off
            attrs.attributes = 0
            ioctl(vm, SET, attrs)
            fallocate(gmem, 3, off, P)
            attrs.attributes = K.KVM_MEMORY_ATTRIBUTE_PRIVATE
            ioctl(vm, SET, attrs)
        return (time.perf_counter() - t0) / (2 * len(pages))
    finally:
        k.close_all()




def run(quick=False, out=print, rounds=5):
    n = 200 if quick else 2000
    rounds = 2 if quick else rounds
    pages = scattered_offsets(GIB, n)
    real = RealFallocate(2000 if quick else 20000, GIB)
    try:
        to_private, to_shared = _conversions(GIB, pages, rounds, between=real.round)
    finally:
        real.close()
    core = min(_core_share(GIB, pages) for _ in range(rounds))
    rows = [arch_row("CCA 4K conversion to private (RSI exit, attributes, RIPAS, lazy map)",
                     n, to_private, real, core),
            arch_row("CCA 4K conversion to shared (RSI exit, attributes + punch, RIPAS)",
                     n, to_shared, real, core)]
    print_arch_rows('Arm CCA 4K conversion (profile linux-arm64-cca, v14)', rows, out)
    return rows




if __name__ == "__main__":
    run()
