"""KVM_PRE_FAULT_MEMORY (reference §4.8; selftest pre_fault_memory_test, §6.4)."""

import errno
import os

import pytest

import kmock
from kmock.uapi import kvm as K

from ._util import anon  # noqa: F401 (fixture)
from ._util import (DEFAULT_VM, GMEM, M2, P, PRIVATE, SW_PROTECTED_VM, create_gmem, create_vm,
                    err, mem_attrs, needs_host_kvm, set_region)

SLOT_SIZE = M2 + P  # TEST_SIZE in the selftest: 2M + 4K
GPAS = {"4G": 1 << 32, "top of the GPA space": ((1 << 52) - SLOT_SIZE) & ~(M2 - 1)}
SETUPS = ["default", "sw_protected", "sw_protected+gmem+private"]


def pre_fault(k, vcpu, r):
    return k.ioctl(vcpu, K.KVM_PRE_FAULT_MEMORY, r)


def snapshot(r):
    return (r.gpa, r.size, r.flags, tuple(r.padding))


@pytest.fixture(params=[(s, g) for s in SETUPS for g in GPAS], ids=lambda p: f"{p[0]}@{p[1]}")
def setup(request, k, anon):
    """A VM as pre_fault_memory_test builds it, with one 2M+4K slot at ``gpa``; its vCPU."""
    kind, gpa_name = request.param
    gpa = GPAS[gpa_name]
    vm_type = DEFAULT_VM if kind == "default" else SW_PROTECTED_VM
    _, vm = create_vm(k, vm_type)
    if kind.endswith("private"):
        gmem = create_gmem(k, vm, SLOT_SIZE, 0)
        assert set_region(k, vm, 1, gpa, SLOT_SIZE, GMEM, gmem) == 0
        k.ioctl(vm, K.KVM_SET_MEMORY_ATTRIBUTES, mem_attrs(gpa, SLOT_SIZE, PRIVATE))
    else:
        # a plain slot needs a real userspace_addr: faulting it in reads the host memory
        assert set_region(k, vm, 1, gpa, SLOT_SIZE, uaddr=anon(SLOT_SIZE)) == 0
    vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    assert k.ioctl(vm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_PRE_FAULT_MEMORY) == 1
    return vm, vcpu, gpa


def test_selftest_sequence(k, setup):
    """ST-PF: (gpa, 2M) -> 0, size 0 left; (gpa+2M, 8K) -> 0 with 4K left (progress, then no
    memslot: success because at least one page was mapped); (gpa+2M+4K, 4K) -> ENOENT with the
    struct left unchanged."""
    vm, vcpu, gpa = setup
    r = K.kvm_pre_fault_memory(gpa=gpa, size=M2)
    assert pre_fault(k, vcpu, r) == 0
    assert (r.gpa, r.size) == (gpa + M2, 0)

    r = K.kvm_pre_fault_memory(gpa=gpa + M2, size=2 * P)
    assert pre_fault(k, vcpu, r) == 0
    assert (r.gpa, r.size) == (gpa + M2 + P, P)

    r = K.kvm_pre_fault_memory(gpa=gpa + M2 + P, size=P)
    r.padding[0] = 7  # §7.5: padding is not checked, and it is not touched
    before = snapshot(r)
    assert err(pre_fault, k, vcpu, r) == errno.ENOENT
    assert snapshot(r) == before


def test_no_memslot_at_all_enoent(k, setup):
    vm, vcpu, gpa = setup
    r = K.kvm_pre_fault_memory(gpa=gpa - 4 * P, size=4 * P)
    assert err(pre_fault, k, vcpu, r) == errno.ENOENT
    assert (r.gpa, r.size) == (gpa - 4 * P, 4 * P)


def test_retry_loop_completes(k, setup):
    """ST-PF loops while range.size and the call succeeds: the whole slot gets mapped."""
    vm, vcpu, gpa = setup
    r = K.kvm_pre_fault_memory(gpa=gpa, size=SLOT_SIZE)
    while r.size:
        assert pre_fault(k, vcpu, r) == 0
    assert r.gpa == gpa + SLOT_SIZE


@pytest.mark.parametrize("bad", ["flags=1", "size=0", "gpa unaligned", "size unaligned",
                                 "wraps"])
def test_einval_before_the_walk(k, setup, bad):
    """§4.8: flags -> EINVAL; unaligned gpa/size, size 0, or gpa+size wrapping -> EINVAL."""
    vm, vcpu, gpa = setup
    r = K.kvm_pre_fault_memory(gpa=gpa, size=P)
    if bad == "flags=1":
        r.flags = 1
    elif bad == "size=0":
        r.size = 0
    elif bad == "gpa unaligned":
        r.gpa += 1
    elif bad == "size unaligned":
        r.size = P - 1
    else:
        r.gpa, r.size = (1 << 64) - P, P
    before = snapshot(r)
    assert err(pre_fault, k, vcpu, r) == errno.EINVAL
    assert snapshot(r) == before


def test_on_vm_fd_enotty(k, setup):
    """§4.8 / §5.1 row 39: a vCPU ioctl; on the VM fd -> ENOTTY, on /dev/kvm -> EINVAL."""
    vm, vcpu, gpa = setup
    r = K.kvm_pre_fault_memory(gpa=gpa, size=P)
    assert err(pre_fault, k, vm, r) == errno.ENOTTY
    kvm = k.open("/dev/kvm", os.O_RDWR)
    assert err(pre_fault, k, kvm, r) == errno.EINVAL


@needs_host_kvm
def test_host_profile_eopnotsupp():
    """§4.8 probe table (no TDP): valid -> EOPNOTSUPP with the struct unchanged; flags=1 and
    size=0 still EINVAL; on the VM fd ENOTTY."""
    with kmock.Kernel(profile="host") as h:
        _, vm = create_vm(h)
        assert set_region(h, vm, 1, 1 << 32, SLOT_SIZE) == 0
        vcpu = h.ioctl(vm, K.KVM_CREATE_VCPU, 0)
        r = K.kvm_pre_fault_memory(gpa=1 << 32, size=M2)
        assert err(pre_fault, h, vcpu, r) == errno.EOPNOTSUPP
        assert (r.gpa, r.size) == (1 << 32, M2)
        assert err(pre_fault, h, vcpu, K.kvm_pre_fault_memory(1 << 32, P, 1)) == errno.EINVAL
        assert err(pre_fault, h, vcpu, K.kvm_pre_fault_memory(1 << 32, 0)) == errno.EINVAL
        assert err(pre_fault, h, vm, r) == errno.ENOTTY
