"""The in-place conversion selftests as applied (v13 in kvm-x86, Sep 2026), on profile
gmem-attributes-v12 (docs/reference/gmem-attributes-v12.md, "Selftests").

linux-next next-20260923 carries the x86/guest_memfd_conversions_test.c cases of v8 under
the same titles (single-page flow, INIT_SHARED, precision/indexing, before allocation,
allocated-folio layouts, truncation, cross-process consistency, elevated refcount), so
every v8 port (test_v8_selftests.py) runs again here against v12: the module's ``k8``
fixture gives them a gmem-attributes-v12 kernel. What changed around them is ported
below: the capability the selftest requires (by name: 251 here, a profile setting),
private_mem_conversions_test "for in-place conversions" (e24e534ff850: the guest's
KVM_HC_MAP_GPA_RANGE exits are served through the guest_memfd ioctl, the VM ioctl
refuses PRIVATE), and the library's in-place set-up (a6270ed4bec0: the region starts
shared, is filled through the mapping, and private pages are set before the guest runs).
"""

import os

import pytest

import kmock
from kmock.uapi import kvm as K

from ._util import GPA, INIT_SHARED, MMAP, PRIVATE, P, V8, err, errno, sigbus_at
from .test_v8_selftests import (  # noqa: F401 (collected here, with this module's k8)
    test_before_allocation,
    test_elevated_refcount,
    test_elevated_refcount_pin_survives_munmap,
    test_forked_accesses,
    test_indexing,
    test_init_private,
    test_init_shared,
    test_pin_of_private_page_faults,
    test_truncate,
    test_unallocated_folios,
)

CAP = kmock.profiles.get("gmem-attributes-v12").caps_named["KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES"]


@pytest.fixture
def k8():
    """The v8 ports' fixture, here a gmem-attributes-v12 kernel."""
    with kmock.Kernel(profile="gmem-attributes-v12") as kernel:
        yield kernel


def test_requires_cap(k8):
    """main(): TEST_REQUIRE(kvm_check_cap(KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES) & PRIVATE)."""
    env = V8(k8, bind=False)
    assert CAP == 251
    assert k8.ioctl(env.kvm, K.KVM_CHECK_EXTENSION, CAP) & PRIVATE
    assert k8.ioctl(env.kvm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_VM_TYPES) & (1 << K.KVM_X86_SW_PROTECTED_VM)


# --- private_mem_conversions_test, updated for in-place conversions ---------------------------------


class Vmm:
    """The selftest's host loop: KVM_RUN; a KVM_HC_MAP_GPA_RANGE exit becomes
    KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd (offset = gpa - GPA); ret 0."""

    def __init__(self, k, size=4 * P):
        self.env = V8(k, size=size, flags=MMAP | INIT_SHARED)
        cap = K.kvm_enable_cap(cap=K.KVM_CAP_EXIT_HYPERCALL)
        cap.args[0] = 1 << K.KVM_HC_MAP_GPA_RANGE
        k.ioctl(self.env.vm, K.KVM_ENABLE_CAP, cap)
        self.k = k
        self.run_map = k.mmap(self.env.vcpu, P, 3, 1, 0)
        self.run = K.kvm_run.from_address(self.run_map.address)
        self.guest = k.vm(self.env.vm).vcpus[0].guest
        self.conversions = []

    def run_until_hlt(self):
        while True:
            self.k.ioctl(self.env.vcpu, K.KVM_RUN, 0)
            if self.run.exit_reason == K.KVM_EXIT_HLT:
                return
            assert self.run.exit_reason == K.KVM_EXIT_HYPERCALL
            hc = self.run.hypercall
            assert hc.nr == K.KVM_HC_MAP_GPA_RANGE
            gpa, npages, attrs = hc.args[0], hc.args[1], hc.args[2]
            private = bool(attrs & K.KVM_MAP_GPA_RANGE_ENCRYPTED)
            self.conversions.append((gpa, npages, private))
            r, a = self.env.set_attrs(gpa - GPA, npages * P, PRIVATE if private else 0)
            hc.ret = 0 if r == 0 else (-r & ((1 << 64) - 1))


def test_private_mem_conversions_in_place(k8):
    """The guest converts a page to private and back through MAP_GPA_RANGE; the VMM
    converts in place, so the same page keeps its data on SW_PROTECTED and the host's
    mapping faults exactly while the page is private."""
    vmm = Vmm(k8)
    m = vmm.env.mmap()
    m[P:P + 4] = b"host"
    g = vmm.guest
    to_private = g.map_gpa_range(GPA + P, 1, True)
    seen = g.read(GPA + P, 4)
    g.write(GPA + P, b"priv")
    g.hlt()
    vmm.run_until_hlt()
    assert to_private.result == 0 and seen.result == b"host"
    assert vmm.conversions == [(GPA + P, 1, True)]
    assert sigbus_at(m, P) == P and m[0:4] == b"\0" * 4 and m[2 * P] == 0
    to_shared = g.map_gpa_range(GPA + P, 1, False)
    g.hlt()
    vmm.run_until_hlt()
    assert to_shared.result == 0
    assert m[P:P + 4] == b"priv"


def test_vm_ioctl_refuses_private(k8):
    """With in-place conversion the per-VM attributes offer nothing: KVM_CAP_MEMORY_ATTRIBUTES
    is 0 and KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) on the VM is EINVAL."""
    env = V8(k8, bind=False)
    assert k8.ioctl(env.vm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_MEMORY_ATTRIBUTES) == 0
    a = K.kvm_memory_attributes(address=GPA, size=P, attributes=PRIVATE, flags=0)
    assert err(k8.ioctl, env.vm, K.KVM_SET_MEMORY_ATTRIBUTES, a) == errno.EINVAL


def test_map_gpa_range_conversion_refused_while_pinned(k8):
    """A pinned shared page: the VMM's conversion fails with EAGAIN at that page, the guest
    sees the error in RAX, and the page stays shared."""
    vmm = Vmm(k8)
    m = vmm.env.mmap()
    pin = k8.gup_pin(m, 2 * P, P)
    call = vmm.guest.map_gpa_range(GPA, 4, True)
    vmm.guest.hlt()
    vmm.run_until_hlt()
    assert call.result == (-errno.EAGAIN) & ((1 << 64) - 1)
    assert m[2 * P] == 0 and vmm.env.gmem_snapshot()["private_pages"] == 0
    pin.unpin()


# --- the library's in-place set-up (a6270ed4bec0) ---------------------------------------------------


def test_populate_shared_then_set_private(k8):
    """Create INIT_SHARED|MMAP, fill it through the mapping like any memory provider, set
    the private pages, run: the guest reads what the host wrote, the host now faults."""
    env = V8(k8, size=4 * P, flags=MMAP | INIT_SHARED)
    m = env.mmap()
    for i in range(4):
        m[i * P:i * P + 8] = bytes([0x40 + i]) * 8
    env.to_private(0, 2 * P)
    assert env.guest_read(0, 8) == b"\x40" * 8
    assert env.guest_read(P, 8) == b"\x41" * 8
    assert env.guest_read(3 * P, 8) == b"\x43" * 8
    assert sigbus_at(m, 0) == 0 and sigbus_at(m, P) == P
    assert m[2 * P:2 * P + 8] == b"\x42" * 8


def test_gmem_only_without_mmap_flag_guest_sees_guest_memfd(k8):
    """The library no longer needs a second backing: with the parameter on, even a
    guest_memfd without MMAP serves the shared pages of its memslot."""
    kvm = k8.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    vm = k8.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_SW_PROTECTED_VM)
    gmem = k8.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=P, flags=INIT_SHARED))
    k8.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
        slot=1, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=GPA, memory_size=P, guest_memfd=gmem))
    vcpu = k8.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    g = k8.vm(vm).vcpus[0].guest
    w = g.write(GPA, b"abc")
    r = g.read(GPA, 3)
    g.hlt()
    k8.ioctl(vcpu, K.KVM_RUN, 0)
    assert w.done and r.result == b"abc"  # userspace_addr 0 is never touched
