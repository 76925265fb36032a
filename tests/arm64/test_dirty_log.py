"""Dirty logging on the arm64 profiles: KVM_GET_DIRTY_LOG / KVM_CLEAR_DIRTY_LOG, the
generic KVM_ENABLE_CAP capabilities (MANUAL_DIRTY_LOG_PROTECT2, HALT_POLL) and the dirty
ring as arm64 has it (ACQ_REL only, with KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP).

Sources, Linux 6.18: virt/kvm/kvm_main.c (kvm_vm_ioctl_check_extension_generic,
kvm_vm_ioctl_enable_cap_generic, kvm_vm_ioctl_enable_dirty_log_ring,
kvm_are_all_memslots_empty, kvm_use_dirty_bitmap, kvm_get_dirty_log_protect,
kvm_clear_dirty_log_protect, mark_page_dirty_in_slot, kvm_prepare_memory_region),
virt/kvm/dirty_ring.c (kvm_dirty_ring_get_rsvd_entries, kvm_dirty_ring_push),
arch/arm64/kvm/Kconfig (KVM_GENERIC_DIRTYLOG_READ_PROTECT, HAVE_KVM_DIRTY_RING_ACQ_REL,
NEED_KVM_DIRTY_RING_WITH_BITMAP; no HAVE_KVM_DIRTY_RING_TSO), arch/arm64/kvm/arm.c
(kvm_vm_ioctl_enable_cap after the generic ones).
"""

import ctypes
import errno
import os

import pytest

import kmock
import kmock_arm64
from kmock import _libc
from kmock.testing.errnos import err
from kmock.uapi import arm64 as A
from kmock.uapi import kvm as K

from ._util import psci_vcpu, run_exit

P = 4096
RW = _libc.PROT_READ | _libc.PROT_WRITE
RAM = 0x40000000
PAGES = 128
RING, ACQ_REL, WITH_BITMAP = (K.KVM_CAP_DIRTY_LOG_RING, K.KVM_CAP_DIRTY_LOG_RING_ACQ_REL,
                              K.KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP)
MANUAL = K.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2
LOG = K.KVM_MEM_LOG_DIRTY_PAGES


class Vm:
    def __init__(self):
        self.k = kmock.Kernel("linux-arm64", plugins=[kmock_arm64])
        self.kvm = self.k.open("/dev/kvm", os.O_RDWR)
        self.fd = self.k.ioctl(self.kvm, K.KVM_CREATE_VM, 0)
        self.vm = self.k.vm(self.fd)
        self.mem = _libc.mmap(None, PAGES * P, RW, _libc.MAP_SHARED | _libc.MAP_ANONYMOUS, -1, 0)

    def close(self):
        self.k.close_all()
        _libc.munmap(self.mem, PAGES * P)

    def enable(self, cap, a0=0, flags=0):
        c = K.kvm_enable_cap(cap=cap, flags=flags)
        c.args[0] = a0
        return self.k.ioctl(self.fd, K.KVM_ENABLE_CAP, c)

    def slot(self, flags=LOG):
        return self.k.ioctl(self.fd, K.KVM_SET_USER_MEMORY_REGION, K.kvm_userspace_memory_region(
            slot=0, flags=flags, guest_phys_addr=RAM, memory_size=PAGES * P,
            userspace_addr=self.mem))

    def vcpu(self, i=0):
        return psci_vcpu(self.k, self.fd, i)

    def write(self, cpu, *pages):
        """The guest writes one byte to each page, then KVM_RUN returns (EINTR)."""
        g = self.vm.vcpus[cpu].guest
        for p in pages:
            g.write(RAM + p * P, b"\x5a")
        g.stop()
        return run_exit(self.k, self.k_cpu[cpu])

    def get_log(self):
        buf = (ctypes.c_uint64 * (PAGES // 64))()
        self.k.ioctl(self.fd, K.KVM_GET_DIRTY_LOG,
                     K.kvm_dirty_log(slot=0, dirty_bitmap=ctypes.addressof(buf)))
        return sum(w << (64 * i) for i, w in enumerate(buf))

    def clear_log(self, bits, first=0, num=PAGES):
        buf = (ctypes.c_uint64 * (PAGES // 64))(
            *[(bits >> (64 * i)) & (2 ** 64 - 1) for i in range(PAGES // 64)])
        return self.k.ioctl(self.fd, K.KVM_CLEAR_DIRTY_LOG, K.kvm_clear_dirty_log(
            slot=0, num_pages=num, first_page=first, dirty_bitmap=ctypes.addressof(buf)))


@pytest.fixture
def v():
    vm = Vm()
    vm.k_cpu = {}
    yield vm
    vm.close()


def test_capabilities(v):
    """kvm_vm_ioctl_check_extension_generic under arm64's Kconfig: MANUAL_DIRTY_LOG_PROTECT2
    = KVM_DIRTY_LOG_MANUAL_CAPS; DIRTY_LOG_RING 0 (no HAVE_KVM_DIRTY_RING_TSO); ACQ_REL
    = KVM_DIRTY_RING_MAX_ENTRIES * sizeof(struct kvm_dirty_gfn); WITH_BITMAP 1."""
    for fd in (v.kvm, v.fd):
        check = (lambda c: v.k.ioctl(fd, K.KVM_CHECK_EXTENSION, c))
        assert [check(c) for c in (MANUAL, RING, ACQ_REL, WITH_BITMAP)] == [3, 0, 1 << 20, 1]


def test_generic_enable_caps(v):
    """kvm_vm_ioctl_enable_cap_generic: MANUAL_DIRTY_LOG_PROTECT2 (INITIALLY_SET only with
    MANUAL_PROTECT_ENABLE; flags EINVAL) and HALT_POLL (an unsigned int; flags EINVAL)
    before arm64's kvm_vm_ioctl_enable_cap, whose flags check and own caps stay."""
    for a0 in (2, 4, 1 << 63):
        assert err(v.enable, MANUAL, a0) == errno.EINVAL
    assert err(v.enable, MANUAL, 1, 1) == errno.EINVAL
    for a0 in (0, 1, 3):
        assert v.enable(MANUAL, a0) == 0
    assert err(v.enable, K.KVM_CAP_HALT_POLL, 1 << 32) == errno.EINVAL
    assert err(v.enable, K.KVM_CAP_HALT_POLL, 0, 1) == errno.EINVAL
    assert v.enable(K.KVM_CAP_HALT_POLL, 0xFFFFFFFF) == 0
    assert err(v.enable, A.KVM_CAP_ARM_NISV_TO_USER, 0, 1) == errno.EINVAL
    assert v.enable(A.KVM_CAP_ARM_NISV_TO_USER) == 0
    assert err(v.enable, K.KVM_CAP_EXIT_HYPERCALL) == errno.EINVAL  # x86's


def test_dirty_log_of_guest_writes(v):
    """Without a ring: mark_page_dirty_in_slot sets the bitmap; KVM_GET_DIRTY_LOG reads and
    clears it; with MANUAL_PROTECT_ENABLE it only reads and KVM_CLEAR_DIRTY_LOG clears
    (its alignment checks: first_page a multiple of 64)."""
    v.slot()
    v.k_cpu[0] = v.vcpu()
    assert v.get_log() == 0
    v.write(0, 1, 70)
    assert v.get_log() == 1 << 1 | 1 << 70
    assert v.get_log() == 0
    v.enable(MANUAL, 1)
    v.write(0, 3)
    assert v.get_log() == 1 << 3 and v.get_log() == 1 << 3
    assert err(v.clear_log, 1 << 3, 1, 64) == errno.EINVAL
    assert v.clear_log(1 << 3) == 0 and v.get_log() == 0


def test_initially_set(v):
    """kvm_prepare_memory_region: with MANUAL_PROTECT_ENABLE | INITIALLY_SET a new logged
    slot's bitmap starts all set."""
    v.enable(MANUAL, 3)
    v.slot()
    assert v.get_log() == (1 << PAGES) - 1


def test_ring_enable(v):
    """KVM_CAP_DIRTY_LOG_RING: check_extension_generic 0 -> EINVAL. ACQ_REL: no flags check;
    a power of two, at least a page and 64 reserved entries (no CPU dirty log on arm64),
    at most 1 MiB (E2BIG); once (EINVAL); not after a vCPU (EINVAL)."""
    assert err(v.enable, RING, P) == errno.EINVAL
    for size, e in ((0, errno.EINVAL), (2048, errno.EINVAL), (3 * P, errno.EINVAL),
                    (2 << 20, errno.E2BIG)):
        assert err(v.enable, ACQ_REL, size) == e
    assert v.enable(ACQ_REL, P, flags=1) == 0
    assert err(v.enable, ACQ_REL, P) == errno.EINVAL
    w = Vm()
    try:
        w.vcpu()
        assert err(w.enable, ACQ_REL, P) == errno.EINVAL
    finally:
        w.close()


def test_with_bitmap_enable(v):
    """KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP: no ring size yet, or flags -> EINVAL; a memslot
    (kvm_are_all_memslots_empty) -> EINVAL; else 0, again 0."""
    assert err(v.enable, WITH_BITMAP) == errno.EINVAL
    v.enable(ACQ_REL, P)
    assert err(v.enable, WITH_BITMAP, 0, 1) == errno.EINVAL
    assert v.enable(WITH_BITMAP) == 0 and v.enable(WITH_BITMAP) == 0
    w = Vm()
    try:
        w.enable(ACQ_REL, P)
        w.slot(flags=0)
        assert err(w.enable, WITH_BITMAP) == errno.EINVAL
    finally:
        w.close()


def test_ring_alone_has_no_bitmap(v):
    """kvm_use_dirty_bitmap false: the bitmap ioctls are ENXIO."""
    v.enable(ACQ_REL, P)
    v.slot()
    assert err(v.get_log) == errno.ENXIO
    assert err(v.clear_log, 0) == errno.ENXIO


def test_ring_with_bitmap(v):
    """With WITH_BITMAP the logged slot has a bitmap (GET_DIRTY_LOG works, INITIALLY_SET
    applies) and the vCPU's writes still go to its ring (mark_page_dirty_in_slot: ring
    when a vCPU runs), not to the bitmap."""
    v.enable(ACQ_REL, P)
    v.enable(WITH_BITMAP)
    v.enable(MANUAL, 3)
    v.slot()
    assert v.get_log() == (1 << PAGES) - 1
    v.clear_log((1 << PAGES) - 1)
    v.k_cpu[0] = v.vcpu()
    ring = v.k.mmap(v.k_cpu[0], P, RW, _libc.MAP_SHARED, K.KVM_DIRTY_LOG_PAGE_OFFSET * P)
    v.write(0, 5, 6)
    assert v.get_log() == 0
    entries = [(int.from_bytes(ring[16 * i:16 * i + 4], "little"),
                int.from_bytes(ring[16 * i + 8:16 * i + 16], "little")) for i in range(3)]
    assert entries == [(K.KVM_DIRTY_GFN_F_DIRTY, 5), (K.KVM_DIRTY_GFN_F_DIRTY, 6), (0, 0)]



def test_ring_soft_full_exit_and_reset(v):
    """kvm_dirty_ring_push sets KVM_REQ_DIRTY_RING_SOFT_FULL at the soft limit (256 entries
    of a 4096-byte ring - 64 reserved = 192); arm64's check_vcpu_requests ->
    kvm_dirty_ring_check_request exits with KVM_EXIT_DIRTY_RING_FULL while the ring stays
    soft-full; KVM_RESET_DIRTY_RINGS resets the harvested entries and the guest goes on."""
    n = 256
    mem = _libc.mmap(None, n * P, RW, _libc.MAP_SHARED | _libc.MAP_ANONYMOUS, -1, 0)
    try:
        v.enable(ACQ_REL, P)
        v.k.ioctl(v.fd, K.KVM_SET_USER_MEMORY_REGION, K.kvm_userspace_memory_region(
            slot=1, flags=LOG, guest_phys_addr=RAM, memory_size=n * P, userspace_addr=mem))
        cpu = v.vcpu()
        ring = v.k.mmap(cpu, P, RW, _libc.MAP_SHARED, K.KVM_DIRTY_LOG_PAGE_OFFSET * P)
        g = v.vm.vcpus[0].guest
        for page in range(200):
            g.write(RAM + page * P, b"\x01")
        g.stop()
        run = v.vm.vcpus[0].run
        assert v.k.ioctl(cpu, K.KVM_RUN, 0) == 0 and run.exit_reason == K.KVM_EXIT_DIRTY_RING_FULL
        assert v.k.ioctl(cpu, K.KVM_RUN, 0) == 0 and run.exit_reason == K.KVM_EXIT_DIRTY_RING_FULL
        flags = [int.from_bytes(ring[16 * i:16 * i + 4], "little") for i in range(256)]
        assert flags == [K.KVM_DIRTY_GFN_F_DIRTY] * 192 + [0] * 64
        for i in range(192):  # harvest
            ring[16 * i:16 * i + 4] = K.KVM_DIRTY_GFN_F_RESET.to_bytes(4, "little")
        assert v.k.ioctl(v.fd, K.KVM_RESET_DIRTY_RINGS, 0) == 192
        assert run_exit(v.k, cpu) == K.KVM_EXIT_INTR  # the other 8 pages, then stop
        # page 191's write made the ring soft-full and did not retire; its entry's reset
        # write-protected it again, so the retried write pushes it a second time
        offs = [int.from_bytes(ring[16 * i + 8:16 * i + 16], "little") for i in range(202)]
        assert offs[190:] == [190, 191, 191, 192, 193, 194, 195, 196, 197, 198, 199, 0]
    finally:
        v.k.close_all()
        _libc.munmap(mem, n * P)
