"""vCPUs and the kvm_run area (reference §1 KVM_GET_VCPU_MMAP_SIZE, §3 struct kvm_run)."""

import ctypes
import errno

import pytest

import kmock
from kmock import _libc
from kmock.uapi import kvm as K

from ._util import P, RW, SHARED, create_vm, err

RUN_SIZE = 12288


@pytest.fixture
def vcpu(k):
    kvm, vm = create_vm(k)
    assert k.ioctl(kvm, K.KVM_GET_VCPU_MMAP_SIZE, 0) == RUN_SIZE
    return k.ioctl(vm, K.KVM_CREATE_VCPU, 0)


def test_exit_reason_through_the_mapping(k, vcpu):
    """§3: kvm_run is mmap'ed from the vCPU fd at offset 0; exit_reason is a u32 at offset 8."""
    m = k.mmap(vcpu, RUN_SIZE, RW, SHARED)
    run = K.kvm_run.from_address(m.address)
    assert k.ioctl(vcpu, K.KVM_RUN, 0) == 0
    assert run.exit_reason == K.KVM_EXIT_HLT
    assert int.from_bytes(m[8:12], "little") == K.KVM_EXIT_HLT
    assert ctypes.c_uint32.from_address(m.address + 8).value == K.KVM_EXIT_HLT
    # two mappings see the same page
    m2 = k.mmap(vcpu, P, _libc.PROT_READ, SHARED)
    assert int.from_bytes(m2[8:12], "little") == K.KVM_EXIT_HLT
    m.close()
    m2.close()


def test_immediate_exit(k, vcpu):
    """KVM_RUN with immediate_exit set returns -1/EINTR and leaves exit_reason alone (the
    real kernel, conformance scenario fact_vcpu_ioctls: 0 on a fresh vCPU)."""
    m = k.mmap(vcpu, RUN_SIZE, RW, SHARED)
    run = K.kvm_run.from_address(m.address)
    run.immediate_exit = 1
    assert err(k.ioctl, vcpu, K.KVM_RUN, 0) == errno.EINTR
    assert run.exit_reason == 0
    run.immediate_exit = 0
    assert k.ioctl(vcpu, K.KVM_RUN, 0) == 0 and run.exit_reason == K.KVM_EXIT_HLT
    m.close()


def test_access_past_mmap_size_sigbus(k, vcpu):
    """Pages of the vCPU mapping beyond KVM_GET_VCPU_MMAP_SIZE have no backing: SIGBUS."""
    m = k.mmap(vcpu, RUN_SIZE + 2 * P, RW, SHARED)
    assert m[RUN_SIZE - 1] == 0
    with pytest.raises(kmock.SigBus) as ei:
        m[RUN_SIZE]
    assert ei.value.offset == RUN_SIZE
    with pytest.raises(kmock.SigBus) as ei:
        m[RUN_SIZE - 4:RUN_SIZE + 4]
    assert ei.value.offset == RUN_SIZE
    with pytest.raises(kmock.SigBus):
        m[RUN_SIZE + P] = 1
    m.close()
    m = k.mmap(vcpu, P, RW, SHARED, RUN_SIZE)  # mapping at offset 12288 succeeds...
    with pytest.raises(kmock.SigBus) as ei:  # ...but touching it faults
        m[0]
    assert ei.value.offset == 0
    m.close()


def test_create_vcpu_ids(k):
    """kvm_vm_ioctl_create_vcpu: duplicate id -> EEXIST; id >= KVM_MAX_VCPU_IDS (4096) -> EINVAL."""
    kvm, vm = create_vm(k)
    assert k.ioctl(kvm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_MAX_VCPU_ID) == 4096
    a = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    assert err(k.ioctl, vm, K.KVM_CREATE_VCPU, 0) == errno.EEXIST
    b = k.ioctl(vm, K.KVM_CREATE_VCPU, 4095)
    assert len({a, b, vm, kvm}) == 4
    for bad in (4096, 1 << 31, (1 << 64) - 1):
        assert err(k.ioctl, vm, K.KVM_CREATE_VCPU, bad) == errno.EINVAL
    # closing a vCPU fd does not free its id (the vCPU lives as long as the VM)
    k.close(a)
    assert err(k.ioctl, vm, K.KVM_CREATE_VCPU, 0) == errno.EEXIST


def test_vcpu_fd_ioctl_errors(k, vcpu):
    """Ioctls a vCPU fd does not know fall to x86 kvm_arch_vcpu_ioctl's default -> EINVAL
    (kernel source; the reference only covers the VM and /dev/kvm defaults)."""
    assert err(k.ioctl, vcpu, K.KVM_CREATE_VCPU, 1) == errno.EINVAL
    assert err(k.ioctl, vcpu, K.KVM_CHECK_EXTENSION, 0) == errno.EINVAL
